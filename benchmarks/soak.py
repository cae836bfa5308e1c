"""
A soak test for humans: a real server, a mixed crowd of clients, a verdict.

    python benchmarks/soak.py --duration 20

It starts C{twistd -n tsecho} in a subprocess (UTC ISO timestamps, so every
reply can be checked to the second), then runs, for the whole duration,
well-behaved clients, pipelining clients, slow readers, clients that reset
mid-stream and clients that send over-long lines, and hostile ones (issue 9):
flooders that send empty lines and never read, and drippers that send a
line one byte at a time.  Progress goes to standard
error once a second; the summary (replies checked, errors by kind, the
server's peak memory, its descriptor count before and after, the slowest
polite round trip while the others flood, the bytes the flooders got in before
back-pressure stopped them) and a PASS/FAIL
verdict go to standard output, and the exit status is 0 only on PASS.
"""

from __future__ import annotations

import calendar
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, endpoints, protocol, task
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.python import usage
from twisted.python.failure import Failure

from tsecho._cli import usage_error_text, version_text
from tsecho.wire import line_too_long

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverprocess import ServerProcess, running_server  # the tests' helper: one way to run a server

STAMP = re.compile(rb"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\+00:00\] ")
STAMP_LENGTH = len(b"[2026-11-26T14:09:48+00:00] ")
LINGER_0 = struct.pack("ii", 1, 0)
MAX_LINE = 4096


READ_LAG = 60.0
"""
Seconds a reply may wait in the socket buffers before a slow client reads it.
"""


def check_reply(reply: bytes, request: bytes, now: float, slack: float = 5.0) -> str | None:
    """
    Whether C{reply} is the SPEC's answer to the line C{request} (with its
    terminator) at about the time C{now}.

    @return: C{None} if it is, or the kind of error.
    """
    if not reply.endswith(request) or len(reply) != STAMP_LENGTH + len(request):
        return "wrong echo"
    stamp = STAMP.fullmatch(reply[:STAMP_LENGTH])
    if stamp is None:
        return "bad timestamp"
    seconds = calendar.timegm(time.strptime(stamp.group(1).decode(), "%Y-%m-%dT%H:%M:%S"))
    # Made no later than it was read; a slow reader may read a reply well
    # after it was made (it waited in the socket buffers), within the run.
    return "wrong time" if seconds > now + slack or seconds < now - READ_LAG else None


class SessionError(Exception):
    """
    A client session saw something the SPEC does not allow; the message is its kind.
    """


class SoakClient(protocol.Protocol):
    """
    A client connection: collects reply lines and says when it is closed.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.lines: list[bytes] = []
        self._partial = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += [line + b"\n" for line in complete]

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reason = reason
        self.closed.callback(None)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def replies(self, count: int, timeout: float = 30.0) -> list[bytes]:
        """
        Wait for C{count} reply lines; fail if they do not come.
        """
        deadline = self.clock.seconds() + timeout
        while len(self.lines) < count:
            if self.closed.called:
                raise SessionError("closed early")
            if self.clock.seconds() > deadline:
                raise SessionError("reply timeout")
            await task.deferLater(self.clock, 0.01, lambda: None)
        return self.lines[:count]

    async def wait_closed(self, timeout: float = 30.0) -> None:
        """
        Wait for the server to close the connection.
        """
        self.closed.addTimeout(timeout, self.clock)
        try:
            await self.closed
        except defer.TimeoutError:
            raise SessionError("close timeout") from None

    def close(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()

    @property
    def tcp(self) -> Any:
        """
        The TCP transport, with what L{ITransport} does not declare.
        """
        assert self.transport is not None
        return self.transport

    def reset(self) -> None:
        """
        End the connection with a TCP RST.
        """
        self.tcp.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        self.tcp.abortConnection()


@attrs.define
class Tally:
    """
    What the clients saw.
    """

    sessions: Counter[str] = attrs.field(factory=Counter)
    errors: Counter[str] = attrs.field(factory=Counter)
    replies_checked: int = 0
    max_rss_kib: int = 0
    slowest_round_trip: float = 0.0
    flooded_bytes: list[int] = attrs.field(factory=list)


def random_line(rng: random.Random, size: int) -> bytes:
    """
    A request line of C{size} random bytes (no C{\\n}) and a random terminator.
    """
    body = rng.randbytes(size).replace(b"\n", b"\x00")
    if body.endswith(b"\r"):
        body = body[:-1] + b"r"
    return body + rng.choice([b"\n", b"\r\n"])


class Soak:
    """
    The client population, run against a server at C{port} until L{stop}.
    """

    def __init__(self, reactor: Any, port: int, seed: int) -> None:
        self.reactor = reactor
        self.port = port
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.running = True

    async def connect(self) -> SoakClient:
        endpoint = endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port, timeout=10)
        try:
            client: SoakClient = await endpoints.connectProtocol(endpoint, SoakClient(self.reactor))
        except ConnectError as e:
            raise SessionError(f"connect failed ({type(e).__name__})") from None
        return client

    def check(self, replies: list[bytes], requests: list[bytes]) -> None:
        now = time.time()
        for reply, request in zip(replies, requests):
            error = check_reply(reply, request, now)
            if error:
                raise SessionError(error)
            self.tally.replies_checked += 1

    async def polite(self) -> None:
        """
        One line at a time, each reply awaited, then a clean close.
        """
        client = await self.connect()
        requests = [random_line(self.rng, self.rng.randint(0, 200)) for _ in range(self.rng.randint(1, 20))]
        for index, request in enumerate(requests):
            started = time.monotonic()
            client.send(request)
            await client.replies(index + 1)
            self.tally.slowest_round_trip = max(self.tally.slowest_round_trip, time.monotonic() - started)
        self.check(client.lines, requests)
        client.close()
        await client.wait_closed()

    async def pipeliner(self) -> None:
        """
        Hundreds of lines in one write; then half-close and expect every reply.
        """
        client = await self.connect()
        requests = [random_line(self.rng, self.rng.randint(0, 100)) for _ in range(self.rng.randint(100, 500))]
        client.send(b"".join(requests))
        client.tcp.loseWriteConnection()
        await client.wait_closed()
        if len(client.lines) != len(requests):
            raise SessionError("missing replies after half-close")
        self.check(client.lines, requests)

    async def slow_reader(self) -> None:
        """
        A megabyte of lines, not reading for a while, then reading it all.
        """
        client = await self.connect()
        requests = [random_line(self.rng, 1000) for _ in range(1000)]
        client.tcp.pauseProducing()
        client.send(b"".join(requests))
        await task.deferLater(self.reactor, self.rng.uniform(0.5, 2.0), lambda: None)
        client.tcp.resumeProducing()
        self.check(await client.replies(len(requests), timeout=60), requests)
        client.close()
        await client.wait_closed()

    async def resetter(self) -> None:
        """
        Lines and half a line, then a reset, mid-line or mid-reply.
        """
        client = await self.connect()
        requests = [random_line(self.rng, 500) for _ in range(self.rng.randint(0, 300))]
        client.send(b"".join(requests) + b"half a li")
        if self.rng.random() < 0.5:
            await task.deferLater(self.reactor, self.rng.uniform(0, 0.05), lambda: None)
        client.reset()
        await client.wait_closed()

    async def overlong(self) -> None:
        """
        A few good lines, then one over the limit: those replies, the ERROR line, a close.
        """
        client = await self.connect()
        requests = [random_line(self.rng, 50) for _ in range(self.rng.randint(0, 5))]
        too_long = b"o" * self.rng.randint(MAX_LINE + 1, MAX_LINE * 3) + self.rng.choice([b"\n", b"\r\n", b""])
        client.send(b"".join(requests) + too_long + b"after\n")
        await client.wait_closed()
        error = line_too_long(MAX_LINE)
        if client.lines[len(requests) :] != [error] or client._partial:
            raise SessionError("wrong over-long reply")
        self.check(client.lines, requests)

    async def flooder(self) -> None:
        """
        Empty lines, 64 KiB at a time, never reading, for a second or two;
        then a reset.  Back-pressure must stop the server reading it.
        """
        client = await self.connect()
        client.tcp.pauseProducing()  # never read
        handle = client.tcp.getHandle()
        handle.setblocking(False)
        chunk = b"\n" * 65536
        sent = 0
        deadline = time.monotonic() + self.rng.uniform(1.0, 2.0)
        while time.monotonic() < deadline:
            try:
                sent += handle.send(chunk)
            except BlockingIOError:
                await task.deferLater(self.reactor, 0.05, lambda: None)
            else:
                await task.deferLater(self.reactor, 0, lambda: None)
        self.tally.flooded_bytes.append(sent)
        client.reset()
        await client.wait_closed()

    async def dripper(self) -> None:
        """
        One line of 2,000 bytes, one byte per write, then its reply.
        """
        client = await self.connect()
        client.tcp.setTcpNoDelay(True)
        line = random_line(self.rng, 2000)
        for index in range(len(line)):
            client.send(line[index : index + 1])
            await task.deferLater(self.reactor, 0.001, lambda: None)
        self.check(await client.replies(1), [line])
        client.close()
        await client.wait_closed()

    async def loop(self, kind: str, session: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """
        Run C{session} again and again until the soak stops, counting outcomes.
        """
        while self.running:
            try:
                await session()
                self.tally.sessions[kind] += 1
            except SessionError as e:
                self.tally.errors[f"{kind}: {e}"] += 1
            except (ConnectionDone, ConnectionLost) as e:
                self.tally.errors[f"{kind}: {type(e).__name__}"] += 1

    def run(self, population: dict[str, int]) -> defer.Deferred[list[None]]:
        """
        Start C{population[kind]} concurrent loops of each kind of client.
        """
        sessions = {
            "polite": self.polite,
            "pipeliner": self.pipeliner,
            "slow reader": self.slow_reader,
            "resetter": self.resetter,
            "over-long": self.overlong,
            "flooder": self.flooder,
            "dripper": self.dripper,
        }
        loops = [
            defer.ensureDeferred(self.loop(kind, sessions[kind]))
            for kind, count in population.items()
            for _ in range(count)
        ]
        return defer.gatherResults(loops, consumeErrors=True)


class Options(usage.Options):
    """
    The command line of C{python benchmarks/soak.py}.
    """

    synopsis = "Usage: python benchmarks/soak.py [--duration SECONDS] [--clients N] [--seed N] [--max-rss MIB]"
    longdesc = (
        "A soak test for humans: a real server, a mixed crowd of clients, a verdict. "
        "It starts twistd -n tsecho in a subprocess, then runs, for the whole duration, well-behaved "
        "clients, pipelining clients, slow readers, clients that reset their connection and clients that send "
        "over-long lines. Progress goes to standard error once a second; the summary and a PASS/FAIL "
        "verdict go to standard output, and the exit status is 0 only on PASS (2 for a bad command line)."
    )
    optParameters: list[list[Any]] = [
        ["duration", "d", 20.0, "How long to run the clients, in seconds", float],
        ["seed", None, 1, "Seed for the clients' random choices", int],
        ["max-rss", None, 150, "FAIL if the server's peak resident memory passes this many MiB", int],
        ["clients", None, 2, "Concurrent loops of each kind of client (polite clients: 4 times this)", int],
        ["flooders", None, 20, "Concurrent clients that flood empty lines and never read", int],
    ]

    def opt_version(self) -> None:
        """
        Display the versions of tsecho, Twisted and Python, and exit.
        """
        print(version_text())
        raise SystemExit(0)


async def soak(reactor: Any, options: Options, server: ServerProcess) -> Tally:
    """
    Run the clients for the duration with progress on standard error.
    """
    clients = options["clients"]
    population = {
        "polite": 4 * clients,
        "pipeliner": clients,
        "slow reader": clients,
        "resetter": clients,
        "over-long": clients,
        "flooder": options["flooders"],
        "dripper": clients,
    }
    crowd = Soak(reactor, server.port, options["seed"])
    started = time.monotonic()

    def progress() -> None:
        rss = server.rss_kib()
        crowd.tally.max_rss_kib = max(crowd.tally.max_rss_kib, rss)
        sys.stderr.write(
            f"[{time.monotonic() - started:5.1f}s] sessions {sum(crowd.tally.sessions.values()):6d}"
            f"  replies checked {crowd.tally.replies_checked:8d}  errors {sum(crowd.tally.errors.values()):3d}"
            f"  server RSS {rss / 1024:6.1f} MiB  fds {server.fd_count():4d}\n"
        )

    ticker = task.LoopingCall(progress)
    ticker.clock = reactor
    ticker.start(1.0)
    finished = crowd.run(population)
    await task.deferLater(reactor, options["duration"], lambda: None)
    crowd.running = False
    finished.addTimeout(90, reactor)
    try:
        await finished
    except defer.TimeoutError:
        crowd.tally.errors["sessions still running 90 s after the end"] += 1
    ticker.stop()
    progress()
    return crowd.tally


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the soak; print the summary; return 0 on PASS, 1 on FAIL.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"benchmarks/soak.py: {usage_error_text(e)} (see --help)", file=sys.stderr)
        return 2
    server_options = ["--listen", "tcp:0:interface=127.0.0.1:backlog=1024", "--utc", "--time-format", "iso"]
    server_options += ["--max-line", str(MAX_LINE), "--timeout", "30"]
    with (
        tempfile.TemporaryDirectory(prefix="tsecho-soak-") as directory,
        running_server(
            Path(directory), server_options, twistd_options=["--logfile=server.log"], logfile="server.log"
        ) as server,
    ):
        fds_before = server.fd_count()
        try:
            tally = run_reactor(lambda reactor: soak(reactor, options, server))
            deadline = time.monotonic() + 10
            while server.fd_count() > fds_before and time.monotonic() < deadline:
                time.sleep(0.05)
            fds_after = server.fd_count()
            peak = max(server.peak_rss_kib(), tally.max_rss_kib)
        finally:
            status = stop(server)
        log = server.log()
    tracebacks = log.count("Traceback (most recent call last)")
    if tracebacks:
        tally.errors["server tracebacks"] += tracebacks
    problems = [f"{sum(tally.errors.values())} errors"] if tally.errors else []
    if tally.replies_checked == 0:
        problems.append("no replies checked")
    if fds_after > fds_before:
        problems.append(f"{fds_after - fds_before} descriptors leaked")
    if peak > options["max-rss"] * 1024:
        problems.append(f"peak RSS over {options['max-rss']} MiB")
    if tally.slowest_round_trip > 2.0:
        problems.append("a polite client waited over 2 s for a reply")
    if status not in (0, -signal.SIGTERM):
        problems.append(f"server exit status {status}")
    print(f"tsecho soak: {options['duration']:g} s, seed {options['seed']}")
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.sessions.items()))
    print(f"  sessions:        {sum(tally.sessions.values())} ({kinds})")
    print(f"  replies checked: {tally.replies_checked}")
    print(f"  errors:          {sum(tally.errors.values())}")
    for kind, count in sorted(tally.errors.items()):
        print(f"    {kind}: {count}")
    print(f"  max RSS:         {peak / 1024:.1f} MiB (limit {options['max-rss']} MiB)")
    print(f"  slowest polite round trip: {tally.slowest_round_trip * 1000:.0f} ms (limit 2000 ms)")
    if tally.flooded_bytes:
        most = max(tally.flooded_bytes) / 2**20
        print(f"  flooders:        {len(tally.flooded_bytes)} sessions, at most {most:.1f} MiB sent before stalling")
    print(f"  server fds:      {fds_before} before, {fds_after} after")
    print(f"  server exit:     {status}")
    verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
    print(verdict)
    return 1 if problems else 0


def stop(server: ServerProcess) -> int:
    """
    Stop the server with SIGTERM; its exit status, or -SIGKILL if it hung and was killed.
    """
    try:
        return server.stop(timeout=20.0)
    except subprocess.TimeoutExpired:
        return -signal.SIGKILL


def run_reactor(work: Callable[[Any], Coroutine[Any, Any, Tally]]) -> Tally:
    """
    Run C{work(reactor)} on the global reactor and return its result.
    """
    from twisted.internet import reactor

    result: list[Tally | Failure] = []

    def done(outcome: Tally | Failure) -> None:
        result.append(outcome)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(work(reactor)).addBoth(done))
    reactor.run()
    outcome = result[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    assert isinstance(outcome, Tally)
    return outcome


if __name__ == "__main__":
    sys.exit(main())
