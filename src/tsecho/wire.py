"""
What both ends of a tsecho connection agree on (docs/SPEC.md): the default
port, line endings, the C{ERROR} lines, and how a host and port are written.

The server, its listeners and the client all take these from here, so the
wire format is written down once.  This module imports nothing of tsecho (and
nothing of Twisted), so that the client can use it without loading the server.
"""

from __future__ import annotations

#: The server's port when none is given, the original's.
DEFAULT_PORT = 21567

#: Line endings: a request line ends in either; a reply ends as its request did.
LF = b"\n"
CRLF = b"\r\n"

#: How every error line of the server starts (every other reply starts with C{[}).
ERROR_PREFIX = b"ERROR "

#: The line a stream connection over the server's connection limit gets, before it is closed.
BUSY = ERROR_PREFIX + b"server busy" + CRLF


def line_too_long(limit: int) -> bytes:
    """
    The line that answers a request line longer than C{limit} bytes, before
    the connection is closed: C{ERROR line too long (limit 16384 bytes)\\r\\n}.
    """
    return ERROR_PREFIX + b"line too long (limit %d bytes)" % limit + CRLF


def host_port(host: str, port: int) -> str:
    """
    Write an address as C{HOST:PORT}, an IPv6 address in brackets:
    C{127.0.0.1:21567}, C{localhost:21567}, C{[::1]:21567}.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
