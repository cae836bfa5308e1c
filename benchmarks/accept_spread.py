"""
How evenly do two worker processes share new connections, and at what CPU
cost: one listening socket shared by both, with Twisted's accept loop as
it is (up to 100 connections per wake-up), or a few per wake-up, or by the
connections each holds (L{tsecho._accept}: what C{twistd tsecho --workers
N} does); or one C{SO_REUSEPORT} socket each; against one process alone?

C{python benchmarks/accept_spread.py [SECONDS] [ROUNDS] [LOAD]} starts two
processes running tsecho's factory on Twisted's reactor, for each load of
C{benchmarks/loadgen.c} (run C{benchmarks/run.py} once to build it) and
each way of sharing in turn (so the rates compared are measured seconds
apart; LOAD: only the loads whose name contains it), and prints each
process's share of the connections and the rate.
Unpinned, like a user's machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "build" / "loadgen"
LOADS = {
    "50 connections opened at once (pipelined, 16 lines in flight)": [
        "--scenario",
        "pipelined",
        "--conns",
        "50",
        "--inflight",
        "16",
    ],
    "1,000 connections opened 100 at a time (1 line in flight)": [
        "--scenario",
        "pipelined",
        "--conns",
        "1000",
        "--inflight",
        "1",
    ],
    "1,000 idle connections opened 32 at a time": ["--scenario", "idle", "--stages", "1000"],
    "connections one after another (1 client)": ["--scenario", "cpr", "--conns", "1"],
    "connect-per-request, 8 clients": ["--scenario", "cpr", "--conns", "8"],
}
# How the processes share the port -> connections each accepts per wake-up
# (None: as many as Twisted's accept loop takes; BALANCED: tsecho._accept).
BALANCED = -1
MODES: dict[str, int | None] = {
    "shared socket, Twisted's accept loop": None,
    "shared socket, 2 per wake-up": 2,
    "shared socket, least connections (--workers)": BALANCED,
    "SO_REUSEPORT": None,
    "one process": None,
}


def serve(listening: socket.socket, report: int, turns: int | None, board: Any, row: int) -> None:
    """
    In a child process: serve C{listening} with tsecho's factory until
    SIGTERM, then write to C{report} how many connections it accepted and
    the CPU time it used meanwhile.
    With C{turns}, accept that many per wake-up (Twisted's C{numberAccepts},
    reset before each); with L{BALANCED}, balance as a worker does, in
    C{row} of C{board}.
    """
    from twisted.internet import reactor

    from tsecho._accept import Balancer
    from tsecho.protocol import ServerConfig, TimestampEchoFactory
    from tsecho.timestamps import Timestamper

    factory = TimestampEchoFactory(ServerConfig(quiet=True, max_connections=100000), Timestamper("ctime"), reactor)
    accepted = [0]
    build = factory.buildProtocol

    def counting(addr: Any) -> Any:
        accepted[0] += 1
        return build(addr)

    factory.buildProtocol = counting  # type: ignore[method-assign]
    listening.setblocking(False)
    port = reactor.adoptStreamPort(listening.fileno(), socket.AF_INET, factory)  # type: ignore[attr-defined]
    if turns == BALANCED:
        balancer = Balancer(board, row, reactor)
        balancer.holding = lambda: len(factory.connections)
        factory.on_release = balancer.released
        balancer.add(port)
        balancer.publish()
    elif turns:
        read = port.doRead

        def doRead() -> Any:
            port.numberAccepts = turns
            return read()

        port.doRead = doRead
    started = time.process_time()
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: os.write(report, b"%d %f\n" % (accepted[0], time.process_time() - started))
    )
    reactor.run()


def listener(port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def measure(mode: str, load: list[str], duration: float) -> tuple[list[int], float, float]:
    """
    Start two serving processes sharing a port as C{mode} says, drive them
    with C{load}; return each one's connection count, the reply rate, and
    the CPU time both used per connection.
    """
    from tsecho._accept import Board

    reuseport = mode == "SO_REUSEPORT"
    board = Board.create(2)
    sockets = [listener(0, reuseport)]
    port = sockets[0].getsockname()[1]
    if reuseport:
        sockets.append(listener(port, True))
    read, write = os.pipe()
    children = []
    for index in range(1 if mode == "one process" else 2):
        mine = sockets[index] if reuseport else sockets[0]
        pid = os.fork()
        if pid == 0:
            try:
                for other in sockets:
                    if other is not mine:
                        other.close()  # a reuseport socket nobody serves would take its share
                serve(mine, write, MODES[mode], board, index)
            finally:
                os._exit(0)
        children.append(pid)
    for sock in sockets:
        sock.close()
    board.close()
    time.sleep(1.5)
    argv = [str(LOADGEN), "--port", str(port), *load, "--duration", str(duration), "--warmup", "0.5"]
    # The idle load waits for a line before closing its connections: it has one.
    done = subprocess.run(argv, input=b"next\n", capture_output=True, check=True, timeout=duration + 120)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    for pid in children:
        os.waitpid(pid, 0)
    os.close(write)
    with os.fdopen(read) as counts:
        reports = [line.split() for line in counts.read().splitlines()]
    accepted = [int(count) for count, _ in reports]
    cpu = sum(float(used) for _, used in reports) / (sum(accepted) or 1)
    return accepted, float(result.get("rate") or result.get("conn_rate") or 0), cpu


def main() -> int:
    if not LOADGEN.exists():
        print("build the load generator first: python benchmarks/run.py --quick --only C", file=sys.stderr)
        return 1
    duration = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    loads = {name: load for name, load in LOADS.items() if len(sys.argv) < 4 or sys.argv[3] in name}
    print(
        "| load | sharing | connections: busiest / other process | busiest ÷ even share | rate | CPU per connection |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for _ in range(rounds):
        for name, load in loads.items():
            for mode in MODES:
                accepted, rate, cpu = measure(mode, load, duration)
                total = sum(accepted) or 1
                busiest = max(accepted)
                shown = f"{rate:,.0f}/s" if rate else "—"
                split = f"{busiest:,} / {min(accepted):,} | {busiest / (total / len(accepted)):.2f}"
                print(f"| {name} | {mode} | {split} | {shown} | {cpu * 1e6:,.0f} µs |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
