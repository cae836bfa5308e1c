"""
Helpers for testing code that uses tsecho, without a reactor, a network or
real time.

Like C{treq.testing}, this module is public.  It works at two levels:

  - L{connected_echo} (or L{make_factory} then L{connect}) builds one server
    connection, a L{TimestampEcho} on an in-memory L{StringTransport} with a
    L{task.Clock} as its clock, so a test can feed bytes and assert the exact
    bytes of the replies::

        from tsecho.testing import EXAMPLE_STAMP, connected_echo

        echo = connected_echo(one_shot=True)
        assert echo.send(b"hello\\r\\n") == EXAMPLE_STAMP + b"hello\\r\\n"
        assert echo.transport.disconnecting

  - L{MemoryNetwork} joins the real client (L{EchoSession}, L{EchoClient})
    to a server in memory, in the style of L{twisted.test.iosim}: code that
    talks to a tsecho server is tested against the real thing,
    deterministically; the test decides when bytes move
    (L{MemoryNetwork.flush}) and when time passes (C{clock.advance})::

        from tsecho.testing import EXAMPLE_STAMP, MemoryNetwork, make_factory

        network = MemoryNetwork(make_factory())
        reply = network.session().ask(b"hello")
        network.flush()
        # reply has fired with EXAMPLE_STAMP + b"hello"

Timestamps default to UTC at L{EXAMPLE_TIME}, the moment in SPEC.md's
example, so replies are the same on every machine.  Nothing here changes
global state (such as the process's time zone).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, IProtocolFactory, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from tsecho.client._stream import EchoClient, EchoSession
from tsecho.protocol import ServerConfig, TimestampEcho, TimestampEchoFactory
from tsecho.timestamps import CTIME, Timestamper

__all__ = [
    "EXAMPLE_PEER",
    "EXAMPLE_STAMP",
    "EXAMPLE_TIME",
    "ClosingStringTransport",
    "EchoConnection",
    "MemoryNetwork",
    "TCPStringTransport",
    "connect",
    "connected_echo",
    "make_factory",
]

EXAMPLE_TIME = 1795702188.0
"""
Thursday 26 November 2026, 14:09:48 UTC: the moment of SPEC.md's example reply.
"""

EXAMPLE_STAMP = b"[Thu Nov 26 14:09:48 2026] "
"""
The reply prefix at L{EXAMPLE_TIME} in the default C{ctime} format, in UTC.
"""

EXAMPLE_PEER = IPv4Address("TCP", "127.0.0.1", 54321)
"""
The peer address that L{connect} gives a connection unless told otherwise.
"""


class ClosingStringTransport(StringTransportWithDisconnection):
    """
    A L{StringTransportWithDisconnection} that also sets C{disconnecting}, as
    a real transport does, before it tells the protocol the connection is lost.

    It stands for a transport whose write buffer is always empty: closing it
    ends the connection at once.
    """

    def loseConnection(self) -> None:
        """
        Mark the transport as disconnecting, then end the connection.
        """
        self.disconnecting = True
        super().loseConnection()


@implementer(ITCPTransport)
class TCPStringTransport(StringTransport):
    """
    A L{StringTransport} that can shut down its sending side, as TCP can:
    L{loseWriteConnection} records it and, once the (in-memory, always empty)
    write buffer is "flushed", tells the protocol C{writeConnectionLost}.
    It provides all of L{ITCPTransport}: the socket options are recorded.

    @ivar write_closed: whether L{loseWriteConnection} was called.
    @ivar flush_at_once: if C{False}, C{writeConnectionLost} waits for
        L{finish_writing}, as for a client that has not read its replies yet.
    @ivar protocol: the protocol to tell; L{connect} sets it.
    @ivar no_delay: the C{TCP_NODELAY} option.
    @ivar keep_alive: the C{SO_KEEPALIVE} option.
    """

    write_closed = False
    flush_at_once = True
    protocol: Any = None
    no_delay = False
    keep_alive = False

    def loseWriteConnection(self) -> None:
        """
        Shut down the sending side.
        """
        self.write_closed = True
        if self.flush_at_once:
            self.finish_writing()

    def finish_writing(self) -> None:
        """
        The buffered replies have been sent: tell the protocol.
        """
        self.protocol.writeConnectionLost()

    # The four socket-option methods of ITCPTransport: the options are recorded.
    def getTcpNoDelay(self) -> bool:
        """Whether C{TCP_NODELAY} is set."""
        return self.no_delay

    def getTcpKeepAlive(self) -> bool:
        """Whether C{SO_KEEPALIVE} is set."""
        return self.keep_alive

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Set or clear C{TCP_NODELAY}."""
        self.no_delay = enabled

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """Set or clear C{SO_KEEPALIVE}."""
        self.keep_alive = enabled


def make_factory(
    config: ServerConfig | None = None,
    *,
    clock: Clock | None = None,
    time_format: str = CTIME,
    utc: bool = True,
    now: float = EXAMPLE_TIME,
) -> TimestampEchoFactory:
    """
    Build a L{TimestampEchoFactory} that takes its time from a L{task.Clock}.

    @param config: the per-connection settings; the SPEC's defaults if L{None}.
    @param clock: the clock to use; a new L{task.Clock} set to C{now} if L{None}.
    @param time_format: C{ctime}, C{iso} or a strftime pattern.
    @param utc: format timestamps in UTC (the default here, so that replies do
        not depend on the machine's time zone) instead of local time.
    @param now: the time a new clock starts at.
    @return: the factory; its C{clock} attribute is the clock.
    """
    if clock is None:
        clock = Clock()
        clock.advance(now)
    return TimestampEchoFactory(config or ServerConfig(), Timestamper(time_format, utc), clock)


@attrs.define
class EchoConnection:
    """
    A L{TimestampEcho} connected to an in-memory transport.

    @ivar protocol: the server's protocol.
    @ivar transport: its transport; C{transport.value()} is what it wrote.
    @ivar factory: the factory that built C{protocol}.
    """

    protocol: TimestampEcho
    transport: StringTransport
    factory: TimestampEchoFactory

    @property
    def clock(self) -> Clock:
        """
        The factory's clock: advance it to make time pass for the connection.
        """
        clock: Clock = self.factory.clock  # type: ignore[assignment]
        return clock

    def take(self) -> bytes:
        """
        Return everything written to the transport so far, and forget it.
        """
        written: bytes = self.transport.value()
        self.transport.clear()
        return written

    def send(self, *chunks: bytes) -> bytes:
        """
        Deliver each of C{chunks} to the protocol in its own C{dataReceived}
        call, then return (and forget) everything the server wrote meanwhile.
        """
        for chunk in chunks:
            self.protocol.dataReceived(chunk)
        return self.take()

    def half_close(self) -> bytes:
        """
        Shut down the client's sending side (C{readConnectionLost}), then
        return (and forget) everything the server wrote in answer.
        """
        self.protocol.readConnectionLost()
        return self.take()

    def lose(self, reason: Failure | None = None) -> None:
        """
        End the connection as the transport would: call C{connectionLost}.

        @param reason: why; a clean close (L{connectionDone}) if L{None}.
        """
        self.transport.connected = False
        self.protocol.connectionLost(reason or connectionDone)


def connect(
    factory: TimestampEchoFactory,
    *,
    peer: IAddress = EXAMPLE_PEER,
    transport_type: type[StringTransport] = StringTransport,
) -> EchoConnection:
    """
    Open one connection from C{factory} on a new in-memory transport.

    @param peer: the client's address, as the transport reports it.
    @param transport_type: the kind of transport, built as
        C{transport_type(peerAddress=peer)}:
          - L{StringTransport} (the default) only records C{disconnecting},
            as for a client that has not read its replies yet: call
            L{EchoConnection.lose} to end the connection;
          - L{ClosingStringTransport}: when the protocol closes (or aborts)
            it, C{connectionLost} follows at once, as for a client that read
            every reply;
          - L{TCPStringTransport} can half-close, so the server's close
            lingers, as on a real socket.
    @return: the connection, with C{connectionMade} already called.
    """
    protocol = factory.buildProtocol(peer)
    assert isinstance(protocol, TimestampEcho)
    transport = transport_type(peerAddress=peer)
    if isinstance(transport, (StringTransportWithDisconnection, TCPStringTransport)):
        transport.protocol = protocol
    protocol.makeConnection(transport)
    return EchoConnection(protocol=protocol, transport=transport, factory=factory)


def connected_echo(
    *,
    time_format: str = CTIME,
    utc: bool = True,
    now: float = EXAMPLE_TIME,
    peer: IAddress = EXAMPLE_PEER,
    transport_type: type[StringTransport] = StringTransport,
    **config: Any,
) -> EchoConnection:
    """
    Build a factory and open one connection from it, in one call.

    @param config: L{ServerConfig} fields (C{max_line}, C{max_connections},
        C{timeout}, C{one_shot}, C{quiet}, C{drain_quiet}, C{close_timeout},
        C{linger}); the SPEC's defaults for the others.
    @return: see L{connect}; L{make_factory} describes the other parameters.
    """
    factory = make_factory(ServerConfig(**config), time_format=time_format, utc=utc, now=now)
    return connect(factory, peer=peer, transport_type=transport_type)


class _ServerTransport(iosim.FakeTransport):
    """
    The server's end of an in-memory connection.  iosim ignores
    C{loseWriteConnection}; here it does what shutting down a TCP socket's
    sending side does to a client that does not half-close, as
    L{EchoClient} does not: at end of input it closes, and the connection
    ends once what was sent has been delivered.
    """

    def loseWriteConnection(self) -> None:
        self.loseConnection()


class MemoryNetwork:
    """
    The real tsecho client talking to a server in memory.

    Each connection joins a new L{EchoClient} to a new protocol from
    C{factory} through a pair of L{twisted.test.iosim} transports.  Nothing
    moves until the test calls L{flush}, and time passes only when it
    advances L{clock}, so a test of code built on L{EchoSession} (or on
    L{EchoClient}) is deterministic and needs no reactor::

        network = MemoryNetwork(make_factory(one_shot=True))
        session = network.session()
        replies = [session.ask(b"a"), session.ask(b"b")]
        network.flush()
        # both have fired, over two connections: len(network.pumps) == 2

    @param factory: makes the server side of each connection: usually a
        L{TimestampEchoFactory} from L{make_factory}, or any factory (such as
        C{Factory.forProtocol(SomeFakeServer)}) to test against a
        misbehaving server.  If it refuses a connection (its
        C{buildProtocol} returns L{None}), the attempt fails with
        L{ConnectionRefusedError <twisted.internet.error.ConnectionRefusedError>}.
    @param clock: the clock of the client's timers; by default the factory's
        clock if it is a L{Clock}, so that one C{advance} moves the time of
        both sides, else a new one.
    @ivar clock: that clock.
    @ivar clients: the client protocol of each connection, in order.
    @ivar servers: the server protocol of each connection, in order.
    @ivar pumps: the L{iosim.IOPump} of each connection, in order.
    """

    def __init__(self, factory: IProtocolFactory, clock: Clock | None = None) -> None:
        if clock is None:
            server_clock = getattr(factory, "clock", None)
            clock = server_clock if isinstance(server_clock, Clock) else Clock()
        self.factory = factory
        self.clock = clock
        self.clients: list[EchoClient] = []
        self.servers: list[Any] = []
        self.pumps: list[iosim.IOPump] = []

    def connect(self) -> defer.Deferred[EchoClient]:
        """
        Open a new connection: the C{connect} function that L{EchoSession}
        takes.

        @return: fires with the connected L{EchoClient}; nothing has been
            sent or received yet.
        """
        server = self.factory.buildProtocol(EXAMPLE_PEER)
        if server is None:
            return defer.fail(error.ConnectionRefusedError("the server's factory refused the connection"))
        client, server, pump = iosim.connectedServerAndClient(
            lambda: server,
            EchoClient,
            serverTransportFactory=lambda protocol: _ServerTransport(protocol, isServer=True),
            clock=self.clock,
        )
        self.clients.append(client)
        self.servers.append(server)
        self.pumps.append(pump)
        return defer.succeed(client)

    def session(self, timeout: float | None = None, target: str = "tsecho in memory") -> EchoSession:
        """
        An L{EchoSession} whose connections are made by L{connect}, with its
        timer on L{clock}.

        @param timeout: seconds to wait for each reply; L{None} waits forever.
        @param target: names the server in error messages.
        """
        return EchoSession(self.connect, self.clock, target, timeout)

    def flush(self) -> bool:
        """
        Deliver bytes (and closes) both ways until nothing moves, over every
        connection, including those opened while flushing.  Time does not
        pass.

        @return: whether anything moved.
        """
        moved_at_all = False
        moved = True
        while moved:
            moved = False
            for pump in list(self.pumps):
                moved = pump.flush(advanceClock=False) or moved
            moved_at_all = moved_at_all or moved
        return moved_at_all
