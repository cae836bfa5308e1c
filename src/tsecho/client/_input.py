"""
Messages from standard input: L{InputLines} cuts bytes into messages,
L{StdinReader} feeds it from a file descriptor without blocking the reactor.

L{StdinReader} reads in a daemon thread rather than through
L{twisted.internet.stdio.StandardIO}, because C{StandardIO} switches its
descriptors to non-blocking mode: on a terminal, standard input and standard
output share one open file, so our own output (and the shell's, after we
exit) could then fail with C{EAGAIN}.  A thread that only ever calls
C{os.read} works the same on terminals, pipes, files and C{/dev/null}, and
holds no Python-level lock that could deadlock at exit.  To the protocol it
looks like any push producer: C{pauseProducing}, C{resumeProducing},
C{stopProducing}, and C{connectionLost} at end of input.

Back-pressure is exact: the thread reads a chunk only once the protocol has
taken the previous one and is not paused, so at most one chunk is ever on its
way to the reactor, and L{InputLines} hands out no line while paused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol as TypingProtocol
from typing import cast

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, IReactorFromThreads, ITransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tsecho.client._errors import ClientError
from tsecho.client._stream import MAX_LINE
from tsecho.framing import LineFramer


class InputTooLongError(ClientError):
    """
    A line of standard input is longer than any message can be.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"a line of standard input is longer than {limit} bytes")


class InputUnreadableError(ClientError):
    """
    Standard input could not be read.
    """

    def __init__(self, why: str) -> None:
        super().__init__(f"cannot read standard input: {why}")


class MessageSink(TypingProtocol):
    """
    Where L{InputLines} sends what it reads.
    """

    def message(self, message: bytes) -> None:
        """
        One more message to send.
        """

    def end_of_input(self, error: ClientError | None = None) -> None:
        """
        No more messages: the input ended (or failed, with C{error}).
        """


class InputLines(LineFramer):
    """
    Turn standard input into messages: each line (C{\\n} or C{\\r\\n} ended)
    is one, until an empty line or the end of input, as in the original
    client; a last line without a terminator counts too.
    """

    MAX_LENGTH = MAX_LINE

    def __init__(self, sink: MessageSink) -> None:
        super().__init__()
        self._sink = sink
        self.ended = False
        self._lost: Failure | None = None

    def lineReceived(self, line: bytes) -> None:
        if self.ended:
            return
        if not line:
            self._end()
            return
        self._sink.message(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._end(InputTooLongError(self.MAX_LENGTH))

    def pauseProducing(self) -> None:
        """
        Hand out no more lines (the rest of a chunk is held) and stop reading.
        """
        self.paused = True
        if self.producer is not None:
            self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        """
        Hand out the lines held back, then read more, unless those lines
        paused input again (Twisted's C{LineReceiver} would resume reading
        anyway).
        """
        self.paused = False
        self.dataReceived(b"")
        if self.paused or self.ended:
            return
        if self._lost is not None:
            self.connectionLost(self._lost)
        elif self.producer is not None:
            self.producer.resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.ended:
            return
        if self.paused and self.has_unframed_input():
            self._lost = reason  # the end comes after the lines held back
            return
        if not reason.check(ConnectionDone):
            self._end(InputUnreadableError(reason.getErrorMessage()))
            return
        self.deliver_unterminated_line()
        self._end()

    @property
    def producer(self) -> IPushProducer | None:
        """
        What feeds this protocol, to pause, resume or stop.
        """
        return cast(IPushProducer | None, self.transport)

    def stop(self) -> None:
        """
        Read no more: nothing more will be sent.
        """
        self.ended = True
        if self.producer is not None:
            self.producer.stopProducing()

    def _end(self, error: ClientError | None = None) -> None:
        if self.ended:
            return
        self.stop()
        self._sink.end_of_input(error)


@implementer(IPushProducer)
class StdinReader:
    """
    Read a file descriptor in a daemon thread and hand the bytes to a
    protocol in the reactor thread.

    Used as the protocol's transport, it only produces: the protocol may
    pause, resume and stop it; at end of input the protocol's
    C{connectionLost} gets L{ConnectionDone} (or the read error).

    @param reactor: runs the protocol's callbacks.
    @param fd: the descriptor to read, standard input by default.
    """

    disconnecting = False

    def __init__(self, reactor: IReactorFromThreads, fd: int = 0, chunk_size: int = 65536) -> None:
        self._reactor = reactor
        self._fd = fd
        self._chunk_size = chunk_size
        self._may_read = threading.Condition()
        self._paused = False
        self._in_flight = False  # a chunk is on its way to the protocol
        self._stopped = False
        self._deliver: Callable[[bytes], None] | None = None
        self._end: Callable[[Failure], None] | None = None

    def start(self, protocol: InputLines) -> None:
        """
        Connect C{protocol} and start reading.
        """
        self._deliver = protocol.dataReceived
        self._end = protocol.connectionLost
        # A read-only transport: the protocol only pauses, resumes and stops it.
        protocol.makeConnection(cast(ITransport, self))
        threading.Thread(target=self._read, name="tsecho-client stdin", daemon=True).start()

    def pauseProducing(self) -> None:
        with self._may_read:
            self._paused = True

    def resumeProducing(self) -> None:
        with self._may_read:
            self._paused = False
            self._may_read.notify()

    def stopProducing(self) -> None:
        with self._may_read:
            self._stopped = True
            self.disconnecting = True
            self._may_read.notify()

    def _read(self) -> None:
        """
        In the thread: read until the end, one chunk at a time, each once
        the protocol has taken the one before and is not paused.
        """
        while True:
            with self._may_read:
                self._may_read.wait_for(lambda: self._stopped or not (self._paused or self._in_flight))
                if self._stopped:
                    return
                self._in_flight = True
            try:
                data = os.read(self._fd, self._chunk_size)
            except OSError as e:
                self._reactor.callFromThread(self._ended, Failure(e))
                return
            if not data:
                self._reactor.callFromThread(self._ended, Failure(ConnectionDone()))
                return
            self._reactor.callFromThread(self._received, data)

    def _received(self, data: bytes) -> None:
        if not self._stopped and self._deliver is not None:
            self._deliver(data)
        with self._may_read:
            self._in_flight = False
            self._may_read.notify()

    def _ended(self, reason: Failure) -> None:
        if not self._stopped and self._end is not None:
            self._stopped = True
            self._end(reason)
