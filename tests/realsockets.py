"""
Helpers for tests over real sockets, in the test's own process.

L{serving} runs the whole server (C{tsecho.tap.Options} and C{makeService}, as
C{twistd tsecho} would) on the running reactor; L{raw_exchange} is a plain
blocking socket client, run in a thread so the reactor keeps serving.
Every socket has a timeout, so a broken server fails a test instead of
hanging it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from twisted.internet import threads

from tsecho.service import TimestampEchoService
from tsecho.tap import Options, makeService

TIMEOUT = 10.0


@asynccontextmanager
async def serving(arguments: Sequence[str]) -> AsyncIterator[TimestampEchoService]:
    """
    Start the server that C{twistd tsecho ARGUMENTS} would build, on the
    global reactor; stop it (gracefully) afterwards.
    """
    from twisted.internet import reactor

    options = Options(reactor)
    options.parseOptions(list(arguments))
    service = makeService(options)
    assert isinstance(service, TimestampEchoService)
    service.privilegedStartService()
    service.startService()
    try:
        yield service
    finally:
        await service.stopService()


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """
    Read from C{sock} until the peer closes (or C{limit} bytes arrived).
    """
    received = bytearray()
    while len(received) < limit:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return bytes(received)


def _exchange(family: int, address: Any, payload: bytes, half_close: bool) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


async def raw_exchange(family: int, address: Any, payload: bytes, half_close: bool = True) -> bytes:
    """
    Connect, send C{payload}, shut down the sending side (unless told not
    to) and return everything received until the server closed.
    """
    result: bytes = await threads.deferToThread(_exchange, family, address, payload, half_close)
    return result


def tcp_port(service: TimestampEchoService, index: int = 0) -> int:
    """
    The port number of the service's C{index}th stream listener.
    """
    port: int = service.ports[index].getHost().port  # type: ignore[attr-defined]
    return port


def has_ipv6_loopback() -> bool:
    """
    Whether this machine can bind a socket to C{::1}.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
