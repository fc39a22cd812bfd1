"""The sync quick start of clients/python/README.md, with checks.

    REDIS_URL=redis://127.0.0.1:6379 python3 quickstart.py
"""
import os
import sys

import redis

import fencelock

r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
locks = fencelock.Locks(r, ttl=10)             # default ttl of every lock, in seconds

seen = []
with locks.lock("orders:42", wait=5) as held:  # wait up to 5 s, server-side and FIFO
    # the watchdog renews every ttl/3 while the block runs
    seen.append(held.fence)                    # pass held.fence to the resource you write
    if held.lost.is_set():                     # check before each write: the lock is gone
        sys.exit("lost the lock")

held = locks.acquire("orders:42")              # one attempt: a HeldLock, or None if taken
assert held is not None and held.fence > seen[0], "every grant has a higher fence"
assert locks.acquire("orders:42") is None, "held: a second attempt is not acquired"
assert held.release() is True                  # True: the server released it
assert held.release() is False                 # already released
print("all checks passed")
