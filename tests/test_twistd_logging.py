"""
Tests for L{tsecho._twistd_logging}'s fallbacks: when the C{twistd}
internal it relies on is gone or changed, C{twistd} keeps its own observer
(the canary, which fails when Twisted changes, is in C{test_logs.py}).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.scripts import _twistd_unix
from twisted.scripts._twistd_unix import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tsecho._twistd_logging import default_observer


def twistd_options() -> ServerOptions:
    """
    C{twistd -n tsecho}'s options.
    """
    options = ServerOptions()
    options.parseOptions(["-n", "tsecho"])
    return options


class ChangedTwistdTests(SynchronousTestCase):
    """
    L{default_observer} leaves C{twistd}'s observer in place when the
    internal it uses is not what it expects.
    """

    def logger_making(self, made: Any) -> None:
        """
        Give C{twistd} a C{UnixAppLogger} whose C{_getLogObserver} returns
        C{made} (or raises it, if it is an exception class).
        """

        class ChangedLogger:
            def __init__(self, options: Any) -> None:
                pass

            def _getLogObserver(self) -> Any:
                if isinstance(made, type) and issubclass(made, Exception):
                    raise made()
                return made

        self.patch(_twistd_unix, "UnixAppLogger", ChangedLogger)

    def test_module_gone(self) -> None:
        """
        No C{twisted.scripts._twistd_unix} (renamed, say): C{None}.
        """
        options = twistd_options()
        name = "twisted.scripts._twistd_unix"
        self.addCleanup(sys.modules.__setitem__, name, sys.modules[name])
        sys.modules[name] = None  # type: ignore[assignment]  # import now raises ImportError
        self.assertIsNone(default_observer(options))

    def test_method_gone_or_changed(self) -> None:
        """
        C{_getLogObserver} gone (or taking other arguments): C{None}.
        """
        for raised in (AttributeError, TypeError):
            self.logger_making(raised)
            self.assertIsNone(default_observer(twistd_options()), raised)

    def test_observer_without_file(self) -> None:
        """
        An observer without a writable C{_outFile}: that observer, on the
        destination C{twistd} opened.
        """

        def twistds_own(event: Any) -> None:
            pass

        self.logger_making(twistds_own)
        self.assertIs(default_observer(twistd_options()), twistds_own)
