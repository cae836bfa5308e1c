"""
L{tsecho._listen_errors} and L{tsecho._endpoint_errors}: each failure Twisted
reports becomes one line that names the input and what to do.
"""

from __future__ import annotations

import errno
import os

from twisted.internet.error import CannotListenError
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tsecho._endpoint_errors import explain_description_error
from tsecho._listen_errors import explain_listen_failure


def _explain(error: BaseException) -> str:
    return explain_listen_failure(Failure(error))


class ListenFailureTests(SynchronousTestCase):
    """
    Why a listener could not be opened.
    """

    def test_tcp_busy(self) -> None:
        """
        A busy TCP port: Twisted's line, then what to do.
        """
        error = CannotListenError("127.0.0.1", 80, OSError(errno.EADDRINUSE, "Address already in use"))
        self.assertEqual(
            _explain(error),
            "Couldn't listen on 127.0.0.1:80: [Errno 98] Address already in use. "
            "Another program listens there: stop it, or choose another port.",
        )

    def test_tcp_privileged(self) -> None:
        """
        A port below 1024 without the right: say what it needs.
        """
        error = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(
            _explain(error),
            "Couldn't listen on any:80: [Errno 13] Permission denied. "
            "Ports below 1024 need root (or CAP_NET_BIND_SERVICE): choose a port from 1024 up.",
        )

    def test_tcp_other(self) -> None:
        """
        Anything else keeps Twisted's own line.
        """
        error = CannotListenError("", 80, OSError(errno.EINVAL, "Invalid argument"))
        self.assertEqual(_explain(error), "Couldn't listen on any:80: [Errno 22] Invalid argument.")

    def test_unix_permission(self) -> None:
        """
        A UNIX socket in a directory this user cannot write to.
        """
        error = CannotListenError(None, b"/run/x.sock", OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(
            _explain(error), "permission denied to create /run/x.sock: choose a directory this user can write to"
        )

    def test_unix_other(self) -> None:
        """
        Another UNIX failure names the path and the reason, without a repr.
        """
        error = CannotListenError(None, b"/run/x.sock", OSError(errno.ENAMETOOLONG, "File name too long"))
        self.assertEqual(_explain(error), "/run/x.sock: [Errno 36] File name too long")

    def test_lock_unreadable(self) -> None:
        """
        A lock that names no process (not a symlink here) still gives a line.
        """
        path = self.mktemp()
        os.mkdir(f"{path}.lock")
        error = CannotListenError(None, path.encode(), "Cannot acquire lock")
        self.assertEqual(
            _explain(error),
            f"{path}.lock says another process is serving {path}: stop that server first "
            "(if it was just killed, try again in a moment)",
        )

    def test_other_exception(self) -> None:
        """
        An error that is not a listen error keeps its message.
        """
        self.assertEqual(_explain(RuntimeError("no reactor")), "no reactor")


class DescriptionErrorTests(SynchronousTestCase):
    """
    Why an endpoint description was refused.
    """

    def test_named_systemd_socket(self) -> None:
        """
        C{systemd:…:name=N} without such a socket names it.
        """
        self.assertEqual(
            explain_description_error("systemd:domain=INET:name=web", KeyError("web")),
            "no socket named web was passed by systemd: start tsecho from its .socket unit (see contrib/systemd), "
            "or set LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES",
        )

    def test_missing_arguments(self) -> None:
        """
        Several missing arguments are all named.
        """
        error = TypeError("f() missing 2 required positional arguments: 'host' and 'port'")
        self.assertEqual(explain_description_error("tcp:", error), "no host or port given: add host=...:port=...")

    def test_unknown_type(self) -> None:
        """
        An endpoint type Twisted does not know is named, without Python's quotes, with examples of known ones.
        """
        self.assertEqual(
            explain_description_error("bogus:1", ValueError("Unknown endpoint type: 'bogus'")),
            "bogus is not an endpoint type Twisted knows: start with one such as tcp: or unix:",
        )

    def test_other(self) -> None:
        """
        Anything else: its message on one line, or its type if it has none.
        """
        self.assertEqual(explain_description_error("x:", ValueError("Unknown\nendpoint")), "Unknown endpoint")
        self.assertEqual(explain_description_error("x:", ValueError()), "ValueError")
