"""What the sync and the asyncio clients share: option checking, command arguments, tokens,
deadline and margin arithmetic, reply parsing, the watchdog's schedule and the settings of
the connections of their own. No I/O happens here."""
import inspect
import logging
import math
import numbers
import secrets
import threading
import time

from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import LockError, ModuleNotLoaded, ServerError

DEFAULT_TTL = 30.0
DEFAULT_DRIFT = 0.01
DEFAULT_RETRY_BUDGET = 1.0
#: pause before retrying after a connection error (not a hot loop)
RETRY_PAUSE = 0.05
#: how long past its BLOCK a waiting connection waits for the server's answer
BLOCK_GRACE = 1.0
#: after closing a waiting connection: how long to wait for the server to let go of it, how
#: often to look, and the pause instead where CLIENT LIST is refused
GONE_WAIT = 1.0
GONE_POLL = 0.002
GONE_PAUSE = 0.05
UNKNOWN_ID = object()  # a connection whose id the server would not tell
#: the upper bound of one connect or one small command on a connection of our own
IO_TIMEOUT = 5.0

LOST_REFUSED = "renewal refused: the lock was released, expired, deleted or taken"
LOST_DEADLINE = "no renewal confirmed before the safe deadline"
LOST_CONNECTION = "connection closed: the server ended the ephemeral hold"

#: errors after which a command is retried on a new connection of our own
CONNECTION_ERRORS = (rx.ConnectionError, rx.TimeoutError, OSError)
#: connection errors that no retry mends (a wrong password, a user without the right): raised
NOT_RETRIED = (rx.AuthenticationError, rx.AuthorizationError)

log = logging.getLogger("fencelock")

# watchdog steps (see next_step)
WAIT, RENEW, LOST = "wait", "renew", "lost"

# The I/O operations that the step generators below yield; the sync and the asyncio drivers
# (fencelock._sync / fencelock.asyncio) run them and send back the result or throw in the error.
OPEN = "open"          # (OPEN, name, address, bound, stale) -> a connected connection of our
#                        own; `stale`: after a connection error, so a cluster client's slot map
#                        is refreshed first (bounded by `bound`, at most once per RETRY_PAUSE)
CALL = "call"          # (CALL, conn, args, bound) -> the answer, waited for at most `bound` s
COMMAND = "command"    # (COMMAND, args) -> the answer through the user's client
CLOSE = "close"        # (CLOSE, conn or None)
SLEEP = "sleep"        # (SLEEP, seconds)
PAUSE = "pause"        # (PAUSE, seconds) -> True if the hold's watchdog was stopped meanwhile
GUARDED = "guarded"    # (GUARDED, conn or None for the pinned one, args, until) -> the answer,
#                        or STOPPED: sent under the hold's I/O lock unless it was stopped, and
#                        waited for until the monotonic time `until` (time_left)
PINNED = "pinned"      # (PINNED, args, bound) -> the answer on the pinned connection (I/O lock)
DROP_PINNED = "drop"   # (DROP_PINNED,): close the pinned connection (I/O lock)
STOP = "stop"          # (STOP,): stop the watchdog, waiting for an in-flight RENEW
SIGNAL = "signal"      # (SIGNAL,): set `lost`, stop the watchdog, call on_lost once
STOPPED = object()

now = time.monotonic


def new_token():
    """16 random bytes from the OS's cryptographic source, as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise LockError(f"{what} must be a number of seconds, got {value!r}")
    return float(value)


def ttl_ms(seconds, what="ttl"):
    """A ttl in seconds as whole milliseconds, 1 or more; LockError otherwise."""
    s = _number(seconds, what)
    if not math.isfinite(s) or s <= 0:
        raise LockError(f"{what} must be a positive, finite number of seconds, got {seconds!r}")
    ms = int(round(s * 1000))
    if ms < 1:
        raise LockError(f"{what} {seconds!r} s rounds to 0 ms: it must be at least 0.001 s")
    return ms


def check_settings(client, asynchronous, ttl, drift, retry_budget):
    """The checks of Locks(...)'s settings: among them, a client of the right kind (a
    redis.asyncio client given to fencelock.Locks would only fail at its first command)."""
    command = getattr(type(client), "execute_command", None)
    if command is not None and inspect.iscoroutinefunction(command) != asynchronous:
        raise LockError("fencelock.asyncio.Locks takes a redis.asyncio client, fencelock.Locks a "
                        "blocking one (redis.Redis, redis.RedisCluster); got "
                        + type(client).__module__ + "." + type(client).__qualname__)
    ttl_ms(ttl)
    if not 0 <= _number(drift, "drift") < 0.5:
        raise LockError(f"drift must be from 0 to 0.5, got {drift!r}")
    if not 0 <= _number(retry_budget, "retry_budget") < math.inf:
        raise LockError(f"retry_budget must be 0 or more seconds, got {retry_budget!r}")


def margin(ttl, drift):
    """The safety margin of a hold of `ttl` seconds: ttl * drift + 2 ms."""
    return ttl * drift + 0.002


def time_left(until):
    """Seconds left to the monotonic time `until`; redis' TimeoutError when none are left (so
    nothing is sent that could only be answered too late)."""
    left = until - now()
    if left <= 0:
        raise rx.TimeoutError("no time left before the safe deadline")
    return left


def block_ms(remaining):
    """The BLOCK argument for a wait with `remaining` seconds left (math.inf: 0, forever)."""
    if remaining == math.inf:
        return 0
    return max(1, math.ceil(remaining * 1000))


def _bytes_len(value, what):
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    raise LockError(f"{what} must be str or bytes, got {type(value).__name__}")


class Request:
    """One checked call of acquire()."""

    __slots__ = ("name", "ttl", "ttl_ms", "margin", "wait", "token", "shared", "limit",
                 "ephemeral", "meta", "watchdog", "renew_every", "on_lost")

    def __init__(self, name, ttl, wait=None, token=None, shared=False, limit=None,
                 ephemeral=False, meta=None, watchdog=True, renew_every=None, on_lost=None,
                 drift=DEFAULT_DRIFT):
        if isinstance(name, bool) or not isinstance(name, (str, bytes, bytearray, memoryview,
                                                           int, float)):
            raise LockError(f"the lock's name must be str or bytes, got {type(name).__name__}")
        self.name = name
        self.ttl_ms = ttl_ms(ttl)
        self.ttl = self.ttl_ms / 1000.0
        self.margin = margin(self.ttl, drift)
        if wait is not None:
            wait = _number(wait, "wait")
            if wait < 0:
                raise LockError(f"wait must be None, 0 or more seconds, or math.inf, got {wait!r}")
        self.wait = wait
        if token is None:
            token = new_token()
        elif not 1 <= _bytes_len(token, "token") <= 256:
            raise LockError("token must be 1 to 256 bytes")
        self.token = token
        if shared and limit is not None:
            raise LockError("shared and limit cannot be combined: limit=n is itself a shared hold")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or not 1 <= limit <= 1_000_000):
            raise LockError(f"limit must be a whole number from 1 to 1000000, got {limit!r}")
        self.shared = bool(shared)
        self.limit = limit
        self.ephemeral = bool(ephemeral)
        if meta is not None and _bytes_len(meta, "meta") > 1024:
            raise LockError("meta must be at most 1024 bytes")
        self.meta = meta
        self.watchdog = bool(watchdog)
        # a renewal due after the safe deadline would never come: lost every time
        window = self.ttl - self.margin
        if renew_every is not None:
            renew_every = _number(renew_every, "renew_every")
            if not 0 < renew_every < window:
                raise LockError(f"renew_every must be above 0 and below the ttl less its safety "
                                f"margin ({window:.4f} s), got {renew_every!r}")
        elif self.watchdog and not self.ttl / 3 < window:
            raise LockError(f"ttl {ttl!r} s is too short for its safety margin "
                            f"({self.margin:.4f} s) and renewals every ttl/3")
        self.renew_every = renew_every if renew_every is not None else self.ttl / 3
        if on_lost is not None and not callable(on_lost):
            raise LockError("on_lost must be callable")
        self.on_lost = on_lost

    def deadline(self, start, retry_budget):
        """When to stop trying: the end of the wait, or of the retry budget for one attempt."""
        return start + (retry_budget if self.wait is None else self.wait)

    def acquire_args(self, remaining=None):
        """LOCK.ACQUIRE's arguments; with `remaining` (seconds, math.inf) a BLOCK."""
        args = ["LOCK.ACQUIRE", self.name, self.ttl_ms, "TOKEN", self.token]
        if remaining is not None:
            args += ["BLOCK", block_ms(remaining)]
        if self.shared:
            args.append("SHARED")
        elif self.limit is not None:
            args += ["LIMIT", self.limit]
        if self.ephemeral:
            args.append("EPHEMERAL")
        if self.meta is not None:
            args += ["META", self.meta]
        return args

    def renew_args(self):
        return ["LOCK.RENEW", self.name, self.token, self.ttl_ms]

    def release_args(self):
        return ["LOCK.RELEASE", self.name, self.token]

    def attempt(self, deadline, retry_budget):
        """(remaining, bound) of an attempt on a connection of our own sent now: the seconds
        left to the wait's deadline (None: no wait, math.inf: without limit), and how long to
        wait for the answer, never shorter than the BLOCK (None: without limit)."""
        if self.wait is None:
            return None, retry_budget + BLOCK_GRACE
        if self.wait == math.inf:
            return math.inf, None
        remaining = deadline - now()
        return remaining, max(remaining, 0.0) + BLOCK_GRACE

    def late(self, send_time, t):
        """True if a grant's answer came so late (a long wait) that it must be renewed at once."""
        return t - send_time > self.ttl / 3


def parse_grant(reply):
    """The fence of an ACQUIRE's `[token, fence]` answer, or None when not acquired."""
    if reply is None:
        return None
    return int(reply[1])


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else value


def parse_fields(reply):
    """A RESP3 map or a RESP2 flat field/value list as a dict with str keys (None: None)."""
    if reply is None:
        return None
    if isinstance(reply, dict):
        items = reply.items()
    else:
        items = zip(reply[0::2], reply[1::2])
    out = {}
    for key, value in items:
        key = _text(key)
        out[key] = _text(value) if key == "mode" else value
    return out


def parse_holders(reply):
    return None if reply is None else [parse_fields(entry) for entry in reply]


def server_error(exc):
    """The fencelock error for a server's error answer (ModuleNotLoaded for unknown LOCK.*)."""
    text = str(exc)
    if "unknown command" in text.lower() and "lock." in text.lower():
        err = ModuleNotLoaded(
            "the lock module is not loaded on this server (it answered: %s); load it with "
            "`loadmodule /path/to/libredis_lock.so` in the server's config, or start the "
            "server with `--loadmodule /path/to/libredis_lock.so`" % text)
    else:
        err = ServerError(text)
    err.__cause__ = exc
    return err


def is_redirect(exc):
    """An answer that says: ask again elsewhere or a little later (MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN), retried as a connection error is."""
    return isinstance(exc, (rx.AskError, rx.TryAgainError, rx.ClusterDownError))


def redirect_target(exc):
    """Where to ask next after `exc`: a MOVED/ASK answer's node; else (TRYAGAIN, CLUSTERDOWN,
    a connection error: the node may be gone, its replica promoted) the slot map's owner again
    (None), the map refreshed first after a connection error (see `stale`)."""
    if isinstance(exc, rx.AskError):
        return exc.node_addr
    return None


def stale(error):
    """True after a connection error: a cluster client's slot map may name a node that is gone
    (a failover), so it is refreshed before the owner is looked up again."""
    return isinstance(error, CONNECTION_ERRORS)


def asking(exc):
    """True after an ASK answer (not MOVED): the next attempt sends ASKING first."""
    return isinstance(exc, rx.AskError) and not isinstance(exc, rx.MovedError)


def connection_template(client, key, address=None):
    """(connection class, keyword arguments) of a connection to the server that owns `key`,
    taken from the user's client: its pool for redis.Redis, the node that owns the key's slot
    for a cluster client, or `address` (host, port) after a MOVED/ASK answer."""
    if hasattr(client, "nodes_manager"):
        node = client.get_node_from_key(key)
        pool = getattr(getattr(node, "redis_connection", None), "connection_pool", None)
        if pool is not None:
            cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
        else:
            cls, kwargs = node.connection_class, dict(node.connection_kwargs)
            kwargs.setdefault("host", node.host)
            kwargs.setdefault("port", node.port)
    else:
        pool = client.connection_pool
        cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)
    if address is not None:
        kwargs["host"], kwargs["port"] = address
    return cls, kwargs


def dedicated_kwargs(kwargs, read_timeout, connect_timeout):
    """The user's connection settings for a connection of our own: no automatic re-sends and
    no health-check PING. The wait for an answer is bounded by the caller; `read_timeout` (sync:
    the rest of an answer once it has begun to arrive; asyncio: None) and `connect_timeout`
    bound the rest."""
    out = dict(kwargs)
    out.update(socket_timeout=read_timeout, socket_connect_timeout=connect_timeout,
               retry=Retry(NoBackoff(), 0), retry_on_timeout=False, retry_on_error=[],
               health_check_interval=0)
    return out


def io_timeout(bound):
    """The socket timeout of a connection of our own whose next answer is due within `bound`."""
    if bound is None:
        return IO_TIMEOUT
    return min(IO_TIMEOUT, max(bound, 0.01))


class Hold:
    """A granted hold's clock: the confirmed time is the send time of the last command that the
    server confirmed (the grant, or a RENEW answered 1), on the monotonic clock."""

    def __init__(self, request, fence, confirmed, address=None):
        self.request = request
        self.address = address  # a cluster redirect's target for our connections, else None
        self.fence = fence
        self.confirmed = confirmed
        self.margin = request.margin
        self.lost_reason = None
        self.released = False
        self._mutex = threading.Lock()  # the watchdog thread and the caller's both change it

    @property
    def safe_deadline(self):
        """Before this the server certainly still holds the lock for us (its expiry is never
        earlier than send time + ttl; the margin allows for clock drift)."""
        return self.confirmed + self.request.ttl - self.margin

    @property
    def held(self):
        return not self.released and self.lost_reason is None and now() < self.safe_deadline

    def confirm(self, send_time):
        self.confirmed = max(self.confirmed, send_time)

    def lose(self, reason):
        """Mark the hold lost; True only the first time (and never after release)."""
        with self._mutex:
            if self.released or self.lost_reason is not None:
                return False
            self.lost_reason = reason
            return True

    def mark_released(self):
        """None if already released, else whether it had been lost."""
        with self._mutex:
            if self.released:
                return None
            self.released = True
            return self.lost_reason is not None

    def next_step(self, renewing, retry_at, t):
        """The watchdog's next step at time t: (WAIT, seconds), (RENEW, seconds left to the
        safe deadline: the bound of the RENEW) or (LOST, reason)."""
        left = self.safe_deadline - t
        if left <= 0:
            return LOST, LOST_DEADLINE
        if retry_at is not None:
            due = retry_at
        elif renewing:
            due = self.confirmed + self.request.renew_every
        else:
            due = self.safe_deadline
        if due > t:
            return WAIT, min(due, self.safe_deadline) - t
        return RENEW, left


def renewed(reply):
    return reply == 1


def retry_or_raise(error, deadline):
    """After a failed attempt (connection error, timeout or error answer): raise it (an error
    answer, or the deadline is near), or return the address for the next attempt (a MOVED/ASK
    answer's target, else None: the slot map's owner)."""
    if isinstance(error, rx.ResponseError) and not is_redirect(error):
        raise server_error(error)
    if isinstance(error, NOT_RETRIED) or now() + RETRY_PAUSE >= deadline:
        raise error
    return redirect_target(error)


def renew_outcome(hold, reply, error, send_time):
    """The watchdog after one RENEW (`error`: what it raised, or None): (WAIT, None) when
    confirmed, (LOST, reason), or (RENEW, address) to retry soon on a new connection."""
    if error is None:
        if renewed(reply):
            hold.confirm(send_time)
            return WAIT, None
        return LOST, LOST_REFUSED
    if isinstance(error, rx.ResponseError) and not is_redirect(error):
        return LOST, "renewal failed: %s" % error
    if hold.request.ephemeral:
        return LOST, LOST_DEADLINE if isinstance(error, rx.TimeoutError) else LOST_CONNECTION
    return RENEW, error


def acquire_steps(request, retry_budget):
    """The acquire protocol as a generator of I/O operations. Returns (Hold, pinned connection
    or None), or None when not acquired; any give-up closes the connection and releases by
    token before the error goes on."""
    deadline = request.deadline(now(), retry_budget)
    dedicated = request.wait is not None or request.ephemeral
    # A waiting connection we close may still be granted the lock until the server has let
    # go of it: its id, so a retry or a give-up's release waits for that (an ephemeral hold
    # ends with its connection, so it needs none of this).
    track = request.wait is not None and not request.ephemeral
    conn = address = error = conn_id = closed_id = None
    try:
        while True:
            try:
                if dedicated:
                    if conn is None:
                        bound = request.attempt(deadline, retry_budget)[1]
                        if not track:
                            conn = yield from open_steps(request.name, address, bound, error)
                        else:
                            conn = yield from open_steps(request.name, address, bound, error,
                                                         ask=False)
                            conn_id = yield from client_id_steps(conn, bound)
                            # a grant to the closed one is then seen by this retry (same token)
                            yield from gone_steps(conn, closed_id, bound)
                            closed_id = None
                            if asking(error):  # ASKING holds for the next command only
                                yield CALL, conn, ["ASKING"], bound
                    sent = now()
                    remaining, bound = request.attempt(deadline, retry_budget)
                    reply = yield CALL, conn, request.acquire_args(remaining), bound
                else:
                    sent = now()
                    reply = yield COMMAND, request.acquire_args()
                fence = parse_grant(reply)
                if fence is not None and request.late(sent, now()):
                    # a long wait: renew at once, so the confirmed time is recent (a connection
                    # error here is retried as any: the same token gets the grant back)
                    sent = now()
                    op = (CALL, conn, request.renew_args(), request.ttl) if conn else (COMMAND, request.renew_args())
                    if not renewed((yield op)):
                        fence = None
                break
            except (rx.ResponseError,) + CONNECTION_ERRORS as e:
                yield CLOSE, conn
                if conn is not None:
                    closed_id = conn_id
                conn, conn_id, error = None, None, e
                address = retry_or_raise(e, deadline)
            yield SLEEP, RETRY_PAUSE
        if fence is None or not request.ephemeral:
            yield CLOSE, conn
            conn = None
        if fence is None:
            return None
        return Hold(request, fence, sent, address), conn
    except BaseException:
        # a give-up (the deadline, an error, a cancel, KeyboardInterrupt): no ghost grant
        yield CLOSE, conn
        gone = conn_id if conn is not None else closed_id
        yield from forget_steps(request, address, retry_budget, gone)
        raise


def watch_steps(hold, retry_budget):
    """The watchdog (or, with watchdog=False, the lost timer) as a generator of I/O
    operations, until the hold is lost or release() stops it."""
    try:
        reason = yield from _watch(hold)
    except Exception as e:  # never end without the signal: the holder would go on trusting it
        log.exception("the watchdog of %r failed", hold.request.name)
        reason = "watchdog failed: %s" % e
    if reason is not None:
        yield from lose_steps(hold, reason, retry_budget)


def _watch(hold):
    request, conn, retry_at, error = hold.request, None, None, None
    try:
        while True:
            step, bound = hold.next_step(request.watchdog, retry_at, now())
            if step == WAIT:
                if (yield PAUSE, bound):
                    return None
                continue
            if step == LOST:
                return bound
            reply = None
            sent = now()  # a little before the real send: on the safe side
            try:
                if conn is None and not request.ephemeral:
                    conn = yield from open_steps(request.name, hold.address, bound, error)
                error = None
                # the answer is waited for until the safe deadline, counted when it is sent
                # (after the connect, after any wait for the hold's I/O lock), never longer
                reply = yield GUARDED, conn, request.renew_args(), hold.safe_deadline
            except Exception as e:  # any failure (a slot map without the key...) is retried
                error = e
            if reply is STOPPED:
                return None
            step, value = renew_outcome(hold, reply, error, sent)
            retry_at = None
            if step == LOST:
                return value
            if step == RENEW:  # retry soon on a new connection (to a redirect's target)
                yield CLOSE, conn
                conn, hold.address = None, redirect_target(value)
                retry_at = now() + RETRY_PAUSE
    finally:
        yield CLOSE, conn


def open_steps(name, address, bound, error=None, ask=True):
    """A connection of our own to `address` (None: the slot map's owner of `name`, the map
    refreshed first after a connection error, `error`); after an ASK answer it sends ASKING
    first (unless `ask` is False: the caller sends it later)."""
    conn = yield OPEN, name, address, bound, stale(error)
    if ask and asking(error):
        try:
            yield CALL, conn, ["ASKING"], bound
        except BaseException:
            yield CLOSE, conn
            raise
    return conn


def plain_steps(args, retry_budget):
    """A command that does not wait, through the user's client; connection errors are retried
    within the retry budget, error answers raised."""
    deadline = now() + retry_budget
    while True:
        try:
            return (yield COMMAND, args)
        except (rx.ResponseError,) + CONNECTION_ERRORS as e:
            retry_or_raise(e, deadline)
        yield SLEEP, RETRY_PAUSE


def client_id_steps(conn, bound):
    """The server's id of a connection of ours (UNKNOWN_ID where CLIENT is refused, by an
    ACL)."""
    try:
        return int((yield CALL, conn, ["CLIENT", "ID"], IO_TIMEOUT if bound is None else bound))
    except rx.ResponseError:
        return UNKNOWN_ID


def gone_steps(conn, client_id, bound):
    """Wait, at most `bound` s (and GONE_WAIT), until the server has let go of the connection
    `client_id` that we closed: until then it may still hand that connection's wait the lock,
    and a RELEASE or a retry that the server runs before it sees the close would miss that
    grant. Where CLIENT is refused, a short pause instead."""
    if client_id is None:
        return
    if client_id is UNKNOWN_ID:
        yield SLEEP, GONE_PAUSE
        return
    bound = GONE_WAIT if bound is None else min(bound, GONE_WAIT)
    end = now() + bound
    while True:
        try:
            listed = yield CALL, conn, ["CLIENT", "LIST", "ID", client_id], bound
        except rx.ResponseError:
            yield SLEEP, GONE_PAUSE
            return
        if not listed or now() >= end:
            return
        yield SLEEP, GONE_POLL


def forget_steps(request, address, retry_budget, gone=None):
    """A best-effort release by token on a new connection of our own, once the server has let
    go of the closed waiting connection `gone` (if any): bounded, errors swallowed (for
    give-ups and losses)."""
    bound = max(min(retry_budget, 1.0), 0.2)
    conn = None
    try:
        conn = yield OPEN, request.name, address, bound, False
        yield from gone_steps(conn, gone, bound)
        yield CALL, conn, request.release_args(), bound
    except Exception as e:
        log.debug("best-effort release of %r failed: %s", request.name, e)
    finally:
        yield CLOSE, conn


def lose_steps(hold, reason, retry_budget):
    """Mark the hold lost (once): signal it, release by token unless the server refused a
    RENEW (a loss on the local deadline: the server may still hold it), drop the pinned
    connection."""
    if not hold.lose(reason):
        return
    yield (SIGNAL,)
    if reason != LOST_REFUSED:
        yield from forget_steps(hold.request, hold.address, retry_budget)
    yield (DROP_PINNED,)


def renew_steps(hold, retry_budget):
    """A manual renew(): True if the server confirmed, False (and lost) if it refused."""
    request = hold.request
    if hold.released or hold.lost_reason is not None:
        return False
    sent = now()
    try:
        if request.ephemeral:
            reply = yield PINNED, request.renew_args(), max(hold.safe_deadline - sent, 0.001)
        else:
            reply = yield from plain_steps(request.renew_args(), retry_budget)
    except CONNECTION_ERRORS:
        if not request.ephemeral:
            raise
        reply = None
        yield from lose_steps(hold, LOST_CONNECTION, retry_budget)
    if renewed(reply):
        if hold.lost_reason is not None or hold.released:
            return False  # lost (the safe deadline passed, its release sent) while it was asked
        hold.confirm(sent)
        return True
    yield from lose_steps(hold, LOST_REFUSED, retry_budget)
    return False


def release_steps(hold, retry_budget):
    """release(): stop the watchdog (after an in-flight RENEW), then RELEASE by token; True
    only if the server answered 1. A lost hold gets a best-effort release and False. An
    interrupted release (a cancel, KeyboardInterrupt) still ends the hold: the watchdog is
    stopped already, so it must not go on looking held; it releases by token (best effort)."""
    request = hold.request
    try:
        yield (STOP,)
        was_lost = hold.mark_released()
        if was_lost is None:
            return False
        if not was_lost:
            try:
                if request.ephemeral:
                    try:
                        return (yield PINNED, request.release_args(), retry_budget + BLOCK_GRACE) == 1
                    except CONNECTION_ERRORS:
                        pass  # RELEASE by token works from any connection
                return (yield from plain_steps(request.release_args(), retry_budget)) == 1
            finally:
                yield (DROP_PINNED,)
    except Exception:
        raise  # the server could not be reached: the lock ends at its ttl
    except BaseException:
        hold.mark_released()
        yield (DROP_PINNED,)
        yield from forget_steps(request, hold.address, retry_budget)
        raise
    yield from forget_steps(request, hold.address, retry_budget)
    return False


class HeldBase:
    """What the sync and asyncio held locks share: the public attributes and the state."""

    def __init__(self, locks, hold, conn):
        request = hold.request
        self.name, self.token, self.fence, self.ttl = request.name, request.token, hold.fence, request.ttl
        self.on_lost = request.on_lost
        self._locks, self._hold = locks, hold
        self._conn = conn  # the pinned connection of an ephemeral hold

    def __repr__(self):
        return f"<{type(self).__module__}.HeldLock {self.name!r} fence={self.fence} held={self.held}>"

    @property
    def held(self):
        """True while held: not released, not lost, and before the safe deadline."""
        return self._hold.held

    @property
    def lost_reason(self):
        """Why the hold was lost (a sentence), or None."""
        return self._hold.lost_reason

    def _steps(self, steps):
        return steps(self._hold, self._locks.retry_budget)

    def _release_failed(self, exc_type, error):
        """A release on leaving a `with` block failed (the server could not be reached): raise
        it, unless the block is leaving with its own exception, which it must not hide."""
        if exc_type is None:
            raise error
        log.warning("release of %r failed: %s", self.name, error)
