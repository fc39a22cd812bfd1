"""fencelock: locks with fencing numbers on the lock module for Redis and Valkey.

    locks = fencelock.Locks(redis.Redis())
    with locks.lock("orders:42", ttl=10, wait=5) as held:
        write_somewhere(fence=held.fence)      # stop when held.lost is set

``fencelock.asyncio.Locks`` is the same for redis.asyncio; ``fencelock.Lock`` is a drop-in for
``redis.lock.Lock``.
"""
from ._sync import HeldLock, Locks
from .errors import LockError, LockNotOwnedError, ModuleNotLoaded, NotAcquired, ServerError
from .lock import Lock
from . import asyncio  # noqa: E402  (fencelock.asyncio.Locks after `import fencelock`)

import logging as _logging

_logging.getLogger("fencelock").addHandler(_logging.NullHandler())

__version__ = "0.1.0"
__all__ = ["Locks", "HeldLock", "Lock", "LockError", "NotAcquired", "ModuleNotLoaded",
           "ServerError", "LockNotOwnedError"]
