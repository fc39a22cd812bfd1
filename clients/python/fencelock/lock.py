"""fencelock.Lock: a drop-in for redis.lock.Lock on the lock module.

    lock = fencelock.Lock(r, "resource", timeout=10)     # was: redis.lock.Lock(r, ...)
    lock = r.lock("resource", timeout=10, lock_class=fencelock.Lock)

Differences on purpose: waiting is server-side (FIFO, no polling: ``sleep`` is accepted and
unused); ``timeout=None`` (redis-py: never expires) is a lock with an internal ttl that a
watchdog renews, so a crashed holder frees it; leaving ``with lock:`` never raises because the
lock expired; ``lock.fence`` is the grant's fencing number.
"""
import logging
import math
import threading
from types import SimpleNamespace

from . import _core as core
from ._sync import Locks
from .errors import LockError, LockNotOwnedError, NotAcquired

log = logging.getLogger("fencelock")


class Lock:
    """A drop-in for ``redis.lock.Lock`` (same arguments, methods and exceptions)."""

    #: the ttl (seconds) that the watchdog renews for a lock without a timeout
    watchdog_ttl = 10.0

    def __init__(self, redis, name, timeout=None, sleep=0.1, blocking=True,
                 blocking_timeout=None, thread_local=True, raise_on_release_error=True):
        self.redis = redis
        self.name = name
        self.timeout = timeout
        self.sleep = sleep
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        self.thread_local = bool(thread_local)
        self.raise_on_release_error = raise_on_release_error
        self.local = threading.local() if self.thread_local else SimpleNamespace()
        self.local.token = None
        self._locks = Locks(redis)
        if timeout:
            core.ttl_ms(timeout, "timeout")

    def _held(self):
        return getattr(self.local, "held", None) if self._token() is not None else None

    def _token(self):
        return getattr(self.local, "token", None)

    @property
    def fence(self):
        """The fencing number of this thread's (or this lock's) current grant, or None."""
        held = self._held()
        return None if held is None else held.fence

    def __enter__(self):
        if self.acquire():
            return self
        raise NotAcquired("Unable to acquire lock within the time specified", lock_name=self.name)

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            self.release()
        except LockNotOwnedError:
            log.warning("lock %r expired or was taken before the end of its `with` block", self.name)
        except Exception as e:
            # raised as redis-py does, but never in place of the block's own exception
            if exc_type is None and (self.raise_on_release_error or not isinstance(e, LockError)):
                raise
            log.warning("release of %r on leaving its `with` block failed: %s", self.name, e)

    def acquire(self, sleep=None, blocking=None, blocking_timeout=None, token=None):
        """Take the lock; True once acquired, False when not (non-blocking, or not within
        ``blocking_timeout`` seconds). ``sleep`` is accepted for compatibility and unused."""
        if blocking is None:
            blocking = self.blocking
        if blocking_timeout is None:
            blocking_timeout = self.blocking_timeout
        if not blocking:
            wait = None
        else:
            wait = math.inf if blocking_timeout is None else max(0.0, blocking_timeout)
        if token is None:
            token = core.new_token().encode()
        else:
            token = self.redis.get_encoder().encode(token)
        ttl = self.timeout if self.timeout else self.watchdog_ttl
        request = core.Request(self.name, ttl, wait, token, watchdog=not self.timeout,
                               drift=self._locks.drift)
        held = self._locks._acquire(request, lost_timer=False)
        if held is None:
            return False
        self.local.token, self.local.held = token, held
        return True

    def locked(self):
        """True if anyone holds the lock."""
        return self._locks.info(self.name) is not None

    def owned(self):
        """True if this lock (this thread's token) holds it: read-only, by the grant's fence."""
        held = self._held()
        if held is None:
            return False
        info = self._locks.info(self.name)
        return info is not None and int(info["fence"]) == held.fence

    def release(self):
        """Release: LockError if not acquired, LockNotOwnedError if it expired or was taken."""
        held = self._held()
        if held is None:
            raise LockError("Cannot release a lock that's not owned or is already unlocked.",
                            lock_name=self.name)
        self.local.token = self.local.held = None
        if not held.release():
            raise LockNotOwnedError("Cannot release a lock that's no longer owned",
                                    lock_name=self.name)

    def _renew(self, what, ms=None, add=0):
        held = self._held()
        if held is None:
            raise LockError(f"Cannot {what} an unlocked lock", lock_name=self.name)
        if self.timeout is None:
            raise LockError(f"Cannot {what} a lock with no timeout", lock_name=self.name)
        if ms is None:  # extend by: the remaining ttl, read from the server, plus more
            info = self._locks.info(self.name)
            if info is None or int(info["fence"]) != held.fence:
                ms = 0
            else:
                ms = int(info["ttl"]) + add
        if ms < 1 or self._locks._plain("LOCK.RENEW", self.name, held.token, ms) != 1:
            raise LockNotOwnedError(f"Cannot {what} a lock that's no longer owned",
                                    lock_name=self.name)
        return True

    def extend(self, additional_time, replace_ttl=False):
        """Add ``additional_time`` seconds to the remaining ttl (or replace the ttl with it)."""
        add = int(additional_time * 1000)
        return self._renew("extend", add) if replace_ttl else self._renew("extend", add=add)

    def reacquire(self):
        """Reset the ttl to ``timeout``."""
        return self._renew("reacquire", int(self.timeout * 1000) if self.timeout else 0)
