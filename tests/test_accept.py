"""
Tests for L{tsecho._accept}: workers share new connections by how many
each holds, and the canary for the Twisted internal it sets.

The ports here are Twisted's real C{tcp.Port} and C{unix.Port} on real
sockets, started on a L{MemoryReactor} (or, for the worker's hook, the
global reactor, never run): clients connect with blocking sockets, so their
connections wait complete in the listen queue, and each C{doRead} is called
by hand.  The peers are rows written by hand on a real L{Board}; time is a
L{Clock}.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import twisted
from twisted.internet import tcp, unix
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SynchronousTestCase

from tsecho import _accept
from tsecho._accept import BATCH, MARGIN, POLL, STUCK, Balancer, Board, Sharing
from tsecho._proxy import ProxyWrappingFactory
from tsecho.protocol import ServerConfig
from tsecho.testing import connect, make_factory
from tsecho.worker import AdoptingReactor, balancer_from, count_connections

TWISTED_CHANGED = f"Twisted {twisted.__version__} changed tcp.Port's accept loop, which tsecho._accept relies on"


class CountingFactory(ServerFactory):
    """
    Count the connections built; keep their transports to close them.
    """

    protocol = Protocol

    def __init__(self) -> None:
        self.built: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = Protocol()
        self.built.append(protocol)
        return protocol


@contextmanager
def waiting(count: int, connect: Callable[[], socket.socket]) -> Iterator[None]:
    """
    Open C{count} client connections that wait in the listen queue.
    """
    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(connect())
        yield


def close(port: Any, factory: CountingFactory) -> None:
    """
    Stop watching and close C{port} and the connections it accepted.
    """
    for transport in [port] + [protocol.transport for protocol in factory.built]:
        transport.stopReading()
        transport.socket.close()


class Ports:
    """
    Make Twisted's real listening ports for a test, on a L{MemoryReactor}.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.case = case

    def tcp(self, factory: CountingFactory) -> tuple[Any, Callable[[], socket.socket]]:
        port = tcp.Port(0, factory, interface="127.0.0.1", reactor=MemoryReactor())
        port.startListening()
        self.case.addCleanup(close, port, factory)
        address = port.getHost()
        return port, lambda: socket.create_connection((address.host, address.port))

    def unix(self, factory: CountingFactory) -> tuple[Any, Callable[[], socket.socket]]:
        path = self.case.mktemp()
        port = unix.Port(path, factory, reactor=MemoryReactor())
        port.startListening()
        self.case.addCleanup(close, port, factory)

        def connect() -> socket.socket:
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            return client

        return port, connect


class CanaryTests(SynchronousTestCase):
    """
    What L{tsecho._accept} relies on in Twisted's listening ports.
    """

    def test_canary_twisted_accepts_many(self) -> None:
        """
        Left as Twisted makes it, one C{doRead} accepts every connection
        waiting (up to C{numberAccepts}, an C{int}, which caps it): what
        makes one worker take a whole burst, and what L{Balancer} sets.
        """
        factory = CountingFactory()
        port, connect = Ports(self).tcp(factory)
        self.assertIsInstance(getattr(port, "numberAccepts", None), int, TWISTED_CHANGED)
        with waiting(5, connect):
            port.numberAccepts = 2
            port.doRead()
            self.assertEqual(len(factory.built), 2, TWISTED_CHANGED)
            port.numberAccepts = 100
            port.doRead()
            self.assertEqual(len(factory.built), 5, TWISTED_CHANGED)


class BalancerTests(SynchronousTestCase):
    """
    L{Balancer} on Twisted's own listening ports, beside peers written on
    the board by hand (row 1; this worker is row 0).
    """

    def setUp(self) -> None:
        self.board = Board.create(4)
        self.addCleanup(self.board.close)
        self.clock = Clock()
        self.factory = CountingFactory()
        self.closed = 0
        self.balancer = Balancer(self.board, 0, self.clock, pid=4242)
        self.balancer.holding = lambda: len(self.factory.built) - self.closed

    def peer(self, holding: int, reads: int = 1, row: int = 1, share: int = 0) -> None:
        self.board.write(row, 4343 + row, holding, reads, share)

    def reading(self, port: Any) -> bool:
        return port in port.reactor.getReaders()

    def test_no_peers(self) -> None:
        """
        A worker alone on the board accepts as Twisted does, up to L{BATCH}
        connections per C{doRead}, and publishes its pid, the connections it
        holds and how many times it read.
        """
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(12, connect):
            port.doRead()
            self.assertEqual(len(self.factory.built), 12)
        self.assertEqual(self.board.read(0), (4242, 12, 1))

    def test_share(self) -> None:
        """
        Beside a peer holding none, a TCP or UNIX port accepts
        L{MARGIN} connections at most; then, ahead by that many, the worker
        stops reading its ports (the connections wait for the peer) and
        starts again once the peer holds as many.
        """
        for make in (Ports(self).tcp, Ports(self).unix):
            self.setUp()
            self.peer(0)
            port, connect = make(self.factory)
            self.balancer.add(port)
            with waiting(MARGIN + 3, connect):
                port.doRead()
                self.assertEqual(len(self.factory.built), MARGIN, TWISTED_CHANGED)
                self.assertTrue(self.reading(port))
                port.doRead()
                self.assertEqual(len(self.factory.built), MARGIN)
                self.assertIs(self.balancer.state, Sharing.WAITING)
                self.assertFalse(self.reading(port))
                self.clock.advance(POLL)
                self.assertFalse(self.reading(port))
                self.peer(1, reads=2)
                self.clock.advance(POLL)
                self.assertIs(self.balancer.state, Sharing.ACCEPTING)
                self.assertTrue(self.reading(port))
                port.doRead()
                self.assertEqual(len(self.factory.built), MARGIN + 1)
            self.assertEqual(self.board.read(0), (4242, MARGIN + 1, 3))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_least_loaded_peer(self) -> None:
        """
        The share is measured against the peer holding fewest; empty rows
        are nobody; past ten times L{MARGIN}, the margin is a tenth of the
        two together.
        """
        self.peer(50, row=1)
        self.peer(3, row=3)
        self.closed = -5  # this worker holds 5
        self.assertEqual(self.balancer.room(), 3 + MARGIN - 5)
        self.board.write(3, 0, 0, 0)
        self.closed = -200
        self.peer(190, row=1)
        self.assertEqual(self.balancer.room(), 190 + 39 - 200)

    def test_released(self) -> None:
        """
        A waiting worker accepts again as soon as one of its connections
        closes and that makes room, and publishes what it holds.
        """
        self.peer(0)
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(MARGIN + 1, connect):
            port.doRead()
            port.doRead()
            self.assertFalse(self.reading(port))
            self.closed = 1
            self.balancer.released()
        self.assertTrue(self.reading(port))
        self.assertEqual(self.board.read(0)[1], MARGIN - 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_released_without_room(self) -> None:
        """
        A connection closing while the worker is still ahead only publishes.
        """
        self.peer(0)
        self.closed = -MARGIN - 2
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(1, connect):
            port.doRead()
        self.closed = -MARGIN - 1
        self.balancer.released()
        self.assertFalse(self.reading(port))
        self.assertEqual(self.board.read(0)[1], MARGIN + 1)

    def test_stuck_peer(self) -> None:
        """
        A peer that does not read its sockets for L{STUCK} seconds while
        this worker waits is ignored from then on, until it reads again: a
        connection never waits long for a hung or stopped worker.  A peer
        that reads meanwhile is waited for afresh.
        """
        self.peer(0, reads=7)
        self.closed = -MARGIN
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(3, connect):
            port.doRead()
            self.assertFalse(self.reading(port))
            steps = round(STUCK / POLL)
            self.clock.pump([POLL] * (steps - 1))
            self.peer(0, reads=8)  # it read, and held no connection (another took it)
            self.clock.pump([POLL] * (steps - 1))
            self.assertFalse(self.reading(port))
            self.clock.pump([POLL] * 2)
            self.assertTrue(self.reading(port))
            port.doRead()
            self.assertEqual(len(self.factory.built), 3)  # the peer ignored: as many as wait
            self.assertEqual(self.balancer.room(), BATCH)
            self.peer(0, reads=9)  # it reads again: counted again
            self.assertLess(self.balancer.room(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_peer_not_ignored(self) -> None:
        """
        A peer that has taken every waiting connection reads no more, but
        is not stuck: after L{STUCK} seconds the waiting worker reads again
        without ignoring it, so the next connection is judged afresh.
        """
        self.peer(0, reads=7)
        self.closed = -MARGIN
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(1, connect):
            port.doRead()
        self.assertFalse(self.reading(port))
        with socket.socket(fileno=os.dup(port.socket.fileno())) as peers:
            peers.accept()[0].close()  # the peer took it
        self.clock.pump([POLL] * (round(STUCK / POLL) + 1))
        self.assertTrue(self.reading(port))
        self.assertLessEqual(self.balancer.room(), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_share_full(self) -> None:
        """
        A worker whose C{--max-connections} share is full accepts none
        while its peer's is not (the peer would refuse none), however close
        their counts, and shares may differ by one; when both are full, it
        accepts (and answers busy).  It publishes its share.
        """
        self.balancer.limit = 5
        self.closed = -5
        self.peer(4, share=5)
        self.assertEqual(self.balancer.room(), 0)
        self.peer(5, share=6)
        self.assertEqual(self.balancer.room(), 0)
        self.peer(5, share=5)
        self.assertEqual(self.balancer.room(), MARGIN)
        self.balancer.publish()
        self.assertEqual(self.board.everyone()[:4], [4242, 5, 0, 5])
        self.closed = -4
        self.peer(0)
        self.assertEqual(self.balancer.room(), MARGIN - 4)

    def test_stop(self) -> None:
        """
        A worker that stops listening (it drains) leaves its row (minus its
        pid), no longer waits, never starts reading again, and writes
        nothing more; a late C{doRead} reads as Twisted's own.
        """
        self.peer(0)
        self.closed = -MARGIN
        port, connect = Ports(self).tcp(self.factory)
        self.balancer.add(port)
        with waiting(1, connect):
            port.doRead()
        self.assertIs(self.balancer.state, Sharing.WAITING)
        self.balancer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.closed = MARGIN
        self.balancer.released()
        self.balancer.stop()
        self.assertIs(self.balancer.state, Sharing.STOPPED)
        self.assertFalse(self.reading(port))
        self.assertEqual(self.board.read(0), (-4242, 0, 0))
        self.assertTrue(self.board.left(0, 4242))
        with waiting(1, connect):
            port.doRead()  # as Twisted would, were it called
        self.assertTrue(self.factory.built)
        self.assertEqual(self.board.read(0), (-4242, 0, 0))

    def test_fallback_warns_once(self) -> None:
        """
        A port without C{numberAccepts} (a Twisted that accepts some other
        way) still stops and starts reading by the share, uncapped; one
        warning per process names the Twisted version and what is lost.
        """
        self.patch(_accept, "_warned", [])

        class OtherPort:
            reads = 0
            reading = True

            def doRead(self) -> None:
                self.reads += 1

            def stopReading(self) -> None:
                self.reading = False

        self.peer(0)
        self.closed = -MARGIN
        other = OtherPort()
        with capturedLogs() as events:
            self.balancer.add(other)
            self.balancer.add(OtherPort())
        self.closed = -1
        other.doRead()
        self.assertEqual(other.reads, 1)
        self.assertFalse(hasattr(other, "numberAccepts"))
        self.closed = -MARGIN
        other.doRead()
        self.assertEqual(other.reads, 1)
        self.assertFalse(other.reading)
        self.balancer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(events[0]["twisted_version"], twisted.__version__)
        self.assertIn("burst", events[0]["log_format"])


class BoardTests(SynchronousTestCase):
    """
    L{Board}: rows shared through a file, as a worker maps it.
    """

    def test_shared(self) -> None:
        """
        A board mapped from the creator's descriptor (as a worker does) sees
        the creator's rows, and the creator its; C{clear} empties a row only
        for the pid that holds it.
        """
        board = Board.create(3)
        self.addCleanup(board.close)
        theirs = Board(board.fileno(), 3)
        self.addCleanup(theirs.close)
        theirs.write(2, 77, 5, 6)
        self.assertEqual(board.read(2), (77, 5, 6))
        self.assertEqual(board.everyone(), [0, 0, 0, 0, 0, 0, 0, 0, 77, 5, 6, 0])
        board.clear(2, 78)
        self.assertEqual(theirs.read(2), (77, 5, 6))
        board.clear(2, 77)
        self.assertEqual(theirs.read(2), (0, 0, 0))

    def test_never_torn(self) -> None:
        """
        A row rewritten by another process never reads as empty: each cell
        is written in one store (C{struct.pack_into} zeroes a whole row
        first, and a peer reading meanwhile found nobody there, about once
        in fifty reads).
        """
        board = Board.create(2)
        self.addCleanup(board.close)
        board.write(1, 4242, 0, 0)
        writer = os.fork()
        if writer == 0:  # pragma: no cover (the child process)
            for i in range(200_000):
                board.write(1, 4242, i, i)
            os._exit(0)
        empty = 0
        while os.waitpid(writer, os.WNOHANG) == (0, 0):
            for _ in range(1000):
                empty += board.everyone()[4] == 0
        self.assertEqual(empty, 0)

    def test_balancer_from(self) -> None:
        """
        A worker balances only if its SPEC gives it a row (not in check
        mode); the inherited descriptor is closed once the board is mapped.
        """
        board = Board.create(3)
        self.addCleanup(board.close)
        clock = Clock()
        self.assertIsNone(balancer_from({"stream": []}, clock))
        self.assertIsNone(balancer_from({"board": board.fileno(), "rows": 3, "row": 1, "check": True}, clock))
        inherited = os.dup(board.fileno())
        balancer = balancer_from({"board": inherited, "rows": 3, "row": 1}, clock)
        assert balancer is not None
        self.addCleanup(balancer.board.close)
        self.assertRaises(OSError, os.fstat, inherited)  # closed once mapped
        balancer.publish()
        self.assertEqual(board.read(1)[0], os.getpid())


class CountConnectionsTests(SynchronousTestCase):
    """
    L{count_connections}: what a worker counts as held.
    """

    def test_counted(self) -> None:
        """
        A worker holds what its factory admitted, plus the connections
        whose PROXY header is still to come on a C{haproxy:} listener (also
        one wrapped in TLS); a release of either reaches the balancer; its
        limit is its share of C{--max-connections}.
        """
        board = Board.create(2)
        self.addCleanup(board.close)
        factory = make_factory(ServerConfig(max_connections=7))
        proxy = ProxyWrappingFactory(factory)
        tls = WrappingFactory(proxy)
        balancer = Balancer(board, 0, Clock())
        for wrapper in (factory, tls):
            port = tcp.Port(0, wrapper, reactor=MemoryReactor())
            balancer.ports.append(port)
        count_connections(balancer, factory)
        self.assertEqual(balancer.limit, 7)
        connect(factory)
        proxy.pending = 2
        self.assertEqual(balancer.holding(), 3)
        self.assertEqual((factory.on_release, proxy.on_release), (balancer.released, balancer.released))

    def test_plain(self) -> None:
        """
        Without a C{haproxy:} listener, a worker holds what its factory admitted.
        """
        board = Board.create(2)
        self.addCleanup(board.close)
        factory = make_factory()
        balancer = Balancer(board, 0, Clock())
        balancer.ports.append(tcp.Port(0, factory, reactor=MemoryReactor()))
        count_connections(balancer, factory)
        connect(factory)
        self.assertEqual(balancer.holding(), 1)


def test_worker_shares() -> None:
    """
    A worker's adopted listening port accepts its share: beside a peer
    holding none, L{MARGIN} connections at most.
    """
    from twisted.internet import reactor

    board = Board.create(2)
    factory = CountingFactory()
    balancer = Balancer(board, 0, Clock())
    balancer.holding = lambda: len(factory.built)
    board.write(1, 1, 0, 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(MARGIN + 5)
        sock.setblocking(False)
        port: Any = AdoptingReactor(reactor, sock.fileno(), balancer=balancer).listenTCP(0, factory)
        try:
            with waiting(MARGIN + 1, lambda: socket.create_connection(sock.getsockname())):
                port.doRead()
                assert len(factory.built) == MARGIN
        finally:
            balancer.stop()
            close(port, factory)
            board.close()
