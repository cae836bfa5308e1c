"""
Give C{twistd tsecho} the cheap L{tsecho.logs.TextObserver} by default,
writing where C{twistd}'s own observer would.

The one place that uses a C{twistd} internal: C{UnixAppLogger._getLogObserver}
(Twisted 23.10 to 26.10) opens the destination that C{--logfile}, C{-n} and
C{--syslog} name (and sets up log rotation on SIGUSR1), and returns a
C{FileLogObserver} whose C{_outFile} is that file.  If Twisted changes either,
C{twistd} keeps its own observer: slower, never wrong.  C{tests/test_logs.py} has the canary.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver

from tsecho.logs import BatchedWriter, TextObserver


def default_observer(twistd_options: Any, reactor: Any = None) -> ILogObserver | None:
    """
    A L{TextObserver} on the file C{twistd} would log to, given C{twistd}'s
    own options; L{None} to leave C{twistd}'s observer in place (C{--logger},
    C{--syslog}, or a Twisted whose internals changed).
    """
    try:
        from twisted.scripts._twistd_unix import ServerOptions, UnixAppLogger
    except ImportError:
        return None
    if not isinstance(twistd_options, ServerOptions) or twistd_options.get("logger") or twistd_options.get("syslog"):
        return None  # not twistd (twist, or a test), or told where to log otherwise
    try:
        made = UnixAppLogger(twistd_options)._getLogObserver()
    except (ImportError, AttributeError, TypeError):
        return None
    out = getattr(made, "_outFile", None)
    if out is None or not hasattr(out, "write") or not hasattr(out, "flush"):
        return made  # type: ignore[no-any-return]  # twistd's own observer, on the file it opened
    return TextObserver(BatchedWriter(out, reactor))
