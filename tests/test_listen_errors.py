"""
L{tsecho._listen_errors} and L{tsecho._endpoint_errors}: each failure Twisted
reports becomes one line that names the input and what to do.
"""

from __future__ import annotations

import errno
import os
import socket

import attrs
from twisted.internet import endpoints
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tsecho._endpoint_errors import SERVER_PARAMETERS, explain_description_error
from tsecho._listen_errors import explain_listen_failure
from tsecho.listeners import server_from_string


@implementer(IListeningPort)
@attrs.define
class FakePort:
    """
    A listening port on an address.
    """

    address: IPv4Address | UNIXAddress

    def startListening(self) -> None:
        """
        Nothing to do.
        """

    def stopListening(self) -> None:
        """
        Nothing to do.
        """

    def getHost(self) -> IPv4Address | UNIXAddress:
        """
        The address given.
        """
        return self.address


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

    def test_tcp_busy_by_this_tsecho(self) -> None:
        """
        A port held by one of this tsecho's own listeners (on it, or on all
        interfaces, or this one on all interfaces) names that listener
        instead of blaming another program; one on another address or port
        does not.
        """
        busy = OSError(errno.EADDRINUSE, "Address already in use")
        own = [
            ("tcp:7000", FakePort(IPv4Address("TCP", "0.0.0.0", 7000))),
            ("tcp:7001:interface=127.0.0.1", FakePort(IPv4Address("TCP", "127.0.0.1", 7001))),
            ("tcp6:7003:interface=\\:\\:1", FakePort(IPv6Address("TCP", "::1", 7003))),
            ("tcp6:7004", FakePort(IPv6Address("TCP", "::", 7004))),
            ("unix:/tmp/x.sock", FakePort(UNIXAddress(b"/tmp/x.sock"))),
        ]
        for interface, port, mine in (
            ("127.0.0.1", 7000, "tcp:7000"),
            ("", 7001, "tcp:7001:interface=127.0.0.1"),
            ("127.0.0.1", 7001, "tcp:7001:interface=127.0.0.1"),
            ("::1", 7003, "tcp6:7003:interface=\\:\\:1"),
            ("::", 7003, "tcp6:7003:interface=\\:\\:1"),
            ("", 7004, "tcp6:7004"),  # :: is dual-stack: it holds IPv4 too
            ("127.0.0.1", 7004, "tcp6:7004"),
        ):
            error = CannotListenError(interface, port, busy)
            self.assertEqual(
                explain_listen_failure(Failure(error), own),
                f"{error} This tsecho already listens there, on {mine}: give each listener a port of its own.",
            )
        # Another address, another port, the other family, or a name.
        for interface, port in (("10.0.0.1", 7001), ("", 7002), ("::1", 7000), ("", 7003), ("localhost", 7000)):
            error = CannotListenError(interface, port, busy)
            self.assertTrue(
                explain_listen_failure(Failure(error), own).endswith(
                    "Another program listens there: stop it, or choose another port."
                )
            )

    def test_not_an_address(self) -> None:
        """
        An interface that is not an IP address, or not one of this machine:
        named, with what to give instead.
        """
        unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.assertEqual(
            _explain(CannotListenError("999.1.1.1", 0, unknown)),
            "999.1.1.1 is not an IP address (nor a name this machine can look up): give an address of this machine, "
            "such as 127.0.0.1 or ::1, or listen on all interfaces",
        )
        elsewhere = OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        self.assertEqual(
            _explain(CannotListenError("10.9.9.9", 0, elsewhere)),
            "10.9.9.9 is not an address of this machine: give one it has (ip address lists them), "
            "such as 127.0.0.1, or listen on all interfaces",
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


def _refused(description: str, client: bool = False) -> str:
    """
    The line for C{description} as the running Twisted refuses it.
    """
    parse = endpoints.clientFromString if client else server_from_string
    try:
        parse(MemoryReactorClock(), description)
    except Exception as e:
        return explain_description_error(description, e, client=client)
    raise AssertionError(f"{description} was accepted")


class ParameterErrorTests(SynchronousTestCase):
    """
    A description whose parameters Twisted's parser refuses, refused by the
    running Twisted (so a change in Python's or Twisted's texts shows here).
    """

    def test_unescaped_colons(self) -> None:
        """
        Colons inside a value (an IPv6 address) are the likely slip: say how
        to escape them, with the value escaped.
        """
        self.assertEqual(
            _refused("tcp6:0:interface=::1"),
            "interface=::1: a ':' inside a value must be escaped as '\\:' (quoted, in a shell): "
            "'tcp6:0:interface=\\:\\:1'",
        )
        self.assertEqual(
            _refused("tcp6:0:interface=fe80::1:2:3:backlog=4"),
            "interface=fe80::1:2:3: a ':' inside a value must be escaped as '\\:' (quoted, in a shell): "
            "'tcp6:0:interface=fe80\\:\\:1\\:2\\:3:backlog=4'",
        )
        self.assertEqual(
            _refused("ssl:0:privateKey=C:key.pem"),
            "privateKey=C:key.pem: a ':' inside a value must be escaped as '\\:' (quoted, in a shell): "
            "'ssl:0:privateKey=C\\:key.pem'",
        )

    def test_given_twice(self) -> None:
        """
        A parameter given by position and by name is named.
        """
        self.assertEqual(
            _refused("tcp:0:127.0.0.1:interface=127.0.0.1"),
            "interface is given twice (by position and as interface=...): give it once",
        )

    def test_unknown_parameter(self) -> None:
        """
        A parameter the type does not take is named with the type and the
        ones it takes (behind C{haproxy:}, the inner type's); for a client,
        whose parameters differ, Twisted's documentation.
        """
        self.assertEqual(
            _refused("tcp:0:bogus=1"), "bogus is not a parameter of tcp: endpoints: it takes port, interface, backlog"
        )
        self.assertEqual(
            _refused("haproxy:unix:/tmp/x.sock:bogus=1"),
            "bogus is not a parameter of unix: endpoints: it takes address, mode, backlog, lockfile",
        )
        self.assertEqual(
            _refused("tcp:localhost:1:bogus=1", client=True),
            "bogus is not a parameter of tcp: endpoints: see https://docs.twisted.org/en/stable/core/howto/endpoints.html",
        )

    def test_parameters_are_twisteds(self) -> None:
        """
        Canary: every parameter L{SERVER_PARAMETERS} names is one the running
        Twisted's parser for that type takes (a bogus one is refused as such).
        """
        for kind, names in SERVER_PARAMETERS.items():
            self.assertIn("bogus is not a parameter", _refused(f"{kind}:bogus=1"))
            for name in names:
                try:
                    server_from_string(MemoryReactorClock(), f"{kind}:{name}=x")
                except TypeError as e:
                    self.assertNotIn(f"'{name}'", str(e), (kind, name))
                except Exception:  # refused for another reason (x is not a port, not a file...)
                    pass


class ClientCADirectoryTests(SynchronousTestCase):
    """
    A client's C{ssl:} C{caCertsDir} that cannot be listed.
    """

    def test_unlistable(self) -> None:
        """
        The directory is named with the reason, not as C{UnlistableError}.
        """
        missing = os.path.abspath(self.mktemp())
        self.assertEqual(
            _refused(f"ssl:localhost:1:caCertsDir={missing}", client=True),
            f"{missing} cannot be listed (No such file or directory): "
            "give caCertsDir a directory of CA certificates (PEM)",
        )


class TLSFileErrorTests(SynchronousTestCase):
    """
    An C{ssl:} listener's files: the one that is missing or not PEM is named.
    """

    def setUp(self) -> None:
        import trustme

        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        ca = trustme.CA()
        server = ca.issue_cert("localhost")
        server.private_key_pem.write_to_path(self.path("key.pem"))
        server.cert_chain_pems[0].write_to_path(self.path("cert.pem"))
        ca.issue_cert("other").private_key_pem.write_to_path(self.path("other.pem"))
        with open(self.path("bad.pem"), "w") as bad:
            bad.write("not PEM\n")
        here = os.getcwd()
        os.chdir(self.directory)  # where Twisted looks for its default server.pem
        self.addCleanup(os.chdir, here)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def test_not_pem(self) -> None:
        """
        The certificate or the key that is not PEM (or both) is named.
        """
        advice = ": give privateKey=KEY.pem:certKey=CERT.pem (PEM files, as made by openssl or certbot)"
        self.assertEqual(
            _refused("ssl:0:privateKey=key.pem:certKey=bad.pem"), "bad.pem is not a PEM certificate" + advice
        )
        self.assertEqual(
            _refused("ssl:0:privateKey=bad.pem:certKey=cert.pem"), "bad.pem is not a PEM private key" + advice
        )
        self.assertEqual(
            _refused("ssl:0:privateKey=bad.pem:certKey=bad.pem"),
            "bad.pem is not a PEM certificate and bad.pem is not a PEM private key" + advice,
        )
        self.assertEqual(
            _refused("ssl:0:privateKey=key.pem"), "key.pem is not a PEM certificate (no certKey given)" + advice
        )

    def test_not_matching(self) -> None:
        """
        A key that is not the certificate's is named with it.
        """
        self.assertEqual(
            _refused("ssl:0:privateKey=other.pem:certKey=cert.pem"),
            "the private key in other.pem is not the key of the certificate in cert.pem: give the matching pair",
        )

    def test_missing(self) -> None:
        """
        A file that does not exist or cannot be read is named; Twisted's
        default key, C{server.pem}, is blamed on the missing C{privateKey}.
        """
        missing = self.path("none/cert.pem")
        self.assertEqual(
            _refused(f"ssl:0:privateKey=key.pem:certKey={missing}"),
            f"{missing} does not exist: give the path of an existing PEM file",
        )
        self.assertEqual(
            _refused(f"ssl:0:privateKey=key.pem:certKey={self.directory}"),
            f"{self.directory} cannot be read: Is a directory",
        )
        message = "no privateKey given, and Twisted's default server.pem cannot be read: add privateKey=KEY.pem"
        self.assertEqual(_refused("ssl:0:certKey=cert.pem"), message)
        self.assertEqual(_refused("ssl:0"), message)

    def test_empty_chain(self) -> None:
        """
        An C{extraCertChain} file without certificates is named.
        """
        self.assertEqual(
            _refused("ssl:0:privateKey=key.pem:certKey=cert.pem:extraCertChain=key.pem"),
            "key.pem holds no PEM certificate: give extraCertChain the CA certificates (PEM) to send",
        )
