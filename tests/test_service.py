"""
Tests for L{tsecho.service.TimestampEchoService}: listening, start-up errors,
and the graceful stop.
"""

from __future__ import annotations

import errno
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, endpoints
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tsecho.datagram import DatagramListener
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.service import StartupError, TimestampEchoService
from tsecho.testing import EXAMPLE_STAMP, ClosingStringTransport, connect, make_factory


@implementer(IListeningPort)
@attrs.define
class FakePort:
    """
    A listening port that records whether it was stopped.
    """

    address: IPv4Address
    stopped: bool = False

    def startListening(self) -> None:
        """
        Nothing to do: it is listening from the start.
        """

    def stopListening(self) -> None:
        """
        Record that the port was stopped.
        """
        self.stopped = True

    def getHost(self) -> IPv4Address:
        """
        The address it pretends to listen on.
        """
        return self.address


@implementer(IStreamServerEndpoint)
@attrs.define
class FakeEndpoint:
    """
    An endpoint whose C{listen} returns a given L{Deferred}.
    """

    result: defer.Deferred[Any]
    factories: list[IProtocolFactory] = attrs.Factory(list)

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[Any]:  # noqa: N803 (Twisted's name)
        """
        Record the factory; return the prepared result.
        """
        self.factories.append(protocolFactory)
        return self.result


def port_endpoint(port_number: int) -> tuple[FakeEndpoint, FakePort]:
    """
    An endpoint that listens at once, and the port it gives.
    """
    port = FakePort(IPv4Address("TCP", "127.0.0.1", port_number))
    return FakeEndpoint(defer.succeed(port)), port


def failing_endpoint(port_number: int) -> FakeEndpoint:
    """
    An endpoint that fails at once, as for a port in use.
    """
    error = CannotListenError("127.0.0.1", port_number, OSError(98, "Address already in use"))
    return FakeEndpoint(defer.fail(error))


class FailingService(Service):
    """
    A child service that cannot start.
    """

    def privilegedStartService(self) -> None:
        """
        Fail, as a datagram listener whose port is taken would.
        """
        raise CannotListenError("", 21567, OSError(13, "Permission denied"))


def build(
    endpoint_list: list[tuple[str, IStreamServerEndpoint]],
    config: ServerConfig | None = None,
    grace: float = 10.0,
) -> tuple[TimestampEchoService, TimestampEchoFactory]:
    """
    A service for C{endpoint_list} whose factory and deadline use one L{task.Clock}.
    """
    factory = make_factory(config)
    return TimestampEchoService(factory, endpoint_list, factory.clock, shutdown_grace=grace), factory


class ListenTests(SynchronousTestCase):
    """
    The service listens on every endpoint, before privileges are shed.
    """

    def test_listens_in_privileged_start(self) -> None:
        """
        C{privilegedStartService} listens on every endpoint with the service's
        factory; C{startService} does not listen again.
        """
        reactor = MemoryReactorClock()
        service, factory = build(
            [
                ("tcp:0", endpoints.TCP4ServerEndpoint(reactor, 0)),
                ("tcp:0:interface=127.0.0.1", endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")),
            ]
        )
        with capturedLogs() as events:
            service.privilegedStartService()
        self.assertEqual(
            [(p, f, i) for p, f, _, i in reactor.tcpServers], [(0, factory, ""), (0, factory, "127.0.0.1")]
        )
        self.assertEqual(len(service.ports), 2)
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 2)
        self.assertTrue(service.running)
        logged = [e for e in events if e.get("log_namespace") == "tsecho.service"]
        self.assertEqual([e["description"] for e in logged], ["tcp:0", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(logged[0]["address"], "0.0.0.0:0")

    def test_start_alone_listens(self) -> None:
        """
        A runner that only calls C{startService} (C{twist}) still gets a
        listening server.
        """
        reactor = MemoryReactorClock()
        service, factory = build([("tcp:0", endpoints.TCP4ServerEndpoint(reactor, 0))])
        service.startService()
        self.assertEqual([(p, f) for p, f, _, _ in reactor.tcpServers], [(0, factory)])
        self.assertTrue(service.running)

    def test_children_started(self) -> None:
        """
        Child services (the datagram listeners) start with the service.
        """
        service, _ = build([])
        child = Service()
        child.setServiceParent(service)
        service.privilegedStartService()
        service.startService()
        self.assertTrue(child.running)

    def test_later_listen_failure_logged(self) -> None:
        """
        An endpoint that fails after start-up (asynchronously) is logged,
        naming its description.
        """
        pending: defer.Deferred[Any] = defer.Deferred()
        service, _ = build([("systemd:domain=INET:index=0", FakeEndpoint(pending))])
        service.privilegedStartService()
        with capturedLogs() as events:
            pending.errback(CannotListenError("", 1, OSError(9, "Bad file descriptor")))
        [event] = [e for e in events if e.get("log_namespace") == "tsecho.service"]
        self.assertEqual(event["description"], "systemd:domain=INET:index=0")
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertEqual(service.ports, [])
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)

    def test_later_listen_success(self) -> None:
        """
        An endpoint that listens after start-up adds its port then.
        """
        pending: defer.Deferred[Any] = defer.Deferred()
        service, _ = build([("slow", FakeEndpoint(pending))])
        service.privilegedStartService()
        port = FakePort(IPv4Address("TCP", "127.0.0.1", 5))
        pending.callback(port)
        self.assertEqual(service.ports, [port])


class StartupErrorTests(SynchronousTestCase):
    """
    A listener that cannot be opened ends start-up with one line, not a traceback.
    """

    def test_listen_fails(self) -> None:
        """
        L{StartupError} (a L{SystemExit}) names the description and the
        reason, in one line; ports opened before are closed; later endpoints
        are not tried.
        """
        first, first_port = port_endpoint(7000)
        failing = failing_endpoint(21567)
        never, _ = port_endpoint(7002)
        service, _ = build([("tcp:7000", first), ("tcp:21567", failing), ("tcp:7002", never)])
        e = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertIsInstance(e, SystemExit)
        message = str(e)
        self.assertTrue(message.startswith("tsecho: cannot listen on tcp:21567: "), message)
        self.assertIn("Address already in use", message)
        self.assertNotIn("\n", message)
        self.assertTrue(first_port.stopped)
        self.assertEqual(service.ports, [])
        self.assertEqual(never.factories, [])

    def test_port_held_by_own_listener(self) -> None:
        """
        A port one of the service's own listeners already holds is named as
        that listener's, for a stream listener and for a child (C{--metrics})
        alike, not blamed on another program.
        """
        from tsecho.metrics import metrics_listener

        first, _ = port_endpoint(7000)
        service, _ = build([("tcp:7000", first), ("tcp:7000:interface=127.0.0.1", failing_endpoint(7000))])
        message = str(self.assertRaises(StartupError, service.privilegedStartService))
        self.assertIn("This tsecho already listens there, on tcp:7000: give each listener a port of its own.", message)
        first, _ = port_endpoint(7000)
        service, _ = build([("tcp:7000", first)])
        metrics_listener("tcp:7000", failing_endpoint(7000), object()).setServiceParent(service)
        message = str(self.assertRaises(StartupError, service.privilegedStartService))
        self.assertTrue(message.startswith("tsecho: cannot listen on --metrics tcp:7000: "), message)
        self.assertIn("This tsecho already listens there, on tcp:7000: give each listener a port of its own.", message)

    def test_udp_port_held_by_another_program(self) -> None:
        """
        A UDP port in use is another program's, even when one of the
        service's TCP listeners has the same number (TCP and UDP ports are
        apart, and the README serves both on 21567).
        """

        def busy() -> FakePort:
            raise CannotListenError("", 7000, OSError(errno.EADDRINUSE, "Address already in use"))

        first, _ = port_endpoint(7000)
        service, _ = build([("tcp:7000", first)])
        DatagramListener("udp:7000", busy).setServiceParent(service)
        message = str(self.assertRaises(StartupError, service.privilegedStartService))
        self.assertTrue(message.endswith("Another program listens there: stop it, or choose another port."), message)

    def test_child_fails(self) -> None:
        """
        A child service that cannot start gives a one-line L{StartupError}
        too, and the stream ports are closed.
        """
        endpoint, port = port_endpoint(7000)
        service, _ = build([("tcp:7000", endpoint)])
        FailingService().setServiceParent(service)
        e = self.assertRaises(StartupError, service.privilegedStartService)
        self.assertTrue(str(e).startswith("tsecho: "), str(e))
        self.assertIn("Permission denied", str(e))
        self.assertNotIn("\n", str(e))
        self.assertTrue(port.stopped)

    def test_start_alone_fails(self) -> None:
        """
        Started by C{startService} alone, a listen failure is a
        L{StartupError} too, and the service is not running.
        """
        service, _ = build([("tcp:21567", failing_endpoint(21567))])
        self.assertRaises(StartupError, service.startService)
        self.assertFalse(service.running)


class StopTests(SynchronousTestCase):
    """
    C{stopService} stops listening at once, drains, and aborts leftovers.
    """

    def started(
        self, config: ServerConfig | None = None, grace: float = 10.0
    ) -> tuple[TimestampEchoService, TimestampEchoFactory, FakePort]:
        """
        A started service listening on one fake port.
        """
        endpoint, port = port_endpoint(7000)
        service, factory = build([("tcp:7000", endpoint)], config, grace)
        service.privilegedStartService()
        service.startService()
        return service, factory, port

    def test_nothing_open(self) -> None:
        """
        With no connection open, stopping is immediate and leaves no timer.
        """
        service, factory, port = self.started()
        self.successResultOf(service.stopService())
        self.assertTrue(port.stopped)
        self.assertEqual(service.ports, [])
        self.assertFalse(service.running)
        self.assertEqual(factory.clock.getDelayedCalls(), [])

    def test_stops_listening_at_once_then_drains(self) -> None:
        """
        Listening stops at once; an idle connection closes once quiet; the
        result fires then, before the grace period.
        """
        service, factory, port = self.started(ServerConfig(drain_quiet=0.5))
        echo = connect(factory, transport_type=ClosingStringTransport)
        d = service.stopService()
        self.assertTrue(port.stopped)
        self.assertNoResult(d)
        factory.clock.advance(0.5)  # type: ignore[attr-defined]
        self.assertTrue(echo.transport.disconnecting)
        self.assertFalse(echo.transport.disconnected)
        self.successResultOf(d)
        self.assertEqual(factory.clock.getDelayedCalls(), [])

    def test_owed_replies_sent(self) -> None:
        """
        A connection still sending during the stop is answered in full.
        """
        service, factory, _ = self.started(ServerConfig(drain_quiet=0.5))
        echo = connect(factory, transport_type=ClosingStringTransport)
        d = service.stopService()
        self.assertEqual(echo.send(b"owed\r\n"), EXAMPLE_STAMP + b"owed\r\n")
        factory.clock.advance(0.5)  # type: ignore[attr-defined]
        self.successResultOf(d)

    def test_leftovers_aborted_after_grace(self) -> None:
        """
        Connections still open C{shutdown_grace} seconds after the stop began
        are aborted, with a warning; the result fires once they are gone.
        """
        service, factory, _ = self.started(ServerConfig(drain_quiet=0.5, shutdown_window=5), grace=3)
        stuck = connect(factory)  # closing, but its client reads nothing
        chatty = connect(factory)  # keeps sending, within its shutdown window
        d = service.stopService()
        for _ in range(5):
            factory.clock.advance(0.4)  # type: ignore[attr-defined]
            chatty.send(b"more\n")
        self.assertTrue(stuck.transport.disconnecting)
        self.assertFalse(stuck.transport.disconnected)
        self.assertFalse(chatty.transport.disconnecting)
        with capturedLogs() as events:
            factory.clock.advance(1)  # type: ignore[attr-defined]
        self.assertTrue(stuck.transport.disconnected)
        self.assertTrue(chatty.transport.disconnected)
        [warning] = [e for e in events if e.get("log_namespace") == "tsecho.service"]
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertEqual(warning["count"], 2)
        self.assertNoResult(d)
        stuck.lose()
        chatty.lose()
        self.successResultOf(d)
        self.assertEqual(factory.clock.getDelayedCalls(), [])
