"""
Workers share new connections by how many each holds (least connections).

Under C{--workers N} every worker's reactor watches the same listening
sockets, and the kernel wakes them all when connections arrive.  Twisted's
C{tcp.Port.doRead} (also C{unix.Port}'s) then accepts up to
C{self.numberAccepts} connections in one go (100 at first), so the first
worker awake takes a whole burst (all 50 of 50 connections opened at once,
in C{benchmarks/accept_spread.py}) while the others are not running yet.

So each worker keeps a row of a small file that the main process shares
with all of them (L{Board}): its pid, how many connections it holds, and how
many times it has read its listening sockets.  Before each accept it reads
the other rows: it accepts at most enough to hold L{MARGIN} (or a tenth of
the two together, if more) more connections than the peer that holds
fewest, and none while its C{--max-connections} share is full and the
peer's is not.  A worker without room stops reading its listening sockets:
the kernel no longer wakes it, and the connections wait in the queue for
that peer, whom the kernel has woken too.  It reads them again as soon as
one of its own connections closes, or the peer has caught up (looked at
every L{POLL} seconds), or the peer has left connections waiting for
L{STUCK} seconds without reading its sockets (hung, stopped or busy): that
peer is then ignored until it reads again.  So a connection waits at most
about L{STUCK} seconds for a peer that does not take its share.  A worker
alone accepts up to L{BATCH} connections per wake-up.

What it relies on beyond Twisted's interfaces (C{tests/test_accept.py}'s
canary checks it on the installed Twisted): C{tcp.Port}'s C{numberAccepts}
attribute, an C{int}, is how many connections C{doRead} accepts at most
(checked on Twisted 23.10, 25.5 and 26.10).  If a port has none, its worker
still stops and starts reading as above (C{startReading} and C{stopReading}
are C{FileDescriptor}'s), but cannot cap one C{doRead}, and logs one warning
per process.  Private: L{tsecho.worker} and L{tsecho.workers} import it.
"""

from __future__ import annotations

import enum
import mmap
import os
import select
import struct
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import twisted
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

MARGIN = 8
"""
How many more connections than its least loaded peer a worker may hold
(or a tenth of the two workers' connections together, if that is more).
"""

POLL = 0.002
"""
Seconds between looks at the board while a worker waits for a peer.
"""

STUCK = 0.02
"""
Seconds a waiting worker gives a peer that leaves connections waiting.
"""

BATCH = 100
"""
The most connections one C{doRead} accepts (Twisted's own first batch).
"""

_CELLS = 4  # per row: pid (0: nobody), connections held, reads of the listening sockets, share
_CELL = struct.calcsize("q")

log = Logger(namespace="tsecho.worker")
_warned: list[bool] = []


class Board:
    """
    The rows that workers share: a file mapped into the memory of the main
    process and of every worker.  The main process creates it (L{create})
    and hands each worker its descriptor and a row; it clears the row of a
    worker that has exited (L{clear}).

    A row is four 64-bit cells: the pid of the worker that holds it (0:
    nobody; minus its pid once it has left for good, so the row may be
    given to another worker), the connections it holds, its reads of the
    listening sockets, and its share of C{--max-connections} (0: none).  Each cell is written in one store (not with
    C{struct.pack_into}, which zeroes the whole row before it writes: a
    worker reading meanwhile found nobody there).
    """

    def __init__(self, fd: int, rows: int, owns_fd: bool = False) -> None:
        """
        @param fd: the shared file, at least C{rows} rows long.
        @param rows: how many rows it has.
        @param owns_fd: keep C{fd} open until L{close} (the main process
            hands it to every worker it starts); else it may be closed once
            the board is made.
        """
        self.rows = rows
        self._fd = fd if owns_fd else None
        self._map = mmap.mmap(fd, rows * _CELLS * _CELL)
        self._cells = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, rows: int) -> Board:
        """
        A new, empty board of C{rows} rows in a file that has no name: in
        memory where the system can (Linux), else a temporary file removed
        as soon as it is made.

        @raise OSError: if it cannot.
        """
        if hasattr(os, "memfd_create"):
            fd = os.memfd_create("tsecho-board", os.MFD_CLOEXEC)
        else:  # pragma: no cover (Linux has memfd_create)
            fd, path = tempfile.mkstemp(prefix="tsecho-board-")
            os.unlink(path)
        try:
            os.ftruncate(fd, rows * _CELLS * _CELL)
            return cls(fd, rows, owns_fd=True)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        """
        The shared file's descriptor, to hand to a worker.
        """
        assert self._fd is not None, "only the board's creator hands it out"
        return self._fd

    def write(self, row: int, pid: int, holding: int, reads: int, share: int = 0) -> None:
        """
        Write C{row}: a worker's row appears, or leaves, whole (its pid is
        written last, or, to leave, first).
        """
        cells, first = self._cells, _CELLS * row
        if pid <= 0:
            cells[first] = pid
        cells[first + 1] = holding
        cells[first + 2] = reads
        cells[first + 3] = share
        cells[first] = pid

    def read(self, row: int) -> tuple[int, int, int]:
        """
        C{row}'s pid, connections held and reads.
        """
        pid, holding, reads = self._cells[_CELLS * row : _CELLS * row + 3].tolist()
        return pid, holding, reads

    def everyone(self) -> list[int]:
        """
        Every row's pid, connections held, reads and share, one after the other.
        """
        return self._cells.tolist()

    def left(self, row: int, pid: int) -> bool:
        """
        Whether the worker C{pid} has left C{row} for good (it drains).
        """
        return self._cells[_CELLS * row] == -pid

    def clear(self, row: int, pid: int) -> None:
        """
        Empty C{row} if the worker C{pid} still holds it, or left it last
        (an exited worker's).
        """
        if abs(self._cells[_CELLS * row]) == pid:
            self.write(row, 0, 0, 0, 0)

    def close(self) -> None:
        """
        Unmap the board and close its file (once no worker is left).
        """
        self._cells.release()
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Sharing(enum.Enum):
    """
    Whether a worker reads its listening sockets: L{ACCEPTING}; L{WAITING}
    for a peer to take its share; L{STOPPED} for good, since it drains.
    """

    ACCEPTING = "accepting"
    WAITING = "waiting"
    STOPPED = "stopped"


_Peer = tuple[int, int, int, int, int]  # row, pid, connections held, reads, share (0: none)


class Balancer:
    """
    One worker's side of the L{Board}: publish what it holds, and accept
    from its listening ports (L{add}) only while it does not hold more than
    its share.

    @ivar holding: returns how many connections this worker holds (set by
        the worker once its factory exists).
    @ivar limit: this worker's share of C{--max-connections}.
    @ivar reads: how many times this worker read its listening sockets.
    """

    def __init__(self, board: Board, row: int, clock: IReactorTime, pid: int | None = None) -> None:
        """
        @param row: this worker's row of C{board}.
        @param clock: times the looks at the board while waiting.
        """
        self.board = board
        self.row = row
        self.clock = clock
        self.pid = os.getpid() if pid is None else pid
        self.holding: Callable[[], int] = lambda: 0
        self.limit = sys.maxsize
        self.state = Sharing.ACCEPTING
        self.ports: list[Any] = []
        self.reads = 0
        self._ignored: dict[tuple[int, int], int] = {}  # (row, pid) -> its reads when it was found stuck
        self._waiting_for: tuple[int, int, int] = (-1, 0, 0)  # the peer's row, pid and reads, since...
        self._since = 0.0
        self._poll: IDelayedCall | None = None

    def add(self, port: Any) -> None:
        """
        Accept from C{port}, a listening C{tcp.Port} or C{unix.Port} the
        reactor reads, only while this worker does not hold more than its
        share.
        """
        capped = isinstance(getattr(port, "numberAccepts", None), int)
        if not capped and not _warned:
            _warned.append(True)
            log.warn(
                "Twisted {twisted_version}'s listening port has no numberAccepts: a worker cannot cap how many"
                " connections it accepts at once, and a burst of new connections may land mostly on one worker",
                twisted_version=twisted.__version__,
            )
        read = port.doRead

        def doRead() -> Any:  # the name Twisted calls
            if self.state is Sharing.STOPPED:
                return read()
            self.reads += 1
            peer = self._least_loaded()
            room = self._room(peer)
            if room <= 0:
                assert peer is not None  # there is room without peers
                self._wait(peer)
                return None
            if capped:
                port.numberAccepts = min(room, BATCH)
            try:
                return read()
            finally:
                self.publish()

        port.doRead = doRead
        self.ports.append(port)

    def publish(self) -> None:
        """
        Write this worker's row: its pid, the connections it holds, its reads.
        """
        if self.state is not Sharing.STOPPED:
            self.board.write(self.row, self.pid, self.holding(), self.reads, self.limit)

    def room(self) -> int:
        """
        How many more connections this worker may accept now.
        """
        return self._room(self._least_loaded())

    def _room(self, peer: _Peer | None) -> int:
        """
        How many more connections this worker may accept beside C{peer},
        the least loaded (C{None}: alone).
        """
        if peer is None:
            return BATCH
        theirs, mine = peer[2], self.holding()
        if mine >= self.limit and theirs < (peer[4] or sys.maxsize):  # full here, room there
            return 0
        return theirs + max(MARGIN, (mine + theirs) // 10) - mine

    def _least_loaded(self) -> _Peer | None:
        """
        The peer that holds fewest connections, leaving out those found
        stuck that have not read since.
        """
        cells = self.board.everyone()
        least: _Peer | None = None
        for row, pid in enumerate(cells[::_CELLS]):
            if pid <= 0 or row == self.row:
                continue
            holding, reads, share = cells[_CELLS * row + 1 : _CELLS * row + 4]
            if self._ignored and (row, pid) in self._ignored:
                if self._ignored[row, pid] == reads:
                    continue
                del self._ignored[row, pid]
            if least is None or holding < least[2]:
                least = (row, pid, holding, reads, share)
        return least

    def released(self) -> None:
        """
        One of this worker's connections closed: publish, and accept again
        if that makes room.
        """
        self.publish()
        if self.state is Sharing.WAITING and self.room() > 0:
            self._resume()

    def _wait(self, peer: _Peer) -> None:
        """
        Stop reading the listening ports until C{peer}, the least loaded,
        takes its share (or is found stuck).
        """
        self.publish()
        self.state = Sharing.WAITING
        for port in self.ports:
            port.stopReading()
        self._waiting_for = (peer[0], peer[1], peer[3])
        self._since = self.clock.seconds()
        self._poll = self.clock.callLater(POLL, self._look)

    def _look(self) -> None:
        """
        While waiting: accept again if there is room now; or if the peer
        waited for has not read its sockets for L{STUCK} seconds, either
        because it has taken every connection (then the next one is judged
        afresh) or because it leaves them waiting (then it is ignored).
        """
        self._poll = None
        peer = self._least_loaded()
        if self._room(peer) > 0:
            self._resume()
            return
        assert peer is not None  # there is room without peers
        now = self.clock.seconds()
        if (peer[0], peer[1], peer[3]) != self._waiting_for:
            self._waiting_for, self._since = (peer[0], peer[1], peer[3]), now
        elif now - self._since >= STUCK:
            if self._connections_wait():
                self._ignored[peer[0], peer[1]] = peer[3]
            self._resume()
            return
        self._poll = self.clock.callLater(POLL, self._look)

    def _connections_wait(self) -> bool:
        """
        Whether a connection waits to be accepted on a listening port.
        """
        poller = select.poll()
        for port in self.ports:
            poller.register(port.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _resume(self) -> None:
        """
        Read the listening ports again.
        """
        self.state = Sharing.ACCEPTING
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        for port in self.ports:
            port.startReading()

    def stop(self) -> None:
        """
        This worker stops listening (it drains): it leaves its row, so its
        peers no longer wait for it (and the main process may give the row
        to another worker), and never reads the ports again.
        """
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self.state is not Sharing.STOPPED:
            self.state = Sharing.STOPPED
            self.board.write(self.row, -self.pid, 0, 0, 0)
