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
        discard_stdout()
        raise SystemExit(1) from None


def discard_stdout() -> None:
    """
    Point standard output at C{/dev/null}: its reader has gone, and what is
    still buffered for it must not fail again when the interpreter exits.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def port_number(value: str) -> int:
    """
    A C{usage.Options} coerce function for a TCP or UDP port number.
    """
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{value!r} is not a port number (0 to 65535)")
    return port


port_number.coerceDoc = "Must be a port number, 0 to 65535."  # type: ignore[attr-defined]

_COERCE_PREFIX = "Parameter type enforcement failed: "


def usage_error_text(error: Exception) -> str:
    """
    The text of a C{usage.UsageError}, without the prefix Twisted puts before
    what a coerce function said (the coerce function's own words name the value).
    """
    text = str(error)
    return text[len(_COERCE_PREFIX) :] if text.startswith(_COERCE_PREFIX) else text


def version_text() -> str:
    """
    C{tsecho VERSION (Twisted VERSION, CPython VERSION)}, for C{--version}.
    """
    import platform

    from twisted import __version__ as twisted_version

    from tsecho import __version__

    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"tsecho {__version__} (Twisted {twisted_version}, {python})"
