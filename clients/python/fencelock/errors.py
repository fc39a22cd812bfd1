"""The exceptions of fencelock. Every one is a ``redis.exceptions.LockError``, so existing
``except redis.exceptions.LockError`` clauses keep working."""
from redis import exceptions as _rx

__all__ = ["LockError", "NotAcquired", "ServerError", "ModuleNotLoaded", "LockNotOwnedError"]


class LockError(_rx.LockError):
    """Base of every fencelock error (and a ``redis.exceptions.LockError``)."""


class NotAcquired(LockError):
    """The lock was not acquired in time (raised by the context managers)."""


class ServerError(LockError, _rx.ResponseError):
    """The server answered a LOCK command with an error (WRONGTYPE, a bad argument...).
    Also a ``redis.exceptions.ResponseError``; the server's error is ``__cause__``."""


class ModuleNotLoaded(ServerError):
    """The server does not know the LOCK commands: the lock module is not loaded."""


class LockNotOwnedError(LockError, _rx.LockNotOwnedError):
    """The drop-in ``fencelock.Lock``: the lock is no longer owned (expired or taken).
    Also a ``redis.exceptions.LockNotOwnedError``."""
