"""
TLS (C{ssl:} endpoints) that keeps the SPEC's half-close rule.

Over TLS a client ends its side with a C{close_notify} alert.  Twisted's
L{TLSMemoryBIOProtocol} answers it at once with its own C{close_notify} and
closes: the protocol never hears C{readConnectionLost}, so an unterminated
last line goes unanswered.  Worse, L{BufferingTLSTransport} (Twisted's
default) holds the replies to the lines that arrived with the alert until
the next reactor turn, and by then the connection is shut: the replies to
complete lines are dropped too.

L{HalfCloseTLSProtocol} lets the wrapped protocol finish first: when the
peer's C{close_notify} arrives, it calls the protocol's C{readConnectionLost}
(if it provides L{IHalfCloseableProtocol}), flushes what it wrote, and only
then lets Twisted send its own C{close_notify} and close.  (TLS 1.3 makes
C{close_notify} a half-close; OpenSSL allows sending after it under TLS 1.2
too, until we send ours.)  Whatever the protocol writes later is not sent:
like a protocol that is not half-closeable, it has one chance.

A client may also end with a TCP FIN and no C{close_notify}.  The TCP
transport then asks its protocol -- Twisted's TLS layer -- for
L{IHalfCloseableProtocol}, finds none, and calls C{connectionLost} at once:
the replies still buffered (in the TLS layer and in the TCP transport) are
dropped and an unterminated last line is never answered.
L{HalfCloseTLSProtocol} provides L{IHalfCloseableProtocol} itself: at the
FIN it gives the wrapped protocol its C{readConnectionLost} (or closes, if
it is not half-closeable), and once TLS shuts down it closes the TCP
connection itself (the peer will send no C{close_notify} to wait for),
after what was written has been sent.  Without C{close_notify} the end of
the data is not authenticated (a truncation would look the same); for an
echo the only effect is that the answer covers less, so what arrived is
answered as on every other stream transport.

The hook is Twisted's private C{_shutdownTLS}, which
C{TLSMemoryBIOProtocol._flushReceiveBIO} calls on the peer's C{close_notify}
(Twisted 11.1 to 26.10 at least).  If a Twisted release drops it,
L{HALF_CLOSE_SUPPORTED} is false and L{server_from_string} leaves C{ssl:}
endpoints exactly as Twisted builds them.

L{server_from_string} serves C{ssl:} descriptions through Twisted's own
parser (every option: C{privateKey}, C{certKey}, C{extraCertChain},
C{dhParameters}, C{sslmethod}, C{interface}, C{backlog}), handing it a
reactor whose C{listenSSL} listens on TCP with L{HalfCloseTLSFactory}.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet import endpoints
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocolFactory,
    IReactorSSL,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

PREFIX = "ssl:"

HALF_CLOSE_SUPPORTED: bool = callable(getattr(BufferingTLSTransport, "_shutdownTLS", None))
"""
Whether this Twisted has the hook L{HalfCloseTLSProtocol} needs.
"""


@implementer(IHalfCloseableProtocol)
class HalfCloseTLSProtocol(BufferingTLSTransport):
    """
    A TLS connection that, on the peer's C{close_notify} or on its TCP FIN,
    lets the wrapped protocol answer what it owes before TLS shuts down.
    """

    _peer_closed = False
    _peer_eof = False

    def readConnectionLost(self) -> None:
        """
        The peer's TCP FIN (without a C{close_notify} first, or after one):
        it sends nothing more.  Let the wrapped protocol answer what it owes
        (if it can half-close) and close; L{_shutdownTLS} then closes TCP.
        """
        self._peer_eof = True
        if self.disconnecting or not self.connected:
            self._close_tcp()  # we are closing already; no close_notify will come back
            return
        if self._peer_closed:
            return  # its close_notify came first: handled there
        self._peer_closed = True
        inner = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if inner is not None:
            inner.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our TCP sending side is shut: TLS can send nothing more, so close.
        """
        self._close_tcp()

    def _close_tcp(self) -> None:
        """
        Close the TCP connection once it has sent what it holds.
        """
        assert self.transport is not None
        self.transport.loseConnection()

    def _shutdownTLS(self) -> None:
        """
        Called by Twisted to send our C{close_notify}: when it is in answer
        to the peer's, first give the wrapped protocol its
        C{readConnectionLost}, then close as it would (sending what it wrote).
        """
        if not self._peer_closed and not self.disconnecting and self._received_close_notify():
            self._peer_closed = True
            inner = IHalfCloseableProtocol(self.wrappedProtocol, None)
            if inner is not None:
                inner.readConnectionLost()
            # Flushes the buffered writes first; a no-op if already closing.
            self.loseConnection()
        super()._shutdownTLS()
        if self._peer_eof:
            # No close_notify will answer ours: close TCP (Twisted closes
            # only once both alerts are in).
            self._close_tcp()

    def _received_close_notify(self) -> bool:
        handle = self.getHandle()
        return handle is not None and bool(handle.get_shutdown() & SSL.RECEIVED_SHUTDOWN)


class HalfCloseTLSFactory(TLSMemoryBIOFactory):
    """
    Wrap each connection of the wrapped factory in L{HalfCloseTLSProtocol}.
    """

    protocol = HalfCloseTLSProtocol


@implementer(IReactorSSL)
class HalfCloseTLSReactor:
    """
    A reactor whose C{listenSSL} serves TLS over C{listenTCP} with
    L{HalfCloseTLSFactory}; everything else is the wrapped reactor's.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,  # noqa: N803 (Twisted's name)
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        """
        Listen on TCP C{port}, adding TLS as C{contextFactory} configures it.
        """
        tls = HalfCloseTLSFactory(contextFactory, False, factory, clock=self._reactor)
        listening: IListeningPort = self._reactor.listenTCP(port, tls, backlog=backlog, interface=interface)
        return listening

    def connectSSL(self, *args: Any, **kwargs: Any) -> Any:
        """
        The wrapped reactor's C{connectSSL}.
        """
        return self._reactor.connectSSL(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def server_from_string(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    Like L{endpoints.serverFromString}, but C{ssl:} endpoints keep half-close
    (when this Twisted allows it; see L{HALF_CLOSE_SUPPORTED}).
    """
    if HALF_CLOSE_SUPPORTED and description.startswith(PREFIX):
        reactor = HalfCloseTLSReactor(reactor)
    endpoint: IStreamServerEndpoint = endpoints.serverFromString(reactor, description)
    return endpoint
