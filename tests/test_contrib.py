"""
The deployment files in C{contrib/}: the systemd units are ones the plugin
accepts, and the HAProxy configuration really spreads clients over two
tsecho instances, which log the real client addresses.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from realsockets import TIMEOUT, read_all
from serverprocess import running_server

CONTRIB = Path(__file__).parent.parent / "contrib"
STAMP = rb"\[(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\] "


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """
    Parse a systemd unit file: sections of keys, each with all its values
    (keys may repeat), comments and blank lines skipped.
    """
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert equals, f"{path.name}:{number}: not a key=value line: {raw!r}"
        assert section is not None, f"{path.name}:{number}: a key before any section"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units() -> None:
    """
    C{tsecho.socket} listens on TCP 21567 for C{tsecho.service}, whose
    C{ExecStart} is C{twistd} in the foreground with a C{tsecho} command line
    that C{tsecho.tap.Options} accepts, listening on the socket systemd
    passes.
    """
    socket_unit = parse_unit(CONTRIB / "systemd" / "tsecho.socket")
    service_unit = parse_unit(CONTRIB / "systemd" / "tsecho.service")
    assert socket_unit["Socket"]["ListenStream"] == ["0.0.0.0:21567"]
    assert socket_unit["Install"]["WantedBy"] == ["sockets.target"]
    assert service_unit["Unit"]["Requires"] == ["tsecho.socket"]
    [exec_start] = service_unit["Service"]["ExecStart"]
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "twistd"
    # Parse it as systemd would start it (one socket, fd 3, named after the
    # unit), in a fresh process: Twisted reads LISTEN_* when it is imported.
    check = (
        "import sys\n"
        "from twisted.scripts.twistd import ServerOptions\n"
        "options = ServerOptions()\n"
        "options.parseOptions(sys.argv[1:])\n"
        "assert options['nodaemon'] and options['pidfile'] == '' and options.subCommand == 'tsecho'\n"
        "[(description, endpoint)] = options.subOptions.endpoints()\n"
        "print(description, type(endpoint).__name__, endpoint.fileno, int(endpoint.addressFamily))\n"
    )
    shim = "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[1], sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", shim, sys.executable, "-c", check, *argv[1:]],
        env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "tsecho.socket"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "systemd:domain=INET:index=0",
        "AdoptedStreamServerEndpoint",
        "3",
        str(int(socket.AF_INET)),
    ]


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago (for HAProxy's
    frontend, which cannot report a port 0 choice back).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (Debian package 'haproxy')")
def test_haproxy_in_front_of_two_instances(tmp_path: Path) -> None:
    """
    Real HAProxy, with C{contrib/haproxy/haproxy.cfg} unchanged (addresses from
    the environment), in front of two C{twistd tsecho} instances: clients are
    answered through it, half-close included, connections go to both
    instances, and each instance logs the real client address.
    """
    haproxy_config = CONTRIB / "haproxy" / "haproxy.cfg"
    options = ("--listen", "haproxy:tcp:0:interface=127.0.0.1")
    with running_server(tmp_path, options) as first, running_server(tmp_path, options) as second:
        frontend = free_port()
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "TSECHO_FRONTEND": f"127.0.0.1:{frontend}",
            "TSECHO_BACKEND_1": first.addresses[0],
            "TSECHO_BACKEND_2": second.addresses[0],
        }
        log_path = tmp_path / "haproxy.log"
        with log_path.open("wb") as log_file:
            haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(haproxy_config)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            deadline = time.monotonic() + TIMEOUT
            clients: list[int] = []
            while len(clients) < 6:
                assert haproxy.poll() is None, log_path.read_text()
                try:
                    sock = socket.create_connection(("127.0.0.1", frontend), timeout=TIMEOUT)
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.05)
                    continue
                with sock:
                    sock.sendall(b"through haproxy\nlast")
                    sock.shutdown(socket.SHUT_WR)
                    replies = read_all(sock)
                    assert re.fullmatch(STAMP + rb"through haproxy\n" + STAMP + rb"last\r\n", replies), replies
                    clients.append(sock.getsockname()[1])
            deadline = time.monotonic() + TIMEOUT
            for server in (first, second):
                while "closed after" not in server.log() and time.monotonic() < deadline:
                    time.sleep(0.05)
            logged = [
                int(p) for s in (first, second) for p in re.findall(r"connection from 127\.0\.0\.1:(\d+)", s.log())
            ]
            # Each instance served some clients, and named them by their own
            # ports, not HAProxy's.
            assert re.search(r"connection from 127\.0\.0\.1:\d+", first.log()), first.log()
            assert re.search(r"connection from 127\.0\.0\.1:\d+", second.log()), second.log()
            # (Health checks, which come from HAProxy's own ports, may add more.)
            assert set(clients) <= set(logged), (clients, logged)
        finally:
            haproxy.send_signal(signal.SIGTERM)
            try:
                haproxy.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                haproxy.kill()
                haproxy.wait()
