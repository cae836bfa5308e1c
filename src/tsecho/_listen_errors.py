"""
Why a listener could not be opened, said so that a person can act on it.

Twisted's own messages name the call that failed (C{Couldn't listen on
any:b'/run/x.sock'}, C{No such file or directory: '1234' -> b'/run/x.sock.lock'},
C{Cannot acquire lock}); these name the file or address and what to do.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure


def _text(path: object) -> str:
    return os.fsdecode(path) if isinstance(path, (bytes, str)) else str(path)


def _missing_directory(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    return f"the directory {directory} does not exist: create it, or choose a path in an existing directory"


def explain_listen_failure(failure: Failure, own: Iterable[tuple[str, IListeningPort]] = ()) -> str:
    """
    One line saying why listening failed and what to do about it.

    @param failure: what C{endpoint.listen} failed with.
    @param own: the ports this tsecho already listens on, as (description, port)
        pairs: a port in use by one of them is not blamed on another
        program.
    """
    error = failure.value
    if isinstance(error, FileNotFoundError) and error.filename2 is not None:
        # FilesystemLock could not create PATH.lock.
        return _missing_directory(_text(error.filename2))
    if not isinstance(error, CannotListenError):
        return failure.getErrorMessage()
    if isinstance(error.port, (bytes, str)):  # a UNIX socket path
        return _unix(_text(error.port), error.socketError)
    return _address(error, own)


def _address(error: CannotListenError, own: Iterable[tuple[str, IListeningPort]]) -> str:
    """
    Why listening on an IP address and port failed.
    """
    code = getattr(error.socketError, "errno", None)
    everywhere = "or listen on all interfaces"
    if isinstance(error.socketError, socket.gaierror):
        return (
            f"{error.interface} is not an IP address (nor a name this machine can look up): "
            f"give an address of this machine, such as 127.0.0.1 or ::1, {everywhere}"
        )
    if code == errno.EADDRNOTAVAIL:
        return (
            f"{error.interface} is not an address of this machine: "
            f"give one it has (ip address lists them), such as 127.0.0.1, {everywhere}"
        )
    if code == errno.EADDRINUSE:
        mine = _own_listener(error, own)
        if mine is not None:
            return f"{error} This tsecho already listens there, on {mine}: give each listener a port of its own."
        return f"{error} Another program listens there: stop it, or choose another port."
    if code == errno.EACCES:
        return f"{error} Ports below 1024 need root (or CAP_NET_BIND_SERVICE): choose a port from 1024 up."
    return str(error)


def _own_listener(error: CannotListenError, own: Iterable[tuple[str, IListeningPort]]) -> str | None:
    """
    The description of one of C{own} (TCP listeners) that holds the address
    C{error} names: the same port, and addresses that overlap.
    """
    for description, port in own:
        host = port.getHost()
        if getattr(host, "port", None) == error.port and _overlap(getattr(host, "host", None), error.interface):
            return description
    return None


def _overlap(one: object, other: object) -> bool:
    """
    Whether binding both addresses (of TCP sockets, on one port) clashes:
    the same address, or a family's wildcard and an address of that family;
    C{::} (dual-stack) covers IPv4 too.
    """
    one, other = (address or "0.0.0.0" for address in (one, other))  # "": every IPv4 interface
    first, second = _family(one), _family(other)
    if first is None or second is None:
        return False  # a name, not an address: do not guess
    if "::" in (one, other):
        return True
    return first == second and (one == other or "0.0.0.0" in (one, other))


def _family(address: object) -> int | None:
    try:
        return ipaddress.ip_address(str(address)).version
    except ValueError:
        return None


def _unix(path: str, cause: object) -> str:
    if cause == "Cannot acquire lock":
        return _locked(path)
    code = getattr(cause, "errno", None)
    if code == errno.ENOENT:
        return _missing_directory(path)
    if code == errno.EADDRINUSE:
        return (
            f"{path} already exists: if no server uses it any more, remove it "
            "(without lockfile=0, a socket left by a crashed tsecho is removed for you)"
        )
    if code == errno.EACCES:
        return f"permission denied to create {path}: choose a directory this user can write to"
    return f"{path}: {cause}"


def _locked(path: str) -> str:
    lock = f"{path}.lock"
    try:
        holder = f"process {int(os.readlink(lock))}"
    except (OSError, ValueError):
        holder = "another process"
    return (
        f"{lock} says {holder} is serving {path}: stop that server first (if it was just killed, try again in a moment)"
    )
