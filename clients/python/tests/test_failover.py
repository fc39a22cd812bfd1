"""fencelock through a cluster failover: a primary SIGKILLed, its replica promoted with
CLUSTER FAILOVER TAKEOVER. Locks and their fences are replicated, so the hold lives on: its
watchdog refreshes the cluster client's slot map after the connection errors and renews on
the new primary, and a wait that spans the failover ends with the lock."""
import asyncio
import threading
import time
import unittest

import redis
import redis.asyncio

import fencelock
import fencelock.asyncio
from .helpers import to_thread, waiting_ids
from .servers import Cluster, wait_until

TTL = 1.0
WAIT = 8.0
# a small node timeout, and a full sync that starts at once (not after 5 s)
FAST = ("--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0")


def setUpModule():
    global CLUSTER
    CLUSTER = Cluster(3, replicas=(0, 1), extra=FAST)


def tearDownModule():
    CLUSTER.stop()


def key_on(cluster_client, node, prefix):
    """A key whose slot the cluster client's slot map gives to `node`."""
    i = 0
    while cluster_client.get_node_from_key(f"{prefix}:{i}").port != node.port:
        i += 1
    return f"{prefix}:{i}"


def replicated(primary):
    """Wait until the primary's writes so far have reached its replica."""
    with primary.client() as c:
        if c.execute_command("WAIT", 1, 5000) < 1:
            raise AssertionError("the replica did not acknowledge the writes")


def fail_over(primary, replica):
    """SIGKILL the primary (by its PID) and promote its replica; the RENEW count of the new
    primary once it is one."""
    primary.kill9()
    with replica.client(decode_responses=True) as c:
        c.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        wait_until(lambda: c.info("replication").get("role") == "master", 5, 0.01,
                   "the replica's promotion")
    return replica.renew_calls()


class SyncFailoverTest(unittest.TestCase):
    def test_hold_and_wait_survive_a_failover(self):
        primary, replica = CLUSTER.nodes[0], CLUSTER.replicas[0]
        rc = redis.RedisCluster(host="127.0.0.1", port=CLUSTER.nodes[2].port)
        self.addCleanup(rc.close)
        locks = fencelock.Locks(rc, ttl=TTL)
        name = key_on(rc, primary, "failover-sync")
        held = locks.acquire(name)
        got = {}
        waiter = threading.Thread(target=lambda: got.__setitem__("held", locks.acquire(name, wait=WAIT)))
        waiter.start()
        with primary.client() as c:
            wait_until(lambda: waiting_ids(c), what="the waiter on the primary")
        replicated(primary)
        renews = fail_over(primary, replica)
        time.sleep(2 * TTL)  # past the safe deadline of any renewal the old primary confirmed
        self.assertIsNone(held.lost_reason)
        self.assertTrue(held.held, "the watchdog renews on the new primary")
        self.assertGreater(replica.renew_calls(), renews)
        self.assertEqual(got, {}, "the waiter still waits")
        self.assertTrue(held.release())
        waiter.join(WAIT)
        self.assertIsNotNone(got.get("held"), "the wait ends with the lock")
        self.assertGreater(got["held"].fence, held.fence)
        self.assertEqual(locks.info(name)["fence"], got["held"].fence)
        self.assertTrue(got["held"].release())
        self.assertIsNone(locks.info(name))


class AsyncFailoverTest(unittest.IsolatedAsyncioTestCase):
    async def test_hold_and_wait_survive_a_failover(self):
        primary, replica = CLUSTER.nodes[1], CLUSTER.replicas[1]
        rc = redis.asyncio.RedisCluster(host="127.0.0.1", port=CLUSTER.nodes[2].port)
        await rc.initialize()
        self.addAsyncCleanup(rc.aclose)
        locks = fencelock.asyncio.Locks(rc, ttl=TTL)
        name = key_on(rc, primary, "failover-async")
        held = await locks.acquire(name)
        waiter = asyncio.ensure_future(locks.acquire(name, wait=WAIT))
        with primary.client() as c:
            await to_thread(wait_until, lambda: waiting_ids(c), what="the waiter on the primary")
        await to_thread(replicated, primary)
        renews = await to_thread(fail_over, primary, replica)
        await asyncio.sleep(2 * TTL)
        self.assertIsNone(held.lost_reason)
        self.assertTrue(held.held, "the watchdog renews on the new primary")
        self.assertGreater(await to_thread(replica.renew_calls), renews)
        self.assertFalse(waiter.done(), "the waiter still waits")
        self.assertTrue(await held.release())
        got = await asyncio.wait_for(waiter, WAIT)
        self.assertIsNotNone(got, "the wait ends with the lock")
        self.assertGreater(got.fence, held.fence)
        self.assertEqual((await locks.info(name))["fence"], got.fence)
        self.assertTrue(await got.release())
        self.assertIsNone(await locks.info(name))


if __name__ == "__main__":
    unittest.main()
