"""
A stop signal after the first is logged and ignored.

Under C{twistd}, the reactor's own handlers stop it on SIGTERM and SIGINT
(and note the signal for C{twistd}'s exit status).  A second one while the
server drains (Ctrl-C pressed twice, or a service manager that signals the
whole process group) made Twisted stop the stopping reactor again, which
logs a critical C{ReactorNotRunning} traceback, and a SIGINT after a
SIGTERM changed the exit status.  L{stop_once} wraps those handlers, once
the reactor has installed them, so that only the first signal reaches them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

log = Logger(namespace="tsecho")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_once(reactor: IReactorCore) -> None:
    """
    Once C{reactor} runs, pass only the first SIGTERM or SIGINT to the
    handler it installed for it; log the ones that follow.
    """
    reactor.callWhenRunning(_wrap_handlers)


def _wrap_handlers() -> None:
    first: list[int] = []

    def wrapped(handler: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], None]:
        def handle(number: int, frame: FrameType | None) -> None:
            if first:
                log.info("Received {signal} again: already shutting down", signal=signal.Signals(number).name)
                return
            first.append(number)
            handler(number, frame)

        return handle

    for number in STOP_SIGNALS:
        handler = signal.getsignal(number)
        if callable(handler):  # the reactor's (or another Python handler), not SIG_DFL or SIG_IGN
            signal.signal(number, wrapped(handler))
