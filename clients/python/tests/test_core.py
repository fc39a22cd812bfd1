"""The acquire protocol's order of steps (fencelock._core, no I/O): after closing a waiting
connection, nothing that could miss a grant to it is sent before the server has let it go."""
import unittest

from redis import exceptions as rx

from fencelock import _core as core


class Driver:
    """Runs a step generator, answering each step from `answers` (a function of the step),
    and records the steps in order."""

    def __init__(self, answers):
        self.answers, self.steps = answers, []

    def run(self, gen):
        value, error = None, None
        while True:
            try:
                op = gen.throw(error) if error is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            self.steps.append(op)
            value, error = None, None
            try:
                value = self.answers(op)
            except BaseException as e:  # noqa: B036 (thrown into the generator, as the drivers do)
                error = e

    def calls(self):
        return [(op[0], op[2] if op[0] == core.CALL else None) for op in self.steps
                if op[0] in (core.CALL, core.CLOSE, core.OPEN)]


def server(acquire, client_id, client_list):
    """Answers as a server would: a connection for OPEN, and each CALL by its command (each
    argument a function of the args; an exception it returns is raised)."""
    def answers(op):
        if op[0] == core.OPEN:
            return object()
        if op[0] != core.CALL:
            return None
        args = op[2]
        if args[0] == "CLIENT":
            answer = (client_id if args[1] == "ID" else client_list)(args)
        elif args[0] == "LOCK.ACQUIRE":
            answer = acquire(args)
        else:
            answer = 1
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return answers


def request(wait=5.0):
    return core.Request("k", 1.0, wait, "t" * 32, False, None, False, None, True, None, None,
                        core.DEFAULT_DRIFT)


class GoneBeforeRelease(unittest.TestCase):
    def test_a_give_up_releases_only_after_the_server_let_go_of_the_waiting_connection(self):
        listed = iter([b"id=7 ...", b"id=7 ...", b""])
        # the caller gives up mid-wait
        driver = Driver(server(lambda a: KeyboardInterrupt(), lambda a: 7, lambda a: next(listed)))
        with self.assertRaises(KeyboardInterrupt):
            driver.run(core.acquire_steps(request(), 1.0))
        names = [(kind, args[0] if args else None) for kind, args in driver.calls()]
        self.assertEqual(names, [
            (core.OPEN, None), (core.CALL, "CLIENT"), (core.CALL, "LOCK.ACQUIRE"),
            (core.CLOSE, None), (core.OPEN, None),
            (core.CALL, "CLIENT"), (core.CALL, "CLIENT"), (core.CALL, "CLIENT"),
            (core.CALL, "LOCK.RELEASE"), (core.CLOSE, None)])
        lists = [args for kind, args in driver.calls() if args and args[:2] == ["CLIENT", "LIST"]]
        self.assertEqual(lists, [["CLIENT", "LIST", "ID", 7]] * 3)

    def test_a_retry_after_a_broken_wait_waits_for_the_old_connection_to_go(self):
        ids = iter([7, 8])
        acquires = iter([rx.ConnectionError("reset"), [b"t" * 32, 42]])
        driver = Driver(server(lambda a: next(acquires), lambda a: next(ids), lambda a: b""))
        hold, pinned = driver.run(core.acquire_steps(request(), 1.0))
        self.assertEqual((hold.fence, pinned), (42, None))
        args = [a for kind, a in driver.calls() if kind == core.CALL]
        self.assertEqual(args[:3], [["CLIENT", "ID"], args[1], ["CLIENT", "ID"]])
        self.assertEqual(args[3], ["CLIENT", "LIST", "ID", 7])  # before the second ACQUIRE
        self.assertEqual(args[4][0], "LOCK.ACQUIRE")
        self.assertIn("TOKEN", args[4])

    def test_after_a_connection_error_the_slot_map_is_refreshed_and_asked_again(self):
        # a MOVED answer's node, then a connection error there (a failover): the next
        # connection goes to the slot map's owner again, the map refreshed first (stale)
        acquires = iter([rx.MovedError("12 127.0.0.1:7001"), rx.ConnectionError("refused"),
                         [b"t" * 32, 42]])
        driver = Driver(server(lambda a: next(acquires), lambda a: 7, lambda a: b""))
        hold, _ = driver.run(core.acquire_steps(request(), 1.0))
        opens = [(op[2], op[4]) for op in driver.steps if op[0] == core.OPEN]
        self.assertEqual(opens, [(None, False), (("127.0.0.1", 7001), False), (None, True)])
        self.assertEqual((hold.fence, hold.address), (42, None))

    def test_without_the_client_command_a_pause_stands_in(self):
        def refused(args):
            return rx.ResponseError("NOPERM this user has no permissions")

        driver = Driver(server(lambda a: KeyboardInterrupt(), refused, refused))
        with self.assertRaises(KeyboardInterrupt):
            driver.run(core.acquire_steps(request(), 1.0))
        self.assertEqual(driver.steps[-1][0], core.CLOSE)
        self.assertEqual(driver.steps[-2][2][0], "LOCK.RELEASE")
        self.assertIn((core.SLEEP, core.GONE_PAUSE), driver.steps)  # no id: a pause instead


if __name__ == "__main__":
    unittest.main()
