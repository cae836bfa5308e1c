"""
The timestamp echo server: bytes in, lines, replies, bytes out.

Read top to bottom, L{TimestampEcho} is the whole data path of a stream
connection: L{TimestampEcho.dataReceived} takes a chunk, L{LineFramer} cuts
it into lines, L{TimestampEcho.lineReceived} turns each line into a reply,
and L{TimestampEcho._send_replies} writes all of a chunk's replies at once.
L{TimestampEchoFactory} holds what connections share: the configuration,
the clock, the timestamp cache and the set of open connections.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.internet import defer, error, tcp
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IHalfCloseableProtocol,
    INegotiated,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
)
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from tsecho.framing import CRLF, LineFramer
from tsecho.idle import IdleTimeouts
from tsecho.logs import CONNECTION_CLOSED
from tsecho.tally import NO_METRICS, ConnectionMetrics, Ending
from tsecho.timestamps import Timestamper

DEFAULT_PORT = 21567

BUSY = b"ERROR server busy\r\n"

log = Logger()


def describe_address(address: IAddress) -> str:
    """
    Name a peer for the log: C{127.0.0.1:5555}, C{[::1]:5555}, or a UNIX path.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name or "unix socket"


def _direct_socket(transport: object) -> socket.socket | None:
    """
    The socket under C{transport}, if replies may be sent on it directly: a
    plain TCP or UNIX connection of Twisted's POSIX reactors, without TLS.
    Anything else (TLS, the PROXY-protocol wrapper, test doubles) gets none.
    """
    if isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False):
        handle = transport.getHandle()
        if isinstance(handle, socket.socket):
            return handle
    return None


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _not_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


@attrs.frozen
class ServerConfig:
    """
    How the server treats each connection; the defaults are the SPEC's.

    @ivar max_line: the longest request line in bytes, terminator excluded.
    @ivar max_connections: open stream connections before C{ERROR server busy}.
    @ivar timeout: seconds a connection may stay idle; 0 never closes it.
    @ivar one_shot: close each connection after its first reply.
    @ivar quiet: no log lines per connection.
    @ivar drain_quiet: during shutdown, close a connection once it has been
        quiet this long (having answered all it received).
    @ivar close_timeout: seconds a closing connection gets to send what it
        owes, before it is cut short.
    @ivar linger: seconds a closing connection that has sent all it owes
        waits for the client to close before closing anyway.
    """

    max_line: int = attrs.field(default=16384, validator=_positive)
    max_connections: int = attrs.field(default=10000, validator=_positive)
    timeout: float = attrs.field(default=300.0, validator=_not_negative)
    one_shot: bool = False
    quiet: bool = False
    drain_quiet: float = attrs.field(default=0.5, validator=_positive)
    close_timeout: float = attrs.field(default=10.0, validator=_positive)
    linger: float = attrs.field(default=2.0, validator=_positive)


@implementer(IHalfCloseableProtocol, IPushProducer)
class TimestampEcho(LineFramer, TimeoutMixin):
    """
    Answer each line with C{[TIMESTAMP] LINE EOL}, EOL mirroring the request's.

    A connection is open, then closing, then lost.  It starts closing
    (L{_close}) after a one-shot reply, an error line, an idle timeout, the
    client's end of input or a shutdown: it sends what it owes, then shuts
    down its sending side and drops further input until the client closes
    (L{_sent_all} once everything went out; L{_input_ended} once the client's
    end arrived), bounded by C{close_timeout} and C{linger}.
    """

    factory: TimestampEchoFactory
    lines_answered = 0
    # What the connection's summary (log event and metrics) reports.
    bytes_in = 0
    bytes_out = 0
    started = 0.0
    ending: Ending | None = None  # the first reason to close wins
    _closing = False
    _counted = False
    _sent_all = False
    _input_ended = False
    _socket: socket.socket | None = None  # while replies may go straight to it
    _direct_limit = tcp.Connection.bufferSize  # bigger batches go through the transport

    @property
    def _peer(self) -> str:
        """
        The client's address, for the log.  Looked up only when logged: one
        attribute less per connection (its dict is at a size step), and behind
        the PROXY protocol it names the real client once the header is read.
        """
        return describe_address(self.transport.getPeer()) if self.transport is not None else ""

    def connectionMade(self) -> None:
        assert self.transport is not None
        factory = self.factory
        config = factory.config
        self.MAX_LENGTH = config.max_line
        self._replies: list[bytes] = []
        self._prefix = b""
        self._socket = _direct_socket(self.transport)
        if not factory.admit(self):
            log.warn("refused {peer}: server busy ({limit} connections)", peer=self._peer, limit=config.max_connections)
            self.ending = Ending.BUSY
            factory.metrics.refused()
            self._replies.append(BUSY)
            self._close()
            return
        self._counted = True
        # Push back: the transport pauses us (and we it) while our replies
        # wait unsent beyond its buffer size, so a client that does not read
        # cannot make us buffer without bound.
        cast(IConsumer, self.transport).registerProducer(self, True)
        # The idle timeout (or, while draining, the quiet period) is the
        # factory's: one timer for all connections.
        self.started = now = factory.clock.seconds()
        factory.idle.touch(self, now)

    # Bytes in.

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.bytes_in += len(data)
        factory = self.factory
        now = factory.clock.seconds()
        factory.idle.touch(self, now)
        self._prefix = factory.timestamper.prefix(now)
        LineFramer.dataReceived(self, data)
        self._send_replies()

    # Lines to replies.

    def lineReceived(self, line: bytes) -> bool:
        self._replies += (self._prefix, line, self.line_ending or CRLF)
        self.lines_answered += 1
        if self.factory.config.one_shot:
            self.ending = self.ending or Ending.ONE_SHOT
            self._close()
            return True  # no more lines
        return False

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warn(
            "closing {peer}: line too long ({length} bytes so far, limit {limit})",
            peer=self._peer,
            length=len(line),
            limit=self.MAX_LENGTH,
        )
        self._replies.append(b"ERROR line too long (limit %d bytes)\r\n" % self.MAX_LENGTH)
        self.ending = self.ending or Ending.LINE_TOO_LONG
        self._close()

    # Replies out.

    def _send_replies(self) -> None:
        if self._replies:
            assert self.transport is not None
            data = b"".join(self._replies)
            self._replies.clear()
            self.bytes_out += len(data)
            if self._socket is not None:
                if len(data) <= self._direct_limit:
                    data = self._send_directly(self._socket, data)
                else:  # the transport buffers it: from now on, it sends everything
                    self._socket = None
            if data:
                self.transport.write(data)

    def _send_directly(self, sock: socket.socket, data: bytes) -> bytes:
        """
        Send C{data} on the socket at once and return what it did not take.

        C{transport.write} only buffers, and sends on the next reactor turn:
        two C{epoll_ctl} calls and a dispatch per chunk, a third of the
        server's time under load.  Sending directly is safe only while the
        transport's own buffer is empty, so from the first short send on
        (the client reads slowly, or the connection failed) every reply goes
        through the transport, in order, under its back-pressure.  A batch
        bigger than the transport's buffer bound always goes through the
        transport, which then pauses us at once, as it would have anyway.
        """
        try:
            sent = sock.send(data)
        except OSError:  # would block, or failed: the transport finds out and reports
            sent = 0
        if sent == len(data):
            return b""
        self._socket = None
        return data[sent:]

    def _close(self) -> None:
        """
        Send what is owed, then close once it is written.

        On plain TCP and UNIX sockets the close lingers: we shut down our
        sending side, then read and drop what the client still sends until it
        closes too (or L{ServerConfig.close_timeout} passes).  Closing with
        unread input would make the kernel reset the connection, destroying
        replies that the client has not read yet.
        """
        self._send_replies()
        if self._closing:
            return
        self._closing = True
        self.factory.idle.discard(self)
        transport = self.transport
        assert transport is not None
        if self._counted:
            # A registered producer would keep the transport open until it
            # is resumed; the transport now only needs to drain its buffer.
            cast(IConsumer, transport).unregisterProducer()
            if self.paused:  # read on, to drop what the client still sends
                self.paused = False
                cast(IPushProducer, transport).resumeProducing()
        if self._input_ended and self._socket is not None:
            assert isinstance(transport, tcp.Connection)  # what gave us the socket
            self._close_now(transport)
            return
        # Arm the timer before closing: a transport may call connectionLost
        # (which cancels it) from inside loseConnection.
        self.setTimeout(self.factory.config.close_timeout)
        if self._input_ended or INegotiated.providedBy(transport) or not ITCPTransport.providedBy(transport):
            transport.loseConnection()  # nothing to linger for, or TLS with its own close_notify
        else:
            transport.loseWriteConnection()

    def _close_now(self, transport: tcp.Connection) -> None:
        """
        Close a connection whose replies all went straight to the socket
        (so the transport's buffer is empty) and whose client has ended its
        input: nothing is left to send or to linger for.

        C{loseConnection} would take one more reactor turn (two C{epoll_ctl}
        calls and a dispatch) only to find that buffer empty, a sixth of the
        server's time at connection-per-request.  This is what Twisted's own
        C{loseConnection} does once the sending side is already shut, with
        the methods of Twisted's C{FileDescriptor} that are not part of
        C{ITCPTransport} (hence only for a plain C{tcp.Connection}).
        """
        transport.stopReading()
        transport.stopWriting()
        transport.connectionLost(connectionDone)

    # The end of a connection.

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side: answer everything, then close.
        (If we were closing already, the client has now seen our end: done.)
        """
        self._input_ended = True
        self.ending = self.ending or Ending.CLIENT_CLOSED
        if self._closing:
            assert self.transport is not None
            self.transport.loseConnection()
            return
        self._prefix = self.factory.reply_prefix()
        self.deliver_unterminated_line()
        self._close()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is shut down: everything owed was sent.  If we did
        not ask for that ourselves, close.
        """
        self._sent_all = True
        assert self.transport is not None
        if self._closing:  # lingering: give the client a moment to close
            self.setTimeout(self.factory.config.linger)
        else:
            self._closing = True
            self.transport.loseConnection()

    def callLater(self, period: float, func: Any) -> Any:
        """
        Schedule L{TimeoutMixin}'s timer (for closing connections only) on the
        factory's clock.
        """
        return self.factory.clock.callLater(period, func)

    def timeoutConnection(self) -> None:
        """
        Idle too long (or, while draining, quiet long enough): close politely.
        A close that has not finished in time is cut short.
        """
        assert self.transport is not None
        if self._closing:
            if self._sent_all:  # all replies sent; the client just never closed
                self.transport.loseConnection()
            else:
                log.warn("aborting {peer}: its replies were not read in time", peer=self._peer)
                self.ending = Ending.ABORTED
                cast(ITCPTransport, self.transport).abortConnection()
            return
        factory = self.factory
        if factory.draining and self.paused:
            # Paused by back-pressure is not quiet: the client is still reading
            # replies it is owed (closing now would reset them away).  Wait;
            # the service's shutdown deadline still applies.
            factory.idle.touch(self, factory.clock.seconds())
            return
        self.ending = self.ending or (Ending.SHUTDOWN if factory.draining else Ending.IDLE_TIMEOUT)
        self._close()

    def drain(self) -> None:
        """
        The server is shutting down: close once quiet, having answered all.
        """
        if not self._closing:
            self.factory.idle.touch(self, self.factory.clock.seconds())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timeOut is not None:  # a closing connection's timer
            self.setTimeout(None)
        self._closing = True
        self._socket = None
        if self._counted:
            factory = self.factory
            factory.idle.discard(self)
            factory.release(self)
            self._summarize(reason)

    def _summarize(self, reason: Failure) -> None:
        """
        Report the connection, now ended: one log event, and the metrics.
        """
        factory = self.factory
        if self.ending is None:
            self.ending = Ending.CLIENT_CLOSED if reason.check(error.ConnectionDone) else Ending.RESET
        duration = factory.clock.seconds() - self.started
        factory.metrics.closed(self, self.ending, duration)
        if not factory.config.quiet:
            log.info(
                CONNECTION_CLOSED,
                peer=self._peer,
                lines=self.lines_answered,
                bytes_in=self.bytes_in,
                bytes_out=self.bytes_out,
                duration=duration,
                reason=self.ending.value,
            )


if TYPE_CHECKING:  # Twisted's factories are generic only from 24.x on
    _ServerFactory = ServerFactory[TimestampEcho]
else:
    _ServerFactory = ServerFactory


class TimestampEchoFactory(_ServerFactory):
    """
    Build L{TimestampEcho} connections and keep count of the open ones.

    @ivar connections: the open, admitted connections.
    @ivar idle: the idle timeouts of the open connections that are not
        closing: C{timeout}, or C{drain_quiet} once draining.
    @ivar draining: whether the server is shutting down.
    @ivar metrics: told of every connection that ends (nothing, by default).
    """

    protocol = TimestampEcho
    noisy = False  # the service logs its listeners; connections log themselves

    def __init__(self, config: ServerConfig, timestamper: Timestamper, clock: IReactorTime) -> None:
        self.config = config
        self.timestamper = timestamper
        self.clock = clock
        self.metrics: ConnectionMetrics = NO_METRICS
        self.connections: set[TimestampEcho] = set()
        self.idle: IdleTimeouts[TimestampEcho] = IdleTimeouts(clock, config.timeout or None)
        self.draining = False
        self._drained: list[defer.Deferred[None]] = []

    def reply_prefix(self) -> bytes:
        """
        The C{b"[TIMESTAMP] "} prefix for replies sent now.
        """
        return self.timestamper.prefix(self.clock.seconds())

    def admit(self, connection: TimestampEcho) -> bool:
        """
        Count C{connection} in, unless that would pass the connection limit.
        """
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(connection)
        return True

    def release(self, connection: TimestampEcho) -> None:
        """
        Count C{connection} out; it has closed.
        """
        self.connections.discard(connection)
        if not self.connections:
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred[None]:
        """
        Close every connection once it has answered all it received and gone
        quiet; the result fires when none is left.
        """
        self.draining = True
        self.idle.restart(self.config.drain_quiet)
        if not self.connections:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)
        for connection in list(self.connections):
            connection.drain()
        return d

    def abort_all(self) -> None:
        """
        Abort every connection that is still open.
        """
        for connection in list(self.connections):
            assert connection.transport is not None
            connection.ending = connection.ending or Ending.ABORTED
            cast(ITCPTransport, connection.transport).abortConnection()
