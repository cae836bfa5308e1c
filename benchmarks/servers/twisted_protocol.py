"""
Baseline: the asyncio batching server's work per chunk (C{batching.py}) on
Twisted's reactor.

A plain C{Protocol} with no limits, timeouts, half-close or logging: the
per-chunk and per-connection cost of the reactor itself, next to the same
code on asyncio.  With C{--direct} it sends on the socket at once instead of
through C{transport.write} (tsecho's trick, without its fallback), which
makes it the ceiling for any server on Twisted's reactor.
"""

import contextlib
import sys

from batching import answer
from twisted.internet import protocol, reactor

DIRECT = "--direct" in sys.argv


class Echo(protocol.Protocol):
    buffer = b""

    def connectionMade(self) -> None:
        self.send = self.transport.getHandle().send if DIRECT else self.transport.write

    def dataReceived(self, data: bytes) -> None:
        self.buffer, replies = answer(self.buffer, data)
        if replies:
            # Direct, a short send would lose data (none on this loopback load);
            # a reset from the load generator is the reactor's to see next.
            with contextlib.suppress(OSError):
                self.send(replies)


reactor.listenTCP(int(sys.argv[1]), protocol.ServerFactory.forProtocol(Echo), interface="127.0.0.1")
reactor.run()
