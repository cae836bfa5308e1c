"""
Tests for L{tsecho._tls}: C{ssl:} endpoints that keep the SPEC's half-close
rule, in memory.  The server is the protocol that the C{ssl:} route builds,
on a L{StringTransport}; the client is pyOpenSSL on memory BIOs.  No
sockets, no real time: the reactor's clock never moves, so nothing here
waits for a later reactor turn.  (The same over real sockets is in
C{test_endpoints.py}.)  L{TwistedInternalsCanary} checks what the workaround
relies on in Twisted's TLS code.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import trustme
import twisted
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocol, IProtocolFactory
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tsecho import listeners
from tsecho._proxy import ProxyWrappingFactory
from tsecho.listeners import server_from_string
from tsecho.protocol import REPLY_BUDGET, TimestampEcho
from tsecho.testing import EXAMPLE_STAMP, make_factory

try:
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory, TLSMemoryBIOProtocol

    from tsecho import _tls
except ImportError as e:  # the canary's first cry
    raise ImportError(f"Twisted {twisted.__version__} changed what tsecho._tls relies on: {e}") from e

PEER = IPv4Address("TCP", "127.0.0.1", 54321)
PAYLOAD = b"one\ntwo\r\n\xff\x00three\r"
REPLIES = EXAMPLE_STAMP + b"one\n" + EXAMPLE_STAMP + b"two\r\n" + EXAMPLE_STAMP + b"\xff\x00three\r\r\n"
SLICE_SIZES = (1, 2, 3, 5, 7, 64, 1 << 20)
TWISTED_CHANGED = f"Twisted {twisted.__version__} changed what tsecho._tls relies on"


def write_certificates(directory: Path) -> dict[str, Path]:
    """
    Write a root CA (C{ca}), an intermediate CA it signed (C{chain}), and a
    key (C{key}) and certificate (C{cert}, the leaf alone) for C{localhost}
    that the intermediate signed, as PEM files in C{directory}.  A client
    that trusts only the root verifies the server only if the server sends
    the intermediate too (C{extraCertChain}).
    """
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("localhost")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.pem" for name in ("ca", "chain", "key", "cert")}
    root.cert_pem.write_to_path(str(paths["ca"]))
    intermediate.cert_pem.write_to_path(str(paths["chain"]))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    return paths


class MemoryTLSClient:
    """
    A TLS client on memory BIOs, talking to a server protocol through the
    server's L{StringTransport}.

    @ivar connection: the client's pyOpenSSL connection.
    """

    def __init__(self, server: IProtocol, transport: StringTransport, ca: Path, max_version: int | None = None) -> None:
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.load_verify_locations(str(ca))
        context.set_verify(SSL.VERIFY_PEER)
        if max_version is not None:
            context.set_max_proto_version(max_version)
        self.connection = SSL.Connection(context, None)
        self.connection.set_tlsext_host_name(b"localhost")
        self.connection.set_connect_state()
        self.server = server
        self.transport = transport

    def flush(self, slice_size: int = 1 << 20) -> None:
        """
        Deliver what the client has sent to the server, C{slice_size} bytes
        per C{dataReceived}, and what the server has sent to the client.
        """
        while True:
            try:
                data = self.connection.bio_read(1 << 20)
            except SSL.WantReadError:
                break
            for start in range(0, len(data), slice_size):
                self.server.dataReceived(data[start : start + slice_size])
        if self.transport.value():
            self.connection.bio_write(self.transport.value())
            self.transport.clear()

    def handshake(self) -> None:
        """
        Complete the TLS handshake (verifying the server against C{ca}).
        """
        for _ in range(10):
            try:
                self.connection.do_handshake()
            except SSL.WantReadError:
                self.flush()
            else:
                self.flush()  # the server's last flight, e.g. TLS 1.3 tickets
                return
        raise AssertionError("no handshake in 10 round trips")

    def receive(self) -> tuple[bytes, bool]:
        """
        Read what the server sent; say whether its C{close_notify} followed.
        """
        received = b""
        while True:
            try:
                received += self.connection.recv(1 << 20)
            except SSL.WantReadError:
                return received, False
            except SSL.ZeroReturnError:
                return received, True


class RouteTests(SynchronousTestCase):
    """
    L{server_from_string} builds C{ssl:} endpoints from Twisted's own
    parser, listening on TCP with L{_tls.HalfCloseTLSFactory}.
    """

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="tsecho-tls-"))
        self.addCleanup(shutil.rmtree, directory)
        self.paths = write_certificates(directory)
        self.reactor = MemoryReactorClock()

    def description(self, extra: str = "") -> str:
        """
        An C{ssl:} description with the test key and leaf certificate.
        """
        return f"ssl:8443:privateKey={self.paths['key']}:certKey={self.paths['cert']}{extra}"

    def listen(self, description: str, factory: IProtocolFactory) -> _tls.HalfCloseTLSFactory:
        """
        Listen on C{description} with C{factory}; return the TLS factory
        that the reactor was asked to listen with on TCP.
        """
        server_from_string(self.reactor, description).listen(factory)
        self.assertEqual(self.reactor.sslServers, [])
        [(_port, tls_factory, _backlog, _interface)] = self.reactor.tcpServers
        assert isinstance(tls_factory, _tls.HalfCloseTLSFactory)
        return tls_factory

    def connect(
        self, factory: IProtocolFactory, extra: str | None = None, max_version: int | None = None
    ) -> tuple[TLSMemoryBIOProtocol, MemoryTLSClient]:
        """
        Listen on an C{ssl:} description (with C{extra} options, by default
        the intermediate as C{extraCertChain}) with C{factory}, connect an
        in-memory client to it and complete the handshake.
        """
        if extra is None:
            extra = f":extraCertChain={self.paths['chain']}"
        tls_factory = self.listen(self.description(extra), factory)
        server = tls_factory.buildProtocol(PEER)
        assert isinstance(server, _tls.HalfCloseTLSProtocol)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        client = MemoryTLSClient(server, transport, self.paths["ca"], max_version)
        client.handshake()
        return server, client

    def receive_until_closed(self, factory: IProtocolFactory, client: MemoryTLSClient) -> bytes:
        """
        Let the server answer turn by turn (a turn has a reply budget),
        passing what it sends to C{client}, until its C{close_notify}; return
        what the client received.
        """
        received, closed, turns = b"", False, 0
        while not closed:
            turns += 1
            self.assertLessEqual(turns, 100)
            factory.clock.advance(0)  # type: ignore[attr-defined]
            client.flush()
            more, closed = client.receive()
            received += more
        return received

    def test_options_kept(self) -> None:
        """
        The port, C{interface}, C{backlog} and the certificate options reach
        the TCP listener and its TLS layer: a client that trusts only the
        root CA verifies the server, whose intermediate comes from
        C{extraCertChain}.
        """
        extra = f":interface=127.0.0.2:backlog=7:extraCertChain={self.paths['chain']}"
        server, client = self.connect(make_factory(), extra)
        [(port, _tls_factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, backlog, interface), (8443, 7, "127.0.0.2"))
        self.assertEqual(len(client.connection.get_peer_cert_chain() or []), 2)
        self.assertIsInstance(server.wrappedProtocol, TimestampEcho)

    def test_without_chain_verification_fails(self) -> None:
        """
        Without C{extraCertChain} the same client cannot verify the server:
        L{test_options_kept} does show the option at work.
        """
        self.assertRaises(SSL.Error, self.connect, make_factory(), "")

    def test_haproxy_over_ssl(self) -> None:
        """
        C{haproxy:ssl:...} gets the same TLS layer, around the PROXY wrapper.
        """
        tls_factory = self.listen("haproxy:" + self.description(), make_factory())
        self.assertIsInstance(tls_factory.wrappedFactory, ProxyWrappingFactory)

    def test_other_endpoints_untouched(self) -> None:
        """
        Descriptions other than C{ssl:} go to Twisted with the real reactor.
        """
        factory = make_factory()
        server_from_string(self.reactor, "tcp:8080:interface=127.0.0.1").listen(factory)
        self.assertEqual(self.reactor.tcpServers, [(8080, factory, 50, "127.0.0.1")])

    def test_reactor_forwards_the_rest(self) -> None:
        """
        L{_tls.HalfCloseTLSReactor} changes C{listenSSL} only: C{connectSSL}
        and every other attribute are the wrapped reactor's.
        """
        wrapper = _tls.HalfCloseTLSReactor(self.reactor)
        factory = ClientFactory.forProtocol(Protocol)
        wrapper.connectSSL("127.0.0.1", 8443, factory, None)
        self.assertEqual([c[:3] for c in self.reactor.sslClients], [("127.0.0.1", 8443, factory)])
        self.assertEqual(wrapper.seconds(), self.reactor.seconds())

    def test_fallback_when_internals_change(self) -> None:
        """
        On a Twisted whose TLS internals changed, C{ssl:} (and
        C{haproxy:ssl:}) listeners are Twisted's own, and one warning, however
        many listeners, names the Twisted version, the change and what is lost.
        """
        self.patch(_tls, "missing_internals", lambda: "TLSMemoryBIOProtocol._shutdownTLS(self) is gone or changed")
        listeners._tls_reactor.cache_clear()
        self.addCleanup(listeners._tls_reactor.cache_clear)
        factory = make_factory()
        with capturedLogs() as events:
            server_from_string(self.reactor, self.description()).listen(factory)
            server_from_string(self.reactor, "haproxy:" + self.description()).listen(factory)
        self.assertEqual(self.reactor.tcpServers, [])
        [(port, listening_factory, _context, _backlog, _interface), (_, proxy_factory, *_)] = self.reactor.sslServers
        self.assertEqual((port, listening_factory), (8443, factory))
        self.assertIsInstance(proxy_factory, ProxyWrappingFactory)
        [warning] = [formatEvent(e) for e in events]
        self.assertEqual(
            warning,
            f"Twisted {twisted.__version__} lacks what tsecho's ssl: listeners rely on "
            "(TLSMemoryBIOProtocol._shutdownTLS(self) is gone or changed): they are Twisted's own, without "
            "half-close over TLS (replies owed when a client ends with close_notify or a TCP FIN may be lost)",
        )

    def test_fallback_when_the_check_fails(self) -> None:
        """
        A check that itself fails (here, Twisted code changed beyond what it
        foresaw) also means Twisted's own C{ssl:}, with the error named.
        """

        def broken() -> str | None:
            raise TypeError("unexpected")

        self.patch(_tls, "missing_internals", broken)
        listeners._tls_reactor.cache_clear()
        self.addCleanup(listeners._tls_reactor.cache_clear)
        with capturedLogs() as events:
            server_from_string(self.reactor, self.description()).listen(make_factory())
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(len(self.reactor.sslServers), 1)
        [warning] = [formatEvent(e) for e in events]
        self.assertIn("ssl: listeners rely on (TypeError: unexpected): they are Twisted's own", warning)

    def test_close_notify_every_slice_size(self) -> None:
        """
        Lines, an unterminated last line and the client's C{close_notify},
        sent together and delivered in slices of every size, under TLS 1.2
        and 1.3: every line is answered (the last with C{\\r\\n}) before the
        server's own C{close_notify}, and the server closes.
        """
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            for size in SLICE_SIZES:
                server, client = self.connect(make_factory(), max_version=version)
                client.connection.sendall(PAYLOAD)
                self.assertFalse(client.connection.shutdown())  # close_notify sent, none received yet
                client.flush(size)
                self.assertEqual(client.receive(), (REPLIES, True), (version, size))
                assert isinstance(server.transport, StringTransport)
                self.assertTrue(server.transport.disconnecting)
                self.reactor.tcpServers.clear()

    def test_close_notify_after_the_lines(self) -> None:
        """
        A C{close_notify} that arrives after the lines (in a later read) still
        lets the unterminated last line be answered.
        """
        _server, client = self.connect(make_factory())
        client.connection.sendall(b"first\n")
        client.flush()
        client.connection.sendall(b"last")
        client.connection.shutdown()
        client.flush()
        self.assertEqual(client.receive(), (EXAMPLE_STAMP + b"first\n" + EXAMPLE_STAMP + b"last\r\n", True))

    def test_fin_after_close_notify(self) -> None:
        """
        A TCP FIN after the client's C{close_notify}, while the wrapped
        protocol still answers: it was told of the end of input once, at
        the C{close_notify}, and is not told again.
        """

        @implementer(IHalfCloseableProtocol)
        class StillAnswering(Protocol):
            ends = 0

            def readConnectionLost(self) -> None:
                self.ends += 1  # and keeps the connection open, still answering

            def writeConnectionLost(self) -> None:
                pass

        server, client = self.connect(Factory.forProtocol(StillAnswering))
        assert isinstance(server, _tls.HalfCloseTLSProtocol)
        client.connection.shutdown()
        client.flush()
        inner = server.wrappedProtocol
        assert isinstance(inner, StillAnswering)
        self.assertEqual(inner.ends, 1)
        server.readConnectionLost()
        self.assertEqual(inner.ends, 1)
        assert isinstance(server.transport, StringTransport)
        self.assertFalse(server.transport.disconnecting)

    def test_sending_side_shut(self) -> None:
        """
        Our TCP sending side shut (C{writeConnectionLost}): TLS can send
        nothing more, so the connection closes.
        """
        server, _client = self.connect(make_factory())
        assert isinstance(server, _tls.HalfCloseTLSProtocol)
        server.writeConnectionLost()
        assert isinstance(server.transport, StringTransport)
        self.assertTrue(server.transport.disconnecting)

    def test_close_notify_while_paused(self) -> None:
        """
        A connection that back-pressure paused (its TCP transport, through
        the TLS layer, paused the protocol) answers nothing while paused,
        even after the client's C{close_notify}, and everything once resumed:
        the producer registered through TLS works, and TLS stays up until the
        protocol closes.
        """
        server, client = self.connect(make_factory())
        echo = server.wrappedProtocol
        assert isinstance(echo, TimestampEcho)
        assert isinstance(server.transport, StringTransport)
        self.assertTrue(server.transport.streaming)
        server.transport.producer.pauseProducing()
        self.assertTrue(echo.paused)
        client.connection.sendall(PAYLOAD)
        client.connection.shutdown()
        client.flush()
        self.assertEqual(client.receive(), (b"", False))
        self.assertFalse(server.transport.disconnecting)
        server.transport.producer.resumeProducing()
        client.flush()
        self.assertEqual(client.receive(), (REPLIES, True))
        self.assertTrue(server.transport.disconnecting)

    def test_close_notify_with_a_flood(self) -> None:
        """
        65,536 empty lines and the client's C{close_notify}, delivered in one
        read, under TLS 1.2 and 1.3: the replies are made within the
        per-turn budget (TLS stays up meanwhile), all of them, then the
        server's C{close_notify}.  A client that never reads costs the server
        a turn's replies, not 1.8 MB.
        """
        for version in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            factory = make_factory()
            server, client = self.connect(factory, max_version=version)
            client.connection.sendall(b"\n" * 65536)
            client.connection.shutdown()
            client.flush()
            first, closed = client.receive()
            self.assertLessEqual(len(first), 2 * REPLY_BUDGET, version)
            self.assertFalse(closed)
            rest = self.receive_until_closed(factory, client)
            self.assertEqual(first + rest, (EXAMPLE_STAMP + b"\n") * 65536, version)
            assert isinstance(server.transport, StringTransport)
            self.assertTrue(server.transport.disconnecting)
            self.reactor.tcpServers.clear()

    def test_bytes_after_close_notify(self) -> None:
        """
        Bytes that arrive after the client's C{close_notify} while the
        server still answers (a client may send nothing more, yet a segment
        may come) are not read: TLS stays up, the replies all arrive, then
        the server's own C{close_notify}.
        """
        factory = make_factory()
        server, client = self.connect(factory)
        client.connection.sendall(b"\n" * 65536)
        client.connection.shutdown()
        client.flush()
        server.dataReceived(b"late")
        self.assertEqual(self.receive_until_closed(factory, client), (EXAMPLE_STAMP + b"\n") * 65536)

    def test_close_notify_then_never_reading(self) -> None:
        """
        A client that sends a flood and its C{close_notify}, then never
        reads, does not hold the connection open for ever: the idle timeout
        closes it (our C{close_notify} is sent), as for any client that stops
        reading.
        """
        factory = make_factory()
        server, client = self.connect(factory)
        assert isinstance(server.transport, StringTransport)
        server.transport.producer.pauseProducing()  # its replies wait unsent
        client.connection.sendall(b"\n" * 65536)
        client.connection.shutdown()
        client.flush()
        self.assertFalse(server.transport.disconnecting)
        factory.clock.advance(factory.config.timeout)  # type: ignore[attr-defined]
        self.assertTrue(server.transport.disconnecting)
        client.flush()
        self.assertEqual(client.receive(), (b"", True))

    def test_not_half_closeable(self) -> None:
        """
        A wrapped protocol without L{IHalfCloseableProtocol} is closed as
        Twisted would close it, but what it wrote for the data that came with
        the C{close_notify} is sent first.
        """

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data)

        self.assertIsNone(IHalfCloseableProtocol(Echo(), None))
        server, client = self.connect(Factory.forProtocol(Echo))
        client.connection.sendall(b"echo me")
        client.connection.shutdown()
        client.flush()
        self.assertEqual(client.receive(), (b"echo me", True))
        assert isinstance(server.transport, StringTransport)
        self.assertTrue(server.transport.disconnecting)

    def test_server_closes_first(self) -> None:
        """
        When the server closes first (one-shot mode), the client's answering
        C{close_notify} does not call the protocol again.
        """
        from tsecho.protocol import ServerConfig

        server, client = self.connect(make_factory(ServerConfig(one_shot=True)))
        client.connection.sendall(b"once\nignored\n")
        client.flush()
        self.assertEqual(client.receive(), (EXAMPLE_STAMP + b"once\n", True))
        client.connection.shutdown()
        client.flush()
        self.assertEqual(client.receive(), (b"", True))
        assert isinstance(server.transport, StringTransport)
        self.assertTrue(server.transport.disconnecting)

    def fin_exchange(self, factory: IProtocolFactory, *parts: bytes) -> tuple[TLSMemoryBIOProtocol, tuple[bytes, bool]]:
        """
        Send each of C{parts} in its own read, then end with a TCP FIN and no
        C{close_notify}: the TCP transport calls C{readConnectionLost} on its
        protocol, the TLS layer.  Return the server and what the client got.
        """
        self.reactor.tcpServers.clear()
        server, client = self.connect(factory)
        for part in parts:
            client.connection.sendall(part)
            client.flush()
        self.assertTrue(IHalfCloseableProtocol.providedBy(server))
        assert isinstance(server, _tls.HalfCloseTLSProtocol)
        server.readConnectionLost()
        client.flush()
        return server, client.receive()

    def test_fin_without_close_notify(self) -> None:
        """
        Lines and an unterminated last line, then a TCP FIN without
        C{close_notify}, in one read or several: every line is answered (the
        last with C{\r\n}), then the server sends its C{close_notify} and
        closes TCP (no C{close_notify} will answer it).
        """
        for parts in ([PAYLOAD], [b"one\n", b"two\r\n\xff\x00three\r"]):
            server, received = self.fin_exchange(make_factory(), *parts)
            self.assertEqual(received, (REPLIES, True), parts)
            assert isinstance(server.transport, StringTransport)
            self.assertTrue(server.transport.disconnecting)

    def test_fin_not_half_closeable(self) -> None:
        """
        At a FIN, a wrapped protocol without L{IHalfCloseableProtocol} is
        closed, after what it wrote is sent.
        """

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data)

        server, received = self.fin_exchange(Factory.forProtocol(Echo), b"echo me")
        self.assertEqual(received, (b"echo me", True))
        assert isinstance(server.transport, StringTransport)
        self.assertTrue(server.transport.disconnecting)

    def test_fin_while_closing(self) -> None:
        """
        A FIN that comes while the server is already closing (one-shot: it
        sent its C{close_notify} and waits for the client's) closes TCP: no
        C{close_notify} can come any more.
        """
        from tsecho.protocol import ServerConfig

        server, client = self.connect(make_factory(ServerConfig(one_shot=True)))
        client.connection.sendall(b"once\n")
        client.flush()
        self.assertEqual(client.receive(), (EXAMPLE_STAMP + b"once\n", True))
        assert isinstance(server.transport, StringTransport)
        self.assertFalse(server.transport.disconnecting)  # TLS waits for the client's close_notify
        server.readConnectionLost()
        self.assertTrue(server.transport.disconnecting)

    def test_fin_before_handshake(self) -> None:
        """
        A FIN before the handshake has finished closes the connection at once.
        """
        tls_factory = self.listen(self.description(), make_factory())
        server = tls_factory.buildProtocol(PEER)
        assert isinstance(server, _tls.HalfCloseTLSProtocol)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        server.readConnectionLost()
        self.assertTrue(transport.disconnecting)


class RecordingTLSProtocol(BufferingTLSTransport):
    """
    Twisted's own TLS protocol, recording each call of C{_shutdownTLS} as
    whether the peer's C{close_notify} had arrived by then.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shutdown_calls: list[bool] = []

    def _shutdownTLS(self) -> None:
        handle = self.getHandle()
        self.shutdown_calls.append(bool(handle.get_shutdown() & SSL.RECEIVED_SHUTDOWN))
        super()._shutdownTLS()


class TwistedInternalsCanary(SynchronousTestCase):
    """
    What L{tsecho._tls} relies on in Twisted's TLS code, beyond Twisted's
    interfaces, still holds in the Twisted under test.  If one of these
    fails, that Twisted changed it: C{tsecho._tls} must be updated (until
    then, if L{_tls.missing_internals} notices, C{ssl:} listeners fall back
    to Twisted's own).
    """

    def connect(self, protocol: type[Protocol]) -> tuple[RecordingTLSProtocol, MemoryTLSClient]:
        """
        Twisted's TLS layer (recording) around C{protocol}, handshaken with
        an in-memory client.
        """
        directory = Path(tempfile.mkdtemp(prefix="tsecho-tls-"))
        self.addCleanup(shutil.rmtree, directory)
        paths = write_certificates(directory)
        pem = paths["key"].read_bytes() + paths["cert"].read_bytes() + paths["chain"].read_bytes()
        options = PrivateCertificate.loadPEM(pem).options()
        options.extraCertChain = [Certificate.loadPEM(paths["chain"].read_bytes()).original]
        factory = TLSMemoryBIOFactory(options, False, Factory.forProtocol(protocol), clock=MemoryReactorClock())
        factory.protocol = RecordingTLSProtocol
        server = factory.buildProtocol(PEER)
        assert isinstance(server, RecordingTLSProtocol)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        client = MemoryTLSClient(server, transport, paths["ca"])
        client.handshake()
        return server, client

    def test_nothing_missing(self) -> None:
        """
        L{_tls.missing_internals} finds all it looks for, so C{ssl:}
        listeners use the workaround (every supported Twisted, 23.10 to 26.10).
        """
        self.assertIsNone(_tls.missing_internals(), TWISTED_CHANGED)

    def test_changes_detected(self) -> None:
        """
        L{_tls.missing_internals} tells each change it looks for:
        C{_shutdownTLS} gone or taking arguments, C{_flushReceiveBIO} no
        longer calling it or C{_tlsShutdownFinished}, C{_flushSendBIO}
        gone, C{_tlsShutdownFinished} gone or changed, a factory that takes
        no clock.
        """

        class Gone:
            def _flushReceiveBIO(self) -> None:
                self._shutdownTLS()  # type: ignore[attr-defined]

        class Changed(Gone):
            def _shutdownTLS(self, reason: object) -> None:
                pass

        class NotCalled:
            def _shutdownTLS(self) -> None:
                pass

            def _flushReceiveBIO(self) -> None:
                pass

        class NoFinish:
            def _shutdownTLS(self) -> None:
                pass

            def _flushReceiveBIO(self) -> None:
                self._shutdownTLS()

        for fake, why in (
            (NoFinish, "TLSMemoryBIOProtocol._flushReceiveBIO no longer calls _tlsShutdownFinished"),
            (Gone, "TLSMemoryBIOProtocol._shutdownTLS(self) is gone or changed"),
            (Changed, "TLSMemoryBIOProtocol._shutdownTLS(self) is gone or changed"),
            (NotCalled, "TLSMemoryBIOProtocol._flushReceiveBIO no longer calls _shutdownTLS"),
        ):
            self.patch(_tls, "TLSMemoryBIOProtocol", fake)
            self.assertEqual(_tls.missing_internals(), why)

        class NoSendFlush(NoFinish):
            def _flushReceiveBIO(self) -> None:
                self._shutdownTLS()
                self._tlsShutdownFinished(None)

            def _tlsShutdownFinished(self, reason: object) -> None:
                pass

        class FinishChanged(NoSendFlush):
            def _flushSendBIO(self) -> None:
                pass

            def _tlsShutdownFinished(self) -> None:  # type: ignore[override]
                pass

        for fake, why in (
            (NoSendFlush, "TLSMemoryBIOProtocol._flushSendBIO is gone"),
            (FinishChanged, "TLSMemoryBIOProtocol._tlsShutdownFinished(self, reason) is gone or changed"),
        ):
            self.patch(_tls, "TLSMemoryBIOProtocol", fake)
            self.assertEqual(_tls.missing_internals(), why)
        self.patch(_tls, "TLSMemoryBIOProtocol", TLSMemoryBIOProtocol)
        self.patch(_tls, "TLSMemoryBIOFactory", lambda context, is_client, wrapped: None)
        self.assertEqual(_tls.missing_internals(), "TLSMemoryBIOFactory takes no clock")

    def test_shutdown_hook_called_at_close_notify(self) -> None:
        """
        Twisted calls C{_shutdownTLS} once the peer's C{close_notify} is in
        (the hook L{_tls.HalfCloseTLSProtocol} overrides), before the wrapped
        protocol hears C{connectionLost}; and C{_shutdownTLS} sends our
        C{close_notify}.
        """
        server, client = self.connect(Protocol)
        client.connection.shutdown()
        client.flush()
        self.assertEqual(server.shutdown_calls, [True], f"{TWISTED_CHANGED}: _shutdownTLS at the peer's close_notify")
        self.assertTrue(server.wrappedProtocol.connected, f"{TWISTED_CHANGED}: connectionLost before _shutdownTLS")
        self.assertEqual(client.receive(), (b"", True), f"{TWISTED_CHANGED}: _shutdownTLS sends close_notify")

    def test_lose_connection_sends_held_writes(self) -> None:
        """
        L{BufferingTLSTransport} holds a write back for a later reactor turn,
        and C{loseConnection} sends it before our C{close_notify}, setting
        C{disconnecting}: L{_tls.HalfCloseTLSProtocol} closes that way to
        send the replies to what came with the peer's C{close_notify}.  And
        it goes through C{_shutdownTLS}, where, after a TCP FIN, the
        workaround closes TCP itself.
        """

        class Answer(Protocol):
            def dataReceived(self, data: bytes) -> None:
                assert self.transport is not None
                self.transport.write(data.upper())

        server, client = self.connect(Answer)
        client.connection.sendall(b"held")
        client.flush()
        self.assertEqual(client.receive(), (b"", False), f"{TWISTED_CHANGED}: BufferingTLSTransport holds writes")
        server.loseConnection()
        client.flush()
        self.assertTrue(server.disconnecting, TWISTED_CHANGED)
        self.assertEqual(client.receive(), (b"HELD", True), f"{TWISTED_CHANGED}: loseConnection sends held writes")
        self.assertEqual(server.shutdown_calls, [False], f"{TWISTED_CHANGED}: loseConnection goes through _shutdownTLS")
