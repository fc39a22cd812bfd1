"""fencelock.Locks over redis.Redis, on real servers with the module."""
import math
import os
import signal
import threading
import time
import unittest

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

import fencelock
from .helpers import FencedResource, NoClient, waiting_ids
from .servers import Server, wait_until

TTL = 0.5


class SyncTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.r = cls.server.client()
        cls.locks = fencelock.Locks(cls.r, ttl=TTL)

    @classmethod
    def tearDownClass(cls):
        cls.r.close()
        cls.server.stop()

    def key(self):
        return self.id().rsplit(".", 1)[-1]

    def test_acquire_release_and_not_acquired(self):
        held = self.locks.acquire(self.key())
        self.assertIsNotNone(held)
        self.assertEqual(len(held.token), 32)
        self.assertEqual(held.token, held.token.lower())
        self.assertIsInstance(held.fence, int)
        self.assertEqual(held.ttl, TTL)
        self.assertTrue(held.held)
        self.assertIsNone(self.locks.acquire(self.key()))
        self.assertEqual(self.locks.info(self.key())["fence"], held.fence)
        self.assertTrue(held.release())
        self.assertFalse(held.held)
        self.assertFalse(held.release(), "a second release answers False")
        self.assertIsNone(self.locks.info(self.key()))

    def test_watchdog_holds_5x_ttl_while_another_waits(self):
        held = self.locks.acquire(self.key())
        got = []
        waiter = threading.Thread(target=lambda: got.append(self.locks.acquire(self.key(), wait=10)))
        waiter.start()
        wait_until(lambda: self.locks.info(self.key())["waiters"] == 1, what="the waiter")
        time.sleep(5 * TTL)
        self.assertEqual(got, [], "the waiter got the lock before release")
        self.assertTrue(held.held)
        self.assertFalse(held.lost.is_set())
        self.assertTrue(held.release())
        waiter.join(5)
        self.assertEqual(len(got), 1)
        self.assertGreater(got[0].fence, held.fence)
        self.assertTrue(got[0].release())

    def test_lost_when_key_deleted(self):
        calls = []
        held = self.locks.acquire(self.key(), on_lost=calls.append)
        self.r.delete(self.key())
        self.assertTrue(held.lost.wait(TTL), "lost within one ttl")
        self.assertIn("refused", held.lost_reason)
        self.assertFalse(held.held)
        wait_until(lambda: calls, what="on_lost")
        self.assertEqual(calls, [held])
        self.assertFalse(held.release())

    def test_lost_when_client_cut_off(self):
        held = self.locks.acquire(self.key(), on_lost=lambda h: 1 / 0)  # callback errors are logged
        admin = self.server.client()
        try:
            start = time.monotonic()
            admin.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
            self.assertTrue(held.lost.wait(TTL + 0.2), "lost within one ttl of the cut")
            self.assertLessEqual(time.monotonic() - start, TTL + 0.05)
            self.assertIn("safe deadline", held.lost_reason)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        self.assertFalse(held.release())
        wait_until(lambda: self.locks.info(self.key()) is None, what="the lock to end")

    def test_no_renew_after_release(self):
        server = Server()
        try:
            locks = fencelock.Locks(server.client(), ttl=0.3)
            held = locks.acquire(self.key(), renew_every=0.05)
            wait_until(lambda: server.renew_calls() >= 3, what="renewals")
            self.assertTrue(held.release())
            calls = server.renew_calls()
            time.sleep(0.3)  # six renew periods
            self.assertEqual(server.renew_calls(), calls)
        finally:
            server.stop()

    def test_late_grant_is_renewed_at_once(self):
        server = Server()
        try:
            locks = fencelock.Locks(server.client(), ttl=0.6)
            first = locks.acquire(self.key(), ttl=5, watchdog=False)
            threading.Timer(0.5, first.release).start()  # the grant comes > ttl/3 after asking
            calls = server.renew_calls()
            second = locks.acquire(self.key(), wait=5, watchdog=False)
            self.assertEqual(server.renew_calls(), calls + 1, "one RENEW right after the grant")
            self.assertFalse(second.lost.wait(0.4), "the confirmed time is the RENEW's")
            self.assertTrue(second.release())
        finally:
            server.stop()

    def test_late_grant_whose_renew_is_cut_is_retried(self):
        # the grant comes > ttl/3 after asking, and its at-once RENEW goes unanswered (writes
        # are paused right after the hand-off): the acquire retries with the same token within
        # its wait and gets the lock, instead of raising TimeoutError
        locks = fencelock.Locks(self.r, ttl=0.6)
        first = locks.acquire(self.key(), ttl=5, watchdog=False)
        admin = self.server.client()

        def hand_off():
            pipe = admin.pipeline(transaction=False)
            pipe.execute_command("LOCK.RELEASE", self.key(), first.token)
            pipe.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
            pipe.execute()

        timer = threading.Timer(0.5, hand_off)
        timer.start()
        try:
            second = locks.acquire(self.key(), wait=5, watchdog=False)
        finally:
            timer.join()
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        self.assertFalse(first.release(), "the pipeline released it")
        self.assertIsNotNone(second)
        self.assertTrue(second.held)
        self.assertEqual(locks.info(self.key())["fence"], second.fence)
        self.assertTrue(second.release())

    def test_lost_on_time_after_a_slow_connect(self):
        # the watchdog's connect is slow, then its RENEW goes unanswered: the wait for the
        # answer ends at the safe deadline (not a full safe-deadline's time after the connect)
        locks = fencelock.Locks(self.r, ttl=TTL)
        plain_open = locks._open

        def slow_open(*args):
            time.sleep(0.2)
            return plain_open(*args)

        locks._open = slow_open
        held = locks.acquire(self.key())
        admin = self.server.client()
        try:
            start = time.monotonic()
            admin.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
            self.assertTrue(held.lost.wait(TTL + 0.5))
            self.assertLessEqual(time.monotonic() - start, TTL + 0.05, "lost by the safe deadline")
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        self.assertFalse(held.release())

    def test_manual_renew_answered_after_the_loss_is_false(self):
        # a manual RENEW held back past the safe deadline: the lost timer has fired (and sent
        # its release) by the time the server answers 1, so renew() must not answer True
        locks = fencelock.Locks(self.r, ttl=TTL, drift=0.4)  # safe for 0.3 s of the 0.5 s
        held = locks.acquire(self.key(), watchdog=False)
        admin = self.server.client()
        admin.execute_command("CLIENT", "PAUSE", 400, "WRITE")
        try:
            renewed = held.renew()
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        self.assertTrue(held.lost.is_set())
        self.assertFalse(renewed, "a renewal confirmed after `lost` does not count")
        self.assertFalse(held.held)
        self.assertFalse(held.release())

    def test_lost_when_server_killed(self):
        server = Server()
        try:
            held = fencelock.Locks(server.client(), ttl=TTL).acquire(self.key())
            killed = time.monotonic()
            server.kill9()
            self.assertTrue(held.lost.wait(TTL + 0.2))
            self.assertLessEqual(time.monotonic() - killed, TTL + 0.05)
            self.assertIn("safe deadline", held.lost_reason)
            self.assertFalse(held.release(), "release of a lost lock answers False, never raises")
        finally:
            server.stop()

    def test_with_block_error_is_not_hidden_by_a_failed_release(self):
        for kind in ("HeldLock", "fencelock.Lock"):
            server = Server()
            try:
                r = server.client(retry=Retry(NoBackoff(), 0))
                if kind == "HeldLock":
                    lock = fencelock.Locks(r, ttl=5, retry_budget=0.2).acquire(self.key())
                else:
                    lock = fencelock.Lock(r, self.key(), timeout=5)
                with self.subTest(kind), self.assertRaises(KeyError):
                    with lock:
                        server.kill9()  # the release on leaving cannot reach the server
                        raise KeyError("the block's own error")
            finally:
                server.stop()

    def test_wait_survives_killed_connection(self):
        holder = self.locks.acquire(self.key())
        got = []
        waiter = threading.Thread(target=lambda: got.append(self.locks.acquire(self.key(), wait=3)))
        waiter.start()
        ids = wait_until(lambda: waiting_ids(self.r), what="the waiting connection")
        self.r.execute_command("CLIENT", "KILL", "ID", ids[0])
        wait_until(lambda: waiting_ids(self.r) and waiting_ids(self.r) != ids, what="the re-sent wait")
        self.assertEqual(self.locks.info(self.key())["fence"], holder.fence, "no second grant")
        self.assertTrue(holder.release())
        waiter.join(5)
        self.assertGreater(got[0].fence, holder.fence)
        info = self.locks.info(self.key())
        self.assertEqual((info["holders"], info["fence"], info["waiters"]), (1, got[0].fence, 0))
        self.assertTrue(got[0].release())

    def test_wait_with_killed_connection_ends_cleanly_at_deadline(self):
        holder = self.locks.acquire(self.key())
        start = time.monotonic()
        killer = threading.Thread(target=lambda: self.r.execute_command(
            "CLIENT", "KILL", "ID", wait_until(lambda: waiting_ids(self.r))[0]))
        killer.start()
        self.assertIsNone(self.locks.acquire(self.key(), wait=0.8))
        killer.join()
        self.assertLess(time.monotonic() - start, 0.8 + 0.5)
        info = self.locks.info(self.key())
        self.assertEqual((info["fence"], info["waiters"]), (holder.fence, 0))
        self.assertTrue(holder.release())

    def test_unanswered_wait_gives_up_and_leaves_no_grant(self):
        admin = self.server.client()
        admin.execute_command("CLIENT", "PAUSE", 2500, "WRITE")  # the ACQUIRE is held unanswered
        try:
            start = time.monotonic()
            with self.assertRaises(redis.TimeoutError):
                self.locks.acquire(self.key(), wait=0.3)
            self.assertLess(time.monotonic() - start, 0.3 + 1.0 + 1.5)
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        time.sleep(0.1)  # let the server serve whatever the pause held back
        self.assertIsNone(self.locks.info(self.key()), "no ghost grant after the pause")

    def test_keyboard_interrupt_during_wait_leaves_no_grant(self):
        # Python's own Ctrl-C handler, whatever this process inherited: started in the
        # background (nohup, `&` without job control) SIGINT is ignored, and the wait would
        # never be interrupted.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        holder = self.locks.acquire(self.key())
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with self.assertRaises(KeyboardInterrupt):
            self.locks.acquire(self.key(), wait=math.inf)
        timer.join()
        wait_until(lambda: self.locks.info(self.key())["waiters"] == 0, what="the abandoned wait")
        self.assertTrue(holder.release())
        self.assertIsNone(self.locks.info(self.key()), "nothing granted to the interrupted wait")

    def test_decode_responses_client(self):
        locks = fencelock.Locks(self.server.client(decode_responses=True), ttl=TTL)
        held = locks.acquire(self.key(), meta="label", wait=1)
        self.assertEqual(locks.holders(self.key())[0]["meta"], "label")
        self.assertEqual(locks.info(self.key())["fence"], held.fence)
        self.assertTrue(held.release())
        lock = fencelock.Lock(self.server.client(decode_responses=True), self.key(), timeout=1)
        self.assertTrue(lock.acquire(token="t1"))
        self.assertTrue(lock.owned())
        lock.release()

    def test_contention_16_workers(self):
        resource = FencedResource()
        locks = fencelock.Locks(self.server.client(max_connections=64), ttl=1.0)

        def worker(n):
            for _ in range(3):
                with locks.lock(self.key(), wait=30) as held:
                    resource.enter(held.fence, n)
                    time.sleep(0.005)
                    resource.leave(n)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(resource.errors, [])
        self.assertEqual(len(resource.log), 48)
        fences = [f for f, _ in resource.log]
        self.assertEqual(fences, sorted(set(fences)), "fences strictly increase")

    def test_options_reach_the_server(self):
        k = self.key()
        a = self.locks.acquire(k + ":rw", shared=True, meta="reader-a")
        b = self.locks.acquire(k + ":rw", shared=True, ephemeral=True)
        holders = self.locks.holders(k + ":rw")
        self.assertEqual([h["mode"] for h in holders], ["shared", "shared"])
        self.assertEqual([h["ephemeral"] for h in holders], [0, 1])
        self.assertEqual(holders[0]["meta"], b"reader-a")
        self.assertIsNone(self.locks.acquire(k + ":rw"), "a writer waits for the readers")
        sem = [self.locks.acquire(k + ":sem", limit=2) for _ in range(3)]
        self.assertIsNotNone(sem[1])
        self.assertIsNone(sem[2])
        self.assertEqual(self.locks.info(k + ":sem")["limit"], 2)
        for held in (a, b, sem[0], sem[1]):
            self.assertTrue(held.release())

    def test_ephemeral_hold_ends_with_its_connection(self):
        held = self.locks.acquire(self.key(), ephemeral=True, ttl=5)
        mine = [c["id"] for c in self.r.client_list() if c.get("cmd") == "lock.acquire"]
        self.assertEqual(len(mine), 1, "the hold's pinned connection")
        self.r.execute_command("CLIENT", "KILL", "ID", mine[0])
        self.assertIsNone(self.locks.info(self.key()), "the server ended the hold at once")
        self.assertTrue(held.lost.wait(5 / 3 + 0.5))
        self.assertIn("connection closed", held.lost_reason)
        self.assertFalse(held.release())

    def test_ephemeral_renews_and_releases_on_its_connection(self):
        held = self.locks.acquire(self.key(), ephemeral=True, wait=1)
        time.sleep(3 * TTL)
        self.assertTrue(held.held)
        self.assertEqual(self.locks.holders(self.key())[0]["ephemeral"], 1)
        self.assertTrue(held.release())
        self.assertIsNone(self.locks.info(self.key()))

    def test_without_watchdog_lost_at_safe_deadline_and_manual_renew(self):
        held = self.locks.acquire(self.key(), watchdog=False)
        time.sleep(TTL / 2)
        self.assertTrue(held.renew())
        self.assertFalse(held.lost.wait(TTL * 0.6), "renew() moved the safe deadline")
        self.assertTrue(held.lost.wait(TTL))
        self.assertIn("safe deadline", held.lost_reason)
        self.assertFalse(held.renew())
        wait_until(lambda: self.locks.info(self.key()) is None, what="the server's expiry")
        held2 = self.locks.acquire(self.key(), watchdog=False)
        self.r.delete(self.key())
        self.assertFalse(held2.renew())
        self.assertIn("refused", held2.lost_reason)

    def test_wait_forever_and_token(self):
        holder = self.locks.acquire(self.key(), token="my-token")
        self.assertEqual(holder.token, "my-token")
        again = self.r.execute_command("LOCK.ACQUIRE", self.key(), 500, "TOKEN", "my-token")
        self.assertEqual(int(again[1]), holder.fence, "the same token is an idempotent retry")
        threading.Timer(0.3, holder.release).start()
        start = time.monotonic()
        got = self.locks.acquire(self.key(), wait=math.inf)
        self.assertGreaterEqual(time.monotonic() - start, 0.25)
        self.assertTrue(got.release())

    def test_context_manager(self):
        with self.locks.lock(self.key()) as held:
            self.assertTrue(held.held)
            with self.assertRaises(fencelock.NotAcquired):
                with self.locks.lock(self.key(), wait=0.1):
                    pass
        self.assertFalse(held.held)
        self.assertIsNone(self.locks.info(self.key()))
        with self.locks.lock(self.key()) as held:
            self.r.delete(self.key())
            held.lost.wait(TTL)
        self.assertTrue(held.lost.is_set())  # and leaving did not raise
        with self.assertRaises(KeyError):
            with self.locks.lock(self.key()):
                raise KeyError("the body's own error")
        self.assertIsNone(self.locks.info(self.key()))

    def test_bad_input_sends_nothing(self):
        locks = fencelock.Locks(NoClient())
        for kwargs in ({"ttl": -1}, {"ttl": 0.0001}, {"shared": True, "limit": 3},
                       {"wait": -1}, {"token": ""}, {"limit": 0}, {"renew_every": 100},
                       {"ttl": 1, "renew_every": 0.995}, {"ttl": 0.002}):  # renewals too late
            with self.assertRaises(fencelock.LockError, msg=kwargs):
                locks.acquire("k", **kwargs)
        with self.assertRaises(fencelock.LockError):
            locks.acquire(None)
        with self.assertRaises(fencelock.LockError) as cm:
            fencelock.Locks(redis.asyncio.Redis())  # the wrong kind of client
        self.assertIn("fencelock.asyncio.Locks", str(cm.exception))
        self.assertTrue(issubclass(fencelock.LockError, redis.exceptions.LockError))

    def test_server_errors_are_raised(self):
        self.r.set(self.key(), "plain")
        with self.assertRaises(fencelock.ServerError) as cm:
            self.locks.acquire(self.key())
        self.assertIn("WRONGTYPE", str(cm.exception))
        self.assertIsInstance(cm.exception, redis.ResponseError)

    def test_resp2(self):
        locks = fencelock.Locks(self.server.client(protocol=2), ttl=TTL)
        held = locks.acquire(self.key(), meta="x")
        self.assertEqual(locks.info(self.key())["fence"], held.fence)
        self.assertEqual(locks.holders(self.key())[0]["mode"], "exclusive")
        self.assertTrue(held.release())

    def test_wrong_password_is_raised_at_once(self):
        locks = fencelock.Locks(self.server.client(username="nobody", password="wrong"), ttl=TTL)
        start = time.monotonic()
        with self.assertRaises(redis.AuthenticationError):
            locks.acquire(self.key(), wait=3)
        self.assertLess(time.monotonic() - start, 1.0, "not retried until the wait's deadline")

    def test_unreachable_server_raises(self):
        locks = fencelock.Locks(redis.Redis(port=1), retry_budget=0.2)
        with self.assertRaises(redis.ConnectionError):
            locks.acquire(self.key(), wait=0.3)
        with self.assertRaises(redis.ConnectionError):
            locks.acquire(self.key())


class ModuleNotLoadedTest(unittest.TestCase):
    def test_module_not_loaded(self):
        server = Server(module=False)
        try:
            with self.assertRaises(fencelock.ModuleNotLoaded) as cm:
                fencelock.Locks(server.client()).acquire("k", wait=1)
            self.assertIn("loadmodule", str(cm.exception))
            self.assertIn("libredis_lock.so", str(cm.exception))
            with self.assertRaises(fencelock.ModuleNotLoaded):
                fencelock.Locks(server.client()).acquire("k")
        finally:
            server.stop()


if __name__ == "__main__":
    unittest.main()
