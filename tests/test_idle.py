"""
Tests for L{tsecho._idle}: idle timeouts of many connections on one timer.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tsecho._idle import IdleTimeouts

START = 1_795_000_000.0


class Connection:
    """
    A connection that records when it timed out, and may act when it does.
    """

    def __init__(self, name: str, clock: Clock, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.clock = clock
        self.log = log
        self.on_timeout: Callable[[], None] | None = None

    def idle_expired(self) -> None:
        self.log.append((self.name, self.clock.seconds()))
        if self.on_timeout is not None:
            self.on_timeout()


class IdleTimeoutsTests(SynchronousTestCase):
    """
    L{IdleTimeouts} times each connection out exactly C{period} seconds after
    its last activity, with one timer for all of them.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.log: list[tuple[str, float]] = []
        self.idle: IdleTimeouts[Connection] = IdleTimeouts(self.clock, 10)

    def connection(self, name: str) -> Connection:
        return Connection(name, self.clock, self.log)

    def touch(self, *connections: Connection) -> None:
        for connection in connections:
            self.idle.touch(connection, self.clock.seconds())

    def test_exact_deadlines_one_timer(self) -> None:
        """
        Connections touched at different times time out at their own deadline,
        in order, and only one timer is ever pending.
        """
        a, b, c = self.connection("a"), self.connection("b"), self.connection("c")
        self.touch(a)
        self.clock.advance(3)
        self.touch(b)
        self.clock.advance(2.5)
        self.touch(c)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(4.5)  # START + 10
        self.assertEqual(self.log, [("a", START + 10)])
        self.clock.advance(2.999)
        self.assertEqual(len(self.log), 1)
        self.clock.advance(0.001)
        self.clock.advance(2.5)
        self.assertEqual(self.log, [("a", START + 10), ("b", START + 13), ("c", START + 15.5)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.idle._deadlines, {})

    def test_activity_postpones(self) -> None:
        """
        A touch moves a connection's deadline to C{period} after it, and
        behind connections touched earlier.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a, b)
        self.clock.advance(9)
        self.touch(a)
        self.clock.advance(1)
        self.assertEqual(self.log, [("b", START + 10)])
        self.clock.advance(8.999)
        self.assertEqual(len(self.log), 1)
        self.clock.advance(0.001)
        self.assertEqual(self.log, [("b", START + 10), ("a", START + 19)])

    def test_same_deadline(self) -> None:
        """
        Connections with the same deadline all time out together, in the
        order they were touched.
        """
        connections = [self.connection(str(n)) for n in range(5)]
        self.touch(*connections)
        self.clock.advance(10)
        self.assertEqual(self.log, [(str(n), START + 10) for n in range(5)])

    def test_discard(self) -> None:
        """
        A discarded connection never times out; when none is left, the timer
        is cancelled.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a, b)
        self.idle.discard(a)
        self.idle.discard(a)  # twice is harmless
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.idle.discard(b)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.log, [])

    def test_no_period(self) -> None:
        """
        With no period, nothing is tracked and no timer is scheduled.
        """
        idle: IdleTimeouts[Connection] = IdleTimeouts(self.clock, None)
        idle.touch(self.connection("a"), self.clock.seconds())
        self.assertEqual(idle._deadlines, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_restart(self) -> None:
        """
        L{IdleTimeouts.restart} forgets every connection and applies the new
        period to those touched afterwards, even if it ends sooner.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a, b)
        self.idle.restart(0.5)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.touch(b)
        self.clock.advance(0.5)
        self.assertEqual(self.log, [("b", START + 0.5)])
        self.clock.advance(100)
        self.assertEqual(self.log, [("b", START + 0.5)])

    def test_timeout_touches_itself(self) -> None:
        """
        A connection that, timed out, counts itself active again (a paused
        connection while draining) times out again one period later, and
        the connections behind it keep their own deadlines.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a)
        self.clock.advance(1)
        self.touch(b)
        a.on_timeout = lambda: self.touch(a)
        self.clock.advance(9)
        self.assertEqual(self.log, [("a", START + 10)])
        self.clock.advance(1)
        self.assertEqual(self.log, [("a", START + 10), ("b", START + 11)])
        self.clock.advance(9)
        self.assertEqual(self.log[-1], ("a", START + 20))

    def test_timeout_closes_another(self) -> None:
        """
        A connection discarded while others time out is not timed out,
        even though its deadline had passed.
        """
        a, b, c = self.connection("a"), self.connection("b"), self.connection("c")
        self.touch(a, b, c)
        a.on_timeout = lambda: self.idle.discard(b)
        self.clock.advance(10)
        self.assertEqual(self.log, [("a", START + 10), ("c", START + 10)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_error_does_not_stop_others(self) -> None:
        """
        If timing one connection out raises, the error propagates (the reactor
        logs it) and the others still time out.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a, b)

        def fail() -> None:
            raise RuntimeError("boom")

        a.on_timeout = fail
        self.assertRaises(RuntimeError, self.clock.advance, 10)
        self.clock.advance(0)
        self.assertEqual(self.log, [("a", START + 10), ("b", START + 10)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_touches_another(self) -> None:
        """
        A connection touched while others time out keeps its new deadline,
        even though its old one had passed.
        """
        a, b = self.connection("a"), self.connection("b")
        self.touch(a, b)
        a.on_timeout = lambda: self.touch(b)
        self.clock.advance(10)
        self.assertEqual(self.log, [("a", START + 10)])
        self.clock.advance(10)
        self.assertEqual(self.log, [("a", START + 10), ("b", START + 20)])
