"""
Start-up failures end the command with one line on standard error and status 1,
under C{twistd -n}, C{twistd} (daemonizing) and C{twist}, leaving no pid file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from serverprocess import twistd_command
from tsecho import startup


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
        f"Couldn't listen on 127.0.0.1:{port}: [Errno 98] Address already in use.\n"
    )


def _run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Generous: the point is that it ends at all (it used to hang forever).
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)


def _twistd(*options: str) -> list[str]:
    launcher = twistd_command()[: -len(["-n", "--pidfile=", "tsecho"])]
    return [*launcher, *options]


def test_daemon_mode_port_in_use(tmp_path: Path, busy_port: int) -> None:
    """
    Without C{-n}, C{twistd} forks: the command still ends, with status 1,
    the line first on standard error, and no pid file left behind.
    """
    pidfile = tmp_path / "twistd.pid"
    command = _twistd(
        f"--pidfile={pidfile}",
        f"--logfile={tmp_path / 'twistd.log'}",
        "tsecho",
        "--listen",
        f"tcp:{busy_port}:interface=127.0.0.1",
    )
    result = _run(command, tmp_path)
    assert result.returncode == 1, result
    assert result.stderr.startswith(_expected(busy_port)), result.stderr
    assert result.stdout == ""
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
