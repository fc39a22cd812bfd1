"""LOCK.ACQUIRE ... BLOCK with redis-py: what the client's defaults do, and the fix.

Needs a server with the module loaded (e.g. `make run`) and `pip install redis`.

    python examples/redis_py_block.py [--port 6379] [--block-ms 12000] [--only fixed]

For each client setting, another client holds the lock `example:block` while this one waits
with BLOCK. It counts how many LOCK.ACQUIRE ... BLOCK commands the server received for that
one wait (with MONITOR: INFO commandstats does not count a blocked call whose client went
away), on how many connections, and the most waiters it saw queued at once.

With redis-py 8.1, whose defaults are a 5 s socket_timeout and 10 retries on timeouts, a
BLOCK longer than 5 s is sent again and again, each time on a new connection at the back of
the queue (BLOCK 12000: 11 sends, TimeoutError after about 59 s).
"""

import argparse
import threading
import time
import uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

KEY = "example:block"


class Monitor:
    """Counts the blocking LOCK.ACQUIREs on KEY that reach the server, with MONITOR."""

    def __init__(self, port):
        self.conn = redis.Redis(port=port, socket_timeout=None).monitor().__enter__()
        self.count, self.ports = 0, set()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while True:
                line = self.conn.next_command()
                cmd = line["command"]
                if cmd.startswith("LOCK.ACQUIRE " + KEY) and " BLOCK " in cmd:
                    self.count += 1
                    self.ports.add(line.get("client_port"))
        except Exception:
            pass  # connection closed by stop()

    def stop(self):
        time.sleep(0.2)  # let the last lines arrive
        self.conn.connection.disconnect()
        return self.count, len(self.ports)


def wait_once(admin, client, block_ms):
    """One LOCK.ACQUIRE ... BLOCK on a held lock; returns what happened."""
    admin.delete(KEY)
    admin.execute_command("LOCK.ACQUIRE", KEY, 120000, "TOKEN", "holder")
    monitor = Monitor(admin.connection_pool.connection_kwargs["port"])
    token = uuid.uuid4().hex  # always pass a TOKEN with BLOCK
    most_waiters, done = 0, threading.Event()

    def watch():
        nonlocal most_waiters
        while not done.is_set():
            info = admin.execute_command("LOCK.INFO", KEY) or {}
            if isinstance(info, list):
                info = dict(zip(info[::2], info[1::2]))
            most_waiters = max(most_waiters, info.get(b"waiters", 0))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.monotonic()
    try:
        outcome = repr(client.execute_command("LOCK.ACQUIRE", KEY, 30000, "TOKEN", token,
                                              "BLOCK", block_ms))
    except (redis.ConnectionError, redis.TimeoutError) as e:
        outcome = f"{type(e).__name__}: {e}"
        # The server may have granted the lock to a reply nobody read: give it back.
        admin.execute_command("LOCK.RELEASE", KEY, token)
    elapsed = time.monotonic() - start
    done.set()
    watcher.join()
    sent, connections = monitor.stop()
    admin.execute_command("LOCK.RELEASE", KEY, "holder")
    return sent, connections, most_waiters, elapsed, outcome


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--block-ms", type=int, default=12000)
    ap.add_argument("--only", choices=["defaults", "timeout", "fixed"])
    args = ap.parse_args()
    admin = redis.Redis(port=args.port, socket_timeout=None)
    settings = {
        # redis-py 8.1: socket_timeout=5, 10 retries (exponential backoff) on timeouts.
        "defaults": redis.Redis(port=args.port),
        # A read timeout shorter than BLOCK, no retries: the client gives up early.
        "timeout": redis.Redis(port=args.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)),
        # The fix: no read timeout (or one longer than BLOCK) and no automatic re-send.
        "fixed": redis.Redis(port=args.port, socket_timeout=None, retry=Retry(NoBackoff(), 0)),
    }
    print(f"redis-py {redis.__version__}, BLOCK {args.block_ms} ms")
    for name, client in settings.items():
        if args.only and name != args.only:
            continue
        sent, conns, most, elapsed, outcome = wait_once(admin, client, args.block_ms)
        print(f"{name:9} ACQUIRE ... BLOCK sent {sent:2} times on {conns:2} connections, "
              f"most waiters queued {most}; after {elapsed:5.1f} s: {outcome}")


if __name__ == "__main__":
    main()
