"""
What both command lines (C{twistd tsecho} and C{tsecho-client}) share.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stdout_may_close() -> Iterator[None]:
    """
    Run a step that may print and exit (C{--help}, C{--version}); if standard
    output was closed under us, as by C{--help | head}, end quietly with
    status 1 instead of a traceback.

    Standard output is flushed here, so that a closed pipe shows up now and
    not as an error while the interpreter exits; then it is pointed at
    C{/dev/null}, so that the flush at exit does not fail again (the recipe
    in Python's C{signal} docs).
    """
    try:
        try:
            yield
        finally:
            if sys.stdout is not None:  # None when started with descriptor 1 closed
                sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        raise SystemExit(1) from None
