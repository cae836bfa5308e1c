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
from twisted.python.failure import Failure
from zope.interface import implementer

PREFIX = "ssl:"

HALF_CLOSE_SUPPORTED: bool = callable(getattr(BufferingTLSTransport, "_shutdownTLS", None))
"""
Whether this Twisted has the hook L{HalfCloseTLSProtocol} needs.
"""


class HalfCloseTLSProtocol(BufferingTLSTransport):
    """
    A TLS connection that, on the peer's C{close_notify}, lets the wrapped
    protocol answer what it owes before TLS shuts down.
    """

    _peer_closed = False

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

    # Issue 9 (memory): Twisted makes the failure that ended TLS (for a client
    # that closed without close_notify, an "Unexpected EOF") inside a frame that
    # holds it, so the failure, its traceback, that frame, this connection and
    # everything it holds (the OpenSSL connection, the wrapped protocol) form a
    # cycle that only the cycle collector frees.  Dropping the traceback breaks
    # it; the failure's message is kept.  Same private hook family as
    # _shutdownTLS (Twisted 23.10 to 26.10 at least); without it, nothing changes.
    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        if reason is not None:
            reason.cleanFailure()
        super()._tlsShutdownFinished(reason)

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
