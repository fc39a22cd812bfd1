"""LOCK.ACQUIRE ... BLOCK with coredis: mark the request as blocking.

Needs a server with the module loaded (e.g. `make run`) and `pip install coredis` (6.x).

    python examples/coredis_block.py [port]

coredis sends non-blocking commands over a shared, multiplexed connection. An ACQUIRE with
BLOCK sent that way holds up every other command on it until the wait ends; marked as
blocking, it gets a connection of its own. Checked with coredis 6.9: a PING sent during a
BLOCK 2000 took 1.7 s without the flag, 0.00 s with it.
"""

import asyncio
import sys
import time

import coredis
from coredis.response._callbacks import NoopCallback

PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
KEY = "example:coredis"


async def scenario(client, blocking):
    await client.delete([KEY])
    await client.execute_command(client.create_request(
        b"LOCK.ACQUIRE", KEY, 10000, b"TOKEN", b"holder", callback=NoopCallback()))
    req = client.create_request(b"LOCK.ACQUIRE", KEY, 30000, b"TOKEN", b"waiter",
                                b"BLOCK", 2000, callback=NoopCallback())
    req.blocking = blocking  # True: its own connection
    start = time.monotonic()
    wait = asyncio.ensure_future(client.execute_command(req))
    await asyncio.sleep(0.3)
    t = time.monotonic()
    await client.ping()
    ping = time.monotonic() - t
    grant = await wait
    print(f"blocking={blocking}: PING during the wait took {ping:.2f} s; "
          f"ACQUIRE -> {grant} after {time.monotonic() - start:.1f} s")
    await client.delete([KEY])


async def main():
    async with coredis.Redis(port=PORT) as client:
        await scenario(client, False)
        await scenario(client, True)


asyncio.run(main())
