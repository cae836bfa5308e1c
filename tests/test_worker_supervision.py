"""
L{tsecho.workers.WorkerPool} in the corners that the main tests of
C{test_workers.py} do not reach: workers that cannot be spawned, restarts
asked at the wrong time, workers gone before they are told to stop, and the
main process's own start-up checks.  All in memory (fake processes, a clock).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from twisted.internet import error
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from test_workers import FakeListeners, FakeProcess, ProcessReactor, event_line
from tsecho._accept import Board
from tsecho._startup import StartupError
from tsecho.worker import READY
from tsecho.workers import State, WorkerPool, _check_command, _parse_event, describe_exit


class CannotSpawn(ProcessReactor):
    """
    A reactor whose C{spawnProcess} fails, as it does when the worker's
    executable is gone.
    """

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], **kwargs: Any) -> FakeProcess:
        raise OSError(2, "No such file or directory")


class GoneProcess(FakeProcess):
    """
    A process that has exited already, its end not yet reported.
    """

    def signalProcess(self, name: str) -> None:
        raise error.ProcessExitedAlready()


def slots(reactor: ProcessReactor) -> list[int]:
    """
    The slot of each worker spawned so far, in order.
    """
    return [json.loads(spawned["args"][1])["slot"] for spawned in reactor.spawned]


class SupervisionTests(SynchronousTestCase):
    """
    L{WorkerPool} with fake processes and a clock.
    """

    def make_pool(
        self,
        reactor: ProcessReactor | None = None,
        listeners: Any = None,
        metrics_dir: str | None = None,
        check: Any = lambda args: None,
    ) -> tuple[WorkerPool, ProcessReactor]:
        reactor = reactor or ProcessReactor()
        pool = WorkerPool(
            listeners or FakeListeners(reactor),
            2,
            ["--listen", "tcp:1"],
            reactor,
            5,
            command=["worker"],
            check=check,
            metrics_dir=metrics_dir,
        )
        self.addCleanup(signal.signal, signal.SIGHUP, signal.getsignal(signal.SIGHUP))
        self.addCleanup(lambda: pool.board and pool.board.close())
        return pool, reactor

    def serve(self, reactor: ProcessReactor, index: int) -> None:
        reactor.spawned[index]["protocol"].childDataReceived(1, event_line(log_format="serving", **{READY: True}))

    def serving(self) -> tuple[WorkerPool, ProcessReactor]:
        """
        A started pool whose two workers serve.
        """
        pool, reactor = self.make_pool()
        pool.privilegedStartService()
        pool.startService()
        self.serve(reactor, 0)
        self.serve(reactor, 1)
        return pool, reactor

    def restarting(self) -> tuple[WorkerPool, ProcessReactor]:
        """
        A pool of two serving workers that has just begun a rolling restart:
        the first slot's new worker is starting.
        """
        pool, reactor = self.serving()
        pool.restart()
        return pool, reactor

    def end(self, reactor: ProcessReactor, index: int, **status: Any) -> None:
        reactor.spawned[index]["protocol"].processEnded(Failure(error.ProcessTerminated(**status)))

    def test_unknown_signal(self) -> None:
        """
        A signal number without a name is still said.
        """
        self.assertEqual(describe_exit(Failure(error.ProcessTerminated(signal=200))), "killed by signal 200")

    def test_start_opens_listeners(self) -> None:
        """
        C{startService} alone (no privileged start first) opens the
        listeners, then starts the workers on them.
        """
        pool, reactor = self.make_pool()
        pool.startService()
        self.assertEqual(len(reactor.spawned), 2)
        assert pool.board is not None
        self.assertEqual(reactor.spawned[0]["childFDs"], {0: "w", 1: "r", 2: "r", 3: 7, 4: 8, 5: pool.board.fileno()})

    def test_listeners_not_open_at_once(self) -> None:
        """
        A listener that does not open when started (none of tsecho's
        does) fails start-up with one line.
        """
        reactor = ProcessReactor()
        listeners = FakeListeners(reactor)
        listeners.endpoints.append(("tcp:2", None))
        pool, _ = self.make_pool(reactor, listeners)
        with self.assertRaises(StartupError) as raised:
            pool.privilegedStartService()
        self.assertEqual(str(raised.exception), "tsecho: --workers needs listeners that open at once")

    def test_listener_fails_metrics_dir_removed(self) -> None:
        """
        A listener that cannot open fails start-up as it would alone, and
        the metrics directory made for the workers is removed.
        """
        metrics_dir = Path(self.mktemp())
        metrics_dir.mkdir()
        reactor = ProcessReactor()
        listeners = FakeListeners(reactor)

        def cannot_listen() -> None:
            raise StartupError("tsecho: cannot listen on tcp:1: in use")

        listeners.privilegedStartService = cannot_listen  # type: ignore[method-assign]
        pool, _ = self.make_pool(reactor, listeners, str(metrics_dir))
        self.assertRaises(StartupError, pool.privilegedStartService)
        self.assertFalse(metrics_dir.exists())

    def test_cannot_spawn(self) -> None:
        """
        A worker that cannot even be spawned is logged with the system's
        reason, as exit status 127, and tried again after the back-off.
        """
        pool, reactor = self.make_pool(CannotSpawn())
        pool.privilegedStartService()
        with capturedLogs() as events:
            pool.startService()
        texts = [formatEvent(e) for e in events if "exited unexpectedly" in formatEvent(e)]
        self.assertEqual(len(texts), 2)
        self.assertIn("(exit status 127: [Errno 2] No such file or directory); starting another in 0.5 s", texts[0])
        self.assertEqual(pool.workers, [])
        self.assertEqual(len([c for c in reactor.getDelayedCalls() if c.active()]), 2)

    def test_ready_twice_or_late(self) -> None:
        """
        A worker that says it serves twice is counted once (a rolling
        restart drains the old worker once); one that says it once it was
        asked to drain stays draining.
        """
        pool, reactor = self.restarting()
        self.serve(reactor, 2)
        self.serve(reactor, 2)
        self.assertEqual(reactor.spawned[0]["process"].signals, ["TERM"])
        self.assertEqual(len(reactor.spawned), 4)
        pool.stopService()
        self.serve(reactor, 3)
        self.assertEqual({worker.state for worker in pool.workers}, {State.DRAINING})

    def test_restart_when_not_running_or_already_restarting(self) -> None:
        """
        A restart asked before the pool runs does nothing; one asked while a
        restart is in progress is logged and does nothing more.
        """
        pool, reactor = self.make_pool()
        with capturedLogs() as events:
            pool.restart()
        self.assertEqual((reactor.spawned, list(events)), ([], []))
        pool.privilegedStartService()
        pool.startService()
        self.serve(reactor, 0)
        self.serve(reactor, 1)
        pool.restart()
        with capturedLogs() as events:
            pool.restart()
        self.assertEqual([formatEvent(e) for e in events], ["restart already in progress"])
        self.assertEqual(len(reactor.spawned), 3)

    def test_hangup_while_starting(self) -> None:
        """
        From the moment the listeners open, a SIGHUP cannot end the main
        process (its default action): it is ignored until the workers start,
        then it restarts them.
        """
        pool, _ = self.make_pool()
        pool.privilegedStartService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)
        pool.startService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), pool._hangup)

    def test_start_bound(self) -> None:
        """
        A worker still not serving L{WorkerPool.start_bound} seconds after
        it started (hung in its start-up) is killed, logged, and replaced as
        one that died; a worker that serves in time is left alone.
        """
        pool, reactor = self.make_pool()
        pool.privilegedStartService()
        pool.startService()
        self.serve(reactor, 0)
        reactor.advance(pool.start_bound - 1)
        self.assertEqual([s["process"].signals for s in reactor.spawned], [[], []])
        with capturedLogs() as events:
            reactor.advance(1)
        self.assertEqual([s["process"].signals for s in reactor.spawned], [[], ["KILL"]])
        self.assertEqual(
            [formatEvent(e) for e in events], ["worker 2 (pid 101) is not serving 30 s after it started: killing it"]
        )
        with capturedLogs() as events:
            self.end(reactor, 1, signal=9)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "worker 2 (pid 101) exited unexpectedly (killed by SIGKILL: not serving 30 s after it started);"
                " starting another in 0.5 s"
            ],
        )
        reactor.advance(pool.min_delay)
        self.assertEqual(slots(reactor), [1, 2, 2])

    def test_start_bound_in_rolling_restart(self) -> None:
        """
        A fresh worker of a rolling restart that never serves is killed at
        the start bound, and the restart is abandoned, said why, so that the
        next SIGHUP can restart again; the old workers serve throughout.
        """
        pool, reactor = self.restarting()
        with capturedLogs() as events:
            reactor.advance(pool.start_bound)
            self.serve(reactor, 2)  # its "serving", on its way as it was killed, counts for nothing
            self.end(reactor, 2, signal=9)
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "worker 1 (pid 102) is not serving 30 s after it started: killing it",
                "worker 1 (pid 102): serving",
                "restart abandoned: the new worker 1 (pid 102) did not start (killed by SIGKILL: not serving 30 s"
                " after it started); the old workers keep serving",
            ],
        )
        self.assertEqual([s["process"].signals for s in reactor.spawned[:2]], [[], []])
        with capturedLogs() as events:
            pool.restart()
        self.assertEqual(
            [formatEvent(e) for e in events], ["restarting 2 workers one by one", "worker 1 started (pid 103)"]
        )
        self.assertEqual(slots(reactor), [1, 2, 1, 1])

    def test_hangup_while_stopping(self) -> None:
        """
        SIGHUP's handler stays the pool's once it stops (the default handler
        would end the main process at once, leaving its workers unwatched):
        a SIGHUP then is logged and starts no worker.
        """
        pool, reactor = self.serving()
        pool.stopService()
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)
        self.assertEqual([formatEvent(e) for e in events], ["restart ignored: the server is stopping"])
        self.assertEqual(len(reactor.spawned), 2)

    def test_exit_during_shutdown(self) -> None:
        """
        A worker that exits on its own while the pool stops (before it was
        asked to drain) is logged as such and not replaced.
        """
        pool, reactor = self.make_pool()
        pool.privilegedStartService()
        pool.startService()
        pool.running = False  # stopping: stopService has begun
        with capturedLogs() as events:
            self.end(reactor, 0, exitCode=3)
        self.assertEqual(
            [formatEvent(e) for e in events], ["worker 1 (pid 100) exited during shutdown (exit status 3)"]
        )
        reactor.advance(100)
        self.assertEqual(len(reactor.spawned), 2)

    def rows(self, reactor: ProcessReactor) -> list[int | None]:
        """
        The board row each spawned worker was given, in the order spawned.
        """
        return [json.loads(spawned["args"][1]).get("row") for spawned in reactor.spawned]

    def test_board_rows(self) -> None:
        """
        Every worker gets a row of the board that no live worker holds: a
        fresh worker in a rolling restart one beside its old one's, a
        replacement a row freed by a worker that exited, which the main
        process empties if the worker still held it (killed, it could not).
        """
        pool, reactor = self.restarting()
        self.assertEqual(self.rows(reactor), [0, 1, 2])
        pool, reactor = self.serving()
        assert pool.board is not None
        pool.board.write(0, 100, 7, 9)  # worker 1 (pid 100) says it holds 7
        pool.board.write(1, 999, 3, 4)  # worker 2's row holds another pid
        self.end(reactor, 0, signal=9)
        self.end(reactor, 1, signal=9)
        self.assertEqual(pool.board.read(0), (0, 0, 0))
        self.assertEqual(pool.board.read(1), (999, 3, 4))
        reactor.advance(pool.min_delay)
        self.assertEqual(self.rows(reactor), [0, 1, 0, 1])

    def test_board_row_left(self) -> None:
        """
        The row of a worker that has left it (it drains: minus its pid) is
        given to the next worker; when the drained worker exits, the row,
        now the new worker's, is left alone; a row its exited worker left
        is emptied.
        """
        pool, reactor = self.restarting()
        assert pool.board is not None
        pool.board.write(0, -100, 0, 0)  # worker 1 (pid 100) drains
        self.serve(reactor, 2)  # the fresh worker for slot 1 serves: slot 2's starts
        self.assertEqual(self.rows(reactor), [0, 1, 2, 0])
        pool.board.write(0, 103, 1, 1)
        self.end(reactor, 0, exitCode=0)
        self.assertEqual(pool.board.read(0), (103, 1, 1))
        pool.board.write(1, -101, 0, 0)
        self.end(reactor, 1, exitCode=0)
        self.assertEqual(pool.board.read(1), (0, 0, 0))

    def test_no_board(self) -> None:
        """
        If the board cannot be made, one warning says what is lost and the
        workers start without rows.
        """

        def cannot(rows: int) -> Board:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(Board, "create", cannot)
        with capturedLogs() as events:
            pool, reactor = self.serving()
        self.assertIsNone(pool.board)
        self.assertEqual(self.rows(reactor), [None, None])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("workers cannot share a board (Too many open files)", warnings[0])

    def test_board_full(self) -> None:
        """
        A worker started when every row is held gets none (it accepts
        without counting its peers) and no board; the board is closed when
        the pool has stopped.
        """
        pool, reactor = self.serving()
        assert pool.board is not None
        board = pool.board
        for _ in range(board.rows):  # restarts that find their old workers still draining
            pool._spawn(1)
        self.assertEqual(self.rows(reactor), [0, 1, 2, 3, 4, 5, None, None])
        self.assertNotIn(5, reactor.spawned[-1]["childFDs"])
        self.assertEqual(reactor.spawned[-3]["childFDs"][5], board.fileno())
        stopped = pool.stopService()
        for index in range(len(reactor.spawned)):
            self.end(reactor, index, exitCode=0)
        self.successResultOf(stopped)
        self.assertIsNone(pool.board)
        self.assertRaises(ValueError, board.read, 0)

    def test_stop_with_a_worker_gone_already(self) -> None:
        """
        Stopping, a worker that has exited already (its end not yet
        reported) is not waited for with a kill timer; the stop ends once
        its end is reported.
        """
        pool, reactor = self.make_pool()
        pool.privilegedStartService()
        pool.startService()
        reactor.spawned[0]["process"].__class__ = GoneProcess
        stopped = pool.stopService()
        self.assertEqual(len([c for c in reactor.getDelayedCalls() if c.active()]), 1)  # the other's kill timer
        self.end(reactor, 1, exitCode=0)
        self.assertNoResult(stopped)
        self.end(reactor, 0, exitCode=0)
        self.successResultOf(stopped)
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()], [])

    def test_stop_without_workers(self) -> None:
        """
        A pool stopped when no worker runs (all died, replacements pending)
        stops at once, and cancels the replacements.
        """
        pool, reactor = self.make_pool()
        pool.privilegedStartService()
        pool.startService()
        self.end(reactor, 0, signal=9)
        self.end(reactor, 1, signal=9)
        self.successResultOf(pool.stopService())
        reactor.advance(100)
        self.assertEqual(len(reactor.spawned), 2)

    def test_old_worker_dies_waiting_its_turn(self) -> None:
        """
        During a rolling restart, an old worker that dies before its turn is
        replaced after the back-off as any dead worker is, and the restart
        does not start a second replacement for it: once the first slot's
        new worker serves, the restart is done.
        """
        pool, reactor = self.restarting()
        with capturedLogs() as events:
            self.end(reactor, 1, signal=9)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["worker 2 (pid 101) exited unexpectedly (killed by SIGKILL); starting another in 0.5 s"],
        )
        with capturedLogs() as events:
            self.serve(reactor, 2)
        self.assertIn("restart done: every worker is new", [formatEvent(e) for e in events])
        self.assertEqual(reactor.spawned[0]["process"].signals, ["TERM"])
        self.assertEqual(len(reactor.spawned), 3)
        reactor.advance(pool.min_delay)
        self.assertEqual(slots(reactor), [1, 2, 1, 2])
        self.assertEqual([w.replaces for w in pool.workers], [None] * 3)

    def test_old_worker_dies_while_replaced(self) -> None:
        """
        During a rolling restart, an old worker that dies while its
        replacement starts is not replaced again (the new one takes its
        slot, relieving nobody), and the restart goes on with the next slot
        at once.
        """
        pool, reactor = self.restarting()
        with capturedLogs() as events:
            self.end(reactor, 0, signal=9)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["worker 1 (pid 100) exited unexpectedly (killed by SIGKILL)", "worker 2 started (pid 103)"],
        )
        self.assertEqual(slots(reactor), [1, 2, 1, 2])
        self.serve(reactor, 2)
        self.assertEqual(reactor.spawned[1]["process"].signals, [])
        with capturedLogs() as events:
            self.serve(reactor, 3)
        self.assertEqual(reactor.spawned[1]["process"].signals, ["TERM"])
        self.assertIn("restart done: every worker is new", [formatEvent(e) for e in events])
        self.end(reactor, 1, exitCode=0)
        reactor.advance(100)
        self.assertEqual(len(reactor.spawned), 4)
        self.assertEqual([w.pid for w in pool.workers], [102, 103])

    def test_stop_before_start(self) -> None:
        """
        A pool stopped without having started (its start-up failed) stops at
        once, closes the listeners, and leaves the SIGHUP handler alone.
        """
        pool, _ = self.make_pool(check=lambda args: "ImportError: nope")
        pool.privilegedStartService()
        self.assertRaises(StartupError, pool.startService)
        handler = signal.getsignal(signal.SIGHUP)
        self.successResultOf(pool.stopService())
        self.assertTrue(pool.listeners.stopped)  # type: ignore[attr-defined]
        self.assertIs(signal.getsignal(signal.SIGHUP), handler)


class CheckCommandTests(SynchronousTestCase):
    """
    L{_check_command} runs the worker's check and says why it failed.
    """

    def test_results(self) -> None:
        """
        Success is L{None}; a failure is its last line of error output, or
        its exit status when it printed none; a command that cannot run is
        the system's reason.
        """
        self.assertIsNone(_check_command([sys.executable, "-c", "pass"]))
        self.assertEqual(
            _check_command([sys.executable, "-c", "import sys; sys.exit('first\\nlast')"]),
            "last",
        )
        self.assertEqual(_check_command([sys.executable, "-c", "raise SystemExit(3)"]), "exit status 3")
        self.assertIn("No such file or directory", _check_command(["/nonexistent/tsecho-worker"]) or "")


class RelayedLineTests(SynchronousTestCase):
    """
    What a worker writes on its log channel is a log event only if it is one.
    """

    def test_not_an_event(self) -> None:
        """
        A line that is no JSON, JSON that is no object, or an object without
        a C{log_format} is no event; a JSON log event is.
        """
        for text in ("not json {", "[1, 2]", '{"x": 1}'):
            self.assertIsNone(_parse_event(text), text)
        self.assertEqual(_parse_event('{"log_format": "hi"}'), {"log_format": "hi"})
