"""
What both command lines (C{twistd tsecho} and C{tsecho-client}) share.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def stdout_closed() -> NoReturn:
    """
    End the process after standard output was closed under us, as by
    C{--help | head}: nothing to report, and no traceback.

    Standard output is pointed at C{/dev/null} first, so that flushing it at
    exit does not fail again (the recipe in Python's C{signal} docs).
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    raise SystemExit(1)
