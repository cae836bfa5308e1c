"""
L{tsecho.testing}, the public test helpers: one server connection in memory,
the transports it offers, and L{MemoryNetwork} (the real client against the
server in memory), with README's example run as written.
"""

from __future__ import annotations

import re
import unittest
from pathlib import Path

from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tsecho.client._errors import ClientError
from tsecho.protocol import ServerConfig, TimestampEcho
from tsecho.testing import (
    EXAMPLE_PEER,
    EXAMPLE_STAMP,
    EXAMPLE_TIME,
    ClosingStringTransport,
    EchoConnection,
    MemoryNetwork,
    TCPStringTransport,
    connect,
    connected_echo,
    make_factory,
)

README = Path(__file__).parent.parent / "README.md"


class TestingHelperTests(SynchronousTestCase):
    """
    L{tsecho.testing} builds what these tests rely on.
    """

    def test_connected_echo(self) -> None:
        """
        L{connected_echo} gives a connected L{TimestampEcho} at L{EXAMPLE_TIME}.
        """
        echo = connected_echo()
        self.assertIsInstance(echo, EchoConnection)
        self.assertIsInstance(echo.protocol, TimestampEcho)
        self.assertEqual(echo.clock.seconds(), EXAMPLE_TIME)
        self.assertIs(echo.protocol.transport, echo.transport)
        self.assertEqual(echo.transport.getPeer(), EXAMPLE_PEER)

    def test_shared_clock(self) -> None:
        """
        L{make_factory} uses a given clock as it is.
        """
        clock = Clock()
        echo = connect(make_factory(clock=clock))
        self.assertIs(echo.clock, clock)
        self.assertEqual(echo.send(b"x\n"), b"[Thu Jan  1 00:00:00 1970] x\n")

    def test_closing_transport(self) -> None:
        """
        On a L{ClosingStringTransport}, closing the transport ends the connection.
        """
        echo = connected_echo(transport_type=ClosingStringTransport)
        self.assertIsInstance(echo.transport, ClosingStringTransport)
        echo.transport.loseConnection()
        self.assertTrue(echo.transport.disconnecting)
        self.assertEqual(echo.factory.connections, set())

    def test_plain_transport_by_default(self) -> None:
        """
        By default the transport is a plain L{StringTransport}: closing only
        marks it as disconnecting, and the connection stays until the test
        ends it.
        """
        echo = connected_echo(one_shot=True)
        self.assertIs(type(echo.transport), StringTransport)
        self.assertEqual(echo.send(b"a\n"), EXAMPLE_STAMP + b"a\n")
        self.assertTrue(echo.transport.disconnecting)
        self.assertEqual(len(echo.factory.connections), 1)
        echo.lose()
        self.assertEqual(echo.factory.connections, set())

    def test_tcp_transport(self) -> None:
        """
        A L{TCPStringTransport} provides all of L{ITCPTransport} (socket
        options included), and records the server shutting down its sending
        side.
        """
        echo = connected_echo(one_shot=True, transport_type=TCPStringTransport)
        transport = echo.transport
        assert isinstance(transport, TCPStringTransport)
        self.assertTrue(verifyObject(ITCPTransport, transport))
        transport.setTcpNoDelay(True)
        transport.setTcpKeepAlive(True)
        self.assertEqual((transport.getTcpNoDelay(), transport.getTcpKeepAlive()), (True, True))
        transport.setTcpNoDelay(False)
        transport.setTcpKeepAlive(False)
        self.assertEqual((transport.getTcpNoDelay(), transport.getTcpKeepAlive()), (False, False))
        self.assertEqual(echo.send(b"a\n"), EXAMPLE_STAMP + b"a\n")
        self.assertTrue(transport.write_closed)  # one-shot: the server shuts down its side first


class MemoryNetworkTests(SynchronousTestCase):
    """
    L{MemoryNetwork}: the real client and the real server, in memory.
    """

    def test_round_trip(self) -> None:
        """
        A session's messages reach the server and its replies come back on
        L{flush}, not before; one connection carries them all.
        """
        network = MemoryNetwork(make_factory())
        session = network.session()
        replies = [session.ask(b"a"), session.ask(b"")]
        self.assertNoResult(replies[0])
        self.assertTrue(network.flush())
        self.assertEqual([self.successResultOf(r) for r in replies], [EXAMPLE_STAMP + b"a", EXAMPLE_STAMP])
        self.assertEqual((len(network.clients), len(network.servers), len(network.pumps)), (1, 1, 1))
        self.assertIsInstance(network.servers[0], TimestampEcho)
        self.assertFalse(network.flush())

    def test_one_shot_server(self) -> None:
        """
        Against a one-shot server, each message gets a connection of its own.
        """
        network = MemoryNetwork(make_factory(ServerConfig(one_shot=True)))
        session = network.session()
        replies = [session.ask(m) for m in (b"a", b"b", b"c")]
        network.flush()
        self.assertEqual([self.successResultOf(r) for r in replies], [EXAMPLE_STAMP + m for m in (b"a", b"b", b"c")])
        self.assertEqual(len(network.pumps), 3)

    def test_one_clock_for_both_sides(self) -> None:
        """
        By default the network runs on the server factory's clock, so one
        C{advance} moves the time of both sides: the server's idle timeout
        and the client's reply timer.
        """
        factory = make_factory(ServerConfig(timeout=30, close_timeout=1))
        network = MemoryNetwork(factory)
        self.assertIs(network.clock, factory.clock)
        session = network.session()
        session.ask(b"a")
        network.flush()
        network.clock.advance(31)  # idle, then the server's lingering close
        network.flush()
        self.assertFalse(network.clients[0].open)
        self.assertIsNot(MemoryNetwork(Factory.forProtocol(Protocol)).clock, factory.clock)

    def test_given_clock(self) -> None:
        """
        A given clock drives the client's timers: no reply within the
        timeout fails with the session's one line, naming the target.
        """
        clock = Clock()
        network = MemoryNetwork(Factory.forProtocol(Protocol), clock)  # a server that never answers
        reply = network.session(timeout=2, target="example:1").ask(b"a")
        network.flush()
        clock.advance(2)
        self.assertEqual(
            str(self.failureResultOf(reply, ClientError).value), "no reply from example:1 within 2 seconds"
        )

    def test_refused(self) -> None:
        """
        A factory that refuses the connection (C{buildProtocol} returns
        L{None}, as a server at its connection limit may) fails the attempt
        as refused.
        """

        class Refusing(Factory):
            def buildProtocol(self, addr: object) -> None:
                return None

        network = MemoryNetwork(Refusing())
        reply = network.session(target="example:1").ask(b"a")
        self.assertEqual(
            str(self.failureResultOf(reply, ClientError).value), "cannot connect to example:1: connection refused"
        )
        self.assertEqual(network.pumps, [])


class ReadmeExampleTests(SynchronousTestCase):
    """
    The example in README's "Testing code that uses tsecho" runs as written.
    """

    def test_example_passes(self) -> None:
        """
        The example's test case passes; each of its tests can fail (each
        asserts a result).
        """
        section = README.read_text(encoding="utf-8").split("## Testing code that uses tsecho", 1)[1]
        match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
        assert match is not None
        namespace: dict[str, object] = {"__name__": "readme_example"}
        exec(compile(match.group(1), "README.md", "exec"), namespace)
        case = namespace["ShoutTests"]
        assert isinstance(case, type)
        result = unittest.TestResult()
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
        suite.run(result)
        self.assertEqual((result.testsRun, result.failures, result.errors), (2, [], []))
