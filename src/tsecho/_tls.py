"""
The workaround behind C{ssl:} listeners: a TLS layer that keeps the SPEC's
half-close rule.  Private: it subclasses Twisted's TLS protocol and overrides
a private method; L{tsecho.listeners} imports it only for C{ssl:}
descriptions, and only once L{missing_internals} finds nothing missing.

Over TLS a client ends its side with a C{close_notify} alert.  Twisted's
L{TLSMemoryBIOProtocol} answers it at once with its own C{close_notify} and
closes: the protocol never hears C{readConnectionLost}, so an unterminated
last line goes unanswered.  Worse, L{BufferingTLSTransport} (Twisted's
default) holds the replies to the lines that arrived with the alert until
the next reactor turn, and by then the connection is shut: the replies to
complete lines are dropped too.

L{HalfCloseTLSProtocol} lets the wrapped protocol finish first: when the
peer's C{close_notify} arrives, it calls the protocol's C{readConnectionLost}
(if it provides L{IHalfCloseableProtocol}) and keeps TLS up until the
protocol closes: the protocol answers what it holds as it would any other
time, within its per-turn budget and under back-pressure (64 KiB of lines
arriving with the alert are not 1.8 MB of replies made at once), and its
C{loseConnection} sends our C{close_notify} after its replies.  (TLS 1.3
makes C{close_notify} a half-close; OpenSSL allows sending after it under
TLS 1.2 too, until we send ours.)  A protocol that is not half-closeable is
closed at once, what it wrote sent first.

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

What it relies on, beyond Twisted's interfaces (L{missing_internals} checks
it at run time, C{tests/test_tls.py}'s canary checks the behaviour):
  - C{TLSMemoryBIOProtocol._shutdownTLS(self)}, private, which
    C{_flushReceiveBIO} calls on the peer's C{close_notify} and which
    flushes the TLS send buffer (Twisted 11.1 to 26.10 at least);
  - C{_flushReceiveBIO(self)}, private, Twisted's receive loop, which then
    calls C{_tlsShutdownFinished(None)}: L{HalfCloseTLSProtocol} leaves the
    loop there with an exception of its own while the wrapped protocol
    still answers, and wraps the loop to catch it; and C{_flushSendBIO};
  - L{BufferingTLSTransport}, whose C{loseConnection} flushes the writes it
    holds back, and the C{clock} argument of L{TLSMemoryBIOFactory};
  - C{TLSMemoryBIOProtocol._tlsShutdownFinished(self, reason)}, private,
    which Twisted calls once TLS has shut down (to break a reference cycle);
  - C{disconnecting}, C{connected}, C{wrappedProtocol} and C{getHandle()} of
    the TLS protocol (L{ProtocolWrapper}'s and L{ISystemHandle}'s).

L{HalfCloseTLSReactor} hands the layer to Twisted's own C{ssl:} parser
(every option: C{privateKey}, C{certKey}, C{extraCertChain},
C{dhParameters}, C{sslmethod}, C{interface}, C{backlog}): its C{listenSSL}
listens on TCP with L{HalfCloseTLSFactory}.
"""

from __future__ import annotations

import inspect
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IHalfCloseableProtocol, IListeningPort, IProtocolFactory, IReactorSSL
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer


def missing_internals() -> str | None:
    """
    Say what of Twisted's TLS internals this module relies on is missing or
    changed in the running Twisted, or return C{None} if all is there.
    """
    shutdown = inspect.getattr_static(TLSMemoryBIOProtocol, "_shutdownTLS", None)
    if not inspect.isfunction(shutdown) or list(inspect.signature(shutdown).parameters) != ["self"]:
        return "TLSMemoryBIOProtocol._shutdownTLS(self) is gone or changed"
    receive = getattr(TLSMemoryBIOProtocol, "_flushReceiveBIO", None)
    for called in ("_shutdownTLS", "_tlsShutdownFinished"):
        if called not in getattr(getattr(receive, "__code__", None), "co_names", ()):
            return f"TLSMemoryBIOProtocol._flushReceiveBIO no longer calls {called}"
    if not inspect.isfunction(inspect.getattr_static(TLSMemoryBIOProtocol, "_flushSendBIO", None)):
        return "TLSMemoryBIOProtocol._flushSendBIO is gone"
    if "clock" not in inspect.signature(TLSMemoryBIOFactory).parameters:
        return "TLSMemoryBIOFactory takes no clock"
    finished = inspect.getattr_static(TLSMemoryBIOProtocol, "_tlsShutdownFinished", None)
    if not inspect.isfunction(finished) or list(inspect.signature(finished).parameters) != ["self", "reason"]:
        return "TLSMemoryBIOProtocol._tlsShutdownFinished(self, reason) is gone or changed"
    return None


class _StillAnsweringError(Exception):
    """
    Raised out of Twisted's receive loop at the peer's C{close_notify} while
    the wrapped protocol still answers, instead of shutting TLS down.
    """


@implementer(IHalfCloseableProtocol)
class HalfCloseTLSProtocol(BufferingTLSTransport):
    """
    A TLS connection that, on the peer's C{close_notify} or on its TCP FIN,
    lets the wrapped protocol answer what it owes before TLS shuts down.
    """

    _peer_closed = False
    _peer_eof = False
    _answering = False  # the peer's close_notify is in; the wrapped protocol answers what it owes

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
        Called by Twisted to send our C{close_notify}.  When it is in answer
        to the peer's, give the wrapped protocol its C{readConnectionLost}
        instead and let it close when it has answered (it then calls
        C{loseConnection}, which comes back here): a protocol that answers
        within a budget per turn and under back-pressure keeps doing so.  A
        protocol that is not half-closeable is closed at once, sending what it
        wrote.
        """
        if not self._peer_closed and not self.disconnecting and self._received_close_notify():
            self._peer_closed = True
            inner = IHalfCloseableProtocol(self.wrappedProtocol, None)
            if inner is not None:
                self._answering = True
                inner.readConnectionLost()
                if not self.disconnecting:
                    return  # it answers on later turns, then closes
            # Flushes the buffered writes first; a no-op if already closing.
            self.loseConnection()
        super()._shutdownTLS()
        if self._peer_eof:
            # No close_notify will answer ours: close TCP (Twisted closes
            # only once both alerts are in).
            self._close_tcp()

    def _tlsShutdownFinished(self, reason: Failure | None) -> None:
        """
        Called by Twisted once TLS has shut down.  The failure that ended it
        (for a client that closed without C{close_notify}, an "Unexpected
        EOF") is made inside a frame that holds it, so the failure, its
        traceback, that frame and this connection (with its OpenSSL
        connection and the wrapped protocol) form a cycle that only the
        cycle collector frees.  Dropping the traceback breaks it; the
        failure's message is kept.
        """
        if reason is None and self._answering and not self.disconnecting:
            # The peer's close_notify, and the wrapped protocol is still
            # answering: TLS must stay up for its replies.  Leave Twisted's
            # receive loop (L{_flushReceiveBIO} catches this).
            raise _StillAnsweringError()
        if reason is not None:
            reason.cleanFailure()
        super()._tlsShutdownFinished(reason)

    def _flushReceiveBIO(self) -> None:
        """
        Deliver what the peer sent, as Twisted does, until its
        C{close_notify}; after it, the peer sends nothing more: only send
        what the wrapped protocol writes.
        """
        if self._answering:
            self._flushSendBIO()
            return
        try:
            super()._flushReceiveBIO()
        except _StillAnsweringError:
            self._flushSendBIO()

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
