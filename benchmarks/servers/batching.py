"""
The batching baseline's work per chunk, shared by its asyncio version
(C{asyncio_protocol.py}) and its Twisted version (C{twisted_protocol.py}), so
that the two differ only in the event loop: split the chunk into lines and
answer all of its complete lines at once; the timestamp prefix is built once
per second.
"""

import time

_cache = [-1, b""]


def prefix() -> bytes:
    now = int(time.time())
    if now != _cache[0]:
        _cache[0] = now
        _cache[1] = b"[" + time.ctime(now).encode() + b"] "
    return _cache[1]


def answer(buffer: bytes, data: bytes) -> tuple[bytes, bytes]:
    """
    Return the unfinished line left after C{buffer + data}, and the replies
    to every complete line in it (C{b""} if there is none).
    """
    lines = (buffer + data).split(b"\n")
    rest = lines.pop()
    if not lines:
        return rest, b""
    p = prefix()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            out += (p, line[:-1], b"\r\n")
        else:
            out += (p, line, b"\n")
    return rest, b"".join(out)
