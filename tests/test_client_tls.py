"""
Tests for L{tsecho.client._tls}: C{tsecho-client --connect tls:...} refuses
every server it cannot verify, and says in one line why and what to do.

The trust-root errors need no network (a memory reactor); the verification
errors run the whole client over real loopback sockets against a real
C{ssl:} listener, which shows that nothing reached the server.
"""

from __future__ import annotations

import datetime
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import endpoints
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from realsockets import serving, tcp_port
from test_client_script import ResolvingReactor
from tsecho.client._command import FAILED, OK, USAGE, ClientOptions, Terminal, run
from tsecho.client._tls import client_from_string, split_description

TIMEOUT = 10.0


def client(reactor: Any, *argv: str) -> tuple[Any, io.BytesIO, io.StringIO]:
    """
    Start C{tsecho-client ARGV} on C{reactor}; return the Deferred of its
    exit status, and its standard output and standard error.
    """
    from twisted.internet import defer

    options = ClientOptions()
    options.parseOptions(list(argv))
    stdout, stderr = io.BytesIO(), io.StringIO()
    terminal = Terminal(stdout, stderr, False, lambda lines: None)
    return defer.ensureDeferred(run(reactor, options, terminal)), stdout, stderr


def escape(path: Path) -> str:
    """
    C{path} as a value in an endpoint description (colons escaped).
    """
    return str(path).replace(":", "\\:")


def write_certificate_without_san(directory: Path, common_name: str) -> tuple[Path, Path]:
    """
    A self-signed certificate with only a common name, no subjectAltName
    (what C{openssl req -x509 -subj /CN=NAME} makes), in C{directory}/trust/;
    return its path and its key's.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "trust").mkdir(parents=True)
    cert_path, key_path = directory / "trust" / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TrustRootsTests(SynchronousTestCase):
    """
    A C{trustRoots=} that cannot be used: one line naming it and what to
    do, on standard error, exit status 1, before any connection.
    """

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tsecho-trust-"))
        self.addCleanup(shutil.rmtree, self.directory)
        ca = trustme.CA()
        self.ca_path = self.directory / "ca" / "ca.pem"
        self.ca_path.parent.mkdir()
        ca.cert_pem.write_to_path(str(self.ca_path))
        self.leaf = ca.issue_cert("localhost")

    def assert_refused(self, trust_roots: Path, line: str) -> None:
        """
        C{--connect tls:localhost:8443:trustRoots=TRUST_ROOTS hi} ends with
        status 1 and exactly C{tsecho-client: LINE} on standard error,
        having connected nowhere.
        """
        reactor = MemoryReactorClock()
        status, stdout, stderr = client(
            reactor, "--connect", f"tls:localhost:8443:trustRoots={escape(trust_roots)}", "hi"
        )
        self.assertEqual(self.successResultOf(status), FAILED)
        self.assertEqual(stderr.getvalue(), f"tsecho-client: {line}\n")
        self.assertEqual(stdout.getvalue(), b"")
        self.assertEqual(reactor.tcpClients, [])

    def test_file(self) -> None:
        """
        A file, not a directory (Twisted said C{UnlistableError}).
        """
        self.assert_refused(
            self.ca_path,
            f"trustRoots={self.ca_path} is a file; trustRoots takes a directory: "
            "put ca.pem in a directory of its own and give that",
        )

    def test_private_key_in_directory(self) -> None:
        """
        A directory that also holds a private key (Twisted said C{no start line}).
        """
        self.leaf.private_key_pem.write_to_path(str(self.ca_path.parent / "key.pem"))
        self.assert_refused(
            self.ca_path.parent,
            f"trustRoots={self.ca_path.parent}: key.pem holds a private key; "
            "keep only CA certificates (*.pem) in that directory",
        )

    def test_not_a_certificate(self) -> None:
        """
        A C{*.pem} file that is no certificate.
        """
        (self.ca_path.parent / "notes.pem").write_text("not PEM at all\n")
        self.assert_refused(
            self.ca_path.parent,
            f"trustRoots={self.ca_path.parent}: notes.pem is not a PEM certificate; "
            "keep only CA certificates (*.pem) there",
        )

    def test_missing(self) -> None:
        """
        A directory that does not exist.
        """
        missing = self.directory / "missing"
        self.assert_refused(
            missing, f"trustRoots={missing}: no such directory; give a directory holding your CA's certificate (*.pem)"
        )

    def test_empty(self) -> None:
        """
        A directory without certificates (Twisted would trust nothing, and
        every server would fail to verify).
        """
        empty = self.directory / "empty"
        empty.mkdir()
        self.assert_refused(empty, f"trustRoots={empty} holds no certificate (*.pem); put your CA's certificate there")

    def test_unreadable(self) -> None:
        """
        A certificate in the directory that cannot be read (permissions):
        one line with the system's reason.
        """

        def cannot_read(path: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(path))

        self.patch(Path, "read_bytes", cannot_read)
        self.assert_refused(self.ca_path.parent, f"cannot read trustRoots={self.ca_path.parent}: Permission denied")


class DescriptionTests(SynchronousTestCase):
    """
    L{client_from_string} reads C{tls:} descriptions as Twisted does and
    passes every other one to Twisted.
    """

    def test_bad_descriptions(self) -> None:
        """
        A C{tls:} description that cannot work is a usage error (status 2),
        one line naming it.
        """
        for description, why in (
            ("tls:localhost", "tls: needs a host and a port"),
            ("tls:localhost:https", "tls: port 'https' is not a whole number"),
            ("tls:localhost:1:timeout=soon", "tls: timeout 'soon' is not a whole number"),
            ("tls:localhost:1:bogus=1", "unknown tls: option bogus"),
            ("tls:localhost:1:2", "tls: takes HOST and PORT once each"),
            ("tls:localhost:1:port=2", "tls: takes HOST and PORT once each"),
        ):
            status, stdout, stderr = client(MemoryReactorClock(), "--connect", description, "hi")
            self.assertEqual(self.successResultOf(status), USAGE)
            self.assertEqual(stderr.getvalue(), f"tsecho-client: bad --connect description {description}: {why}\n")
            self.assertEqual(stdout.getvalue(), b"")

    def test_wrapped_endpoint(self) -> None:
        """
        C{endpoint=} is the connection TLS runs over (the host is only
        checked against the certificate); the prefix may be in capitals, and
        host and port may be keywords.
        """
        for description in (
            "TLS:example.test:8443:endpoint=tcp\\:127.0.0.1\\:9",
            "tls:host=example.test:port=8443:endpoint=tcp\\:127.0.0.1\\:9",
        ):
            reactor = MemoryReactorClock()
            endpoint = client_from_string(reactor, description)
            self.assertTrue(IStreamClientEndpoint.providedBy(endpoint))
            endpoint.connect(Factory.forProtocol(Protocol))
            [(host, port, _factory, _timeout, _bind)] = reactor.tcpClients
            self.assertEqual((host, port), ("127.0.0.1", 9))

    def test_other_prefixes(self) -> None:
        """
        Every other description is Twisted's own endpoint.
        """
        endpoint = client_from_string(MemoryReactorClock(), "tcp:127.0.0.1:21567")
        self.assertIsInstance(endpoint, endpoints.TCP4ClientEndpoint)

    def test_client_certificate_unreadable(self) -> None:
        """
        A C{certificate=} that cannot be read: one line naming it, status 1.
        """
        missing = Path(tempfile.gettempdir()) / "tsecho-no-such-dir" / "client.pem"
        status, _stdout, stderr = client(
            MemoryReactorClock(), "--connect", f"tls:localhost:1:certificate={escape(missing)}", "hi"
        )
        self.assertEqual(self.successResultOf(status), FAILED)
        self.assertEqual(stderr.getvalue(), f"tsecho-client: cannot read {missing}: No such file or directory\n")


class SplitDescriptionTests(SynchronousTestCase):
    """
    L{split_description} splits as Twisted's endpoint parser does.
    """

    def test_examples(self) -> None:
        """
        Colons separate, the first C{=} makes a keyword, a backslash escapes.
        """
        self.assertEqual(
            split_description("tls:host=h:8443:trustRoots=/a\\:b:endpoint=tcp\\:127.0.0.1\\:1:x=y=z"),
            (["tls", "8443"], {"host": "h", "trustRoots": "/a:b", "endpoint": "tcp:127.0.0.1:1", "x": "y=z"}),
        )

    @given(st.text(alphabet="ab:=\\", max_size=30).filter(lambda s: not s.endswith("\\")))
    def test_same_as_twisted(self, description: str) -> None:
        """
        Any description gives what Twisted's own (private) parser gives.
        """
        from twisted.internet import endpoints

        twisted_parse = getattr(endpoints, "_parse", None)
        if twisted_parse is None:
            self.skipTest("this Twisted has no _parse to compare with")
        self.assertEqual(split_description(description), twisted_parse(description))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """
    A CA directory (C{trust}) and a server key and certificate for
    C{localhost} it signed (C{key}, C{cert}); and a self-signed certificate
    for CN=localhost without subjectAltName (C{nosan_trust}, C{nosan_key},
    C{nosan_cert}).
    """
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    paths = {"trust": directory / "ca", "key": directory / "key.pem", "cert": directory / "cert.pem"}
    paths["trust"].mkdir()
    ca.cert_pem.write_to_path(str(paths["trust"] / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(paths["key"]))
    leaf.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    paths["nosan_cert"], paths["nosan_key"] = write_certificate_without_san(directory / "nosan", "localhost")
    paths["nosan_trust"] = paths["nosan_cert"].parent
    return paths


async def refused(pki: dict[str, Path], server: str, connect: str) -> tuple[int, str, bytes, list[int], int]:
    """
    Serve C{ssl:} with the C{SERVER} certificate (C{""} or C{"nosan_"});
    run C{tsecho-client --connect CONNECT hi}, C{{port}} in CONNECT being
    the server's port.  Return the client's status, standard error and
    standard output, how many lines each server connection answered, and
    the port.
    """
    from twisted.internet import reactor

    listen = (
        f"ssl:0:interface=127.0.0.1:privateKey={escape(pki[server + 'key'])}:certKey={escape(pki[server + 'cert'])}"
    )
    async with serving(["--listen", listen]) as service:
        port = tcp_port(service)
        with capturedLogs() as events:
            status, stdout, stderr = client(reactor, "--connect", connect.format(port=port), "hi")
            code = await status.addTimeout(TIMEOUT, reactor)
            deadline = reactor.seconds() + TIMEOUT
            while not closed(events) and reactor.seconds() < deadline:
                await deferLater(reactor, 0.01)
    lines = [e["lines"] for e in closed(events)]
    return code, stderr.getvalue(), stdout.getvalue(), lines, port


def closed(events: list[LogEvent]) -> list[LogEvent]:
    """
    The server's "connection ... closed after N lines" events.
    """
    return [e for e in events if "closed after" in e.get("log_format", "")]


@pytest_twisted.ensureDeferred
async def test_verified(pki: dict[str, Path]) -> None:
    """
    The right name and the right CA: the message is answered (the control
    case for the refusals below).
    """
    status, stderr, stdout, lines, _ = await refused(
        pki, "", f"tls:localhost:{{port}}:trustRoots={escape(pki['trust'])}"
    )
    assert (status, stderr, lines) == (OK, "", [1])
    assert stdout.endswith(b"] hi\n")


@pytest.mark.parametrize(
    ("server", "connect", "line"),
    [
        (
            "nosan_",
            "tls:127.0.0.1:{port}:trustRoots={nosan_trust}",
            "cannot verify the TLS server 127.0.0.1:{port}: its certificate has no subjectAltName"
            " (the common name is not checked); the server needs a certificate whose subjectAltName lists 127.0.0.1",
        ),
        (
            "nosan_",
            "tls:localhost:{port}:trustRoots={nosan_trust}",
            "cannot verify the TLS server localhost:{port}: its certificate has no subjectAltName"
            " (the common name is not checked); the server needs a certificate whose subjectAltName lists localhost",
        ),
        (
            "",
            "tls:wrong.example:{port}:trustRoots={trust}:endpoint=tcp\\:127.0.0.1\\:{port}",
            "cannot verify the TLS server wrong.example:{port}: its certificate is for localhost, not wrong.example;"
            " connect with a name it lists, or give the server a certificate whose subjectAltName lists wrong.example",
        ),
        (
            "",
            "tls:127.0.0.1:{port}:trustRoots={trust}",
            "cannot verify the TLS server 127.0.0.1:{port}: its certificate is for localhost, not 127.0.0.1;"
            " connect with a name it lists, or give the server a certificate whose subjectAltName lists 127.0.0.1",
        ),
        (
            "",
            "tls:localhost:{port}:endpoint=tcp\\:127.0.0.1\\:{port}",
            "cannot verify the TLS server localhost:{port}: its certificate is not signed by a CA you trust;"
            " add trustRoots=DIR, a directory holding your CA's certificate (*.pem)",
        ),
    ],
    ids=["no-san-ip", "no-san-name", "name-mismatch", "ip-mismatch", "untrusted-ca"],
)
@pytest_twisted.ensureDeferred
async def test_unverifiable_server_refused(pki: dict[str, Path], server: str, connect: str, line: str) -> None:
    """
    A server the client cannot verify: exit status 1, exactly one line on
    standard error naming the server, the reason and what to do, nothing on
    standard output -- and nothing reached the server (its connection
    answered no line).
    """
    trust = {"trust": escape(pki["trust"]), "nosan_trust": escape(pki["nosan_trust"])}
    status, stderr, stdout, lines, port = await refused(
        pki, server, connect.replace("{port}", "{{port}}").format(**trust)
    )
    assert (status, stderr, stdout) == (FAILED, f"tsecho-client: {line.format(port=port)}\n", b"")
    assert lines == [0]


class ClientCertificateTests(SynchronousTestCase):
    """
    C{certificate=} (with or without C{privateKey=}) is loaded as Twisted's
    C{tls:} loads it; one that is no certificate and key is one line.
    """

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tsecho-client-cert-"))
        self.addCleanup(shutil.rmtree, self.directory)
        leaf = trustme.CA().issue_cert("client.test")
        self.combined = self.directory / "combined.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(self.combined))
        self.certificate, self.key = self.directory / "cert.pem", self.directory / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(self.certificate))
        leaf.private_key_pem.write_to_path(str(self.key))
        self.garbage = self.directory / "garbage.pem"
        self.garbage.write_text("not PEM at all\n")

    def test_loaded(self) -> None:
        """
        A file holding both, or a certificate and its key apart: an endpoint.
        """
        for options in (
            f"certificate={escape(self.combined)}",
            f"certificate={escape(self.certificate)}:privateKey={escape(self.key)}",
        ):
            endpoint = client_from_string(ResolvingReactor(), f"tls:localhost:1:{options}")
            self.assertTrue(IStreamClientEndpoint.providedBy(endpoint), options)

    def test_not_a_certificate(self) -> None:
        """
        A file that is no PEM certificate and key, alone or with
        C{privateKey=}: one line naming what was given, status 1.
        """
        for options, named in (
            (f"certificate={escape(self.garbage)}", f"certificate={self.garbage}"),
            (
                f"certificate={escape(self.certificate)}:privateKey={escape(self.garbage)}",
                f"certificate={self.certificate} and privateKey={self.garbage}",
            ),
        ):
            status, stdout, stderr = client(MemoryReactorClock(), "--connect", f"tls:localhost:1:{options}", "hi")
            self.assertEqual(self.successResultOf(status), FAILED)
            self.assertEqual(stderr.getvalue(), f"tsecho-client: {named}: not a PEM certificate and its private key\n")
            self.assertEqual(stdout.getvalue(), b"")


class RecordingConnection:
    """
    Stands in for pyOpenSSL's connection: keeps the verify callback.
    """

    def set_verify(self, mode: int, callback: Any) -> None:
        self.verify = callback


class RecordingCreator:
    """
    Stands in for what L{optionsForClientTLS} makes.
    """

    def clientConnectionForTLS(self, tlsProtocol: Any) -> RecordingConnection:  # noqa: N803
        return RecordingConnection()


class FailingTLS:
    """
    Stands in for the TLS protocol: keeps each verification failure.
    """

    def __init__(self) -> None:
        self.failures: list[str] = []

    def failVerification(self, reason: Any) -> None:
        self.failures.append(str(reason.value))


class ChainProblemTests(SynchronousTestCase):
    """
    The certificate check says in words what OpenSSL found wrong with the
    chain, and fails the handshake once.
    """

    def check(self, error: int, trust_roots_given: bool = False) -> FailingTLS:
        """
        Run the verify callback of one connection on a chain certificate
        (depth 1) that OpenSSL refused with C{error}, twice.
        """
        from tsecho.client._tls import IdentityCheckingCreator

        creator = IdentityCheckingCreator(
            RecordingCreator(),  # type: ignore[arg-type]
            "example.test",
            "example.test:8443",
            trust_roots_given,
        )
        tls = FailingTLS()
        connection: Any = creator.clientConnectionForTLS(tls)
        self.assertFalse(connection.verify(connection, None, error, 1, 0))
        self.assertFalse(connection.verify(connection, None, error, 1, 0))
        return tls

    def test_reasons(self) -> None:
        """
        Untrusted (with or without C{trustRoots=}), expired, not yet valid,
        or any other OpenSSL error: each its own reason and remedy, reported
        once however often OpenSSL calls back.
        """
        server = "cannot verify the TLS server example.test:8443"
        for error, trust_roots_given, line in (
            (
                20,
                True,
                f"{server}: its certificate is not signed by a CA you trust; "
                "put the certificate of the CA that signed it in the trustRoots directory",
            ),
            (
                20,
                False,
                f"{server}: its certificate is not signed by a CA you trust; "
                "add trustRoots=DIR, a directory holding your CA's certificate (*.pem)",
            ),
            (10, False, f"{server}: its certificate has expired; the server needs a new one"),
            (
                9,
                False,
                f"{server}: its certificate is not valid yet; check the clocks, or give the server a valid one",
            ),
            (
                7,
                False,
                f"{server}: its certificate failed OpenSSL's check (error 7); check the server's certificate",
            ),
        ):
            self.assertEqual(self.check(error, trust_roots_given).failures, [line])
