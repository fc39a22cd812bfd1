"""Several workers share one piece of work through a fencelock lock, and write to a resource
that checks fencing numbers. One holder is deposed mid-work (its lock key is deleted, as an
expiry or an operator would): it learns so from `held.lost`, stops, and its one late write is
refused by the resource because a newer holder's fence is higher.

    REDIS_URL=redis://127.0.0.1:6379 python3 guarded_work.py

Exits 0 when every check holds, 1 otherwise. Needs a server with the lock module loaded.
"""
import os
import sys
import threading
import time

import redis

import fencelock

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
PREFIX = f"example:guarded:{os.getpid()}"
LOCK, STORE, JOURNAL = PREFIX + ":lock", PREFIX + ":store", PREFIX + ":journal"

# The fenced resource: a write carries the writer's fence and is refused if a higher fence
# has written before. (Any store can do this: a SQL `WHERE fence <= :fence`, a conditional PUT.)
FENCED_WRITE = """
local seen = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if tonumber(ARGV[1]) < seen then return 0 end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'value', ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


def main():
    r = redis.Redis.from_url(URL)
    locks = fencelock.Locks(r, ttl=1.0)      # the watchdog renews every ttl/3 while held
    write = r.register_script(FENCED_WRITE)
    failures = []

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    def worker(n, rounds=3, steps=4):
        for _ in range(rounds):
            with locks.lock(LOCK, wait=30) as held:
                for step in range(steps):
                    if held.lost.is_set():       # stop the moment the lock is gone
                        return
                    if not write(keys=[STORE, JOURNAL], args=[held.fence, f"w{n}.{step}"]):
                        failures.append(f"worker {n}: a write with fence {held.fence} was refused")
                    time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal = [int(f) for f in r.lrange(JOURNAL, 0, -1)]
    check(len(journal) == 4 * 3 * 4, f"all {4 * 3 * 4} fenced writes accepted ({len(journal)})")
    check(journal == sorted(journal), "fences never went down")
    check(len(set(journal)) == 12, "one fence per grant: 12 grants")

    # A holder deposed mid-work.
    old = locks.acquire(LOCK)
    r.delete(LOCK)                       # the lock ends without the holder's doing
    check(old.lost.wait(old.ttl), f"the deposed holder saw `lost` ({old.lost_reason})")
    check(not old.held, "held is False once lost")
    with locks.lock(LOCK) as new:
        check(new.fence > old.fence, "the next holder has a higher fence")
        check(write(keys=[STORE, JOURNAL], args=[new.fence, "new"]) == 1, "its write is accepted")
        late = write(keys=[STORE, JOURNAL], args=[old.fence, "late"])
        check(late == 0, "the deposed holder's late write is refused by its fence")
    check(old.release() is False, "releasing a lost lock answers False, without raising")
    check(locks.info(LOCK) is None, "nothing is held at the end")

    r.delete(STORE, JOURNAL)
    print("FAILED: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
