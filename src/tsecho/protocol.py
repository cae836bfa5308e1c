"""
The timestamp echo server: bytes in, lines, replies, bytes out.

Read top to bottom, L{TimestampEcho} is the whole data path of a stream
connection: L{TimestampEcho.dataReceived} takes a chunk, L{LineFramer} cuts
it into lines, L{TimestampEcho.lineReceived} turns each line into a reply,
and L{TimestampEcho._send_replies} writes all of a chunk's replies at once.
A connection makes at most L{REPLY_BUDGET} bytes of replies per turn of the
reactor: the rest of its input waits, unframed, for a later turn, or for the
transport to drain if the client is not reading.

A connection starts closing after a one-shot reply, an error line, an idle
timeout, the client's end of input or a shutdown: it sends what it owes,
then closes once that is written.  On plain TCP and UNIX sockets the close
lingers: it shuts down its sending side, then reads and drops what the
client still sends until the client closes too (or C{linger} passes):
closing with unread input would make the kernel reset the connection,
destroying replies the client has not read yet.  A close that has not sent
what it owes within C{close_timeout} is cut short.  L{_ClosingMixin} is all
of this ending: L{TimestampEcho} mixes it in, so Python needs it defined
above the data path.

L{TimestampEchoFactory} holds what connections share: the configuration,
the clock, the timestamp cache and the set of open connections.
"""

from __future__ import annotations

import socket
import sys
import weakref
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

import attrs
from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    INegotiated,
    IPushProducer,
    IReactorTime,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tsecho import _direct
from tsecho._idle import Expiring, IdleTimeouts
from tsecho._logtext import describe_address
from tsecho._tally import NO_METRICS, ConnectionMetrics, Ending
from tsecho.framing import LineFramer
from tsecho.logs import CONNECTION_CLOSED, emit_info
from tsecho.timestamps import Timestamper
from tsecho.wire import BUSY, CRLF, line_too_long

REPLY_BUDGET = 32 * 1024
"""
Bytes of replies a connection makes in one turn of the reactor before it
stops framing its input: the rest waits, unframed and unread, for a later
turn (so that timers, signals and other connections run meanwhile), or, if
the replies wait unsent, for the transport to drain.  One 64 KiB read of
empty lines would otherwise be 65,536 replies (1.8 MB) made at once.  Half
the transport's 64 KiB buffer bound: what waits unsent for one client stays
under about 96 KiB, what it holds in all under 256 KiB (over TLS too).
"""

TURN_BUDGET = 1024 * 1024
"""
Bytes of replies all connections together make in one turn of the reactor
(about 30 ms of work): with hundreds of connections flooding, the ones that
find it spent continue on the next turn, in the order they waited, so that
a signal or a timer never waits long for the turn to end.
"""

log = Logger()


RESET_PROBE = 64
"""
How many of the newest connections are checked for a reset the reactor has
not seen yet, when the connection limit is reached.
"""


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
    @ivar shutdown_window: seconds a connection gets, once shutdown began, to
        finish on its own; then it answers every line received, closes its
        sending side and drops later input.
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
    shutdown_window: float = attrs.field(default=1.0, validator=_positive)
    close_timeout: float = attrs.field(default=10.0, validator=_positive)
    linger: float = attrs.field(default=2.0, validator=_positive)


class Phase(Enum):
    """
    Where a connection is in its life.
    """

    OPEN = "open"
    """Answering lines as they arrive."""
    CLOSING = "closing"
    """Everything owed is made: sending it, then closing."""
    LINGERING = "lingering"
    """Everything owed is sent and the sending side shut: dropping what the
    client still sends until it closes, for at most C{linger} seconds."""
    LOST = "lost"
    """Closed."""


class Flow(Enum):
    """
    Whether a connection is turning its input into replies.
    """

    READING = "reading"
    """Reading, and answering what it reads."""
    BEHIND = "behind"
    """It spent this turn's L{REPLY_BUDGET}: the input left continues on a
    later turn; reading is paused meanwhile."""
    BLOCKED = "blocked"
    """Its replies wait unsent (the transport paused it): the input left
    continues when the transport drains; reading is paused meanwhile."""


# The data path compares states by these names: looking a member up on its
# Enum class costs about 0.1 µs on CPython 3.10 and 3.11 (10 ns from 3.12 on),
# several times per chunk.
OPEN, CLOSING, LINGERING, LOST = Phase.OPEN, Phase.CLOSING, Phase.LINGERING, Phase.LOST
READING, BEHIND, BLOCKED = Flow.READING, Flow.BEHIND, Flow.BLOCKED


class _ClosingMixin:
    """
    When and how a L{TimestampEcho} (below: the data path) closes.

    It drives the connection's L{Phase} on from L{open <Phase.OPEN>}:
    L{_close} makes it L{closing <Phase.CLOSING>}, L{writeConnectionLost}
    L{lingering <Phase.LINGERING>}, and L{TimestampEcho.connectionLost}
    L{lost <Phase.LOST>}.  Each timer has its own callback: while open, the
    factory's idle table calls L{idle_expired}; once closing, one deadline
    calls L{_cut_short} after C{close_timeout}, or, once lingering,
    L{_stop_lingering} after C{linger}.
    """

    # What it uses of the data path (declared here for the type checker only).
    transport: ITransport | None
    factory: TimestampEchoFactory
    paused: bool
    _flow: Flow
    _socket: socket.socket | None
    _prefix: bytes
    _room: int
    _send_replies: Callable[[], None]
    clearLineBuffer: Callable[[], bytes]
    deliver_unterminated_line: Callable[[], None]

    _phase = OPEN
    ending: Ending | None = None  # the first reason to close wins
    _counted = False  # admitted: counted in the factory until lost
    _input_ended = False
    _deadline: IDelayedCall | None = None  # once closing

    @property
    def _peer(self) -> str:
        """
        The client's address, for the log.  Looked up only when logged: one
        attribute less per connection (its dict is at a size step), and behind
        the PROXY protocol it names the real client once the header is read.
        """
        return describe_address(self.transport.getPeer()) if self.transport is not None else ""

    def _close(self) -> None:
        """
        Send what is owed, then close once it is written: lingering on plain
        TCP and UNIX sockets (see the module's docstring).
        """
        self._send_replies()
        if self._phase is not OPEN:
            return
        self._phase = CLOSING
        self.factory.idle.discard(self)
        self.clearLineBuffer()  # what was not answered will not be
        transport = self.transport
        assert transport is not None
        if self._counted:
            self._unregister_producer(transport)
        if self._input_ended and self._socket is not None:  # all sent, nothing to linger for
            _direct.close_now(transport)
            return
        # Armed before closing: a transport may call connectionLost (which
        # cancels it) from inside loseConnection.  A connection refused as
        # busy gets the linger: it sent one line, or nothing (an unfinished
        # TLS handshake).
        config = self.factory.config
        self._set_deadline(config.close_timeout if self._counted else config.linger, self._cut_short)
        if self._input_ended or INegotiated.providedBy(transport) or not ITCPTransport.providedBy(transport):
            transport.loseConnection()  # nothing to linger for, or TLS with its own close_notify
        else:
            transport.loseWriteConnection()

    def _unregister_producer(self, transport: object) -> None:
        """
        No longer the transport's producer (which would keep it open until
        resumed), and reading on if held back, to drop what the client sends.
        """
        cast(IConsumer, transport).unregisterProducer()
        if self._flow is not READING:
            self._flow = READING
            self.paused = False
            cast(IPushProducer, transport).resumeProducing()

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side: answer everything (what is
        held back turn by turn, as before: over TLS, 64 KiB of lines may come
        with the client's C{close_notify}), then the unterminated last line
        (L{_finish_input}), then close.  If closing already, the client has
        now seen our end: done.
        """
        self._input_ended = True
        self.ending = self.ending or Ending.CLIENT_CLOSED
        if self._phase is not OPEN:
            assert self.transport is not None
            self.transport.loseConnection()
        elif self._flow is READING:  # nothing held back
            self._finish_input()
        # Otherwise the held input's turn (continue_turn, resumeProducing) finishes.

    def _finish_input(self) -> None:
        """
        All of the ended input is answered but an unterminated last line:
        answer that, then close.
        """
        self._prefix = self.factory.reply_prefix()
        self._room = sys.maxsize  # one line, at most max_line
        self.deliver_unterminated_line()
        self._close()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is shut down, all replies sent: if we shut it,
        linger for the client to close; if not, close.
        """
        assert self.transport is not None
        if self._phase is CLOSING:
            self._phase = LINGERING
            self._set_deadline(self.factory.config.linger, self._stop_lingering)
        elif self._phase is not LINGERING:
            self._phase = LINGERING
            self.factory.idle.discard(self)
            self.transport.loseConnection()

    # Timers: the factory's idle table, then the close's one deadline.

    def idle_expired(self) -> None:
        """
        Idle for the whole timeout (or, while draining, quiet for the whole
        quiet period): close politely.
        """
        factory = self.factory
        if factory.draining and self._flow is not READING:
            # Held back by back-pressure is not quiet: the client is still
            # reading replies it is owed (closing now would reset them away).
            # Wait; the shutdown window and deadline still apply.
            factory.idle.touch(self, factory.clock.seconds())
            return
        self.ending = self.ending or (Ending.SHUTDOWN if factory.draining else Ending.IDLE_TIMEOUT)
        self._close()

    def _set_deadline(self, seconds: float, callback: Callable[[], None]) -> None:
        """
        Call C{callback} in C{seconds}, instead of the earlier deadline if any.
        """
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = self.factory.clock.callLater(seconds, callback)

    def _cut_short(self) -> None:
        """
        C{close_timeout} passed, replies unsent: abort (without a word for a
        connection refused as busy, given only the linger).
        """
        if self._counted:
            log.warn("aborting {peer}: its replies were not read in time", peer=self._peer)
            self.ending = Ending.ABORTED
        cast(ITCPTransport, self.transport).abortConnection()

    def _stop_lingering(self) -> None:
        """
        C{linger} passed since our sending side shut: close anyway.
        """
        assert self.transport is not None
        self.transport.loseConnection()

    # Shutdown: the factory's drain.

    def start_quiet_period(self) -> None:
        """
        The server is shutting down: if open, close once quiet for
        C{drain_quiet} seconds, having answered all.
        """
        if self._phase is OPEN:
            self.factory.idle.touch(self, self.factory.clock.seconds())

    def end_shutdown_window(self) -> None:
        """
        The shutdown window is over: if caught up, answer every line
        received, then close (dropping an unfinished line and later input).
        A connection whose client lags behind on its replies is left to
        drain: closed once quiet, or at the shutdown deadline (its unread
        input may be lines sent before the shutdown, which it is owed).
        """
        if self._phase is OPEN and self._flow is READING:
            self.ending = self.ending or Ending.SHUTDOWN
            self._close()


@implementer(IHalfCloseableProtocol, IPushProducer)
class TimestampEcho(_ClosingMixin, LineFramer):
    """
    Answer each line with C{[TIMESTAMP] LINE EOL}, EOL mirroring the request's.

    Its methods are the data path, top to bottom; while the connection is
    L{open <Phase.OPEN>}, its L{Flow} says whether it is reading or holding
    input back.  L{_ClosingMixin} (above) closes it.
    """

    lines_answered = 0
    _flow = READING
    # With lines_answered and ending, what the connection's summary reports.
    bytes_in = 0
    bytes_out = 0
    started = 0.0
    _room = REPLY_BUDGET  # bytes of replies this connection may still make this turn
    _socket: socket.socket | None = None  # while replies may go straight to it

    def connectionMade(self) -> None:
        factory = self.factory
        config = factory.config
        self.MAX_LENGTH = config.max_line
        self._one_shot = config.one_shot  # read per line
        self._replies: list[bytes] = []
        self._prefix = b""
        self._socket = _direct.direct_socket(self.transport)
        if not factory.admit(self):
            log.warn("refused {peer}: server busy ({limit} connections)", peer=self._peer, limit=config.max_connections)
            self.ending = Ending.BUSY
            factory.metrics.refused(self)
            self._replies.append(BUSY)
            self._close()
            return
        self._counted = True
        # Back-pressure: the transport pauses us (and we it) while our replies wait
        # unsent, so a client that does not read cannot make us buffer without bound.
        cast(IConsumer, self.transport).registerProducer(self, True)
        self.started = now = factory.clock.seconds()
        factory.idle.touch(self, now)

    # Bytes in.

    def dataReceived(self, data: bytes) -> None:
        if self._phase is not OPEN:
            return
        self.bytes_in += len(data)
        factory = self.factory
        now = factory.clock.seconds()
        factory.idle.touch(self, now)
        self._prefix = factory.timestamper.prefix(now)
        if self._flow is not READING:  # held back: this waits behind the rest
            LineFramer.dataReceived(self, data)
            return
        room = self._room = min(REPLY_BUDGET, factory.turn_room)
        LineFramer.dataReceived(self, data)
        self._send_replies()
        self._end_turn(room)

    # Lines to replies.

    def lineReceived(self, line: bytes) -> bool:
        prefix = self._prefix
        self._replies += (prefix, line, self.line_ending or CRLF)
        self.lines_answered += 1
        room = self._room = self._room - len(prefix) - len(line) - 2  # about: CRLF or LF
        if room <= 0 and self._flow is READING:
            self._flow = BEHIND
            self.paused = True  # the framer holds the rest
        if self._one_shot:
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
        self._replies.append(line_too_long(self.MAX_LENGTH))
        self.ending = self.ending or Ending.LINE_TOO_LONG
        self._close()

    # Replies out.

    def _send_replies(self) -> None:
        """
        Write the replies made so far in one piece: straight on the socket
        (L{tsecho._direct} says why) while the transport's buffer is empty; from
        the first short send on, through the transport, under its back-pressure.
        """
        if self._replies:
            data = b"".join(self._replies)
            self._replies.clear()
            self.bytes_out += len(data)
            sock = self._socket
            if sock is not None:
                try:
                    sent = sock.send(data)
                except OSError:  # would block, or failed: the transport finds out and reports
                    sent = 0
                if sent == len(data):
                    return
                self._socket = None
                data = data[sent:]
            assert self.transport is not None
            self.transport.write(data)

    # Turns: at most REPLY_BUDGET bytes of replies each.

    def _end_turn(self, room: int) -> None:
        """
        Count this turn's replies against the budget of all connections; if
        this one's ran out, continue on a later turn, not reading meanwhile.
        """
        factory = self.factory
        factory.turn_room -= room - self._room
        if self._flow is BEHIND:
            cast(IPushProducer, self.transport).pauseProducing()
            factory.continue_later(self)

    def continue_turn(self) -> None:
        """
        A later turn has come: if still behind, answer more of what is held.
        """
        if self._flow is BEHIND and self._phase is OPEN:
            self._answer_held_input()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: answer and read nothing until it drains.
        """
        self._flow = BLOCKED
        self.paused = True
        cast(IPushProducer, self.transport).pauseProducing()

    def resumeProducing(self) -> None:
        """
        The transport drained: answer the input held back, then read on.
        """
        if self._flow is BLOCKED:
            self._answer_held_input()

    def _answer_held_input(self) -> None:
        """
        Answer the input held back, within a new turn's budget; once it is all
        answered, read on (or, if the client's input has ended, finish).
        """
        factory = self.factory
        self._flow = READING
        self.paused = False
        room = self._room = min(REPLY_BUDGET, factory.turn_room)
        now = factory.clock.seconds()
        factory.idle.touch(self, now)  # answering is not being quiet
        self._prefix = factory.timestamper.prefix(now)
        LineFramer.dataReceived(self, b"")
        self._send_replies()
        self._end_turn(room)
        if self._flow is READING and self._phase is OPEN:  # all of it answered
            if self._input_ended:
                self._finish_input()
                return
            cast(IPushProducer, self.transport).resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._phase = LOST
        self._socket = None
        if self._counted:
            factory = self.factory
            factory.idle.discard(self)
            _summarize(self, reason)  # counted closed before the drain can end (a worker's last export)
            factory.release(self)
        # Break the reference cycles through the transport (which holds us as
        # its producer, or, over TLS, through its producer membrane), so that
        # a closed connection is freed at once, not by the cycle collector.
        self.transport = None


def _summarize(connection: TimestampEcho, reason: Failure) -> None:
    """
    Report C{connection}, now ended: one log event, and the metrics.
    """
    factory = connection.factory
    if connection.ending is None:
        connection.ending = Ending.CLIENT_CLOSED if reason.check(error.ConnectionDone) else Ending.RESET
    duration = factory.clock.seconds() - connection.started
    factory.metrics.closed(connection, connection.ending, duration)
    if not factory.config.quiet:
        lines = connection.lines_answered
        emit_info(
            log,
            CONNECTION_CLOSED,
            {
                "peer": connection._peer,
                "lines": lines,
                "answered": "1 line" if lines == 1 else f"{lines} lines",
                "bytes_in": connection.bytes_in,
                "bytes_out": connection.bytes_out,
                "duration": duration,
                "reason": connection.ending.value,
            },
        )


def _nothing() -> None:
    """
    Do nothing: what a lone server's factory does once a connection is counted out.
    """


if TYPE_CHECKING:  # Twisted's factories are generic only from 24.x on
    _ServerFactory = ServerFactory[TimestampEcho]
else:
    _ServerFactory = ServerFactory


class TimestampEchoFactory(_ServerFactory):
    """
    Build L{TimestampEcho} connections and keep count of the open ones.

    @ivar connections: the open, admitted connections.
    @ivar resetting: those of C{connections} that the kernel has reset and
        that are aborted: they count as open until they are lost (the next
        turn), but not against the connection limit.
    @ivar idle: the idle timeouts of the open connections that are not
        closing: C{timeout}, or C{drain_quiet} once draining.
    @ivar draining: whether the server is shutting down.
    @ivar metrics: told of every connection that ends (nothing, by default).
    @ivar on_release: called once a connection is counted out (under
        C{--workers}, the worker's L{tsecho._accept.Balancer}).
    """

    protocol = TimestampEcho
    noisy = False  # the service logs its listeners; connections log themselves

    def __init__(self, config: ServerConfig, timestamper: Timestamper, clock: IReactorTime) -> None:
        self.config = config
        self.timestamper = timestamper
        self.clock = clock
        _direct.available()  # checked (and any warning logged) once, with the first factory
        self.metrics: ConnectionMetrics = NO_METRICS
        self.on_release: Callable[[], object] = _nothing
        self.connections: set[TimestampEcho] = set()
        self.resetting: set[TimestampEcho] = set()
        self.idle: IdleTimeouts[Expiring] = IdleTimeouts(clock, config.timeout or None)
        self.draining = False
        self._drained: list[defer.Deferred[None]] = []
        self._window: IDelayedCall | None = None  # the end of the shutdown window
        self.turn_room = TURN_BUDGET
        self._behind: deque[TimestampEcho] = deque()  # in the order they fell behind
        self._turn: IDelayedCall | None = None
        self._newest: deque[weakref.ref[TimestampEcho]] = deque(maxlen=RESET_PROBE)

    def reply_prefix(self) -> bytes:
        """
        The C{b"[TIMESTAMP] "} prefix for replies sent now.
        """
        return self.timestamper.prefix(self.clock.seconds())

    def continue_later(self, connection: TimestampEcho) -> None:
        """
        C{connection} spent its budget (or found this turn's spent): let it
        continue on the next turn, after those already waiting.
        """
        self._behind.append(connection)
        if self._turn is None:
            self._turn = self.clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        """
        A new turn of the reactor: a new budget, for the connections that
        waited first.  Those it does not reach (and those that fall behind
        again) wait for the next turn; timers, signals and reads run between.
        """
        self._turn = None
        self.turn_room = TURN_BUDGET
        behind = self._behind
        for _ in range(len(behind)):
            if self.turn_room <= 0:
                break
            behind.popleft().continue_turn()
        if behind and self._turn is None:
            self._turn = self.clock.callLater(0, self._next_turn)

    def admit(self, connection: TimestampEcho) -> bool:
        """
        Count C{connection} in, unless that would pass the connection limit.
        """
        if len(self.connections) >= self.config.max_connections:
            self._count_out_reset()
            if len(self.connections) - len(self.resetting) >= self.config.max_connections:
                return False
        self.connections.add(connection)
        self._newest.append(weakref.ref(connection))
        return True

    def _count_out_reset(self) -> None:
        """
        Count out (and abort) the newest connections that the kernel has
        already reset: in a burst of connect + RST, their resets wait for the
        reactor's next turn, and they must not make live clients busy.
        """
        for ref in list(self._newest):
            connection = ref()
            if connection is not None and connection in self.connections and connection not in self.resetting:
                transport = connection.transport
                if _direct.reset_by_peer(transport):
                    self.resetting.add(connection)
                    cast(ITCPTransport, transport).abortConnection()

    def release(self, connection: TimestampEcho) -> None:
        """
        Count C{connection} out; it has closed.
        """
        self.connections.discard(connection)
        self.resetting.discard(connection)
        self.on_release()
        if not self.connections:
            if self._window is not None and self._window.active():
                self._window.cancel()
            waiting, self._drained = self._drained, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred[None]:
        """
        Close every connection once it has answered all it received and gone
        quiet, or when the shutdown window ends (having answered every line
        received); the result fires when none is left.
        """
        self.draining = True
        self.idle.restart(self.config.drain_quiet)
        if not self.connections:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)
        for connection in list(self.connections):
            connection.start_quiet_period()
        if self._window is None:
            self._window = self.clock.callLater(self.config.shutdown_window, self._end_window)
        return d

    def _end_window(self) -> None:
        """
        The shutdown window is over: every connection still open finishes now.
        """
        for connection in list(self.connections):
            connection.end_shutdown_window()

    def abort_all(self) -> None:
        """
        Abort every connection that is still open.
        """
        for connection in list(self.connections):
            assert connection.transport is not None
            connection.ending = connection.ending or Ending.ABORTED
            cast(ITCPTransport, connection.transport).abortConnection()
