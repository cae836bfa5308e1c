"""
Baseline: the asyncio batching server's code on Twisted's reactor.

A plain C{Protocol} that splits each chunk into lines and answers all of a
chunk's lines with one write, with no limits, timeouts, half-close or
logging: the per-chunk and per-connection cost of the reactor itself, next to
the same code on asyncio.  With C{--direct} it sends on the socket at once
instead of through C{transport.write} (tsecho's trick, without its fallback),
which makes it the ceiling for any server on Twisted's reactor.
"""

import contextlib
import sys
import time

from twisted.internet import protocol, reactor

_cache = [-1, b""]
DIRECT = "--direct" in sys.argv


def prefix() -> bytes:
    now = int(time.time())
    if now != _cache[0]:
        _cache[0] = now
        _cache[1] = b"[" + time.ctime(now).encode() + b"] "
    return _cache[1]


class Echo(protocol.Protocol):
    buffer = b""

    def connectionMade(self) -> None:
        self.send = self.transport.getHandle().send if DIRECT else self.transport.write

    def dataReceived(self, data: bytes) -> None:
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        if not lines:
            return
        p = prefix()
        out = []
        for line in lines:
            if line.endswith(b"\r"):
                out += (p, line[:-1], b"\r\n")
            else:
                out += (p, line, b"\n")
        # Direct, a short send would lose data (none on this loopback load);
        # a reset from the load generator is the reactor's to see next.
        with contextlib.suppress(OSError):
            self.send(b"".join(out))


reactor.listenTCP(int(sys.argv[1]), protocol.ServerFactory.forProtocol(Echo), interface="127.0.0.1")
reactor.run()
