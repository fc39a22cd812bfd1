"""The blocking client: fencelock.Locks over redis.Redis / redis.RedisCluster. The protocol
lives in fencelock._core as generators of I/O operations; this module runs them."""
import contextlib
import threading
import time

from redis import exceptions as rx

from . import _core as core
from .errors import NotAcquired

log = core.log


def _close(conn):
    if conn is not None:
        try:
            conn.disconnect()
        except Exception:
            pass


def _call(conn, args, bound):
    """Send one command on a connection of our own and wait at most `bound` seconds (None:
    without limit) for its answer."""
    if conn is None:
        raise rx.ConnectionError("the connection is closed")
    conn.send_command(*args)
    if not conn.can_read(None if bound is None else max(bound, 0.001)):
        conn.disconnect()
        raise rx.TimeoutError(f"no answer to {args[0]} within {bound:.3f} s")
    return conn.read_response()


class _SlotMapRefresh:
    """Refreshes of a cluster client's slot map (its nodes manager's initialize()) after a
    connection error on a connection of ours: one at a time, a new one at most once per
    RETRY_PAUSE, each on a thread of its own, so that a caller waits for it only as long as it
    may (the user's client may have no socket timeout at all) and then goes on with the map
    as it is."""

    def __init__(self, manager):
        self._manager, self._mutex = manager, threading.Lock()
        self._done, self._next = None, 0.0

    def wait(self, until):
        """Start a refresh unless one is in flight or was started less than RETRY_PAUSE ago;
        wait for it until the monotonic time `until`."""
        with self._mutex:
            done = self._done
            if done is None or (done.is_set() and core.now() >= self._next):
                done = self._done = threading.Event()
                self._next = core.now() + core.RETRY_PAUSE
                threading.Thread(target=self._run, args=(done,), daemon=True,
                                 name="fencelock slot map refresh").start()
        done.wait(max(until - core.now(), 0.0))

    def _run(self, done):
        try:
            self._manager.initialize()
        except Exception as e:
            log.debug("refreshing the cluster's slot map failed: %s", e)
        finally:
            done.set()


class Locks:
    """The entry point: locks on the server(s) of a ``redis.Redis`` or ``redis.RedisCluster``.

    ``ttl``: the default ttl in seconds; ``drift``: the clock-drift factor of the safety margin;
    ``retry_budget``: how long (seconds) calls that do not wait retry connection errors."""

    def __init__(self, client, ttl=core.DEFAULT_TTL, drift=core.DEFAULT_DRIFT,
                 retry_budget=core.DEFAULT_RETRY_BUDGET):
        core.check_settings(client, False, ttl, drift, retry_budget)
        self.client, self.ttl, self.drift, self.retry_budget = client, ttl, drift, retry_budget
        self._refresh, self._refresh_mutex = None, threading.Lock()  # see _refresher

    def _open(self, name, address, bound, stale=False):
        """A connection of our own to the server that owns `name`, with the user's settings;
        `stale`: after a connection error (refresh a cluster client's slot map first)."""
        io = core.io_timeout(bound)
        if stale and hasattr(self.client, "nodes_manager"):  # within the connect's bound
            until = core.now() + io
            self._refresher().wait(until)
            io = core.io_timeout(until - core.now())
        cls, kwargs = core.connection_template(self.client, name, address)
        conn = cls(**core.dedicated_kwargs(kwargs, io, io))
        try:
            conn.connect()
        except BaseException:
            _close(conn)
            raise
        return conn

    def _refresher(self):
        """The cluster client's _SlotMapRefresh, made on first use."""
        with self._refresh_mutex:
            if self._refresh is None:
                self._refresh = _SlotMapRefresh(self.client.nodes_manager)
            return self._refresh

    def _run(self, steps, held=None):
        """Drive a step generator of fencelock._core: run each I/O operation it yields, send
        back the result or throw in the error, and return what it returns."""
        reply = error = None
        while True:
            try:
                op = steps.send(reply) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value
            reply = error = None
            try:
                reply = self._do(op, held)
            except BaseException as e:
                error = e

    def _do(self, op, held):
        kind = op[0]
        if kind == core.CALL:
            return _call(*op[1:])
        if kind == core.COMMAND:
            return self.client.execute_command(*op[1])
        if kind == core.OPEN:
            return self._open(*op[1:])
        if kind == core.CLOSE:
            return _close(op[1])
        if kind == core.SLEEP:
            return time.sleep(op[1])
        return held._do(op)

    def _plain(self, *args):
        return self._run(core.plain_steps(args, self.retry_budget))

    def acquire(self, name, ttl=None, wait=None, token=None, shared=False, limit=None,
                ephemeral=False, meta=None, watchdog=True, renew_every=None, on_lost=None):
        """Take the lock `name`: a HeldLock, or None when not acquired (held by others for all
        of `wait` seconds; wait=None: one attempt, math.inf: without limit)."""
        request = core.Request(name, self.ttl if ttl is None else ttl, wait, token, shared,
                               limit, ephemeral, meta, watchdog, renew_every, on_lost, self.drift)
        return self._acquire(request)

    def _acquire(self, request, lost_timer=True):
        granted = self._run(core.acquire_steps(request, self.retry_budget))
        return None if granted is None else HeldLock(self, *granted, lost_timer=lost_timer)

    @contextlib.contextmanager
    def lock(self, name, **options):
        """``with locks.lock(name, ...) as held:``: acquire (raise NotAcquired when not acquired
        in time), release on exit. Leaving never raises because the lock expired or was lost."""
        held = self.acquire(name, **options)
        if held is None:
            raise NotAcquired(f"lock {name!r} not acquired", lock_name=name)
        with held:
            yield held

    def info(self, name):
        """LOCK.INFO as a dict (fence, ttl, waiters, holders, mode, ...), or None when free."""
        return core.parse_fields(self._plain("LOCK.INFO", name))

    def holders(self, name):
        """LOCK.HOLDERS as a list of dicts (fence, ttl, mode, ephemeral, meta), or None."""
        return core.parse_holders(self._plain("LOCK.HOLDERS", name))


class HeldLock(core.HeldBase):
    """A granted hold: ``name``, ``token``, ``fence``, ``ttl``, ``held``, ``lost_reason``.
    ``lost`` (a threading.Event) is set when it can no longer be relied on; ``on_lost`` is
    then called once, from the watchdog thread."""

    def __init__(self, locks, hold, conn, lost_timer=True):
        super().__init__(locks, hold, conn)
        self.lost = threading.Event()
        self._io = threading.Lock()  # one RENEW/RELEASE at a time; release() waits on it
        self._stop = threading.Event()
        if hold.request.watchdog or lost_timer:
            threading.Thread(target=self._run, args=(core.watch_steps,), daemon=True,
                             name=f"fencelock watchdog {self.name!r}").start()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            self.release()
        except Exception as e:
            self._release_failed(exc_type, e)

    def _run(self, steps):
        return self._locks._run(self._steps(steps), self)

    def _do(self, op):
        kind = op[0]
        if kind == core.PAUSE:
            return self._stop.wait(op[1])
        if kind == core.STOP:  # at once: stopped even if the wait for the I/O lock is cut short
            self._stop.set()
        with self._io:
            if kind == core.GUARDED:  # the watchdog's RENEW: never once release() has begun
                if self._stop.is_set():
                    return core.STOPPED
                return _call(op[1] or self._conn, op[2], core.time_left(op[3]))
            if kind == core.PINNED:
                return _call(self._conn, *op[1:])
            if kind == core.STOP:  # an in-flight RENEW has ended
                return None
            if kind == core.DROP_PINNED:
                self._conn = _close(self._conn)
                return None
        self._stop.set()  # SIGNAL
        self.lost.set()
        if self.on_lost is not None:
            try:
                self.on_lost(self)
            except Exception:
                log.exception("on_lost callback of %r raised", self.name)
        return None

    def renew(self):
        """Renew now (for watchdog=False): True if the server confirmed; False (and lost) if it
        refused. Connection errors are raised; the lost timer still fires at the safe deadline."""
        return self._run(core.renew_steps)

    def release(self):
        """Stop the watchdog (waiting for an in-flight RENEW), then LOCK.RELEASE: True only if
        the server answered 1. Never raises because the lock expired or was lost; raises only
        if the server cannot be reached within the retry budget."""
        return self._run(core.release_steps)
