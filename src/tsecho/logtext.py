"""
Text a client controls, made safe for a log line.

Peer addresses claimed by PROXY headers, the paths UNIX clients bind, and
anything else a client chooses can hold newlines (a forged second log line)
or terminal escape sequences (ESC ...) that rewrite what an operator sees.
L{escape} is the one function every such text goes through before it is
logged.
"""

from __future__ import annotations


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
