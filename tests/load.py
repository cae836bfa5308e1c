"""
Plain-socket load for the tests of C{--workers}: clients that keep a
connection and answer-wait line after line (reconnecting when the server
closes), and a client that connects, sends one line and closes, over and
over.  Each records what it sent and got, so that a test can tell refused
connections and unanswered lines apart.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import attrs

REPLY = re.compile(rb"\[[^]]+\] (.*)\r\n")


@attrs.define
class Connection:
    """
    One connection of a client: its local port (which the server logs), the
    lines it sent and the replies it got, and how it ended.
    """

    port: int
    sent: int = 0
    answered: int = 0
    ended: str = ""  # "" (we closed), "eof", or the error


def _read_reply(sock: socket.socket, buffer: bytearray) -> bytes | None:
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line + b"\n"


class Load:
    """
    C{persistent} clients that each send a line and wait for its reply, over
    and over, and one client that connects per line, until L{stop}.

    @ivar connections: every persistent connection made.
    @ivar wrong: replies that did not echo the line they answer.
    @ivar refused: connections that could not be made (any client).
    @ivar one_shot: lines sent (or tried, on a connection made) and answered
        on connect-per-line connections.
    @ivar broken: the local port and error of each connect-per-line
        connection that failed after it was made.
    """

    def __init__(self, address: tuple[str, int], persistent: int) -> None:
        self.address = address
        self.connections: list[Connection] = []
        self.wrong: list[bytes] = []
        self.refused: list[str] = []
        self.one_shot = [0, 0]
        self.broken: list[tuple[int, str]] = []
        self._running = True
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._persistent, args=(c,)) for c in range(persistent)]
        self._threads.append(threading.Thread(target=self._connect_per_line))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """
        Stop every client (each finishes the line it is waiting for).
        """
        self._running = False
        for thread in self._threads:
            thread.join(60)

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(self.address, timeout=30)
        except OSError as e:
            with self._lock:
                self.refused.append(repr(e))
            time.sleep(0.05)
            return None

    def _persistent(self, client: int) -> None:
        number = 0
        while self._running:
            sock = self._connect()
            if sock is None:
                continue
            connection = Connection(sock.getsockname()[1])
            with self._lock:
                self.connections.append(connection)
            buffer = bytearray()
            with sock:
                try:
                    while self._running:
                        line = b"client %d line %d" % (client, number)
                        number += 1
                        sock.sendall(line + b"\r\n")
                        connection.sent += 1
                        reply = _read_reply(sock, buffer)
                        if reply is None:
                            connection.ended = "eof"
                            break
                        self._check(reply, line)
                        connection.answered += 1
                except OSError as e:
                    connection.ended = repr(e)

    def _connect_per_line(self) -> None:
        number = 0
        while self._running:
            sock = self._connect()
            if sock is None:
                continue
            line = b"one-shot %d" % number
            number += 1
            with sock:
                port = sock.getsockname()[1]
                self.one_shot[0] += 1  # counted before sending: a reset may fail the send or the shutdown
                try:
                    sock.sendall(line + b"\r\n")
                    sock.shutdown(socket.SHUT_WR)
                    reply = _read_reply(sock, bytearray())
                except OSError as e:
                    reply = None
                    self.broken.append((port, repr(e)))
            if reply is not None:
                self._check(reply, line)
                self.one_shot[1] += 1

    def _check(self, reply: bytes, line: bytes) -> None:
        match = REPLY.fullmatch(reply)
        if match is None or match[1] != line:
            with self._lock:
                self.wrong.append(reply)
