"""
Helpers for testing code that uses tsecho, without a reactor or real time.

Like C{treq.testing} or C{klein}'s test helpers, this module is public: it
builds a L{TimestampEcho} connected to an in-memory
L{StringTransport}, with a L{task.Clock} as its clock, so a test can feed
bytes and assert the exact bytes of the replies::

    from tsecho.testing import connected_echo

    echo = connected_echo(one_shot=True)
    assert echo.send(b"hello\\r\\n") == b"[Thu Nov 26 14:09:48 2026] hello\\r\\n"
    assert echo.transport.disconnecting

Timestamps default to UTC at L{EXAMPLE_TIME}, the moment in SPEC.md's
example, so replies are the same on every machine.
"""

from __future__ import annotations

import os
import time
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tsecho.protocol import ServerConfig, TimestampEcho, TimestampEchoFactory
from tsecho.timestamps import CTIME, Timestamper

__all__ = [
    "EXAMPLE_PEER",
    "EXAMPLE_STAMP",
    "EXAMPLE_TIME",
    "ClosingStringTransport",
    "EchoConnection",
    "TCPStringTransport",
    "connect",
    "connected_echo",
    "make_factory",
    "use_time_zone",
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
class TCPStringTransport(StringTransport):  # type: ignore[misc]
    """
    A L{StringTransport} that can shut down its sending side, as TCP can:
    L{loseWriteConnection} records it and, once the (in-memory, always empty)
    write buffer is "flushed", tells the protocol C{writeConnectionLost}.

    @ivar write_closed: whether L{loseWriteConnection} was called.
    @ivar flush_at_once: if C{False}, C{writeConnectionLost} waits for
        L{finish_writing}, as for a client that has not read its replies yet.
    """

    write_closed = False
    flush_at_once = True
    protocol: Any = None

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


def use_time_zone(case: SynchronousTestCase, zone: str) -> None:
    """
    Make C{zone} (a C{TZ} value such as C{"EST5EDT"}) the local time zone
    for the rest of C{case}, so local-time replies are the same everywhere.
    """
    old = os.environ.get("TZ")

    def restore() -> None:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()

    os.environ["TZ"] = zone
    time.tzset()
    case.addCleanup(restore)


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
    close_at_once: bool = False,
    tcp: bool = False,
) -> EchoConnection:
    """
    Open one connection from C{factory} on a new in-memory transport.

    @param peer: the client's address, as the transport reports it.
    @param close_at_once: if C{True}, the transport is a
        L{ClosingStringTransport}: when the protocol closes it (or aborts it),
        C{connectionLost} follows at once, as for a client that read every
        reply.  If C{False} (the default), the transport is a plain
        L{StringTransport} that only records C{disconnecting}, as for a client
        that has not read its replies yet; call L{EchoConnection.lose} to end
        the connection.
    @param tcp: if C{True}, the transport is a L{TCPStringTransport}, which
        can half-close (so the server's close lingers, as on a real socket).
    @return: the connection, with C{connectionMade} already called.
    """
    protocol = factory.buildProtocol(peer)
    assert isinstance(protocol, TimestampEcho)
    transport: Any
    if close_at_once:
        transport = ClosingStringTransport(peerAddress=peer)
        transport.protocol = protocol
    elif tcp:
        transport = TCPStringTransport(peerAddress=peer)
        transport.protocol = protocol
    else:
        transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return EchoConnection(protocol=protocol, transport=transport, factory=factory)


def connected_echo(
    *,
    time_format: str = CTIME,
    utc: bool = True,
    now: float = EXAMPLE_TIME,
    peer: IAddress = EXAMPLE_PEER,
    close_at_once: bool = False,
    tcp: bool = False,
    **config: Any,
) -> EchoConnection:
    """
    Build a factory and open one connection from it, in one call.

    @param config: L{ServerConfig} fields (C{max_line}, C{max_connections},
        C{timeout}, C{one_shot}, C{quiet}, C{drain_quiet}, C{close_timeout},
        C{linger}); the SPEC's
        defaults for the others.
    @return: see L{connect}; L{make_factory} describes the other parameters.
    """
    factory = make_factory(ServerConfig(**config), time_format=time_format, utc=utc, now=now)
    return connect(factory, peer=peer, close_at_once=close_at_once, tcp=tcp)
