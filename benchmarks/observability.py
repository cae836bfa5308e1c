"""
What logging and metrics cost per connection, without sockets.

C{python benchmarks/observability.py} prints:

- events per second through C{twistd}'s default text observer (Twisted's
  C{textFileLogObserver} on a C{LogFile}, as C{twistd --logfile} makes it)
  and through tsecho's L{TextObserver} and L{JSONObserver} on the same kind
  of file, for the one event each connection logs;
- one connection (connect, a line, close) with metrics off (L{NO_METRICS})
  and on (L{ServerMetrics}, the connection made through its listener's
  factory as the server does), quiet;
- one connection logged (its one event through Twisted's global log
  publisher to a L{TextObserver}, as C{twistd --logfile} has it) against
  C{--quiet}.

Logged events are written to a temporary directory, deleted afterwards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from micro import best_of
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, LogPublisher, globalLogBeginner, globalLogPublisher, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.python.threadable import registerAsIOThread

from tsecho._tally import Ending
from tsecho.logs import CONNECTION_CLOSED, BatchedWriter, JSONObserver, TextObserver, emit_info
from tsecho.metrics import ServerMetrics
from tsecho.protocol import ServerConfig, TimestampEcho, TimestampEchoFactory
from tsecho.timestamps import Timestamper


class RunningClock(Clock):
    """
    A reactor that runs (so the writer batches); its timer fires every 1,000 events.
    """

    running = True

    def addSystemEventTrigger(self, *args: Any) -> None:
        pass


def per_event(observer: Any, clock: Clock | None = None, events: int = 20000) -> float:
    """
    Seconds per connection event through C{observer}, made as the protocol
    makes it (L{emit_info}).
    """
    log = Logger(namespace="tsecho.protocol", observer=LogPublisher(observer))

    def work() -> int:
        for i in range(events):
            emit_info(
                log,
                CONNECTION_CLOSED,
                {
                    "peer": "127.0.0.1:54321",
                    "lines": 1,
                    "answered": "1 line",
                    "bytes_in": 7,
                    "bytes_out": 34,
                    "duration": 0.000123,
                    "reason": Ending.CLIENT_CLOSED.value,
                },
            )
            if clock is not None and i % 1000 == 999:
                clock.advance(1)
        return events

    return best_of(5, work)


def per_connection(metrics_on: bool, quiet: bool = True, log_path: Path | None = None) -> float:
    """
    One connection: connect, a line, close.  With C{log_path}, its event goes
    through Twisted's global publisher to a L{TextObserver} on a C{LogFile}
    there (nothing else observing), written out once a (simulated) second.
    """
    clock = MemoryReactorClock()
    clock.running = True
    factory = TimestampEchoFactory(ServerConfig(quiet=quiet), Timestamper(), clock)  # type: ignore[arg-type]
    listener: Any = factory
    if metrics_on:
        metrics = factory.metrics = ServerMetrics(factory.connections)
        listener = metrics.listener_factory(factory, "tcp:21567")

    def work() -> int:
        for i in range(5000):
            protocol = listener.buildProtocol(IPv4Address("TCP", "127.0.0.1", i))
            assert isinstance(protocol, TimestampEcho)
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(b"hello\r\n")
            protocol.connectionLost()
            if i % 1000 == 999:
                clock.advance(1)
        return 5000

    if log_path is None:
        return best_of(5, work)
    observer = TextObserver(BatchedWriter(LogFile.fromFullPath(str(log_path)), clock))
    globalLogPublisher.addObserver(observer)
    try:
        return best_of(5, work)
    finally:
        globalLogPublisher.removeObserver(observer)


def main() -> None:
    registerAsIOThread()  # as the reactor does: writers batch only in its thread
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)  # as twistd, less its observer
    with tempfile.TemporaryDirectory() as directory:
        twistd = per_event(textFileLogObserver(LogFile.fromFullPath(str(Path(directory) / "twistd.log"))))
        clock = RunningClock()
        text = per_event(
            TextObserver(BatchedWriter(LogFile.fromFullPath(str(Path(directory) / "t.log")), clock)), clock
        )
        clock = RunningClock()
        jsonl = per_event(
            JSONObserver(BatchedWriter(LogFile.fromFullPath(str(Path(directory) / "j.log")), clock)), clock
        )
        quiet, logged = per_connection(False), per_connection(False, quiet=False, log_path=Path(directory) / "c.log")
    print(f"twistd's text observer:   {1 / twistd:9,.0f} events/s ({twistd * 1e6:5.2f} us each)")
    print(f"tsecho TextObserver:      {1 / text:9,.0f} events/s ({text * 1e6:5.2f} us each), {twistd / text:.1f}x")
    print(f"tsecho JSONObserver:      {1 / jsonl:9,.0f} events/s ({jsonl * 1e6:5.2f} us each), {twistd / jsonl:.1f}x")
    off, on = per_connection(False), per_connection(True)
    print(f"per connection, metrics off: {off * 1e6:6.2f} us; on: {on * 1e6:6.2f} us ({off / on:.3f}x)")
    print(f"per connection, --quiet: {quiet * 1e6:6.2f} us; logged: {logged * 1e6:6.2f} us ({quiet / logged:.3f}x)")


if __name__ == "__main__":
    main()
