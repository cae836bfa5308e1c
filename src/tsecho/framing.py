"""
Bytes in, lines out: L{LineFramer}, a L{LineReceiver} that costs linear time
and holds what it has not framed compactly.

Twisted's own L{LineReceiver} splits one line at a time off the front of its
buffer (copying the rest each time: twisted#6357) and re-scans the whole
buffer on every chunk (twisted#6356), so a chunk of many lines, or one long
line trickled in tiny chunks, costs the square of its size.  L{LineFramer}
keeps the same contract (C{lineReceived} per line, C{MAX_LENGTH},
C{lineLengthExceeded}, C{sendLine}, pausing) and does a constant amount of
work per byte: each chunk is split once, at most L{SPLIT_AT_MOST} lines at a
time, and an unfinished line grows in place in a C{bytearray}.

What it holds is compact whatever the input: the unfinished line (about its
own size, however many chunks it came in) and, while paused, the input not
framed yet as one C{bytes} object (never a list of lines).

Both C{\\n} and C{\\r\\n} end a line; L{LineFramer.line_ending} tells which
one ended the line being delivered, so replies can mirror it.  A C{\\r} that
is not followed by C{\\n} is an ordinary byte of the line.
"""

from __future__ import annotations

from twisted.protocols.basic import LineReceiver

from tsecho.wire import CRLF, LF

CR = b"\r"


SPLIT_AT_MOST = 1024
"""
Lines split off a chunk at a time: a chunk of 65,536 empty lines is never a
list of 65,536 lines.
"""


class LineFramer(LineReceiver):
    """
    A line-mode-only L{LineReceiver} that accepts C{\\n} and C{\\r\\n} endings.

    @ivar MAX_LENGTH: the longest line accepted, not counting its terminator.
        A longer line, or an unterminated run of bytes that can no longer
        become an acceptable line, is handed to L{lineLengthExceeded}.
    @ivar line_ending: the terminator of the line being delivered to
        C{lineReceived}: C{b"\\r\\n"}, C{b"\\n"}, or C{b""} for the final
        unterminated line that L{deliver_unterminated_line} delivers.
    """

    line_ending: bytes = CRLF
    _halted = False
    _delivering = False  # inside dataReceived: a call from lineReceived only queues its data
    _unparsed = b""  # received but not framed yet (while paused): it continues _partial

    def __init__(self) -> None:
        self._partial = bytearray()  # the unfinished line, grown in place

    def dataReceived(self, data: bytes) -> None:
        """
        Deliver every complete line of C{data}, in order, to C{lineReceived}.
        """
        if self._delivering or self.paused or self._unparsed:
            # Re-entered from lineReceived, paused, or behind earlier data:
            # keep order by queueing, and let the outer call work through it.
            self._unparsed += data
            if self._delivering or self.paused:
                return
            data, self._unparsed = self._unparsed, b""
        self._delivering = True
        try:
            self._frame(data)
            while self._unparsed and not self.paused and not self._stopped():
                data, self._unparsed = self._unparsed, b""
                self._frame(data)
        finally:
            self._delivering = False

    def _frame(self, data: bytes) -> None:
        """
        Deliver the lines of C{data} (it continues the unfinished line) until done or stopped; hold the rest.
        """
        limit = self.MAX_LENGTH
        while data:  # (what is left after a chunk's last terminator is often nothing)
            lines = data.split(LF, SPLIT_AT_MOST)
            data = lines.pop()  # after the last terminator split off
            if not lines:  # no terminator: all of it continues the unfinished line
                self._partial += data
                if len(self._partial) > limit and self._unfinished_too_long():
                    self._exceeded(bytes(self._partial))
                return
            if self._partial:
                lines[0] = b"".join((self._partial, lines[0]))
                self._partial.clear()
            for index, terminated in enumerate(lines):
                if terminated[-1:] == CR:
                    line, self.line_ending = terminated[:-1], CRLF
                else:
                    line, self.line_ending = terminated, LF
                if len(line) > limit:
                    self._exceeded(line)
                    return
                if self.lineReceived(line):  # LineReceiver's contract: a true result stops delivery
                    self._halted = True
                if (  # paused, or _stopped(), inlined: this runs per line
                    self.paused
                    or self._halted
                    or (transport := self.transport) is None
                    or getattr(transport, "disconnecting", False)
                ):
                    self._hold(lines[index + 1 :], data)
                    return

    def _hold(self, lines: list[bytes], tail: bytes) -> None:
        """
        Delivery stopped: keep the C{lines} not delivered and the C{tail}
        after them, unframed, ahead of what was held already.
        """
        if lines or tail:
            lines.append(tail)
            self._unparsed = LF.join(lines) + self._unparsed

    def _unfinished_too_long(self) -> bool:
        """
        Whether the unfinished line can no longer become an acceptable line.

        One byte over the limit is still fine if it is a C{\\r}: the C{\\n}
        that makes it a C{\\r\\n} terminator may be in the next chunk.
        """
        if len(self._partial) > self.MAX_LENGTH + 1:
            return True
        return self._partial[-1:] != CR

    def _exceeded(self, line: bytes) -> None:
        self.clearLineBuffer()
        self.lineLengthExceeded(line)

    def _stopped(self) -> bool:
        return self._halted or self.transport is None or bool(getattr(self.transport, "disconnecting", False))

    def has_unframed_input(self) -> bool:
        """
        Whether input is held that may hold complete lines not delivered yet
        (kept back by a pause).
        """
        return bool(self._unparsed)

    def deliver_unterminated_line(self) -> None:
        """
        At the end of input, deliver what is buffered, including a final line
        that has no terminator (with L{line_ending} C{b""}), if it is not empty.
        """
        self.paused = False
        LineFramer.dataReceived(self, b"")  # the held input (a subclass may drop new input by now)
        if self._partial and not self._stopped():
            line = bytes(self._partial)
            self._partial.clear()
            self.line_ending = b""
            if len(line) > self.MAX_LENGTH:  # a last b"\r" is no terminator now
                self._exceeded(line)
            else:
                self.lineReceived(line)

    def clearLineBuffer(self) -> bytes:
        """
        Forget buffered data and return it.
        """
        if not self._partial and not self._unparsed:
            return b""
        data = b"".join((self._partial, self._unparsed))
        self._partial.clear()
        self._unparsed = b""
        return data

    def setRawMode(self) -> None:
        """
        Not supported: L{LineFramer} is for line-only protocols.
        """
        raise NotImplementedError("LineFramer has no raw mode")
