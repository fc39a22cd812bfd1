"""fencelock.Lock as a drop-in for redis.lock.Lock: the same test bodies run against both
classes where they agree (LockContract), and separate tests cover where fencelock differs on
purpose (FencelockDifferences)."""
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

import redis
import redis.lock
from redis.exceptions import LockError, LockNotOwnedError

import fencelock
from .servers import HERE, Server, wait_until


def setUpModule():
    global SERVER
    SERVER = Server()


def tearDownModule():
    SERVER.stop()


class LockContract:
    """Behaviour that redis.lock.Lock and fencelock.Lock share; `lock_class` is set below."""

    lock_class = None

    def setUp(self):
        self.r = SERVER.client()
        self.name = f"{self.lock_class.__module__}:{self.id().rsplit('.', 1)[-1]}"

    def tearDown(self):
        self.r.close()

    def make(self, **kwargs):
        return self.lock_class(self.r, self.name, **kwargs)

    def test_acquire_release(self):
        lock = self.make(timeout=5)
        self.assertFalse(lock.locked())
        self.assertTrue(lock.acquire())
        self.assertTrue(lock.locked())
        self.assertTrue(lock.owned())
        lock.release()
        self.assertFalse(lock.locked())
        self.assertFalse(lock.owned())

    def test_non_blocking(self):
        lock = self.make(timeout=5)
        self.assertTrue(lock.acquire())
        self.assertFalse(self.make(blocking=False).acquire())
        self.assertFalse(self.make().acquire(blocking=False))
        lock.release()

    def test_blocking_timeout(self):
        lock = self.make(timeout=5)
        self.assertTrue(lock.acquire())
        start = time.monotonic()
        self.assertFalse(self.make(blocking_timeout=0.3).acquire())
        self.assertFalse(self.make().acquire(blocking_timeout=0.3))
        self.assertLess(time.monotonic() - start, 2.0)
        self.assertGreaterEqual(time.monotonic() - start, 0.4)
        lock.release()

    def test_blocking_gets_the_lock_after_release(self):
        lock = self.make(timeout=5, thread_local=False)  # released by a timer thread
        self.assertTrue(lock.acquire())
        threading.Timer(0.2, lock.release).start()
        other = self.make(timeout=5, sleep=0.05)
        self.assertTrue(other.acquire(blocking_timeout=5))
        self.assertTrue(other.owned())
        other.release()

    def test_token(self):
        lock = self.make(timeout=5)
        self.assertTrue(lock.acquire(token="my-token"))
        self.assertEqual(lock.local.token, b"my-token")
        self.assertTrue(lock.owned())
        lock.release()
        self.assertIsNone(lock.local.token)

    def test_locked_and_owned(self):
        lock, other = self.make(timeout=5), self.make(timeout=5)
        self.assertTrue(lock.acquire())
        self.assertTrue(other.locked())
        self.assertFalse(other.owned())
        self.assertTrue(lock.owned())
        lock.release()
        self.assertTrue(other.acquire(blocking=False))
        self.assertFalse(lock.owned())
        other.release()

    def test_expired_lock(self):
        lock = self.make(timeout=0.3)
        self.assertTrue(lock.acquire())
        wait_until(lambda: not lock.locked(), 3, what="the expiry")
        self.assertFalse(lock.owned())
        with self.assertRaises(LockNotOwnedError):
            lock.release()

    def test_taken_by_another(self):
        lock = self.make(timeout=0.3)
        self.assertTrue(lock.acquire())
        other = self.make(timeout=5)
        self.assertTrue(other.acquire(blocking_timeout=3))
        self.assertFalse(lock.owned())
        with self.assertRaises(LockNotOwnedError):
            lock.extend(1)
        with self.assertRaises(LockNotOwnedError):
            lock.release()
        self.assertTrue(other.owned())
        other.release()

    def test_release_unlocked_raises(self):
        with self.assertRaises(LockError) as cm:
            self.make().release()
        self.assertNotIsInstance(cm.exception, LockNotOwnedError)
        self.assertIn("Cannot release", str(cm.exception))

    def test_extend(self):
        lock = self.make(timeout=0.5)
        self.assertTrue(lock.acquire())
        self.assertTrue(lock.extend(1))
        self.assertTrue(1000 < self.r.pttl(self.name) <= 1500)
        self.assertTrue(lock.extend(1, replace_ttl=True))
        self.assertTrue(500 < self.r.pttl(self.name) <= 1000)
        lock.release()

    def test_extend_errors(self):
        with self.assertRaises(LockError):
            self.make(timeout=1).extend(1)
        lock = self.make()
        self.assertTrue(lock.acquire())
        with self.assertRaises(LockError):
            lock.extend(1)
        with self.assertRaises(LockError):
            lock.reacquire()
        lock.release()

    def test_reacquire(self):
        lock = self.make(timeout=0.5)
        self.assertTrue(lock.acquire())
        time.sleep(0.2)
        self.assertTrue(lock.reacquire())
        self.assertGreater(self.r.pttl(self.name), 400)
        with self.assertRaises(LockError):
            self.make(timeout=1).reacquire()
        self.r.delete(self.name)
        with self.assertRaises(LockNotOwnedError):
            lock.reacquire()

    def test_context_manager(self):
        with self.make(timeout=5) as lock:
            self.assertTrue(lock.owned())
            with self.assertRaises(LockError):
                with self.make(blocking=False):
                    pass
        self.assertFalse(lock.locked())
        with self.r.lock(self.name, timeout=5, lock_class=self.lock_class) as lock:
            self.assertIsInstance(lock, self.lock_class)
            self.assertTrue(lock.owned())
        self.assertFalse(lock.locked())

    def test_thread_local(self):
        lock = self.make(timeout=5)
        self.assertTrue(lock.acquire())
        seen = []
        t = threading.Thread(target=lambda: seen.append(getattr(lock.local, "token", None)))
        t.start()
        t.join()
        self.assertEqual(seen, [None], "another thread does not see the token")
        lock.release()

    def test_not_thread_local(self):
        lock = self.make(timeout=5, thread_local=False)
        self.assertTrue(lock.acquire())
        errors = []

        def release():
            try:
                lock.release()
            except Exception as e:
                errors.append(e)

        t = threading.Thread(target=release)
        t.start()
        t.join()
        self.assertEqual(errors, [])
        self.assertFalse(lock.locked())


class RedisPyLockTest(LockContract, unittest.TestCase):
    lock_class = redis.lock.Lock


class FencelockLockTest(LockContract, unittest.TestCase):
    lock_class = fencelock.Lock


class ShortWatchdogLock(fencelock.Lock):
    watchdog_ttl = 0.5


CRASHER = """
import sys, time, redis, fencelock
fencelock.Lock.watchdog_ttl = 0.5
lock = fencelock.Lock(redis.Redis(port=int(sys.argv[1])), sys.argv[2])
assert lock.acquire(blocking=False)
print(lock.fence, flush=True)
time.sleep(60)
"""


class FencelockDifferences(unittest.TestCase):
    """Where fencelock.Lock differs from redis.lock.Lock on purpose."""

    def setUp(self):
        self.r = SERVER.client()
        self.name = self.id().rsplit(".", 1)[-1]

    def tearDown(self):
        self.r.close()

    def test_fence_increases(self):
        lock = fencelock.Lock(self.r, self.name, timeout=5)
        self.assertIsNone(lock.fence)
        self.assertTrue(lock.acquire())
        first = lock.fence
        lock.release()
        self.assertTrue(lock.acquire())
        self.assertGreater(lock.fence, first)
        lock.release()

    def test_no_timeout_is_renewed_while_alive(self):
        lock = ShortWatchdogLock(self.r, self.name)
        self.assertTrue(lock.acquire())
        time.sleep(1.5)  # three internal ttls
        self.assertTrue(lock.owned())
        lock.release()
        self.assertFalse(lock.locked())

    def test_no_timeout_frees_a_crashed_holder(self):
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
        child = subprocess.Popen([sys.executable, "-c", CRASHER, str(SERVER.port), self.name],
                                 stdout=subprocess.PIPE, env=env)
        try:
            fence = int(child.stdout.readline())
            time.sleep(1.0)
            self.assertEqual(fencelock.Locks(self.r).info(self.name)["fence"], fence)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            child.stdout.close()
        killed = time.monotonic()
        wait_until(lambda: self.r.exists(self.name) == 0, 3, what="the crashed holder's lock to end")
        self.assertLess(time.monotonic() - killed, 0.5 + 0.3)

    def test_leaving_with_block_after_expiry(self):
        with self.assertRaises(LockNotOwnedError):
            with redis.lock.Lock(self.r, self.name + ":redis-py", timeout=0.2):
                time.sleep(0.4)
        with fencelock.Lock(self.r, self.name, timeout=0.2):  # does not raise
            time.sleep(0.4)

    def test_waiting_is_server_side(self):
        lock = fencelock.Lock(self.r, self.name, timeout=5, thread_local=False)
        self.assertTrue(lock.acquire())
        threading.Timer(0.2, lock.release).start()
        start = time.monotonic()
        other = fencelock.Lock(self.r, self.name, timeout=5, sleep=10)
        self.assertTrue(other.acquire(blocking_timeout=5))
        self.assertLess(time.monotonic() - start, 1.0, "no 10 s sleep between tries")
        other.release()

    def test_exceptions_are_redis_py_exceptions(self):
        self.assertTrue(issubclass(fencelock.LockNotOwnedError, LockNotOwnedError))
        self.assertTrue(issubclass(fencelock.NotAcquired, LockError))


if __name__ == "__main__":
    unittest.main()
