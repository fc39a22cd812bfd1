"""The asyncio quick start of clients/python/README.md, with checks.

    REDIS_URL=redis://127.0.0.1:6379 python3 async_quickstart.py
"""
import asyncio
import os

import redis.asyncio

import fencelock.asyncio


async def main():
    r = redis.asyncio.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
    locks = fencelock.asyncio.Locks(r, ttl=1)

    async def lost(held):                      # called once, from the watchdog task
        print(f"lost {held.name}: {held.lost_reason}")

    async with locks.lock("reports:daily", wait=5, on_lost=lost) as held:
        waiter = asyncio.create_task(locks.acquire("reports:daily", wait=10))
        await asyncio.sleep(2.5)               # 2.5 ttls: the watchdog keeps it
        assert held.held and not waiter.done()
    other = await waiter                       # granted the moment the block released it
    assert other.fence > held.fence

    await r.delete("reports:daily")            # an operator deletes the lock:
    await asyncio.wait_for(other.lost.wait(), other.ttl)   # `lost` is set within a ttl
    assert not other.held and await other.release() is False
    await r.aclose()
    print("all checks passed")


asyncio.run(main())
