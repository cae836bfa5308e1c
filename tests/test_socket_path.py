"""
Tests for the server's fast paths on a real socket (L{tsecho._direct}):
replies sent straight to the socket while the transport's buffer is empty,
and the immediate close after the client's end of input; and for the
connection without them, on a Twisted that lacks what they rely on.
L{TwistedInternalsCanary} checks what they rely on in Twisted's TCP
transport.

Each test puts Twisted's own TCP transport (C{tcp.Server}) on one end of a
UNIX socket pair and drives it by hand, doing what the reactor would do
(C{doRead}, C{doWrite}, C{readConnectionLost} at the end of input) on a
L{MemoryReactorClock}: real socket buffers and system calls, no real time.
"""

from __future__ import annotations

import socket
import struct
from types import SimpleNamespace

import twisted
from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tsecho import _direct
from tsecho.metrics import ServerMetrics
from tsecho.protocol import Ending, ServerConfig, TimestampEcho, TimestampEchoFactory
from tsecho.testing import EXAMPLE_STAMP, make_factory
from tsecho.wire import BUSY

TWISTED_CHANGED = f"Twisted {twisted.__version__} changed what tsecho._direct relies on"


class SocketConnection:
    """
    A L{TimestampEcho} on Twisted's TCP transport over one end of a socket
    pair; C{peer} is the client's end.
    """

    def __init__(self, case: SynchronousTestCase, config: ServerConfig | None = None) -> None:
        server_end, self.peer = socket.socketpair()
        case.addCleanup(self.peer.close)
        case.addCleanup(server_end.close)
        self.peer.settimeout(5)
        self.reactor = MemoryReactorClock()
        self.factory = make_factory(config or ServerConfig(quiet=True))
        protocol = self.factory.buildProtocol(None)  # type: ignore[arg-type]
        assert isinstance(protocol, TimestampEcho)
        self.protocol = protocol
        self.transport = tcp.Server(server_end, protocol, ("127.0.0.1", 5555), None, 1, self.reactor)  # type: ignore[arg-type]
        protocol.makeConnection(self.transport)

    def read(self) -> None:
        """
        Let the transport read once, as the reactor would when the socket is
        readable; at the end of input, tell it so, as the reactor does for a
        half-closeable transport (and end it on any other failure).  First
        run what is due on the clock (a connection that spent its reply
        budget continues there), and read only if the transport is reading.
        """
        self.factory.clock.advance(0)  # type: ignore[attr-defined]
        if self.transport not in self.reactor.getReaders():
            return
        why = self.transport.doRead()
        if isinstance(why, ConnectionDone):
            self.transport.readConnectionLost(Failure(why))
        elif why is not None:
            self.transport.connectionLost(Failure(why))

    def write(self) -> None:
        """
        Let the transport write once, as the reactor would when the socket is
        writable; if that ends the connection, tell it so.
        """
        why = self.transport.doWrite()
        if why is not None:
            self.transport.connectionLost(Failure(why))

    def received(self) -> bytes:
        """
        What the client can read now, without waiting.
        """
        self.peer.setblocking(False)
        try:
            return self.peer.recv(1 << 20)
        except BlockingIOError:
            return b""
        finally:
            self.peer.settimeout(5)

    def write_all(self) -> bytes:
        """
        Let the transport write until it has nothing left, the client
        reading as it goes; return what the client read.
        """
        received = b""
        for _ in range(1000):
            received += self.received()
            self.write()
            if not self.reactor.getWriters():
                break
        return received + self.received()

    def received_to_end(self) -> bytes:
        """
        Everything the client reads until the server's end of the stream.
        """
        received = b""
        while chunk := self.peer.recv(65536):
            received += chunk
        return received


class DirectSendTests(SynchronousTestCase):
    """
    While the transport has nothing buffered, a chunk's replies go straight to
    the socket, in the same call that received the chunk.
    """

    def test_replies_are_on_the_socket_at_once(self) -> None:
        """
        The replies to a chunk can be read by the client before the reactor
        gets to write anything: the transport never asked to write.
        """
        connection = SocketConnection(self)
        connection.peer.sendall(b"a\nb\r\n")
        connection.read()
        self.assertEqual(connection.received(), EXAMPLE_STAMP + b"a\n" + EXAMPLE_STAMP + b"b\r\n")
        self.assertEqual(connection.reactor.getWriters(), [])

    def test_what_the_socket_does_not_take_goes_through_the_transport(self) -> None:
        """
        A batch of replies bigger than the socket takes at once is sent in
        part; the rest is written by the transport, and later replies queue
        behind it even when the socket has room again, so the client reads
        every reply in order.
        """
        connection = SocketConnection(self)
        connection.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        requests = [b"%04d %s\n" % (i, b"x" * 40) for i in range(600)]  # replies under 64 KiB
        connection.peer.sendall(b"".join(requests))
        received = bytearray()
        for _ in range(100):
            connection.read()
            if connection.reactor.getWriters():
                break
        self.assertEqual(connection.reactor.getWriters(), [connection.transport], "the socket took it all")
        received += connection.received()  # room on the socket again, replies still in the transport
        connection.peer.sendall(b"after\n")
        connection.read()
        received += connection.write_all()
        expected = b"".join(EXAMPLE_STAMP + request for request in [*requests, b"after\n"])
        self.assertEqual(bytes(received), expected)

    def test_send_that_fails_loses_nothing(self) -> None:
        """
        A send that fails (the socket's buffer is full: C{EAGAIN}) sent
        nothing: every byte of the replies goes through the transport.
        """
        connection = SocketConnection(self)
        sock = connection.transport.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        filler = b""
        try:
            while True:
                filler += b"f" * sock.send(b"f" * 4096)
        except BlockingIOError:
            pass
        connection.peer.sendall(b"abc\n")
        connection.read()
        self.assertEqual(connection.reactor.getWriters(), [connection.transport])
        self.assertEqual(connection.write_all(), filler + EXAMPLE_STAMP + b"abc\n")

    def test_handle_not_a_socket(self) -> None:
        """
        A TCP transport whose handle is no socket (a test double's) gives no socket
        to send on: its replies go through C{transport.write}.
        """
        connection = SocketConnection(self)
        connection.transport.getHandle = object  # type: ignore[method-assign]
        self.assertIsNone(_direct.direct_socket(connection.transport))


class CloseAtOnceTests(SynchronousTestCase):
    """
    When the client ends its input and every reply went straight to the
    socket, the connection closes in the same call: there is nothing left to
    send and no unread input to linger for.
    """

    def test_end_of_input_closes_at_once(self) -> None:
        """
        After the client's end of input, the last (unterminated) line is
        answered and the connection is closed without another reactor turn;
        the client reads every reply, then the end of the stream, and the
        connection is counted out.
        """
        connection = SocketConnection(self)
        connection.peer.sendall(b"x\nlast")
        connection.peer.shutdown(socket.SHUT_WR)
        connection.read()
        connection.read()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.reactor.getWriters(), [])
        self.assertEqual(connection.reactor.getReaders(), [])
        self.assertEqual(connection.factory.connections, set())
        self.assertEqual(connection.factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]
        connection.peer.settimeout(5)
        replies = b""
        while chunk := connection.peer.recv(65536):
            replies += chunk
        self.assertEqual(replies, EXAMPLE_STAMP + b"x\n" + EXAMPLE_STAMP + b"last\r\n")

    def test_end_of_input_waits_for_buffered_replies(self) -> None:
        """
        If some replies are still in the transport's buffer when the client
        ends its input, the connection closes only once they are written.
        """
        connection = SocketConnection(self)
        connection.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        requests = [b"%04d %s\n" % (i, b"y" * 40) for i in range(600)]
        connection.peer.sendall(b"".join(requests))
        connection.peer.shutdown(socket.SHUT_WR)
        received = bytearray()
        for _ in range(100):
            connection.read()
            if connection.transport.disconnecting:
                break
        self.assertFalse(connection.transport.disconnected, "closed with replies unsent")
        for _ in range(1000):
            received += connection.received()
            if connection.transport.disconnected:
                break
            connection.write()
        received += connection.received()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(bytes(received), b"".join(EXAMPLE_STAMP + request for request in requests))
        self.assertEqual(connection.factory.connections, set())

    def test_one_shot_answer_at_end_of_input(self) -> None:
        """
        With C{--one-shot}, an unterminated line followed by the end of input
        is the one line answered; the connection closes at once all the same.
        """
        connection = SocketConnection(self, ServerConfig(quiet=True, one_shot=True))
        connection.peer.sendall(b"only")
        connection.peer.shutdown(socket.SHUT_WR)
        connection.read()
        connection.read()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.factory.connections, set())
        self.assertEqual(connection.factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]
        self.assertEqual(connection.peer.recv(65536), EXAMPLE_STAMP + b"only\r\n")
        self.assertEqual(connection.peer.recv(65536), b"")


def reset_then_live(case: SynchronousTestCase, factory: TimestampEchoFactory) -> tuple[tcp.Server, socket.socket]:
    """
    Two TCP connections to C{factory} over loopback: the first one's client
    resets it (connect, then RST) before the server reads anything; the
    second one's client is live.  Return the live one's server transport
    and client socket.
    """
    listener = socket.socket()
    case.addCleanup(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    reactor = MemoryReactorClock()
    for reset in (True, False):
        client = socket.create_connection(listener.getsockname())
        case.addCleanup(client.close)
        if reset:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        server_end, address = listener.accept()
        case.addCleanup(server_end.close)
        protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
        transport = tcp.Server(server_end, protocol, address, None, int(reset), reactor)  # type: ignore[arg-type]
        protocol.makeConnection(transport)
    return transport, client


class ResetCountedOutTests(SynchronousTestCase):
    """
    Connections that the kernel has already reset do not count against the
    connection limit, though the reactor has not read their reset yet.
    """

    def test_reset_connection_not_counted(self) -> None:
        """
        At a limit of one connection, a connection whose client reset it
        (connect, then RST, before the server read anything) does not make
        the next, live, connection busy.
        """
        factory = make_factory(ServerConfig(quiet=True, max_connections=1))
        metrics = factory.metrics = ServerMetrics(factory.connections)
        transport, client = reset_then_live(self, factory)
        self.assertEqual(len(factory.resetting), 1)
        [live] = factory.connections - factory.resetting
        self.assertIs(live.transport, transport)
        client.sendall(b"live\n")
        transport.doRead()
        self.assertEqual(client.recv(100), EXAMPLE_STAMP + b"live\n")
        # The reset one is open, and counts so, until the reactor loses it.
        [counts] = metrics.snapshot().streams
        self.assertEqual((counts.accepted, counts.open), (2, 2))
        transport.reactor.advance(0)  # type: ignore[attr-defined]
        self.assertEqual((factory.connections, factory.resetting), ({live}, set()))
        [counts] = metrics.snapshot().streams
        self.assertEqual((counts.accepted, counts.open, counts.closed), (2, 1, {Ending.BUSY: 0, Ending.RESET: 1}))

    def test_unix_socket_never_reset(self) -> None:
        """
        A connection on a UNIX socket has no TCP state to probe: never reset.
        """
        connection = SocketConnection(self)
        self.assertFalse(_direct.reset_by_peer(connection.transport))

    def test_probe_fails(self) -> None:
        """
        A TCP socket whose state cannot be read (here: closed under the
        transport) is not taken for reset.
        """
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname()[:2])
            self.addCleanup(client.close)
            server_end, address = listener.accept()
        transport = tcp.Server(server_end, Protocol(), address, None, 1, MemoryReactorClock())  # type: ignore[arg-type]
        server_end.close()
        self.assertFalse(_direct.reset_by_peer(transport))


class WithoutShortcutsTests(SynchronousTestCase):
    """
    On a Twisted whose TCP transport lacks what L{tsecho._direct} relies on,
    connections use Twisted's own C{transport.write} and C{loseConnection}:
    the same replies and closes, and one warning.
    """

    def setUp(self) -> None:
        self.patch(_direct, "missing_internals", lambda: "changed or gone: Connection.TLS")
        _direct.available.cache_clear()
        self.addCleanup(_direct.available.cache_clear)

    def test_one_warning(self) -> None:
        """
        However many connections, one warning names the Twisted version, the
        change and what is lost.
        """
        with capturedLogs() as events:
            for _ in range(3):
                SocketConnection(self)
        [warning] = [formatEvent(e) for e in events]
        self.assertEqual(
            warning,
            f"Twisted {twisted.__version__} lacks what tsecho's direct sending relies on "
            "(changed or gone: Connection.TLS): connections use Twisted's own transport.write and "
            "loseConnection, without sending replies in the turn that read their lines (slower, the same replies)",
        )

    def test_check_that_fails(self) -> None:
        """
        A check that itself fails (Twisted changed beyond what it foresaw)
        also turns the shortcuts off, with the error named.
        """

        def broken() -> str | None:
            raise TypeError("unexpected")

        self.patch(_direct, "missing_internals", broken)
        with capturedLogs() as events:
            self.assertFalse(_direct.available())
        [warning] = [formatEvent(e) for e in events]
        self.assertIn("direct sending relies on (TypeError: unexpected): connections use", warning)

    def test_answers_then_closes_at_end_of_input(self) -> None:
        """
        Replies wait for the reactor to write them; at the client's end of
        input the last line is answered, and the connection closes once the
        reply is written, its deadline cancelled.
        """
        connection = SocketConnection(self)
        connection.peer.sendall(b"a\n")
        connection.read()
        self.assertEqual(connection.received(), b"")
        self.assertEqual(connection.reactor.getWriters(), [connection.transport])
        connection.write()
        self.assertEqual(connection.received(), EXAMPLE_STAMP + b"a\n")
        connection.peer.sendall(b"last")
        connection.peer.shutdown(socket.SHUT_WR)
        connection.read()
        connection.read()
        self.assertFalse(connection.transport.disconnected, "closed before the reply was written")
        connection.write()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.received_to_end(), EXAMPLE_STAMP + b"last\r\n")
        self.assertEqual(connection.factory.connections, set())
        self.assertEqual(connection.factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]

    def test_one_shot_half_closes(self) -> None:
        """
        After the one-shot reply the server shuts its sending side, drops
        what the client still sends, and closes at the client's end.
        """
        connection = SocketConnection(self, ServerConfig(quiet=True, one_shot=True))
        connection.peer.sendall(b"first\nsecond\n")
        connection.read()
        connection.write()
        self.assertEqual(connection.received_to_end(), EXAMPLE_STAMP + b"first\n")
        self.assertFalse(connection.transport.disconnected)
        connection.peer.sendall(b"dropped\n")
        connection.read()
        connection.peer.shutdown(socket.SHUT_WR)
        connection.read()
        self.assertTrue(connection.transport.disconnected)
        self.assertEqual(connection.factory.clock.getDelayedCalls(), [])  # type: ignore[attr-defined]

    def test_resets_not_probed(self) -> None:
        """
        Connections that the kernel reset are not looked for: at a limit of
        one, the reset connection counts until the reactor reads its reset,
        and the live one is refused as busy.
        """
        factory = make_factory(ServerConfig(quiet=True, max_connections=1))
        transport, client = reset_then_live(self, factory)
        [counted] = factory.connections
        self.assertIsNot(counted.transport, transport)
        transport.doWrite()
        client.settimeout(5)
        self.assertEqual(client.recv(100), BUSY)


class TwistedInternalsCanary(SynchronousTestCase):
    """
    What L{tsecho._direct} relies on in Twisted's TCP transport, beyond
    Twisted's interfaces, still holds in the Twisted under test.  If one of
    these fails, that Twisted changed it: C{tsecho._direct} must be updated
    (until then, if L{_direct.missing_internals} notices, connections do
    without the shortcuts).
    """

    def test_nothing_missing(self) -> None:
        """
        L{_direct.missing_internals} finds all it looks for, so connections
        use the shortcuts (every supported Twisted, 23.10 to 26.10).
        """
        self.assertIsNone(_direct.missing_internals(), TWISTED_CHANGED)
        self.assertTrue(_direct.available(), TWISTED_CHANGED)

    def test_changes_detected(self) -> None:
        """
        L{_direct.missing_internals} names every change it finds.
        """

        class Bare:
            def connectionLost(self) -> None:
                pass

        self.patch(_direct, "tcp", SimpleNamespace(Connection=Bare))
        self.assertEqual(
            _direct.missing_internals(),
            "changed or gone: Connection.TLS, Connection.getHandle(), Connection.stopReading(), "
            "Connection.stopWriting(), Connection.connectionLost(reason)",
        )
        self.patch(_direct, "tcp", SimpleNamespace())
        self.assertEqual(_direct.missing_internals(), "twisted.internet.tcp.Connection is gone")

    def test_plain_connection(self) -> None:
        """
        A plain TCP transport has C{TLS} false and C{getHandle()} gives its
        socket: replies may go straight to it.  Once TLS is started on it,
        not.
        """
        connection = SocketConnection(self)
        self.assertIs(connection.transport.TLS, False, TWISTED_CHANGED)
        self.assertIs(_direct.direct_socket(connection.transport), connection.transport.socket, TWISTED_CHANGED)
        connection.transport.TLS = True
        self.assertIsNone(_direct.direct_socket(connection.transport))

    def test_close_now(self) -> None:
        """
        C{stopReading}, C{stopWriting} and C{connectionLost(connectionDone)}
        close the socket, leave the reactor, and tell the protocol, with
        nothing left behind.
        """
        server_end, peer = socket.socketpair()
        self.addCleanup(peer.close)
        self.addCleanup(server_end.close)
        reactor = MemoryReactorClock()
        reasons: list[Failure] = []
        protocol = Protocol()
        protocol.connectionLost = reasons.append  # type: ignore[method-assign]
        transport = tcp.Server(server_end, protocol, ("127.0.0.1", 5555), None, 1, reactor)  # type: ignore[arg-type]
        protocol.makeConnection(transport)
        transport.startReading()
        _direct.close_now(transport)
        self.assertEqual((reactor.getReaders(), reactor.getWriters()), ([], []), TWISTED_CHANGED)
        [reason] = reasons
        self.assertTrue(reason.check(ConnectionDone), TWISTED_CHANGED)
        self.assertEqual(server_end.fileno(), -1, TWISTED_CHANGED)
        peer.settimeout(5)
        self.assertEqual(peer.recv(1), b"", TWISTED_CHANGED)
