"""
Tests for L{tsecho.framing.LineFramer}: bytes in, lines out, in any chunking.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from unittest import skipIf

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase

from tsecho.framing import LineFramer
from tsecho.wire import CRLF, LF

Line = tuple[bytes, bytes]


class RecordingFramer(LineFramer):
    """
    A L{LineFramer} that records each line with its ending, and each refusal.

    @ivar on_line: called after a line is recorded, so a test can act from
        inside C{lineReceived} (pause, disconnect, feed more data).
    @ivar close_on_too_long: whether a refusal closes the transport, as
        L{LineReceiver.lineLengthExceeded} does.
    """

    close_on_too_long = True

    def __init__(self, max_length: int = 16384) -> None:
        super().__init__()
        self.MAX_LENGTH = max_length
        self.lines: list[Line] = []
        self.too_long: list[bytes] = []
        self.on_line: Callable[[bytes], None] = lambda line: None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append((line, self.line_ending))
        self.on_line(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.too_long.append(line)
        if self.close_on_too_long:
            assert self.transport is not None
            self.transport.loseConnection()


def connected(max_length: int = 16384) -> tuple[RecordingFramer, StringTransport]:
    """
    Return a L{RecordingFramer} connected to a new L{StringTransport}.
    """
    framer = RecordingFramer(max_length)
    transport = StringTransport()
    framer.makeConnection(transport)
    return framer, transport


def slices(data: bytes, size: int) -> Iterator[bytes]:
    """
    Cut C{data} into consecutive pieces of C{size} bytes (the last may be shorter).
    """
    for start in range(0, len(data), size):
        yield data[start : start + size]


def feed(data: bytes, size: int, max_length: int = 16384) -> RecordingFramer:
    """
    Feed C{data} to a new framer in slices of C{size} bytes and return it.

    Like a real transport, stop delivering once the transport is disconnecting.
    """
    framer, transport = connected(max_length)
    for piece in slices(data, size):
        if transport.disconnecting:
            break
        framer.dataReceived(piece)
    return framer


# Every kind of line the framer must get right, in one stream.
MIXED = b"lf\ncrlf\r\n\n\r\nlone\rcr inside\n\r\r\ndouble cr\r\r\nnul\x00 and high \x80\xff\xfe bytes\r\n\r\nlast\n"
MIXED_LINES: list[Line] = [
    (b"lf", LF),
    (b"crlf", CRLF),
    (b"", LF),
    (b"", CRLF),
    (b"lone\rcr inside", LF),
    (b"\r", CRLF),
    (b"double cr\r", CRLF),
    (b"nul\x00 and high \x80\xff\xfe bytes", CRLF),
    (b"", CRLF),
    (b"last", LF),
]


class TerminatorTests(SynchronousTestCase):
    """
    Both C{\\n} and C{\\r\\n} end a line; C{line_ending} tells which one did.
    """

    def test_lf(self) -> None:
        """
        C{\\n} ends a line, and C{line_ending} is C{\\n}.
        """
        framer, _ = connected()
        framer.dataReceived(b"hello\n")
        self.assertEqual(framer.lines, [(b"hello", LF)])

    def test_crlf(self) -> None:
        """
        C{\\r\\n} ends a line; the C{\\r} is not part of it; C{line_ending} is C{\\r\\n}.
        """
        framer, _ = connected()
        framer.dataReceived(b"hello\r\n")
        self.assertEqual(framer.lines, [(b"hello", CRLF)])

    def test_ending_per_line(self) -> None:
        """
        Each line has its own ending, even when both kinds share one chunk.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\r\nb\nc\r\nd\n")
        self.assertEqual(framer.lines, [(b"a", CRLF), (b"b", LF), (b"c", CRLF), (b"d", LF)])

    def test_lone_cr_inside(self) -> None:
        """
        A C{\\r} not followed by C{\\n} is an ordinary byte of the line.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\rb\r\rc\n")
        self.assertEqual(framer.lines, [(b"a\rb\r\rc", LF)])

    def test_cr_at_chunk_end_then_other_byte(self) -> None:
        """
        A C{\\r} at the end of a chunk stays a byte of the line when the next
        chunk does not start with C{\\n}.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\r")
        framer.dataReceived(b"b\n")
        self.assertEqual(framer.lines, [(b"a\rb", LF)])

    def test_cr_at_chunk_end_then_lf(self) -> None:
        """
        A C{\\r} at the end of a chunk and a C{\\n} at the start of the next
        make one C{\\r\\n} terminator.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\r")
        self.assertEqual(framer.lines, [])
        framer.dataReceived(b"\nb\n")
        self.assertEqual(framer.lines, [(b"a", CRLF), (b"b", LF)])

    def test_cr_cr_lf(self) -> None:
        """
        In C{\\r\\r\\n}, only the last C{\\r} belongs to the terminator.
        """
        framer, _ = connected()
        framer.dataReceived(b"x\r\r\n\r\r\n")
        self.assertEqual(framer.lines, [(b"x\r", CRLF), (b"\r", CRLF)])

    def test_all_bytes(self) -> None:
        """
        Every byte value but C{\\n} (NUL, controls, bytes >= 0x80, invalid
        UTF-8) is delivered unchanged.
        """
        line = bytes(b for b in range(256) if b != 0x0A)
        framer, _ = connected()
        framer.dataReceived(line + b"\r\n" + line + b"\n")
        self.assertEqual(framer.lines, [(line, CRLF), (line, LF)])

    def test_empty_lines(self) -> None:
        """
        Empty lines are lines, with either ending.
        """
        framer, _ = connected()
        framer.dataReceived(b"\n\r\n\n")
        self.assertEqual(framer.lines, [(b"", LF), (b"", CRLF), (b"", LF)])

    def test_many_lines_in_one_chunk(self) -> None:
        """
        Every line of one large chunk is delivered, in order.
        """
        expected = [(b"line %d" % i, CRLF if i % 2 else LF) for i in range(5000)]
        framer, _ = connected()
        framer.dataReceived(b"".join(line + ending for line, ending in expected))
        self.assertEqual(framer.lines, expected)

    def test_every_slice_size(self) -> None:
        """
        However the stream is cut into chunks, from one byte per call to all
        of it at once, the same lines come out.
        """
        for size in range(1, len(MIXED) + 1):
            framer = feed(MIXED, size)
            self.assertEqual(framer.lines, MIXED_LINES, f"slice size {size}")
            self.assertEqual(framer.too_long, [], f"slice size {size}")

    def test_unterminated_is_buffered(self) -> None:
        """
        Bytes without a terminator wait for the rest of their line.
        """
        framer, _ = connected()
        framer.dataReceived(b"par")
        framer.dataReceived(b"tial")
        framer.dataReceived(b"")
        self.assertEqual(framer.lines, [])
        framer.dataReceived(b" line\r\nnext")
        self.assertEqual(framer.lines, [(b"partial line", CRLF)])


class MaxLengthTests(SynchronousTestCase):
    """
    C{MAX_LENGTH} bounds a line, not counting its terminator.
    """

    N = 10

    def test_exactly_limit(self) -> None:
        """
        A line of exactly C{MAX_LENGTH} bytes is accepted with either
        terminator, however it is chunked.
        """
        line = b"x" * self.N
        for ending in (LF, CRLF):
            data = b"a\n" + line + ending + b"b\n"
            for size in range(1, len(data) + 1):
                framer = feed(data, size, self.N)
                self.assertEqual(framer.lines, [(b"a", LF), (line, ending), (b"b", LF)], f"{ending!r} size {size}")
                self.assertEqual(framer.too_long, [])

    def test_one_over_limit(self) -> None:
        """
        A line of C{MAX_LENGTH + 1} bytes is refused with either terminator,
        however it is chunked; lines before it are delivered, none after it.
        """
        line = b"y" * (self.N + 1)
        for ending in (LF, CRLF):
            data = b"a\n" + line + ending + b"b\n"
            for size in range(1, len(data) + 1):
                framer = feed(data, size, self.N)
                self.assertEqual(framer.lines, [(b"a", LF)], f"{ending!r} size {size}")
                self.assertEqual(len(framer.too_long), 1, f"{ending!r} size {size}")
                self.assertTrue(framer.too_long[0].startswith(b"y" * self.N))

    def test_refused_in_one_chunk(self) -> None:
        """
        A terminated over-long line in one chunk is handed to
        C{lineLengthExceeded} whole, without its terminator.
        """
        framer, _ = connected(self.N)
        framer.dataReceived(b"z" * (self.N + 1) + b"\r\nlater\n")
        self.assertEqual(framer.too_long, [b"z" * (self.N + 1)])
        self.assertEqual(framer.lines, [])

    def test_unterminated_refused_once_past_limit(self) -> None:
        """
        An unterminated run is refused as soon as it passes the limit: one
        byte at a time, the refusal comes with byte C{MAX_LENGTH + 1}.
        """
        framer, _ = connected(self.N)
        for _ in range(self.N):
            framer.dataReceived(b"u")
        self.assertEqual(framer.too_long, [])
        framer.dataReceived(b"u")
        self.assertEqual(framer.too_long, [b"u" * (self.N + 1)])

    def test_unterminated_refused_in_one_chunk(self) -> None:
        """
        One chunk of C{MAX_LENGTH + 1} bytes without a terminator is refused
        at once, also after complete lines in the same chunk.
        """
        framer, _ = connected(self.N)
        framer.dataReceived(b"ok\n" + b"v" * (self.N + 1))
        self.assertEqual(framer.lines, [(b"ok", LF)])
        self.assertEqual(framer.too_long, [b"v" * (self.N + 1)])

    def test_limit_then_cr_pending(self) -> None:
        """
        C{MAX_LENGTH} bytes and a C{\\r} are not refused yet: the C{\\n} that
        makes the C{\\r} a terminator may still come.  When it does, the line
        is accepted.
        """
        framer, _ = connected(self.N)
        framer.dataReceived(b"w" * self.N)
        framer.dataReceived(b"\r")
        self.assertEqual(framer.too_long, [])
        framer.dataReceived(b"\n")
        self.assertEqual(framer.lines, [(b"w" * self.N, CRLF)])
        self.assertEqual(framer.too_long, [])

    def test_limit_then_cr_then_other_byte(self) -> None:
        """
        When the byte after the pending C{\\r} is not C{\\n}, the C{\\r} is part
        of the line, which is now too long.
        """
        framer, _ = connected(self.N)
        framer.dataReceived(b"w" * self.N + b"\r")
        framer.dataReceived(b"w")
        self.assertEqual(framer.too_long, [b"w" * self.N + b"\rw"])

    def test_limit_then_two_crs(self) -> None:
        """
        C{MAX_LENGTH} bytes and two C{\\r} can no longer be an acceptable line.
        """
        framer, _ = connected(self.N)
        framer.dataReceived(b"w" * self.N + b"\r\r")
        self.assertEqual(framer.too_long, [b"w" * self.N + b"\r\r"])

    def test_buffer_cleared_after_refusal(self) -> None:
        """
        After a refusal the buffered bytes are gone; later data starts afresh.
        """
        framer, _ = connected(self.N)
        framer.close_on_too_long = False
        framer.dataReceived(b"q" * (self.N + 1))
        self.assertEqual(framer.clearLineBuffer(), b"")
        framer.dataReceived(b"fresh\n")
        self.assertEqual(framer.lines, [(b"fresh", LF)])


class PauseTests(SynchronousTestCase):
    """
    C{pauseProducing} holds lines back; C{resumeProducing} delivers them in order.
    """

    def test_pause_in_line_received(self) -> None:
        """
        Pausing from C{lineReceived} holds the rest of the chunk, and data that
        arrives meanwhile, until C{resumeProducing}; then all of it comes, in
        order, and the transport is resumed too.
        """
        framer, transport = connected()
        framer.on_line = lambda line: framer.pauseProducing() if line == b"a" else None
        framer.dataReceived(b"a\nb\r\nc")
        self.assertEqual(framer.lines, [(b"a", LF)])
        self.assertEqual(transport.producerState, "paused")
        framer.dataReceived(b"d\n")
        framer.dataReceived(b"")
        framer.dataReceived(b"e\n")
        self.assertEqual(framer.lines, [(b"a", LF)])
        framer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", CRLF), (b"cd", LF), (b"e", LF)])

    def test_pause_on_last_line(self) -> None:
        """
        Pausing on the last complete line of a chunk holds its unfinished tail.
        """
        framer, _ = connected()
        framer.on_line = lambda line: framer.pauseProducing()
        framer.dataReceived(b"a\nhalf")
        framer.on_line = lambda line: None
        framer.dataReceived(b" line\n")
        self.assertEqual(framer.lines, [(b"a", LF)])
        framer.resumeProducing()
        self.assertEqual(framer.lines, [(b"a", LF), (b"half line", LF)])

    def test_pause_on_final_line_of_chunk(self) -> None:
        """
        Pausing on a chunk's final line, with nothing after it, holds nothing
        back but later data.
        """
        framer, _ = connected()
        framer.on_line = lambda line: framer.pauseProducing()
        framer.dataReceived(b"a\n")
        self.assertEqual(framer.clearLineBuffer(), b"")
        framer.on_line = lambda line: None
        framer.dataReceived(b"b\n")
        framer.resumeProducing()
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF)])

    def test_paused_before_data(self) -> None:
        """
        Data that arrives while paused waits, whatever its chunking.
        """
        for size in range(1, len(MIXED) + 1):
            framer, _ = connected()
            framer.pauseProducing()
            for piece in slices(MIXED, size):
                framer.dataReceived(piece)
            self.assertEqual(framer.lines, [])
            framer.resumeProducing()
            self.assertEqual(framer.lines, MIXED_LINES, f"slice size {size}")

    def test_pause_again_while_resuming(self) -> None:
        """
        A pause from C{lineReceived} during C{resumeProducing} holds the rest again.
        """
        framer, _ = connected()
        framer.pauseProducing()
        framer.dataReceived(b"a\nb\n")
        framer.dataReceived(b"c\n")
        framer.on_line = lambda line: framer.pauseProducing()
        framer.resumeProducing()
        self.assertEqual(framer.lines, [(b"a", LF)])
        framer.resumeProducing()
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF)])
        framer.on_line = lambda line: None
        framer.resumeProducing()
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF), (b"c", LF)])

    def test_stop_producing(self) -> None:
        """
        C{stopProducing} stops delivery and stops the transport.
        """
        framer, transport = connected()
        framer.stopProducing()
        framer.dataReceived(b"a\n")
        self.assertEqual(framer.lines, [])
        self.assertEqual(transport.producerState, "stopped")


class ReentrancyTests(SynchronousTestCase):
    """
    C{dataReceived} called from inside C{lineReceived} keeps the byte order.
    """

    def test_reentrant_data_after_current_chunk(self) -> None:
        """
        Data fed from C{lineReceived} is framed after the rest of the chunk
        being processed, as if it had arrived after it.
        """
        framer, _ = connected()

        def more(line: bytes) -> None:
            if line == b"a":
                framer.dataReceived(b"x\ny")
                framer.dataReceived(b"\r\n")

        framer.on_line = more
        framer.dataReceived(b"a\nb\nc")
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF), (b"cx", LF), (b"y", CRLF)])

    def test_not_under_line_receivers_names(self) -> None:
        """
        L{LineFramer} replaces C{LineReceiver.dataReceived} entirely, and
        keeps its re-entrancy state under its own name: none of
        C{LineReceiver}'s private attributes is set, re-entered or not.
        """
        framer, _ = connected()
        framer.on_line = lambda line: framer.dataReceived(b"more\n") if line == b"a" else None
        framer.dataReceived(b"a\nb\n")
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF), (b"more", LF)])
        self.assertEqual([name for name in vars(framer) if name.startswith("_") and name in vars(LineReceiver)], [])

    def test_reentrant_in_every_slice_size(self) -> None:
        """
        Feeding the stream from C{lineReceived}, one slice per line, gives the
        same lines as feeding it from outside.
        """
        for size in range(1, len(MIXED) + 1):
            framer, _ = connected()
            pieces = list(slices(MIXED, size))

            def next_piece(line: bytes, framer: RecordingFramer = framer, pieces: list[bytes] = pieces) -> None:
                if pieces:
                    framer.dataReceived(pieces.pop(0))

            framer.on_line = next_piece
            # Feed until the first line is out; the rest is fed from within.
            while pieces and not framer.lines:
                framer.dataReceived(pieces.pop(0))
            while pieces:  # the stream ran dry inside lineReceived's feeding
                framer.dataReceived(pieces.pop(0))
            self.assertEqual(framer.lines, MIXED_LINES, f"slice size {size}")


class StopTests(SynchronousTestCase):
    """
    Once the transport is disconnecting, no more lines are delivered.
    """

    def test_stop_after_disconnecting(self) -> None:
        """
        Lines after the one during which the transport started disconnecting
        are not delivered.
        """
        framer, transport = connected()
        framer.on_line = lambda line: transport.loseConnection()
        framer.dataReceived(b"a\nb\nc\n")
        self.assertEqual(framer.lines, [(b"a", LF)])

    def test_stop_before_reentrant_data(self) -> None:
        """
        Data fed from C{lineReceived} is not framed once the transport is
        disconnecting.
        """
        framer, transport = connected()

        def stop(line: bytes) -> None:
            framer.dataReceived(b"x\n")
            transport.loseConnection()

        framer.on_line = stop
        framer.dataReceived(b"a\n")
        self.assertEqual(framer.lines, [(b"a", LF)])

    def test_no_transport(self) -> None:
        """
        A framer without a transport counts as stopped after each line.
        """
        framer = RecordingFramer()
        framer.dataReceived(b"a\nb\n")
        self.assertEqual(framer.lines, [(b"a", LF)])


class UnterminatedLineTests(SynchronousTestCase):
    """
    L{LineFramer.deliver_unterminated_line} delivers what is left at the end of input.
    """

    def test_final_line(self) -> None:
        """
        A non-empty final line is delivered with C{line_ending} C{b""}.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\r\nfin")
        framer.dataReceived(b"al")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [(b"a", CRLF), (b"final", b"")])
        self.assertEqual(framer.clearLineBuffer(), b"")

    def test_final_cr_is_a_byte(self) -> None:
        """
        A final C{\\r} is a byte of the final line, not a terminator.
        """
        framer, _ = connected()
        framer.dataReceived(b"end\r")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [(b"end\r", b"")])

    def test_nothing_left(self) -> None:
        """
        With nothing buffered, nothing is delivered.
        """
        framer, _ = connected()
        framer.dataReceived(b"a\n")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [(b"a", LF)])

    def test_while_paused(self) -> None:
        """
        Lines held by a pause are delivered too, then the final line.
        """
        framer, _ = connected()
        framer.pauseProducing()
        framer.dataReceived(b"a\nb\r\nc")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", CRLF), (b"c", b"")])

    def test_not_after_stop(self) -> None:
        """
        Once the transport is disconnecting, the final line is not delivered.
        """
        framer, transport = connected()
        framer.dataReceived(b"rest")
        transport.loseConnection()
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [])

    def test_over_limit_refused(self) -> None:
        """
        A final line of C{MAX_LENGTH} bytes and a C{\\r} is one byte over the
        limit (the C{\\r} is a byte of the line), so it is refused.
        """
        framer, _ = connected(4)
        framer.dataReceived(b"abcd\r")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [])
        self.assertEqual(framer.too_long, [b"abcd\r"])


class BufferTests(SynchronousTestCase):
    """
    L{LineFramer.clearLineBuffer} and L{LineFramer.setRawMode}.
    """

    def test_clear_line_buffer(self) -> None:
        """
        C{clearLineBuffer} returns the unfinished line and held data, and
        forgets them; what comes next is held and cleared as before.
        """
        framer, _ = connected()
        framer.dataReceived(b"unfinished")
        framer.pauseProducing()
        framer.dataReceived(b" more\nnext\n")
        self.assertEqual(framer.clearLineBuffer(), b"unfinished more\nnext\n")
        framer.resumeProducing()
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [])
        framer.dataReceived(b"a\nsecond")
        self.assertEqual(framer.clearLineBuffer(), b"second")
        self.assertEqual(framer.lines, [(b"a", LF)])

    def test_no_raw_mode(self) -> None:
        """
        C{setRawMode} raises: the framer is line-only.
        """
        framer, _ = connected()
        error = self.assertRaises(NotImplementedError, framer.setRawMode)
        self.assertEqual(str(error), "LineFramer has no raw mode")

    def test_transport_without_disconnecting(self) -> None:
        """
        A transport that has no C{disconnecting} attribute is not one that
        is disconnecting: every line is delivered.
        """
        framer = RecordingFramer()
        framer.makeConnection(object())  # type: ignore[arg-type]
        framer.dataReceived(b"a\nb\nlast")
        framer.deliver_unterminated_line()
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF), (b"last", b"")])


class CompactTests(SynchronousTestCase):
    """
    What the framer holds is about the size of the input it holds.
    """

    @skipIf(platform.python_implementation() != "CPython", "tracemalloc measures CPython's heap")
    def test_dripped_line_compact(self) -> None:
        """
        A 16,000-byte line fed one byte per call (each byte a bytes object of
        its own, as each read makes) is held in about its own size.
        """
        framer, _ = connected()
        drops = [bytes(bytearray(b"d")) for _ in range(16000)]
        import tracemalloc  # CPython only (PyPy has no _tracemalloc)

        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.get_traced_memory()[0]
        for drop in drops:
            framer.dataReceived(drop)
        held = tracemalloc.get_traced_memory()[0] - before
        self.assertLessEqual(held, 16000 * 5 // 4 + 4096)
        framer.dataReceived(b"\n")
        self.assertEqual(framer.lines, [(b"d" * 16000, LF)])

    def test_held_input_is_one_object(self) -> None:
        """
        Input held while paused is kept as bytes, not as a list of lines.
        """
        framer, _ = connected()
        framer.on_line = lambda line: framer.pauseProducing()
        framer.dataReceived(b"\n" * 65536)
        self.assertEqual(len(framer.lines), 1)
        self.assertTrue(framer.has_unframed_input())
        self.assertEqual(framer.clearLineBuffer(), b"\n" * 65535)


class TwistedsReceiver(LineReceiver):
    """
    Twisted's L{LineReceiver}, for comparison: records each line, and
    returns true from C{lineReceived} for the line C{stop}.
    """

    delimiter = LF

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> bool:
        self.lines.append(line)
        return line == b"stop"


class LineReceiverDifferenceTests(SynchronousTestCase):
    """
    Where L{LineFramer} departs from L{LineReceiver}'s contract (README,
    "Framing contract"); each test shows Twisted's behaviour beside it.
    """

    def test_true_return_stops_for_good(self) -> None:
        """
        A true return from C{lineReceived} stops delivery for good: from then
        on each later chunk delivers only the oldest line waiting, then stops
        again.  L{LineReceiver} stops only the rest of the current chunk, and
        delivers all of it with the next one.
        """

        class Halting(RecordingFramer):
            def lineReceived(self, line: bytes) -> bool:
                super().lineReceived(line)
                return line == b"stop"

        framer = Halting()
        framer.makeConnection(StringTransport())
        framer.dataReceived(b"stop\nb\n")
        self.assertEqual(framer.lines, [(b"stop", LF)])
        framer.dataReceived(b"c\nd\n")
        self.assertEqual(framer.lines, [(b"stop", LF), (b"b", LF)])

        receiver = TwistedsReceiver()
        receiver.makeConnection(StringTransport())
        receiver.dataReceived(b"stop\nb\n")
        receiver.dataReceived(b"c\n")
        self.assertEqual(receiver.lines, [b"stop", b"b", b"c"])

    def test_no_transport_one_line(self) -> None:
        """
        Without a transport, L{LineFramer} delivers one line per chunk and
        keeps the rest; L{LineReceiver} delivers every line.
        """
        framer = RecordingFramer()
        framer.dataReceived(b"a\nb\n")
        self.assertEqual(framer.lines, [(b"a", LF)])
        self.assertTrue(framer.has_unframed_input())
        framer.dataReceived(b"c\n")
        self.assertEqual(framer.lines, [(b"a", LF), (b"b", LF)])

        receiver = TwistedsReceiver()
        receiver.dataReceived(b"a\nb\nc\n")
        self.assertEqual(receiver.lines, [b"a", b"b", b"c"])
