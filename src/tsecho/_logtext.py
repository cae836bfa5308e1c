"""
Text a client controls, made safe for a log line.

Peer addresses claimed by PROXY headers, the paths UNIX clients bind, and
anything else a client chooses can hold newlines (a forged second log line)
or terminal escape sequences (ESC ...) that rewrite what an operator sees.
L{escape} is the one function every such text goes through before it is
logged; L{describe_address} names a peer with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tsecho.wire import host_port

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress


def escape(text: str | bytes) -> str:
    """
    C{text} with every character that is not printable -- control
    characters such as newline, carriage return and ESC, and Unicode's
    other invisible and separator characters -- and the backslash written
    as Python escapes (C{\\n}, C{\\x1b}, C{\\u2028}, C{\\\\}), so that the
    result is one line that shows exactly what was sent.  Bytes are decoded
    as UTF-8; bytes that are not UTF-8 become C{\\xNN}.
    """
    if isinstance(text, bytes):
        shown = text.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    else:
        shown = text.replace("\\", "\\\\")
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)


def describe_address(address: IAddress) -> str:
    """
    Name a peer for the log: C{127.0.0.1:5555}, C{[::1]:5555}, or a UNIX path,
    escaped (a client chooses its path, and a PROXY header its address).
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return host_port(escape(host), port)
    name = getattr(address, "name", None)
    return escape(name) if name else "unix socket"
