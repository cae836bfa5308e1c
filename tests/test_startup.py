"""
Start-up failures end the command with one line on standard error and status 1,
under C{twistd -n}, C{twistd} (daemonizing) and C{twist}, leaving no pid file.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from serverprocess import twistd_command
from tsecho import _startup as startup


class FailTests(SynchronousTestCase):
    """
    L{startup.fail} writes the line where the command's starter sees it.
    """

    def test_writes_to_the_kept_stderr_and_releases_it(self) -> None:
        """
        The line goes to the descriptor kept before a fork, which is then
        closed; the error is a L{SystemExit} with status 1 (no traceback) and
        an L{Exception} (what C{twistd}'s daemonizing runner reports).
        """
        reader, writer = os.pipe()
        self.addCleanup(os.close, reader)
        try:
            startup.keep_stderr(writer)
        finally:
            os.close(writer)
        error = startup.fail("tsecho: cannot listen on tcp:1: no")
        self.assertEqual(os.read(reader, 1000), b"tsecho: cannot listen on tcp:1: no\n")
        self.assertEqual(os.read(reader, 1000), b"")  # the kept copy is closed
        self.assertIsInstance(error, SystemExit)
        self.assertIsInstance(error, Exception)
        self.assertEqual(error.code, 1)
        self.assertEqual(str(error), "tsecho: cannot listen on tcp:1: no")

    def test_release_closes_the_kept_stderr(self) -> None:
        """
        After a successful start the daemon holds no copy of its starter's
        standard error (a caller reading it to its end would wait forever).
        """
        reader, writer = os.pipe()
        self.addCleanup(os.close, reader)
        startup.keep_stderr(writer)
        os.close(writer)
        startup.release_stderr()
        self.assertEqual(os.read(reader, 1000), b"")

    def test_keeps_the_first_copy_only(self) -> None:
        """
        Kept twice (C{makeService} called again): only the first is copied,
        the line is written to it once, and then it is closed.
        """
        first_reader, first = os.pipe()
        second_reader, second = os.pipe()
        for fd in (first_reader, second_reader):
            self.addCleanup(os.close, fd)
        startup.keep_stderr(first)
        startup.keep_stderr(second)
        os.close(first)
        os.close(second)
        os.set_blocking(second_reader, False)  # a copy held open would raise BlockingIOError
        self.assertEqual(os.read(second_reader, 1000), b"")  # no copy of the second is held
        startup.fail("tsecho: no")
        self.assertEqual(os.read(first_reader, 1000), b"tsecho: no\n")
        self.assertEqual(os.read(first_reader, 1000), b"")

    def test_no_stderr_at_all(self) -> None:
        """
        Started without a standard error (C{sys.__stderr__} is L{None}) and
        none kept: the line is only logged, and the error still returned.
        """
        self.patch(sys, "__stderr__", None)
        error = startup.fail("tsecho: no")
        self.assertEqual(str(error), "tsecho: no")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """
    A loopback TCP port that something already listens on.
    """
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _expected(port: int) -> str:
    return (
        f"tsecho: cannot listen on tcp:{port}:interface=127.0.0.1: "
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use. "
        "Another program listens there: stop it, or choose another port.\n"
    )


def _run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Generous: the point is that it ends at all (it used to hang forever).
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)


def _twistd(*options: str) -> list[str]:
    launcher = twistd_command()[: -len(["-n", "--pidfile=", "tsecho"])]
    return [*launcher, *options]


def _daemon(tmp_path: Path, listen: str) -> list[str]:
    """
    C{twistd} without C{-n}, its pid file and log in C{tmp_path}.
    """
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    return _twistd(f"--pidfile={pidfile}", f"--logfile={logfile}", "tsecho", "--listen", listen)


def test_daemon_mode_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """
    Without C{-n}, C{twistd} forks: the command still ends, with status 1,
    the line first on standard error, and no pid file left behind.
    """
    pidfile = tmp_path / "twistd.pid"
    result = _run(_daemon(tmp_path, f"tcp:{busy_port}:interface=127.0.0.1"), tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(_expected(busy_port)), result.stderr
    assert result.stdout == ""
    # The daemon tells its parent before it removes the pid file (twistd's
    # order): the file goes a moment after the command has ended.
    deadline = time.monotonic() + 30
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()
    assert _expected(busy_port).rstrip() in (tmp_path / "twistd.log").read_text()


def test_nodaemon_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """
    With C{-n}, the line alone on standard error (not behind log lines on
    standard output), status 1, no pid file.
    """
    pidfile = tmp_path / "twistd.pid"
    command = _twistd("-n", f"--pidfile={pidfile}", "tsecho", "--listen", f"tcp:{busy_port}:interface=127.0.0.1")
    result = _run(command, tmp_path)
    assert result.returncode == 1, result
    assert result.stderr == _expected(busy_port)
    assert not pidfile.exists()


def test_twist_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """
    Under C{twist}, the line once on standard error, status 1.
    """
    twist = Path(sys.executable).with_name("twist")
    if not twist.exists():
        pytest.skip("no twist script beside this Python")
    result = _run([str(twist), "tsecho", "--listen", f"tcp:{busy_port}:interface=127.0.0.1"], tmp_path)
    assert result.returncode == 1, result
    assert result.stderr == _expected(busy_port)


def _stale_socket(path: Path) -> None:
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))
    leftover.close()


def _held_lock(path: Path) -> None:
    # What a server killed a moment ago (or still running) leaves: PATH.lock
    # naming a live process.
    os.symlink(str(os.getpid()), f"{path}.lock")


@pytest.mark.parametrize(
    ("prepare", "listen", "message"),
    [
        (
            None,
            "unix:{tmp}/missing/x.sock",
            "tsecho: cannot listen on unix:{tmp}/missing/x.sock: the directory {tmp}/missing does not exist: "
            "create it, or choose a path in an existing directory",
        ),
        (
            _stale_socket,
            "unix:{tmp}/st.sock:lockfile=0",
            "tsecho: cannot listen on unix:{tmp}/st.sock:lockfile=0: {tmp}/st.sock already exists: if no server uses "
            "it any more, remove it (without lockfile=0, a socket left by a crashed tsecho is removed for you)",
        ),
        (
            _held_lock,
            "unix:{tmp}/st.sock",
            "tsecho: cannot listen on unix:{tmp}/st.sock: {tmp}/st.sock.lock says process {pid} is serving "
            "{tmp}/st.sock: stop that server first (if it was just killed, try again in a moment)",
        ),
    ],
    ids=["missing directory", "stale socket without lockfile", "lock held"],
)
def test_unix_listener_messages(tmp_path: Path, prepare: object, listen: str, message: str) -> None:
    """
    A UNIX listener that cannot be opened: one line on standard error naming
    the file and what to do, status 1.
    """
    if callable(prepare):
        prepare(tmp_path / "st.sock")
    fill = {"tmp": tmp_path, "pid": os.getpid()}
    result = _run(twistd_command("--listen", listen.format(**fill)), tmp_path)
    assert (result.returncode, result.stderr) == (1, message.format(**fill) + "\n")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "notaport"], "twistd tsecho: 'notaport' is not a port number (0 to 65535)"),
        (
            ["--listen", "tcp:interface=127.0.0.1"],
            "twistd tsecho: --listen tcp:interface=127.0.0.1: no port given: add port=...",
        ),
        (
            ["--listen", "systemd:domain=INET:index=0"],
            "twistd tsecho: --listen systemd:domain=INET:index=0: no socket at that index was passed by systemd: "
            "start tsecho from its .socket unit (see contrib/systemd), "
            "or set LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES",
        ),
        (
            ["--listen", "tcp6:0:interface=::1"],
            "twistd tsecho: --listen tcp6:0:interface=::1: interface=::1: a ':' inside a value must be escaped as "
            "'\\:' (quoted, in a shell): 'tcp6:0:interface=\\:\\:1'",
        ),
        (
            ["--port", "21567", "--listen", "tcp:21567"],
            "twistd tsecho: --listen tcp:21567 is also given by --port 21567: "
            "each listener needs a port (or socket path) of its own",
        ),
    ],
    ids=["port", "tcp without port", "systemd without sockets", "unescaped colons", "same listener twice"],
)
def test_option_messages(tmp_path: Path, options: list[str], message: str) -> None:
    """
    A bad option: one line on standard error naming the input, status 1.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        twistd_command(*options), capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False
    )
    assert (result.returncode, result.stderr, result.stdout) == (1, f"{message} (see twistd tsecho --help)\n", "")


def test_version() -> None:
    """
    C{twistd tsecho --version} names tsecho's version, then Twisted's.
    """
    from twisted import __version__ as twisted_version

    from tsecho import __version__

    result = subprocess.run(twistd_command("--version"), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith(f"tsecho {__version__} (Twisted {twisted_version}, ")


def test_daemon_mode_starts(tmp_path: Path) -> None:
    """
    A daemon that starts holds no copy of its starter's standard error: the
    command returns at once, even to a caller reading its output to the end.
    """
    pidfile = tmp_path / "twistd.pid"
    result = _run(_daemon(tmp_path, "tcp:0:interface=127.0.0.1"), tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    pid = int(pidfile.read_text())
    # The parent returns before the daemon's reactor has installed its
    # signal handlers: signal only once it has answered a line.
    logged = re.compile(r"listening on \S+ \(127\.0\.0\.1:(\d+)\)")
    deadline = time.monotonic() + 30
    while not (
        found := logged.search((tmp_path / "twistd.log").read_text() if (tmp_path / "twistd.log").exists() else "")
    ):
        assert time.monotonic() < deadline, "the daemon never said it listens"
        time.sleep(0.05)
    with socket.create_connection(("127.0.0.1", int(found[1])), timeout=30) as sock:
        sock.sendall(b"hello\n")
        assert sock.recv(1024).endswith(b"] hello\n")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()
