"""fencelock.Lock in place of redis.lock.Lock (the drop-in of clients/python/README.md).

    REDIS_URL=redis://127.0.0.1:6379 python3 dropin.py
"""
import os

import redis

import fencelock

r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))

# before: lock = r.lock("invoice:7", timeout=5, blocking_timeout=3)
lock = r.lock("invoice:7", timeout=5, blocking_timeout=3, lock_class=fencelock.Lock)
with lock:
    assert lock.owned() and lock.locked()
    assert lock.extend(5)                      # 5 s more than what was left
    print("fence", lock.fence)                 # new: the grant's fencing number
assert not lock.locked()

# no timeout: redis-py's lock never expires; this one is renewed by a watchdog (10 s ttl), so
# a crashed holder frees it within 10 s
lock = fencelock.Lock(r, "invoice:8")
assert lock.acquire(blocking=False)
assert not fencelock.Lock(r, "invoice:8").acquire(blocking=False)
lock.release()
try:
    lock.release()
except redis.exceptions.LockError as e:        # the exceptions of redis-py
    print("as redis-py:", e)
print("all checks passed")
