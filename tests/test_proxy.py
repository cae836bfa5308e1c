"""
Tests for L{tsecho._proxy}: the PROXY protocol (v1, v2) in front of tsecho,
with half-close kept and the real client named in the log; the route from
L{tsecho.listeners.server_from_string}, its fallback, and a canary for what
the workaround relies on in Twisted's private PROXY modules.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator

import pytest
import pytest_twisted
import twisted
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from realsockets import raw_exchange, serving, tcp_port
from tsecho import listeners
from tsecho.listeners import server_from_string
from tsecho.logs import CONNECTION_CLOSED
from tsecho.protocol import TimestampEcho
from tsecho.testing import EXAMPLE_STAMP, ClosingStringTransport, make_factory

try:
    from twisted.protocols.haproxy._info import ProxyInfo

    from tsecho import _proxy
    from tsecho._proxy import HEADER_TIMEOUT, ProxyProtocolWrapper, ProxyServerEndpoint, ProxyWrappingFactory
except ImportError as e:  # the canary's first cry
    raise ImportError(f"Twisted {twisted.__version__} changed what tsecho._proxy relies on: {e}") from e

BALANCER = IPv4Address("TCP", "10.0.0.2", 51000)
V1 = b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 21567\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
TWISTED_CHANGED = f"Twisted {twisted.__version__} changed what tsecho._proxy relies on"


def v2_header(
    source: tuple[str, int] = ("192.0.2.7", 40000), destination: tuple[str, int] = ("192.0.2.1", 21567)
) -> bytes:
    """
    A PROXY v2 header (command PROXY, TCP over IPv4 or IPv6) naming C{source}.
    """
    family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    addresses = socket.inet_pton(family, source[0]) + socket.inet_pton(family, destination[0])
    addresses += struct.pack("!HH", source[1], destination[1])
    family_byte = b"\x21" if family == socket.AF_INET6 else b"\x11"
    return V2_SIGNATURE + b"\x21" + family_byte + struct.pack("!H", len(addresses)) + addresses


def slices(data: bytes, size: int) -> Iterator[bytes]:
    """
    C{data} cut into pieces of C{size} bytes.
    """
    return (data[i : i + size] for i in range(0, len(data), size))


def connected_from(events: list[LogEvent]) -> list[str]:
    """
    The peers named by the server's per-connection summary events.
    """
    return [e["peer"] for e in events if e.get("log_format") == CONNECTION_CLOSED]


class WrapperTests(SynchronousTestCase):
    """
    L{ProxyProtocolWrapper} around a real L{TimestampEcho}, on an in-memory
    transport whose peer is the load balancer.
    """

    def connect(self) -> tuple[ProxyProtocolWrapper, ClosingStringTransport, ProxyWrappingFactory]:
        factory = ProxyWrappingFactory(make_factory())
        wrapper = factory.buildProtocol(BALANCER)
        assert isinstance(wrapper, ProxyProtocolWrapper)
        transport = ClosingStringTransport(peerAddress=BALANCER)
        transport.protocol = wrapper
        wrapper.makeConnection(transport)
        return wrapper, transport, factory

    def test_v1_every_slice_size(self) -> None:
        """
        A v1 header followed by lines, delivered in pieces of every size, gets
        exactly the replies plain TCP would, and the server logs the client
        the header names, not the load balancer; C{getHost} is the address
        the header says the client connected to.
        """
        data = V1 + b"a\nb\r\n\xff\x00c\n"
        expected = EXAMPLE_STAMP + b"a\n" + EXAMPLE_STAMP + b"b\r\n" + EXAMPLE_STAMP + b"\xff\x00c\n"
        for size in range(1, len(data) + 1):
            with capturedLogs() as events:
                wrapper, transport, _ = self.connect()
                for piece in slices(data, size):
                    wrapper.dataReceived(piece)
                wrapper.connectionLost(connectionDone)
            self.assertEqual(transport.value(), expected, f"slice size {size}")
            self.assertEqual(connected_from(list(events)), ["192.0.2.7:40000"])
            self.assertEqual(wrapper.getPeer(), IPv4Address("TCP", "192.0.2.7", 40000))
            self.assertEqual(wrapper.getHost(), IPv4Address("TCP", "192.0.2.1", 21567))

    def test_v2_every_slice_size(self) -> None:
        """
        A v2 (binary) header works the same, in pieces of every size.
        """
        data = v2_header() + b"x\r\ny\n"
        expected = EXAMPLE_STAMP + b"x\r\n" + EXAMPLE_STAMP + b"y\n"
        for size in range(1, len(data) + 1):
            with capturedLogs() as events:
                wrapper, transport, _ = self.connect()
                for piece in slices(data, size):
                    wrapper.dataReceived(piece)
                wrapper.connectionLost(connectionDone)
            self.assertEqual(transport.value(), expected, f"slice size {size}")
            self.assertEqual(connected_from(list(events)), ["192.0.2.7:40000"])

    def test_v2_ipv6(self) -> None:
        """
        A v2 header for an IPv6 client names it as C{[address]:port}.
        """
        with capturedLogs() as events:
            wrapper, transport, _ = self.connect()
            wrapper.dataReceived(v2_header(("2001:db8::7", 40001), ("2001:db8::1", 21567)) + b"six\n")
            wrapper.connectionLost(connectionDone)
        self.assertEqual(transport.value(), EXAMPLE_STAMP + b"six\n")
        [peer] = connected_from(list(events))
        host, port = peer.rsplit(":", 1)
        self.assertEqual((ipaddress.ip_address(host.strip("[]")), port), (ipaddress.ip_address("2001:db8::7"), "40001"))
        self.assertIn(":", host)
        self.assertTrue(host.startswith("[") and host.endswith("]"))
        peer_address = wrapper.getPeer()
        assert isinstance(peer_address, IPv6Address)
        self.assertEqual(ipaddress.ip_address(peer_address.host), ipaddress.ip_address("2001:db8::7"))

    def test_unknown_source_falls_back_to_balancer(self) -> None:
        """
        C{PROXY UNKNOWN} (a header without addresses) leaves the load
        balancer as the peer, and our own address as the host.
        """
        with capturedLogs() as events:
            wrapper, transport, _ = self.connect()
            wrapper.dataReceived(b"PROXY UNKNOWN\r\nq\n")
            wrapper.connectionLost(connectionDone)
        self.assertEqual(transport.value(), EXAMPLE_STAMP + b"q\n")
        self.assertEqual((wrapper.getPeer(), wrapper.getHost()), (BALANCER, transport.getHost()))
        self.assertEqual(connected_from(list(events)), ["10.0.0.2:51000"])

    def test_half_close_answers_everything(self) -> None:
        """
        The wrapper provides L{IHalfCloseableProtocol} even after it copied
        the transport's interfaces, and passes the client's EOF on: every
        line is answered, the unterminated last one with C{\\r\\n}, then the
        connection closes.
        """
        wrapper, transport, _ = self.connect()
        self.assertTrue(IHalfCloseableProtocol.providedBy(wrapper))
        wrapper.dataReceived(V1 + b"one\ntwo\r\nthree\r")
        self.assertEqual(transport.value(), EXAMPLE_STAMP + b"one\n" + EXAMPLE_STAMP + b"two\r\n")
        self.assertTrue(transport.connected)
        wrapper.readConnectionLost()
        self.assertEqual(
            transport.value(),
            EXAMPLE_STAMP + b"one\n" + EXAMPLE_STAMP + b"two\r\n" + EXAMPLE_STAMP + b"three\r\r\n",
        )
        self.assertFalse(transport.connected)

    def test_write_connection_lost_forwarded(self) -> None:
        """
        C{writeConnectionLost} reaches the wrapped protocol, which closes.
        """
        wrapper, transport, _ = self.connect()
        wrapper.dataReceived(V1)
        inner = wrapper.wrappedProtocol
        assert isinstance(inner, TimestampEcho)
        wrapper.writeConnectionLost()
        self.assertFalse(transport.connected)

    def test_eof_before_header_closes(self) -> None:
        """
        An EOF before the header is complete closes the connection; the
        wrapped protocol was never connected, so it logs nothing.
        """
        with capturedLogs() as events:
            wrapper, transport, factory = self.connect()
            wrapper.dataReceived(b"PROXY TCP4 192.0")
            wrapper.readConnectionLost()
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(connected_from(list(events)), [])
        self.assertEqual(factory.protocols, {})
        inner = wrapper.wrappedProtocol
        assert isinstance(inner, TimestampEcho)
        self.assertEqual(inner.factory.connections, set())

    def test_write_connection_lost_before_header_closes(self) -> None:
        """
        Our sending side shut before the header is complete: the connection
        closes; the wrapped protocol, never connected, hears nothing.
        """
        wrapper, transport, factory = self.connect()
        wrapper.dataReceived(b"PROXY TCP4 192.0")
        wrapper.writeConnectionLost()
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.protocols, {})

    def test_clock_without_wrapped_clock(self) -> None:
        """
        A wrapped factory without a C{clock} of its own: the header is timed
        on the global reactor.
        """
        from twisted.internet import reactor

        self.assertIs(ProxyWrappingFactory(Factory()).clock, reactor)

    def test_no_header_refused(self) -> None:
        """
        A client that speaks without a PROXY header (here, plain tsecho
        lines or HTTP) is logged and disconnected; nothing is answered.
        """
        for data in (b"hello\n", b"GET / HTTP/1.1\r\n", b"PROXZ TCP4 1.2.3.4\r\n"):
            with capturedLogs() as events:
                wrapper, transport, _ = self.connect()
                wrapper.dataReceived(data)
            self.assertFalse(transport.connected, data)
            self.assertEqual(transport.value(), b"")
            self.assertIn("closing 10.0.0.2:51000: no PROXY header", [e["log_format"].format(**e) for e in events])

    def test_invalid_header_refused(self) -> None:
        """
        A header that starts right but does not parse closes the connection.
        """
        for data in (
            b"PROXY TCP4 192.0.2.7 192.0.2.1 port 21567\r\nx\n",
            b"PROXY TCP9 192.0.2.7 192.0.2.1 40000 21567\r\nx\n",
            b"PROXY TCP4 192.0.2.7\r\nx\n",
            b"PROXY " + b"9" * 120,
            V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4 + b"x\n",
        ):
            wrapper, transport, _ = self.connect()
            wrapper.dataReceived(data)
            self.assertFalse(transport.connected, data)
            self.assertEqual(transport.value(), b"")

    def test_invalid_v1_fields_refused(self) -> None:
        """
        A v1 header whose fields are not what the PROXY protocol allows is
        refused as an invalid header (as a bad v2 header is): nothing is
        answered and the load balancer's address is logged, never the claim.
        """
        for header in (
            b"PROXY TCP4 999.2.3.4 192.0.2.1 40000 21567\r\n",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 99999 21567\r\n",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 -1 21567\r\n",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 +80\r\n",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 4_000 21567\r\n",
            b"PROXY TCP6 192.0.2.7 192.0.2.1 40000 21567\r\n",
            b"PROXY TCP4 2001:db8::7 2001:db8::1 40000 21567\r\n",
            b"PROXY TCP6 fe80::7%eth0 fe80::1 40000 21567\r\n",
            b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 21567 extra\r\n",
            b"PROXY TCP4 192.0.2.7  192.0.2.1 40000 21567\r\n",
            b"PROXY TCP4 192.0.2.7\x1b[2J 192.0.2.1 40000 21567\r\n",
        ):
            with capturedLogs() as events:
                wrapper, transport, _ = self.connect()
                wrapper.dataReceived(header + b"x\n")
            self.assertFalse(transport.connected, header)
            self.assertEqual(transport.value(), b"", header)
            self.assertEqual([formatEvent(e) for e in events], ["closing 10.0.0.2:51000: invalid PROXY header"], header)

    def test_v1_parser_refusing_checked_fields(self) -> None:
        """
        A header that tsecho's checks let through but Twisted's v1 parser
        refuses with a C{ValueError} (none does today; a future Twisted
        might) is refused as an invalid header, not raised.
        """

        def refuse(cls: type, line: bytes) -> ProxyInfo:
            raise ValueError(line)

        parser = _proxy.V1Parser
        self.addCleanup(setattr, parser, "parse", parser.__dict__["parse"])  # the class method itself
        parser.parse = classmethod(refuse)  # type: ignore[assignment,method-assign]
        with capturedLogs() as events:
            wrapper, transport, _ = self.connect()
            wrapper.dataReceived(V1 + b"x\n")
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"")
        self.assertEqual([formatEvent(e) for e in events], ["closing 10.0.0.2:51000: invalid PROXY header"])

    def test_valid_v1_fields_accepted(self) -> None:
        """
        The checks let through what the PROXY protocol allows: ports 0 and
        65535, IPv6 (IPv4-mapped too).
        """
        for header, peer in (
            (b"PROXY TCP4 192.0.2.7 192.0.2.1 0 65535\r\n", "192.0.2.7:0"),
            (b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 1\r\n", "[2001:db8::7]:65535"),
            (b"PROXY TCP6 ::ffff:192.0.2.7 ::1 5 6\r\n", "[::ffff:192.0.2.7]:5"),
        ):
            with capturedLogs() as events:
                wrapper, transport, _ = self.connect()
                wrapper.dataReceived(header + b"x\n")
                wrapper.connectionLost(connectionDone)
            self.assertEqual(transport.value(), EXAMPLE_STAMP + b"x\n", header)
            self.assertEqual(connected_from(list(events)), [peer])

    def test_claimed_unix_path_logged_escaped(self) -> None:
        """
        A v2 header may claim a UNIX path as the client: a newline and an
        ESC sequence in it reach the log escaped, on one line.
        """
        path = b"/tmp/x\n2026-11-29T00:00:00+0000 [tsecho.protocol#info] forged\x1b[2J"
        addresses = path.ljust(108, b"\x00") + b"/run/tsecho.sock".ljust(108, b"\x00")
        header = V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(addresses)) + addresses
        with capturedLogs() as events:
            wrapper, transport, _ = self.connect()
            wrapper.dataReceived(header + b"u\n")
            wrapper.connectionLost(connectionDone)
        self.assertEqual(transport.value(), EXAMPLE_STAMP + b"u\n")
        [text] = [formatEvent(e) for e in events if e.get("log_format") == CONNECTION_CLOSED]
        self.assertTrue(
            text.startswith(
                "connection from /tmp/x\\n2026-11-29T00:00:00+0000 [tsecho.protocol#info] forged\\x1b[2J closed after"
            ),
            text,
        )

    def test_header_timeout(self) -> None:
        """
        A connection that never completes its header is aborted after
        L{HEADER_TIMEOUT} seconds on the factory's clock, not before.
        """
        wrapper, transport, factory = self.connect()
        wrapper.dataReceived(b"PROXY")
        clock = factory.wrappedFactory.clock
        clock.advance(HEADER_TIMEOUT - 0.1)
        self.assertTrue(transport.connected)
        clock.advance(0.2)
        self.assertFalse(transport.connected)

    def test_header_timer_cancelled(self) -> None:
        """
        Once the header is parsed, the header timer no longer runs; the
        connection stays open (the server's own idle timeout applies).
        """
        wrapper, transport, factory = self.connect()
        wrapper.dataReceived(V1)
        clock = factory.wrappedFactory.clock
        clock.advance(HEADER_TIMEOUT + 1)
        self.assertTrue(transport.connected)
        self.assertEqual(len(factory.wrappedFactory.connections), 1)

    def test_connection_counted_only_after_header(self) -> None:
        """
        The server counts the connection (for C{--max-connections}) from the
        moment the header names the client, and releases it on close.
        """
        wrapper, transport, factory = self.connect()
        inner_factory = factory.wrappedFactory
        self.assertEqual(inner_factory.connections, set())
        wrapper.dataReceived(V1)
        self.assertEqual(inner_factory.connections, {wrapper.wrappedProtocol})
        transport.loseConnection()
        self.assertEqual(inner_factory.connections, set())
        self.assertEqual(factory.protocols, {})

    def test_pending_headers_counted(self) -> None:
        """
        The factory counts the connections whose header is still to come
        (a worker counts them as held, L{tsecho.worker.count_connections}):
        one that sends it moves to the server's count; one that closes
        before it is counted out, and C{on_release} is told.
        """
        released: list[int] = []
        first, _, factory = self.connect()
        factory.on_release = lambda: released.append(factory.pending)
        second = factory.buildProtocol(BALANCER)
        assert isinstance(second, ProxyProtocolWrapper)
        transport = ClosingStringTransport(peerAddress=BALANCER)
        transport.protocol = second
        second.makeConnection(transport)
        self.assertEqual(factory.pending, 2)
        first.dataReceived(V1)
        self.assertEqual(factory.pending, 1)
        second.connectionLost(connectionDone)
        self.assertEqual((factory.pending, released), (0, [0]))
        first.connectionLost(connectionDone)
        self.assertEqual((factory.pending, released), (0, [0]))


class ServerFromStringTests(SynchronousTestCase):
    """
    L{server_from_string} routes C{haproxy:} through L{ProxyServerEndpoint}.
    """

    def test_haproxy_wrapped(self) -> None:
        """
        C{haproxy:tcp:...} gives our endpoint around Twisted's TCP endpoint.
        """
        endpoint = server_from_string(MemoryReactor(), "haproxy:tcp:21567:interface=127.0.0.1")
        assert isinstance(endpoint, ProxyServerEndpoint)
        self.assertIsInstance(endpoint.wrapped, endpoints.TCP4ServerEndpoint)

    def test_others_untouched(self) -> None:
        """
        Every other description is Twisted's own endpoint.
        """
        endpoint = server_from_string(MemoryReactor(), "tcp:21567")
        self.assertIsInstance(endpoint, endpoints.TCP4ServerEndpoint)

    def test_listen_wraps_factory(self) -> None:
        """
        Listening wraps the server's factory in L{ProxyWrappingFactory}.
        """
        reactor = MemoryReactor()
        server_from_string(reactor, "haproxy:tcp:21567").listen(make_factory())
        factory = reactor.tcpServers[0][1]
        self.assertIsInstance(factory, ProxyWrappingFactory)

    def test_bad_inner_description(self) -> None:
        """
        A bad description inside C{haproxy:} is an error, as for Twisted.
        """
        with pytest.raises((ValueError, TypeError)):
            server_from_string(MemoryReactor(), "haproxy:nonsense:1")

    def test_fallback_when_internals_change(self) -> None:
        """
        On a Twisted whose PROXY-protocol internals changed, C{haproxy:}
        listeners are Twisted's own, and one warning, however many
        listeners, names the Twisted version, the change and what is lost.
        """
        self.patch(_proxy, "missing_internals", lambda: "changed or gone: V1Parser.PROXYSTR")
        listeners._proxy_endpoint.cache_clear()
        self.addCleanup(listeners._proxy_endpoint.cache_clear)
        reactor = MemoryReactor()
        with capturedLogs() as events:
            for port in (21567, 21568):
                server_from_string(reactor, f"haproxy:tcp:{port}").listen(make_factory())
        for _port, factory, *_ in reactor.tcpServers:
            self.assertEqual(type(factory).__name__, "HAProxyWrappingFactory")  # Twisted's own
        [warning] = [formatEvent(e) for e in events]
        self.assertEqual(
            warning,
            f"Twisted {twisted.__version__} lacks what tsecho's haproxy: listeners rely on "
            "(changed or gone: V1Parser.PROXYSTR): they are Twisted's own, without half-close behind PROXY "
            "(replies owed at a client's end of input are lost), the client's own address in connection "
            "log lines, the PROXY header timeout and the strict PROXY v1 checks",
        )


class TwistedInternalsCanary(SynchronousTestCase):
    """
    What L{tsecho._proxy} relies on in Twisted's private
    C{twisted.protocols.haproxy} modules still holds in the Twisted under
    test.  If one of these fails, that Twisted changed it: C{tsecho._proxy}
    must be updated (until then, if its import fails or
    L{_proxy.missing_internals} notices, C{haproxy:} listeners fall back to
    Twisted's own).
    """

    def test_nothing_missing(self) -> None:
        """
        L{_proxy.missing_internals} finds all it looks for, so C{haproxy:}
        listeners use the workaround (every supported Twisted, 23.10 to 26.10).
        """
        self.assertIsNone(_proxy.missing_internals(), TWISTED_CHANGED)

    def test_changes_detected(self) -> None:
        """
        L{_proxy.missing_internals} names every change it finds.
        """

        class Bare:
            pass

        self.patch(_proxy, "V1Parser", Bare)
        self.patch(_proxy, "ProxyInfo", lambda header, source: None)
        self.assertEqual(
            _proxy.missing_internals(),
            "changed or gone: V1Parser.PROXYSTR, the class method V1Parser.parse, V1Parser.feed calling parse, "
            "ProxyInfo's fields",
        )
        self.patch(_proxy, "V2Parser", Bare)
        self.assertIn("V2Parser.PREFIX, ", _proxy.missing_internals() or "")
        self.assertIn("V2Parser.feed, ", _proxy.missing_internals() or "")

    def test_parsers(self) -> None:
        """
        C{feed} returns C{(None, None)} until a header is complete (given at
        least 16 bytes, as tsecho's wrapper does for v2), then the
        L{ProxyInfo} and the bytes after it; C{V1Parser.feed} goes through the
        class method C{parse} (which tsecho overrides); a bad v1 header
        raises C{InvalidProxyHeader}.
        """
        from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
        from twisted.protocols.haproxy._v1parser import V1Parser
        from twisted.protocols.haproxy._v2parser import V2Parser

        source = IPv4Address("TCP", "192.0.2.7", 40000)
        destination = IPv4Address("TCP", "192.0.2.1", 21567)
        parsed: list[bytes] = []

        class Recording(V1Parser):
            @classmethod
            def parse(cls, line: bytes) -> ProxyInfo:
                parsed.append(line)
                return super().parse(line)

        for parser, header in ((Recording(), V1), (V2Parser(), v2_header())):
            self.assertEqual(parser.feed(header[:16]), (None, None), TWISTED_CHANGED)
            info, rest = parser.feed(header[16:] + b"x\n")
            assert isinstance(info, ProxyInfo), TWISTED_CHANGED
            self.assertEqual((info.source, info.destination, rest), (source, destination, b"x\n"), TWISTED_CHANGED)
        self.assertEqual(parsed, [V1.rstrip(b"\r\n")], f"{TWISTED_CHANGED}: V1Parser.feed calls parse")
        self.assertRaises(InvalidProxyHeader, V1Parser.parse, b"PROXY TCP4 192.0.2.7")


@pytest.mark.parametrize("header", [V1, v2_header()], ids=["v1", "v2"])
@pytest_twisted.ensureDeferred
async def test_real_socket_half_close(header: bytes) -> None:
    """
    Over a real socket to C{--listen haproxy:tcp:0}, a raw client sends a
    PROXY header and lines, then shuts down its sending side: it gets every
    reply (the unterminated last line with C{\\r\\n}), and the server logs
    the client the header names.
    """
    lines = [b"line %d\n" % n for n in range(50)]
    with capturedLogs() as events:  # until the server has stopped: the connection has ended
        async with serving(["--listen", "haproxy:tcp:0:interface=127.0.0.1", "--utc"]) as service:
            replies = await raw_exchange(
                socket.AF_INET, ("127.0.0.1", tcp_port(service)), header + b"".join(lines) + b"last"
            )
    stamp_length = len(EXAMPLE_STAMP)
    received = replies.split(b"\n")
    assert received[-1] == b""
    assert len(received) == 52
    assert [r[stamp_length:] for r in received[:-2]] == [line.rstrip(b"\n") for line in lines]
    assert received[-2][stamp_length:] == b"last\r"
    assert connected_from(list(events)) == ["192.0.2.7:40000"]


@pytest_twisted.ensureDeferred
async def test_real_socket_without_header_closed() -> None:
    """
    Over a real socket, a client that sends no PROXY header gets nothing
    and is disconnected.
    """
    async with serving(["--listen", "haproxy:tcp:0:interface=127.0.0.1"]) as service:
        replies = await raw_exchange(socket.AF_INET, ("127.0.0.1", tcp_port(service)), b"hello\n", half_close=False)
    assert replies == b""
