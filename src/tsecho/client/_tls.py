"""
C{tls:} endpoints for C{tsecho-client} that fail closed, with errors a
person can act on.

Twisted's C{tls:} client checks the server's identity with
C{service_identity}, but handles only its C{VerificationError}: a server
certificate without any subjectAltName (what C{openssl req -x509 -subj
/CN=host} makes) raises C{CertificateError} (service_identity 24.1 on),
which Twisted logs as a traceback -- and Twisted 26.10, whose check runs in
a verify callback, then lets the handshake go on, so the client talks to a
server it never verified (23.10, checking in an info callback, aborted).  Its trust-root loader also
fails with bare OpenSSL messages (C{UnlistableError} for a file,
C{no start line} for a private key in the directory).

L{client_from_string} builds C{tls:} endpoints from the same description
(C{tls:HOST:PORT}, C{host=}, C{port=}, C{timeout=}, C{bindAddress=},
C{trustRoots=}, C{certificate=}, C{privateKey=}, C{endpoint=}) out of
Twisted's public pieces: L{optionsForClientTLS} for the context,
L{wrapClientTLS} around a L{HostnameEndpoint} (or the C{endpoint=}
description), and L{IdentityCheckingCreator}, which gives each connection a
certificate check of its own (pyOpenSSL's per-connection C{set_verify}): the
chain must verify and C{service_identity} must accept the leaf for the host,
and any failure -- C{CertificateError} included -- ends the handshake with
a L{TLSVerificationError} before anything is sent.  Every other
description goes to L{endpoints.clientFromString} unchanged.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Callable

from cryptography import x509
from OpenSSL import SSL, crypto
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import endpoints, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

from tsecho._logtext import escape
from tsecho.client._errors import ClientError
from tsecho.wire import host_port

PREFIX = "tls"

_TLS_OPTIONS = frozenset(
    {"host", "port", "timeout", "bindAddress", "certificate", "privateKey", "trustRoots", "endpoint"}
)

# OpenSSL's X509_V_ERR_* codes that mean "no trusted CA signed this".
_UNTRUSTED = {2, 18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID = 10, 9


def split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint description as Twisted does: C{:} separates
    arguments, the first C{=} of an argument makes it C{key=value}, and a
    backslash takes the next character literally.

    @return: the positional arguments (the prefix first) and the keywords.
    """
    args: list[str] = []
    kwargs: dict[str, str] = {}
    key: str | None = None
    current: list[str] = []

    def end_argument() -> None:
        if key is None:
            args.append("".join(current))
        else:
            kwargs[key] = "".join(current)

    characters = iter(description)
    for character in characters:
        if character == "\\":
            current.append(next(characters, ""))
        elif character == ":":
            end_argument()
            key, current = None, []
        elif character == "=" and key is None:
            key, current = "".join(current), []
        else:
            current.append(character)
    end_argument()
    return args, kwargs


class TLSSetupError(ClientError):
    """
    A file that a C{tls:} description names cannot be used.
    """


class TLSVerificationError(ClientError):
    """
    The server's certificate did not verify: nothing was sent to it.
    """

    def __init__(self, server: str, why: str, remedy: str) -> None:
        super().__init__(f"cannot verify the TLS server {server}: {why}; {remedy}")


def client_from_string(reactor: Any, description: str) -> Any:
    """
    Like L{endpoints.clientFromString}, but C{tls:} endpoints check the
    server fail-closed (see the module's docstring).

    @return: an L{IStreamClientEndpoint}.

    @raise TLSSetupError: if C{trustRoots}, C{certificate} or C{privateKey}
        names something unusable.
    @raise ValueError: (or C{TypeError}, C{KeyError}, ...) for a description
        Twisted would refuse.
    """
    args, kwargs = split_description(description)
    if not args or args[0].lower() != PREFIX:
        return endpoints.clientFromString(reactor, description)
    kwargs = _tls_arguments(args, kwargs)
    host, port = kwargs["host"], _number(kwargs["port"], "port")
    trusted = load_trust_roots(kwargs["trustRoots"]) if "trustRoots" in kwargs else None
    identity = _load_client_certificate(kwargs.get("certificate"), kwargs.get("privateKey"))
    creator = IdentityCheckingCreator(
        ssl.optionsForClientTLS(host, trustRoot=trusted, clientCertificate=identity),
        host,
        host_port(host, port),
        trust_roots_given=trusted is not None,
    )
    if "endpoint" in kwargs:
        inner = endpoints.clientFromString(reactor, kwargs["endpoint"])
    else:
        bind = kwargs.get("bindAddress")
        inner = endpoints.HostnameEndpoint(
            reactor, host, port, _number(kwargs.get("timeout", "30"), "timeout"), None if bind is None else (bind, 0)
        )
    return endpoints.wrapClientTLS(creator, inner)


def _tls_arguments(args: list[str], kwargs: dict[str, str]) -> dict[str, str]:
    """
    The options of a C{tls:} description, C{HOST} and C{PORT} given by
    position or by name.

    @raise ValueError: for a positional argument too many, an option given
        twice or unknown, or a missing host or port.
    """
    positional = dict(zip(("host", "port"), args[1:]))
    if len(args) > 3 or set(positional) & set(kwargs):
        raise ValueError("tls: takes HOST and PORT once each")
    options = {**kwargs, **positional}
    unknown = sorted(set(options) - _TLS_OPTIONS)
    if unknown:
        raise ValueError(f"unknown tls: option {unknown[0]}")
    if "host" not in options or "port" not in options:
        raise ValueError("tls: needs a host and a port")
    return options


def _number(text: str, name: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"tls: {name} {text!r} is not a whole number")
    return int(text)


def load_trust_roots(directory: str) -> Any:
    """
    Load the CA certificates (C{*.pem}) in C{directory} as a trust root.

    @raise TLSSetupError: if C{directory} is not a directory, cannot be
        read, holds a C{*.pem} file that is not a certificate (a private key,
        say), or holds no certificate at all.
    """
    path = Path(directory)
    option = f"trustRoots={directory}"
    if path.is_file():
        raise TLSSetupError(
            f"{option} is a file; trustRoots takes a directory: put {path.name} in a directory of its own and give that"
        )
    if not path.is_dir():
        raise TLSSetupError(f"{option}: no such directory; give a directory holding your CA's certificate (*.pem)")
    certificates = []
    try:
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".pem" and p.is_file())
        for file in files:
            data = file.read_bytes()
            if b"PRIVATE KEY-----" in data:
                raise TLSSetupError(
                    f"{option}: {file.name} holds a private key; keep only CA certificates (*.pem) in that directory"
                )
            try:
                certificates.append(ssl.Certificate.loadPEM(data))
            except crypto.Error:
                raise TLSSetupError(
                    f"{option}: {file.name} is not a PEM certificate; keep only CA certificates (*.pem) there"
                ) from None
    except OSError as e:
        raise TLSSetupError(f"cannot read {option}: {e.strerror or e}") from None
    if not certificates:
        raise TLSSetupError(f"{option} holds no certificate (*.pem); put your CA's certificate there")
    return ssl.trustRootFromCertificates(certificates)


def _load_client_certificate(certificate: str | None, key: str | None) -> ssl.PrivateCertificate | None:
    """
    The client certificate (and key) that C{certificate=}/C{privateKey=}
    name, as Twisted's C{tls:} loads them.
    """
    if certificate is None:
        return None
    try:
        data = Path(certificate).read_bytes()
        if key is None:
            identity: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(data)
        else:
            identity = ssl.PrivateCertificate.fromCertificateAndKeyPair(
                ssl.Certificate.loadPEM(data), ssl.KeyPair.load(Path(key).read_bytes(), crypto.FILETYPE_PEM)
            )
    except OSError as e:
        raise TLSSetupError(f"cannot read {e.filename}: {e.strerror or e}") from None
    except crypto.Error:
        named = f"certificate={certificate}" + (f" and privateKey={key}" if key else "")
        raise TLSSetupError(f"{named}: not a PEM certificate and its private key") from None
    return identity


@implementer(IOpenSSLClientConnectionCreator)
class IdentityCheckingCreator:
    """
    Twisted's client connections, each checking the server's certificate
    itself: the chain must verify against the trust root, and the leaf must
    name C{host} in its subjectAltName.  Any failure ends the handshake
    (through the TLS protocol's public C{failVerification}) with a
    L{TLSVerificationError}.
    """

    def __init__(
        self, creator: IOpenSSLClientConnectionCreator, host: str, server: str, trust_roots_given: bool
    ) -> None:
        """
        @param creator: what L{optionsForClientTLS} made for C{host}.
        @param host: the name or address the certificate must match.
        @param server: names the server in errors (C{host:port}).
        @param trust_roots_given: whether C{trustRoots=} was given (else the
            system's CAs are trusted); worded into the advice.
        """
        self._creator = creator
        self._host = host
        self._server = server
        self._trust_roots_given = trust_roots_given
        try:
            self._address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
        except ValueError:
            self._address = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:  # noqa: N803 (Twisted's names)
        """
        Twisted's connection, with our certificate check in place of its own.
        """
        connection: SSL.Connection = self._creator.clientConnectionForTLS(tlsProtocol)
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._checker(tlsProtocol))
        return connection

    def _checker(self, tls_protocol: Any) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
        failed = False

        def check(_connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int) -> bool:
            nonlocal failed
            if failed:
                return False
            problem = self._chain_problem(error) if not ok else None
            if problem is None and depth == 0:
                problem = self._identity_problem(certificate.to_cryptography())
            if problem is None:
                return True
            failed = True
            tls_protocol.failVerification(Failure(problem))
            return False

        return check

    def _chain_problem(self, error: int) -> TLSVerificationError:
        if error in _UNTRUSTED:
            if self._trust_roots_given:
                remedy = "put the certificate of the CA that signed it in the trustRoots directory"
            else:
                remedy = "add trustRoots=DIR, a directory holding your CA's certificate (*.pem)"
            return TLSVerificationError(self._server, "its certificate is not signed by a CA you trust", remedy)
        if error == _EXPIRED:
            return TLSVerificationError(self._server, "its certificate has expired", "the server needs a new one")
        if error == _NOT_YET_VALID:
            return TLSVerificationError(
                self._server, "its certificate is not valid yet", "check the clocks, or give the server a valid one"
            )
        return TLSVerificationError(
            self._server, f"its certificate failed OpenSSL's check (error {error})", "check the server's certificate"
        )

    def _identity_problem(self, certificate: x509.Certificate) -> TLSVerificationError | None:
        try:
            if self._address is None:
                verify_certificate_hostname(certificate, self._host)
            else:
                verify_certificate_ip_address(certificate, self._host)
        except CertificateError:
            return TLSVerificationError(
                self._server,
                "its certificate has no subjectAltName (the common name is not checked)",
                f"the server needs a certificate whose subjectAltName lists {self._host}",
            )
        except VerificationError:
            return TLSVerificationError(
                self._server,
                f"its certificate is for {', '.join(_names(certificate)) or 'other names'}, not {self._host}",
                "connect with a name it lists, or give the server a certificate whose subjectAltName lists "
                + self._host,
            )
        return None


def _names(certificate: x509.Certificate) -> list[str]:
    """
    The DNS names and IP addresses in C{certificate}'s subjectAltName,
    escaped for the terminal.  (Asked only after C{service_identity} raised
    C{VerificationError}: without a subjectAltName it raises
    C{CertificateError} instead.)
    """
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    listed = [*names.get_values_for_type(x509.DNSName), *map(str, names.get_values_for_type(x509.IPAddress))]
    return [escape(name) for name in listed]  # the server chose them
