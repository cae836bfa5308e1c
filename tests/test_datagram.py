"""
Tests for L{tsecho.datagram}: one reply datagram per request datagram, over
UDP and UNIX datagram sockets, and the listeners' life cycle.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from realsockets import TIMEOUT, has_ipv6_loopback, serving
from serverprocess import twistd_command
from tsecho.datagram import (
    MAX_DATAGRAM,
    DatagramListener,
    DatagramListenError,
    TimestampDatagram,
    remove_stale_socket,
    udp_listener,
    unix_datagram_listener,
)
from tsecho.tap import Options, makeService
from tsecho.testing import EXAMPLE_STAMP, EXAMPLE_TIME
from tsecho.timestamps import Timestamper

SENDER = ("192.0.2.7", 40000)


class FakeDatagramTransport:
    """
    Records the datagrams written, or raises C{fail} from C{write}.
    """

    def __init__(self, fail: Exception | None = None) -> None:
        self.written: list[tuple[bytes, Any]] = []
        self.fail = fail

    def write(self, datagram: bytes, addr: Any) -> None:
        if self.fail is not None:
            raise self.fail
        self.written.append((datagram, addr))


def answering(quiet: bool = False, max_datagram: int = MAX_DATAGRAM) -> tuple[TimestampDatagram, FakeDatagramTransport]:
    """
    A L{TimestampDatagram} at L{EXAMPLE_TIME} (UTC) on a fake transport.
    """
    clock = Clock()
    clock.advance(EXAMPLE_TIME)
    protocol = TimestampDatagram(Timestamper(utc=True), clock, max_datagram=max_datagram, quiet=quiet)
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return protocol, transport


def messages(events: list[LogEvent]) -> list[str]:
    """
    The captured log events, formatted.
    """
    return [formatEvent(e) for e in events]


class ReplyTests(SynchronousTestCase):
    """
    L{TimestampDatagram.datagramReceived} answers each datagram exactly.
    """

    def test_payload_byte_for_byte(self) -> None:
        """
        Each datagram gets one reply, C{[TIMESTAMP] PAYLOAD}, sent back to its
        sender; the payload comes back unchanged, trailing newline, C{\\r},
        NUL and invalid UTF-8 included, and an empty datagram gets the bare
        prefix.
        """
        protocol, transport = answering()
        payloads = [b"hello", b"hello\n", b"two\r\nlines\r\n", b"\xff\x00\r", b"", b"a" * MAX_DATAGRAM]
        for payload in payloads:
            protocol.datagramReceived(payload, SENDER)
        self.assertEqual(transport.written, [(EXAMPLE_STAMP + p, SENDER) for p in payloads])
        self.assertEqual(protocol.datagrams_answered, len(payloads))

    def test_same_reply_as_streams(self) -> None:
        """
        The reply is L{Timestamper.reply}, the function the stream server
        uses for its prefix, in any time format.
        """
        clock = Clock()
        clock.advance(EXAMPLE_TIME)
        for timestamper in (Timestamper(utc=True), Timestamper("iso", utc=True), Timestamper("%H:%M", utc=True)):
            protocol = TimestampDatagram(timestamper, clock)
            transport = FakeDatagramTransport()
            protocol.makeConnection(transport)  # type: ignore[arg-type]
            protocol.datagramReceived(b"x", SENDER)
            self.assertEqual(transport.written, [(timestamper.prefix(EXAMPLE_TIME) + b"x", SENDER)])
        self.assertEqual(Timestamper("iso", utc=True).prefix(EXAMPLE_TIME), b"[2026-11-26T14:09:48+00:00] ")

    @given(st.binary(max_size=2048))
    def test_reply_bound(self, payload: bytes) -> None:
        """
        A reply is exactly C{len(prefix) + len(request)} bytes: 27 bytes
        more than the request in the default format (the bound the README's
        security notes state).
        """
        protocol, transport = answering()
        protocol.datagramReceived(payload, SENDER)
        [(reply, _)] = transport.written
        self.assertEqual(len(reply), len(EXAMPLE_STAMP) + len(payload))
        self.assertEqual(len(EXAMPLE_STAMP), 27)

    def test_logs_sender(self) -> None:
        """
        Each datagram is logged with its sender; C{quiet} turns that off.
        """
        with capturedLogs() as events:
            answering()[0].datagramReceived(b"abc", SENDER)
            answering(quiet=True)[0].datagramReceived(b"abc", SENDER)
            answering()[0].datagramReceived(b"abc", ("::1", 5))
        self.assertEqual(
            messages(list(events)), ["datagram from 192.0.2.7:40000, 3 bytes", "datagram from [::1]:5, 3 bytes"]
        )

    def test_oversized_dropped_and_logged(self) -> None:
        """
        A datagram longer than the limit gets no reply and a warning; the
        next datagram is answered as usual.
        """
        protocol, transport = answering(quiet=True, max_datagram=10)
        with capturedLogs() as events:
            protocol.datagramReceived(b"x" * 11, SENDER)
        self.assertEqual(transport.written, [])
        self.assertEqual(messages(list(events)), ["dropped a datagram from 192.0.2.7:40000: longer than 10 bytes"])
        protocol.datagramReceived(b"x" * 10, SENDER)
        self.assertEqual(transport.written, [(EXAMPLE_STAMP + b"x" * 10, SENDER)])

    def test_send_errors_logged(self) -> None:
        """
        A reply the socket refuses (too long, or any socket error) is
        logged; the protocol keeps answering.
        """
        for failure, text in [
            (error.MessageLengthError("message too long"), "message too long"),
            (OSError(105, "No buffer space available"), "No buffer space available"),
        ]:
            protocol, transport = answering(quiet=True)
            transport.fail = failure
            with capturedLogs() as events:
                protocol.datagramReceived(b"abc", SENDER)
            [message] = messages(list(events))
            self.assertIn("could not answer 192.0.2.7:40000 (30 bytes)", message)
            self.assertIn(text, message)
            self.assertEqual(protocol.datagrams_answered, 0)
            transport.fail = None
            protocol.datagramReceived(b"abc", SENDER)
            self.assertEqual(transport.written, [(EXAMPLE_STAMP + b"abc", SENDER)])

    def test_sender_path_logged_escaped(self) -> None:
        """
        A UNIX datagram sender's path (which the sender chooses) reaches the
        log escaped: a newline and an ESC sequence never appear raw.
        """
        path = b"/tmp/c\nforged line\x1b[2J"
        with capturedLogs() as events:
            answering()[0].datagramReceived(b"abc", path)
        self.assertEqual(messages(list(events)), ["datagram from /tmp/c\\nforged line\\x1b[2J, 3 bytes"])

    def test_unbound_unix_sender(self) -> None:
        """
        A datagram from an unbound UNIX socket (no address to answer) is
        logged and dropped.
        """
        for unbound in (None, "", b""):
            protocol, transport = answering(quiet=True)
            with capturedLogs() as events:
                protocol.datagramReceived(b"abc", unbound)
            self.assertEqual(transport.written, [])
            self.assertEqual(
                messages(list(events)), ["dropped a datagram from an unbound UNIX socket: it cannot be answered"]
            )


class FakePort:
    """
    A listening port that records being stopped.
    """

    def __init__(self) -> None:
        self.stopped = 0

    def stopListening(self) -> defer.Deferred[None]:
        self.stopped += 1
        return defer.succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", 4321)


class ListenerTests(SynchronousTestCase):
    """
    L{DatagramListener} opens, closes and cleans up its port.
    """

    def test_life_cycle(self) -> None:
        """
        The port opens in C{privilegedStartService} (after C{prepare}), is
        logged, stops on C{stopService}, and C{cleanup} runs after it stopped.
        """
        calls: list[str] = []
        port = FakePort()

        def listen() -> FakePort:
            calls.append("listen")
            return port

        listener = DatagramListener(
            "udp:4321", listen, lambda: calls.append("prepare"), lambda: calls.append(f"cleanup {port.stopped}")
        )
        with capturedLogs() as events:
            listener.privilegedStartService()
            listener.startService()
        self.assertEqual(calls, ["prepare", "listen"])
        self.assertEqual(messages(list(events)), ["listening on udp:4321 (127.0.0.1:4321)"])
        self.successResultOf(listener.stopService())  # type: ignore[arg-type]
        self.assertEqual(calls, ["prepare", "listen", "cleanup 1"])
        self.assertIsNone(listener.stopService())

    def test_start_without_privileged_start(self) -> None:
        """
        C{startService} alone also opens the port (once).
        """
        ports: list[FakePort] = []
        listener = DatagramListener("udp:1", lambda: ports.append(FakePort()) or ports[-1])
        listener.startService()
        self.assertEqual(len(ports), 1)

    def test_failure_is_one_line(self) -> None:
        """
        A port that cannot be opened raises L{DatagramListenError} naming the
        listener and the reason.
        """

        def listen() -> FakePort:
            raise error.CannotListenError("", 53, OSError(13, "Permission denied"))

        listener = DatagramListener("udp:53", listen)
        with pytest.raises(DatagramListenError) as raised:
            listener.privilegedStartService()
        self.assertEqual(
            str(raised.value),
            "cannot listen on udp:53: Couldn't listen on any:53: [Errno 13] Permission denied. "
            "Ports below 1024 need root (or CAP_NET_BIND_SERVICE): choose a port from 1024 up.",
        )

    def test_port_out_of_range(self) -> None:
        """
        A port past 65535 (C{--metrics tcp:99999}: Twisted passes it to
        C{bind()}, which raises L{OverflowError}) is a start-up error naming
        the listener too.
        """

        def listen() -> FakePort:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 99999))
            raise AssertionError("bind() took it")

        listener = DatagramListener("--metrics tcp:99999", listen)
        with pytest.raises(DatagramListenError) as raised:
            listener.privilegedStartService()
        message = str(raised.value)  # the reason is Python's own: "bind(): port must be 0-65535." on CPython
        self.assertTrue(message.startswith("cannot listen on --metrics tcp:99999: "), message)
        self.assertIn("0-65535", message)

    def test_missing_directory(self) -> None:
        """
        A UNIX datagram socket in a directory that does not exist: start-up names
        the directory and what to do, as for a C{unix:} stream listener.
        """
        path = os.path.join(self.mktemp(), "tsecho.dgram")
        reactor = MemoryReactorClock()

        def listen(address: str, *args: object, **kwargs: object) -> None:
            # What Twisted's listenUNIXDatagram raises when bind() fails.
            raise error.CannotListenError(None, address, FileNotFoundError(2, "No such file or directory"))

        reactor.listenUNIXDatagram = listen  # type: ignore[method-assign]
        listener = unix_datagram_listener(reactor, path, TimestampDatagram(Timestamper(), Clock()))
        with pytest.raises(DatagramListenError) as raised:
            listener.privilegedStartService()
        self.assertEqual(
            str(raised.value),
            f"cannot listen on unix-datagram:{path}: the directory {os.path.dirname(os.path.abspath(path))} "
            "does not exist: create it, or choose a path in an existing directory",
        )

    def test_make_service_adds_listeners(self) -> None:
        """
        C{--udp} and C{--unix-datagram} add datagram listeners beside the
        stream service; without them there are none.
        """
        reactor = MemoryReactorClock()
        options = Options(reactor)
        options.parseOptions(["--port", "0", "--udp", "2000", "--unix-datagram", "/run/x.sock"])
        service = makeService(options)
        names = [child.description for child in service]  # type: ignore[attr-defined]
        self.assertEqual(names, ["udp:2000", "unix-datagram:/run/x.sock"])
        options = Options(reactor)
        options.parseOptions([])
        self.assertEqual(list(makeService(options)), [])  # type: ignore[call-overload]


class StaleSocketTests(SynchronousTestCase):
    """
    L{remove_stale_socket} clears what a crashed run left, and nothing else.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, "s")

    def bound(self, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, kind)
        sock.bind(self.path)
        self.addCleanup(sock.close)
        return sock

    def test_missing(self) -> None:
        """
        No file: nothing to do.
        """
        remove_stale_socket(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_stale_removed(self) -> None:
        """
        A socket file nobody is bound to any more is removed.
        """
        self.bound().close()
        self.assertTrue(os.path.exists(self.path))
        remove_stale_socket(self.path)
        self.assertFalse(os.path.exists(self.path))

    def test_live_kept(self) -> None:
        """
        A socket another process (here, this one) is bound to is an error,
        and stays; so does a live stream socket at that path.
        """
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = self.bound(kind)
            if kind == socket.SOCK_STREAM:
                sock.listen()
            with pytest.raises(DatagramListenError, match="another process is bound to it"):
                remove_stale_socket(self.path)
            self.assertTrue(os.path.exists(self.path))
            sock.close()
            os.unlink(self.path)

    def test_not_a_socket_kept(self) -> None:
        """
        A regular file at the path is never removed.
        """
        Path(self.path).write_text("precious")
        with pytest.raises(DatagramListenError, match="exists and is not a socket"):
            remove_stale_socket(self.path)
        self.assertEqual(Path(self.path).read_text(), "precious")

    def test_cannot_probe_kept(self) -> None:
        """
        A socket the probe may not connect to (a user without write
        permission on it; root always may, hence the stand-in probe) is an
        error with the system's reason, and stays.
        """

        class DeniedProbe(socket.socket):
            def connect(self, address: Any) -> None:
                raise PermissionError(errno.EACCES, "Permission denied")

        self.bound().close()
        self.patch(socket, "socket", DeniedProbe)  # for the probe only: the test makes no other socket
        with pytest.raises(PermissionError, match="Permission denied"):
            remove_stale_socket(self.path)
        self.assertTrue(os.path.exists(self.path))


class BindingReactor:
    """
    A reactor whose C{listenUNIXDatagram} binds a real socket at the path
    (so that the file exists, as Twisted's would make it) and returns a
    L{FakePort}.
    """

    def __init__(self, test: SynchronousTestCase) -> None:
        self.test = test

    def listenUNIXDatagram(self, path: str, protocol: object, **kwargs: object) -> FakePort:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.test.addCleanup(sock.close)
        sock.bind(path)
        return FakePort()


class SocketFileCleanupTests(SynchronousTestCase):
    """
    A C{unix-datagram:} listener removes its socket file when it stops, but
    only its own: never a newer server's file at that path.
    """

    def setUp(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, "s")
        protocol = TimestampDatagram(Timestamper(), task.Clock(), quiet=True)
        self.listener = unix_datagram_listener(BindingReactor(self), self.path, protocol)  # type: ignore[arg-type]
        self.listener.privilegedStartService()

    def test_own_file_removed(self) -> None:
        """
        The file it bound is removed once it stopped.
        """
        self.successResultOf(self.listener.stopService())  # type: ignore[arg-type]
        self.assertFalse(os.path.exists(self.path))

    def test_newer_file_kept(self) -> None:
        """
        A file another server bound at the path meanwhile stays.
        """
        os.unlink(self.path)
        BindingReactor(self).listenUNIXDatagram(self.path, None)
        self.successResultOf(self.listener.stopService())  # type: ignore[arg-type]
        self.assertTrue(os.path.exists(self.path))

    def test_file_already_gone(self) -> None:
        """
        A file someone else removed already: nothing to do, no error.
        """
        os.unlink(self.path)
        self.successResultOf(self.listener.stopService())  # type: ignore[arg-type]
        self.assertFalse(os.path.exists(self.path))


class Receiver(DatagramProtocol):
    """
    A client that collects the replies it receives.
    """

    def __init__(self) -> None:
        self.replies: defer.DeferredQueue[tuple[bytes, Any]] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.replies.put((datagram, addr))

    async def reply(self) -> bytes:
        from twisted.internet import reactor

        waiting = self.replies.get()
        waiting.addTimeout(TIMEOUT, reactor)
        datagram, _ = await waiting
        return datagram


def check_reply(reply: bytes, request: bytes) -> None:
    """
    C{reply} is C{[ctime] } followed by C{request}, byte for byte.
    """
    assert reply[:1] == b"[", reply[:30]
    assert reply[25:27] == b"] ", reply[:30]
    assert reply[27:] == request
    assert len(reply) == len(EXAMPLE_STAMP) + len(request)


@pytest_twisted.ensureDeferred
async def test_real_udp() -> None:
    """
    Over real UDP on 127.0.0.1: each datagram is answered exactly, up to the
    largest reply UDP can carry; a request whose reply would be too long is
    logged and the listener keeps answering.
    """
    from twisted.internet import reactor

    clock_protocol = TimestampDatagram(Timestamper(), reactor, quiet=True)
    listener = udp_listener(reactor, 0, clock_protocol, interface="127.0.0.1")
    listener.privilegedStartService()
    receiver = Receiver()
    client = reactor.listenUDP(0, receiver, interface="127.0.0.1", maxPacketSize=70000)
    try:
        assert listener.port is not None
        server = ("127.0.0.1", listener.port.getHost().port)  # type: ignore[attr-defined]
        largest = b"L" * (MAX_DATAGRAM - len(EXAMPLE_STAMP))
        for request in (b"hello", b"hello\n", b"", b"\xff\x00\r\n", largest):
            client.write(request, server)
            check_reply(await receiver.reply(), request)
        with capturedLogs() as events:
            client.write(b"T" * MAX_DATAGRAM, server)
            client.write(b"after", server)
            check_reply(await receiver.reply(), b"after")
        assert any("could not answer" in m and "message too long" in m for m in messages(list(events)))
        assert clock_protocol.datagrams_answered == 6
    finally:
        await client.stopListening()
        await listener.stopService()  # type: ignore[misc]


@pytest_twisted.ensureDeferred
async def test_real_unix_datagram(tmp_path: Path) -> None:
    """
    Over a real UNIX datagram socket: a stale socket file from a crashed run
    does not stop start-up, datagrams are answered exactly, one longer than
    the limit is logged and dropped (the next is answered), and the socket
    file is gone after shutdown.
    """
    from twisted.internet import reactor

    path = str(tmp_path / "tsecho.dgram")
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    crashed.bind(path)
    crashed.close()  # a crash leaves the file behind
    listener = unix_datagram_listener(reactor, path, TimestampDatagram(Timestamper(), reactor, quiet=True))
    listener.privilegedStartService()
    receiver = Receiver()
    client = reactor.listenUNIXDatagram(str(tmp_path / "client.dgram"), receiver, maxPacketSize=70000)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o666
        for request in (b"hello", b"", b"line\n"):
            client.write(request, path)
            check_reply(await receiver.reply(), request)
        with capturedLogs() as events:
            client.write(b"x" * (MAX_DATAGRAM + 1), path)
            client.write(b"after", path)
            check_reply(await receiver.reply(), b"after")
        assert f"longer than {MAX_DATAGRAM} bytes" in " ".join(messages(list(events)))
    finally:
        await client.stopListening()
        await listener.stopService()  # type: ignore[misc]
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_datagrams_beside_streams(tmp_path: Path) -> None:
    """
    C{--udp} and C{--unix-datagram} run beside a stream listener in one
    server built from the command line; a UNIX datagram path that is in use
    makes start-up fail with one line.
    """
    from twisted.internet import reactor

    path = str(tmp_path / "d.sock")
    async with serving(["--listen", "tcp:0:interface=127.0.0.1", "--udp", "0", "--unix-datagram", path]) as service:
        udp, unix = list(service)
        receiver = Receiver()
        client = reactor.listenUDP(0, receiver, interface="127.0.0.1")
        try:
            client.write(b"udp", ("127.0.0.1", udp.port.getHost().port))  # type: ignore[attr-defined]
            check_reply(await receiver.reply(), b"udp")
        finally:
            await client.stopListening()
        assert unix.port is not None  # type: ignore[attr-defined]
        with pytest.raises(SystemExit, match=f"tsecho: cannot listen on unix-datagram:{path}: another process"):
            async with serving(["--listen", "tcp:0:interface=127.0.0.1", "--unix-datagram", path]):
                pass  # pragma: no cover
    assert not os.path.exists(path)


@pytest.mark.parametrize(
    ("option", "interface"),
    [
        ("127.0.0.1:0", "127.0.0.1"),
        pytest.param(
            "[::1]:0",
            "::1",
            marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine"),
        ),
    ],
    ids=["ipv4", "ipv6"],
)
@pytest_twisted.ensureDeferred
async def test_udp_on_one_address(option: str, interface: str) -> None:
    """
    C{--udp ADDRESS:PORT} (or C{[IPV6-ADDRESS]:PORT}) binds that address
    only -- the listening socket's own address says so -- and answers there.
    """
    from twisted.internet import reactor

    async with serving(["--listen", "tcp:0:interface=127.0.0.1", "--udp", option]) as service:
        [udp] = list(service)
        bound = udp.port.getHost()  # type: ignore[attr-defined]
        assert bound.host == interface
        assert udp.description == f"udp:0:interface={interface}"
        receiver = Receiver()
        client = reactor.listenUDP(0, receiver, interface=interface)
        try:
            client.write(b"one address", (interface, bound.port))
            check_reply(await receiver.reply(), b"one address")
        finally:
            await client.stopListening()


def test_udp_usage_error_from_twistd() -> None:
    """
    A bad C{--udp} given to the real C{twistd tsecho}: exactly one line on
    standard error, nothing on standard output, exit status 1.
    """
    result = subprocess.run(twistd_command("--udp", "::1:21567"), capture_output=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        "twistd tsecho: --udp '::1:21567': put an IPv6 address in brackets: [ADDRESS]:PORT, e.g. [::1]:21567"
        " (see twistd tsecho --help)\n"
    )
