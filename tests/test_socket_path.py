"""
Tests for the server's fast paths on a real socket: replies sent straight to
the socket while the transport's buffer is empty, and the immediate close
after the client's end of input.

Each test puts Twisted's own TCP transport (C{tcp.Server}) on one end of a
UNIX socket pair and drives it by hand, doing what the reactor would do
(C{doRead}, C{doWrite}, C{readConnectionLost} at the end of input) on a
L{MemoryReactorClock}: real socket buffers and system calls, no real time.
"""

from __future__ import annotations

import socket
import struct

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tsecho.protocol import ServerConfig, TimestampEcho
from tsecho.testing import EXAMPLE_STAMP, make_factory


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
        for _ in range(1000):
            received += connection.received()
            connection.write()
            if not connection.reactor.getWriters():
                break
        received += connection.received()
        expected = b"".join(EXAMPLE_STAMP + request for request in [*requests, b"after\n"])
        self.assertEqual(bytes(received), expected)


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
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        factory = make_factory(ServerConfig(quiet=True, max_connections=1))
        reactor = MemoryReactorClock()
        transports = []
        for reset in (True, False):
            client = socket.create_connection(listener.getsockname())
            self.addCleanup(client.close)
            if reset:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
            server_end, address = listener.accept()
            self.addCleanup(server_end.close)
            protocol = factory.buildProtocol(None)  # type: ignore[arg-type]
            transport = tcp.Server(server_end, protocol, address, None, len(transports), reactor)  # type: ignore[arg-type]
            protocol.makeConnection(transport)
            transports.append(transport)
        self.assertEqual(len(factory.connections), 1)
        self.assertIs(next(iter(factory.connections)).transport, transports[1])
        client.sendall(b"live\n")
        transports[1].doRead()
        self.assertEqual(client.recv(100), EXAMPLE_STAMP + b"live\n")
