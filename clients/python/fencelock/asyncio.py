"""The asyncio client: fencelock.asyncio.Locks over redis.asyncio.Redis / RedisCluster. The
protocol lives in fencelock._core as generators of I/O operations; this module awaits them."""
import asyncio
import contextlib
import inspect

from redis import exceptions as rx

from . import _core as core
from .errors import NotAcquired

__all__ = ["Locks", "HeldLock"]

log = core.log


async def _close(conn):
    if conn is not None:
        try:
            await conn.disconnect()
        except Exception:
            pass


async def _bounded(awaitable, bound, what):
    """Await at most `bound` seconds (None: without limit); redis' TimeoutError past it."""
    if bound is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, max(bound, 0.001))
    except asyncio.TimeoutError:
        raise rx.TimeoutError(f"no answer to {what} within {bound:.3f} s") from None


async def _call(conn, args, bound):
    """Send one command on a connection of our own; wait at most `bound` for the answer (the
    read is cancelled past it, and redis-py then closes the connection)."""
    if conn is None:
        raise rx.ConnectionError("the connection is closed")
    await conn.send_command(*args)
    return await _bounded(conn.read_response(), bound, args[0])


class Locks:
    """The asyncio entry point; the same settings as ``fencelock.Locks``."""

    def __init__(self, client, ttl=core.DEFAULT_TTL, drift=core.DEFAULT_DRIFT,
                 retry_budget=core.DEFAULT_RETRY_BUDGET):
        core.check_settings(client, True, ttl, drift, retry_budget)
        self.client, self.ttl, self.drift, self.retry_budget = client, ttl, drift, retry_budget
        self._refreshing, self._refresh_next = None, 0.0  # see _refresh

    async def _refresh(self, until):
        """Refresh the cluster client's slot map after a connection error on a connection of
        ours (a failover: the node gone, its replica promoted): one refresh at a time, a new one
        at most once per RETRY_PAUSE, waited for until the monotonic time `until` (it goes on
        in its task past that, for the next caller; a cancelled caller does not cancel it)."""
        task = self._refreshing
        if task is None or (task.done() and core.now() >= self._refresh_next):
            self._refresh_next = core.now() + core.RETRY_PAUSE
            task = self._refreshing = asyncio.ensure_future(self._refresh_map())
        await asyncio.wait({task}, timeout=max(until - core.now(), 0.0))

    async def _refresh_map(self):
        try:
            await self.client.nodes_manager.initialize()
        except Exception as e:
            log.debug("refreshing the cluster's slot map failed: %s", e)

    async def _open(self, name, address, bound, stale=False):
        io = core.io_timeout(bound)
        if hasattr(self.client, "nodes_manager"):  # the slot map (at once once it is known)
            until = core.now() + io
            await _bounded(self.client.initialize(), io, "the cluster's slot map")
            if stale:  # after a connection error, within the same bound as the connect
                await self._refresh(until)
            io = core.io_timeout(until - core.now())
        cls, kwargs = core.connection_template(self.client, name, address)
        conn = cls(**core.dedicated_kwargs(kwargs, None, io))
        try:
            await _bounded(conn.connect(), io, "connect")
        except BaseException:
            await _close(conn)
            raise
        return conn

    async def _run(self, steps, held=None):
        """Drive a step generator of fencelock._core (see fencelock.Locks._run)."""
        reply = error = None
        while True:
            try:
                op = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            reply = error = None
            try:
                reply = await self._do(op, held)
            except BaseException as e:  # a cancel too: the steps release what may be granted
                error = e

    async def _do(self, op, held):
        kind = op[0]
        if kind == core.CALL:
            return await _call(*op[1:])
        if kind == core.COMMAND:
            return await self.client.execute_command(*op[1])
        if kind == core.OPEN:
            return await self._open(*op[1:])
        if kind == core.CLOSE:
            return await _close(op[1])
        if kind == core.SLEEP:
            return await asyncio.sleep(op[1])
        return await held._do(op)

    async def _plain(self, *args):
        return await self._run(core.plain_steps(args, self.retry_budget))

    async def acquire(self, name, ttl=None, wait=None, token=None, shared=False, limit=None,
                      ephemeral=False, meta=None, watchdog=True, renew_every=None, on_lost=None):
        """As ``fencelock.Locks.acquire``; cancelling it (or a timeout around it) releases
        whatever the server may have granted."""
        request = core.Request(name, self.ttl if ttl is None else ttl, wait, token, shared,
                               limit, ephemeral, meta, watchdog, renew_every, on_lost, self.drift)
        granted = await self._run(core.acquire_steps(request, self.retry_budget))
        return None if granted is None else HeldLock(self, *granted)

    @contextlib.asynccontextmanager
    async def lock(self, name, **options):
        """``async with locks.lock(name, ...) as held:`` (NotAcquired when not acquired)."""
        held = await self.acquire(name, **options)
        if held is None:
            raise NotAcquired(f"lock {name!r} not acquired", lock_name=name)
        async with held:
            yield held

    async def info(self, name):
        """LOCK.INFO as a dict, or None when free."""
        return core.parse_fields(await self._plain("LOCK.INFO", name))

    async def holders(self, name):
        """LOCK.HOLDERS as a list of dicts, or None when free."""
        return core.parse_holders(await self._plain("LOCK.HOLDERS", name))


class HeldLock(core.HeldBase):
    """A granted hold, as ``fencelock.HeldLock``; ``lost`` is an asyncio.Event, ``on_lost`` (a
    function or a coroutine function) is called once from the watchdog task."""

    def __init__(self, locks, hold, conn):
        super().__init__(locks, hold, conn)
        self.lost = asyncio.Event()
        self._io = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(core.watch_steps))

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, *exc):
        try:
            await self.release()
        except Exception as e:
            self._release_failed(exc_type, e)

    async def _run(self, steps):
        return await self._locks._run(self._steps(steps), self)

    async def _pause(self, seconds):
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass
        return self._stop.is_set()

    async def _do(self, op):
        kind = op[0]
        if kind == core.PAUSE:
            return await self._pause(op[1])
        if kind == core.STOP:
            self._stop.set()
        async with self._io:
            if kind == core.GUARDED:  # the watchdog's RENEW: never once release() has begun
                if self._stop.is_set():
                    return core.STOPPED
                return await _call(op[1] or self._conn, op[2], core.time_left(op[3]))
            if kind == core.PINNED:
                return await _call(self._conn, *op[1:])
            if kind == core.DROP_PINNED:
                self._conn = await _close(self._conn)
            if kind != core.SIGNAL:
                return None
        self._stop.set()
        self.lost.set()
        if self.on_lost is not None:
            try:
                result = self.on_lost(self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("on_lost callback of %r raised", self.name)
        return None

    async def renew(self):
        """Renew now (for watchdog=False): True if confirmed, False (and lost) if refused."""
        return await self._run(core.renew_steps)

    async def release(self):
        """As ``fencelock.HeldLock.release``: stop the watchdog task (waiting for an in-flight
        RENEW), then LOCK.RELEASE; True only if the server answered 1. The watchdog task has
        ended (its connection closed) when it returns."""
        released = await self._run(core.release_steps)
        if self._task is not asyncio.current_task():  # not from on_lost, run by the task
            # asyncio.wait: a cancel of this release does not cancel the task
            await asyncio.wait({self._task}, timeout=core.IO_TIMEOUT)
        return released
