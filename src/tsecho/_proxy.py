"""
The workaround behind C{haproxy:} listeners: the PROXY protocol (v1 and v2)
in front of tsecho, without losing half-close.  Private: it is built on
the header parsers in Twisted's private C{twisted.protocols.haproxy._*} modules, so
L{tsecho.listeners} imports it only for C{haproxy:} descriptions, and only
once L{missing_internals} finds nothing missing.

Twisted's C{haproxy:} endpoint wraps each connection in
C{HAProxyProtocolWrapper}, a C{ProtocolWrapper} that does not provide
L{IHalfCloseableProtocol}: at a client's EOF the transport then closes both
halves and the replies still owed are lost.  It also connects the wrapped
protocol before the header is read, so C{connectionMade} sees the load
balancer's address, not the client's.

L{ProxyProtocolWrapper} fixes both: it forwards half-close to the wrapped
protocol, and connects the wrapped protocol only once the header has named
the real client.  L{ProxyServerEndpoint} puts it in front of any stream
endpoint.

The wrapper is built on Twisted's public L{policies.ProtocolWrapper}; what
it relies on beyond Twisted's public API are the header parsers of
C{twisted.protocols.haproxy} (private modules, stable since Twisted 16.1;
L{missing_internals} checks them at run time, C{tests/test_proxy.py}'s
canary checks their behaviour):
  - C{V1Parser} and C{V2Parser}: their C{PROXYSTR} and C{PREFIX}, and
    C{feed(data)} returning C{(ProxyInfo, rest)} or C{(None, None)}, with
    C{V1Parser.feed} calling the class method C{parse} (which
    L{_V1Parser} overrides);
  - C{ProxyInfo(header, source, destination)} and C{InvalidProxyHeader}.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from tsecho._logtext import describe_address

HEADER_TIMEOUT = 30.0
"""
Seconds a connection may take to send its PROXY header before it is closed.
(A load balancer sends it at once; until then the connection does not count
against C{--max-connections}.)
"""

_V2_MIN = 16
_V1_MIN = 8

log = Logger()


class _V1Parser(V1Parser):
    """
    Twisted's v1 parser, plus the bare C{PROXY UNKNOWN} header (which it
    refuses, though the PROXY protocol allows it and HAProxy sends it), and
    every field checked first (Twisted's parser takes C{999.2.3.4}, port
    C{-1} or C{99999}, IPv4 addresses after C{TCP6}, and extra fields).
    """

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):
            return ProxyInfo(line, None, None)
        check_v1_fields(line)
        try:
            return super().parse(line)
        except ValueError:
            raise InvalidProxyHeader() from None


_V1_ADDRESS_TYPES: dict[bytes, type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]] = {
    b"TCP4": ipaddress.IPv4Address,
    b"TCP6": ipaddress.IPv6Address,
}
_MAX_PORT = 65535


def check_v1_fields(line: bytes) -> None:
    """
    Check a PROXY v1 header line (without its CRLF) naming TCP endpoints:
    exactly C{PROXY TCP4|TCP6 SOURCE DESTINATION SPORT DPORT}, single
    spaces, addresses of the family named (no IPv6 zone), ports decimal
    0-65535.

    @raise InvalidProxyHeader: if it is anything else.
    """
    fields = line.split(b" ")
    if len(fields) != 6 or fields[1] not in _V1_ADDRESS_TYPES:
        raise InvalidProxyHeader()
    address_type = _V1_ADDRESS_TYPES[fields[1]]
    for text in fields[2:4]:
        try:
            address = address_type(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise InvalidProxyHeader() from None
        if getattr(address, "scope_id", None) is not None:
            raise InvalidProxyHeader()
    for port in fields[4:6]:
        if not (port.isdigit() and len(port) <= len(b"65535") and int(port) <= _MAX_PORT):
            raise InvalidProxyHeader()


@implementer(IHalfCloseableProtocol)
class ProxyProtocolWrapper(ProtocolWrapper):
    """
    Read a PROXY v1 or v2 header, then connect the wrapped protocol, whose
    C{transport.getPeer()} now names the client the header announced.

    Half-close passes through: C{readConnectionLost}/C{writeConnectionLost}
    reach the wrapped protocol if it provides L{IHalfCloseableProtocol}
    (otherwise the connection is closed, as a plain transport would).
    A header that is invalid or does not arrive within
    L{ProxyWrappingFactory.header_timeout} closes the connection.
    """

    factory: ProxyWrappingFactory

    def __init__(self, factory: ProxyWrappingFactory, wrappedProtocol: IProtocol) -> None:  # noqa: N803 (Twisted's name)
        super().__init__(factory, wrappedProtocol)  # type: ignore[arg-type]
        self._parser: _V1Parser | V2Parser | None = None
        self._info: ProxyInfo | None = None
        self._pending = b""
        self._inner_connected = False
        self._header_timer: Any = None

    def makeConnection(self, transport: ITransport) -> None:
        """
        Connect to C{transport}, but hold the wrapped protocol back until the
        header is parsed.
        """
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.factory.pending += 1
        self._header_timer = self.factory.clock.callLater(self.factory.header_timeout, self._header_timed_out)

    def dataReceived(self, data: bytes) -> None:
        if self._inner_connected:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            self._pending += data
            parser = self._choose_parser(self._pending)
            if parser is None:
                return
            self._parser = parser
            data, self._pending = self._pending, b""
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self._refuse("invalid PROXY header")
            return
        if info is None:
            return
        self._info = info
        self._cancel_header_timer()
        self._inner_connected = True
        self.factory.pending -= 1
        self.wrappedProtocol.makeConnection(cast(ITransport, self))
        if remaining:
            self.wrappedProtocol.dataReceived(remaining)

    def getPeer(self) -> IAddress:
        """
        The client the header named; until then, or if it named none
        (C{PROXY UNKNOWN}, C{LOCAL}), the load balancer.
        """
        if self._info is not None and self._info.source is not None:
            return self._info.source
        assert self.transport is not None
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        The address the header says the client connected to, or ours.
        """
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        assert self.transport is not None
        return self.transport.getHost()

    def _choose_parser(self, head: bytes) -> _V1Parser | V2Parser | None:
        """
        Pick the parser that C{head}, the first bytes received, calls for, or
        return C{None} to wait for more; refuse anything that is no header.
        """
        if len(head) >= _V2_MIN and head[:12] == V2Parser.PREFIX and head[12] & 0xF0 == 0x20:
            return V2Parser()
        if len(head) >= _V1_MIN and head[:5] == V1Parser.PROXYSTR:
            return _V1Parser()
        if len(head) < _V2_MIN and (V2Parser.PREFIX.startswith(head[:12]) or V1Parser.PROXYSTR.startswith(head[:5])):
            return None
        self._refuse("no PROXY header")
        return None

    def _refuse(self, why: str) -> None:
        assert self.transport is not None
        log.warn("closing {peer}: {why}", peer=describe_address(self.transport.getPeer()), why=why)
        self._cancel_header_timer()
        self.transport.loseConnection()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        assert self.transport is not None
        log.warn(
            "aborting {peer}: no PROXY header within {timeout} seconds",
            peer=describe_address(self.transport.getPeer()),
            timeout=self.factory.header_timeout,
        )
        cast(ITCPTransport, self.transport).abortConnection()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def readConnectionLost(self) -> None:
        """
        The client will send no more: let the wrapped protocol answer what it
        owes, if it can half-close; otherwise close.
        """
        inner = IHalfCloseableProtocol(self.wrappedProtocol, None) if self._inner_connected else None
        if inner is not None:
            inner.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Nothing more can be sent: tell the wrapped protocol, or close.
        """
        inner = IHalfCloseableProtocol(self.wrappedProtocol, None) if self._inner_connected else None
        if inner is not None:
            inner.writeConnectionLost()
        else:
            self.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_header_timer()
        if self._inner_connected:
            super().connectionLost(reason)
        else:
            self.factory.unregisterProtocol(self)
            self.factory.pending -= 1
            self.factory.on_release()


class ProxyWrappingFactory(WrappingFactory):
    """
    Wrap each connection of C{wrappedFactory} in a L{ProxyProtocolWrapper}.

    @ivar clock: times the header; the wrapped factory's C{clock} if it has
        one, else the global reactor.
    @ivar header_timeout: seconds allowed for the PROXY header.
    @ivar pending: the connections whose header has not arrived yet.
    @ivar on_release: called when one of those closes (under C{--workers},
        the worker's L{tsecho._accept.Balancer}).
    """

    protocol = ProxyProtocolWrapper
    noisy = False  # the service logs its listeners
    header_timeout = HEADER_TIMEOUT

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:  # noqa: N803 (Twisted's name)
        super().__init__(wrappedFactory)
        clock = getattr(wrappedFactory, "clock", None)
        if clock is None:
            from twisted.internet import reactor

            clock = reactor
        self.clock: IReactorTime = clock
        self.pending = 0
        self.on_release: Callable[[], object] = lambda: None


@implementer(IStreamServerEndpoint)
class ProxyServerEndpoint:
    """
    A server endpoint that speaks the PROXY protocol on top of another one.
    """

    def __init__(self, wrapped: IStreamServerEndpoint) -> None:
        self.wrapped = wrapped

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:  # noqa: N803 (Twisted's name)
        return self.wrapped.listen(ProxyWrappingFactory(protocolFactory))


def missing_internals() -> str | None:
    """
    Say what of Twisted's private PROXY-protocol code this module relies on
    is missing or changed in the running Twisted, or return C{None} if all
    is there.  (A module that is gone fails the import of this one first.)
    """
    checks = (
        (isinstance(getattr(V1Parser, "PROXYSTR", None), bytes), "V1Parser.PROXYSTR"),
        (isinstance(getattr(V2Parser, "PREFIX", None), bytes), "V2Parser.PREFIX"),
        (isinstance(inspect.getattr_static(V1Parser, "parse", None), classmethod), "the class method V1Parser.parse"),
        (_refers_to(V1Parser, "feed", "parse"), "V1Parser.feed calling parse"),
        (_refers_to(V2Parser, "feed", "parse"), "V2Parser.feed"),
        (list(inspect.signature(ProxyInfo).parameters) == ["header", "source", "destination"], "ProxyInfo's fields"),
    )
    missing = [what for present, what in checks if not present]
    return f"changed or gone: {', '.join(missing)}" if missing else None


def _refers_to(cls: type, method: str, name: str) -> bool:
    """
    Whether C{cls.method} exists and its code names C{name}.
    """
    code = getattr(getattr(cls, method, None), "__code__", None)
    return name in getattr(code, "co_names", ())
