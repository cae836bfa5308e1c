"""
L{tsecho.worker} in memory: a worker refuses options it cannot serve with
one line, and notices when the main process is gone.  (The real worker
processes are run by C{test_workers.py}.)
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys

from twisted.internet.main import CONNECTION_DONE
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tsecho.tap import makeService
from tsecho.worker import ParentWatch, main, worker_options


class WorkerOptionsTests(SynchronousTestCase):
    """
    A worker's options adopt the sockets it inherited, one per stream
    listener.
    """

    def test_listener_without_socket(self) -> None:
        """
        A stream listener for which no socket was inherited is a usage error
        naming it (the main process and the worker disagree).
        """
        options = worker_options(MemoryReactorClock(), [], None)
        options.parseOptions(["--listen", "tcp:1"])
        error = self.assertRaises(usage.UsageError, makeService, options)
        self.assertEqual(str(error), "--listen tcp:1: no inherited socket for it")


class MainTests(SynchronousTestCase):
    """
    L{main} up to where it would serve.
    """

    def setUp(self) -> None:
        for number in (signal.SIGINT, signal.SIGHUP):
            self.addCleanup(signal.signal, number, signal.getsignal(number))
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def test_bad_options(self) -> None:
        """
        Options it cannot parse: one line on standard error, status 1.
        """
        self.assertEqual(main([json.dumps({"stream": []}), "--bogus"]), 1)
        self.assertEqual(self.stderr.getvalue(), "tsecho worker: option --bogus not recognized\n")

    def test_check_only(self) -> None:
        """
        In check mode (C{"check": true}, no reactor named) it parses its
        options and exits 0, serving nothing; it ignores SIGINT and SIGHUP
        (the main process decides).
        """
        self.assertEqual(main([json.dumps({"stream": [], "check": True}), "--listen", "tcp:1"]), 0)
        self.assertEqual(self.stderr.getvalue(), "")
        self.assertEqual(
            (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGHUP)), (signal.SIG_IGN, signal.SIG_IGN)
        )


class ParentWatchTests(SynchronousTestCase):
    """
    L{ParentWatch} reads the pipe from the main process.
    """

    def test_end_of_pipe(self) -> None:
        """
        Bytes on the pipe (never sent, but harmless) are read and ignored;
        its end is the connection's end.
        """
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        watch = ParentWatch(read_end, lambda: True)
        os.write(write_end, b"x")
        self.assertIsNone(watch.doRead())
        os.close(write_end)
        self.assertIs(watch.doRead(), CONNECTION_DONE)
