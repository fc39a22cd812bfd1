"""fencelock.asyncio.Locks over redis.asyncio.Redis, on real servers with the module."""
import asyncio
import contextlib
import math
import time
import unittest

import redis
import redis.asyncio

import fencelock
import fencelock.asyncio
from .helpers import FencedResource, NoClient, to_thread, waiting_ids
from .servers import Server

TTL = 0.5


async def until(condition, timeout=5.0, what="condition"):
    """Await until `condition()` (a coroutine function) returns a true value."""
    deadline = time.monotonic() + timeout
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
    return value


@contextlib.asynccontextmanager
async def own_server(**kwargs):
    """A server of the test's own (for SIGKILL, INFO commandstats) and an asyncio client."""
    server = await to_thread(Server, **kwargs)
    r = redis.asyncio.Redis(port=server.port)
    try:
        yield server, r
    finally:
        await r.aclose()
        server.stop()


class AsyncTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.sync = cls.server.client()

    @classmethod
    def tearDownClass(cls):
        cls.sync.close()
        cls.server.stop()

    async def asyncSetUp(self):
        self.r = redis.asyncio.Redis(port=self.server.port)
        self.locks = fencelock.asyncio.Locks(self.r, ttl=TTL)
        self.key = self.id().rsplit(".", 1)[-1]

    async def asyncTearDown(self):
        await self.r.aclose()

    async def waiters(self):
        return (await self.locks.info(self.key) or {}).get("waiters")

    async def test_acquire_release(self):
        held = await self.locks.acquire(self.key)
        self.assertEqual(len(held.token), 32)
        self.assertIsNone(await self.locks.acquire(self.key))
        self.assertEqual((await self.locks.info(self.key))["fence"], held.fence)
        self.assertIsInstance(held.lost, asyncio.Event)
        self.assertTrue(await held.release())
        self.assertFalse(await held.release())
        self.assertFalse(held.held)

    async def test_release_ends_the_watchdog_task(self):
        held = await self.locks.acquire(self.key)
        self.assertTrue(await held.release())
        self.assertTrue(held._task.done(), "the watchdog task has ended, its connection closed")

    async def test_cancelled_release_still_ends_the_hold(self):
        # release() is cut short while it waits for a RENEW held back by a pause: the watchdog
        # is stopped all the same, so the hold must not go on looking held (nor `lost` ever come)
        held = await self.locks.acquire(self.key)
        await self.r.execute_command("CLIENT", "PAUSE", 500, "WRITE")
        try:
            await asyncio.sleep(TTL / 3 + 0.08)  # the first RENEW is in flight, unanswered
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(held.release(), 0.05)
            self.assertFalse(held.held)
        finally:
            await self.r.execute_command("CLIENT", "UNPAUSE")
        self.assertFalse(await held.release())
        self.assertIsNone(await self.locks.info(self.key))

    async def test_watchdog_holds_5x_ttl_while_another_waits(self):
        held = await self.locks.acquire(self.key)
        waiter = asyncio.create_task(self.locks.acquire(self.key, wait=10))
        await until(self.waiters, what="the waiter")
        await asyncio.sleep(5 * TTL)
        self.assertFalse(waiter.done())
        self.assertTrue(held.held)
        self.assertTrue(await held.release())
        got = await asyncio.wait_for(waiter, 5)
        self.assertGreater(got.fence, held.fence)
        self.assertTrue(await got.release())

    async def test_lost_when_key_deleted(self):
        calls = []

        async def on_lost(h):
            calls.append(h)

        held = await self.locks.acquire(self.key, on_lost=on_lost)
        await self.r.delete(self.key)
        await asyncio.wait_for(held.lost.wait(), TTL)
        self.assertIn("refused", held.lost_reason)
        await until(lambda: asyncio.sleep(0, calls), what="on_lost")
        self.assertEqual(calls, [held])
        self.assertFalse(await held.release())

    async def test_lost_when_client_cut_off(self):
        held = await self.locks.acquire(self.key)
        start = time.monotonic()
        await self.r.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        try:
            await asyncio.wait_for(held.lost.wait(), TTL + 0.2)
            self.assertLessEqual(time.monotonic() - start, TTL + 0.05)
            self.assertIn("safe deadline", held.lost_reason)
        finally:
            await self.r.execute_command("CLIENT", "UNPAUSE")
        self.assertFalse(await held.release())

    async def test_lost_when_server_killed(self):
        async with own_server() as (server, r):
            held = await fencelock.asyncio.Locks(r, ttl=TTL).acquire(self.key)
            killed = time.monotonic()
            server.kill9()
            await asyncio.wait_for(held.lost.wait(), TTL + 0.2)
            self.assertLessEqual(time.monotonic() - killed, TTL + 0.05)
            self.assertFalse(await held.release())

    async def test_no_renew_after_release(self):
        async with own_server() as (server, r):
            held = await fencelock.asyncio.Locks(r, ttl=0.3).acquire(self.key, renew_every=0.05)
            await until(lambda: to_thread(lambda: server.renew_calls() >= 3))
            self.assertTrue(await held.release())
            calls = server.renew_calls()
            await asyncio.sleep(0.3)
            self.assertEqual(server.renew_calls(), calls)

    async def test_late_grant_is_renewed_at_once(self):
        async with own_server() as (server, r):
            locks = fencelock.asyncio.Locks(r, ttl=0.6)
            first = await locks.acquire(self.key, ttl=5, watchdog=False)
            asyncio.get_running_loop().call_later(0.5, asyncio.ensure_future, first.release())
            calls = server.renew_calls()
            second = await locks.acquire(self.key, wait=5, watchdog=False)
            self.assertEqual(server.renew_calls(), calls + 1)
            await asyncio.sleep(0.4)
            self.assertFalse(second.lost.is_set())
            self.assertTrue(await second.release())

    async def test_wait_survives_killed_connection(self):
        holder = await self.locks.acquire(self.key)
        waiter = asyncio.create_task(self.locks.acquire(self.key, wait=3))
        ids = await until(lambda: to_thread(waiting_ids, self.sync))
        await self.r.execute_command("CLIENT", "KILL", "ID", ids[0])
        await until(lambda: to_thread(lambda: waiting_ids(self.sync) not in ([], ids)))
        self.assertEqual((await self.locks.info(self.key))["fence"], holder.fence)
        self.assertTrue(await holder.release())
        got = await asyncio.wait_for(waiter, 5)
        self.assertGreater(got.fence, holder.fence)
        info = await self.locks.info(self.key)
        self.assertEqual((info["holders"], info["fence"]), (1, got.fence))
        self.assertTrue(await got.release())

    async def test_cancelled_wait_leaves_no_grant(self):
        holder = await self.locks.acquire(self.key)
        waiter = asyncio.create_task(self.locks.acquire(self.key, wait=math.inf))
        await until(self.waiters)
        waiter.cancel()
        with self.assertRaises(asyncio.CancelledError):
            await waiter
        with self.assertRaises(asyncio.TimeoutError):
            await asyncio.wait_for(self.locks.acquire(self.key, wait=5), 0.2)
        self.assertTrue(await holder.release())
        self.assertIsNone(await self.locks.info(self.key), "no ghost grant to a gone waiter")

    async def test_contention_16_tasks(self):
        resource = FencedResource()
        locks = fencelock.asyncio.Locks(self.r, ttl=1.0)

        async def worker(n):
            for _ in range(3):
                async with locks.lock(self.key, wait=30) as held:
                    resource.enter(held.fence, n)
                    await asyncio.sleep(0.005)
                    resource.leave(n)

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(16))), 60)
        self.assertEqual(resource.errors, [])
        fences = [f for f, _ in resource.log]
        self.assertEqual(len(fences), 48)
        self.assertEqual(fences, sorted(set(fences)))

    async def test_options_reach_the_server(self):
        a = await self.locks.acquire(self.key, shared=True, meta="reader-a")
        b = await self.locks.acquire(self.key, shared=True, ephemeral=True)
        holders = await self.locks.holders(self.key)
        self.assertEqual([(h["mode"], h["ephemeral"]) for h in holders], [("shared", 0), ("shared", 1)])
        self.assertEqual(holders[0]["meta"], b"reader-a")
        sem = [await self.locks.acquire(self.key + ":sem", limit=2) for _ in range(3)]
        self.assertIsNone(sem[2])
        self.assertEqual((await self.locks.info(self.key + ":sem"))["limit"], 2)
        for held in (a, b, sem[0], sem[1]):
            self.assertTrue(await held.release())

    async def test_ephemeral_hold_ends_with_its_connection(self):
        held = await self.locks.acquire(self.key, ephemeral=True, ttl=3, wait=1)
        await asyncio.sleep(0)
        clients = await self.r.client_list()
        mine = [c["id"] for c in clients if c.get("cmd") == "lock.acquire"]
        self.assertEqual(len(mine), 1)
        await self.r.execute_command("CLIENT", "KILL", "ID", mine[0])
        self.assertIsNone(await self.locks.info(self.key))
        await asyncio.wait_for(held.lost.wait(), 3)
        self.assertIn("connection closed", held.lost_reason)

    async def test_without_watchdog_and_manual_renew(self):
        held = await self.locks.acquire(self.key, watchdog=False)
        await asyncio.sleep(TTL / 2)
        self.assertTrue(await held.renew())
        await asyncio.sleep(TTL * 0.6)
        self.assertFalse(held.lost.is_set(), "renew() moved the safe deadline")
        await asyncio.wait_for(held.lost.wait(), TTL)
        self.assertIn("safe deadline", held.lost_reason)
        self.assertFalse(await held.renew())

    async def test_context_manager(self):
        async with self.locks.lock(self.key) as held:
            with self.assertRaises(fencelock.NotAcquired):
                async with self.locks.lock(self.key, wait=0.1):
                    pass
            await self.r.delete(self.key)
            await asyncio.wait_for(held.lost.wait(), TTL)
        with self.assertRaises(KeyError):
            async with self.locks.lock(self.key):
                raise KeyError("the body's own")
        self.assertIsNone(await self.locks.info(self.key))

    async def test_bad_input_and_errors(self):
        with self.assertRaises(fencelock.LockError):
            await fencelock.asyncio.Locks(NoClient()).acquire("k", shared=True, limit=2)
        with self.assertRaises(fencelock.LockError):
            await fencelock.asyncio.Locks(NoClient()).acquire("k", ttl=0.0001)
        with self.assertRaises(fencelock.LockError):
            fencelock.asyncio.Locks(self.sync)  # a blocking client
        await self.r.set(self.key, "plain")
        with self.assertRaises(fencelock.ServerError):
            await self.locks.acquire(self.key, wait=1)

    async def test_resp2_and_token(self):
        r2 = redis.asyncio.Redis(port=self.server.port, protocol=2)
        locks = fencelock.asyncio.Locks(r2, ttl=TTL)
        held = await locks.acquire(self.key, token=b"tok-1", wait=1)
        self.assertEqual(held.token, b"tok-1")
        self.assertEqual((await locks.info(self.key))["fence"], held.fence)
        self.assertTrue(await held.release())
        await r2.aclose()

    async def test_module_not_loaded(self):
        async with own_server(module=False) as (server, r):
            with self.assertRaises(fencelock.ModuleNotLoaded) as cm:
                await fencelock.asyncio.Locks(r).acquire("k", wait=1)
            self.assertIn("loadmodule", str(cm.exception))
            with self.assertRaises(fencelock.ModuleNotLoaded):
                await fencelock.asyncio.Locks(r).acquire("k")


if __name__ == "__main__":
    unittest.main()
