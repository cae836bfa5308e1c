"""
In-process costs of tsecho's data path, without sockets: time per line, time
per connection, and Python heap per idle connection (C{tracemalloc}).

C{python benchmarks/micro.py} prints one line per figure.  The fake transport
(L{StringTransport}) costs little, so these figures isolate tsecho's own
Python work from the reactor's and the kernel's; use them to compare changes
to C{framing.py} and C{protocol.py}.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from tsecho.protocol import ServerConfig, TimestampEcho, TimestampEchoFactory
from tsecho.timestamps import Timestamper


def factory(**config: object) -> TimestampEchoFactory:
    return TimestampEchoFactory(ServerConfig(quiet=True, **config), Timestamper(), MemoryReactorClock())  # type: ignore[arg-type]


def connect(f: TimestampEchoFactory, port: int = 5555) -> tuple[TimestampEcho, StringTransport]:
    protocol = f.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    assert isinstance(protocol, TimestampEcho)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
    protocol.makeConnection(transport)
    return protocol, transport


def best_of(runs: int, work: Callable[[], int]) -> float:
    """
    The best seconds per unit of C{work} (which returns how many units it did).
    """
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        units = work()
        best = min(best, (time.perf_counter() - started) / units)
    return best


def per_line(lines_per_chunk: int) -> float:
    f = factory()
    protocol, transport = connect(f)
    chunk = b"".join(b"%030d\n" % i for i in range(lines_per_chunk))

    def work() -> int:
        for _ in range(20000 // lines_per_chunk):
            protocol.dataReceived(chunk)
            transport.clear()
            f.clock.advance(0)  # type: ignore[attr-defined]  # a reactor turn: budgets renew
        return (20000 // lines_per_chunk) * lines_per_chunk

    return best_of(5, work)


def per_connection() -> float:
    f = factory()

    def work() -> int:
        for i in range(5000):
            protocol, _transport = connect(f, i)
            protocol.dataReceived(b"hello\r\n")
            protocol.connectionLost()
            f.clock.advance(0)  # type: ignore[attr-defined]  # a reactor turn: budgets renew
        return 5000

    return best_of(5, work)


def heap_per_idle_connection(count: int = 2000) -> float:
    f = factory()
    keep = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        protocol, transport = connect(f, i)
        protocol.dataReceived(b"hello\r\n")
        transport.clear()
        keep.append((protocol, transport))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    # Subtract what the fake transport itself holds.
    transports = []
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        transports.append(StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", i)))
    fake = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return (after - before - fake) / count


def main() -> None:
    for n in (1, 16, 256):
        print(f"per line, {n:3} lines per chunk: {per_line(n) * 1e9:7.0f} ns")
    print(f"per connection (connect, one line, close): {per_connection() * 1e6:7.2f} us")
    print(f"Python heap per idle connection (timeout on): {heap_per_idle_connection():7.0f} bytes")


if __name__ == "__main__":
    main()
