"""
L{tsecho.metrics.metrics_listener} opens with the other listeners: an
endpoint that would listen only later, or cannot listen, is a start-up
error naming it.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet import defer, error
from twisted.trial.unittest import SynchronousTestCase

from tsecho.datagram import DatagramListenError
from tsecho.metrics import metrics_listener


class ListensLater:
    """
    An endpoint whose C{listen} has not fired yet (none that the options
    accept behaves so).
    """

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.Deferred()


class CannotListen:
    """
    An endpoint whose port is taken: C{listen} has failed by the time it returns.
    """

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        return defer.fail(error.CannotListenError("", 9100, OSError(errno.EADDRINUSE, "Address already in use")))


class MetricsListenerTests(SynchronousTestCase):
    """
    The C{--metrics} listener opens at once or fails start-up.
    """

    def test_endpoint_listening_later(self) -> None:
        """
        An endpoint that has not listened by the time C{listen} returns:
        one error naming C{--metrics} and what went wrong.
        """
        listener = metrics_listener("tcp:9100", ListensLater(), object())  # type: ignore[arg-type]
        error = self.assertRaises(DatagramListenError, listener.privilegedStartService)
        self.assertIn("cannot listen on --metrics tcp:9100", str(error))
        self.assertIn("the endpoint did not listen at once", str(error))

    def test_endpoint_cannot_listen(self) -> None:
        """
        An endpoint that fails to listen: one error naming C{--metrics}, the
        reason, and what to do.
        """
        listener = metrics_listener("tcp:9100", CannotListen(), object())  # type: ignore[arg-type]
        raised = self.assertRaises(DatagramListenError, listener.privilegedStartService)
        self.assertEqual(
            str(raised),
            f"cannot listen on --metrics tcp:9100: Couldn't listen on any:9100: [Errno {errno.EADDRINUSE}] "
            "Address already in use. "
            "Another program listens there: stop it, or choose another port.",
        )
        self.assertIsNone(listener.port)
