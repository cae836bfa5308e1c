"""
Run the real C{twistd tsecho} in a subprocess, for end-to-end tests and for
the soak (C{benchmarks/soak.py}, which imports this module).

The server listens on port 0 and its log says which port it got, so tests
never race for a free port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

_LISTENING = re.compile(r"listening on (?P<description>\S+) \((?P<address>[^)]*)\)")


@attrs.define
class ServerProcess:
    """
    A running C{twistd -n tsecho}.

    @ivar process: the subprocess; its stdout carries the log.
    @ivar addresses: C{"host:port"} (or path) of each listener, in option order.
    @ivar log_path: where its log goes.
    """

    process: subprocess.Popen[bytes]
    addresses: list[str]
    log_path: Path

    @property
    def port(self) -> int:
        """
        The port of the first TCP listener.
        """
        return int(self.addresses[0].rsplit(":", 1)[1])

    def log(self) -> str:
        """
        Everything logged so far, with the files C{twistd --logfile} rotated away first (oldest first).
        """
        rotated = sorted(self.log_path.parent.glob(f"{self.log_path.name}.*"), key=lambda p: -int(p.suffix[1:]))
        return "".join(path.read_text(errors="replace") for path in [*rotated, self.log_path] if path.exists())

    def _proc_status(self, field: str) -> int:
        """
        A C{kB} field of C{/proc/PID/status} (Linux), such as C{VmRSS}, in KiB.
        """
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]

    def rss_kib(self) -> int:
        """
        The server's resident memory, in KiB.
        """
        return self._proc_status("VmRSS")

    def peak_rss_kib(self) -> int:
        """
        The most resident memory the server ever had, in KiB.
        """
        return self._proc_status("VmHWM")

    def fd_count(self) -> int:
        """
        How many file descriptors the server has open.
        """
        return len(list(Path(f"/proc/{self.process.pid}/fd").iterdir()))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """
        Signal the server and wait for it to exit; return its exit status.
        """
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def twistd_command(*options: str, twistd_options: Sequence[str] = ()) -> list[str]:
    """
    The command line that runs C{twistd -n TWISTD_OPTIONS tsecho OPTIONS} from
    this Python's environment.  (C{python -m twisted} is C{twist}, not C{twistd}.)
    """
    twistd = Path(sys.executable).with_name("twistd")
    if twistd.exists():
        launcher = [str(twistd)]
    else:
        launcher = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return [*launcher, "-n", "--pidfile=", *twistd_options, "tsecho", *options]


def default_sigint(then: Callable[[], object] | None = None) -> Callable[[], None]:
    """
    A C{preexec_fn} that puts SIGINT back to its default disposition in the
    child, then calls C{then}.  Started in the background from a script (C{&},
    C{nohup}), a process inherits SIGINT ignored, and C{twistd} then ignores it
    too (Twisted installs its handler only over the default): the tests that
    send SIGINT must not depend on how the test run was started.
    """

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if then is not None:
            then()

    return preexec


@contextmanager
def running_server(
    tmp_path: Path,
    options: Sequence[str] = ("--listen", "tcp:0:interface=127.0.0.1"),
    listeners: int = 1,
    timeout: float = 20.0,
    *,
    twistd_options: Sequence[str] = (),
    logfile: str | None = None,
    **popen: object,
) -> Iterator[ServerProcess]:
    """
    Start C{twistd TWISTD_OPTIONS tsecho OPTIONS}, wait until it listens, stop
    it afterwards.

    @param listeners: how many "listening on" log lines to wait for.
    @param logfile: where the log goes, if C{twistd_options} say so
        (C{--logfile}), relative to C{tmp_path}; standard output otherwise.
    """
    output_path = tmp_path / f"tsecho-{time.monotonic_ns()}.log"
    log_path = output_path if logfile is None else tmp_path / logfile
    with output_path.open("wb") as log_file:
        process = subprocess.Popen(
            twistd_command(*options, twistd_options=twistd_options),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=default_sigint(popen.pop("preexec_fn", None)),  # type: ignore[arg-type]  # noqa: PLW1509
            **popen,  # type: ignore[call-overload]
        )
    server = ServerProcess(process, [], log_path)
    try:
        deadline = time.monotonic() + timeout
        while len(server.addresses) < listeners:
            if not log_path.exists():
                log_path.touch()
            if process.poll() is not None:
                raise RuntimeError(f"twistd exited with {process.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"twistd did not start listening in {timeout} s:\n{server.log()}")
            time.sleep(0.05)
            server.addresses = [m["address"] for m in _LISTENING.finditer(server.log())]
        yield server
    finally:
        if process.poll() is None:
            server.stop(signal.SIGKILL)


def exchange(port: int, payload: bytes) -> bytes:
    """
    Connect to C{127.0.0.1:port}, send C{payload}, end our input, and read
    the replies until the server closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)
