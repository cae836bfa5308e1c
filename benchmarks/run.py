"""
Benchmark tsecho against its peers on loopback, in one interleaved run.

C{python benchmarks/run.py [--quick]} compiles the C load generator
(C{benchmarks/loadgen.c}) and a C echo server with the system C{cc}, then, for
each of several rounds, starts every server in turn in a subprocess pinned
to CPU 0 and drives it from CPU 1 through every scenario.  It prints a table
of medians (min..max over the rounds), the ratios of tsecho to the baselines
measured in the same run, and the issue's targets; a full run also writes
C{docs/benchmark.md}, C{docs/benchmark.png} and C{docs/benchmark.json}
(a quick run writes them under C{benchmarks/build/}).

Absolute rates move a lot from run to run on a shared machine; the ratios
within one run are what the benchmark is for.
"""

# ruff: noqa: RUF001, PLW1509 -- the multiplication sign is meant; run.py starts no threads

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / "build"
SERVERS = HERE / "servers"
SERVER_CPU = 0
LOADGEN_CPU = 1

# Scenario name -> (loadgen arguments, the figure the table shows).
SCENARIOS: dict[str, list[str]] = {
    "pipelined": ["--scenario", "pipelined", "--conns", "50", "--inflight", "16"],
    "latency": ["--scenario", "latency"],
    "cpr": ["--scenario", "cpr", "--conns", "8"],
    "many": ["--scenario", "pipelined", "--conns", "1000", "--inflight", "1"],
}
IDLE_STAGES = (1000, 10000)
SWEEP = (1, 10, 100, 1000, 5000)


@dataclass
class Server:
    """
    A server under test: how to start it and which scenarios it takes part in.
    """

    name: str
    argv: Callable[[int], list[str]]
    scenarios: tuple[str, ...] = ("idle", "pipelined", "latency", "cpr", "many")
    reply_format: str = "line"
    env: dict[str, str] = field(default_factory=dict)
    sweep: bool = False
    logfile: bool = False
    pinned: bool = True  # else server and load generator share every CPU
    workers: int = 0  # worker processes (--workers N with N > 1), 0 for a lone process


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compile_c(source: Path, output: Path) -> None:
    BUILD.mkdir(exist_ok=True)
    if output.exists() and output.stat().st_mtime > source.stat().st_mtime:
        return
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(output), str(source)], check=True)


def twistd_argv(python: Path, *options: str) -> Callable[[int], list[str]]:
    twistd = python.parent / "twistd"

    def argv(port: int) -> list[str]:
        return [str(twistd), "-n", "--pidfile=", "tsecho", "--listen", f"tcp:{port}:interface=127.0.0.1", *options]

    return argv


def script_argv(python: Path, script: str, *options: str) -> Callable[[int], list[str]]:
    return lambda port: [str(python), str(SERVERS / script), str(port), *options]


def find_pypy(explicit: str | None) -> Path | None:
    """
    A PyPy with Twisted to run tsecho on: C{--pypy}, or a venv under
    C{benchmarks/build/pypy-venv}, made (with pip) if C{pypy3} is on the PATH.
    """
    if explicit:
        return Path(explicit)
    venv = BUILD / "pypy-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        pypy = shutil.which("pypy3")
        if pypy is None:
            return None
        # cryptography stopped shipping PyPy 3.9 wheels after 43.x and cannot
        # be built here without Rust crates: take wheels only, which settles on
        # Twisted 25.5 with TLS (tsecho's tap imports its TLS support).
        install = [
            "-m",
            "pip",
            "install",
            "-q",
            "--only-binary",
            "cryptography",
            "twisted[tls]",
            "attrs",
            "prometheus_client",
        ]
        progress(f"making a PyPy venv in {venv} (pip install twisted[tls] attrs prometheus_client)")
        try:
            subprocess.run([pypy, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), *install], check=True)
        except subprocess.CalledProcessError as e:
            progress(f"no PyPy: {e}")
            return None
    return python


def servers(pypy: Path | None) -> list[Server]:
    python = Path(sys.executable)
    # Run tsecho from this checkout, so the PyPy venv needs only Twisted and attrs.
    source = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    found = [
        Server("C epoll echo", lambda port: [str(BUILD / "c_echo"), str(port)], sweep=True),
        Server("asyncio Protocol (batching)", script_argv(python, "asyncio_protocol.py"), sweep=True),
        Server("asyncio streams", script_argv(python, "asyncio_streams.py")),
        Server("naive LineReceiver", script_argv(python, "naive_linereceiver.py"), sweep=True),
        Server("Twisted Protocol (batching)", script_argv(python, "twisted_protocol.py")),
        Server("Twisted Protocol (batching, direct send)", script_argv(python, "twisted_protocol.py", "--direct")),
        Server("socketserver original", script_argv(python, "socketserver_original.py"), ("cpr",), "repr"),
        Server("tsecho --quiet", twistd_argv(python, "--quiet"), env=source, sweep=True),
        Server("tsecho (logging)", twistd_argv(python), env=source, logfile=True),
        Server(
            "tsecho --quiet --metrics",
            twistd_argv(python, "--quiet", "--metrics", "tcp:0:interface=127.0.0.1"),
            env=source,
        ),
        *unpinned(python, "", source),
    ]
    if pypy is not None:
        found += [
            Server("tsecho --quiet, PyPy", twistd_argv(pypy, "--quiet"), env=source, sweep=True),
            Server("naive LineReceiver, PyPy", script_argv(pypy, "naive_linereceiver.py")),
            *unpinned(pypy, ", PyPy", source),
        ]
    return found


UNPINNED = ", unpinned"
WORKERS_1, WORKERS_2 = "tsecho --quiet --workers 1", "tsecho --quiet --workers 2"


def unpinned(python: Path, suffix: str, source: dict[str, str]) -> list[Server]:
    """
    Issue 12's servers: tsecho with one and with two worker processes, and
    the baselines it is reported against, all unpinned (server and load
    generator share the CPUs, as on a user's machine).
    """
    # Each of N workers admits 1/N of --max-connections: room for the idle
    # stage's 10,000 connections however the kernel spreads them.
    limit = ("--quiet", "--max-connections", "20000")
    found = [
        Server(f"{WORKERS_1}{suffix}{UNPINNED}", twistd_argv(python, *limit), env=source, pinned=False),
        Server(
            f"{WORKERS_2}{suffix}{UNPINNED}",
            twistd_argv(python, *limit, "--workers", "2"),
            env=source,
            pinned=False,
            workers=2,
        ),
    ]
    if not suffix:
        found += [
            Server(f"asyncio Protocol (batching){UNPINNED}", script_argv(python, "asyncio_protocol.py"), pinned=False),
            Server(
                f"socketserver original{UNPINNED}",
                script_argv(python, "socketserver_original.py"),
                ("cpr",),
                "repr",
                pinned=False,
            ),
        ]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(cpu: int) -> Callable[[], None]:
    return lambda: os.sched_setaffinity(0, {cpu})


@contextmanager
def running(server: Server, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """
    Start C{server} on a free loopback port pinned to L{SERVER_CPU}; stop it after.
    """
    port = free_port()
    argv = server.argv(port)
    if server.logfile:
        argv[1:1] = ["--logfile", str(workdir / "tsecho.log")]
    process = subprocess.Popen(
        argv,
        cwd=workdir,
        env={**os.environ, **server.env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=pin(SERVER_CPU) if server.pinned else None,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise RuntimeError(f"{server.name} exited with {process.returncode}: {err[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not listen on {port}") from None
                time.sleep(0.05)
        if server.workers:
            settle(process.pid, server.workers)  # the main process listens before its workers serve
        yield process, port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        (workdir / "tsecho.log").unlink(missing_ok=True)


def rss_kib(pid: int, top: bool = True) -> int:
    """
    The resident memory of C{pid} and its children (the workers of C{--workers N}).
    A child without memory (exiting, or exited and not yet reaped, as the
    check-mode worker that C{--workers} runs first) counts for nothing.
    """
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) + sum(rss_kib(child, False) for child in children(pid))
    if top:
        raise RuntimeError(f"no VmRSS for {pid} (has the server exited?)")
    return 0


def process_cpu(pid: int) -> float | None:
    """
    The CPU time (user + system) process C{pid} has used so far (a zombie's
    too), or C{None} if it is gone.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def tree_cpu(pid: int) -> dict[int, float]:
    """
    The CPU time of C{pid} and of each of its descendants (the workers of
    C{--workers N}) so far, by PID; processes that vanish meanwhile are left out.
    """
    own = process_cpu(pid)
    if own is None:
        return {}
    found = {pid: own}
    for child in children(pid):
        found.update(tree_cpu(child))
    return found


def children(pid: int) -> list[int]:
    """
    The child processes of C{pid} (for C{--workers N}: its workers).
    """
    found: list[int] = []
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


def descriptors_per_worker(pid: int) -> dict[int, int]:
    """
    The open descriptors of each worker of C{pid} (none for a lone process):
    less the count before, how many connections each worker holds.
    """
    found = {}
    for child in children(pid):
        with suppress(OSError):
            found[child] = len(os.listdir(f"/proc/{child}/fd"))
    return found


def connections_since(pid: int, before: dict[int, int]) -> list[int]:
    """
    How many connections each worker of C{pid} holds now that it did not
    hold when it had C{before} descriptors.
    """
    now = descriptors_per_worker(pid)
    return [now[child] - count for child, count in before.items() if child in now]


def settle(pid: int, workers: int, timeout: float = 60.0) -> None:
    """
    Wait until server C{pid} runs its C{workers} workers (0: a lone process)
    and no process of it uses CPU time any more: every worker has started
    and serves, and the server is idle (a PyPy worker takes seconds to start).
    """
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        used = tree_cpu(pid)
        total = sum(used.values()) if len(used) == workers + 1 else None
        if total is not None and last is not None and total - last < 0.02:
            return
        last = total
        time.sleep(0.3)
    progress(f"warning: server {pid} did not settle in {timeout:.0f} s (workers wanted: {workers})")


@dataclass
class Window:
    """
    CPU time sampled while the load generator runs, to cut out its timed
    window: its connection setup and warm-up (seconds, with 1,000
    connections against a listen backlog that overflows) are not what its
    rate measures.
    """

    server: int
    samples: list[tuple[float, dict[int, float], float]] = field(default_factory=list)
    descriptors: dict[int, int] = field(default_factory=dict)

    def sample(self, loadgen: int) -> None:
        self.samples.append((time.monotonic(), tree_cpu(self.server), process_cpu(loadgen) or 0.0))

    def at(self, moment: float, read: Callable[[tuple[float, dict[int, float], float]], float]) -> float:
        """
        C{read} of the samples, interpolated at C{moment}.
        """
        previous = self.samples[0]
        for sample in self.samples:
            if sample[0] >= moment:
                if sample[0] == previous[0]:
                    return read(sample)
                part = (moment - previous[0]) / (sample[0] - previous[0])
                return read(previous) + part * (read(sample) - read(previous))
            previous = sample
        return read(self.samples[-1])

    def used(self, seconds: float, read: Callable[[tuple[float, dict[int, float], float]], float]) -> float:
        """
        C{read}'s growth over the last C{seconds} before the last sample, per second.
        """
        end = self.samples[-1][0]
        return (self.at(end, read) - self.at(end - seconds, read)) / seconds


def loadgen(
    port: int,
    args: list[str],
    timing: tuple[float, float],
    reply_format: str,
    *,
    pinned: bool = True,
    server: int | None = None,
) -> dict[str, Any]:
    """
    Run the load generator once; its JSON result, plus C{loadgen_cpu}: the
    share of its core it used (well under 1.0 means it was not the
    bottleneck).  Given the C{server}'s PID, also C{server_cpu} (its share of
    one core, all its processes), and with workers, C{worker_cpu} (each
    one's CPU seconds) and C{worker_conns} (the connections each held at
    the end): all over the load generator's timed window only.
    """
    duration, warmup = timing
    argv = [str(BUILD / "loadgen"), "--port", str(port), *args]
    argv += ["--duration", str(duration), "--warmup", str(warmup), "--format", reply_format]
    window = Window(server or 0, descriptors=descriptors_per_worker(server) if server else {})
    gen = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pin(LOADGEN_CPU) if pinned else None
    )
    assert gen.stdout is not None
    conns: list[int] = []
    with selectors.DefaultSelector() as ready:
        ready.register(gen.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + duration + warmup + 120
        # Its result is written as it exits (a pipe is block-buffered): the
        # moment stdout becomes readable is the end of its timed window.
        while not ready.select(0.05):
            window.sample(gen.pid)
            if server and window.descriptors:
                conns = connections_since(server, window.descriptors)
            if time.monotonic() > deadline:
                gen.kill()
        window.sample(gen.pid)
    out, err = gen.communicate(timeout=30)
    if gen.returncode:
        raise subprocess.CalledProcessError(gen.returncode, argv, out, err)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    seconds = result["seconds"]
    result["loadgen_cpu"] = window.used(seconds, lambda s: s[2])
    if server:
        result["server_cpu"] = window.used(seconds, lambda s: sum(s[1].values()))
        workers = [child for child in window.samples[-1][1] if child != server]
        if workers:
            result["worker_cpu"] = [window.used(seconds, lambda s, c=c: s[1].get(c, 0.0)) for c in workers]  # type: ignore[misc]
            result["worker_conns"] = conns
    return result


def idle_memory(process: subprocess.Popen[bytes], port: int, server: Server) -> dict[str, Any]:
    """
    RSS growth per connection over 1,000 and 10,000 idle connections (one
    line exchanged on each), from the server's VmRSS; with workers, also how
    the 1,000 connections were split among them.
    """
    loadgen(
        port, ["--scenario", "pipelined", "--conns", "10", "--inflight", "4"], (0.3, 0.0), "line", pinned=server.pinned
    )
    settle(process.pid, server.workers)
    base = rss_kib(process.pid)
    base_fds = descriptors_per_worker(process.pid)
    stages = ",".join(map(str, IDLE_STAGES))
    gen = subprocess.Popen(
        [str(BUILD / "loadgen"), "--port", str(port), "--scenario", "idle", "--stages", stages],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        preexec_fn=pin(LOADGEN_CPU) if server.pinned else None,
    )
    assert gen.stdin is not None
    assert gen.stdout is not None
    result: dict[str, Any] = {"errors": 0}
    try:
        for count in IDLE_STAGES:
            stage = json.loads(gen.stdout.readline())
            time.sleep(0.5)  # let the server finish its work on the last batch
            result[f"kib_{count}"] = (rss_kib(process.pid) - base) / count
            if base_fds and count == IDLE_STAGES[0]:
                result["split"] = connections_since(process.pid, base_fds)
            result["errors"] = stage["errors"] + (stage["conns"] - stage["alive"])
            if stage["first_error"]:
                result["first_error"] = stage["first_error"]
            gen.stdin.write(b"next\n")
            gen.stdin.flush()
    finally:
        gen.stdin.close()
        gen.wait(30)
    time.sleep(1)  # the server closes 10,000 connections
    return result


def run_rounds(all_servers: list[Server], rounds: int, timing: tuple[float, float]) -> dict[str, dict[str, list[Any]]]:
    """
    Every server through every scenario, interleaved as finely as possible.
    Each round measures idle memory on a fresh server each, then starts every
    server side by side (idle ones cost nothing) and runs each scenario on
    every server in turn, so the figures compared in a ratio are measured
    within seconds of each other.  The order flips every round.
    """
    results: dict[str, dict[str, list[Any]]] = {s.name: {} for s in all_servers}
    broken: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="tsecho-bench-") as tmp:
        for r in range(1, rounds + 1):
            label = f"[round {r}/{rounds}]"
            order = [s for s in (all_servers if r % 2 else reversed(all_servers)) if s.name not in broken]
            # Memory first, each server fresh and alone: a heap that has already
            # served load grows differently, and 10,000 connections just closed
            # slow the next scenario down.
            for index, server in enumerate(order):
                if "idle" not in server.scenarios:
                    continue
                workdir = Path(tmp) / f"idle{index}"
                workdir.mkdir(exist_ok=True)
                try:
                    with running(server, workdir) as fresh:
                        run_one(server, "idle", live=fresh, round_number=r, label=label, timing=timing, results=results)
                except RuntimeError as e:
                    progress(f"{label} {server.name}: FAILED to start, left out: {e}")
                    broken.add(server.name)
            order = [s for s in order if s.name not in broken]
            with ExitStack() as stack:
                live: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
                for index, server in enumerate(order):
                    workdir = Path(tmp) / str(index)
                    workdir.mkdir(exist_ok=True)
                    try:
                        live[server.name] = stack.enter_context(running(server, workdir))
                    except RuntimeError as e:
                        progress(f"{label} {server.name}: FAILED to start, left out: {e}")
                        broken.add(server.name)
                for scenario in ("pipelined", "latency", "cpr", "many"):
                    for server in order:
                        if scenario in server.scenarios and server.name in live:
                            run_one(
                                server,
                                scenario,
                                live=live[server.name],
                                round_number=r,
                                label=label,
                                timing=timing,
                                results=results,
                            )
    return {name: res for name, res in results.items() if name not in broken}


def run_one(
    server: Server,
    scenario: str,
    *,
    live: tuple[subprocess.Popen[bytes], int],
    round_number: int,
    label: str,
    timing: tuple[float, float],
    results: dict[str, dict[str, list[Any]]],
) -> None:
    """
    One scenario on one running server; its result is added to C{results}.
    """
    process, port = live
    started = time.monotonic()
    try:
        if scenario == "idle":
            result = idle_memory(process, port, server)
        else:
            result = loadgen(
                port, SCENARIOS[scenario], timing, server.reply_format, pinned=server.pinned, server=process.pid
            )
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        progress(f"{label} {server.name} {scenario}: FAILED: {e}")
        return
    result["round"] = round_number
    results[server.name].setdefault(scenario, []).append(result)
    progress(
        f"{label} {server.name:28} {scenario:9} {describe(scenario, result)}  ({time.monotonic() - started:.1f} s)"
    )


def describe(scenario: str, result: dict[str, Any]) -> str:
    errors = f", {result['errors']} errors ({result.get('first_error', '')})" if result["errors"] else ""
    if scenario == "idle":
        return f"{result['kib_1000']:.2f} KiB/conn at 1k, {result['kib_10000']:.2f} at 10k{errors}"
    cpu = f"  [CPU: server {result['server_cpu']:.0%}, load generator {result['loadgen_cpu']:.0%}]"
    if scenario == "latency":
        return f"p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us{errors}{cpu}"
    if scenario == "cpr":
        return f"{result['conn_rate']:,.0f} conns/s{errors}{cpu}"
    return f"{result['rate']:,.0f} replies/s{errors}{cpu}"


def run_sweep(all_servers: list[Server], timing: tuple[float, float], points: tuple[int, ...]) -> dict[str, Any]:
    """
    Throughput and server RSS against the number of connections (1 in flight each).
    """
    sweep: dict[str, Any] = {}
    duration, warmup = timing
    with tempfile.TemporaryDirectory(prefix="tsecho-sweep-") as tmp:
        for server in all_servers:
            if not server.sweep:
                continue
            rows = []
            with running(server, Path(tmp)) as (process, port):
                for n in points:
                    argv = [str(BUILD / "loadgen"), "--port", str(port), "--scenario", "pipelined"]
                    argv += ["--conns", str(n), "--inflight", "1", "--duration", str(duration)]
                    argv += ["--warmup", str(warmup)]
                    gen = subprocess.Popen(argv, stdout=subprocess.PIPE, preexec_fn=pin(LOADGEN_CPU))
                    # Sample RSS while the load runs.
                    peak = 0
                    while gen.poll() is None:
                        peak = max(peak, rss_kib(process.pid))
                        time.sleep(0.1)
                    assert gen.stdout is not None
                    result = json.loads(gen.stdout.read().decode().strip().splitlines()[-1])
                    result["rss_mib"] = peak / 1024
                    rows.append(result)
                    progress(
                        f"[sweep] {server.name:28} {n:5} conns: {result['rate']:,.0f} replies/s, "
                        f"RSS {peak / 1024:.1f} MiB, {result['errors']} errors"
                    )
            sweep[server.name] = rows
    return sweep


# Reporting.


FIGURE_KEYS = {"pipelined": "rate", "many": "rate", "cpr": "conn_rate", "latency": "p50_us"}


def figure(results: dict[str, list[Any]], scenario: str) -> list[float]:
    return [r[FIGURE_KEYS[scenario]] for r in results.get(scenario, [])]


def median_of(results: dict[str, dict[str, list[Any]]], server: str, scenario: str, key: str) -> float | None:
    """
    The median over rounds of C{key} in C{server}'s C{scenario} results.
    """
    return median([r[key] for r in results.get(server, {}).get(scenario, []) if key in r])


def cell(values: list[float], fmt: str = "{:,.0f}") -> str:
    if not values:
        return "—"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += f" ({fmt.format(min(values))}..{fmt.format(max(values))})"
    return text


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summary_table(results: dict[str, dict[str, list[Any]]]) -> str:
    head = (
        "| server | pipelined 50×16, replies/s | latency p50 / p99, µs | connect-per-request, conns/s "
        "| 1000 conns × 1, replies/s | KiB per idle conn (1k / 10k) | errors |"
    )
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, res in results.items():
        p99 = [r["p99_us"] for r in res.get("latency", [])]
        latency = f"{cell(figure(res, 'latency'))} / {cell(p99)}" if p99 else "—"
        idle = res.get("idle", [])
        memory = (
            f"{cell([r['kib_1000'] for r in idle], '{:.2f}')} / {cell([r['kib_10000'] for r in idle], '{:.2f}')}"
            if idle
            else "—"
        )
        errors = sum(r["errors"] for rs in res.values() for r in rs)
        lines.append(
            f"| {name} | {cell(figure(res, 'pipelined'))} | {latency} | {cell(figure(res, 'cpr'))} "
            f"| {cell(figure(res, 'many'))} | {memory} | {errors} |"
        )
    return "\n".join(lines)


def cpu_table(results: dict[str, dict[str, list[Any]]]) -> str:
    """
    How busy each side was: the server's core and the load generator's, as a
    share of one core (medians).  A server at about 100 % with the load
    generator well below it means the server was the bottleneck.
    """
    scenarios = ("pipelined", "cpr", "many")
    lines = [
        "| server | pipelined: server / load generator | connect-per-request | 1000 conns |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in results:
        cells = []
        for scenario in scenarios:
            server = median_of(results, name, scenario, "server_cpu")
            load = median_of(results, name, scenario, "loadgen_cpu")
            cells.append(f"{server:.0%} / {load:.0%}" if server is not None and load is not None else "—")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def ratio(results: dict[str, dict[str, list[Any]]], a: str, b: str, scenario: str) -> float | None:
    """
    The median over rounds of C{a}'s figure divided by C{b}'s from the same round.
    """
    key = FIGURE_KEYS[scenario]
    theirs = {r["round"]: r[key] for r in results.get(b, {}).get(scenario, [])}
    pairs = [r[key] / theirs[r["round"]] for r in results.get(a, {}).get(scenario, []) if theirs.get(r["round"])]
    return median(pairs)


def ratio_table(results: dict[str, dict[str, list[Any]]]) -> str:
    subjects = [n for n in results if n.startswith("tsecho")]
    baselines = [n for n in results if not n.startswith("tsecho")]
    lines = [
        "| tsecho ÷ baseline | pipelined | latency p50 (lower is better) | connect-per-request | 1000 conns |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for s in subjects:
        for b in baselines:
            if s.endswith(UNPINNED) != b.endswith(UNPINNED):
                continue
            cells = []
            for scenario in ("pipelined", "latency", "cpr", "many"):
                value = ratio(results, s, b, scenario)
                cells.append(f"{value:.2f}×" if value else "—")
            lines.append(f"| {s} ÷ {b} | {' | '.join(cells)} |")
    return "\n".join(lines)


def per_cpu_ratio(results: dict[str, dict[str, list[Any]]], a: str, b: str, scenario: str) -> float | None:
    """
    Like L{ratio}, but of work per second of the server's own CPU time: a
    figure that a machine busy with other work disturbs much less.
    """
    key = FIGURE_KEYS[scenario]

    def per_round(server: str) -> dict[int, float]:
        return {
            r["round"]: r[key] / r["server_cpu"] for r in results.get(server, {}).get(scenario, []) if r["server_cpu"]
        }

    theirs, ours = per_round(b), per_round(a)
    return median([value / theirs[n] for n, value in ours.items() if theirs.get(n)])


def cost_table(results: dict[str, dict[str, list[Any]]]) -> str:
    """
    What logging (the default) and metrics cost: each against C{--quiet}, same
    rounds; by rate, and by work per second of the server's CPU time.
    """
    lines = [
        "| tsecho ÷ tsecho --quiet | pipelined | connect-per-request | pipelined, per server CPU second"
        " | connect-per-request, per server CPU second |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in ("tsecho (logging)", "tsecho --quiet --metrics"):
        cells = [ratio(results, name, "tsecho --quiet", scenario) for scenario in ("pipelined", "cpr")]
        cells += [per_cpu_ratio(results, name, "tsecho --quiet", scenario) for scenario in ("pipelined", "cpr")]
        lines.append(f"| {name} | {' | '.join(f'{v:.2f}×' if v else '—' for v in cells)} |")
    return "\n".join(lines)


CEILING = "Twisted Protocol (batching, direct send)"


def target_table(results: dict[str, dict[str, list[Any]]]) -> str:
    """
    Issue 6's targets: tsecho's figure, whether it is met, and what the
    ceiling server (the asyncio baseline's code on Twisted's reactor, sending
    straight to the socket) reaches on the same target, which bounds what
    any server on Twisted's reactor can.
    """
    t = "tsecho --quiet"
    proto, naive, orig = "asyncio Protocol (batching)", "naive LineReceiver", "socketserver original"

    def against(baseline: str, scenario: str) -> Callable[[str], float | None]:
        return lambda server: ratio(results, server, baseline, scenario)

    checks: list[tuple[str, Callable[[str], float | None], Callable[[float], bool]]] = [
        ("pipelined ≥ 1.0× asyncio Protocol", against(proto, "pipelined"), lambda v: v >= 1.0),
        ("pipelined ≥ 3× naive LineReceiver", against(naive, "pipelined"), lambda v: v >= 3.0),
        ("connect-per-request ≥ 1.3× naive LineReceiver", against(naive, "cpr"), lambda v: v >= 1.3),
        ("connect-per-request vs the original socketserver", against(orig, "cpr"), lambda v: v >= 1.0),
        ("1000 conns ≥ 1.0× asyncio Protocol", against(proto, "many"), lambda v: v >= 1.0),
        ("latency p50 ≤ 1.2× asyncio Protocol", against(proto, "latency"), lambda v: v <= 1.2),
        (
            "memory ≤ 2 KiB per idle connection (10k, timeout on)",
            lambda server: median_of(results, server, "idle", "kib_10000"),
            lambda v: v <= 2.0,
        ),
        (
            "load generator not the bottleneck: C echo ≥ 2× tsecho pipelined",
            lambda server: ratio(results, "C epoll echo", t, "pipelined") if server == t else None,
            lambda v: v >= 2.0,
        ),
        (
            "load generator not the bottleneck: its CPU while driving tsecho pipelined < 0.8 of a core",
            lambda server: median_of(results, t, "pipelined", "loadgen_cpu") if server == t else None,
            lambda v: v < 0.8,
        ),
    ]
    lines = [
        "| target | tsecho --quiet | met | Twisted ceiling (same target) |",
        "| --- | ---: | :---: | ---: |",
    ]
    for text, measure, ok in checks:
        unit = " KiB" if "KiB" in text else " of a core" if "CPU" in text else "×"
        value, ceiling = measure(t), measure(CEILING)
        shown = [f"{v:.2f}{unit}" if v is not None else "—" for v in (value, ceiling)]
        met = "—" if value is None else "yes" if ok(value) else "no"
        lines.append(f"| {text} | {shown[0]} | {met} | {shown[1]} |")
    return "\n".join(lines)


# How the work split between two workers: (scenario, result key, what the row says).
SPLITS = (
    ("idle", "split", "connections, 1,000 idle ones opened 32 at a time"),
    ("pipelined", "worker_conns", "connections, pipelined: 50 opened at once"),
    ("many", "worker_conns", "connections, 1000 conns: opened 100 at a time"),
    ("cpr", "worker_cpu", "CPU time, connect-per-request (steady arrivals; each connection costs the same)"),
    ("many", "worker_cpu", "CPU time, 1000 conns (steady load)"),
)


def workers_table(results: dict[str, dict[str, list[Any]]]) -> str:
    """
    Issue 12's targets: C{--workers 2} against C{--workers 1}, both unpinned;
    server CPU time per reply (all processes) against one worker's; how the
    connections were split; and C{--workers 2} against the unpinned baselines.
    """
    lines = ["| measure | figure | target | met |", "| --- | ---: | ---: | :---: |"]
    for suffix in ("", ", PyPy"):
        two, one = f"{WORKERS_2}{suffix}{UNPINNED}", f"{WORKERS_1}{suffix}{UNPINNED}"
        if two not in results or one not in results:
            continue
        rows: list[tuple[str, float | None, str, Callable[[float], bool] | None]] = [
            (f"{two} ÷ {one}: pipelined", ratio(results, two, one, "pipelined"), "≥ 1.3×", lambda v: v >= 1.3),
            (f"{two} ÷ {one}: 1000 conns", ratio(results, two, one, "many"), "≥ 1.3×", lambda v: v >= 1.3),
            (f"{two} ÷ {one}: connect-per-request", ratio(results, two, one, "cpr"), "≥ 1.1×", lambda v: v >= 1.1),
        ]
        for scenario in ("pipelined", "cpr", "many"):
            per_reply = [cpu_per_reply(results, name, scenario) for name in (two, one)]
            value = per_reply[0] / per_reply[1] if per_reply[0] and per_reply[1] else None
            rows.append((f"server CPU per reply, {scenario}: 2 workers ÷ 1", value, "≤ 1.1×", lambda v: v <= 1.1))
        if suffix == "":
            for baseline in (f"asyncio Protocol (batching){UNPINNED}", f"socketserver original{UNPINNED}"):
                for scenario in ("pipelined", "cpr", "many"):
                    value = ratio(results, two, baseline, scenario)
                    if value is not None:
                        rows.append((f"{two} ÷ {baseline}: {scenario}", value, "report", None))
        for text, value, target, ok in rows:
            shown = f"{value:.2f}×" if value is not None else "—"
            met = "—" if value is None or ok is None else "yes" if ok(value) else "no"
            lines.append(f"| {text} | {shown} | {target} | {met} |")
        for scenario, key, load in SPLITS:
            splits = [r[key] for r in results[two].get(scenario, []) if len(r.get(key, [])) == 2 and sum(r[key]) > 0]
            shares = [f"{max(s) / sum(s):.0%} / {min(s) / sum(s):.0%}" for s in splits]
            met = "—" if not splits else "yes" if all(0.4 <= max(s) / sum(s) <= 0.6 for s in splits) else "no"
            lines.append(f"| {two}: {load} (busiest / other worker) | {', '.join(shares) or '—'} | 40–60 % | {met} |")
    return "\n".join(lines)


def cpu_per_reply(results: dict[str, dict[str, list[Any]]], server: str, scenario: str) -> float | None:
    """
    The median over rounds of the server's CPU seconds (all its processes)
    per reply.
    """
    return median([r["server_cpu"] / r["rate"] for r in results.get(server, {}).get(scenario, []) if r.get("rate")])


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import twisted

    load = os.getloadavg()
    return (
        f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}; "
        f"CPython {platform.python_version()}, Twisted {twisted.__version__}; "
        f"load average at the end {load[0]:.2f}"
    )


def plot(sweep: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, rows in sweep.items():
        conns = [r["conns"] for r in rows]
        left.plot(conns, [r["rate"] for r in rows], marker="o", label=name)
        right.plot(conns, [r["rss_mib"] for r in rows], marker="o", label=name)
    for ax, title, unit in ((left, "throughput", "replies/s"), (right, "server memory (RSS)", "MiB")):
        ax.set_xscale("log")
        ax.set_xlabel("connections (1 line in flight each)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(results: dict[str, dict[str, list[Any]]], sweep: dict[str, Any], rounds: int, out: Path) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""# Benchmark

Made by `python benchmarks/run.py` (`tox -e bench`) on {when}: {machine()}.
Each server on CPU 0, the C load generator on CPU 1, loopback; {rounds} round(s), each running
every scenario on every server in turn (servers side by side, idle ones cost nothing);
medians with (min..max). Every reply is checked; errors are counted.

## Results

{summary_table(results)}

## CPU use (share of one core, medians)

{cpu_table(results)}

## Ratios (median of per-round ratios)

{ratio_table(results)}

## What logging and metrics cost (issue 13: logging ≥ 0.8× connect-per-request, ≥ 0.95× pipelined; metrics ≥ 0.95×)

{cost_table(results)}

## Targets (issue 6)

{target_table(results)}

## Workers (issue 12), unpinned: server and load generator share both CPUs

{workers_table(results)}

## Scaling

![throughput and memory against connections](benchmark.png)
"""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.md").write_text(text)
    (out / "benchmark.json").write_text(json.dumps({"results": results, "sweep": sweep}, indent=1) + "\n")
    if sweep:
        plot(sweep, out / "benchmark.png")
    return text


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(wanted, soft), max(wanted, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one short round (about 3 minutes)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, 1 with --quick)")
    parser.add_argument("--only", action="append", help="run only servers whose name contains this (repeatable)")
    parser.add_argument("--pypy", help="a PyPy interpreter with Twisted and attrs (default: make a venv)")
    parser.add_argument("--no-pypy", action="store_true", help="leave PyPy out")
    parser.add_argument("--no-sweep", action="store_true", help="skip the scaling sweep")
    parser.add_argument("--output", type=Path, help="where to write benchmark.md/.png/.json")
    options = parser.parse_args(argv)
    # Stop cleanly on SIGTERM too: the servers are stopped in finally blocks.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(1))

    if len(os.sched_getaffinity(0)) < 2:
        progress("warning: fewer than 2 CPUs; server and load generator will share one")
    raise_fd_limit(max(IDLE_STAGES) * 2 + 1024)
    compile_c(HERE / "loadgen.c", BUILD / "loadgen")
    compile_c(SERVERS / "c_echo.c", BUILD / "c_echo")
    pypy = None if options.no_pypy else find_pypy(options.pypy)
    all_servers = servers(pypy)
    if options.only:
        all_servers = [s for s in all_servers if any(o in s.name for o in options.only)]
    rounds = options.rounds or (1 if options.quick else 3)
    timing = (1.0, 0.5) if options.quick else (3.0, 1.0)
    points = (1, 100, 1000) if options.quick else SWEEP
    output = options.output or (BUILD if options.quick else ROOT / "docs")

    started = time.monotonic()
    results = run_rounds(all_servers, rounds, timing)
    sweep = {} if options.no_sweep else run_sweep(all_servers, (1.0, 0.5) if options.quick else (2.0, 1.0), points)
    text = report(results, sweep, rounds, output)
    print(text)
    progress(f"done in {time.monotonic() - started:.0f} s; wrote {output}/benchmark.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
