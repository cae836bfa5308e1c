"""
The real C{tsecho-client} process over real loopback sockets: against
C{twistd tsecho} (persistent and one-shot), against a copy of the original
C{socketserver} server, and over UDP against a tiny server in this file;
plus L{EchoSession} and L{StdinReader} on the real reactor.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory

from realsockets import serving, tcp_port
from serverprocess import running_server
from tsecho.client._errors import ClientError
from tsecho.client._input import InputLines, StdinReader
from tsecho.client._stream import EchoClient, EchoSession

TIMEOUT = 30.0
CTIME = rb"\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\] "

#: SPEC.md's "original" server, as in the book, but on 127.0.0.1 and a free
#: port, which it prints so the test knows where to connect.
ORIGINAL_SERVER = """
import sys
from socketserver import TCPServer, StreamRequestHandler
from time import ctime

class MyRequestHandler(StreamRequestHandler):
    def handle(self):
        print('connected from:', self.client_address, flush=True)
        self.wfile.write(('[%s] %s' % (ctime(), self.rfile.readline())).encode('utf-8'))

server = TCPServer(('127.0.0.1', 0), MyRequestHandler)
print('port', server.server_address[1], flush=True)
server.serve_forever()
"""


def client(*argv: str, stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """
    Run C{python -m tsecho.client ARGV}, feeding C{stdin} through a pipe.
    """
    return subprocess.run(
        [sys.executable, "-m", "tsecho.client", *argv],
        input=stdin,
        capture_output=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def assert_replies(result: subprocess.CompletedProcess[bytes], echoed: list[bytes]) -> None:
    """
    The run succeeded, said nothing on standard error, and printed one
    C{[ctime] ECHO} line per expected echo, in order.
    """
    assert (result.returncode, result.stderr) == (0, b""), result
    lines = result.stdout.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == len(echoed), lines
    for line, echo in zip(lines, echoed, strict=True):
        assert re.fullmatch(CTIME + re.escape(echo), line), (line, echo)


def test_twistd_persistent(tmp_path: Path) -> None:
    """
    Against C{twistd tsecho}: messages from the command line, then from a
    stdin pipe (until the empty line), each answered byte for byte on one
    connection per run.
    """
    with running_server(tmp_path) as server:
        target = ("--host", "127.0.0.1", "--port", str(server.port))
        assert_replies(client(*target, "hello", "world"), [b"hello", b"world"])
        result = client(*target, stdin=b"a\nb\r\n\xff\x00 raw\n\nnot sent\n")
        assert_replies(result, [b"a", b"b", b"\xff\x00 raw"])
        lines = 2000
        many = client(*target, stdin=b"".join(b"%d\n" % i for i in range(lines)))
        assert_replies(many, [b"%d" % i for i in range(lines)])
        deadline = time.monotonic() + 10
        while server.log().count("closed after") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        counts = re.findall(r"closed after (\d+) lines?", server.log())
        assert counts == ["2", "3", str(lines)], server.log()


def test_twistd_one_shot(tmp_path: Path) -> None:
    """
    Against C{twistd tsecho --one-shot} every message still gets its answer,
    in order: the client reconnects when the server closes.
    """
    with running_server(tmp_path, ("--listen", "tcp:0:interface=127.0.0.1", "--one-shot")) as server:
        messages = [b"m%d" % i for i in range(20)]
        result = client("--host", "127.0.0.1", "--port", str(server.port), stdin=b"\n".join(messages) + b"\n")
        assert_replies(result, messages)


@pytest.fixture
def original_server(tmp_path: Path) -> Iterator[int]:
    """
    The original C{socketserver} server, running; yields its port.
    """
    script = tmp_path / "tsTservSS.py"
    script.write_text(ORIGINAL_SERVER)
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks at most until it binds (or dies: b"")
        match = re.fullmatch(rb"port (\d+)\n", first)
        assert match, first
        yield int(match[1])
    finally:
        process.kill()
        process.wait(TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def test_original_server(original_server: int) -> None:
    """
    Against the original server (one line per connection, a repr reply
    without line ending, then close) every message is answered, from the
    command line and from standard input.
    """
    target = ("--host", "127.0.0.1", "--port", str(original_server))
    assert_replies(client(*target, "hello", "world"), [b"b'hello\\r\\n'", b"b'world\\r\\n'"])
    assert_replies(client(*target, stdin=b"x\ny\n"), [b"b'x\\r\\n'", b"b'y\\r\\n'"])


def closed_port(kind: int = socket.SOCK_STREAM) -> int:
    """
    A port on 127.0.0.1 where nothing listens (just freed by the kernel).
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_refused() -> None:
    """
    Nothing listening: status 1, exactly one line on standard error.
    """
    port = closed_port()
    result = client("--host", "127.0.0.1", "--port", str(port), "hello")
    assert result.returncode == 1
    assert result.stderr == f"tsecho-client: cannot connect to 127.0.0.1:{port}: connection refused\n".encode()
    assert result.stdout == b""


def test_timeout() -> None:
    """
    A server that accepts but never answers: after C{--timeout}, status 1
    and one line.
    """
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = client("--host", "127.0.0.1", "--port", str(port), "--timeout", "0.5", "hello")
    assert result.returncode == 1
    assert result.stderr == f"tsecho-client: no reply from 127.0.0.1:{port} within 0.5 seconds\n".encode()


class UDPServer:
    """
    A tiny UDP timestamp echo server in a thread (not tsecho's own).

    @ivar drop: how many request datagrams to ignore before answering.
    """

    def __init__(self, drop: int = 0) -> None:
        self.drop = drop
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except socket.timeout:  # an alias of TimeoutError only from Python 3.10
                continue
            self.received.append(data)
            if len(self.received) > self.drop:
                self.sock.sendto(b"[" + time.ctime().encode() + b"] " + data, peer)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(TIMEOUT)
        self.sock.close()


@pytest.fixture
def udp_server() -> Iterator[UDPServer]:
    server = UDPServer()
    yield server
    server.stop()


def test_udp(udp_server: UDPServer) -> None:
    """
    C{--udp}: one datagram per message (no line ending added), one reply
    line each, from the command line and from standard input.
    """
    target = ("--udp", "--host", "127.0.0.1", "--port", str(udp_server.port))
    assert_replies(client(*target, "hello", "world"), [b"hello", b"world"])
    assert_replies(client(*target, stdin=b"a\nb\n"), [b"a", b"b"])
    assert udp_server.received == [b"hello", b"world", b"a", b"b"]


def test_udp_retry() -> None:
    """
    A datagram lost once is sent again after the timeout, and answered.
    """
    server = UDPServer(drop=1)
    try:
        result = client("--udp", "--host", "127.0.0.1", "--port", str(server.port), "--timeout", "0.5", "hello")
    finally:
        server.stop()
    assert_replies(result, [b"hello"])
    assert server.received == [b"hello", b"hello"]


def test_udp_no_reply() -> None:
    """
    No reply to either try: status 1, one line.
    """
    server = UDPServer(drop=2)
    try:
        result = client("--udp", "--host", "127.0.0.1", "--port", str(server.port), "--timeout", "0.5", "hello")
    finally:
        server.stop()
    assert result.returncode == 1
    expected = f"tsecho-client: no reply from 127.0.0.1:{server.port} (UDP) within 0.5 seconds (tried 2 times)\n"
    assert result.stderr == expected.encode()


def test_udp_refused() -> None:
    """
    No UDP server on the port: the ICMP error gives one line at once.
    """
    port = closed_port(socket.SOCK_DGRAM)
    result = client("--udp", "--host", "127.0.0.1", "--port", str(port), "--timeout", "5", "hello")
    assert result.returncode == 1
    assert result.stderr == f"tsecho-client: cannot connect to 127.0.0.1:{port} (UDP): connection refused\n".encode()


@pytest_twisted.ensureDeferred
async def test_session_real_sockets() -> None:
    """
    L{EchoSession} over a real endpoint, in this process: pipelined against
    the persistent server (one connection), reconnecting against one-shot.
    """
    from twisted.internet import reactor

    for options, connections in ((), 1), (("--one-shot",), 3):
        async with serving(["--listen", "tcp:0:interface=127.0.0.1", "--quiet", *options]) as service:
            endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", tcp_port(service))
            made: list[EchoClient] = []

            def connect(
                endpoint: endpoints.TCP4ClientEndpoint = endpoint, made: list[EchoClient] = made
            ) -> defer.Deferred[EchoClient]:
                def keep(connection: EchoClient) -> EchoClient:
                    made.append(connection)
                    return connection

                d: defer.Deferred[EchoClient] = endpoint.connect(Factory.forProtocol(EchoClient))
                return d.addCallback(keep)

            session = EchoSession(connect, reactor, "test", timeout=TIMEOUT)
            replies = await defer.gatherResults([session.ask(m) for m in (b"a", b"b", b"c")])
            await session.close()
            assert [r.split(b"] ", 1)[1] for r in replies] == [b"a", b"b", b"c"]
            assert all(re.match(CTIME, r) for r in replies), replies
            assert len(made) == connections, options


class Collected:
    """
    What L{InputLines} read, and a L{defer.Deferred} for its end.
    """

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.ended: defer.Deferred[ClientError | None] = defer.Deferred()

    def message(self, message: bytes) -> None:
        self.messages.append(message)

    def end_of_input(self, error: ClientError | None = None) -> None:
        self.ended.callback(error)


@pytest_twisted.ensureDeferred
async def test_stdin_reader_pipe() -> None:
    """
    L{StdinReader} reads a real pipe without blocking the reactor: every
    line arrives, then the end.
    """
    from twisted.internet import reactor

    read_end, write_end = os.pipe()
    try:
        collected = Collected()
        StdinReader(reactor, fd=read_end).start(InputLines(collected))
        os.write(write_end, b"a\nb\r\n")
        os.write(write_end, b"last")
        os.close(write_end)
        write_end = -1
        error = await collected.ended.addTimeout(TIMEOUT, reactor)
        assert error is None
        assert collected.messages == [b"a", b"b", b"last"]
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)


def test_reader_closes_early(tmp_path: Path) -> None:
    """
    C{tsecho-client … | head -1}: the reader closes the pipe after one reply;
    the client ends quietly (nothing on standard error) with status 0.
    """
    messages = tmp_path / "messages"
    messages.write_bytes(b"".join(b"message %d\n" % i for i in range(50000)))
    with running_server(tmp_path) as server, messages.open("rb") as stdin:
        process = subprocess.Popen(
            [sys.executable, "-m", "tsecho.client", "--host", "127.0.0.1", "--port", str(server.port)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stdout.readline().endswith(b"] message 0\n")
        process.stdout.close()  # what head does after its line
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, stderr) == (0, b"")


@pytest.mark.skipif(platform.python_implementation() == "PyPy", reason="RSS and reference counting are CPython's")
@pytest.mark.slow
def test_unbounded_stdin(tmp_path: Path) -> None:
    """
    C{yes hello | tsecho-client}: memory stays bounded while the client
    streams for a few seconds (it read 194 MB in 7 s when it did not wait for
    replies), and SIGTERM ends it at once with C{terminated} and status 143.
    """
    chunk = b"hello\n" * 10_000
    with running_server(tmp_path, ("--listen", "tcp:0:interface=127.0.0.1", "--quiet")) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "tsecho.client", "--host", "127.0.0.1", "--port", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None

        def feed() -> None:
            with contextlib.suppress(OSError):  # the client has gone
                while True:
                    process.stdin.write(chunk)  # type: ignore[union-attr]

        threading.Thread(target=feed, daemon=True).start()
        peak = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and process.poll() is None:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE).group(1)))  # type: ignore[union-attr]
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
        process.terminate()
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert peak < 100 * 1024, f"{peak} KiB"
    assert (process.returncode, stderr) == (143, b"tsecho-client: terminated\n")
