"""
The datagram client behind C{tsecho-client --udp}: one datagram per
message, one reply datagram expected, each waited for with a timeout and
sent once more if none came, then given up on.

L{DatagramClient} offers the same C{ask}/C{close} as
L{tsecho.client.EchoSession}, so the command treats both alike.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs
from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsecho.client._errors import CannotConnectError, ClientError, ClosedError, NoReplyError, explain
from tsecho.wire import ERROR_PREFIX

log = Logger()


class CannotSendError(ClientError):
    """
    A datagram could not be sent.
    """

    def __init__(self, target: str, why: str) -> None:
        super().__init__(f"cannot send to {target}: {why}")


def _echoes(datagram: bytes, message: bytes) -> bool:
    """
    Whether C{datagram} is a reply to C{message}: C{[TIMESTAMP] } then the
    message byte for byte.  The timestamp ends at the first C{"] "}, so a
    reply to an earlier message that ends with this one (C{hello} for
    C{lo}) does not count.
    """
    if not datagram.startswith(b"["):
        return False
    _stamp, separator, payload = datagram[1:].partition(b"] ")
    return separator == b"] " and payload == message


@attrs.define
class _Request:
    message: bytes
    reply: defer.Deferred[bytes]


class DatagramClient(DatagramProtocol):
    """
    Ask a timestamp echo server over a connected datagram socket.

    One message is in flight at a time, so replies cannot be confused with
    each other, except for a late answer to an earlier message or try: a
    datagram that is neither exactly C{[TIMESTAMP] } followed by the message
    in flight, nor an C{ERROR} line, is ignored.  (So a C{--time-format}
    whose timestamps contain C{"] "} is not understood.)

    @param open: called with this protocol at the first C{ask}; starts it on
        a datagram port connected to the server (C{reactor.listenUDP} then
        C{port.connect}) and fires with that port.
    @param clock: runs the reply timer.
    @param target: names the server in error messages.
    @param timeout: seconds to wait for a reply to each try.
    @param tries: how many times to send a message before giving up.
    """

    def __init__(
        self,
        open: Callable[[DatagramClient], defer.Deferred[IListeningPort]],
        clock: IReactorTime,
        target: str,
        timeout: float,
        tries: int = 2,
    ) -> None:
        self._open = open
        self._clock = clock
        self.target = target
        self._timeout = timeout
        self._tries = tries
        self._queue: deque[_Request] = deque()
        self._port: IListeningPort | None = None
        self._opening: defer.Deferred[IListeningPort] | None = None
        self._in_flight: _Request | None = None
        self._tried = 0
        self._timer: IDelayedCall | None = None
        self._failure: Failure | None = None

    def ask(self, message: bytes) -> defer.Deferred[bytes]:
        """
        Send C{message} as one datagram.

        @return: fires with the reply datagram, or fails with a
            L{tsecho.client.ClientError}; after one failure every later
            message fails the same way.
        """
        if self._failure is not None:
            return defer.fail(self._failure)
        request = _Request(message, defer.Deferred())
        self._queue.append(request)
        if self._port is None and self._opening is None:
            self._opening = self._open(self)
            self._opening.addCallbacks(self._opened, self._open_failed)
        self._next()
        return request.reply

    def close(self) -> defer.Deferred[None]:
        """
        Stop: fail what is unanswered with L{ClosedError} and close the socket.

        @return: fires once the socket is closed.
        """
        self._stop(Failure(ClosedError()))
        port, self._port = self._port, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening).addCallback(lambda _: None)

    # Sending.

    def _opened(self, port: IListeningPort) -> None:
        self._opening = None
        self._port = port
        if self._failure is not None:
            port.stopListening()
            return
        self._next()

    def _open_failed(self, reason: Failure) -> None:
        self._opening = None
        if self._failure is None:
            self._stop(Failure(CannotConnectError(self.target, explain(reason))))

    def _next(self) -> None:
        if self._port is None or self._in_flight is not None or not self._queue or self._failure is not None:
            return
        self._in_flight = self._queue.popleft()
        self._tried = 0
        self._send()

    def _send(self) -> None:
        assert self._in_flight is not None
        assert self.transport is not None
        self._tried += 1
        self._timer = self._clock.callLater(self._timeout, self._timed_out)
        try:
            self.transport.write(self._in_flight.message, None)  # None: to the connected peer
        except error.MessageLengthError:
            self._stop(Failure(CannotSendError(self.target, "message too long for one datagram")))
        except OSError as e:
            self._stop(Failure(CannotSendError(self.target, e.strerror or str(e))))

    def _timed_out(self) -> None:
        self._timer = None  # _stop cancels it: no failure yet
        if self._tried < self._tries:
            log.debug("no reply from {target} yet; sending again", target=self.target)
            self._send()
        else:
            self._stop(Failure(NoReplyError(self.target, self._timeout, self._tried)))

    # Receiving.

    def datagramReceived(self, datagram: bytes, addr: object) -> None:
        request = self._in_flight
        if request is None or not (_echoes(datagram, request.message) or datagram.startswith(ERROR_PREFIX)):
            log.debug("ignoring a datagram that answers no message in flight: {datagram!r}", datagram=datagram)
            return
        self._cancel_timer()
        self._in_flight = None
        request.reply.callback(datagram)
        self._next()

    def connectionRefused(self) -> None:
        """
        The server's host said nothing listens there (ICMP port unreachable).
        """
        if self._in_flight is not None:
            self._stop(Failure(CannotConnectError(self.target, "connection refused")))

    def stopProtocol(self) -> None:
        """
        The socket closed.  Unless we closed it, the system closed it under
        us: Twisted's epoll reactor closes a connected UDP socket when an
        ICMP "port unreachable" arrives, instead of calling
        L{connectionRefused}.
        """
        self._port = None
        self._stop(Failure(CannotConnectError(self.target, "connection refused")))

    # The end.

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stop(self, failure: Failure) -> None:
        if self._failure is not None:
            return
        self._failure = failure
        self._cancel_timer()
        if self._opening is not None:
            self._opening.cancel()
        requests = [self._in_flight] if self._in_flight is not None else []
        requests += self._queue
        self._in_flight = None
        self._queue.clear()
        for request in requests:
            request.reply.errback(failure)
