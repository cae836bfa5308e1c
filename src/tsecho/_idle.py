"""
Idle timeouts for every connection of a server on one timer.

All open connections share one idle period, so the order in which they were
last active is the order of their deadlines.  L{IdleTimeouts} keeps them in an
insertion-ordered dict (moving a connection to the end on activity is O(1))
and one L{IDelayedCall} for the earliest deadline, which times out every
connection past its deadline and re-arms for the next one.  Deadlines are
exact, as with a timer per connection, which would cost a C{DelayedCall}
(about 400 bytes) per connection and a C{reset} per chunk received.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Expiring(Protocol):
    """
    What L{IdleTimeouts} tracks: something that can be timed out.
    """

    def idle_expired(self) -> None:
        """
        Idle for the whole period: close.
        """


C = TypeVar("C", bound=Expiring)


class IdleTimeouts(Generic[C]):
    """
    Call C{idle_expired()} on each tracked connection C{period} seconds
    after it was last L{touched <touch>}, unless it is L{discarded <discard>}
    first.

    If the clock is stepped backwards, a connection touched since may time
    out late, by at most the step.

    @ivar period: the idle period in seconds, or L{None} for none (then
        L{touch} tracks nothing).
    """

    def __init__(self, clock: IReactorTime, period: float | None) -> None:
        self.clock = clock
        self.period = period
        self._deadlines: dict[C, float] = {}  # in order of deadline
        self._call: IDelayedCall | None = None

    def touch(self, connection: C, now: float) -> None:
        """
        C{connection} was active at C{now} (the clock's current time): it
        times out C{period} seconds from now.
        """
        period = self.period
        if period is None:
            return
        deadlines = self._deadlines
        deadlines.pop(connection, None)
        deadlines[connection] = now + period
        if self._call is None:
            self._call = self.clock.callLater(period, self._expire)

    def discard(self, connection: C) -> None:
        """
        Stop tracking C{connection}, if it is tracked.
        """
        deadlines = self._deadlines
        if deadlines.pop(connection, None) is not None and not deadlines and self._call is not None:
            self._call.cancel()
            self._call = None

    def restart(self, period: float | None) -> None:
        """
        Forget every connection and use C{period} for those touched from now on.
        """
        self.period = period
        self._deadlines.clear()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        deadlines = self._deadlines
        expired = []
        for connection, deadline in deadlines.items():
            if deadline > now:
                break
            expired.append(connection)
        try:
            for connection in expired:
                # Timing one out may close or touch another: check again.
                current = deadlines.get(connection)
                if current is not None and current <= now:
                    del deadlines[connection]
                    connection.idle_expired()
        finally:
            self._rearm(now)

    def _rearm(self, now: float) -> None:
        """
        Point the timer at the earliest deadline, if any is left.
        """
        if not self._deadlines:  # then no timer either: discard and restart cancel it with the last deadline
            return
        delay = max(next(iter(self._deadlines.values())) - now, 0.0)
        if self._call is None:
            self._call = self.clock.callLater(delay, self._expire)
        elif self._call.getTime() > now + delay:
            self._call.reset(delay)
