"""Leader election with LOCK.ACQUIRE ... EPHEMERAL META, in redis-py.

Needs a server with the module loaded (e.g. `make run`) and `pip install redis`.

    python examples/redis_py_leader.py [--port 6379]

It starts three candidate processes for the service `example:leader`, each campaigning with
`LOCK.ACQUIRE key ttl BLOCK 0 EPHEMERAL META <its name>` on a dedicated connection and
renewing every ttl/3 on that same connection. A watcher follows the leader through keyspace
notifications and LOCK.INFO. Every two seconds the current leader's process is killed with
SIGKILL; the next candidate leads within milliseconds (not after the ttl), with a higher
fence, its term number. It prints each term and exits 0 if every change of leader came
quickly and every term was higher than the one before.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

KEY = "example:leader"
TTL_MS = 10_000


def dedicated(port):
    """One connection of its own, which never times out a wait and never retries behind our
    back: an ephemeral hold lives exactly as long as this connection."""
    return redis.Redis(
        port=port,
        single_connection_client=True,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
    )


def candidate(port, name):
    """Campaign, then lead until killed: renew every ttl/3 on the campaign's connection."""
    r = dedicated(port)
    token, term = r.execute_command(
        "LOCK.ACQUIRE", KEY, TTL_MS, "BLOCK", 0, "EPHEMERAL", "META", name
    )
    print(f"{name} leads, term {term}", flush=True)
    while True:
        time.sleep(TTL_MS / 3000)
        if r.execute_command("LOCK.RENEW", KEY, token, TTL_MS) != 1:
            print(f"{name} lost the lead", flush=True)
            return


def leader_of(r):
    """(name, term) from LOCK.INFO, or None when nobody leads."""
    info = r.execute_command("LOCK.INFO", KEY)
    if info is None:
        return None
    # A map in RESP3 (redis-py 8's default), a flat field/value list in RESP2.
    fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2]))
    return fields[b"meta"].decode(), fields[b"fence"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=6379)
    parser.add_argument("--candidate")
    args = parser.parse_args()
    if args.candidate:
        candidate(args.port, args.candidate)
        return 0

    r = redis.Redis(port=args.port)
    r.delete(KEY)
    r.config_set("notify-keyspace-events", "Kd")
    watch = r.pubsub()
    watch.subscribe(f"__keyspace@0__:{KEY}")
    procs = {}
    for name in ["candidate-a", "candidate-b", "candidate-c"]:
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--port", str(args.port), "--candidate", name]
        )
        time.sleep(0.2)  # so they queue in this order

    ok = True
    last_term = 0
    for _ in range(len(procs)):
        while leader_of(r) is None:
            time.sleep(0.01)
        name, term = leader_of(r)
        print(f"watcher: {name} leads, term {term}")
        ok &= term > last_term
        last_term = term
        time.sleep(2)
        killed = time.monotonic()
        os.kill(procs[name].pid, signal.SIGKILL)
        procs[name].wait()
        # Follow the change through the notifications: released, then handed off (or
        # nothing more, when the last candidate is gone).
        events = []
        while time.monotonic() - killed < 1:
            message = watch.get_message(timeout=0.1)
            if message and message["type"] == "message":
                events.append(message["data"].decode())
            if "lock.handed-off" in events or (events and len(procs) == 1):
                break
        took = (time.monotonic() - killed) * 1000
        print(f"watcher: {name} killed; {events} within {took:.1f} ms")
        ok &= "lock.released" in events and took < TTL_MS / 2
        del procs[name]

    ok &= leader_of(r) is None
    print("every change of leader was quick and every term higher:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
