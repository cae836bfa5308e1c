"""
SPEC rules checked from outside, as an acceptance suite would: the real
C{twistd tsecho} process, raw sockets over 127.0.0.1, ::1 and UNIX sockets,
exact reply bytes.

Each test starts one server (on port 0) and runs a group of related probes
against it, so the whole file costs a few server start-ups.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from serverprocess import ServerProcess, running_server, twistd_command

CTIME = rb"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4}\] "
ISO_UTC = rb"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\] "
LOCAL = "127.0.0.1"


def connect(address: str | tuple[str, int], timeout: float = 10.0) -> socket.socket:
    """
    A connected stream socket to a C{(host, port)} or a UNIX socket path.
    """
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def read_to_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """
    Read until the server's clean EOF; a reset or a timeout fails the test.
    """
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_for(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """
    Read for C{seconds}; return what arrived and whether the server closed.
    """
    deadline = time.monotonic() + seconds
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:  # an alias of TimeoutError only from Python 3.10
            break
        if not chunk:
            return received, True
        received += chunk
    return received, False


def exchange(address: str | tuple[str, int], data: bytes) -> bytes:
    """
    Send C{data}, shut down our sending side, return every reply up to EOF.
    """
    with connect(address) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)


def replies(*lines: bytes, stamp: bytes = CTIME) -> re.Pattern[bytes]:
    """
    The pattern of C{lines} (each with its EOL), each behind a timestamp.
    """
    return re.compile(b"".join(stamp + re.escape(line) for line in lines))


def assert_replies(received: bytes, *lines: bytes, stamp: bytes = CTIME) -> None:
    """
    C{received} is exactly C{lines} (each with its EOL), each behind a timestamp.
    """
    assert replies(*lines, stamp=stamp).fullmatch(received), received


@contextmanager
def tcp_server(tmp_path: Path, *options: str) -> Iterator[tuple[ServerProcess, tuple[str, int]]]:
    """
    C{twistd tsecho} on 127.0.0.1, port 0, with C{options}; yields it and its address.
    """
    with running_server(tmp_path, ("--listen", f"tcp:0:interface={LOCAL}", *options)) as server:
        yield server, (LOCAL, server.port)


def test_echo_bytes_on_every_stream_transport(tmp_path: Path) -> None:
    """
    Over TCP, TCP on ::1 and a UNIX socket alike, each line comes back byte for
    byte with its own terminator: a lone C{\\r}, NUL, invalid UTF-8 and empty
    lines included; at half-close a final unterminated line (also a lone
    C{\\r}, or ending in one) is answered with C{\\r\\n}, and an empty rest
    gets nothing.
    """
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    unix_path = str(tmp_path / "tsecho.sock")
    options = ("--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp6:0:interface=\\:\\:1", "--listen")
    with running_server(tmp_path, (*options, f"unix:{unix_path}"), listeners=3) as server:
        port4 = int(server.addresses[0].rsplit(":", 1)[1])
        port6 = int(server.addresses[1].rsplit(":", 1)[1])
        addresses: list[str | tuple[str, int]] = [(LOCAL, port4), ("::1", port6), unix_path]
        for address in addresses:
            received = exchange(address, b"hello\nhello\r\na\rb\n\x00\xff\xfe\xc3(\r\n\n\r\nend\r\r\n")
            expected = [b"hello\n", b"hello\r\n", b"a\rb\n", b"\x00\xff\xfe\xc3(\r\n", b"\n", b"\r\n", b"end\r\r\n"]
            assert_replies(received, *expected)
            assert_replies(exchange(address, b"one\nlast"), b"one\n", b"last\r\n")
            assert_replies(exchange(address, b"one\nlast\r"), b"one\n", b"last\r\r\n")
            assert_replies(exchange(address, b"\r"), b"\r\r\n")
            assert exchange(address, b"") == b""
            assert_replies(exchange(address, b"x\n"), b"x\n")


def test_line_limit_boundaries(tmp_path: Path) -> None:
    """
    With C{--max-line 10}: a 10-byte line is answered with either terminator,
    also when its C{\\r\\n} arrives split; 11 bytes get the error after every
    earlier reply; an unterminated run is refused as soon as it passes the
    limit, while the client keeps the connection open; at half-close a final
    10 bytes plus C{\\r} is an 11-byte line.
    """
    error = b"ERROR line too long (limit 10 bytes)\r\n"
    with tcp_server(tmp_path, "--max-line", "10") as (_, address):
        assert_replies(
            exchange(address, b"x" * 10 + b"\n" + b"y" * 10 + b"\r\n"), b"x" * 10 + b"\n", b"y" * 10 + b"\r\n"
        )
        with connect(address) as sock:
            sock.sendall(b"z" * 10 + b"\r")
            assert read_for(sock, 0.5) == (b"", False)  # the \r may still become a terminator
            sock.sendall(b"\n")
            received, closed = read_for(sock, 0.5)
            assert_replies(received, b"z" * 10 + b"\r\n")
            assert not closed
        for request in [b"x" * 11 + b"\n", b"x" * 11 + b"\r\n", b"x" * 10 + b"\r\r\n"]:
            with connect(address) as sock:
                sock.sendall(b"a\nb\r\n" + request + b"after\n")
                received = read_to_eof(sock)
            assert received.endswith(error), received
            assert_replies(received[: -len(error)], b"a\n", b"b\r\n")
        for run in [b"x" * 11, b"x" * 10 + b"\ry", b"ok\n" + b"x" * 11]:
            with connect(address) as sock:
                sock.sendall(run)  # no terminator, and we do not close
                received = read_to_eof(sock, timeout=5)
            assert received.endswith(error), received
        assert exchange(address, b"x" * 10 + b"\r") == error
        assert exchange(address, b"x" * 11) == error


def test_one_shot_answers_first_line_then_closes_cleanly(tmp_path: Path) -> None:
    """
    C{--one-shot}: a client that sends two (or thousands of) lines at once
    gets exactly one reply, with its own terminator, and a clean EOF, never a
    reset; an unterminated line at half-close is answered too.
    """
    with tcp_server(tmp_path, "--one-shot", "--quiet") as (_, address):
        for attempt in range(20):
            end = b"\r\n" if attempt % 2 else b"\n"
            burst = (b"one" + end + b"two" + end) * (1 if attempt < 10 else 5000)
            with connect(address) as sock:
                sock.sendall(burst)
                assert_replies(read_to_eof(sock), b"one" + end)
        assert_replies(exchange(address, b"only"), b"only\r\n")


def test_server_busy_reaches_a_client_that_already_sent(tmp_path: Path) -> None:
    """
    At the connection limit a new client gets exactly C{ERROR server busy}
    and a clean EOF, even when it sent lines first (50 tries, small and large
    sends); once a slot is free, a new client is served again.
    """
    with tcp_server(tmp_path, "--max-connections", "1", "--quiet") as (_, address):
        with connect(address) as holder:
            holder.sendall(b"hold\n")
            assert_replies(holder.recv(1024), b"hold\n")
            for attempt in range(50):
                with connect(address) as sock:
                    sock.sendall(b"hello\n" * (1 if attempt % 2 else 20000))
                    assert read_to_eof(sock) == b"ERROR server busy\r\n"
        deadline = time.monotonic() + 10
        while True:
            with connect(address) as sock:
                sock.sendall(b"back\n")
                received = sock.recv(1024)
            if received != b"ERROR server busy\r\n" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert_replies(received, b"back\n")


def test_idle_timeout(tmp_path: Path) -> None:
    """
    C{--timeout 0.5} closes an idle connection (with a clean EOF) about half
    a second after its last line; C{--timeout 0} leaves it open.
    """
    with tcp_server(tmp_path, "--timeout", "0.5") as (_, address), connect(address) as sock:
        sock.sendall(b"hi\n")
        started = time.monotonic()
        assert_replies(read_to_eof(sock), b"hi\n")
        assert 0.3 < time.monotonic() - started < 5
    with tcp_server(tmp_path, "--timeout", "0") as (_, address), connect(address) as sock:
        assert read_for(sock, 1.5) == (b"", False)
        sock.sendall(b"still\n")
        assert_replies(sock.recv(1024), b"still\n")


def test_time_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    In a zone five hours behind UTC: C{ctime} is local time, C{--utc} moves it
    to UTC, C{iso} carries the local offset (C{+00:00} with C{--utc}), and a
    strftime pattern is used as given.
    """
    monkeypatch.setenv("TZ", "EST5")
    cases = {
        (): rb"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ 123]\d (?P<hour>\d\d):\d\d:\d\d \d{4}\] ",
        ("--utc",): rb"\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d (?P<hour>\d\d):\d\d:\d\d \d{4}\] ",
        ("--time-format", "iso"): rb"\[\d{4}-\d\d-\d\dT(?P<hour>\d\d):\d\d:\d\d-05:00\] ",
        ("--time-format", "iso", "--utc"): rb"\[\d{4}-\d\d-\d\dT(?P<hour>\d\d):\d\d:\d\d\+00:00\] ",
        ("--time-format", "%Y|%H|%%", "--utc"): rb"\[\d{4}\|(?P<hour>\d\d)\|%\] ",
    }
    for options, stamp in cases.items():
        with tcp_server(tmp_path, *options) as (_, address):
            received = exchange(address, b"t\n")
            utc_hour = time.gmtime().tm_hour
        match = re.fullmatch(stamp + rb"t\n", received)
        assert match, (options, received)
        shift = 0 if "--utc" in options else 5
        assert (int(match["hour"]) + shift) % 24 in (utc_hour, (utc_hour - 1) % 24), (options, received)


def test_datagrams_through_twistd(tmp_path: Path) -> None:
    """
    C{--udp} and C{--unix-datagram}: one reply datagram per request, the
    payload byte for byte (a trailing newline stays), an empty datagram gets
    just the prefix.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOCAL, 0))
        udp_port = probe.getsockname()[1]
    server_path = str(tmp_path / "server.dgram")
    options = ("--port", "0", "--udp", str(udp_port), "--unix-datagram", server_path, "--utc", "--time-format", "iso")
    with running_server(tmp_path, options, listeners=3):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            for payload in [b"", b"hi\n", b"hi\r\n", b"\xff\x00\r"]:
                udp.sendto(payload, (LOCAL, udp_port))
                assert re.fullmatch(ISO_UTC + re.escape(payload), udp.recv(65536)), payload
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
            unix.bind(str(tmp_path / "client.dgram"))
            unix.settimeout(10)
            for payload in [b"", b"two\nlines\n"]:
                unix.sendto(payload, server_path)
                assert re.fullmatch(ISO_UTC + re.escape(payload), unix.recv(65536)), payload


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_accepting_and_answers(tmp_path: Path, sig: signal.Signals) -> None:
    """
    On SIGINT or SIGTERM the server refuses new connections at once, still
    answers a connected client's lines (also ones sent after the signal, and
    its unterminated last line at half-close), and exits with status 0 or
    death by that signal, without a traceback.
    """
    with tcp_server(tmp_path) as (server, address), connect(address) as sock:
        sock.sendall(b"before\n")
        assert_replies(sock.recv(1024), b"before\n")
        server.process.send_signal(sig)
        deadline = time.monotonic() + 5
        while True:  # the signal is handled on the reactor's next turn
            try:
                connect(address, timeout=1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting after the signal"
            time.sleep(0.02)
        sock.sendall(b"after\nlast")
        sock.shutdown(socket.SHUT_WR)
        assert_replies(read_to_eof(sock), b"after\n", b"last\r\n")
        status = server.process.wait(15)
    assert status in (0, -sig), server.log()
    assert "Traceback" not in server.log()


def test_connection_log_names_the_peer(tmp_path: Path) -> None:
    """
    Each connection's peer is logged, C{host:port} like the original's
    C{connected from} (in the connection's summary); C{--quiet} logs no connection lines.
    """
    for quiet in (False, True):
        with tcp_server(tmp_path, *(["--quiet"] if quiet else [])) as (server, address):
            with connect(address) as sock:
                client_port = sock.getsockname()[1]
                sock.sendall(b"x\n")
                sock.recv(1024)
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(15)
            logged = f"127.0.0.1:{client_port}" in server.log()
        assert logged is not quiet, server.log()


def test_bad_option_is_one_line(tmp_path: Path) -> None:
    """
    A bad option gives one clear error line, a non-zero exit, no traceback.
    """
    result = subprocess.run(
        twistd_command("--max-line", "0"), capture_output=True, timeout=60, check=False, cwd=tmp_path
    )
    lines = [line for line in (result.stdout + result.stderr).decode().splitlines() if line.strip()]
    assert result.returncode != 0
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) == 1, lines
