"""
The shortcuts of plain TCP and UNIX connections, which reach under
Twisted's interfaces to its C{tcp.Connection}: replies sent straight to the
socket, a close in the same turn as the client's end of input, and a probe
for connections the kernel has already reset.  Private: L{tsecho.protocol}
uses them only once L{available} finds nothing missing.

C{transport.write} only buffers, and sends on the next reactor turn: two
C{epoll_ctl} calls and a dispatch per chunk, a third of the server's time
under load.  C{loseConnection} takes one more turn only to find an empty
buffer, a sixth of it at connection-per-request.  Without these shortcuts a
connection uses only Twisted's interfaces: the same replies and closes,
slower.

What it relies on, beyond Twisted's interfaces (L{missing_internals} checks
it at run time, C{tests/test_socket_path.py}'s canary checks the behaviour):
  - C{twisted.internet.tcp.Connection}, the transport of Twisted's POSIX
    reactors for TCP and UNIX sockets, and its C{TLS} attribute, true once
    C{startTLS} put TLS under it (Twisted 8 to 26.10 at least);
  - C{stopReading()} and C{stopWriting()} of its C{FileDescriptor}, and its
    C{connectionLost(reason)}, which closes the socket and tells the
    protocol: what Twisted's own C{loseConnection} calls once the sending
    side is shut.
"""

from __future__ import annotations

import functools
import inspect
import socket

import twisted
from twisted.internet import tcp
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger

log = Logger()

_TCP_CLOSE = 7  # tcpi_state of a connection the peer reset (Linux's TCP_CLOSE)


def missing_internals() -> str | None:
    """
    Say what of Twisted's C{tcp.Connection} this module relies on is missing
    or changed in the running Twisted, or return C{None} if all is there.
    """
    connection = getattr(tcp, "Connection", None)
    if not isinstance(connection, type):
        return "twisted.internet.tcp.Connection is gone"
    checks = (
        (isinstance(getattr(connection, "TLS", None), bool), "Connection.TLS"),
        (_takes(connection, "getHandle", ["self"]), "Connection.getHandle()"),
        (_takes(connection, "stopReading", ["self"]), "Connection.stopReading()"),
        (_takes(connection, "stopWriting", ["self"]), "Connection.stopWriting()"),
        (_takes(connection, "connectionLost", ["self", "reason"]), "Connection.connectionLost(reason)"),
    )
    missing = [what for present, what in checks if not present]
    return f"changed or gone: {', '.join(missing)}" if missing else None


def _takes(cls: type, method: str, parameters: list[str]) -> bool:
    """
    Whether C{cls.method} is a function with exactly these C{parameters}.
    """
    function = getattr(cls, method, None)
    return inspect.isfunction(function) and list(inspect.signature(function).parameters) == parameters


@functools.cache
def available() -> bool:
    """
    Whether the shortcuts may be used: the first call checks, and if
    something is missing (or the check fails) logs once why and what is lost.
    """
    try:
        why = missing_internals()
    except Exception as e:  # changed beyond what the check foresaw
        why = f"{type(e).__name__}: {e}"
    if why is None:
        return True
    log.warn(
        "Twisted {twisted_version} lacks what tsecho's direct sending relies on ({why}): connections use "
        "Twisted's own transport.write and loseConnection, without sending replies in the turn that read "
        "their lines (slower, the same replies)",
        twisted_version=twisted.__version__,
        why=why,
    )
    return False


def direct_socket(transport: object) -> socket.socket | None:
    """
    The socket under C{transport}, if replies may be sent on it directly: a
    plain TCP or UNIX connection of Twisted's POSIX reactors, without TLS.
    Anything else (TLS, the PROXY-protocol wrapper, test doubles) gets none.
    """
    if isinstance(transport, tcp.Connection) and not transport.TLS and available():
        handle = transport.getHandle()
        if isinstance(handle, socket.socket):
            return handle
    return None


def close_now(transport: object) -> None:
    """
    Close C{transport}, one that L{direct_socket} gave a socket for, at once:
    all of its replies went straight to the socket (its buffer is empty) and
    its client has ended its input, so nothing is left to send or to linger
    for.  This is what Twisted's own C{loseConnection} does once the sending
    side is already shut.
    """
    assert isinstance(transport, tcp.Connection)  # what gave us the socket
    transport.stopReading()
    transport.stopWriting()
    transport.connectionLost(connectionDone)


def reset_by_peer(transport: object) -> bool:
    """
    Whether the kernel has already reset the TCP connection under
    C{transport} (a plain, TLS or PROXY-wrapped one), though the reactor may
    not have read that yet.  Linux only (C{TCP_INFO}); elsewhere, never.
    """
    for _ in range(3):  # through the PROXY and TLS wrappers
        if isinstance(transport, tcp.Connection):
            break
        transport = getattr(transport, "transport", None)
    if not isinstance(transport, tcp.Connection) or not hasattr(socket, "TCP_INFO") or not available():
        return False
    handle = transport.getHandle()
    if not isinstance(handle, socket.socket) or handle.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE
    except OSError:
        return False
