"""
Bytes in, lines out: L{LineFramer}, a L{LineReceiver} that costs linear time.

Twisted's own L{LineReceiver} splits one line at a time off the front of its
buffer (copying the rest each time: twisted#6357) and re-scans the whole
buffer on every chunk (twisted#6356), so a chunk of many lines, or one long
line trickled in tiny chunks, costs the square of its size.  L{LineFramer}
keeps the same contract (C{lineReceived} per line, C{MAX_LENGTH},
C{lineLengthExceeded}, C{sendLine}, pausing) and does a constant amount of
work per byte: each chunk is split once, and an unfinished line is kept as a
list of pieces that is joined once, when its terminator arrives.

Both C{\\n} and C{\\r\\n} end a line; L{LineFramer.line_ending} tells which
one ended the line being delivered, so replies can mirror it.  A C{\\r} that
is not followed by C{\\n} is an ordinary byte of the line.
"""

from __future__ import annotations

from twisted.protocols.basic import LineReceiver

from tsecho.wire import CRLF, LF

CR = b"\r"


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
    _busyReceiving = False

    def __init__(self) -> None:
        self._pieces: list[bytes] = []  # the unfinished line, in pieces
        self._pieces_length = 0
        # Chunks waiting while paused: rare and few, so a list (56 bytes, where
        # an empty deque costs 760 bytes per idle connection).
        self._held: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        """
        Deliver every complete line of C{data}, in order, to C{lineReceived}.
        """
        if self._busyReceiving or self.paused or self._held:
            # Re-entered from lineReceived, paused, or behind earlier data:
            # keep order by queueing, and let the outer call work through it.
            if data:
                self._held.append(data)
            if self._busyReceiving or self.paused:
                return
            data = self._held.pop(0)
        self._busyReceiving = True
        try:
            self._frame(data)
            while self._held and not self.paused and not self._stopped():
                self._frame(self._held.pop(0))
        finally:
            self._busyReceiving = False

    def _frame(self, data: bytes) -> None:
        if LF not in data:
            if data:
                self._pieces.append(data)
                self._pieces_length += len(data)
                if self._pieces_length > self.MAX_LENGTH and self._unfinished_too_long():
                    self._exceeded(b"".join(self._pieces))
            return
        lines = data.split(LF)
        tail = lines.pop()
        if self._pieces:
            self._pieces.append(lines[0])
            lines[0] = b"".join(self._pieces)
            self._pieces = []
            self._pieces_length = 0
        limit = self.MAX_LENGTH
        for index, terminated in enumerate(lines):
            if terminated[-1:] == CR:
                line = terminated[:-1]
                self.line_ending = CRLF
            else:
                line = terminated
                self.line_ending = LF
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
                rest = lines[index + 1 :]
                if rest or tail:
                    rest.append(tail)
                    self._held.insert(0, LF.join(rest))
                return
        if tail:
            self._frame(tail)

    def _unfinished_too_long(self) -> bool:
        """
        Whether the unfinished line can no longer become an acceptable line.

        One byte over the limit is still fine if it is a C{\\r}: the C{\\n}
        that makes it a C{\\r\\n} terminator may be in the next chunk.
        """
        if self._pieces_length > self.MAX_LENGTH + 1:
            return True
        return self._pieces[-1][-1:] != CR

    def _exceeded(self, line: bytes) -> None:
        self.clearLineBuffer()
        self.lineLengthExceeded(line)

    def _stopped(self) -> bool:
        return self._halted or self.transport is None or bool(getattr(self.transport, "disconnecting", False))

    def deliver_unterminated_line(self) -> None:
        """
        At the end of input, deliver what is buffered, including a final line
        that has no terminator (with L{line_ending} C{b""}), if it is not empty.
        """
        self.paused = False
        self.dataReceived(b"")
        if self._pieces and not self._stopped():
            line = b"".join(self._pieces)
            self._pieces = []
            self._pieces_length = 0
            self.line_ending = b""
            if len(line) > self.MAX_LENGTH:  # a last b"\r" is no terminator now
                self._exceeded(line)
            else:
                self.lineReceived(line)

    def clearLineBuffer(self) -> bytes:
        """
        Forget buffered data and return it.
        """
        data = b"".join([*self._pieces, *self._held])
        self._pieces = []
        self._pieces_length = 0
        self._held.clear()
        return data

    def setRawMode(self) -> None:
        """
        Not supported: L{LineFramer} is for line-only protocols.
        """
        raise NotImplementedError("LineFramer has no raw mode")
