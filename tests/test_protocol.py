"""
Tests for L{tsecho.protocol}: the server's replies, limits, timeouts,
back-pressure, logging and draining, on in-memory transports.
"""

from __future__ import annotations

import calendar
import gc
import platform
import weakref
from collections.abc import Iterator, Sequence
from unittest import skipIf

from twisted.internet import error
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import INegotiated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import alsoProvides

from timezones import use_time_zone
from tsecho._logtext import describe_address
from tsecho._tally import Ending
from tsecho.logs import CONNECTION_CLOSED
from tsecho.protocol import REPLY_BUDGET, TURN_BUDGET, ServerConfig, TimestampEcho
from tsecho.testing import (
    EXAMPLE_PEER,
    EXAMPLE_STAMP,
    EXAMPLE_TIME,
    ClosingStringTransport,
    EchoConnection,
    TCPStringTransport,
    connect,
    connected_echo,
    make_factory,
)
from tsecho.wire import BUSY

STAMP = EXAMPLE_STAMP


def too_long(limit: int) -> bytes:
    """
    The SPEC's error reply for a line longer than C{limit} bytes.
    """
    return b"ERROR line too long (limit %d bytes)\r\n" % (limit,)


def slices(data: bytes, size: int) -> Iterator[bytes]:
    """
    Cut C{data} into consecutive pieces of C{size} bytes.
    """
    for start in range(0, len(data), size):
        yield data[start : start + size]


def protocol_events(events: Sequence[LogEvent]) -> list[LogEvent]:
    """
    The events that L{tsecho.protocol} logged.
    """
    return [e for e in events if e.get("log_namespace") == "tsecho.protocol"]


class ReplyFormatTests(SynchronousTestCase):
    """
    Each line is answered C{[TIMESTAMP] LINE EOL}.
    """

    def test_ctime_default(self) -> None:
        """
        By default the timestamp is C{time.ctime()}'s form, as in SPEC.md's example.
        """
        echo = connected_echo()
        self.assertEqual(echo.send(b"hello\r\n"), b"[Thu Nov 26 14:09:48 2026] hello\r\n")

    def test_ctime_pads_day(self) -> None:
        """
        A day of month below 10 is space-padded, as C{ctime} does.
        """
        echo = connected_echo(now=calendar.timegm((2026, 11, 6, 4, 5, 6)))
        self.assertEqual(echo.send(b"x\n"), b"[Fri Nov  6 04:05:06 2026] x\n")

    def test_ctime_local_time(self) -> None:
        """
        Without C{utc}, the timestamp is in the local time zone.
        """
        use_time_zone(self, "EST5")
        echo = connected_echo(utc=False)
        self.assertEqual(echo.send(b"x\n"), b"[Thu Nov 26 09:09:48 2026] x\n")

    def test_iso(self) -> None:
        """
        C{iso} gives RFC 3339 with a numeric offset.
        """
        echo = connected_echo(time_format="iso")
        self.assertEqual(echo.send(b"x\r\n"), b"[2026-11-26T14:09:48+00:00] x\r\n")

    def test_iso_local_time(self) -> None:
        """
        C{iso} in local time carries the local offset.
        """
        use_time_zone(self, "EST5")
        echo = connected_echo(time_format="iso", utc=False)
        self.assertEqual(echo.send(b"x\r\n"), b"[2026-11-26T09:09:48-05:00] x\r\n")

    def test_strftime(self) -> None:
        """
        Any strftime pattern may format the timestamp.
        """
        echo = connected_echo(time_format="%Y-%m-%d %H:%M:%S %%")
        self.assertEqual(echo.send(b"x\n"), b"[2026-11-26 14:09:48 %] x\n")

    def test_time_of_reply(self) -> None:
        """
        The timestamp is the moment of the reply, taken from the factory's clock.
        """
        echo = connected_echo()
        echo.clock.advance(61)
        self.assertEqual(echo.send(b"later\n"), b"[Thu Nov 26 14:10:49 2026] later\n")

    def test_eol_mirrors_request(self) -> None:
        """
        Each reply ends with its own request's terminator.
        """
        echo = connected_echo()
        self.assertEqual(
            echo.send(b"a\r\nb\nc\r\n"),
            STAMP + b"a\r\n" + STAMP + b"b\n" + STAMP + b"c\r\n",
        )

    def test_bytes_echoed_exactly(self) -> None:
        """
        Invalid UTF-8, NUL, controls and lone C{\\r} come back unchanged.
        """
        line = bytes(b for b in range(256) if b != 0x0A)
        echo = connected_echo()
        self.assertEqual(echo.send(line + b"\n"), STAMP + line + b"\n")
        self.assertEqual(echo.send(b"\xff\xfe\x00\rz\r\n"), STAMP + b"\xff\xfe\x00\rz\r\n")

    def test_empty_line(self) -> None:
        """
        An empty line is answered with the prefix and its terminator.
        """
        echo = connected_echo()
        self.assertEqual(echo.send(b"\r\n\n"), STAMP + b"\r\n" + STAMP + b"\n")

    def test_every_slice_size(self) -> None:
        """
        However the requests are chunked, the replies are the same bytes.
        """
        data = b"one\r\ntwo\nthr\ree\r\r\n\n\xff\x00\r\n"
        expected = STAMP + b"one\r\n" + STAMP + b"two\n" + STAMP + b"thr\ree\r\r\n" + STAMP + b"\n"
        expected += STAMP + b"\xff\x00\r\n"
        for size in range(1, len(data) + 1):
            echo = connected_echo()
            self.assertEqual(echo.send(*slices(data, size)), expected, f"slice size {size}")

    def test_persistent(self) -> None:
        """
        By default a connection carries any number of lines, one at a time.
        """
        echo = connected_echo()
        for n in range(100):
            self.assertEqual(echo.send(b"%d\n" % n), STAMP + b"%d\n" % n)
        self.assertFalse(echo.transport.disconnecting)
        self.assertEqual(echo.protocol.lines_answered, 100)

    def test_one_write_per_chunk(self) -> None:
        """
        The replies to all the lines of one chunk go out in one write.
        """
        echo = connected_echo()
        writes: list[bytes] = []
        write = echo.transport.write

        def record(data: bytes) -> None:
            writes.append(data)
            write(data)

        self.patch(echo.transport, "write", record)
        echo.send(b"a\nb\r\nc\nd")
        self.assertEqual(writes, [STAMP + b"a\n" + STAMP + b"b\r\n" + STAMP + b"c\n"])
        echo.send(b"\n")
        self.assertEqual(writes[1:], [STAMP + b"d\n"])
        echo.send(b"no terminator yet")
        self.assertEqual(len(writes), 2)


class OneShotTests(SynchronousTestCase):
    """
    In one-shot mode a connection answers its first line, then closes.
    """

    def test_first_line_then_close(self) -> None:
        """
        The first line is answered and the connection closes; the other lines
        of the chunk, and later bytes, are ignored.
        """
        echo = connected_echo(one_shot=True)
        self.assertEqual(echo.send(b"first\r\nsecond\r\n"), STAMP + b"first\r\n")
        self.assertTrue(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"third\n"), b"")
        self.assertEqual(echo.half_close(), b"")
        self.assertEqual(echo.protocol.lines_answered, 1)

    def test_first_line_in_pieces(self) -> None:
        """
        A first line that arrives in pieces of any size is answered once, whole.
        """
        data = b"book client\r\nmore\n"
        for size in range(1, len(data) + 1):
            echo = connected_echo(one_shot=True)
            replies = b""
            for piece in slices(data, size):
                replies += echo.send(piece)
            self.assertEqual(replies, STAMP + b"book client\r\n", f"slice size {size}")
            self.assertTrue(echo.transport.disconnecting)

    def test_releases_producer(self) -> None:
        """
        Closing unregisters the protocol as the transport's producer, so the
        transport may close once its buffer drains.
        """
        echo = connected_echo(one_shot=True)
        echo.send(b"x\n")
        self.assertIsNone(echo.transport.producer)


class HalfCloseTests(SynchronousTestCase):
    """
    When the client shuts down its sending side, everything received is answered.
    """

    def test_provides_interface(self) -> None:
        """
        The protocol is half-closeable, so the transport tells it of the
        client's EOF instead of closing.
        """
        from twisted.internet.interfaces import IHalfCloseableProtocol

        self.assertTrue(IHalfCloseableProtocol.providedBy(connected_echo().protocol))

    def test_answers_pending_then_closes(self) -> None:
        """
        Lines held back (by a pause) are answered, then the connection closes.
        """
        echo = connected_echo()
        echo.protocol.pauseProducing()
        self.assertEqual(echo.send(b"a\r\nb\n"), b"")
        self.assertEqual(echo.half_close(), b"")  # still held back: the client is not reading
        self.assertFalse(echo.transport.disconnecting)
        echo.protocol.resumeProducing()
        self.assertEqual(echo.take(), STAMP + b"a\r\n" + STAMP + b"b\n")
        self.assertTrue(echo.transport.disconnecting)

    def test_final_unterminated_line(self) -> None:
        """
        A final line without terminator is answered with C{\\r\\n}.
        """
        echo = connected_echo()
        self.assertEqual(echo.send(b"a\nfinal"), STAMP + b"a\n")
        self.assertEqual(echo.half_close(), STAMP + b"final\r\n")
        self.assertTrue(echo.transport.disconnecting)

    def test_final_cr_stays(self) -> None:
        """
        A final C{\\r} is a byte of the final line, not a terminator.
        """
        echo = connected_echo()
        echo.send(b"end\r")
        self.assertEqual(echo.half_close(), STAMP + b"end\r\r\n")

    def test_final_lone_cr(self) -> None:
        """
        A final line that is just C{\\r} is not empty: it is answered.
        """
        echo = connected_echo()
        echo.send(b"\r")
        self.assertEqual(echo.half_close(), STAMP + b"\r\r\n")

    def test_empty_final_not_answered(self) -> None:
        """
        With nothing after the last terminator, nothing more is sent; the
        connection closes.
        """
        echo = connected_echo()
        echo.send(b"a\n")
        self.assertEqual(echo.half_close(), b"")
        self.assertTrue(echo.transport.disconnecting)

    def test_nothing_received(self) -> None:
        """
        A client that sends nothing and shuts down gets nothing and a close.
        """
        echo = connected_echo()
        self.assertEqual(echo.half_close(), b"")
        self.assertTrue(echo.transport.disconnecting)

    def test_every_slice_size(self) -> None:
        """
        Whatever the chunking, every line and the final one are answered.
        """
        data = b"x\r\ny\nlast\r"
        for size in range(1, len(data) + 1):
            echo = connected_echo()
            replies = echo.send(*slices(data, size)) + echo.half_close()
            self.assertEqual(replies, STAMP + b"x\r\n" + STAMP + b"y\n" + STAMP + b"last\r\r\n", f"size {size}")

    def test_final_line_too_long(self) -> None:
        """
        A final unterminated line over the limit is refused, not answered;
        N bytes and a final C{\\r} are one byte too many.
        """
        echo = connected_echo(max_line=4)
        echo.send(b"abcd\r")
        self.assertEqual(echo.half_close(), too_long(4))
        self.assertTrue(echo.transport.disconnecting)

    def test_final_line_at_limit(self) -> None:
        """
        A final unterminated line of exactly the limit is answered.
        """
        echo = connected_echo(max_line=4)
        echo.send(b"abcd")
        self.assertEqual(echo.half_close(), STAMP + b"abcd\r\n")

    def test_after_close(self) -> None:
        """
        After the server closed (one-shot), the client's EOF changes nothing.
        """
        echo = connected_echo(one_shot=True)
        echo.send(b"a\nb")
        self.assertEqual(echo.half_close(), b"")

    def test_one_shot_final_line(self) -> None:
        """
        In one-shot mode, an unterminated first line is answered at EOF.
        """
        echo = connected_echo(one_shot=True)
        echo.send(b"only")
        self.assertEqual(echo.half_close(), STAMP + b"only\r\n")
        self.assertTrue(echo.transport.disconnecting)


class MaxLineTests(SynchronousTestCase):
    """
    A line longer than C{max_line} gets C{ERROR line too long}, then a close.
    """

    N = 16

    def test_default_limit(self) -> None:
        """
        The default limit is 16384 bytes.
        """
        echo = connected_echo()
        line = b"d" * 16384
        self.assertEqual(echo.send(line + b"\n"), STAMP + line + b"\n")
        self.assertEqual(echo.send(b"e" * 16385 + b"\r\n"), too_long(16384))

    def test_exactly_limit_answered(self) -> None:
        """
        A line of exactly the limit is answered, with either terminator.
        """
        line = b"n" * self.N
        for ending in (b"\n", b"\r\n"):
            echo = connected_echo(max_line=self.N)
            self.assertEqual(echo.send(line + ending), STAMP + line + ending)
            self.assertFalse(echo.transport.disconnecting)

    def test_one_over_refused(self) -> None:
        """
        A line one byte over the limit is refused, with either terminator and
        any chunking, after the replies to earlier lines; then the connection
        closes and later bytes are ignored.
        """
        for ending in (b"\n", b"\r\n"):
            data = b"ok\r\n" + b"o" * (self.N + 1) + ending + b"after\n"
            for size in range(1, len(data) + 1):
                echo = connected_echo(max_line=self.N)
                replies = b""
                for piece in slices(data, size):
                    replies += echo.send(piece)
                self.assertEqual(replies, STAMP + b"ok\r\n" + too_long(self.N), f"{ending!r} size {size}")
                self.assertTrue(echo.transport.disconnecting)

    def test_unterminated_refused_past_limit(self) -> None:
        """
        An unterminated run is refused as soon as it passes the limit.
        """
        echo = connected_echo(max_line=self.N)
        self.assertEqual(echo.send(b"u" * self.N), b"")
        self.assertEqual(echo.send(b"u"), too_long(self.N))
        self.assertTrue(echo.transport.disconnecting)

    def test_limit_and_cr_waits(self) -> None:
        """
        The limit's worth of bytes and a C{\\r} wait for a possible C{\\n}.
        """
        echo = connected_echo(max_line=self.N)
        self.assertEqual(echo.send(b"w" * self.N + b"\r"), b"")
        self.assertFalse(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"\n"), STAMP + b"w" * self.N + b"\r\n")

    def test_one_write(self) -> None:
        """
        Earlier replies and the error go out in order, before the close.
        """
        echo = connected_echo(max_line=3)
        self.assertEqual(echo.send(b"abc\nabc\r\nabcd\n"), STAMP + b"abc\n" + STAMP + b"abc\r\n" + too_long(3))

    def test_logged_at_warn(self) -> None:
        """
        The refusal is logged as a warning naming the peer and the limit.
        """
        with capturedLogs() as events:
            echo = connected_echo(max_line=3, quiet=True)
            echo.send(b"abcd")
        [event] = protocol_events(events)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["peer"], "127.0.0.1:54321")
        self.assertEqual(event["limit"], 3)
        self.assertEqual(event["length"], 4)
        self.assertEqual(formatEvent(event), "closing 127.0.0.1:54321: line too long (4 bytes so far, limit 3)")


class MaxConnectionsTests(SynchronousTestCase):
    """
    Connections past C{max_connections} get C{ERROR server busy}, then a close.
    """

    def test_busy(self) -> None:
        """
        Connection N+1 gets exactly C{ERROR server busy\\r\\n} and is closed;
        it is not counted, and does not answer lines.
        """
        factory = make_factory(ServerConfig(max_connections=2))
        first, second = connect(factory), connect(factory)
        third = connect(factory)
        self.assertEqual(third.take(), b"ERROR server busy\r\n")
        self.assertEqual(BUSY, b"ERROR server busy\r\n")
        self.assertTrue(third.transport.disconnecting)
        self.assertEqual(third.send(b"hello\n"), b"")
        self.assertEqual(factory.connections, {first.protocol, second.protocol})
        third.lose()
        self.assertEqual(len(factory.connections), 2)
        self.assertEqual(first.send(b"a\n"), STAMP + b"a\n")
        self.assertFalse(first.transport.disconnecting)

    def test_busy_logged(self) -> None:
        """
        A refused connection is logged as a warning, even when quiet.
        """
        factory = make_factory(ServerConfig(max_connections=1, quiet=True))
        connect(factory)
        with capturedLogs() as events:
            busy = connect(factory)
            busy.lose()
        [event] = protocol_events(events)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(event["limit"], 1)
        self.assertEqual(formatEvent(event), "refused 127.0.0.1:54321: server busy (1 connections)")
        self.assertEqual(busy.protocol.ending, Ending.BUSY)

    def test_slot_freed(self) -> None:
        """
        When an admitted connection ends, a new one is admitted in its place.
        """
        factory = make_factory(ServerConfig(max_connections=1))
        first = connect(factory)
        self.assertEqual(connect(factory).take(), BUSY)
        first.lose()
        self.assertEqual(factory.connections, set())
        again = connect(factory)
        self.assertEqual(again.send(b"in\n"), STAMP + b"in\n")

    def assert_released(self, close_path: str, close: object) -> None:
        """
        Open a connection, run C{close} on it, and check the count goes back to 0.
        """
        factory = make_factory(
            ServerConfig(max_connections=1, timeout=5, max_line=4, one_shot=close_path == "one-shot")
        )
        echo = connect(factory, transport_type=ClosingStringTransport)
        self.assertEqual(len(factory.connections), 1, close_path)
        close(echo)  # type: ignore[operator]
        self.assertEqual(factory.connections, set(), close_path)
        self.assertEqual(echo.factory.clock.getDelayedCalls(), [], close_path)
        self.assertNotEqual(connect(factory, transport_type=ClosingStringTransport).take(), BUSY, close_path)

    def test_released_on_every_close_path(self) -> None:
        """
        The count goes down on every way a connection can end: the client
        closing, a line too long, an idle timeout, a half-close, one-shot,
        an abort, a lost connection, a lost write side.
        """
        self.assert_released("client close", lambda e: e.lose())
        self.assert_released("line too long", lambda e: e.send(b"toolong"))
        self.assert_released("timeout", lambda e: e.clock.advance(5))
        self.assert_released("half-close", lambda e: e.half_close())
        self.assert_released("one-shot", lambda e: e.send(b"x\n"))
        self.assert_released("abort", lambda e: e.transport.abortConnection())
        self.assert_released("lost", lambda e: e.lose(Failure(ConnectionLost("gone"))))
        self.assert_released("write side lost", lambda e: e.protocol.writeConnectionLost())

    def test_on_release(self) -> None:
        """
        The factory's C{on_release} is called once each time a connection
        is counted out, after the count went down.
        """
        factory = make_factory(ServerConfig())
        counts: list[int] = []
        factory.on_release = lambda: counts.append(len(factory.connections))
        first = connect(factory, transport_type=ClosingStringTransport)
        connect(factory, transport_type=ClosingStringTransport)
        first.lose()
        self.assertEqual(counts, [1])

    def test_busy_not_released(self) -> None:
        """
        A refused connection closing does not count down admitted ones.
        """
        factory = make_factory(ServerConfig(max_connections=1))
        kept = connect(factory, transport_type=ClosingStringTransport)
        for _ in range(3):
            busy = connect(factory, transport_type=ClosingStringTransport)
            self.assertEqual(busy.take(), BUSY)
        self.assertEqual(factory.connections, {kept.protocol})


class TimeoutTests(SynchronousTestCase):
    """
    Idle connections close after C{timeout} seconds of the factory's clock.
    """

    def test_default(self) -> None:
        """
        The default timeout is 300 seconds.
        """
        echo = connected_echo()
        echo.clock.advance(299.9)
        self.assertFalse(echo.transport.disconnecting)
        echo.clock.advance(0.1)
        self.assertTrue(echo.transport.disconnecting)

    def test_idle_closes(self) -> None:
        """
        A connection idle for the timeout is closed, having sent nothing more.
        """
        echo = connected_echo(timeout=10)
        echo.clock.advance(9.999)
        self.assertFalse(echo.transport.disconnecting)
        echo.clock.advance(0.001)
        self.assertTrue(echo.transport.disconnecting)
        self.assertFalse(echo.transport.disconnected)
        self.assertEqual(echo.take(), b"")

    def test_activity_resets(self) -> None:
        """
        Each chunk received restarts the idle timer, even a partial line.
        """
        echo = connected_echo(timeout=10)
        for _ in range(5):
            echo.clock.advance(9)
            echo.send(b"x")
        echo.clock.advance(9)
        self.assertFalse(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"\n"), b"[Thu Nov 26 14:10:42 2026] xxxxx\n")
        echo.clock.advance(10)
        self.assertTrue(echo.transport.disconnecting)

    def test_zero_disables(self) -> None:
        """
        A timeout of 0 never closes a connection; no timer is even scheduled.
        """
        echo = connected_echo(timeout=0)
        self.assertEqual(echo.clock.getDelayedCalls(), [])
        echo.clock.advance(10**9)
        self.assertFalse(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"still here\n"), b"[Sun Aug  4 15:56:28 2058] still here\n")

    def test_second_timeout_aborts(self) -> None:
        """
        A connection that has not finished closing one timeout later (its
        client does not read) is aborted, with a warning.
        """
        echo = connected_echo(timeout=10)
        echo.clock.advance(10)
        self.assertTrue(echo.transport.disconnecting)
        self.assertFalse(echo.transport.disconnected)
        with capturedLogs() as events:
            echo.clock.advance(10)
        self.assertTrue(echo.transport.disconnected)
        [event] = protocol_events(events)
        self.assertEqual(event["log_level"], LogLevel.warn)
        echo.lose()
        self.assertEqual(echo.clock.getDelayedCalls(), [])

    def test_closing_after_error_aborts(self) -> None:
        """
        A connection closing after an error reply is aborted if it has not
        gone one timeout later.
        """
        echo = connected_echo(timeout=10, max_line=1)
        echo.send(b"xx")
        self.assertTrue(echo.transport.disconnecting)
        echo.clock.advance(10)
        self.assertTrue(echo.transport.disconnected)

    def test_timer_cancelled_on_close(self) -> None:
        """
        When the connection ends, its timer is cancelled.
        """
        echo = connected_echo(timeout=10)
        echo.lose()
        self.assertEqual(echo.clock.getDelayedCalls(), [])

    def test_idle_close_logged(self) -> None:
        """
        An idle close is logged when the connection has ended, with the
        reason C{idle timeout}, unless quiet.
        """
        for quiet, count in ((False, 1), (True, 0)):
            echo = connected_echo(timeout=7, quiet=quiet)
            with capturedLogs() as events:
                echo.clock.advance(7)
                echo.lose()
            idle = [e for e in protocol_events(events) if e.get("reason") == Ending.IDLE_TIMEOUT]
            self.assertEqual(len(idle), count, f"quiet={quiet}")


class BackPressureTests(SynchronousTestCase):
    """
    The protocol is a streaming producer for its transport: when the
    transport's buffer is full, the protocol stops reading.
    """

    def test_registered(self) -> None:
        """
        On connect, the protocol registers itself as a streaming producer.
        """
        echo = connected_echo()
        self.assertIs(echo.transport.producer, echo.protocol)
        self.assertTrue(echo.transport.streaming)

    def test_pause_stops_reading(self) -> None:
        """
        When the transport pauses the protocol, the protocol pauses the
        transport's reading and answers nothing more; on resume it resumes
        reading and answers what it had received, in order.
        """
        echo = connected_echo()
        echo.send(b"a\n")
        echo.protocol.pauseProducing()
        self.assertEqual(echo.transport.producerState, "paused")
        self.assertEqual(echo.send(b"b\r\n", b"c", b"\n"), b"")
        echo.protocol.resumeProducing()
        self.assertEqual(echo.transport.producerState, "producing")
        self.assertEqual(echo.take(), STAMP + b"b\r\n" + STAMP + b"c\n")
        self.assertEqual(echo.send(b"d\n"), STAMP + b"d\n")

    def test_pause_mid_chunk(self) -> None:
        """
        A pause that comes while a chunk is being answered holds its later lines.
        """
        echo = connected_echo()
        original = echo.protocol.lineReceived

        def pause_after_first(line: bytes) -> None:
            original(line)
            if line == b"1":
                echo.protocol.pauseProducing()

        self.patch(echo.protocol, "lineReceived", pause_after_first)
        self.assertEqual(echo.send(b"1\n2\n3\n"), STAMP + b"1\n")
        echo.protocol.resumeProducing()
        self.assertEqual(echo.take(), STAMP + b"2\n" + STAMP + b"3\n")

    def test_stop_producing(self) -> None:
        """
        C{stopProducing} stops the transport's reading.
        """
        echo = connected_echo()
        echo.protocol.stopProducing()
        self.assertEqual(echo.transport.producerState, "stopped")


class LoggingTests(SynchronousTestCase):
    """
    One log event per connection, when it ends: its peer, lines, bytes,
    duration and how it ended; none with C{quiet}.
    """

    def test_summary(self) -> None:
        """
        The one event names the peer and counts lines, bytes and seconds.
        """
        with capturedLogs() as events:
            echo = connected_echo()
            replies = echo.send(b"a\nb\nc\n")
            echo.clock.advance(2.5)
            echo.lose()
        [closed] = protocol_events(events)
        self.assertEqual(closed["log_format"], CONNECTION_CLOSED)
        self.assertEqual(closed["log_level"], LogLevel.info)
        self.assertEqual(closed["peer"], "127.0.0.1:54321")
        self.assertEqual(closed["lines"], 3)
        self.assertEqual(closed["bytes_in"], 6)
        self.assertEqual(closed["bytes_out"], len(replies))
        self.assertEqual(closed["duration"], 2.5)
        self.assertEqual(closed["reason"], Ending.CLIENT_CLOSED)
        self.assertIn("closed after 3 lines (client closed): 6 bytes in", formatEvent(closed))

    def test_reasons(self) -> None:
        """
        The summary says how the connection ended: the first reason to close wins.
        """
        cases = [
            ({}, lambda e: e.lose(Failure(error.ConnectionLost())), Ending.RESET),
            ({}, lambda e: e.half_close(), Ending.CLIENT_CLOSED),
            ({"one_shot": True}, lambda e: e.send(b"x\n"), Ending.ONE_SHOT),
            ({"max_line": 3}, lambda e: e.send(b"toolong\n"), Ending.LINE_TOO_LONG),
            ({"timeout": 5}, lambda e: e.clock.advance(5), Ending.IDLE_TIMEOUT),
            ({}, lambda e: e.factory.drain() and e.clock.advance(1), Ending.SHUTDOWN),
            ({}, lambda e: e.factory.abort_all(), Ending.ABORTED),
        ]
        for settings, end, expected in cases:
            with capturedLogs() as events:
                echo = connected_echo(**settings)
                end(echo)
                if echo.transport.connected:
                    echo.lose()
            summaries = [e for e in protocol_events(events) if e["log_format"] == CONNECTION_CLOSED]
            self.assertEqual([e["reason"] for e in summaries], [expected], expected)

    def test_counts_every_chunk(self) -> None:
        """
        Bytes in and out are counted over every chunk, not the last one.
        """
        with capturedLogs() as events:
            echo = connected_echo()
            replies = echo.send(b"a\n", b"bc\n", b"d")
            echo.lose()
        [closed] = protocol_events(events)
        self.assertEqual((closed["bytes_in"], closed["bytes_out"]), (6, len(replies)))

    def test_one_line(self) -> None:
        """
        One line answered is C{1 line}; the metrics are told of the
        connection, how it ended and how long it lasted.
        """
        told: list[tuple[object, Ending, float]] = []

        class Recording:
            def refused(self, connection: TimestampEcho) -> None:
                pass

            def closed(self, connection: TimestampEcho, ending: Ending, duration: float) -> None:
                told.append((connection, ending, duration))

        factory = make_factory()
        factory.metrics = Recording()
        with capturedLogs() as events:
            echo = connect(factory)
            echo.send(b"x\n")
            echo.clock.advance(1.5)
            echo.lose()
        [closed] = protocol_events(events)
        self.assertIn("closed after 1 line (client closed)", formatEvent(closed))
        self.assertEqual(told, [(echo.protocol, Ending.CLIENT_CLOSED, 1.5)])

    def test_first_reason_kept_at_client_end(self) -> None:
        """
        A client that ends its input after the server began closing does not
        change how the connection is reported to have ended.
        """
        with capturedLogs() as events:
            echo = connected_echo(one_shot=True, transport_type=TCPStringTransport)
            echo.send(b"x\n")
            echo.half_close()
            echo.lose()
        [closed] = protocol_events(events)
        self.assertEqual(closed["reason"], Ending.ONE_SHOT)

    def test_quiet(self) -> None:
        """
        With C{quiet}, no event is logged.
        """
        with capturedLogs() as events:
            echo = connected_echo(quiet=True)
            echo.send(b"a\n")
            echo.lose()
        self.assertEqual(protocol_events(events), [])

    def test_ipv6_peer(self) -> None:
        """
        An IPv6 peer is named in brackets.
        """
        with capturedLogs() as events:
            connected_echo(peer=IPv6Address("TCP", "::1", 5555)).lose()
        self.assertEqual(protocol_events(events)[0]["peer"], "[::1]:5555")

    def test_describe_address(self) -> None:
        """
        L{describe_address} names TCP peers by host and port, UNIX peers by path.
        """
        self.assertEqual(describe_address(EXAMPLE_PEER), "127.0.0.1:54321")
        self.assertEqual(describe_address(IPv6Address("TCP", "::1", 1)), "[::1]:1")
        self.assertEqual(describe_address(UNIXAddress(b"/run/ts.sock")), "/run/ts.sock")
        self.assertEqual(describe_address(UNIXAddress("/run/ts.sock")), "/run/ts.sock")
        self.assertEqual(describe_address(UNIXAddress(None)), "unix socket")


class DrainTests(SynchronousTestCase):
    """
    L{TimestampEchoFactory.drain} closes connections once they have gone quiet.
    """

    def test_nothing_open(self) -> None:
        """
        With no connection open, the drain is done at once.
        """
        factory = make_factory()
        self.assertIsNone(self.successResultOf(factory.drain()))
        self.assertTrue(factory.draining)

    def test_idle_close_after_quiet(self) -> None:
        """
        Idle connections close C{drain_quiet} seconds after the drain begins;
        the result fires when the last is gone.
        """
        factory = make_factory(ServerConfig(drain_quiet=0.5))
        one, two = (
            connect(factory, transport_type=ClosingStringTransport),
            connect(factory, transport_type=ClosingStringTransport),
        )
        d = factory.drain()
        factory.clock.advance(0.4)  # type: ignore[attr-defined]
        self.assertNoResult(d)
        self.assertFalse(one.transport.disconnecting)
        factory.clock.advance(0.1)  # type: ignore[attr-defined]
        self.assertTrue(one.transport.disconnecting)
        self.assertTrue(two.transport.disconnecting)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(factory.clock.getDelayedCalls(), [])

    def test_busy_connection_served(self) -> None:
        """
        A connection that keeps sending is answered until it goes quiet
        (within its shutdown window).
        """
        factory = make_factory(ServerConfig(drain_quiet=0.5, shutdown_window=10))
        echo = connect(factory, transport_type=ClosingStringTransport)
        d = factory.drain()
        for n in range(10):
            factory.clock.advance(0.4)  # type: ignore[attr-defined]
            self.assertEqual(echo.send(b"%d\n" % n)[-2:], b"%d\n" % n)
        self.assertNoResult(d)
        self.assertFalse(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"partial"), b"")
        factory.clock.advance(0.5)  # type: ignore[attr-defined]
        self.assertTrue(echo.transport.disconnecting)
        self.successResultOf(d)

    def test_waits_for_every_connection(self) -> None:
        """
        The result fires only when every connection has closed.
        """
        factory = make_factory()
        fast = connect(factory)
        slow = connect(factory)
        d = factory.drain()
        fast.lose()
        self.assertNoResult(d)
        slow.lose()
        self.successResultOf(d)

    def test_already_closing(self) -> None:
        """
        A connection already closing is left to finish.
        """
        factory = make_factory(ServerConfig(one_shot=True, timeout=0, close_timeout=7, shutdown_window=1))
        echo = connect(factory)
        echo.send(b"x\n")
        d = factory.drain()
        # The timer of the close already under way, and the shutdown window's.
        timers = sorted(c.getTime() for c in factory.clock.getDelayedCalls())  # type: ignore[attr-defined]
        self.assertEqual(timers, [EXAMPLE_TIME + 1, EXAMPLE_TIME + 7])
        echo.lose()
        self.successResultOf(d)

    def test_new_connection_while_draining(self) -> None:
        """
        A connection accepted while draining is drained too.
        """
        factory = make_factory(ServerConfig(drain_quiet=1))
        first = connect(factory)
        factory.drain()
        late = connect(factory, transport_type=ClosingStringTransport)
        factory.clock.advance(1)  # type: ignore[attr-defined]
        self.assertTrue(late.transport.disconnecting)
        self.assertTrue(first.transport.disconnecting)

    def test_no_idle_log_while_draining(self) -> None:
        """
        A drain close is not reported as an idle timeout (nor logged before
        the connection ends); only the close's own timer is left.
        """
        factory = make_factory(ServerConfig(drain_quiet=1, close_timeout=7))
        echo = connect(factory)
        factory.drain()
        with capturedLogs() as events:
            factory.clock.advance(1)  # type: ignore[attr-defined]
        self.assertTrue(echo.transport.disconnecting)
        self.assertEqual(protocol_events(events), [])
        self.assertEqual(echo.protocol.ending, Ending.SHUTDOWN)
        self.assertEqual([c.getTime() for c in factory.clock.getDelayedCalls()], [EXAMPLE_TIME + 1 + 7])

    def test_abort_all(self) -> None:
        """
        L{TimestampEchoFactory.abort_all} aborts every open connection.
        """
        factory = make_factory()
        one, two = connect(factory), connect(factory)
        factory.abort_all()
        self.assertTrue(one.transport.disconnected)
        self.assertTrue(two.transport.disconnected)


class WriteConnectionLostTests(SynchronousTestCase):
    """
    C{writeConnectionLost}: the server can no longer send.
    """

    def test_closes(self) -> None:
        """
        The connection closes and ignores what arrives after.
        """
        echo = connected_echo()
        echo.protocol.writeConnectionLost()
        self.assertTrue(echo.transport.disconnecting)
        self.assertEqual(echo.send(b"late\n"), b"")
        self.assertEqual(echo.half_close(), b"")

    def test_leaves_the_idle_table(self) -> None:
        """
        The connection is no longer open: the idle timeout no longer
        applies to it, and no timer is left for it.
        """
        echo = connected_echo(timeout=10)
        echo.protocol.writeConnectionLost()
        self.assertEqual(echo.clock.getDelayedCalls(), [])


class CloseDeadlineTests(SynchronousTestCase):
    """
    A closing connection has one deadline at a time, on the factory's
    clock: C{close_timeout} to send what it owes (then it is cut short),
    replaced, once its sending side is shut, by C{linger} for the client to
    close (then it closes anyway).
    """

    def closing(self, **config: object) -> tuple[EchoConnection, TCPStringTransport]:
        """
        A one-shot connection that has answered and started closing, its
        reply not yet read by the client.
        """
        echo = connected_echo(one_shot=True, transport_type=TCPStringTransport, **config)
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        transport.flush_at_once = False
        self.assertEqual(echo.send(b"x\n"), STAMP + b"x\n")
        return echo, transport

    def test_linger_replaces_close_timeout(self) -> None:
        """
        Once the reply is written, the close's deadline is C{linger} from
        then, and the C{close_timeout} deadline is gone: the connection is
        closed politely at the linger's end, not cut short.
        """
        echo, transport = self.closing(close_timeout=10, linger=2)
        self.assertEqual([c.getTime() for c in echo.clock.getDelayedCalls()], [EXAMPLE_TIME + 10])
        echo.clock.advance(9)
        transport.finish_writing()
        self.assertEqual([c.getTime() for c in echo.clock.getDelayedCalls()], [EXAMPLE_TIME + 11])
        with capturedLogs() as events:
            echo.clock.advance(1.9)
            self.assertFalse(transport.disconnecting)
            echo.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        self.assertEqual(protocol_events(events), [])
        echo.lose()
        self.assertEqual(echo.clock.getDelayedCalls(), [])

    def test_cut_short_is_aborted(self) -> None:
        """
        A close that has not written its reply after C{close_timeout} is
        aborted, logged as such, and reported as C{aborted}.
        """
        with capturedLogs() as events:
            echo, transport = self.closing(close_timeout=5, linger=2)
            echo.clock.advance(4.9)
            self.assertFalse(transport.disconnected)
            echo.clock.advance(0.1)
            self.assertTrue(transport.disconnected)
            echo.lose()
        warning, summary = protocol_events(events)
        self.assertEqual(formatEvent(warning), "aborting 127.0.0.1:54321: its replies were not read in time")
        self.assertEqual(summary["reason"], Ending.ABORTED)
        self.assertEqual(echo.clock.getDelayedCalls(), [])

    def test_idle_timeout_does_not_apply(self) -> None:
        """
        The idle timeout no longer applies to a closing connection: only its
        deadline does.
        """
        echo, transport = self.closing(timeout=1, close_timeout=5)
        self.assertEqual([c.getTime() for c in echo.clock.getDelayedCalls()], [EXAMPLE_TIME + 5])
        echo.clock.advance(4.9)
        self.assertFalse(transport.disconnected)
        self.assertEqual(echo.protocol.ending, Ending.ONE_SHOT)

    def test_busy_refusal_lingers(self) -> None:
        """
        A connection refused as busy gets only C{linger} to take its one
        line, and is closed without a warning.
        """
        factory = make_factory(ServerConfig(max_connections=1, linger=2, close_timeout=10))
        connect(factory)
        with capturedLogs() as events:
            busy = connect(factory, transport_type=TCPStringTransport)
            self.assertEqual(busy.take(), BUSY)
            assert isinstance(busy.transport, TCPStringTransport)
            self.assertTrue(busy.transport.write_closed)
            factory.clock.advance(2)  # type: ignore[attr-defined]
        self.assertTrue(busy.transport.disconnecting)
        self.assertFalse(busy.transport.disconnected)
        [refusal] = protocol_events(events)
        self.assertIn("busy", refusal["log_format"])


class LingeringCloseTests(SynchronousTestCase):
    """
    On a transport that can half-close (TCP, UNIX), the server closes by
    shutting down its sending side and dropping what the client still sends
    until the client closes: closing with unread input would make the kernel
    reset the connection and destroy replies the client has not read.
    """

    def test_one_shot_lingers(self) -> None:
        """
        After the one-shot reply the server half-closes, drops later lines
        unanswered, and closes fully at the client's end of input.
        """
        echo = connected_echo(one_shot=True, transport_type=TCPStringTransport)
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        self.assertEqual(echo.send(b"first\nsecond\n"), STAMP + b"first\n")
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(echo.send(b"third\n"), b"")
        self.assertEqual(echo.half_close(), b"")
        self.assertTrue(transport.disconnecting)

    def test_line_too_long_lingers(self) -> None:
        """
        The ERROR line is followed by a half-close, not a reset: the rest of
        the over-long line is read and dropped.
        """
        echo = connected_echo(max_line=4, transport_type=TCPStringTransport)
        error = b"ERROR line too long (limit 4 bytes)\r\n"
        self.assertEqual(echo.send(b"ok\n", b"12345", b"6789\n"), STAMP + b"ok\n" + error)
        self.assertFalse(echo.transport.disconnecting)
        echo.half_close()
        self.assertTrue(echo.transport.disconnecting)

    def test_linger_is_bounded(self) -> None:
        """
        Once everything owed is sent, a client that does not close is given
        C{linger} seconds, then the connection is closed anyway.
        """
        echo = connected_echo(one_shot=True, linger=2, transport_type=TCPStringTransport)
        echo.send(b"x\n")
        echo.clock.advance(1.9)
        self.assertFalse(echo.transport.disconnecting)
        echo.clock.advance(0.1)
        self.assertTrue(echo.transport.disconnecting)
        self.assertFalse(echo.transport.disconnected)

    def test_unsent_replies_are_bounded(self) -> None:
        """
        If the replies cannot be sent (the client reads nothing), the close
        is cut short after C{close_timeout} seconds, with a warning.
        """
        echo = connected_echo(one_shot=True, close_timeout=5, transport_type=TCPStringTransport)
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        transport.flush_at_once = False
        echo.send(b"x\n")
        with capturedLogs() as events:
            echo.clock.advance(5)
        self.assertTrue(transport.disconnected)
        self.assertEqual([e["log_level"] for e in protocol_events(events)], [LogLevel.warn])

    def test_paused_reader_resumed_to_drain(self) -> None:
        """
        A connection paused by back-pressure when it starts closing resumes
        reading, so that what the client sends is dropped, not left unread.
        """
        echo = connected_echo(max_line=4, transport_type=TCPStringTransport)
        echo.protocol.pauseProducing()
        self.assertEqual(echo.transport.producerState, "paused")
        echo.protocol.resumeProducing()
        echo.protocol.pauseProducing()
        echo.protocol.idle_expired()
        self.assertEqual(echo.transport.producerState, "producing")
        self.assertIsNone(echo.transport.producer)

    def test_no_linger_after_client_end(self) -> None:
        """
        After the client's end of input there is nothing to drop: the server
        answers and closes fully.
        """
        echo = connected_echo(transport_type=TCPStringTransport)
        self.assertEqual(echo.send(b"last"), b"")
        self.assertEqual(echo.half_close(), STAMP + b"last\r\n")
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        self.assertFalse(transport.write_closed)
        self.assertTrue(transport.disconnecting)

    def test_no_linger_on_tls(self) -> None:
        """
        TLS closes with its own close_notify: the server closes it fully.
        """
        echo = connected_echo(one_shot=True, transport_type=TCPStringTransport)
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        alsoProvides(transport, INegotiated)
        echo.send(b"x\n")
        self.assertFalse(transport.write_closed)
        self.assertTrue(transport.disconnecting)


class ServerConfigTests(SynchronousTestCase):
    """
    L{ServerConfig} holds the SPEC's defaults and refuses impossible values.
    """

    def test_defaults(self) -> None:
        """
        The defaults are the SPEC's.
        """
        config = ServerConfig()
        self.assertEqual(
            (config.max_line, config.max_connections, config.timeout, config.one_shot, config.quiet),
            (16384, 10000, 300, False, False),
        )

    def test_refused(self) -> None:
        """
        Limits must be positive; the timeout must not be negative.
        """
        for field, value in (("max_line", 0), ("max_connections", -1), ("drain_quiet", 0), ("timeout", -1)):
            e = self.assertRaises(ValueError, ServerConfig, **{field: value})
            self.assertIn(field, str(e))


class FullTransport(StringTransport):
    """
    A transport whose client does not read: like Twisted's, it pauses its
    producer once more than 64 KiB wait in its buffer after a write; its
    buffer drains only when the test says so (L{drain}).
    """

    buffer_size = 64 * 1024

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.io.getvalue()) > self.buffer_size and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        The client read everything: return it and resume the producer.
        """
        written: bytes = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return written


def holdings(echo: EchoConnection) -> int:
    """
    What the connection holds in bytes: replies unsent (its own and the
    transport's), input not framed yet, and the unfinished line.
    """
    protocol = echo.protocol
    return (
        len(echo.transport.value())
        + sum(map(len, protocol._replies))
        + len(protocol._unparsed)
        + len(protocol._partial)
    )


# Per connection, what tsecho holds stays within this, whatever the input.
HOLDINGS_BOUND = 256 * 1024


class HoldingsBoundTests(SynchronousTestCase):
    """
    What a connection whose client does not read holds (replies unsent,
    input not framed, the unfinished line) stays within a small fixed bound
    for any input: replies are not made once about L{REPLY_BUDGET} bytes of
    them wait, and resume from where they stopped when the client reads.
    """

    def assert_bounded(self, chunk: bytes, requests: list[bytes]) -> None:
        """
        Feed C{chunk} (all of C{requests}) to a connection that cannot send:
        its holdings stay bounded; once the client reads, every reply comes,
        in order.
        """
        factory = make_factory(ServerConfig(quiet=True))
        protocol = factory.buildProtocol(EXAMPLE_PEER)
        assert isinstance(protocol, TimestampEcho)
        transport = FullTransport(peerAddress=EXAMPLE_PEER)
        protocol.makeConnection(transport)
        echo = EchoConnection(protocol, transport, factory)
        protocol.dataReceived(chunk)
        for _ in range(3):  # the next turns, and more input from a TLS record already read
            next_turn(echo.clock)
            protocol.dataReceived(b"")
            self.assertLessEqual(holdings(echo), HOLDINGS_BOUND)
        self.assertLessEqual(len(transport.value()), FullTransport.buffer_size + REPLY_BUDGET + 16 * 1024 + 64)
        self.assertEqual(transport.producerState, "paused")
        received = b""
        for _ in range(len(requests) + 10):
            received += transport.drain()
            next_turn(echo.clock)
            self.assertLessEqual(holdings(echo), HOLDINGS_BOUND)
        received += transport.value()
        self.assertEqual(received, b"".join(STAMP + request for request in requests))
        self.assertEqual(transport.producerState, "producing")

    def test_empty_lines(self) -> None:
        """
        64 KiB of empty lines (65,536 replies, 1.8 MB) in one read.
        """
        self.assert_bounded(b"\n" * 65536, [b"\n"] * 65536)

    def test_short_lines(self) -> None:
        """
        64 KiB of C{"x\\n"} lines in one read.
        """
        self.assert_bounded(b"x\n" * 32768, [b"x\n"] * 32768)

    def test_long_lines(self) -> None:
        """
        Four 16 KiB lines in one read.
        """
        line = b"L" * 16382 + b"\r\n"
        self.assert_bounded(line * 4, [line] * 4)


def next_turn(clock: Clock) -> None:
    """
    Run the calls due now, as one turn of a reactor does: unlike
    C{clock.advance(0)}, not also the ones that they schedule for now.
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = True
        call.func(*call.args, **call.kw)


class TurnBudgetTests(SynchronousTestCase):
    """
    One connection makes at most L{REPLY_BUDGET} bytes of replies per turn of
    the reactor, even when its client reads everything at once: the rest
    follows on later turns, and it reads nothing meanwhile.
    """

    def test_budget_per_turn(self) -> None:
        """
        A chunk of 65,536 empty lines is answered over about 30 turns of the
        clock, each writing at most one budget's worth; reading is paused
        until the last, then resumed.
        """
        echo = connected_echo(quiet=True)
        echo.protocol.dataReceived(b"\n" * 65536)
        turns = [echo.take()]
        while echo.transport.producerState == "paused":
            self.assertLessEqual(len(turns), 100)
            next_turn(echo.clock)
            turns.append(echo.take())
        self.assertTrue(all(len(replies) <= REPLY_BUDGET + 64 for replies in turns))
        self.assertEqual(b"".join(turns), (STAMP + b"\n") * 65536)
        self.assertGreater(len(turns), 20)
        self.assertEqual(echo.clock.getDelayedCalls()[1:], [])  # only the idle timer

    def test_end_of_input_within_budget(self) -> None:
        """
        The client's end of input arriving with a chunk of 65,536 empty lines
        (over TLS, its C{close_notify} in the same read) does not make all
        the replies at once: they follow turn by turn as before, then the
        unterminated last line's, then the close.
        """
        echo = connected_echo(quiet=True)
        echo.protocol.dataReceived(b"\n" * 65536 + b"last")
        turns = [echo.half_close()]
        while not echo.transport.disconnecting:
            self.assertLessEqual(len(turns), 100)
            next_turn(echo.clock)
            turns.append(echo.take())
        self.assertTrue(all(len(replies) <= REPLY_BUDGET + 64 for replies in turns))
        self.assertEqual(b"".join(turns), (STAMP + b"\n") * 65536 + STAMP + b"last\r\n")
        self.assertGreater(len(turns), 20)

    def test_end_of_input_while_blocked(self) -> None:
        """
        The client's end of input while its replies wait unsent makes none:
        they are made once the transport drains, within the budget.
        """
        echo = connected_echo(quiet=True)
        echo.protocol.pauseProducing()
        echo.protocol.dataReceived(b"\n" * 65536)
        self.assertEqual(echo.half_close(), b"")
        echo.protocol.resumeProducing()
        self.assertLessEqual(len(echo.take()), REPLY_BUDGET + 64)
        self.assertFalse(echo.transport.disconnecting)

    def test_input_during_later_turns_keeps_order(self) -> None:
        """
        Input that arrives while the connection is behind (a TLS record read
        in the same turn) is answered after the held input, in order.
        """
        echo = connected_echo(quiet=True)
        echo.protocol.dataReceived(b"\n" * 5000 + b"par")
        echo.protocol.dataReceived(b"tial\nnext\n")
        replies = echo.take()
        for _ in range(10):
            next_turn(echo.clock)
            replies += echo.take()
        self.assertEqual(replies, (STAMP + b"\n") * 5000 + STAMP + b"partial\n" + STAMP + b"next\n")

    def test_pipelined_chunk_in_one_write(self) -> None:
        """
        A chunk whose replies fit in the budget is answered in the same
        call, and reading never pauses.
        """
        echo = connected_echo(quiet=True)
        self.assertEqual(echo.send(b"a\n" * 100), (STAMP + b"a\n") * 100)
        self.assertEqual(echo.transport.producerState, "producing")

    def test_budget_for_all_connections(self) -> None:
        """
        With many connections flooding at once, all of them together make at
        most about L{TURN_BUDGET} bytes of replies per turn; the ones that
        find it spent continue on later turns, and every line is answered.
        """
        factory = make_factory(ServerConfig(quiet=True))
        echoes = [connect(factory) for _ in range(100)]
        for echo in echoes:
            echo.protocol.dataReceived(b"\n" * 4096)
        sizes = [sum(len(echo.take()) for echo in echoes)]
        while any(echo.transport.producerState == "paused" for echo in echoes):
            self.assertLessEqual(len(sizes), 1000)
            next_turn(factory.clock)  # type: ignore[arg-type]
            sizes.append(sum(len(echo.take()) for echo in echoes))
        self.assertLessEqual(max(sizes), TURN_BUDGET + REPLY_BUDGET)
        self.assertEqual(sum(sizes), 100 * 4096 * len(STAMP + b"\n"))
        self.assertGreater(len(sizes), 10)

    def test_budget_exactly(self) -> None:
        """
        Each reply counts its prefix, its line and two bytes for its
        terminator against L{REPLY_BUDGET}: the turn ends with the reply that
        leaves no room, not one before or after.
        """
        prefix = len(STAMP)
        for per_reply, expected in ((64, REPLY_BUDGET // 64), (151, REPLY_BUDGET // 151 + 1)):
            echo = connected_echo(quiet=True)
            line = b"x" * (per_reply - prefix - 2)
            echo.protocol.dataReceived((line + b"\r\n") * (expected + 10))
            self.assertEqual(echo.take().count(b"\n"), expected, per_reply)
            self.assertEqual(echo.transport.producerState, "paused")

    def test_lost_while_behind(self) -> None:
        """
        A connection lost while it waits for a later turn answers nothing
        more when that turn comes.
        """
        factory = make_factory(ServerConfig(quiet=True))
        echo = connect(factory)
        echo.protocol.dataReceived(b"\n" * 4096)
        echo.take()
        echo.lose()
        next_turn(factory.clock)  # type: ignore[arg-type]
        self.assertEqual(echo.take(), b"")
        self.assertEqual(factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]


class TurnSchedulerTests(SynchronousTestCase):
    """
    The factory's turns: each gives L{TURN_BUDGET} to the connections that
    waited first; those it does not reach wait for the next turn, at once.
    """

    class Waiting:
        """
        A connection waiting for a turn, that spends C{cost} of it and then
        has nothing more to do.
        """

        def __init__(self, factory: object, cost: int, log: list[str], name: str) -> None:
            self.factory, self.cost, self.log, self.name = factory, cost, log, name

        def continue_turn(self) -> None:
            self.factory.turn_room -= self.cost  # type: ignore[attr-defined]
            self.log.append(self.name)

    def turns(self, *costs: int) -> list[list[str]]:
        """
        Which of the connections, with these costs, ran in each turn.
        """
        factory = make_factory()
        log: list[str] = []
        for name, cost in enumerate(costs):
            factory.continue_later(self.Waiting(factory, cost, log, str(name)))  # type: ignore[arg-type]
        turns = []
        while factory.clock.getDelayedCalls():  # type: ignore[attr-defined]
            self.assertLessEqual(len(turns), len(costs))
            self.assertEqual([c.getTime() for c in factory.clock.getDelayedCalls()], [EXAMPLE_TIME])  # type: ignore[attr-defined]
            next_turn(factory.clock)  # type: ignore[arg-type]
            turns.append(log[:])
            log.clear()
        return turns

    def test_budget_spent(self) -> None:
        """
        A turn ends once its budget is spent, exactly; the rest run next.
        """
        self.assertEqual(self.turns(TURN_BUDGET, 1), [["0"], ["1"]])
        self.assertEqual(self.turns(TURN_BUDGET - 1, 1, 1), [["0", "1"], ["2"]])
        self.assertEqual(self.turns(TURN_BUDGET // 2, TURN_BUDGET, 5, 5), [["0", "1"], ["2", "3"]])


class ShutdownWindowTests(SynchronousTestCase):
    """
    After a shutdown begins, a connection gets C{shutdown_window} seconds to
    finish; then it answers every line received, closes its sending side
    and drops later input.
    """

    def test_lock_step_client_finished(self) -> None:
        """
        A client that never goes quiet gets its replies until the window
        ends; then the connection half-closes, its unfinished line and later
        input unanswered.
        """
        factory = make_factory(ServerConfig(quiet=True, drain_quiet=0.5, shutdown_window=1))
        echo = connect(factory, transport_type=TCPStringTransport)
        factory.drain()
        for n in range(4):  # never quiet for drain_quiet
            self.assertEqual(echo.send(b"%d\n" % n), STAMP + b"%d\n" % n)
            factory.clock.advance(0.225)  # type: ignore[attr-defined]
        self.assertEqual(echo.send(b"4\nin fli"), STAMP + b"4\n")
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        self.assertFalse(transport.write_closed)
        factory.clock.advance(0.2)  # type: ignore[attr-defined]
        self.assertTrue(transport.write_closed)
        self.assertEqual(echo.send(b"ght\nlater\n"), b"")
        self.assertEqual(echo.half_close(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(echo.protocol.ending, Ending.SHUTDOWN)

    def test_lagging_client_drained(self) -> None:
        """
        A connection whose client lags behind on its replies when the window
        ends is left to drain: its held lines are answered once the client
        reads, and it closes once quiet.
        """
        factory = make_factory(ServerConfig(quiet=True, shutdown_window=1, drain_quiet=0.5))
        echo = connect(factory, transport_type=TCPStringTransport)
        echo.protocol.pauseProducing()
        self.assertEqual(echo.send(b"a\nb\n"), b"")
        factory.drain()
        factory.clock.advance(1.2)  # type: ignore[attr-defined]
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        self.assertFalse(transport.write_closed)
        echo.protocol.resumeProducing()
        later = b"[Thu Nov 26 14:09:49 2026] "
        self.assertEqual(echo.take(), later + b"a\n" + later + b"b\n")
        self.assertEqual(echo.send(b"c\n"), later + b"c\n")
        self.assertFalse(transport.write_closed)
        factory.clock.advance(0.5)  # type: ignore[attr-defined]
        self.assertTrue(transport.write_closed)

    def test_window_timer_cancelled(self) -> None:
        """
        When the last connection closes, the window's timer goes too.
        """
        factory = make_factory(ServerConfig(quiet=True))
        echo = connect(factory, transport_type=ClosingStringTransport)
        d = factory.drain()
        echo.transport.loseConnection()
        self.successResultOf(d)
        self.assertEqual(factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]


class ReferenceCycleTests(SynchronousTestCase):
    """
    A closed connection is freed at once, without the cycle collector.
    """

    @skipIf(platform.python_implementation() == "PyPy", "PyPy has no reference counting: only its collector frees")
    def test_freed_without_collector(self) -> None:
        """
        With C{gc} disabled, a connection that has closed (on each kind of
        in-memory transport) is freed as soon as the test lets go of it.
        """
        for kind in ({}, {"transport_type": TCPStringTransport}, {"transport_type": ClosingStringTransport}):
            gc.disable()
            self.addCleanup(gc.enable)
            factory = make_factory(ServerConfig(quiet=True))
            echo = connect(factory, **kind)  # type: ignore[arg-type]
            echo.send(b"a\nb\npartial")
            echo.protocol.pauseProducing()
            echo.send(b"held\n")
            echo.lose()
            protocol, transport = weakref.ref(echo.protocol), weakref.ref(echo.transport)
            del echo
            self.assertIsNone(protocol(), kind)
            self.assertIsNone(transport(), kind)


class BusyOverTLSTests(SynchronousTestCase):
    """
    Over TLS, a connection refused as busy is closed within the linger, and
    not reported as a client that did not read its replies.
    """

    def test_refused_quickly(self) -> None:
        """
        The refused connection is aborted C{linger} seconds after the refusal
        if it has not closed, with no warning beyond the refusal.
        """
        factory = make_factory(ServerConfig(max_connections=1, linger=2, close_timeout=10))
        connect(factory)
        with capturedLogs() as events:
            protocol = factory.buildProtocol(EXAMPLE_PEER)
            transport = StringTransport(peerAddress=EXAMPLE_PEER)
            alsoProvides(transport, INegotiated)
            protocol.makeConnection(transport)
            self.assertEqual(transport.value(), BUSY)
            factory.clock.advance(2)  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnected)
        [refusal] = protocol_events(events)
        self.assertIn("busy", refusal["log_format"])
