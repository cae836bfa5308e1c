"""
Workers take turns at a shared listening socket: each accepts at most
L{ACCEPTS_PER_WAKEUP} connections each time the reactor finds the socket
readable.  Private: it sets an attribute of Twisted's C{tcp.Port};
L{tsecho.worker} imports it (only workers share a listening socket), and
L{take_turns} checks at run time that the attribute is there.

Under C{--workers N} every worker's reactor watches the same listening
socket, and the kernel wakes them all when connections arrive.  Twisted's
C{tcp.Port.doRead} (also C{unix.Port}'s) then accepts up to
C{self.numberAccepts} connections in one go: 100 at first, 20 more each
time it took that many, else as many as it took last time.  So the first
worker to wake on a burst takes most of it (all 50 of 50 connections
opened at once, in C{benchmarks/accept_spread.py}) before the others get
to the socket.  Reset to L{ACCEPTS_PER_WAKEUP} before every C{doRead}, a
worker accepts that many, serves them, and goes back to its reactor, where
the socket is still readable if more are waiting: the workers awake at the
same time take turns.  Two per wake-up brought the busiest worker's
median share of a 50-connection burst from 98 % to 60 % (a worker that is
not running at that instant still gets none); one per wake-up spread no
better and cost 15 to 25 % more CPU time per connection under
connect-per-request load (a reactor turn per connection), two 0.95 to
1.32 times (median 1.08) that of Twisted's loop, at the same rate.

What it relies on, beyond Twisted's interfaces (C{tests/test_accept.py}'s
canary checks the behaviour on the installed Twisted): C{tcp.Port}'s
C{numberAccepts} attribute, an C{int} set by C{startListening}, is how many
connections C{doRead} accepts at most (checked on Twisted 23.10, 25.5
and 26.10).  If
a port has no such attribute, L{take_turns} leaves it as Twisted made it
and logs one warning per process.
"""

from __future__ import annotations

from typing import Any

import twisted
from twisted.logger import Logger

ACCEPTS_PER_WAKEUP = 2
"""
How many connections a worker accepts each time its reactor finds the
shared listening socket readable.
"""

log = Logger(namespace="tsecho.worker")
_warned: list[bool] = []


def take_turns(port: Any, accepts: int = ACCEPTS_PER_WAKEUP) -> bool:
    """
    Make the listening C{port} (a C{tcp.Port} or C{unix.Port} the reactor
    has started) accept at most C{accepts} connections per wake-up.

    @return: whether it could; if not (this Twisted's port accepts some
        other way), C{port} is left as it was and the first time, a warning
        is logged.
    """
    if not isinstance(getattr(port, "numberAccepts", None), int):
        if not _warned:
            _warned.append(True)
            log.warn(
                "Twisted {twisted_version}'s listening port has no numberAccepts: workers accept connections"
                " as Twisted does, and a burst of new connections may land mostly on one worker",
                twisted_version=twisted.__version__,
            )
        return False
    read = port.doRead

    def doRead() -> Any:  # the name Twisted calls
        port.numberAccepts = accepts
        return read()

    port.numberAccepts = accepts
    port.doRead = doRead
    return True
