"""
The stream client: L{EchoClient} speaks the protocol on one connection,
L{EchoSession} decides when to connect, pipeline and reconnect.

L{EchoClient} sends each message as a line and fires one L{Deferred} per
reply, in order.  L{EchoSession} is the policy a user wants: messages go out
pipelined to a persistent server, but the original C{socketserver} server
(and C{twistd tsecho --one-shot}) closes the connection after every reply,
so when a connection closes having answered some of its messages, the rest
are sent again, one connection per message from then on.  A connection that
closes without answering anything is a failure, so every new connection must
make progress and the session always ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import cast

import attrs
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsecho.client._errors import (
    CannotConnectError,
    ClientError,
    ClosedEarlyError,
    ClosedError,
    NoReplyError,
    ReplyTooLongError,
    ServerClosedError,
    explain,
    seconds,
)
from tsecho.framing import LineFramer
from tsecho.wire import CRLF, LF

#: The longest reply line (and message) the client accepts, in bytes.
MAX_LINE = 64 * 1024 * 1024

log = Logger()


class ConnectionEndedError(Exception):
    """
    The connection ended before this message was answered.

    @ivar reason: why the connection ended.
    """

    def __init__(self, reason: Failure) -> None:
        super().__init__(reason.getErrorMessage())
        self.reason = reason


class EchoClient(LineFramer):
    """
    One connection to a timestamp echo server.

    Each message goes out as one line ending in C{\\r\\n} (what the original
    client sent); each reply line, without its terminator, fires the
    L{Deferred} of the oldest unanswered message.  A reply still unfinished
    when the server closes the connection cleanly is complete: the original
    server ends its only reply that way.

    @ivar sent: how many messages this connection has sent.
    @ivar answered: how many of them it has answered.
    @ivar open: whether the connection is still up.
    @ivar lost: fires (with L{None}) once the connection has ended and every
        reply has fired, or failed with L{ConnectionEndedError}.
    @ivar lost_reason: why it ended, once it has.
    """

    MAX_LENGTH = MAX_LINE

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.answered = 0
        self.open = False
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.lost_reason: Failure | None = None
        self._waiting: deque[defer.Deferred[bytes]] = deque()
        self._closed_by_us = False

    def connectionMade(self) -> None:
        self.open = True

    def send(self, message: bytes) -> defer.Deferred[bytes]:
        """
        Send C{message} as one line.

        @param message: the line to send, without a terminator.
        @return: fires with the reply line, without its terminator.
        @raise ValueError: if C{message} holds a line break (it would be two
            messages, and the replies would no longer match).
        """
        if LF in message:
            raise ValueError("a message cannot contain a line break")
        if not self.open:
            return defer.fail(ConnectionEndedError(Failure(ConnectionDone("not connected"))))
        assert self.transport is not None
        reply: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append(reply)
        self.sent += 1
        self.transport.write(message + CRLF)
        return reply

    def close(self, abort: bool = False) -> None:
        """
        Close the connection from this side, politely or (C{abort}) at once.
        Whatever arrives from then on, complete lines included, answers
        nothing: the messages still waiting fail with L{ConnectionEndedError}.
        """
        assert self.transport is not None
        self._closed_by_us = True
        if abort:
            # Every stream transport (TCP, UNIX, TLS) can abort.
            cast(ITCPTransport, self.transport).abortConnection()
        else:
            self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self._closed_by_us:
            return  # the rest of the chunk: nobody is waiting for it any more
        if not self._waiting:
            log.warn("ignoring a line nobody asked for: {line!r}", line=line)
            return
        self.answered += 1
        self._waiting.popleft().callback(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warn("reply longer than {limit} bytes; closing", limit=self.MAX_LENGTH)
        self._fail_waiting(Failure(ReplyTooLongError(self.MAX_LENGTH)))
        self.close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.open = False
        self.lost_reason = reason
        rest = self.clearLineBuffer()
        if rest:
            # A reply that the server ended by closing cleanly is complete:
            # how the original server replies.  What is left when we closed
            # it ourselves is only what we had not read yet.
            if reason.check(ConnectionDone) and self._waiting and not self._closed_by_us:
                self.lineReceived(rest)
            else:
                log.debug("dropping {count} bytes of an unfinished line", count=len(rest))
        self._fail_waiting(Failure(ConnectionEndedError(reason)))
        self.lost.callback(None)

    def _fail_waiting(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, deque()
        for reply in waiting:
            reply.errback(failure)


@attrs.define
class _Request:
    message: bytes
    reply: defer.Deferred[bytes]


class EchoSession:
    """
    Get every message answered, in order, over as many connections as needed.

    @param connect: opens a new connection; fires with its L{EchoClient}
        (for example C{lambda: endpoint.connect(factory)}).
    @param clock: runs the reply timer.
    @param target: names the server in error messages (C{localhost:21567}).
    @param timeout: seconds to wait for each reply (counted from the moment
        the message is asked, or the previous reply arrived, whichever is
        later); connecting counts towards it.  L{None} waits forever.
    """

    def __init__(
        self,
        connect: Callable[[], defer.Deferred[EchoClient]],
        clock: IReactorTime,
        target: str,
        timeout: float | None = None,
    ) -> None:
        self._connect = connect
        self._clock = clock
        self.target = target
        self._timeout = timeout
        self._queue: deque[_Request] = deque()  # not sent yet
        self._sent: deque[_Request] = deque()  # sent on the current connection, unanswered
        self._connection: EchoClient | None = None
        self._connecting: defer.Deferred[EchoClient] | None = None
        self._live: set[EchoClient] = set()
        self._pipelining = True
        self._failure: Failure | None = None
        self._timer: IDelayedCall | None = None
        self._all_closed: list[defer.Deferred[None]] = []

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        """
        Send C{message}; replies fire in the order messages were asked.

        @return: fires with the reply line (without its terminator), or fails
            with a L{tsecho.client.ClientError}; after one failure,
            every later message fails the same way.
        @raise ValueError: if C{message} holds a line break.
        """
        if LF in message:
            raise ValueError("a message cannot contain a line break")
        if self._failure is not None:
            return defer.fail(self._failure)
        request = _Request(message, defer.Deferred())
        self._queue.append(request)
        if self._timer is None:
            self._start_timer()
        self._pump()
        return request.reply

    def close(self) -> defer.Deferred[None]:
        """
        Stop: fail what is unanswered with L{ClosedError} and close: politely
        if every message sent was answered, at once otherwise (the server may
        still be sending replies that nobody will read, and a polite close
        waits until it has read what we sent, which it does not while we do
        not read).

        @return: fires once every connection has closed.
        """
        self._stop(Failure(ClosedError()), abort=bool(self._sent))
        if not self._live:
            return defer.succeed(None)
        done: defer.Deferred[None] = defer.Deferred()
        self._all_closed.append(done)
        return done

    # Sending.

    def _pump(self) -> None:
        if self._failure is not None or not self._queue:
            return
        connection = self._connection
        if connection is None:
            if self._connecting is None:
                self._open_connection()
            return
        if not connection.open:
            return  # its end is being handled
        if not self._pipelining and connection.sent:
            if not self._sent:
                # One message per connection: this one has had its answer.
                self._retire(connection)
                self._open_connection()
            return
        if self._sent and not connection.answered:
            return  # until a connection has answered once, send one at a time
        while self._queue:
            request = self._queue.popleft()
            self._sent.append(request)
            connection.send(request.message).addCallbacks(self._answered, self._unanswered, callbackArgs=(request,))
            if not (self._pipelining and connection.answered):
                break  # one at a time: until this connection has answered, or for a server that closes after each

    def _answered(self, reply: bytes, request: _Request) -> None:
        assert self._sent[0] is request
        self._sent.popleft()
        self._start_timer()
        request.reply.callback(reply)
        self._pump()

    def _unanswered(self, failure: Failure) -> None:
        if failure.check(ReplyTooLongError):
            self._stop(failure)
            return
        # The connection's end decides what happens next (see _lost); a
        # reply that failed any other way is a bug worth surfacing.
        failure.trap(ConnectionEndedError)

    # Connections.

    def _open_connection(self) -> None:
        log.debug("connecting to {target}", target=self.target)
        self._connecting = connecting = self._connect()
        connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connection: EchoClient) -> None:
        self._connecting = None
        self._live.add(connection)
        connection.lost.addCallback(self._lost, connection)
        if self._failure is not None:
            self._retire(connection)
            return
        self._connection = connection
        self._pump()

    def _connect_failed(self, reason: Failure) -> None:
        self._connecting = None
        if self._failure is None:
            self._stop(Failure(CannotConnectError(self.target, explain(reason))))

    def _retire(self, connection: EchoClient) -> None:
        if connection is self._connection:
            self._connection = None
        connection.close()

    def _lost(self, _: None, connection: EchoClient) -> None:
        self._live.discard(connection)
        if not self._live and self._connecting is None:
            waiting, self._all_closed = self._all_closed, []
            for done in waiting:
                done.callback(None)
        if connection is not self._connection:
            return
        self._connection = None
        assert connection.lost_reason is not None
        if connection.lost_reason.check(ClientError):
            self._stop(connection.lost_reason)  # e.g. the TLS server could not be verified: say that
            return
        if self._sent and not connection.answered:
            self._stop(Failure(ClosedEarlyError(self.target, connection.lost_reason)))
            return
        if self._sent and connection.answered > 1:
            # Persistent (it answered more than one), so not a server that
            # closes after each reply: it is going away.
            self._stop(Failure(ServerClosedError(self.target, len(self._sent) + len(self._queue))))
            return
        unanswered = list(self._sent)
        self._sent.clear()
        if unanswered:
            # It answered, then closed: a server that answers one line per
            # connection.  Send the rest again, one per connection.
            log.debug(
                "{target} closed after {answered} replies; resending {count} messages one per connection",
                target=self.target,
                answered=connection.answered,
                count=len(unanswered),
            )
            self._pipelining = False
            self._queue.extendleft(reversed(unanswered))
        self._pump()

    # Time.

    def _start_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._timeout is not None and (self._queue or self._sent):
            self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        assert self._timeout is not None
        if self._connection is None:
            error: Exception = CannotConnectError(self.target, f"no connection within {seconds(self._timeout)}")
        else:
            error = NoReplyError(self.target, self._timeout)
        self._stop(Failure(error))

    # The end.

    def _stop(self, failure: Failure, abort: bool = True) -> None:
        """
        Fail every unanswered message with C{failure}, and every later one.
        """
        if self._failure is not None:
            return
        self._failure = failure
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._connecting is not None:
            self._connecting.cancel()
        self._connection = None
        for connection in list(self._live):
            if connection.open:
                connection.close(abort)
        requests = [*self._sent, *self._queue]
        self._sent.clear()
        self._queue.clear()
        for request in requests:
            request.reply.errback(failure)
