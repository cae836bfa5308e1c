"""
C{twistd tsecho --workers N}: the main process and its supervised workers.

L{WorkerPool} opens every listener as a lone server does (before privileges
are dropped, with one-line start-up errors), stops reading from them, and
starts N worker processes (L{tsecho.worker}) that inherit the listening
sockets and share them: the kernel hands each new connection to whichever
worker accepts first.  The main process serves no connection itself; it
only answers C{--unix-datagram}, which Twisted cannot adopt.

Supervision:
  - a worker that exits unasked is logged with its exit status and
    replaced, after a delay that doubles (up to L{WorkerPool.max_delay})
    while replacements keep dying young; the sockets stay open meanwhile,
    so connections wait in the listen queue instead of being refused;
  - SIGTERM/SIGINT: the main process closes its listening sockets, and
    every worker gets SIGTERM and drains as a lone server does (closing its
    copies at once); the main process exits after the last one, and kills (and logs)
    any worker still running L{WorkerPool.stop_bound} seconds later;
  - SIGHUP: a rolling restart, slot by slot: a fresh worker starts, and once
    it serves, the old one drains.  If the fresh one cannot start, the old
    ones keep serving.

Workers log JSON events on their standard output; L{WorkerPool} re-emits
them through C{twisted.logger}, naming the worker and its pid.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.abstract import FileDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, eventFromJSON, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from tsecho._accept import Board
from tsecho._startup import fail, release_stderr
from tsecho.datagram import DatagramListener
from tsecho.service import GivesLogObserver, TimestampEchoService
from tsecho.worker import READY

log = Logger()

WORKER_COMMAND = (sys.executable, "-m", "tsecho.worker")
FIRST_CHILD_FD = 3


def split_connections(total: int, count: int) -> list[int]:
    """
    Split C{--max-connections} across C{count} workers: each gets
    C{total // count}, the first C{total % count} one more.
    """
    return [total // count + (1 if slot < total % count else 0) for slot in range(count)]


def describe_exit(reason: Failure) -> str:
    """
    Say how a process ended: C{exit status 1}, C{killed by SIGKILL}.
    """
    value = reason.value
    exit_code = getattr(value, "exitCode", None)
    sig = getattr(value, "signal", None)
    if sig is not None:
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {exit_code if exit_code is not None else 0}"


class State(enum.Enum):
    """
    A worker's life: starting until it reports that it serves, then
    serving, then draining once asked to stop, and finally gone; or, if it
    is not serving in time, killed as a failed start.
    """

    STARTING = "starting"
    FAILED_START = "failed start"
    SERVING = "serving"
    DRAINING = "draining"
    GONE = "gone"


@attrs.define(eq=False)
class Worker:
    """
    One worker process.

    @ivar slot: its place, 1 to N; a replacement takes the slot over.
    @ivar row: its row of the pool's L{Board}, or C{None} if none was free.
    @ivar replaces: during a rolling restart, the worker it will relieve.
    @ivar kill_timer: kills it if it is still starting after the pool's
        start bound, or still draining after its stop bound.
    """

    slot: int
    started: float
    state: State = State.STARTING
    pid: int | None = None
    process: Any = None
    replaces: Worker | None = None
    kill_timer: Any = None
    last_error: str = ""
    row: int | None = None


@attrs.define
class SharedSockets:
    """
    The listening sockets that every worker inherits: their descriptors in
    the main process, and where a worker finds them (from L{FIRST_CHILD_FD}
    on, the stream listeners' in order, then the C{--udp} one).
    """

    stream: list[int] = attrs.Factory(list)
    udp: int | None = None

    def __bool__(self) -> bool:
        return bool(self.stream) or self.udp is not None

    def child_fds(self) -> dict[int, int]:
        """
        C{spawnProcess}'s C{childFDs} for them: the worker's descriptor for each.
        """
        inherited = [*self.stream, *([] if self.udp is None else [self.udp])]
        return {FIRST_CHILD_FD + i: fd for i, fd in enumerate(inherited)}

    def spec(self) -> dict[str, Any]:
        """
        The worker's descriptors, as its SPEC says them (L{tsecho.worker.main}).
        """
        stream = [FIRST_CHILD_FD + i for i in range(len(self.stream))]
        return {"stream": stream, "udp": None if self.udp is None else FIRST_CHILD_FD + len(stream)}


class WorkerProtocol(ProcessProtocol):
    """
    Read one worker's log events (standard output) and error output, and
    tell the pool when it ends.
    """

    def __init__(self, pool: WorkerPool, worker: Worker) -> None:
        self.pool = pool
        self.worker = worker
        self._partial: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N803 (Twisted's name)
        *lines, self._partial[childFD] = (self._partial.get(childFD, b"") + data).split(b"\n")
        for line in lines:
            self._line(childFD, line)

    def _line(self, fd: int, line: bytes) -> None:
        text = line.lstrip(b"\x1e").decode("utf-8", "replace").rstrip()
        if text:
            self.pool.worker_said(self.worker, text, fd == 1)

    def processEnded(self, reason: Failure) -> None:
        for fd, rest in sorted(self._partial.items()):
            self._line(fd, rest)
        self._partial.clear()
        self.pool.worker_ended(self.worker, reason)


class WorkerPool(GivesLogObserver, Service):
    """
    Run the listeners of L{TimestampEchoService} in the main process and
    serve them from C{count} supervised worker processes.

    @ivar start_bound: seconds a worker may take to start serving before it
        is killed (and, in a rolling restart, the restart abandoned).
    @ivar stop_bound: seconds a worker may take to drain before it is killed.
    @ivar min_delay: seconds before replacing a worker that died.
    @ivar max_delay: the longest such delay, reached by doubling while
        replacements die within L{stable_after} seconds.
    """

    start_bound = 30.0
    stop_bound = 20.0
    min_delay = 0.5
    max_delay = 30.0
    stable_after = 10.0
    _rolling: list[Worker] | None = None  # the old workers a rolling restart has yet to replace
    _all_gone: defer.Deferred[None] | None = None  # fires when the last worker has exited, once stopping

    def __init__(
        self,
        listeners: TimestampEchoService,
        count: int,
        arguments: Sequence[str],
        reactor: Any,
        max_connections: int,
        *,
        command: Sequence[str] = WORKER_COMMAND,
        check: Callable[[list[str]], str | None] | None = None,
        metrics_dir: str | None = None,
    ) -> None:
        """
        @param listeners: the service a lone server would run; its
            listeners are opened here, its connections served by workers.
        @param arguments: the C{twistd tsecho} options, passed to each worker.
        @param reactor: spawns processes and tells the time.
        @param command: starts a worker (its SPEC and options follow).
        @param check: runs a command line that only checks a worker can
            start; returns its error, or C{None}.  (Tests replace it.)
        @param metrics_dir: with C{--metrics}, the directory where workers
            keep their counts (their C{PROMETHEUS_MULTIPROC_DIR}), which
            this process's metrics page sums; removed when the pool stops.
        """
        self.listeners = listeners
        listeners.started_when_listening = False  # until a worker could start
        self.count = count
        self.arguments = list(arguments)
        self.reactor = reactor
        self.shares = split_connections(max_connections, count)
        self.command = list(command)
        self.check = check or _check_command
        self.workers: list[Worker] = []
        self.sockets = SharedSockets()
        # Where workers say how many connections each holds: a row for each
        # serving worker, and for as many more starting or draining.
        self.board: Board | None = None
        self._delays: dict[int, float] = {}
        self._respawns: dict[int, Any] = {}
        self.metrics_dir = metrics_dir

    # Starting

    def privilegedStartService(self) -> None:
        """
        Open every listener (one-line errors, as a lone server), then stop
        reading from them: the workers will.  A SIGHUP is ignored until
        they start.
        """
        super().privilegedStartService()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not fatal while the workers start (its default is)
        try:
            self.listeners.privilegedStartService()
        except BaseException:
            self._remove_metrics_dir()
            raise
        ports = list(self.listeners.ports)
        if len(ports) != len(self.listeners.endpoints):
            raise fail("tsecho: --workers needs listeners that open at once")
        for port in ports:
            self.sockets.stream.append(self._pause(port))
        for child in self.listeners:
            if isinstance(child, DatagramListener) and child.description.startswith("udp:"):
                self.sockets.udp = self._pause(child.port)

    @staticmethod
    def _pause(port: Any) -> int:
        """
        Stop reading from C{port}, whose socket the workers share, and return
        its descriptor.  Closing it later must not C{shutdown()} the socket:
        that would stop it for every process that shares it, and the workers
        still accepting would log a failed C{accept}; the port refuses new
        connections once the last process has closed its copy (the workers
        close theirs as soon as they start draining).  Twisted's port says
        so with its private C{_shouldShutdown}, which it clears for a socket
        it adopted; a Twisted without it shuts down as before.
        """
        assert isinstance(port, FileDescriptor), port
        port.stopReading()
        if hasattr(port, "_shouldShutdown"):
            port._shouldShutdown = False
        return int(port.fileno())

    def startService(self) -> None:
        """
        Check that a worker can start (else fail with one line), then start
        them all; SIGHUP restarts them one by one from now on.
        """
        if not self.sockets:
            self.privilegedStartService()
        problem = self.check(self._command_line(1, check=True))
        if problem is not None:
            self._remove_metrics_dir()
            raise fail(f"tsecho: a worker process cannot start: {problem}")
        release_stderr()
        try:
            self.board = Board.create(2 * self.count + 2)
        except OSError as e:
            log.warn(
                "workers cannot share a board ({error}): each accepts new connections without counting the"
                " others', and a burst may land mostly on one",
                error=os.strerror(e.errno) if e.errno else str(e),
            )
        super().startService()
        self.listeners.startService()
        signal.signal(signal.SIGHUP, self._hangup)  # kept once stopping: SIGHUP's default is to terminate
        for slot in range(1, self.count + 1):
            self._spawn(slot)

    def _command_line(self, slot: int, check: bool = False, row: int | None = None) -> list[str]:
        """
        Start the worker for C{slot}: its SPEC (where its sockets are, and
        its C{row} of the board), then the options this process was given,
        for one process, with the slot's share of C{--max-connections}.
        """
        spec = {"slot": slot, **self.sockets.spec(), "reactor": reactor_name(self.reactor)}
        if check:
            spec["check"] = True
        if row is not None and self.board is not None:
            spec.update(board=self._board_fd(), rows=self.board.rows, row=row)
        limit = f"--max-connections={self.shares[slot - 1]}"
        return [*self.command, json.dumps(spec), *self.arguments, "--workers=1", limit]

    def _spawn(self, slot: int, replaces: Worker | None = None) -> Worker:
        self._respawns.pop(slot, None)
        # Standard input: a pipe never written to, whose end tells the worker
        # that this process is gone.
        child_fds: dict[int, int | str] = {0: "w", 1: "r", 2: "r", **self.sockets.child_fds()}
        row = self._free_row()
        if row is not None and self.board is not None:
            child_fds[self._board_fd()] = self.board.fileno()
        args = self._command_line(slot, row=row)
        worker = Worker(slot, self.reactor.seconds(), replaces=replaces, row=row)
        self.workers.append(worker)
        try:
            worker.process = self.reactor.spawnProcess(
                WorkerProtocol(self, worker), args[0], args, env=self._worker_env(), childFDs=child_fds
            )
        except OSError as e:
            worker.last_error = str(e)
            self.worker_ended(worker, Failure(error.ProcessTerminated(exitCode=127)))
            return worker
        worker.pid = worker.process.pid
        log.info("worker {slot} started (pid {pid})", slot=slot, pid=worker.pid)
        worker.kill_timer = self.reactor.callLater(self.start_bound, self._not_serving, worker)
        return worker

    def _free_row(self) -> int | None:
        """
        The first row of the board that no live worker holds, or that its
        worker has left for good (it drains); C{None} if every row is held:
        that worker accepts without counting its peers.
        """
        board = self.board
        if board is None:
            return None
        held = {w.row for w in self.workers if w.row is not None and not board.left(w.row, w.pid or 0)}
        return next((row for row in range(board.rows) if row not in held), None)

    def _board_fd(self) -> int:
        """
        The worker's descriptor for the board: the one after its sockets'.
        """
        return FIRST_CHILD_FD + len(self.sockets.child_fds())

    def _not_serving(self, worker: Worker) -> None:
        worker.kill_timer = None
        worker.state = State.FAILED_START  # a "serving" already on its way counts for nothing
        worker.last_error = f"not serving {self.start_bound:g} s after it started"
        log.error(
            "worker {slot} (pid {pid}) is {why}: killing it", slot=worker.slot, pid=worker.pid, why=worker.last_error
        )
        with contextlib.suppress(error.ProcessExitedAlready):
            worker.process.signalProcess("KILL")

    def _worker_env(self) -> dict[str, str]:
        """
        A worker's environment: this process's, and with C{--metrics} where it keeps its counts.
        """
        shared = {} if self.metrics_dir is None else {"PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        return {**os.environ, **shared}

    # What workers say

    def worker_said(self, worker: Worker, text: str, is_log: bool) -> None:
        """
        Re-emit a line from C{worker}: a JSON log event (from its standard
        output) with the worker's slot and pid, or its error output.
        """
        event = _parse_event(text) if is_log else None
        if event is None:
            worker.last_error = text
            log.warn(
                "worker {tsecho_worker} (pid {tsecho_worker_pid}): {line}",
                line=text,
                tsecho_worker=worker.slot,
                tsecho_worker_pid=worker.pid,
            )
            return
        ready = event.pop(READY, False)
        event["tsecho_message"] = _format_relayed(event)
        event["tsecho_worker"] = worker.slot
        event["tsecho_worker_pid"] = worker.pid
        event["log_format"] = "worker {tsecho_worker} (pid {tsecho_worker_pid}): {tsecho_message}"
        globalLogPublisher(event)
        if ready:
            self._serving(worker)

    def _serving(self, worker: Worker) -> None:
        if worker.state is not State.STARTING:
            return
        worker.state = State.SERVING
        worker.kill_timer.cancel()  # the start bound's (a worker killed at it is FAILED_START)
        worker.kill_timer = None
        old = worker.replaces
        worker.replaces = None
        if old is not None and self._rolling is not None:
            self._drain(old)
            self._rolling.remove(old)
            self._roll_next()

    # Ends

    def worker_ended(self, worker: Worker, reason: Failure) -> None:
        """
        C{worker} exited: if it was asked to, note it; otherwise log its
        exit status and replace it (after a back-off), unless a rolling
        restart was starting it, in which case the old worker keeps serving.
        """
        was = worker.state
        worker.state = State.GONE
        if self.metrics_dir is not None and worker.pid is not None:
            from tsecho.metrics import worker_exited

            worker_exited(worker.pid, self.metrics_dir)  # its gauges go; its counters stay in the sums
        self.workers.remove(worker)  # each worker ends once: Twisted reports a process's end once
        if self.board is not None and worker.row is not None and worker.pid is not None:
            self.board.clear(worker.row, worker.pid)  # killed, it could not: its peers must not wait for it
        if worker.kill_timer is not None and worker.kill_timer.active():
            worker.kill_timer.cancel()
        status = describe_exit(reason)
        fields = {"slot": worker.slot, "pid": worker.pid, "status": status}
        if was is State.DRAINING:
            log.info("worker {slot} (pid {pid}) stopped ({status})", **fields)
        elif not self.running:
            log.warn("worker {slot} (pid {pid}) exited during shutdown ({status})", **fields)
        elif worker.replaces is not None:
            log.error(
                "restart abandoned: the new worker {slot} (pid {pid}) did not start ({status}{why}); "
                "the old workers keep serving",
                why=f": {worker.last_error}" if worker.last_error else "",
                **fields,
            )
            self._rolling = None
        else:
            self._replace_later(worker, was, fields)
        if not self.workers and self._all_gone is not None:
            self._all_gone.callback(None)

    def _replace_later(self, worker: Worker, was: State, fields: dict[str, Any]) -> None:
        if self._rolling is not None and worker in self._rolling:
            self._rolling.remove(worker)
        if any(w.replaces is worker for w in self.workers):
            # Its replacement is already starting: it will relieve nobody, and
            # the restart goes on with the next slot.
            for w in self.workers:
                if w.replaces is worker:
                    w.replaces = None
            log.error("worker {slot} (pid {pid}) exited unexpectedly ({status})", **fields)
            self._roll_next()
            return
        starting = was in (State.STARTING, State.FAILED_START)
        young = self.reactor.seconds() - worker.started < self.stable_after or starting
        delay = min(self.max_delay, self._delays.get(worker.slot, self.min_delay / 2) * 2) if young else self.min_delay
        self._delays[worker.slot] = delay
        log.error(
            "worker {slot} (pid {pid}) exited unexpectedly ({status}{why}); starting another in {delay} s",
            why=f": {worker.last_error}" if worker.last_error and starting else "",
            delay=round(delay, 2),
            **fields,
        )
        self._respawns[worker.slot] = self.reactor.callLater(delay, self._spawn, worker.slot)

    # Rolling restart

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.restart)

    def restart(self) -> None:
        """
        Replace every worker, one at a time: start a fresh one, and once it
        serves, let the old one drain.
        """
        if not self.running:
            if self._all_gone is not None:  # stopping (SIGHUP's handler stays ours)
                log.info("restart ignored: the server is stopping")
            return
        if self._rolling is not None:
            log.info("restart already in progress")
            return
        self._rolling = [w for w in self.workers if w.state in (State.STARTING, State.SERVING)]
        log.info("restarting {count} workers one by one", count=len(self._rolling))
        self._roll_next()

    def _roll_next(self) -> None:
        assert self._rolling is not None  # called only while a restart rolls
        if not self._rolling:
            self._rolling = None
            log.info("restart done: every worker is new")
            return
        old = self._rolling[0]
        self._spawn(old.slot, replaces=old)

    # Stopping

    def _drain(self, worker: Worker) -> None:
        if worker.state in (State.DRAINING, State.GONE):
            return
        if worker.state is State.STARTING:
            worker.kill_timer.cancel()  # the start bound gives way to the stop bound
        worker.state = State.DRAINING
        try:
            worker.process.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return
        worker.kill_timer = self.reactor.callLater(self.stop_bound, self._kill, worker)

    def _kill(self, worker: Worker) -> None:
        log.warn(
            "worker {slot} (pid {pid}) still running {bound} s after it was asked to stop: killing it",
            slot=worker.slot,
            pid=worker.pid,
            bound=self.stop_bound,
        )
        with contextlib.suppress(error.ProcessExitedAlready):
            worker.process.signalProcess("KILL")

    def stopService(self) -> defer.Deferred[None]:
        """
        Close the listeners at once (the workers close their copies as they
        start draining, so the port refuses new connections within the
        SPEC's second instead of queueing them unserved until the last
        worker is gone), and let every worker drain, killing those that
        outlive L{stop_bound}.
        """
        super().stopService()
        closed = defer.maybeDeferred(self.listeners.stopService)
        self._rolling = None
        for timer in self._respawns.values():
            timer.cancel()  # pending: _spawn forgets its timer as it runs
        self._respawns.clear()
        self._all_gone = defer.Deferred()
        if not self.workers:
            self._all_gone.callback(None)
        for worker in list(self.workers):
            self._drain(worker)

        def closed_too(_: object) -> defer.Deferred[None]:
            self._remove_metrics_dir()
            if self.board is not None:
                self.board.close()
                self.board = None
            return closed

        return self._all_gone.addCallback(closed_too)

    def _remove_metrics_dir(self) -> None:
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def reactor_name(reactor: object) -> str | None:
    """
    The name C{twistd --reactor} knows C{reactor} by (so that workers run
    the reactor the main process was given), or C{None}.
    """
    from twisted.application.reactors import getReactorTypes

    module = type(reactor).__module__
    return next((r.shortName for r in getReactorTypes() if getattr(r, "moduleName", None) == module), None)


def _format_relayed(event: dict[str, Any]) -> str:
    """
    Format a worker's event as the worker would have.  Its numbers and strings
    survive JSON, and formatting them keeps the format spec (C{{duration:.3f}})
    that Twisted's flattened text drops; a field JSON could not carry
    (C{{"unpersistable": true}}) is formatted from the flattened text.  (The
    logger's own keys, C{log_logger} and C{log_source}, never survive JSON
    and are no fields of the text.)
    """
    flattened = event.pop("log_flattened", None)
    lost = any(value == {"unpersistable": True} and not key.startswith("log_") for key, value in event.items())
    if flattened is None or not lost:
        return formatEvent(event)
    return formatEvent({**event, "log_flattened": flattened})


def _parse_event(text: str) -> dict[str, Any] | None:
    try:
        event = eventFromJSON(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "log_format" in event else None


def _check_command(args: list[str]) -> str | None:
    """
    Run C{args} (a worker in check mode) and return its last line of error
    output if it fails, else C{None}.
    """
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"
