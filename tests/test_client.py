"""
The client's parts in memory: L{EchoClient} against the real server protocol
and against a copy of the original server, L{EchoSession}'s reconnect policy
and timeouts, L{DatagramClient}, and L{InputLines}.

Time is a L{task.Clock} and connections are L{twisted.test.iosim} pumps, so
every test is deterministic and needs no network.
"""

from __future__ import annotations

import errno
import gc
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error, task
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tsecho.client._datagram import DatagramClient
from tsecho.client._errors import (
    ClientError,
    ClosedError,
    ReplyTooLongError,
    explain,
)
from tsecho.client._input import InputLines, InputTooLongError, InputUnreadableError, StdinReader
from tsecho.client._stream import ConnectionEndedError, EchoClient, EchoSession
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.testing import MemoryNetwork
from tsecho.timestamps import Timestamper

TARGET = "localhost:21567"
#: The reply prefix at the clock's time 0, in UTC, in the original's format.
EPOCH = b"[Thu Jan  1 00:00:00 1970] "


def server_factory(clock: task.Clock, **config: Any) -> TimestampEchoFactory:
    """
    The real server's factory, on C{clock}, in UTC.
    """
    return TimestampEchoFactory(ServerConfig(**config), Timestamper(utc=True), clock)


class OriginalServer(LineReceiver):
    """
    What C{tsTservSS.py} does under Python 3: answer the first line with
    C{[ctime] b'LINE\\r\\n'} (the repr of the bytes, no line ending), then close.
    """

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"[Thu Jan  1 00:00:00 1970] " + repr(line + b"\n").encode())
        self.transport.loseConnection()


class SilentServer(Protocol):
    """
    Accepts, reads, never answers.
    """


class AbortableTransport(StringTransport):
    """
    A L{StringTransport} that, like TCP, ends the connection only when the
    test says so (it calls C{connectionLost}), and records an abort without
    marking itself as disconnecting, as TCP does (its C{connectionLost}
    follows on the next reactor turn).

    @ivar aborted: whether C{abortConnection} was called.
    """

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Servers(Factory):
    """
    Hands out the given server protocols, one per connection, in order.
    """

    def __init__(self, *servers: Protocol) -> None:
        self.servers = list(servers)

    def buildProtocol(self, addr: object) -> Protocol:
        return self.servers.pop(0)


def session_with(network: MemoryNetwork, timeout: float | None = 5.0) -> EchoSession:
    return network.session(timeout, TARGET)


def error_line(test: SynchronousTestCase, d: defer.Deferred[Any]) -> str:
    """
    The one line a failed C{ask} would give the user.
    """
    failure = test.failureResultOf(d, ClientError)
    return str(failure.value)


class EchoClientTests(SynchronousTestCase):
    """
    L{EchoClient}: one connection, one L{Deferred} per reply, in order.
    """

    def connect(self, **config: Any) -> tuple[EchoClient, iosim.IOPump]:
        clock = task.Clock()
        factory = server_factory(clock, **config)
        client, _server, pump = iosim.connectedServerAndClient(
            lambda: factory.buildProtocol(None), EchoClient, clock=clock
        )
        return client, pump

    def test_pipelined_against_real_server(self) -> None:
        """
        Messages sent back to back on one connection to the real server are
        answered in order, each byte for byte, whatever bytes they hold.
        """
        client, pump = self.connect()
        messages = [b"hello", b"", b"\xff\x00\x01 not utf-8", b"tab\there\rcr"]
        replies = [client.send(m) for m in messages]
        pump.flush()
        self.assertEqual([self.successResultOf(r) for r in replies], [EPOCH + m for m in messages])
        self.assertEqual((client.sent, client.answered), (4, 4))

    def test_sends_crlf_lines(self) -> None:
        """
        Each message goes out as one line ending in C{\\r\\n}, as the original
        client sent it.
        """
        client = EchoClient()
        transport = StringTransport()
        client.makeConnection(transport)
        client.send(b"a")
        client.send(b"b c")
        self.assertEqual(transport.value(), b"a\r\nb c\r\n")

    def test_line_break_refused(self) -> None:
        """
        A message with a line break would be two lines and two replies, so
        it is refused before anything is sent.
        """
        client = EchoClient()
        transport = StringTransport()
        client.makeConnection(transport)
        self.assertRaises(ValueError, client.send, b"a\nb")
        self.assertEqual(transport.value(), b"")

    def test_replies_in_every_slice(self) -> None:
        """
        However the replies are cut into chunks, and whichever line ending
        each uses, each L{Deferred} fires with its own reply line.
        """
        data = b"[x] one\r\n[x] two\n[x] \r\n[x] four\r\r\n"
        expected = [b"[x] one", b"[x] two", b"[x] ", b"[x] four\r"]
        for size in range(1, len(data) + 1):
            client = EchoClient()
            client.makeConnection(StringTransport())
            replies = [client.send(b"m") for _ in expected]
            for start in range(0, len(data), size):
                client.dataReceived(data[start : start + size])
            self.assertEqual([self.successResultOf(r) for r in replies], expected, f"slice size {size}")

    def test_unterminated_reply_at_clean_close(self) -> None:
        """
        A reply that the server ends by closing the connection (no line
        ending) is complete: that is how the original server answers.
        """
        client, _server, pump = iosim.connectedServerAndClient(OriginalServer, EchoClient)
        reply = client.send(b"hello")
        pump.flush()
        self.assertEqual(self.successResultOf(reply), b"[Thu Jan  1 00:00:00 1970] b'hello\\r\\n'")
        self.assertFalse(client.open)
        self.successResultOf(client.lost)

    def test_unterminated_reply_at_broken_connection(self) -> None:
        """
        Bytes without a line ending before a connection I{breaks} are not a
        reply: the message fails with the reason.
        """
        client = EchoClient()
        client.makeConnection(StringTransport())
        reply = client.send(b"hello")
        client.dataReceived(b"[x] hel")
        client.connectionLost(Failure(error.ConnectionLost()))
        failure = self.failureResultOf(reply, ConnectionEndedError)
        self.assertTrue(failure.value.reason.check(error.ConnectionLost))

    def test_one_shot_server_answers_first(self) -> None:
        """
        Against C{--one-shot}, the first message is answered and the second
        fails with L{ConnectionEndedError}: the server closed.
        """
        client, pump = self.connect(one_shot=True, close_timeout=1)
        first, second = client.send(b"a"), client.send(b"b")
        pump.flush()
        self.assertNoResult(second)  # the server lingers for the client to close...
        pump.clock.advance(1)  # ...then gives up and closes
        pump.flush()
        self.assertEqual(self.successResultOf(first), EPOCH + b"a")
        self.failureResultOf(second, ConnectionEndedError)

    def test_server_error_line_is_a_reply(self) -> None:
        """
        The server's C{ERROR} line answers the message that caused it.
        """
        client, pump = self.connect(max_line=4)
        ok, long = client.send(b"1234"), client.send(b"12345")
        pump.flush()
        self.assertEqual(self.successResultOf(ok), EPOCH + b"1234")
        self.assertEqual(self.successResultOf(long), b"ERROR line too long (limit 4 bytes)")

    def test_reply_too_long(self) -> None:
        """
        A reply longer than the client accepts fails the message with
        L{ReplyTooLongError} and closes the connection.
        """
        client = EchoClient()
        client.MAX_LENGTH = 8
        transport = StringTransport()
        client.makeConnection(transport)
        reply = client.send(b"m")
        client.dataReceived(b"[x] 123456789")
        self.assertEqual(str(self.failureResultOf(reply, ReplyTooLongError).value), "a reply was longer than 8 bytes")
        self.assertTrue(transport.disconnecting)

    def test_unasked_line_ignored(self) -> None:
        """
        A line that answers nothing is ignored; the next reply still goes to
        the next message.
        """
        client = EchoClient()
        client.makeConnection(StringTransport())
        client.dataReceived(b"ERROR server busy\r\n")
        reply = client.send(b"m")
        client.dataReceived(b"[x] m\r\n")
        self.assertEqual(self.successResultOf(reply), b"[x] m")

    def test_send_after_close(self) -> None:
        """
        Sending on a closed connection fails at once.
        """
        client = EchoClient()
        client.makeConnection(StringTransport())
        client.connectionLost(Failure(error.ConnectionDone()))
        self.failureResultOf(client.send(b"m"), ConnectionEndedError)


class EchoSessionTests(SynchronousTestCase):
    """
    L{EchoSession}: pipelining, reconnecting, failing with one clear error.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()

    def real_server(self, **config: Any) -> MemoryNetwork:
        return MemoryNetwork(server_factory(self.clock, **config))

    def on_string_transports(self) -> tuple[EchoSession, list[EchoClient]]:
        """
        A session whose connections are L{EchoClient}s on L{AbortableTransport}s,
        and the list those connections are added to as they open.
        """
        clients: list[EchoClient] = []

        def connect() -> defer.Deferred[EchoClient]:
            client = EchoClient()
            client.makeConnection(AbortableTransport())
            clients.append(client)
            return defer.succeed(client)

        return EchoSession(connect, self.clock, TARGET, 5), clients

    def test_persistent_server_one_connection(self) -> None:
        """
        Against the (persistent) real server every message is answered, in
        order, over one connection; the first message goes alone, the rest
        are pipelined once the connection has answered.
        """
        network = self.real_server()
        session = session_with(network)
        replies = [session.ask(m) for m in (b"a", b"b", b"c")]
        self.assertEqual(network.pumps[0].clientIO.stream, [b"a\r\n"])
        network.pumps[0].pump(advanceClock=False)  # "a" reaches the server
        network.pumps[0].pump(advanceClock=False)  # its reply comes back
        self.assertEqual(network.pumps[0].clientIO.stream, [b"b\r\n", b"c\r\n"])
        network.flush()
        self.assertEqual([self.successResultOf(r) for r in replies], [EPOCH + b"a", EPOCH + b"b", EPOCH + b"c"])
        self.assertEqual(len(network.pumps), 1)

    def test_one_shot_server_reconnects(self) -> None:
        """
        Against C{--one-shot}, the messages the closed connection left
        unanswered are sent again, one connection per message.
        """
        network = self.real_server(one_shot=True, close_timeout=1)
        session = session_with(network, timeout=None)
        replies = [session.ask(m) for m in (b"a", b"b", b"c")]
        for _ in range(5):
            network.flush()
            self.clock.advance(1)  # the server's linger, if the client did not close first
        answers = [self.successResultOf(r) for r in replies]
        self.assertEqual([a[len(EPOCH) :] for a in answers], [b"a", b"b", b"c"])
        self.assertTrue(all(a.startswith(b"[Thu Jan  1 00:00:0") for a in answers), answers)
        self.assertEqual(len(network.pumps), 3)
        self.assertEqual([getattr(s, "lines_answered", None) for s in network.servers], [1, 1, 1])

    def test_original_server_reconnects(self) -> None:
        """
        Against the original server (a repr reply without line ending, then
        close) every message is answered on a connection of its own.
        """
        network = MemoryNetwork(Factory.forProtocol(OriginalServer), self.clock)
        session = session_with(network)
        replies = [session.ask(m) for m in (b"hello", b"world")]
        network.flush()
        self.assertEqual(
            [self.successResultOf(r) for r in replies],
            [b"[Thu Jan  1 00:00:00 1970] b'hello\\r\\n'", b"[Thu Jan  1 00:00:00 1970] b'world\\r\\n'"],
        )
        self.assertEqual(len(network.pumps), 2)

    def test_later_messages_reuse_open_connection(self) -> None:
        """
        A message asked after earlier ones were answered goes on the same
        persistent connection.
        """
        network = self.real_server()
        session = session_with(network)
        first = session.ask(b"a")
        network.flush()
        second = session.ask(b"b")
        network.flush()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (EPOCH + b"a", EPOCH + b"b"))
        self.assertEqual(len(network.pumps), 1)

    def test_reconnects_after_idle_close(self) -> None:
        """
        If the server closed an idle connection, the next message opens a new one.
        """
        network = self.real_server(timeout=30)
        session = session_with(network, timeout=None)
        self.successResultOf(self.flushed(network, session.ask(b"a")))
        self.clock.advance(30)  # the server closes the idle connection
        network.flush()
        self.assertFalse(network.clients[0].open)
        self.assertEqual(
            self.successResultOf(self.flushed(network, session.ask(b"b"))), b"[Thu Jan  1 00:00:30 1970] b"
        )
        self.assertEqual(len(network.pumps), 2)

    def flushed(self, network: MemoryNetwork, d: defer.Deferred[bytes]) -> defer.Deferred[bytes]:
        network.flush()
        return d

    def test_closed_before_answering(self) -> None:
        """
        A connection that closes without answering anything fails every
        message with one line: the server closed before answering.
        """
        network = MemoryNetwork(Factory.forProtocol(ClosingServer), self.clock)
        session = session_with(network)
        replies = [session.ask(m) for m in (b"a", b"b")]
        network.flush()
        self.assertEqual(error_line(self, replies[0]), f"{TARGET} closed the connection before answering")
        self.assertEqual(error_line(self, replies[1]), f"{TARGET} closed the connection before answering")
        self.assertEqual(len(network.pumps), 1)
        self.assertEqual(error_line(self, session.ask(b"c")), f"{TARGET} closed the connection before answering")

    def test_server_stopping_mid_stream(self) -> None:
        """
        A persistent server that closes after answering several messages is
        stopping: the rest fail with one line saying how many went unanswered,
        and no new connection is tried (it is no one-shot server).
        """
        session, connections = self.on_string_transports()
        replies = [session.ask(m) for m in (b"a", b"b", b"c", b"d", b"e")]
        connections[0].dataReceived(b"[x] a\r\n")  # pipelining starts
        connections[0].dataReceived(b"[x] b\r\n")
        connections[0].connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.successResultOf(replies[1]), b"[x] b")
        line = f"{TARGET} closed the connection with 3 messages unanswered (is the server stopping?)"
        self.assertEqual([error_line(self, r) for r in replies[2:]], [line] * 3)
        self.assertEqual(len(connections), 1)

    def test_broken_before_answering(self) -> None:
        """
        A connection broken (not closed cleanly) before any answer says so.
        """
        session, connection = self.on_string_transports()
        reply = session.ask(b"a")
        connection[0].connectionLost(Failure(error.ConnectionLost("Connection reset by peer")))
        self.assertEqual(
            error_line(self, reply),
            f"connection to {TARGET} lost before answering: Connection to the other side was lost in a non-clean "
            "fashion: Connection reset by peer.",
        )

    def test_connection_refused(self) -> None:
        """
        A refused connection fails the message: C{connection refused}.
        """
        session = EchoSession(lambda: defer.fail(error.ConnectionRefusedError()), self.clock, TARGET, 5)
        self.assertEqual(error_line(self, session.ask(b"a")), f"cannot connect to {TARGET}: connection refused")

    def test_unknown_host(self) -> None:
        """
        A host name that does not resolve fails the message: C{unknown host}.
        """
        session = EchoSession(lambda: defer.fail(error.DNSLookupError("nosuch")), self.clock, "nosuch:1", 5)
        self.assertEqual(error_line(self, session.ask(b"a")), "cannot connect to nosuch:1: unknown host")

    def test_reply_timeout(self) -> None:
        """
        No reply within the timeout fails the message with one line, and the
        connection is dropped; just before the timeout nothing has happened.
        """
        network = MemoryNetwork(Factory.forProtocol(SilentServer), self.clock)
        session = session_with(network, timeout=5)
        reply = session.ask(b"a")
        network.flush()
        self.clock.advance(4.9)
        self.assertNoResult(reply)
        self.clock.advance(0.1)
        self.assertEqual(error_line(self, reply), f"no reply from {TARGET} within 5 seconds")
        self.assertTrue(network.pumps[0].clientIO.disconnecting)

    def test_timeout_counts_per_reply(self) -> None:
        """
        The timeout runs from the previous reply: replies 4 seconds apart
        each arrive within a 5 second timeout.
        """
        network = MemoryNetwork(Factory.forProtocol(ManualServer), self.clock)
        session = session_with(network, timeout=5)
        first, second = session.ask(b"a"), session.ask(b"b")
        network.flush()
        server = network.servers[0]
        assert isinstance(server, ManualServer)
        self.clock.advance(4)
        server.answer()
        network.flush()
        self.clock.advance(4)
        server.answer()
        network.flush()
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (b"[m] a", b"[m] b"))

    def test_connect_timeout(self) -> None:
        """
        A connection attempt that takes longer than the timeout is cancelled
        and reported as such.
        """
        cancelled: list[defer.Deferred[EchoClient]] = []

        def connect() -> defer.Deferred[EchoClient]:
            return defer.Deferred(cancelled.append)

        session = EchoSession(connect, self.clock, TARGET, 2.5)
        reply = session.ask(b"a")
        self.clock.advance(2.5)
        self.assertEqual(error_line(self, reply), f"cannot connect to {TARGET}: no connection within 2.5 seconds")
        self.assertEqual(len(cancelled), 1)

    def test_close(self) -> None:
        """
        C{close} fails what is unanswered with L{ClosedError}, closes the
        connection, and fires once it has closed.
        """
        network = MemoryNetwork(Factory.forProtocol(SilentServer), self.clock)
        session = session_with(network)
        reply = session.ask(b"a")
        network.flush()
        closed = session.close()
        self.failureResultOf(reply, ClosedError)
        self.assertNoResult(closed)
        network.flush()
        self.successResultOf(closed)

    def test_close_idle(self) -> None:
        """
        Closing a session that never connected is immediate.
        """
        session = session_with(MemoryNetwork(Factory.forProtocol(SilentServer), self.clock))
        self.successResultOf(session.close())

    def test_reply_too_long_stops(self) -> None:
        """
        A reply over the client's limit fails the session with one line.
        """
        connection: list[EchoClient] = []

        def connect() -> defer.Deferred[EchoClient]:
            client = EchoClient()
            client.MAX_LENGTH = 6
            transport = StringTransportWithDisconnection()
            transport.protocol = client
            client.makeConnection(transport)
            connection.append(client)
            return defer.succeed(client)

        session = EchoSession(connect, self.clock, TARGET, 5)
        first, second = session.ask(b"a"), session.ask(b"b")
        connection[0].dataReceived(b"[x] a\r\n[x] bbbbbb")
        self.assertEqual(self.successResultOf(first), b"[x] a")
        self.assertEqual(error_line(self, second), "a reply was longer than 6 bytes")

    def test_close_from_a_reply_with_more_replies_in_the_chunk(self) -> None:
        """
        Closing the session from the callback of one reply (as the script
        does when standard output breaks) while more replies, the last one
        unfinished, sit in the same chunk: the later messages fail with
        L{ClosedError}, what was left unread is no reply to anything, and
        nothing fails unhandled.
        """
        session, clients = self.on_string_transports()
        first = session.ask(b"a")
        clients[0].dataReceived(b"[x] a\r\n")
        self.successResultOf(first)
        later = [session.ask(m) for m in (b"b", b"c", b"d")]

        def close(reply: bytes) -> bytes:
            session.close()
            return reply

        later[0].addCallback(close)
        with capturedLogs() as events:
            clients[0].dataReceived(b"[x] b\r\n[x] c\r\n[x] d")
            clients[0].connectionLost(Failure(error.ConnectionDone()))
            gc.collect()  # a Deferred that failed unhandled says so when collected
        self.assertEqual(self.successResultOf(later[0]), b"[x] b")
        for reply in later[1:]:
            self.failureResultOf(reply, ClosedError)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.warn], [])

    def test_close_when_all_answered_is_polite(self) -> None:
        """
        Closing once every message was answered closes the connection
        politely.
        """
        session, clients = self.on_string_transports()
        reply = session.ask(b"a")
        clients[0].dataReceived(b"[x] a\r\n")
        self.successResultOf(reply)
        session.close()
        transport = clients[0].transport
        self.assertTrue(transport.disconnecting)  # type: ignore[union-attr]
        self.assertFalse(transport.aborted)  # type: ignore[union-attr]

    def test_close_with_replies_outstanding_aborts(self) -> None:
        """
        Closing with replies still outstanding aborts the connection: the
        server may be sending replies nobody will read, and a polite close
        would wait for it to read what was sent, which it stops doing when
        its replies are not read.
        """
        session, clients = self.on_string_transports()
        first = session.ask(b"a")
        clients[0].dataReceived(b"[x] a\r\n")
        self.successResultOf(first)
        second = session.ask(b"b")
        session.close()
        self.failureResultOf(second, ClosedError)
        self.assertTrue(clients[0].transport.aborted)  # type: ignore[union-attr]


def logged(events: list[LogEvent]) -> list[tuple[LogLevel, str]]:
    """
    Each captured event's level and text, as an operator would read it.
    """
    return [(e["log_level"], formatEvent(e)) for e in events]


class PendingConnections:
    """
    A C{connect} function for L{EchoSession} whose connections open only
    when the test says so, each an L{EchoClient} on an L{AbortableTransport}.

    @ivar pending: the attempts not opened yet, oldest first.
    @ivar clients: the connections opened so far, in order.
    """

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[EchoClient]] = []
        self.clients: list[EchoClient] = []
        self.attempts = 0

    def connect(self) -> defer.Deferred[EchoClient]:
        self.attempts += 1
        attempt: defer.Deferred[EchoClient] = defer.Deferred()
        self.pending.append(attempt)
        return attempt

    def open_next(self) -> EchoClient:
        """
        Complete the oldest attempt; return its connection.
        """
        client = EchoClient()
        client.makeConnection(AbortableTransport())
        self.clients.append(client)
        self.pending.pop(0).callback(client)
        return client


def written(client: EchoClient) -> bytes:
    """
    What C{client} has sent so far.
    """
    assert isinstance(client.transport, AbortableTransport)
    return client.transport.value()


class EchoSessionRulesTests(SynchronousTestCase):
    """
    The rules of L{EchoSession} that the outcome of a whole exchange does not
    show: how a fresh connection starts, how a connection is replaced, how
    closing and timing out end connections, and the texts users and
    operators read.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.connections = PendingConnections()
        self.session = EchoSession(self.connections.connect, self.clock, TARGET, 5)

    def test_fresh_connection_sends_one_until_answered(self) -> None:
        """
        A new connection carries one message until it has answered once (the
        server may close after each reply); then the rest go out pipelined.
        """
        replies = [self.session.ask(m) for m in (b"a", b"b", b"c")]
        client = self.connections.open_next()
        self.assertEqual(written(client), b"a\r\n")
        client.dataReceived(b"[x] a\r\n")
        self.assertEqual(written(client), b"a\r\nb\r\nc\r\n")
        client.dataReceived(b"[x] b\r\n[x] c\r\n")
        self.assertEqual([self.successResultOf(r) for r in replies], [b"[x] a", b"[x] b", b"[x] c"])

    def one_per_connection(self) -> tuple[defer.Deferred[bytes], ...]:
        """
        Get the session into one-message-per-connection mode: the first
        connection answers C{a} and closes with C{b} unanswered, the second
        connection answers C{b}, and C{c} is asked.  The second connection is
        then being replaced: it is closing, and a third attempt is pending.
        """
        a, b = self.session.ask(b"a"), self.session.ask(b"b")
        first = self.connections.open_next()
        first.dataReceived(b"[x] a\r\n")
        first.connectionLost(Failure(error.ConnectionDone()))
        second = self.connections.open_next()
        self.assertEqual(written(second), b"b\r\n")
        second.dataReceived(b"[x] b\r\n")
        self.assertEqual(self.connections.attempts, 2)
        return a, b, self.session.ask(b"c")

    def test_retired_connection_closed_politely(self) -> None:
        """
        A connection that answered its one message is closed politely (its
        reply is in, so there is nothing to cut short), not aborted.
        """
        self.one_per_connection()
        transport = self.connections.clients[1].transport
        assert isinstance(transport, AbortableTransport)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)

    def test_ask_while_replacing_a_connection(self) -> None:
        """
        Messages asked while a connection is being replaced wait for the new
        one: no second attempt is made, and each is answered in turn on a
        connection of its own.
        """
        a, b, c = self.one_per_connection()
        self.assertEqual(self.connections.attempts, 3)
        d = self.session.ask(b"d")
        self.assertEqual(self.connections.attempts, 3)
        third = self.connections.open_next()
        self.assertEqual(written(third), b"c\r\n")
        third.dataReceived(b"[x] c\r\n")
        fourth = self.connections.open_next()
        self.assertEqual(written(fourth), b"d\r\n")
        fourth.dataReceived(b"[x] d\r\n")
        self.assertEqual([self.successResultOf(r) for r in (a, b, c, d)], [b"[x] a", b"[x] b", b"[x] c", b"[x] d"])

    def test_close_waits_for_every_connection(self) -> None:
        """
        C{close} fires only once every connection has ended, the one being
        replaced included, not when the current one has.
        """
        c = self.one_per_connection()[-1]
        c.addErrback(lambda f: f.trap(ClosedError))
        second, third = self.connections.clients[1], self.connections.open_next()
        closed = self.session.close()
        third.connectionLost(Failure(error.ConnectionDone()))
        self.assertNoResult(closed)
        second.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsNone(self.successResultOf(closed))

    def test_timed_out_connection_aborted(self) -> None:
        """
        A connection whose reply did not come in time is aborted: a server
        that does not answer may not read either, and a polite close would
        wait for it.
        """
        reply = self.session.ask(b"a")
        client = self.connections.open_next()
        self.clock.advance(5)
        self.assertEqual(error_line(self, reply), f"no reply from {TARGET} within 5 seconds")
        assert isinstance(client.transport, AbortableTransport)
        self.assertTrue(client.transport.aborted)

    def test_connection_ended_by_client_error(self) -> None:
        """
        A connection that ends with a L{ClientError} of its own (a TLS server
        that could not be verified) fails the waiting message with that error,
        not with a generic one about the connection closing.
        """
        reply = self.session.ask(b"a")
        client = self.connections.open_next()
        client.connectionLost(Failure(ClientError("cannot verify the TLS server")))
        self.assertEqual(error_line(self, reply), "cannot verify the TLS server")

    def test_line_break_text(self) -> None:
        """
        A message with a line break is refused with a sentence saying why.
        """
        e = self.assertRaises(ValueError, self.session.ask, b"a\nb")
        self.assertEqual(str(e), "a message cannot contain a line break")
        e = self.assertRaises(ValueError, EchoClient().send, b"a\nb")
        self.assertEqual(str(e), "a message cannot contain a line break")

    def test_logged_texts(self) -> None:
        """
        Connecting, and a server that closes after each reply, are logged
        (at debug level) in words naming the target and the counts.
        """
        with capturedLogs() as events:
            self.session.ask(b"a")
            self.session.ask(b"b")
            first = self.connections.open_next()
            first.dataReceived(b"[x] a\r\n")
            first.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(
            logged(events),
            [
                (LogLevel.debug, f"connecting to {TARGET}"),
                (LogLevel.debug, f"{TARGET} closed after 1 replies; resending 1 messages one per connection"),
                (LogLevel.debug, f"connecting to {TARGET}"),
            ],
        )


class EchoClientTextTests(SynchronousTestCase):
    """
    What L{EchoClient} says when a message cannot be answered, and what it
    logs about lines it does not use.
    """

    def test_send_before_connected(self) -> None:
        """
        Sending before the connection is made fails the message cleanly
        (no assertion, no exception), saying it is not connected.
        """
        failure = self.failureResultOf(EchoClient().send(b"m"), ConnectionEndedError)
        self.assertEqual(str(failure.value), "Connection was closed cleanly: not connected.")

    def test_connection_ended_text(self) -> None:
        """
        L{ConnectionEndedError} reads as the reason the connection ended.
        """
        client = EchoClient()
        client.makeConnection(StringTransport())
        reply = client.send(b"m")
        client.connectionLost(Failure(error.ConnectionLost("reset by peer")))
        failure = self.failureResultOf(reply, ConnectionEndedError)
        self.assertEqual(
            str(failure.value), "Connection to the other side was lost in a non-clean fashion: reset by peer."
        )

    def test_logged_texts(self) -> None:
        """
        A line nobody asked for and a reply over the limit are logged as
        warnings, and the bytes of an unfinished line dropped at a broken
        connection at debug level, each in words.
        """
        client = EchoClient()
        client.MAX_LENGTH = 8
        client.makeConnection(StringTransport())
        with capturedLogs() as events:
            client.dataReceived(b"[x] \xff?\r\n")
            client.send(b"m").addErrback(lambda f: f.trap(ReplyTooLongError))
            client.dataReceived(b"[x] 123456789")
        other = EchoClient()
        other.makeConnection(StringTransport())
        with capturedLogs() as more:
            other.dataReceived(b"[x] hel")
            other.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(
            logged(events) + logged(more),
            [
                (LogLevel.warn, "ignoring a line nobody asked for: b'[x] \\xff?'"),
                (LogLevel.warn, "reply longer than 8 bytes; closing"),
                (LogLevel.debug, "dropping 7 bytes of an unfinished line"),
            ],
        )


class ClosingServer(Protocol):
    """
    Closes every connection as soon as it gets data, answering nothing.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


class ManualServer(LineReceiver):
    """
    Answers the oldest line it got (with C{[m] LINE}) when told to.
    """

    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.rstrip(b"\r"))

    def answer(self) -> None:
        self.sendLine(b"[m] " + self.lines.pop(0))


class FakeDatagramTransport:
    """
    A connected datagram socket that records what is sent.
    """

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.stopped = False
        self.refuse_with: Exception | None = None

    def write(self, datagram: bytes, addr: object = None) -> None:
        if self.refuse_with is not None:
            raise self.refuse_with
        self.written.append(datagram)

    def stopListening(self) -> None:
        self.stopped = True


class DatagramClientTests(SynchronousTestCase):
    """
    L{DatagramClient}: one datagram per message, a timeout, one retry.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.transport = FakeDatagramTransport()
        self.client = DatagramClient(self.open, self.clock, "localhost:21567 (UDP)", 2.0)

    def open(self, client: DatagramClient) -> defer.Deferred[Any]:
        client.makeConnection(self.transport)  # type: ignore[arg-type]
        return defer.succeed(self.transport)

    def test_one_at_a_time(self) -> None:
        """
        Each message is one datagram, sent once the previous one is answered;
        replies fire in order.
        """
        first, second = self.client.ask(b"hello"), self.client.ask(b"")
        self.assertEqual(self.transport.written, [b"hello"])
        self.client.datagramReceived(EPOCH + b"hello", ("127.0.0.1", 21567))
        self.assertEqual(self.transport.written, [b"hello", b""])
        self.client.datagramReceived(EPOCH, ("127.0.0.1", 21567))
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (EPOCH + b"hello", EPOCH))

    def test_retry_once(self) -> None:
        """
        Without a reply in time the datagram is sent once more, and a reply
        to that try is accepted.
        """
        reply = self.client.ask(b"hello")
        self.clock.advance(2)
        self.assertEqual(self.transport.written, [b"hello", b"hello"])
        self.client.datagramReceived(EPOCH + b"hello", ("127.0.0.1", 21567))
        self.assertEqual(self.successResultOf(reply), EPOCH + b"hello")

    def test_gives_up_after_second_try(self) -> None:
        """
        No reply to either try: one line saying so, and later messages fail too.
        """
        reply = self.client.ask(b"hello")
        self.clock.advance(2)
        self.clock.advance(1.9)
        self.assertNoResult(reply)
        self.clock.advance(0.1)
        expected = "no reply from localhost:21567 (UDP) within 2 seconds (tried 2 times)"
        self.assertEqual(error_line(self, reply), expected)
        self.assertEqual(error_line(self, self.client.ask(b"again")), expected)
        self.assertEqual(len(self.transport.written), 2)

    def test_stray_datagram_ignored(self) -> None:
        """
        A late reply to an earlier message does not answer the current one.
        """
        first = self.client.ask(b"one")
        self.client.datagramReceived(EPOCH + b"one", ("127.0.0.1", 21567))
        second = self.client.ask(b"two")
        self.client.datagramReceived(EPOCH + b"one", ("127.0.0.1", 21567))
        self.assertNoResult(second)
        self.client.datagramReceived(EPOCH + b"two", ("127.0.0.1", 21567))
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (EPOCH + b"one", EPOCH + b"two"))

    def test_late_reply_ending_like_the_message_ignored(self) -> None:
        """
        A late reply to C{hello}, retried, does not answer a later C{lo}
        (nor C{x] lo} answer C{lo}): a reply is the timestamp and then the
        message exactly, not any datagram that ends with the message.
        """
        first = self.client.ask(b"hello")
        self.clock.advance(2)  # no answer in time: sent again
        self.client.datagramReceived(EPOCH + b"hello", ("127.0.0.1", 21567))
        second = self.client.ask(b"lo")
        self.client.datagramReceived(EPOCH + b"hello", ("127.0.0.1", 21567))  # the answer to the retry
        self.client.datagramReceived(EPOCH + b"x] lo", ("127.0.0.1", 21567))
        self.client.datagramReceived(b"lo", ("127.0.0.1", 21567))
        self.assertNoResult(second)
        self.client.datagramReceived(EPOCH + b"lo", ("127.0.0.1", 21567))
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (EPOCH + b"hello", EPOCH + b"lo"))

    def test_logged_texts(self) -> None:
        """
        A retry and an ignored datagram are logged at debug level, in words,
        the datagram escaped.
        """
        self.client.ask(b"hello")  # Twisted logs the start of the protocol
        with capturedLogs() as events:
            self.clock.advance(2)
            self.client.datagramReceived(b"[x] \xffhi\n", ("127.0.0.1", 21567))
        self.assertEqual(
            logged(events),
            [
                (LogLevel.debug, "no reply from localhost:21567 (UDP) yet; sending again"),
                (LogLevel.debug, "ignoring a datagram that answers no message in flight: b'[x] \\xffhi\\n'"),
            ],
        )

    def test_error_datagram_is_a_reply(self) -> None:
        """
        An C{ERROR} datagram answers the message in flight.
        """
        reply = self.client.ask(b"x")
        self.client.datagramReceived(b"ERROR datagram too long", ("127.0.0.1", 21567))
        self.assertEqual(self.successResultOf(reply), b"ERROR datagram too long")

    def test_refused(self) -> None:
        """
        An ICMP "port unreachable" (C{connectionRefused}) fails at once.
        """
        reply = self.client.ask(b"x")
        self.client.connectionRefused()
        self.assertEqual(error_line(self, reply), "cannot connect to localhost:21567 (UDP): connection refused")

    def test_socket_closed_under_us(self) -> None:
        """
        The epoll reactor closes a connected UDP socket on "port unreachable"
        instead: that is reported as refused, too.
        """
        reply = self.client.ask(b"x")
        self.client.doStop()
        self.assertEqual(error_line(self, reply), "cannot connect to localhost:21567 (UDP): connection refused")
        self.clock.advance(10)  # no timer left behind

    def test_too_long(self) -> None:
        """
        A message too long for one datagram fails with one line.
        """
        self.transport.refuse_with = error.MessageLengthError("message too long")
        reply = self.client.ask(b"x" * 70000)
        self.assertEqual(
            error_line(self, reply), "cannot send to localhost:21567 (UDP): message too long for one datagram"
        )

    def test_unknown_host(self) -> None:
        """
        If the host name does not resolve, the message fails: unknown host.
        """
        client = DatagramClient(lambda _: defer.fail(error.DNSLookupError("x")), self.clock, "nosuch:1 (UDP)", 2.0)
        self.assertEqual(error_line(self, client.ask(b"x")), "cannot connect to nosuch:1 (UDP): unknown host")

    def test_close(self) -> None:
        """
        C{close} fails what is unanswered and stops the socket.
        """
        reply = self.client.ask(b"x")
        self.successResultOf(self.client.close())
        self.failureResultOf(reply, ClosedError)
        self.assertTrue(self.transport.stopped)
        self.clock.advance(10)
        self.assertEqual(self.transport.written, [b"x"])


class Sink:
    """
    Collects what L{InputLines} reads.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ended: list[ClientError | None] = []

    def message(self, message: bytes) -> None:
        self.messages.append(message)

    def end_of_input(self, error: ClientError | None = None) -> None:
        self.ended.append(error)


class InputLinesTests(SynchronousTestCase):
    """
    L{InputLines}: standard input to messages.
    """

    def read(self, data: bytes, size: int) -> tuple[Sink, StringTransport]:
        sink = Sink()
        lines = InputLines(sink)
        transport = StringTransport()
        lines.makeConnection(transport)
        for start in range(0, len(data), size):
            lines.dataReceived(data[start : start + size])
        if not lines.ended:
            lines.connectionLost(Failure(error.ConnectionDone()))
        return sink, transport

    def test_lines_until_end(self) -> None:
        """
        Each line is a message (either line ending, the last one may have
        none), in every slice size; the end of input ends the messages.
        """
        data = b"a\nb c\r\n\xff\x00\nlast"
        for size in range(1, len(data) + 1):
            sink, _ = self.read(data, size)
            self.assertEqual(sink.messages, [b"a", b"b c", b"\xff\x00", b"last"], f"slice size {size}")
            self.assertEqual(sink.ended, [None])

    def test_empty_line_ends(self) -> None:
        """
        An empty line ends the input, as in the original client; what
        follows is not sent and reading stops.
        """
        for size in (1, 2, 100):
            sink, transport = self.read(b"a\r\n\r\nb\n", size)
            self.assertEqual(sink.messages, [b"a"])
            self.assertEqual(sink.ended, [None])
            self.assertEqual(transport.producerState, "stopped")

    def test_read_error(self) -> None:
        """
        A failure to read standard input ends it with one clear line.
        """
        sink = Sink()
        lines = InputLines(sink)
        lines.makeConnection(StringTransport())
        lines.connectionLost(Failure(OSError(5, "Input/output error")))
        self.assertEqual([str(e) for e in sink.ended], ["cannot read standard input: [Errno 5] Input/output error"])
        self.assertIsInstance(sink.ended[0], InputUnreadableError)

    def test_line_too_long(self) -> None:
        """
        A line longer than any message may be ends the input with an error.
        """
        sink = Sink()
        lines = InputLines(sink)
        lines.MAX_LENGTH = 3
        lines.makeConnection(StringTransport())
        lines.dataReceived(b"ab\nabcd")
        self.assertEqual(sink.messages, [b"ab"])
        self.assertIsInstance(sink.ended[0], InputTooLongError)
        self.assertEqual(str(sink.ended[0]), "a line of standard input is longer than 3 bytes")

    def test_paused_without_producer(self) -> None:
        """
        Fed directly (no transport to pause), a paused L{InputLines} holds
        its line and hands it out when resumed.
        """
        sink = Sink()
        lines = InputLines(sink)
        lines.pauseProducing()
        lines.dataReceived(b"a\n")
        self.assertEqual(sink.messages, [])
        lines.resumeProducing()
        self.assertEqual(sink.messages, [b"a"])
        self.assertEqual(sink.ended, [])


class AnswerOnceThenClose(LineReceiver):
    """
    Answers the first line with C{[o] LINE}; closes, unanswered, when the
    next line arrives (one answer per connection, its close a moment late).
    """

    delimiter = b"\n"

    def connectionMade(self) -> None:
        self.answered = False

    def lineReceived(self, line: bytes) -> None:
        assert self.transport is not None
        if self.answered:
            self.transport.loseConnection()
            self.setLineMode()  # no more lines
            self.clearLineBuffer()
            return
        self.answered = True
        self.sendLine(b"[o] " + line.rstrip(b"\r"))


class AnswerAll(LineReceiver):
    """
    Answers every line with C{[k] LINE} and never closes.
    """

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(b"[k] " + line.rstrip(b"\r"))


class EchoSessionEdgeTests(SynchronousTestCase):
    """
    L{EchoSession} in the corners: bad messages, one message per connection
    once a server has closed after answering, and a connection that arrives
    after the session was closed.
    """

    def test_line_break_refused(self) -> None:
        """
        A message holding a line break is refused at once, before anything
        is sent or any connection is opened.
        """
        network = MemoryNetwork(Factory.forProtocol(AnswerAll), task.Clock())
        session = session_with(network)
        self.assertRaises(ValueError, session.ask, b"a\nb")
        self.assertEqual(network.pumps, [])

    def test_one_message_per_connection_after_close(self) -> None:
        """
        Once a server has closed after one answer, the session sends one
        message per connection: even when a later connection stays open, it
        carries one message, and the session closes it itself and opens a
        new one for the next (sending more on a connection the server will
        close could get them reset away unread).
        """
        clock = task.Clock()
        network = MemoryNetwork(Servers(AnswerOnceThenClose(), AnswerAll(), AnswerAll(), AnswerAll()), clock)
        session = session_with(network)
        replies = [session.ask(m) for m in (b"a", b"b", b"c")]
        network.flush()
        self.assertEqual([self.successResultOf(r) for r in replies], [b"[o] a", b"[k] b", b"[k] c"])
        self.assertEqual(len(network.pumps), 3)
        later = session.ask(b"d")
        network.flush()
        self.assertEqual(self.successResultOf(later), b"[k] d")
        self.assertEqual(len(network.pumps), 4)
        *answered, last = network.servers[1:]
        self.assertEqual(len(answered), 2)
        for server in answered:  # closed by the session after their one message
            assert server is not None
            assert server.transport is not None
            self.assertTrue(server.transport.disconnected)  # type: ignore[attr-defined]
        assert last is not None
        assert last.transport is not None
        self.assertFalse(last.transport.disconnected)  # type: ignore[attr-defined]
        self.assertEqual(clock.getDelayedCalls(), [])  # nothing outstanding: no reply timer

    def test_one_message_per_connection_asked_while_waiting(self) -> None:
        """
        Once sending one message per connection, a message asked while the
        previous one waits for its answer waits too: it goes on a
        connection of its own after that answer, never on the waiting one.
        """

        class Recording(AnswerAll):
            def connectionMade(self) -> None:
                self.lines: list[bytes] = []

            def lineReceived(self, line: bytes) -> None:
                self.lines.append(line)
                super().lineReceived(line)

        clock = task.Clock()
        recording = [Recording(), Recording(), Recording()]
        network = MemoryNetwork(Servers(AnswerOnceThenClose(), *recording), clock)
        session = session_with(network)
        first = [session.ask(m) for m in (b"a", b"b")]
        network.flush()
        self.assertEqual([self.successResultOf(r) for r in first], [b"[o] a", b"[k] b"])
        waiting = session.ask(b"c")
        asked_meanwhile = session.ask(b"d")
        network.flush()
        self.assertEqual([self.successResultOf(r) for r in (waiting, asked_meanwhile)], [b"[k] c", b"[k] d"])
        self.assertEqual([server.lines for server in recording], [[b"b\r"], [b"c\r"], [b"d\r"]])

    def test_connection_after_close_is_closed(self) -> None:
        """
        A connection attempt that cannot be cancelled and delivers its
        connection anyway after C{close} gets that connection closed at once,
        with nothing sent on it; C{close} fires once it has gone.
        """
        clock = task.Clock()
        network = MemoryNetwork(Factory.forProtocol(ManualServer), clock)
        connections: list[EchoClient] = []

        def deliver_anyway(d: defer.Deferred[EchoClient]) -> None:
            network.connect().addCallback(connections.append)
            d.callback(connections[0])

        session = EchoSession(lambda: defer.Deferred(deliver_anyway), clock, TARGET, 5.0)
        reply = session.ask(b"hello")
        closed = session.close()
        self.failureResultOf(reply, ClosedError)
        self.assertNoResult(closed)
        network.flush()
        self.assertIsNone(self.successResultOf(closed))
        [server] = network.servers
        assert isinstance(server, ManualServer)
        self.assertEqual(server.lines, [])
        self.assertFalse(connections[0].open)


class DatagramClientEdgeTests(SynchronousTestCase):
    """
    L{DatagramClient} when its socket is slow to open, cannot send, or hears
    a refusal with nothing in flight.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.transport = FakeDatagramTransport()

    def opened(self, client: DatagramClient) -> FakeDatagramTransport:
        client.makeConnection(self.transport)  # type: ignore[arg-type]
        return self.transport

    def test_close_while_opening(self) -> None:
        """
        C{close} before the socket is open cancels the opening and fails the
        message as closed (not as a connection failure); nothing is sent.
        """
        cancelled: list[defer.Deferred[Any]] = []
        client = DatagramClient(lambda _: defer.Deferred(cancelled.append), self.clock, TARGET, 2.0)
        reply = client.ask(b"x")
        self.assertIsNone(self.successResultOf(client.close()))
        self.assertEqual(str(self.failureResultOf(reply, ClosedError).value), "closed before the reply arrived")
        self.assertEqual(len(cancelled), 1)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_opened_after_close(self) -> None:
        """
        A socket that opens anyway after C{close} is closed at once, unused.
        """
        client = DatagramClient(lambda c: defer.Deferred(lambda d: d.callback(self.opened(c))), self.clock, TARGET, 2.0)
        reply = client.ask(b"x")
        self.successResultOf(client.close())
        self.failureResultOf(reply, ClosedError)
        self.assertTrue(self.transport.stopped)
        self.assertEqual(self.transport.written, [])

    def test_send_error(self) -> None:
        """
        A system error while sending fails the message with one line naming
        it, and every later message the same way.
        """
        client = DatagramClient(lambda c: defer.succeed(self.opened(c)), self.clock, TARGET, 2.0)
        self.transport.refuse_with = OSError(errno.ENETUNREACH, "Network is unreachable")
        expected = f"cannot send to {TARGET}: Network is unreachable"
        self.assertEqual(error_line(self, client.ask(b"x")), expected)
        self.assertEqual(error_line(self, client.ask(b"y")), expected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusal_with_nothing_in_flight(self) -> None:
        """
        A "port unreachable" arriving when no message waits (a late one, for
        an answered message) does not fail the next message.
        """
        client = DatagramClient(lambda c: defer.succeed(self.opened(c)), self.clock, TARGET, 2.0)
        first = client.ask(b"one")
        client.datagramReceived(EPOCH + b"one", ("127.0.0.1", 21567))
        client.connectionRefused()
        second = client.ask(b"two")
        client.datagramReceived(EPOCH + b"two", ("127.0.0.1", 21567))
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (EPOCH + b"one", EPOCH + b"two"))


class ExplainTests(SynchronousTestCase):
    """
    L{explain} words each way of failing to connect as a few words.
    """

    def test_known_errors(self) -> None:
        """
        Routing failures and timeouts have fixed short wordings.
        """
        self.assertEqual(explain(Failure(error.NoRouteError())), "no route to host")
        self.assertEqual(explain(Failure(error.TimeoutError())), "timed out")

    def test_connect_error_text(self) -> None:
        """
        A L{error.ConnectError} from a system error says only the system's
        words, without Twisted's preamble, error number or final full stop;
        one with no words falls back to Twisted's own message.
        """
        failure = Failure(error.getConnectError((errno.ENOENT, "No such file or directory.")))
        self.assertEqual(explain(failure), "No such file or directory")
        self.assertEqual(explain(Failure(error.ConnectError())), "An error occurred while connecting.")

    def test_other_errors_on_one_line(self) -> None:
        """
        Anything else is its own message, squeezed onto one line.
        """
        self.assertEqual(explain(Failure(RuntimeError("two\nlines  here"))), "two lines here")


class InputLinesEndTests(SynchronousTestCase):
    """
    L{InputLines} ends once: nothing after the end reaches the sink.
    """

    def test_nothing_after_empty_line(self) -> None:
        """
        After an empty line ended the input, neither a too-long line nor
        the end of the input reports anything more.
        """
        sink = Sink()
        lines = InputLines(sink)
        lines.MAX_LENGTH = 3
        transport = StringTransport()
        lines.makeConnection(transport)
        lines.dataReceived(b"a\n\n")
        lines.lineLengthExceeded(b"abcd")
        lines.connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(sink.messages, [b"a"])
        self.assertEqual(sink.ended, [None])
        self.assertEqual(transport.producerState, "stopped")


class ThreadCalls:
    """
    Stands in for the reactor of a L{StdinReader}: queues what its thread
    asks to run, for the test to run in the main thread.
    """

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., object], tuple[object, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        self.calls.put((f, args))

    def run_next(self) -> None:
        """
        Run the next call the thread queued, waiting at most 10 seconds.
        """
        f, args = self.calls.get(timeout=10)
        f(*args)


class StdinReaderTests(SynchronousTestCase):
    """
    L{StdinReader} reads in its thread and delivers in the reactor thread,
    honouring pause and stop.
    """

    def pipe(self) -> tuple[int, int]:
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        return read_end, write_end

    def test_lines_then_end(self) -> None:
        """
        What is written to the descriptor arrives as messages; its end ends
        the input cleanly.
        """
        read_end, write_end = self.pipe()
        os.write(write_end, b"one\ntwo\n")
        os.close(write_end)
        calls, sink = ThreadCalls(), Sink()
        StdinReader(calls, read_end).start(InputLines(sink))  # type: ignore[arg-type]
        while not sink.ended:
            calls.run_next()
        self.assertEqual(sink.messages, [b"one", b"two"])
        self.assertEqual(sink.ended, [None])

    def test_read_error(self) -> None:
        """
        A descriptor that cannot be read ends the input with the system's
        reason, on one line.
        """
        directory = os.open(tempfile.gettempdir(), os.O_RDONLY)
        self.addCleanup(os.close, directory)
        calls, sink = ThreadCalls(), Sink()
        StdinReader(calls, directory).start(InputLines(sink))  # type: ignore[arg-type]
        calls.run_next()
        self.assertEqual([str(e) for e in sink.ended], ["cannot read standard input: [Errno 21] Is a directory"])

    def test_stopped_while_paused_reads_nothing(self) -> None:
        """
        Stopped while paused, the thread ends without reading: the bytes
        waiting on the descriptor stay there, and nothing is delivered.
        """
        read_end, write_end = self.pipe()
        self.addCleanup(os.close, write_end)
        os.write(write_end, b"unread\n")
        calls, sink = ThreadCalls(), Sink()
        reader = StdinReader(calls, read_end)  # type: ignore[arg-type]
        reader.pauseProducing()
        before = set(threading.enumerate())
        reader.start(InputLines(sink))
        [thread] = set(threading.enumerate()) - before
        reader.stopProducing()
        thread.join(10)
        self.assertFalse(thread.is_alive())
        self.assertTrue(calls.calls.empty())
        self.assertEqual(os.read(read_end, 100), b"unread\n")
        self.assertEqual((sink.messages, sink.ended), ([], []))

    def test_end_read_before_stop_not_delivered(self) -> None:
        """
        The end of input that the thread read before the input was stopped
        is dropped: the protocol, which stopped it, hears of no end.
        """
        read_end, write_end = self.pipe()
        os.close(write_end)
        lost: list[Failure] = []
        protocol = Protocol()
        protocol.connectionLost = lost.append  # type: ignore[method-assign]
        calls = ThreadCalls()
        reader = StdinReader(calls, read_end)  # type: ignore[arg-type]
        reader.start(protocol)  # type: ignore[arg-type]
        ended = calls.calls.get(timeout=10)  # the thread read the end
        reader.stopProducing()
        ended[0](*ended[1])
        self.assertEqual(lost, [])
        self.assertTrue(calls.calls.empty())

    def test_nothing_delivered_after_stop(self) -> None:
        """
        Bytes (and the end) that the thread read before the input was
        stopped are dropped, not delivered.
        """
        read_end, write_end = self.pipe()
        os.write(write_end, b"late\n")
        calls, sink = ThreadCalls(), Sink()
        lines = InputLines(sink)
        StdinReader(calls, read_end).start(lines)  # type: ignore[arg-type]
        received = calls.calls.get(timeout=10)
        lines.stop()
        os.close(write_end)  # the thread, if still reading, sees the end
        received[0](*received[1])
        while not calls.calls.empty():
            calls.run_next()
        self.assertEqual((sink.messages, sink.ended), ([], []))
