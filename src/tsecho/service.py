"""
The running server: listeners, a graceful stop, and one-line start-up errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorTime, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from tsecho._listen_errors import explain_listen_failure
from tsecho._logtext import describe_address
from tsecho._startup import StartupError, fail, release_stderr
from tsecho.protocol import TimestampEchoFactory

__all__ = ["GivesLogObserver", "StartupError", "TimestampEchoService"]

log = Logger()


class GivesLogObserver:
    """
    A service that tells C{twistd} which log observer to use: whichever
    service C{makeService} returns joins C{twistd}'s application, which
    C{twistd} then asks for an L{ILogObserver}.
    """

    log_observer: ILogObserver | None = None
    """
    The observer C{twistd} should log to instead of its own (set by
    L{tsecho.tap.makeService}); L{None} leaves C{twistd}'s own.
    """

    def setServiceParent(self, parent: Any) -> None:
        if self.log_observer is not None and isinstance(parent, Componentized):
            parent.setComponent(ILogObserver, self.log_observer)
        super().setServiceParent(parent)  # type: ignore[misc]


class TimestampEchoService(GivesLogObserver, MultiService):
    """
    Listen on every stream endpoint with one L{TimestampEchoFactory}, run the
    child services (datagram listeners) beside them, and stop gracefully:
    stop accepting at once, answer what was received, then close.

    @ivar shutdown_grace: seconds that connections get to finish on stop,
        after which the ones left are aborted.
    """

    def __init__(
        self,
        factory: TimestampEchoFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        clock: IReactorTime,
        shutdown_grace: float = 10.0,
    ) -> None:
        super().__init__()
        self.factory = factory
        self.endpoints = list(endpoints)
        self.clock = clock
        self.shutdown_grace = shutdown_grace
        self.ports: list[IListeningPort] = []
        #: Each of L{ports} with the description it was opened for.
        self.listening: list[tuple[str, IListeningPort]] = []
        #: The factory that the listener of a description hands its
        #: connections to: L{factory} itself, unless metrics count them by
        #: listener (L{tsecho.metrics.ServerMetrics.listener_factory}).
        self.factory_for: Callable[[str], IProtocolFactory] = lambda description: factory
        self._listened = False
        #: Whether start-up is over once the listeners are open (a worker pool
        #: still has its workers to start, and may fail on one line after this).
        self.started_when_listening = True

    def privilegedStartService(self) -> None:
        """
        Open every listener now, before privileges are shed, and fail start-up
        with one line naming the listener that could not be opened
        (L{tsecho._startup.fail}).
        """
        self._listened = True
        for description, endpoint in self.endpoints:
            failure = self._listen(description, endpoint)
            if failure is not None:
                reason = explain_listen_failure(failure, self.listening)
                self._stop_listening()
                raise fail(f"tsecho: cannot listen on {description}: {reason}")
        try:
            super().privilegedStartService()
        except Exception as e:
            self._stop_listening()
            raise fail(f"tsecho: {e}") from None
        if self.started_when_listening:
            release_stderr()

    def startService(self) -> None:
        """
        Start; listen first if L{privilegedStartService} was not called
        (C{twist}, unlike C{twistd}, calls only this).
        """
        if not self._listened:
            self.privilegedStartService()
        super().startService()

    def _listen(self, description: str, endpoint: IStreamServerEndpoint) -> Failure | None:
        """
        Start listening; return the failure if it failed at once.  (A later
        failure, from an endpoint that opens asynchronously, is logged.)
        """
        at_once: list[Failure] = []
        started = False

        def failed(failure: Failure) -> None:
            if started:
                log.failure("cannot listen on {description}", failure, description=description)
            else:
                at_once.append(failure)

        endpoint.listen(self.factory_for(description)).addCallbacks(self._listening, failed, (description,))
        started = True
        return at_once[0] if at_once else None

    def _listening(self, port: IListeningPort, description: str) -> None:
        self.ports.append(port)
        self.listening.append((description, port))
        log.info(
            "listening on {description} ({address})", description=description, address=describe_address(port.getHost())
        )

    def _stop_listening(self) -> defer.Deferred[Any]:
        ports, self.ports, self.listening = self.ports, [], []
        return defer.gatherResults([defer.maybeDeferred(port.stopListening) for port in ports])

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop accepting, let open connections finish within L{shutdown_grace},
        then abort whatever is left.
        """
        drained = self.factory.drain()
        deadline = self.clock.callLater(self.shutdown_grace, self._give_up)
        drained.addBoth(lambda _: deadline.cancel() if deadline.active() else None)
        stopping: list[defer.Deferred[Any]] = [self._stop_listening(), super().stopService(), drained]
        return defer.gatherResults(stopping).addCallback(lambda _: None)

    def _give_up(self) -> None:
        log.warn(
            "aborting {count} connections still open {grace} seconds after shutdown began",
            count=len(self.factory.connections),
            grace=self.shutdown_grace,
        )
        self.factory.abort_all()
