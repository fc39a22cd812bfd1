"""Helpers shared by the sync and asyncio tests."""
import asyncio
import functools
import threading


def to_thread(func, *args, **kwargs):
    """asyncio.to_thread for Python 3.8."""
    return asyncio.get_running_loop().run_in_executor(None, functools.partial(func, *args, **kwargs))


class FencedResource:
    """A resource guarded by fences: it records (fence, worker), rejects a fence lower than the
    highest it has seen, and asserts that no two workers are ever inside at once."""

    def __init__(self):
        self._mutex = threading.Lock()
        self.inside = None
        self.highest = 0
        self.log = []
        self.errors = []

    def enter(self, fence, worker):
        with self._mutex:
            if self.inside is not None:
                self.errors.append(f"{worker} entered while {self.inside} was inside")
            if fence < self.highest:
                self.errors.append(f"{worker}: fence {fence} below the highest {self.highest}")
                return False
            self.inside = worker
            self.highest = fence
            self.log.append((fence, worker))
            return True

    def leave(self, worker):
        with self._mutex:
            if self.inside != worker:
                self.errors.append(f"{worker} left but {self.inside} was inside")
            self.inside = None


class NoClient:
    """A client that fails the test if anything is sent through it."""

    def __getattr__(self, name):
        raise AssertionError(f"nothing may be sent, but {name} was used")


def waiting_ids(client):
    """The ids of the connections blocked in LOCK.ACQUIRE (CLIENT LIST)."""
    return [c["id"] for c in client.client_list() if c.get("cmd") == "lock.acquire"
            and "b" in c.get("flags", "")]


def key_on_each_node(cluster_client, prefix="lk"):
    """One key name per primary of a cluster (by the cluster client's slot map)."""
    names = {}
    i = 0
    while len(names) < len(cluster_client.get_primaries()):
        name = f"{prefix}:{i}"
        node = cluster_client.get_node_from_key(name)
        names.setdefault(node.name, name)
        i += 1
    return list(names.values())
