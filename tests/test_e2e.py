"""
End to end: the real C{twistd tsecho} process, over real loopback sockets.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serverprocess import running_server, twistd_command

#: What "promptly" means here: many times what an idle machine takes (tens of
#: milliseconds), so that a loaded 2-core CI machine cannot miss it, and far
#: below what the failures tested for take (an idle timeout, a hang).
PROMPTLY = 10.0

CTIME_REPLY = re.compile(rb"\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\] ")


def receive_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """
    Read until the server closes the connection.
    """
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_book_client(tmp_path: Path) -> None:
    """
    The original book client (connect, send C{data\\r\\n}, one C{recv(1024)},
    close) gets C{[ctime] data\\r\\n}, and the server logs who connected.
    """
    with running_server(tmp_path) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"hello\r\n")
            reply = sock.recv(1024)
        assert CTIME_REPLY.match(reply), reply
        assert reply.endswith(b"] hello\r\n")
        assert len(reply) == len(b"[Thu Nov 26 14:09:48 2026] hello\r\n")
        deadline = time.monotonic() + 10
        while "closed after 1 line:" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert re.search(r"connection from 127\.0\.0\.1:\d+ closed after 1 line \(client closed\)", server.log())


def test_persistent_half_close_and_options(tmp_path: Path) -> None:
    """
    One connection carries many lines; after the client shuts down its
    sending side it still gets every reply, the unterminated last line with
    C{\\r\\n}; C{--utc --time-format iso} gives RFC 3339 stamps.
    """
    options = ("--port", "0", "--utc", "--time-format", "iso", "--quiet")
    with running_server(tmp_path, options) as server, socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"one\ntwo\r\n\xff\x00three\r")
        sock.shutdown(socket.SHUT_WR)
        replies = receive_all(sock)
    stamp = rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\] "
    assert re.fullmatch(stamp + rb"one\n" + stamp + rb"two\r\n" + stamp + rb"\xff\x00three\r\r\n", replies), replies
    assert "connection from" not in server.log()


def test_back_pressure(tmp_path: Path) -> None:
    """
    A client that pipelines tens of MB without reading cannot make the server
    buffer them: the server stops reading, its memory stays bounded, and a
    second client is still answered promptly meanwhile.
    """
    with running_server(tmp_path, ("--listen", "tcp:0:interface=127.0.0.1", "--quiet")) as server:
        before = server.rss_kib()
        flood = socket.create_connection(("127.0.0.1", server.port))
        flood.setblocking(False)
        chunk = b"x" * 60 + b"\n"
        chunk *= 65536 // len(chunk)
        sent, deadline = 0, time.monotonic() + 5
        while sent < 40_000_000 and time.monotonic() < deadline:
            try:
                sent += flood.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        grown = server.rss_kib() - before
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPTLY) as other:
            other.sendall(b"still there?\n")
            assert other.recv(1024).endswith(b"] still there?\n")
        assert time.monotonic() - start < PROMPTLY
        flood.close()
    # Without back-pressure the server would read all 40 MB and queue ~55 MB of
    # replies; with it, the kernel buffers fill up and the client is stopped.
    assert sent < 40_000_000, sent
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB while the client sent {sent} bytes"


def test_sigterm_answers_owed_replies(tmp_path: Path) -> None:
    """
    On SIGTERM the server stops accepting at once, answers every line that a
    half-closing client sent, and exits cleanly and promptly.  A SIGINT
    meanwhile (Ctrl-C) is logged and changes nothing.
    """
    lines = b"".join(b"line %d\n" % n for n in range(20000))
    with running_server(tmp_path, ("--port", "0", "--quiet")) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"first\n")
            assert sock.recv(1024).endswith(b"] first\n")
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            sock.sendall(b"second\n")
            assert sock.recv(1024).endswith(b"] second\n")  # the first signal handled, the server drains
            server.process.send_signal(signal.SIGINT)
            sock.sendall(lines)
            sock.shutdown(socket.SHUT_WR)
            replies = receive_all(sock)
            status = server.stop()
        elapsed = time.monotonic() - started
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    assert replies.count(b"\n") == 20000
    assert replies.endswith(b"] line 19999\n")
    assert status in (0, -signal.SIGTERM), server.log()
    assert elapsed < PROMPTLY
    assert "Traceback" not in server.log()
    assert "Received SIGINT again: already shutting down" in server.log()


def test_idle_connections_closed_promptly_on_shutdown(tmp_path: Path) -> None:
    """
    An idle persistent connection does not hold up shutdown.
    """
    with (
        running_server(tmp_path, ("--port", "0")) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(b"hi\n")
        sock.recv(1024)
        started = time.monotonic()
        status = server.stop()
        assert receive_all(sock) == b""
    assert status in (0, -signal.SIGTERM)
    assert time.monotonic() - started < PROMPTLY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "abc"], "is not a port number"),
        (["--max-line", "-1"], "is not a positive whole number"),
        (["--time-format", "xx"], "is not 'ctime', 'iso' or a strftime pattern"),
        (["--listen", "nonsense:1"], "nonsense is not an endpoint type Twisted knows"),
        (["--timeout", "soon"], "is not a number of seconds"),
    ],
)
def test_bad_options(options: list[str], message: str) -> None:
    """
    A bad option gives a usage error naming the problem and a non-zero exit.
    """
    result = subprocess.run(twistd_command(*options), capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode()
    assert result.returncode != 0
    assert message in output
    assert "Traceback" not in output


def test_port_in_use(tmp_path: Path) -> None:
    """
    A port that is already taken gives one clear line and a non-zero exit.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            twistd_command("--listen", f"tcp:{port}:interface=127.0.0.1"),
            capture_output=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
    output = (result.stdout + result.stderr).decode()
    assert result.returncode == 1
    assert f"tsecho: cannot listen on tcp:{port}:interface=127.0.0.1: " in output
    assert "Address already in use" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    "command",
    [twistd_command("--help"), [sys.executable, "-m", "tsecho.client", "--help"]],
    ids=["twistd tsecho", "tsecho-client"],
)
@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_help_into_a_closed_pipe(command: list[str], unbuffered: bool) -> None:
    """
    C{--help | head}: standard output closes before the help is written.
    The command ends quietly, without a traceback, whether its standard
    output is buffered (the error then comes when it is flushed) or not.
    """
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    reader, writer = os.pipe()
    os.close(reader)  # every write now fails with EPIPE
    try:
        result = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, env=env, timeout=60, check=False)
    finally:
        os.close(writer)
    assert result.returncode == 1
    assert result.stderr == b""


@pytest.mark.parametrize(
    "command",
    [twistd_command("--help"), [sys.executable, "-m", "tsecho.client", "--help"]],
    ids=["twistd tsecho", "tsecho-client"],
)
def test_help_without_standard_output(command: list[str]) -> None:
    """
    Started with descriptor 1 closed (as some supervisors do), the command
    runs without a traceback; the help just goes nowhere.
    """
    result = subprocess.run(command, stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1), timeout=60, check=False)
    assert result.returncode == 0
    assert b"Traceback" not in result.stderr
