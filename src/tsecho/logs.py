"""
Log observers that cost little: classic text, and JSON lines for collectors.

C{twistd}'s own text observer spends about 20 µs on each event: Twisted's
C{formatEvent} runs C{string.Formatter} in Python, the time stamp is formatted
from scratch, and every event is a write and a flush.  L{TextObserver} writes
the same lines (C{TIME [NAMESPACE#LEVEL] MESSAGE}) at a fraction of that: the
message through C{str.format_map}, Twisted's own formatting only for what that
cannot do, the time stamp made once per second, and the lines written in
batches by a L{BatchedWriter}.

L{JSONObserver} writes one JSON object per line: C{time} (ISO 8601),
C{level}, C{namespace}, C{message}, and the event's own fields (C{peer},
C{lines}, C{bytes_in}, ...).  Select it with C{twistd --logger
tsecho.logs.json_observer}; it writes to standard output (for journald, a
container runtime or a log shipper).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from time import time
from typing import IO, Any, cast

from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.compat import ioType
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

CONNECTION_CLOSED = (
    "connection from {peer} closed after {answered} ({reason}): "
    "{bytes_in} bytes in, {bytes_out} bytes out, {duration:.3f} s"
)
"""
The one event each connection logs, when it ends.  Its fields: C{peer}, the
client (behind the PROXY protocol, the real one); C{lines}, lines answered;
C{bytes_in} and C{bytes_out}; C{duration} in seconds; C{reason}, how it
ended (one of L{tsecho._tally.Ending}).
"""


def _connection_closed(event: LogEvent) -> str:
    """
    L{CONNECTION_CLOSED} formatted with an f-string: what C{format_map} makes
    of it, in half the time, for the one event every connection logs.
    """
    return (
        f"connection from {event['peer']} closed after {event['answered']} ({event['reason']}): "
        f"{event['bytes_in']} bytes in, {event['bytes_out']} bytes out, {event['duration']:.3f} s"
    )


_PRECOMPILED: dict[object, Callable[[LogEvent], str]] = {CONNECTION_CLOSED: _connection_closed}


def emit_info(logger: Logger, log_format: str, fields: dict[str, Any]) -> None:
    """
    Do what C{logger.info(log_format, **fields)} does, in half the time, for
    the one event every connection logs: C{Logger.emit} checks the level by
    sorting C{LogLevel}'s constants, per event (measured in the running
    server: 14 µs for the event through C{Logger.info}, 8 µs this way).
    The event is the same (C{tests/test_logs.py} checks it against
    C{Logger.info}'s), and goes to the same observer.

    @param fields: the event's own fields; the event is made from this dict.
    """
    fields["log_logger"] = logger
    fields["log_level"] = LogLevel.info
    fields["log_namespace"] = logger.namespace
    fields["log_source"] = logger.source
    fields["log_format"] = log_format
    fields["log_time"] = time()
    logger.observer(fields)


FLUSH_DELAY = 1.0
"""
Seconds a logged line may wait in a L{BatchedWriter} before it is written.
"""


def format_message(event: LogEvent) -> str:
    """
    The event's message, as Twisted's C{formatEvent} would make it.

    C{str.format_map} does it for the usual C{{name}}, C{{name.attr}},
    C{{name[key]}} and C{{name:spec}} fields, several times faster, and an
    f-string faster still for L{CONNECTION_CLOSED}; anything else (Twisted's
    C{{name()}} calls, a missing field, a failing C{__str__}) is left to Twisted.
    """
    log_format = event.get("log_format")
    if isinstance(log_format, str):
        try:
            precompiled = _PRECOMPILED.get(log_format)
            if precompiled is not None:
                return precompiled(event)
            if "()" not in log_format:
                return log_format.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


class BatchedWriter:
    """
    Write text to a file in batches while the reactor runs.

    While the reactor runs, text waits at most L{FLUSH_DELAY} seconds, and
    everything is written when it shuts down; a warning or worse is written at
    once (with what waited before it).  When the reactor is not running (start
    up, and after it stopped: C{twistd}'s last lines, before a signal is
    re-raised) every line is written at once, and so is a line logged from
    another thread.  So nothing is lost at shutdown, on SIGTERM included, and
    at most a second's lines if the process is killed.
    """

    def __init__(self, out: IO[Any], reactor: Any = None, delay: float = FLUSH_DELAY) -> None:
        """
        @param out: a text or binary file; binary gets UTF-8.
        @param reactor: an L{IReactorTime} and L{IReactorCore}; the global
            reactor (imported when first needed) by default.
        """
        self._out = out
        self._text = ioType(out) is str
        self._reactor = reactor
        self._delay = delay
        self._pending: list[str] = []
        self._timer: Any = None
        self._timer_thread: int | None = None  # the reactor's, which set the timer
        self._watching = False  # for the reactor's shutdown
        # The reactor's thread and others may log; and a signal handler (Twisted
        # logs "Received SIGTERM") may log while this thread is inside write or
        # flush: reentrant, or that would deadlock the process.
        self._lock = threading.RLock()

    def _clock(self) -> Any:
        if self._timer is None and not self._watching:
            if self._reactor is None:
                from twisted.internet import reactor

                self._reactor = reactor
            cast(IReactorCore, self._reactor).addSystemEventTrigger("after", "shutdown", self.flush)
            self._watching = True
        return self._reactor

    def write(self, text: str, urgent: bool = False) -> None:
        """
        Write C{text} within L{FLUSH_DELAY} seconds, or at once if C{urgent},
        if the reactor is not running (while it stops, with the flush its
        shutdown brings), or from another thread than the reactor's (timers
        are for the reactor's thread).
        """
        with self._lock:
            self._pending.append(text)
        if urgent or self._timer is None or threading.get_ident() != self._timer_thread:
            self._flush_or_time(urgent)  # else a flush is due within the delay: done

    def _flush_or_time(self, urgent: bool) -> None:
        reactor = self._clock()
        if urgent or not reactor.running or not isInIOThread():
            self.flush()
        elif self._timer is None:
            self._timer = cast(IReactorTime, reactor).callLater(self._delay, self.flush)
            self._timer_thread = threading.get_ident()

    def close(self) -> None:
        """
        Write what is waiting, and close the file.
        """
        self.flush()
        self._out.close()

    def flush(self) -> None:
        """
        Write what is waiting, now.
        """
        if self._timer is not None and isInIOThread():
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        with self._lock:
            if self._pending:
                pending, self._pending = self._pending, []  # a reentrant write starts a new list
                text = "".join(pending)
                self._out.write(text if self._text else text.encode("utf-8"))
                self._out.flush()


class _SecondCache:
    """
    A time stamp per whole second, formatted once (as C{twisted.web}'s access
    log does).
    """

    def __init__(self, render: Callable[[int], str]) -> None:
        self._render = render
        self._second = -1
        self._text = ""

    def __call__(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._text = self._render(second)
        return self._text


_URGENT = frozenset({LogLevel.warn, LogLevel.error, LogLevel.critical})
"""
Levels written at once.
"""


@implementer(ILogObserver)
class TextObserver:
    """
    Twisted's classic text lines, C{TIME [NAMESPACE#LEVEL] MESSAGE}, cheaply;
    events with a traceback are formatted by Twisted itself.
    """

    def __init__(self, writer: BatchedWriter) -> None:
        self.writer = writer
        self._stamp = _SecondCache(formatTime)

    def __call__(self, event: LogEvent) -> None:
        if "log_failure" in event:
            text = formatEventAsClassicLogText(event)
            if text:
                self.writer.write(text, urgent=True)
            return
        level = event.get("log_level")
        system = event.get("log_system")
        if system is None:
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        when = event.get("log_time")
        stamp = self._stamp(when) if when is not None else "-"
        message = format_message(event).replace("\n", "\n\t")
        self.writer.write(f"{stamp} [{system}] {message}\n", level in _URGENT)


_STANDARD = frozenset({"time", "level", "namespace", "message", "traceback"})
_to_json = json.JSONEncoder(ensure_ascii=False, default=str).encode  # anything not JSON becomes its str


@implementer(ILogObserver)
class JSONObserver:
    """
    One JSON object per line: C{time} (ISO 8601, UTC, milliseconds),
    C{level}, C{namespace}, C{message} (the formatted text), the event's own
    fields (anything not JSON already becomes its C{str}), and a C{traceback}
    when the event carries one.
    """

    def __init__(self, writer: BatchedWriter) -> None:
        self.writer = writer
        self._stamp = _SecondCache(
            lambda second: datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        )

    def __call__(self, event: LogEvent) -> None:
        when = event.get("log_time") or 0.0
        level = event.get("log_level")
        record: dict[str, object] = {
            "time": f"{self._stamp(when)}.{int(when % 1 * 1000):03d}Z",
            "level": level.name if level is not None else None,
            "namespace": event.get("log_namespace"),
            "message": format_message(event),
        }
        for key, value in event.items():
            if key[:4] != "log_" and key not in record:
                record[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        try:
            text = _to_json(record)
        except (TypeError, ValueError):  # e.g. a field that is a dict with keys not strings
            text = _to_json({key: value if key in _STANDARD else str(value) for key, value in record.items()})
        self.writer.write(text + "\n", level in _URGENT)


def json_observer() -> ILogObserver:
    """
    JSON lines on standard output: C{twistd --logger tsecho.logs.json_observer}.
    """
    return JSONObserver(BatchedWriter(sys.stdout))


def text_observer() -> ILogObserver:
    """
    L{TextObserver} on standard output: C{twistd --logger tsecho.logs.text_observer}.
    """
    return TextObserver(BatchedWriter(sys.stdout))
