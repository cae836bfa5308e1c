"""
Save coverage.py's data before a measured process kills itself with SIGTERM
or SIGINT: C{tox -e coverage} puts this directory on C{PYTHONPATH}, so every
Python process of that run (C{twistd} and its workers included) imports it.

C{twistd} stopped by SIGTERM (or SIGINT) ends the way it was asked to: once
the reactor has stopped, it restores the signal's default disposition and
sends the signal to itself, so that its parent sees it killed by that
signal.  A process killed by a signal runs no C{atexit} handler, and
coverage.py saves a subprocess's data in one, so nothing the end-to-end
servers ran was counted.  coverage.py's own C{[run] sigterm} cannot help:
the reactor installs its SIGTERM handler over coverage.py's.

Here C{os.kill} is wrapped: a process sending SIGTERM or SIGINT to itself
while that signal's disposition is the default (it is about to die of it)
first stops and saves its coverage.py measurement, if it has one.  Nothing
else changes: the signal is then sent as before, and the process dies of it
with the same exit status.
"""

from __future__ import annotations

import os
import signal

_FATAL = frozenset({signal.SIGTERM, signal.SIGINT})
_kill = os.kill


def _save_coverage() -> None:
    """
    Stop and save this process's coverage.py measurement, if one is running.
    """
    try:
        import coverage
    except ImportError:
        return
    current = coverage.Coverage.current()
    if current is not None:
        current.stop()
        current.save()


def kill(pid: int, sig: int, /) -> None:
    """
    L{os.kill}, saving coverage.py's data first when the process is about to
    kill itself with SIGTERM or SIGINT.
    """
    if pid == os.getpid() and sig in _FATAL and signal.getsignal(sig) == signal.SIG_DFL:
        _save_coverage()
    _kill(pid, sig)


os.kill = kill
