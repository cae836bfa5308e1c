"""
Framing cost: tsecho's LineFramer against Twisted's stock line receivers.

Twisted's LineReceiver splits one line at a time off the front of its buffer
(twisted#6357) and both stock receivers re-scan their whole buffer on every
chunk (twisted#6356), so their cost grows with the square of the input in two
cases that a client controls:

- many lines in one chunk: time for N and for 4N lines;
- one long line trickled in tiny chunks: a line of the limit's length (16384
  bytes) in 1-byte and in 4-byte chunks.

A linear framer takes about 4x the time for 4x the input (and for 4x the
chunks); a quadratic one about 16x.  Run: python benchmarks/framing.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver

from tsecho.framing import LineFramer


class _Count:
    """
    Count lines; nothing else, so the framing is what gets timed.
    """

    lines = 0

    def lineReceived(self, line: bytes) -> None:
        self.lines += 1


class StockLineReceiver(_Count, LineReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 30


class StockLineOnlyReceiver(_Count, LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 30


class Framer(_Count, LineFramer):
    MAX_LENGTH = 1 << 30


RECEIVERS: list[tuple[str, Callable[[], _Count]]] = [
    ("tsecho LineFramer", Framer),
    ("Twisted LineReceiver", StockLineReceiver),
    ("Twisted LineOnlyReceiver", StockLineOnlyReceiver),
]


def feed(make: Callable[[], _Count], chunks: Iterable[bytes]) -> float:
    """
    Seconds that a new receiver takes to frame C{chunks} (best of 3).
    """
    chunks = list(chunks)
    best = float("inf")
    for _ in range(3):
        receiver = make()
        receiver.makeConnection(StringTransport())  # type: ignore[attr-defined]
        started = time.perf_counter()
        for chunk in chunks:
            receiver.dataReceived(chunk)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - started)
    return best


def many_lines(count: int) -> list[bytes]:
    return [(b"x" * 31 + b"\n") * count]


def trickled(length: int, size: int) -> list[bytes]:
    line = b"x" * length
    return [line[i : i + size] for i in range(0, length, size)] + [b"\n"]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    limit = 16384
    print(
        f"{'receiver':26} {'N lines':>10} {'4N lines':>10} {'ratio':>6}"
        f"   {'4 KiB/1 B':>10} {'16 KiB/1 B':>10} {'ratio':>6}   {'16 KiB/4 B':>10}"
    )
    for name, make in RECEIVERS:
        one, four = feed(make, many_lines(n)), feed(make, many_lines(4 * n))
        short, long = feed(make, trickled(limit // 4, 1)), feed(make, trickled(limit, 1))
        coarse = feed(make, trickled(limit, 4))
        print(
            f"{name:26} {one * 1e3:8.2f}ms {four * 1e3:8.2f}ms {four / one:5.1f}x"
            f"   {short * 1e3:8.2f}ms {long * 1e3:8.2f}ms {long / short:5.1f}x   {coarse * 1e3:8.2f}ms"
        )
    print(f"\nN = {n} lines of 32 bytes in one chunk; one line of 4 KiB and of 16 KiB (the limit) in 1-byte")
    print("chunks, and of 16 KiB in 4-byte chunks. Linear cost: about 4x for 4x the input; quadratic: about 16x.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
