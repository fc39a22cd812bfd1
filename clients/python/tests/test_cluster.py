"""fencelock on a 3-primary cluster, with redis.RedisCluster and redis.asyncio.RedisCluster:
locks on every node, waiting, the watchdog, ephemeral holds, release, the drop-in."""
import asyncio
import contextlib
import socket
import threading
import time
import unittest

import redis
import redis.asyncio

import fencelock
import fencelock.asyncio
from .helpers import key_on_each_node, to_thread, waiting_ids
from .servers import Cluster, wait_until

TTL = 0.5


def setUpModule():
    global CLUSTER
    CLUSTER = Cluster(3)


def tearDownModule():
    CLUSTER.stop()


def owner(rc, name):
    """A plain client of the primary that owns `name`."""
    node = rc.get_node_from_key(name)
    return redis.Redis(host=node.host, port=node.port)


class SyncClusterTest(unittest.TestCase):
    def setUp(self):
        self.rc = redis.RedisCluster(host="127.0.0.1", port=CLUSTER.startup.port)
        self.locks = fencelock.Locks(self.rc, ttl=TTL)
        self.names = key_on_each_node(self.rc, self.id().rsplit(".", 1)[-1])

    def tearDown(self):
        self.rc.close()

    def test_locks_on_every_node_with_watchdog_and_waiters(self):
        self.assertEqual(len(self.names), 3)
        held = [self.locks.acquire(n) for n in self.names]
        got = {}
        threads = [threading.Thread(target=lambda n=n: got.__setitem__(n, self.locks.acquire(n, wait=10)))
                   for n in self.names]
        for t in threads:
            t.start()
        for n in self.names:
            with owner(self.rc, n) as c:
                wait_until(lambda: waiting_ids(c), what=f"the waiter of {n} on its owner")
        time.sleep(3 * TTL)
        self.assertEqual(got, {})
        self.assertTrue(all(h.held for h in held))
        for h in held:
            self.assertTrue(h.release())
        for t in threads:
            t.join(5)
        for h in held:
            self.assertGreater(got[h.name].fence, h.fence)
            self.assertEqual(self.locks.info(h.name)["fence"], got[h.name].fence)
            self.assertTrue(got[h.name].release())
            self.assertIsNone(self.locks.info(h.name))

    def test_ephemeral_and_lost(self):
        name = self.names[1]
        held = self.locks.acquire(name, ephemeral=True, meta="node-test")
        self.assertEqual(self.locks.holders(name)[0]["ephemeral"], 1)
        time.sleep(2 * TTL)
        self.assertTrue(held.held)
        self.assertTrue(held.release())
        lost = self.locks.acquire(name)
        self.rc.delete(name)
        self.assertTrue(lost.lost.wait(TTL))
        self.assertFalse(lost.release())

    def test_stale_slot_map_follows_moved(self):
        name = self.names[0]
        slot = self.rc.keyslot(name)
        right = self.rc.get_node_from_key(name)
        wrong = next(n for n in self.rc.get_primaries() if n.name != right.name)
        self.rc.nodes_manager.slots_cache[slot] = [wrong]
        held = self.locks.acquire(name, wait=1)
        self.assertIsNotNone(held)
        self.assertEqual(held._hold.address, (right.host, right.port))
        time.sleep(3 * TTL)
        self.assertTrue(held.held, "the watchdog renews on the right node")
        self.assertTrue(held.release())
        self.assertIsNone(self.locks.info(name))

    def test_migrating_slot_follows_ask(self):
        name = self.names[2]
        slot = self.rc.keyslot(name)
        src = self.rc.get_node_from_key(name)
        dst = next(n for n in self.rc.get_primaries() if n.name != src.name)
        src_c, dst_c = (redis.Redis(host=n.host, port=n.port, decode_responses=True) for n in (src, dst))
        src_id, dst_id = src_c.execute_command("CLUSTER", "MYID"), dst_c.execute_command("CLUSTER", "MYID")
        dst_c.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src_c.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        try:
            # the key is not on the source: it answers ASK, the wait goes on with ASKING there
            held = self.locks.acquire(name, wait=1)
            self.assertIsNotNone(held)
            self.assertEqual(held._hold.address, (dst.host, dst.port))
            self.assertTrue(held.release())
        finally:
            for c in (dst_c, src_c):
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
                c.close()

    def test_watchdog_without_the_slot_in_the_map_still_signals(self):
        # the cluster client's slot map loses the key's slot (as while it refreshes): the
        # watchdog cannot renew, but it must not die without a word: lost at the safe deadline
        name = self.names[0]
        held = self.locks.acquire(name)
        slot = self.rc.keyslot(name)
        nodes = self.rc.nodes_manager.slots_cache.pop(slot)
        try:
            self.assertTrue(held.lost.wait(TTL + 0.2))
            self.assertIn("safe deadline", held.lost_reason)
        finally:
            self.rc.nodes_manager.slots_cache[slot] = nodes
        self.assertFalse(held.release())

    def test_drop_in_lock(self):
        for name in self.names:
            with self.rc.lock(name, lock_class=fencelock.Lock) as lock:
                self.assertTrue(lock.owned())
                self.assertFalse(fencelock.Lock(self.rc, name).acquire(blocking=False))
            self.assertFalse(lock.locked())


class AsyncClusterTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.rc = redis.asyncio.RedisCluster(host="127.0.0.1", port=CLUSTER.startup.port)
        await self.rc.initialize()
        self.locks = fencelock.asyncio.Locks(self.rc, ttl=TTL)
        self.names = key_on_each_node(self.rc, self.id().rsplit(".", 1)[-1])

    async def asyncTearDown(self):
        await self.rc.aclose()

    async def test_locks_on_every_node_with_watchdog_and_waiters(self):
        held = [await self.locks.acquire(n) for n in self.names]
        waiters = [asyncio.create_task(self.locks.acquire(n, wait=10)) for n in self.names]
        sync_rc = redis.RedisCluster(host="127.0.0.1", port=CLUSTER.startup.port)
        for n in self.names:
            with owner(sync_rc, n) as c:
                await to_thread(wait_until, lambda: waiting_ids(c))
        sync_rc.close()
        await asyncio.sleep(3 * TTL)
        self.assertFalse(any(w.done() for w in waiters))
        self.assertTrue(all(h.held for h in held))
        for h in held:
            self.assertTrue(await h.release())
        got = await asyncio.wait_for(asyncio.gather(*waiters), 5)
        for h, g in zip(held, got):
            self.assertGreater(g.fence, h.fence)
            self.assertTrue(await g.release())
            self.assertIsNone(await self.locks.info(h.name))

    async def test_stale_slot_map_follows_moved(self):
        name = self.names[1]
        right = self.rc.get_node_from_key(name)
        wrong = next(n for n in self.rc.get_primaries() if n.name != right.name)
        self.rc.nodes_manager.slots_cache[self.rc.keyslot(name)] = [wrong]
        held = await self.locks.acquire(name, wait=1)
        self.assertEqual(held._hold.address, (right.host, right.port))
        await asyncio.sleep(3 * TTL)
        self.assertTrue(held.held)
        self.assertTrue(await held.release())
        self.assertIsNone(await self.locks.info(name))

    async def test_wait_on_a_silent_cluster_ends_by_its_deadline(self):
        # a startup node that accepts connections and never answers: the slot map cannot be
        # read, and the wait still ends (TimeoutError) near its deadline instead of hanging
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            rc = redis.asyncio.RedisCluster(host="127.0.0.1", port=silent.getsockname()[1])
            locks = fencelock.asyncio.Locks(rc, ttl=TTL, retry_budget=0.2)
            start = time.monotonic()
            with self.assertRaises(redis.TimeoutError):
                await asyncio.wait_for(locks.acquire("k", wait=0.1), 5)
            self.assertLess(time.monotonic() - start, 0.1 + 1.0 + 1.0)
            with contextlib.suppress(Exception):
                await rc.aclose()

    async def test_ephemeral_and_lost(self):
        name = self.names[2]
        held = await self.locks.acquire(name, ephemeral=True, wait=1)
        self.assertEqual((await self.locks.holders(name))[0]["ephemeral"], 1)
        await asyncio.sleep(2 * TTL)
        self.assertTrue(held.held)
        self.assertTrue(await held.release())
        lost = await self.locks.acquire(name)
        await self.rc.delete(name)
        await asyncio.wait_for(lost.lost.wait(), TTL)
        self.assertFalse(await lost.release())


if __name__ == "__main__":
    unittest.main()
