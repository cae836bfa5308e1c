"""
Why an endpoint description (C{--listen}, C{--connect}) was refused, in words.

Twisted's parsers fail with whatever the endpoint's constructor raised, such
as C{TCP4ClientEndpoint.__init__() missing 1 required positional argument:
'port'}, C{Unknown endpoint type: 'bogus'} for a misspelt type, C{list index
out of range} for a C{systemd:} listener that was passed no socket,
C{_parseTCP() got multiple values for argument 'interface'} for a value with
unescaped colons, or OpenSSL's C{[('PEM routines', '', 'no start line')]}
for an C{ssl:} file that is not PEM; these say which part of the description
to fix.  Python's and OpenSSL's texts are matched by exception type first,
and an unknown text keeps its own words (on one line).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from twisted.python.filepath import UnlistableError

_NOT_A_NUMBER = re.compile(r"invalid literal for int\(\) with base 10: '(?P<value>.*)'")
_UNKNOWN_TYPE = re.compile(r"Unknown endpoint type: '(?P<name>.*)'")
_MISSING = re.compile(r"missing \d+ required (?:positional |keyword-only )?arguments?: (?P<names>.*)")
_UNEXPECTED = re.compile(r"got an unexpected keyword argument '(?P<name>\w+)'")
_TWICE = re.compile(r"got multiple values for (?:keyword )?argument '(?P<name>\w+)'")
_TOO_MANY = re.compile(r"takes .*\d+ (?:were |was )?given")
_NO_CHAIN = re.compile(r"Specified chain file '(?P<path>.*)' doesn't contain any valid certificates")

ENDPOINT_DOCS = "https://docs.twisted.org/en/stable/core/howto/endpoints.html"
"""
Where Twisted lists every endpoint type and its parameters.
"""

SERVER_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "tcp": ("port", "interface", "backlog"),
    "tcp6": ("port", "interface", "backlog"),
    "unix": ("address", "mode", "backlog", "lockfile"),
    "ssl": ("port", "privateKey", "certKey", "sslmethod", "interface", "backlog", "extraCertChain", "dhParameters"),
    "systemd": ("domain", "index", "name"),
}
"""
The parameters of Twisted's own server endpoint types (checked against the
running Twisted by C{tests/test_listen_errors.py}).
"""


def _parts(description: str) -> list[str]:
    """
    The parts of C{description} between unescaped colons, escapes kept.
    """
    parts, current, chars = [], "", iter(description)
    for char in chars:
        if char == "\\":
            current += char + next(chars, "")
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _key(part: str) -> str | None:
    named = re.match(r"(\w+)=", part)
    return named[1] if named else None


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _parameters(description: str) -> dict[str, str]:
    """
    The C{name=value} parameters of C{description}, unescaped.
    """
    named = ((_key(part), part) for part in _parts(description))
    return {key: _unescape(part[len(key) + 1 :]) for key, part in named if key is not None}


def any_port(description: str) -> bool:
    """
    Whether C{description} (C{tcp:}, C{tcp6:} or C{ssl:}, also behind
    C{haproxy:}) asks for port 0, any free port: such listeners may repeat.
    """
    parts = _parts(description)
    parts = parts[1:] if parts[0] == "haproxy" else parts
    if parts[0] not in ("tcp", "tcp6", "ssl"):
        return False
    positional = [part for part in parts[1:] if _key(part) is None]
    port = _parameters(description).get("port", positional[0] if positional else "")
    return port.isdigit() and int(port) == 0


def _endpoint_type(description: str) -> str:
    parts = _parts(description)
    return parts[1] if parts[0] == "haproxy" and len(parts) > 1 else parts[0]


def _unescaped_colons(description: str) -> str | None:
    """
    If a C{name=value} part is followed by parts without a name, the value
    had colons: say how to escape them.
    """
    parts = _parts(description)
    for start, part in enumerate(parts):
        key = _key(part)
        end = start + 1
        while end < len(parts) and _key(parts[end]) is None:
            end += 1
        if key is not None and end > start + 1:
            value = ":".join(parts[start:end])[len(key) + 1 :]
            fixed = ":".join([*parts[:start], "\\:".join(parts[start:end]), *parts[end:]])
            return f"{key}={value}: a ':' inside a value must be escaped as '\\:' (quoted, in a shell): '{fixed}'"
    return None


def _type_error(description: str, error: TypeError, client: bool) -> str | None:
    text = str(error)
    missing = _MISSING.search(text)
    if missing is not None:
        names = re.findall(r"'(\w+)'", missing["names"])
        return f"no {' or '.join(names)} given: add {':'.join(f'{name}=...' for name in names)}"
    if _TWICE.search(text) or _TOO_MANY.search(text):
        colons = _unescaped_colons(description)
        if colons is not None:
            return colons
    twice = _TWICE.search(text)
    if twice is not None:
        return f"{twice['name']} is given twice (by position and as {twice['name']}=...): give it once"
    unexpected = _UNEXPECTED.search(text)
    if unexpected is not None:
        kind = _endpoint_type(description)
        known = None if client else SERVER_PARAMETERS.get(kind)
        takes = f"it takes {', '.join(known)}" if known else f"see {ENDPOINT_DOCS}"
        return f"{unexpected['name']} is not a parameter of {kind}: endpoints: {takes}"
    return None


def explain_description_error(description: str, error: Exception, client: bool = False) -> str:
    """
    One line saying what is wrong with C{description}.

    @param error: what Twisted's parser raised for it.
    @param client: whether C{description} is a client endpoint's (whose
        parameters differ from a server's of the same type).
    """
    explained = None
    if isinstance(error, TypeError):
        explained = _type_error(description, error, client)
    elif isinstance(error, ValueError):
        explained = _value_error(error)
    if explained is None:
        explained = _systemd(description, error) or _files(description, error, client)
    return explained or " ".join((str(error) or type(error).__name__).split())


def _value_error(error: ValueError) -> str | None:
    not_a_number = _NOT_A_NUMBER.search(str(error))
    if not_a_number is not None:
        return f"{not_a_number['value']} is not a number"
    unknown = _UNKNOWN_TYPE.fullmatch(str(error))
    if unknown is not None:
        return f"{unknown['name']} is not an endpoint type Twisted knows: start with one such as tcp: or unix:"
    return None


def _systemd(description: str, error: Exception) -> str | None:
    if not (description.startswith("systemd:") and isinstance(error, (IndexError, KeyError))):
        return None
    which = f"named {error.args[0]}" if isinstance(error, KeyError) else "at that index"
    return (
        f"no socket {which} was passed by systemd: start tsecho from its .socket unit "
        "(see contrib/systemd), or set LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES"
    )


def _files(description: str, error: Exception, client: bool) -> str | None:
    """
    A file or directory the description names that could not be used.
    """
    unlistable = error.originalException if isinstance(error, UnlistableError) else None  # caCertsDir
    if isinstance(unlistable, OSError):
        path = os.fsdecode(unlistable.filename)
        return f"{path} cannot be listed ({unlistable.strerror}): give caCertsDir a directory of CA certificates (PEM)"
    if not client and _endpoint_type(description) == "ssl":
        return _tls_files(_parameters(description), error)
    return None


def _tls_files(given: dict[str, str], error: Exception) -> str | None:
    """
    Which file of an C{ssl:} server endpoint Twisted could not use, and why.

    Twisted reads C{certKey} (by default the C{privateKey} file), then
    C{privateKey} (by default C{server.pem}), and loads both at once, so
    OpenSSL's error does not say which file was wrong: each is loaded again
    on its own here to find out.
    """
    from OpenSSL import crypto
    from twisted.internet import error as twisted_errors

    key = given.get("privateKey", "server.pem")
    cert = given.get("certKey", key)
    no_chain = _NO_CHAIN.search(str(error)) if isinstance(error, ValueError) else None
    if isinstance(error, OSError) and error.filename is not None:
        return _unreadable(os.fsdecode(error.filename), key, "privateKey" in given, error)
    if no_chain is not None:
        return f"{no_chain['path']} holds no PEM certificate: give extraCertChain the CA certificates (PEM) to send"
    if isinstance(error, twisted_errors.VerifyError):
        return f"the private key in {key} is not the key of the certificate in {cert}: give the matching pair"
    if isinstance(error, crypto.Error):
        return _not_pem(key, cert, "certKey" in given)
    return None


def _unreadable(path: str, key: str, key_given: bool, error: OSError) -> str:
    if path in (key, os.path.abspath(key)) and not key_given:
        return f"no privateKey given, and Twisted's default {key} cannot be read: add privateKey=KEY.pem"
    if isinstance(error, FileNotFoundError):
        return f"{path} does not exist: give the path of an existing PEM file"
    return f"{path} cannot be read: {error.strerror}"


def _not_pem(key: str, cert: str, cert_given: bool) -> str:
    """
    Say which of C{key} and C{cert} OpenSSL cannot load on its own.
    """
    from OpenSSL import crypto
    from twisted.internet import ssl

    bad = []
    try:
        with open(cert, "rb") as certificate:
            ssl.Certificate.loadPEM(certificate.read())
    except (OSError, crypto.Error):
        bad.append(f"{cert} is not a PEM certificate" + ("" if cert_given else " (no certKey given)"))
    try:
        with open(key, "rb") as private_key:
            ssl.KeyPair.load(private_key.read(), crypto.FILETYPE_PEM)
    except (OSError, crypto.Error):
        bad.append(f"{key} is not a PEM private key")
    if not bad:
        bad.append(f"{cert} and {key} are not a PEM certificate and its private key")
    return f"{' and '.join(bad)}: give privateKey=KEY.pem:certKey=CERT.pem (PEM files, as made by openssl or certbot)"
