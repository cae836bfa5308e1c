"""
Tests for L{tsecho._signals}: only the first stop signal reaches the
reactor's handler.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tsecho._signals import STOP_SIGNALS, stop_once
from tsecho._startup import release_stderr
from tsecho.tap import Options, makeService


class StopOnceTests(SynchronousTestCase):
    """
    L{stop_once} wraps the stop signals' handlers once the reactor runs.
    """

    def setUp(self) -> None:
        for number in STOP_SIGNALS:
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.received: list[int] = []

    def handler(self, number: int, frame: FrameType | None) -> None:
        self.received.append(number)

    def test_first_only(self) -> None:
        """
        The first SIGTERM or SIGINT reaches the handler the reactor
        installed; each one after it is logged and goes no further.
        """
        reactor = MemoryReactor()
        stop_once(reactor)
        for number in STOP_SIGNALS:
            signal.signal(number, self.handler)  # as the reactor does when it starts
        reactor.run()
        os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual(self.received, [signal.SIGTERM])
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        self.assertEqual(self.received, [signal.SIGTERM])
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["Received SIGINT again: already shutting down", "Received SIGTERM again: already shutting down"],
        )

    def test_not_before_running(self) -> None:
        """
        Nothing changes before the reactor runs (it installs its handlers as
        it starts), and a signal with no Python handler is left as it is.
        """
        reactor = MemoryReactor()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, self.handler)
        stop_once(reactor)
        self.assertEqual(signal.getsignal(signal.SIGINT), self.handler)
        reactor.run()
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_IGN)
        self.assertNotEqual(signal.getsignal(signal.SIGINT), self.handler)

    def test_under_a_command(self) -> None:
        """
        L{makeService} asks for it when tsecho runs as a command (C{twistd},
        C{twist}), not when a program (or a worker) builds the service.
        """
        for parent, hooks in ((None, 0), (usage.Options(), 1)):
            reactor = MemoryReactor()
            options = Options(reactor=reactor)
            options.parent = parent
            options.parseOptions(["--quiet"])
            self.addCleanup(release_stderr)
            makeService(options)
            self.assertEqual(len(reactor.whenRunningHooks), hooks)
