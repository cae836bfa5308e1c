"""
Start-up failures: one line on standard error, exit status 1, whatever runs tsecho.

C{twistd} sends its own standard error into the log once it starts (so
a message printed at exit lands on standard output behind log lines), and
without C{-n} it forks: the daemon's standard error is C{/dev/null}, and the
waiting parent learns of a failure only from an L{Exception} raised while the
application starts.  So the line is written here, to the standard error
that the command was started with (kept open across the fork by
L{keep_stderr}), and L{StartupError} is both a L{SystemExit} (no traceback,
status 1) and an L{Exception} (C{twistd} removes its pid file and tells the
parent, which then exits 1 too).
"""

from __future__ import annotations

import os
import sys

from twisted.logger import Logger

log = Logger()

_kept_stderr: list[int] = []


class StartupError(SystemExit, Exception):
    """
    tsecho could not start.  C{str()} is the one-line message; the exit
    status is 1.
    """

    def __init__(self, message: str) -> None:
        super().__init__(1)
        self.message = message

    def __str__(self) -> str:
        return self.message


def keep_stderr(fd: int = 2) -> None:
    """
    Keep a copy of the current standard error, for L{fail} to write to after
    C{twistd} has daemonized (call before it forks, from C{makeService}).

    @param fd: the descriptor to copy (tests pass a pipe).
    """
    if not _kept_stderr:
        _kept_stderr.append(os.dup(fd))


def release_stderr() -> None:
    """
    Close the kept copy: once started, a daemon must not hold its starter's
    standard error open (a caller reading it until end of file would wait
    for as long as the daemon runs).
    """
    while _kept_stderr:
        os.close(_kept_stderr.pop())


def fail(message: str) -> StartupError:
    """
    Log C{message}, write it as one line to the standard error that the
    command was started with, and return the L{StartupError} to raise.
    """
    log.error("{message}", message=message)
    line = f"{message}\n".encode(errors="backslashreplace")
    if _kept_stderr:
        os.write(_kept_stderr[0], line)
    elif sys.__stderr__ is not None:
        sys.__stderr__.buffer.write(line)
        sys.__stderr__.flush()
    release_stderr()
    return StartupError(message)
