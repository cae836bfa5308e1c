"""
How a connection ended, and the object that is told: the protocol's only
contact with metrics.

L{TimestampEchoFactory} holds one L{ConnectionMetrics}: L{NO_METRICS} (every
call does nothing) unless C{--metrics} asks for L{tsecho.metrics.ServerMetrics}.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tsecho.protocol import TimestampEcho


class Ending(str, enum.Enum):
    """
    How a stream connection ended; the C{reason} of its log event and the
    C{reason} label of C{tsecho_connections_closed_total}.
    """

    CLIENT_CLOSED = "client closed"
    """The client closed (or ended its input) and got every reply."""
    ONE_SHOT = "one-shot"
    """C{--one-shot}: closed after the first reply."""
    IDLE_TIMEOUT = "idle timeout"
    """Quiet for C{--timeout} seconds."""
    LINE_TOO_LONG = "line too long"
    """A line passed C{--max-line}."""
    BUSY = "busy"
    """Refused: C{--max-connections} were open."""
    SHUTDOWN = "shutdown"
    """Closed because the server stopped."""
    RESET = "reset"
    """The connection failed or the client reset it."""
    ABORTED = "aborted"
    """Cut short by the server: replies not read in time, or still open at the end of a shutdown."""

    def __str__(self) -> str:
        return self.value


class ConnectionMetrics(Protocol):
    """
    What the protocol tells about its connections: once when one is refused,
    once when one it served has ended.
    """

    def refused(self, connection: TimestampEcho) -> None:
        """C{connection} was refused as busy (and has not yet closed)."""

    def closed(self, connection: TimestampEcho, ending: Ending, duration: float) -> None:
        """
        An admitted connection ended; its counts are final.
        """


class NoMetrics:
    """
    Metrics off: nothing is counted.
    """

    def refused(self, connection: TimestampEcho) -> None:
        pass

    def closed(self, connection: TimestampEcho, ending: Ending, duration: float) -> None:
        pass


NO_METRICS = NoMetrics()
