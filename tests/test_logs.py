"""
Tests for L{tsecho.logs} and L{tsecho._twistd_logging}: cheap text and JSON
log observers, batched writes, and C{twistd}'s own log options.
"""

from __future__ import annotations

import io
import json
import re
import signal
import threading
from pathlib import Path
from typing import Any

from twisted.application.service import Application
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.python.threadable import registerAsIOThread
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from serverprocess import exchange, running_server
from tsecho._startup import release_stderr
from tsecho._tally import Ending
from tsecho._twistd_logging import default_observer
from tsecho.logs import CONNECTION_CLOSED, BatchedWriter, JSONObserver, TextObserver, emit_info, format_message
from tsecho.tap import makeService
from tsecho.testing import EXAMPLE_TIME
from tsecho.workers import WorkerPool


class FakeReactor(Clock):
    """
    A clock that says whether it is running and records shutdown triggers.
    """

    def __init__(self, running: bool = True) -> None:
        super().__init__()
        self.running = running
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))


def summary_event(**fields: Any) -> dict[str, Any]:
    """
    A connection summary event, as the protocol logs it.
    """
    event: dict[str, Any] = {
        "log_format": CONNECTION_CLOSED,
        "log_level": LogLevel.info,
        "log_namespace": "tsecho.protocol",
        "log_time": EXAMPLE_TIME + 0.25,
        "peer": "127.0.0.1:5555",
        "lines": 3,
        "answered": "3 lines",
        "bytes_in": 6,
        "bytes_out": 93,
        "duration": 0.0123,
        "reason": "client closed",
    }
    event.update(fields)
    return event


class FormatTests(SynchronousTestCase):
    """
    L{format_message} and L{TextObserver} give exactly what Twisted's own
    formatting gives.
    """

    def test_same_as_twisted(self) -> None:
        """
        Every kind of event is formatted as Twisted's classic text observer
        would: plain fields, format specs, attributes, Twisted's C{()} calls,
        missing fields, a system, newlines; the connection summary's own
        fast path included, whatever its fields hold.
        """

        class Thing:
            name = "thing"

            def __str__(self) -> str:
                return "a thing"

        events = [
            summary_event(),
            summary_event(log_format="{thing.name} and {thing}", thing=Thing()),
            summary_event(log_format="called {f()}", f=lambda: 42),
            summary_event(log_format="missing {nothing}"),
            summary_event(log_system="my system"),
            summary_event(log_format="two\nlines {lines}"),
            summary_event(log_level=LogLevel.warn),
            summary_event(reason=Ending.IDLE_TIMEOUT, duration=12),  # a str enum, an int
            summary_event(duration="unknown"),  # not a number: Twisted's own message
            {k: v for k, v in summary_event().items() if k != "peer"},  # a field missing
        ]
        for event in events:
            out = io.StringIO()
            TextObserver(BatchedWriter(out, FakeReactor(running=False)))(event)
            self.assertEqual(out.getvalue(), formatEventAsClassicLogText(event), event["log_format"])

    def test_failure_has_traceback(self) -> None:
        """
        An event with a failure is written at once, traceback included.
        """
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            failure = Failure()
        event = summary_event(log_format="oops", log_failure=failure, log_level=LogLevel.critical)
        out = io.StringIO()
        TextObserver(BatchedWriter(out, FakeReactor()))(event)
        self.assertIn("ZeroDivisionError", out.getvalue())
        self.assertEqual(out.getvalue(), formatEventAsClassicLogText(event))

    def test_format_message(self) -> None:
        """
        The summary's message names everything it carries.
        """
        self.assertEqual(
            format_message(summary_event()),
            "connection from 127.0.0.1:5555 closed after 3 lines (client closed): 6 bytes in, 93 bytes out, 0.012 s",
        )


class EmitInfoTests(SynchronousTestCase):
    """
    L{emit_info} makes the event that C{Logger.info} makes.
    """

    def test_same_event(self) -> None:
        """
        The same keys and values as C{Logger.info}'s event, the time aside,
        to the same observer: if Twisted's events change, this fails.
        """
        events: list[LogEvent] = []
        log = Logger(namespace="tsecho.test", source=self, observer=events.append)
        log.info(CONNECTION_CLOSED, peer="127.0.0.1:5555", lines=1)
        emit_info(log, CONNECTION_CLOSED, {"peer": "127.0.0.1:5555", "lines": 1})
        theirs, ours = events
        self.assertLess(abs(ours.pop("log_time") - theirs.pop("log_time")), 60)
        self.assertEqual(ours, theirs)


class BatchedWriterTests(SynchronousTestCase):
    """
    L{BatchedWriter} writes within a second, at once when urgent, when the
    reactor is not running or from another thread, and everything at shutdown.
    """

    def setUp(self) -> None:
        registerAsIOThread()  # this thread is the reactor's, as a running reactor makes it

    def test_other_thread(self) -> None:
        """
        A line logged from another thread is written at once (timers are
        for the reactor's thread).
        """
        out, reactor = io.StringIO(), FakeReactor()
        writer = BatchedWriter(out, reactor)
        writer.write("a\n")
        thread = threading.Thread(target=writer.write, args=("from a thread\n",))
        thread.start()
        thread.join()
        self.assertEqual(out.getvalue(), "a\nfrom a thread\n")

    def test_signal_handler_logs_during_flush(self) -> None:
        """
        A signal handler may log while this thread is inside a flush (Twisted
        logs "Received SIGTERM" from its handler): the nested write neither
        deadlocks nor is lost.
        """

        class Interrupted(io.StringIO):
            nested = False

            def write(self, text: str) -> int:
                if not self.nested:  # the signal arrives now
                    self.nested = True
                    writer.write("Received SIGTERM\n", urgent=True)
                return super().write(text)

        out = Interrupted()
        writer = BatchedWriter(out, FakeReactor(running=False))
        thread = threading.Thread(target=writer.write, args=("a\n",), daemon=True)
        thread.start()
        thread.join(10)
        self.assertFalse(thread.is_alive(), "deadlocked")
        writer.flush()
        self.assertEqual(sorted(out.getvalue().splitlines()), ["Received SIGTERM", "a"])

    def test_batched_while_running(self) -> None:
        """
        While the reactor runs, lines wait (one write) until the delay passes.
        """
        out, reactor = io.StringIO(), FakeReactor()
        writer = BatchedWriter(out, reactor, delay=1.0)
        writer.write("a\n")
        writer.write("b\n")
        self.assertEqual(out.getvalue(), "")
        reactor.advance(1.0)
        self.assertEqual(out.getvalue(), "a\nb\n")
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_urgent_and_stopped(self) -> None:
        """
        An urgent line, or any line while the reactor is not running, is
        written at once, after what waited.
        """
        out, reactor = io.StringIO(), FakeReactor()
        writer = BatchedWriter(out, reactor)
        writer.write("a\n")
        writer.write("warn\n", urgent=True)
        self.assertEqual(out.getvalue(), "a\nwarn\n")
        self.assertEqual(reactor.getDelayedCalls(), [])
        reactor.running = False
        writer.write("last\n")
        self.assertEqual(out.getvalue(), "a\nwarn\nlast\n")

    def test_flush_at_shutdown(self) -> None:
        """
        The writer flushes after the reactor's shutdown.
        """
        out, reactor = io.StringIO(), FakeReactor()
        writer = BatchedWriter(out, reactor)
        writer.write("x\n")
        self.assertEqual(reactor.triggers, [("after", "shutdown", writer.flush)])
        reactor.triggers[0][2]()
        self.assertEqual(out.getvalue(), "x\n")
        writer.write("y\n")
        self.assertEqual(len(reactor.triggers), 1)

    def test_stopping(self) -> None:
        """
        A line logged while the reactor stops, with a flush already due,
        waits for the flush its shutdown brings; after that, lines are
        written at once.
        """
        out, reactor = io.StringIO(), FakeReactor()
        writer = BatchedWriter(out, reactor)
        writer.write("a\n")
        reactor.running = False
        writer.write("stopping\n")
        self.assertEqual(out.getvalue(), "")
        reactor.triggers[0][2]()
        self.assertEqual(out.getvalue(), "a\nstopping\n")
        self.assertEqual(reactor.getDelayedCalls(), [])
        writer.write("stopped\n")
        self.assertEqual(out.getvalue(), "a\nstopping\nstopped\n")

    def test_binary_file(self) -> None:
        """
        A binary file gets UTF-8.
        """
        out = io.BytesIO()
        BatchedWriter(out, FakeReactor(running=False)).write("caf\u00e9\n")
        self.assertEqual(out.getvalue(), "caf\u00e9\n".encode())


class JSONObserverTests(SynchronousTestCase):
    """
    L{JSONObserver} writes one JSON object per line.
    """

    def test_fields(self) -> None:
        """
        Time (ISO 8601, UTC), level, namespace, message and the event's fields.
        """
        out = io.StringIO()
        JSONObserver(BatchedWriter(out, FakeReactor(running=False)))(summary_event(other=object))
        [line] = out.getvalue().splitlines()
        record = json.loads(line)
        self.assertEqual(record["time"], "2026-11-26T14:09:48.250Z")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "tsecho.protocol")
        self.assertEqual(record["message"], format_message(summary_event()))
        fields = ("peer", "lines", "bytes_in", "bytes_out", "duration", "reason")
        self.assertEqual({k: record[k] for k in fields}, {k: summary_event()[k] for k in fields})
        self.assertEqual(record["other"], str(object))
        self.assertFalse([k for k in record if k.startswith("log_")])

    def test_traceback(self) -> None:
        """
        An event with a failure carries its traceback.
        """
        out = io.StringIO()
        event = summary_event(log_failure=Failure(ValueError("bad")), log_level=LogLevel.error)
        JSONObserver(BatchedWriter(out, FakeReactor()))(event)
        self.assertIn("ValueError: bad", json.loads(out.getvalue())["traceback"])


class TwistdOptionsTests(SynchronousTestCase):
    """
    L{default_observer} writes where C{twistd} would, and steps aside for
    C{--syslog} and C{--logger}.  (The canary for the C{twistd} internal.)
    """

    def setUp(self) -> None:
        handler = signal.getsignal(signal.SIGUSR1)  # twistd's log file sets one up, for rotation
        self.addCleanup(signal.signal, signal.SIGUSR1, handler)

    def options(self, *arguments: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions([*arguments, "tsecho"])
        return options

    def test_logfile(self) -> None:
        """
        C{--logfile PATH}: a L{TextObserver} on that file.  This is the canary:
        it fails if Twisted's C{UnixAppLogger._getLogObserver} stops giving a
        file observer with C{_outFile}.
        """
        path = Path(self.mktemp())
        observer = default_observer(self.options("--logfile", str(path)), FakeReactor(running=False))
        self.assertIsInstance(observer, TextObserver)
        assert isinstance(observer, TextObserver)
        observer(summary_event())
        observer.writer.close()
        self.assertEqual(path.read_text(), formatEventAsClassicLogText(summary_event()))

    def test_nodaemon_stdout(self) -> None:
        """
        C{-n} without C{--logfile}: a L{TextObserver} on standard output.
        """
        self.assertIsInstance(default_observer(self.options("-n"), FakeReactor()), TextObserver)

    def test_steps_aside(self) -> None:
        """
        C{--syslog} or C{--logger}, or not C{twistd} at all: C{twistd} decides.
        """
        self.assertIsNone(default_observer(self.options("--syslog")))
        self.assertIsNone(default_observer(self.options("--logger", "tsecho.logs.json_observer")))
        self.assertIsNone(default_observer(None))

    def test_workers_main_process(self) -> None:
        """
        With C{--workers 2}, C{makeService} returns a worker pool, not the
        service it wraps; the pool gives C{twistd}'s application the
        L{TextObserver} on C{--logfile}, so that the main process logs as a
        lone server does.
        """
        path = Path(self.mktemp())
        twistd = ServerOptions()
        twistd.parseOptions(["--logfile", str(path), "tsecho", "--workers", "2", "--port", "0"])
        self.addCleanup(release_stderr)  # makeService keeps it, for twistd's start-up errors
        pool = makeService(twistd.subOptions)
        self.assertIsInstance(pool, WorkerPool)
        application = Application("tsecho")
        pool.setServiceParent(application)
        observer = application.getComponent(ILogObserver)
        assert isinstance(observer, TextObserver)
        observer(summary_event())
        observer.writer.close()
        self.assertEqual(path.read_text(), formatEventAsClassicLogText(summary_event()))


def test_json_logs_from_twistd(tmp_path: Path) -> None:
    """
    C{twistd --logger tsecho.logs.json_observer}: every line of the real
    server's output is one JSON object; a connection's summary has its fields.
    """
    with running_server(tmp_path, twistd_options=["--logger=tsecho.logs.json_observer"]) as server:
        exchange(server.port, b"one\ntwo\n")
        assert server.stop() in (0, -signal.SIGTERM)
        records = [json.loads(line) for line in server.log().splitlines()]
    [summary] = [r for r in records if r.get("namespace") == "tsecho.protocol"]
    assert summary["lines"] == 2
    assert summary["bytes_in"] == 8
    assert summary["bytes_out"] > 8
    assert summary["reason"] == "client closed"
    assert summary["level"] == "info"
    assert summary["peer"].startswith("127.0.0.1:")
    assert summary["message"].startswith(f"connection from {summary['peer']} closed after 2 lines")
    assert isinstance(summary["duration"], float)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", summary["time"])
    assert records[-1]["message"] == "Server Shut Down."  # logged after the reactor stopped, just before exit


def test_logfile_flushed_at_sigterm(tmp_path: Path) -> None:
    """
    C{--logfile} still works, and the default (batched) text log loses
    nothing on SIGTERM: the summary of a connection that ended just before
    the signal, and twistd's last line, are in the file.
    """
    twistd_options = ["--logfile", "server.log"]
    with running_server(tmp_path, twistd_options=twistd_options, logfile="server.log") as server:
        exchange(server.port, b"a\n")
        assert server.stop() in (0, -signal.SIGTERM)
        log = server.log()
    assert re.search(r"connection from 127\.0\.0\.1:\d+ closed after 1 line \(client closed\)", log), log
    assert log.endswith("Server Shut Down.\n"), log
