"""
Tests for L{tsecho._accept}: workers take turns at a shared listening
socket, and the canary for the Twisted internal it sets.

The ports here are Twisted's real C{tcp.Port} and C{unix.Port} on real
sockets, started on a L{MemoryReactor} (or, for the worker's hook, the
global reactor, never run): clients connect with blocking sockets, so their
connections wait complete in the listen queue, and each C{doRead} is called
by hand: no timing involved.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import twisted
from twisted.internet import tcp, unix
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tsecho import _accept
from tsecho._accept import ACCEPTS_PER_WAKEUP, take_turns
from tsecho.worker import AdoptingReactor

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


class TakeTurnsTests(SynchronousTestCase):
    """
    L{take_turns} on Twisted's own listening ports.
    """

    def tcp_port(self, factory: CountingFactory) -> tuple[Any, Callable[[], socket.socket]]:
        port = tcp.Port(0, factory, interface="127.0.0.1", reactor=MemoryReactor())
        port.startListening()
        address = port.getHost()
        return port, lambda: socket.create_connection((address.host, address.port))

    def unix_port(self, factory: CountingFactory) -> tuple[Any, Callable[[], socket.socket]]:
        path = self.mktemp()
        port = unix.Port(path, factory, reactor=MemoryReactor())
        port.startListening()

        def connect() -> socket.socket:
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            return client

        return port, connect

    def test_canary_twisted_accepts_many(self) -> None:
        """
        Left as Twisted makes it, one C{doRead} accepts every connection
        waiting (up to C{numberAccepts}, an C{int}): what makes one worker
        take a whole burst, and what L{take_turns} changes.
        """
        factory = CountingFactory()
        port, connect = self.tcp_port(factory)
        try:
            self.assertIsInstance(getattr(port, "numberAccepts", None), int, TWISTED_CHANGED)
            with waiting(3, connect):
                port.doRead()
                self.assertEqual(len(factory.built), 3, TWISTED_CHANGED)
        finally:
            close(port, factory)

    def test_one_per_wakeup(self) -> None:
        """
        With L{take_turns} at one per wake-up, each C{doRead} of a TCP or
        UNIX port accepts one of the connections waiting, however many it
        accepted before; the next C{doRead} takes the next.
        """
        for make in (self.tcp_port, self.unix_port):
            factory = CountingFactory()
            port, connect = make(factory)
            try:
                self.assertTrue(take_turns(port, accepts=1), TWISTED_CHANGED)
                with waiting(3, connect):
                    for accepted in (1, 2, 3):
                        port.doRead()
                        self.assertEqual(len(factory.built), accepted, TWISTED_CHANGED)
                    port.doRead()  # nothing waiting: accepts nothing
                    self.assertEqual(len(factory.built), 3)
            finally:
                close(port, factory)

    def test_accepts(self) -> None:
        """
        C{accepts} sets how many connections each C{doRead} accepts.
        """
        factory = CountingFactory()
        port, connect = self.tcp_port(factory)
        try:
            take_turns(port, accepts=2)
            with waiting(5, connect):
                port.doRead()
                self.assertEqual(len(factory.built), 2)
                port.doRead()
                self.assertEqual(len(factory.built), 4)
        finally:
            close(port, factory)

    def test_fallback_warns_once(self) -> None:
        """
        A port without C{numberAccepts} (a Twisted that accepts some other
        way) is left alone, and one warning per process names the Twisted
        version and what is lost.
        """
        self.patch(_accept, "_warned", [])

        class OtherPort:
            def doRead(self) -> None:
                """
                Accept as some other Twisted would.
                """

        other = OtherPort()
        read = other.doRead
        with capturedLogs() as events:
            self.assertFalse(take_turns(other))
            self.assertFalse(take_turns(OtherPort()))
        self.assertEqual(other.doRead, read)
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0]["log_level"], LogLevel.warn)
        self.assertEqual(events[0]["twisted_version"], twisted.__version__)
        self.assertIn("burst", events[0]["log_format"])


def test_workers_take_turns() -> None:
    """
    A worker's adopted listening port accepts L{ACCEPTS_PER_WAKEUP}
    connections per wake-up.
    """
    from twisted.internet import reactor

    factory = CountingFactory()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(5)
        sock.setblocking(False)
        port: Any = AdoptingReactor(reactor, sock.fileno()).listenTCP(0, factory)
        try:
            with waiting(ACCEPTS_PER_WAKEUP + 1, lambda: socket.create_connection(sock.getsockname())):
                port.doRead()
                assert len(factory.built) == ACCEPTS_PER_WAKEUP
        finally:
            close(port, factory)
