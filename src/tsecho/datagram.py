"""
Timestamp echo over datagrams: UDP and UNIX datagram sockets.

One request datagram gets one reply datagram, C{[TIMESTAMP] PAYLOAD}, built by
the same L{Timestamper.reply} as every stream reply.  A reply is therefore
exactly C{len(prefix) + len(request)} bytes: the server never sends more than
a fixed number of bytes beyond what it received.

L{DatagramListener} runs one datagram port as a child service of
L{tsecho.service.TimestampEchoService}, beside the stream listeners.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP, IReactorUNIXDatagram
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tsecho._listen_errors import explain_listen_failure
from tsecho._logtext import describe_address, escape
from tsecho.timestamps import Timestamper
from tsecho.wire import host_port

MAX_DATAGRAM = 65507
"""
The longest request answered, in bytes: the largest UDP payload over IPv4.
Longer datagrams (possible on UNIX datagram sockets and over IPv6) are
dropped and logged.
"""

log = Logger()


def describe_sender(address: object) -> str:
    """
    Name a datagram's sender for the log: C{127.0.0.1:5555}, C{[::1]:5555},
    a UNIX socket path (escaped: the sender chooses it), or C{unbound
    socket} for a UNIX sender without a name.
    """
    if isinstance(address, tuple) and len(address) >= 2:
        return host_port(escape(str(address[0])), address[1])
    if not address:
        return "unbound socket"
    return escape(address if isinstance(address, (bytes, str)) else str(address))


class _NamedClass(type):
    """
    A class that shows as its bare name: Twisted logs a UNIX datagram port's
    start with C{f"{protocol.__class__} starting on ..."}, which would
    otherwise read C{<class 'tsecho.datagram.TimestampDatagram'>}.
    """

    def __repr__(cls) -> str:
        return cls.__name__


class TimestampDatagram(DatagramProtocol, metaclass=_NamedClass):
    """
    Answer each datagram with C{[TIMESTAMP] PAYLOAD}, PAYLOAD byte for byte.

    A datagram too long to answer, or a reply the socket refuses to send, is
    logged and dropped; the listener keeps going.
    """

    noisy = False

    def __init__(
        self,
        timestamper: Timestamper,
        clock: IReactorTime,
        max_datagram: int = MAX_DATAGRAM,
        quiet: bool = False,
    ) -> None:
        """
        @param timestamper: formats the reply prefix (shared with the streams).
        @param clock: tells the time of each reply.
        @param max_datagram: the longest request answered, in bytes.
        @param quiet: no log line per datagram.
        """
        self.timestamper = timestamper
        self.clock = clock
        self.max_datagram = max_datagram
        self.quiet = quiet
        self.datagrams_answered = 0
        self.datagrams_dropped = 0  # too long, unanswerable, or the reply failed

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        sender = describe_sender(addr)
        if len(datagram) > self.max_datagram:
            log.warn(
                "dropped a datagram from {sender}: longer than {limit} bytes",
                sender=sender,
                limit=self.max_datagram,
            )
            self.datagrams_dropped += 1
            return
        if not addr:
            log.warn("dropped a datagram from an unbound UNIX socket: it cannot be answered")
            self.datagrams_dropped += 1
            return
        if not self.quiet:
            log.info("datagram from {sender}, {length} bytes", sender=sender, length=len(datagram))
        reply = self.timestamper.reply(self.clock.seconds(), datagram)
        assert self.transport is not None
        try:
            self.transport.write(reply, addr)
        except (error.MessageLengthError, OSError) as e:
            log.warn(
                "could not answer {sender} ({length} bytes): {error}",
                sender=sender,
                length=len(reply),
                error=e,
            )
            self.datagrams_dropped += 1
            return
        self.datagrams_answered += 1


class DatagramListenError(Exception):
    """
    A datagram listener could not be opened; the message names it and why.
    """


class DatagramListener(Service):
    """
    Run one datagram port (or another port opened at once, like C{--metrics})
    as a service: open it before privileges are shed, close it on stop and
    then clean up after it.

    @ivar description: names the listener in logs and errors,
        e.g. C{udp:21567} or C{unix-datagram:/run/tsecho.dgram}.
    @ivar port: the listening port while running.
    """

    def __init__(
        self,
        description: str,
        listen: Callable[[], IListeningPort],
        prepare: Callable[[], None] | None = None,
        cleanup: Callable[[], None] | None = None,
        logger: Logger = log,
        *,
        tcp: bool = False,
    ) -> None:
        """
        @param listen: opens the port.
        @param prepare: runs before L{listen}, e.g. to clear a stale socket file.
        @param cleanup: runs once the port has closed.
        @param logger: logs C{listening on ...} (under its namespace).
        @param tcp: whether the port is a TCP one (C{--metrics}), which the
            stream listeners' ports may clash with.
        """
        self.description = description
        self._tcp = tcp
        self._listen = listen
        self._prepare = prepare
        self._cleanup = cleanup
        self._log = logger
        self.port: IListeningPort | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._open()

    def _open(self) -> None:
        try:
            if self._prepare is not None:
                self._prepare()
            self.port = self._listen()
        except (error.CannotListenError, OSError, OverflowError) as e:  # OverflowError: bind() to a port past 65535
            own = getattr(self.parent, "listening", ()) if self._tcp else ()
            reason = explain_listen_failure(Failure(e), own)
            raise DatagramListenError(f"cannot listen on {self.description}: {reason}") from None
        self._log.info(
            "listening on {description} ({address})",
            description=self.description,
            address=describe_address(self.port.getHost()),
        )

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        stopping = port.stopListening()
        stopped: defer.Deferred[None] = defer.succeed(None) if stopping is None else stopping
        if self._cleanup is not None:
            cleanup = self._cleanup
            stopped.addCallback(lambda _: cleanup())
        return stopped


@attrs.frozen
class UDPAddress:
    """
    Where C{--udp} listens.

    @ivar interface: the address to bind, or C{""} for every IPv4 interface.
    @ivar port: the port (0 picks a free one).
    """

    interface: str
    port: int


_MAX_PORT = 65535


def parse_udp_address(text: str) -> UDPAddress:
    """
    Read C{--udp}'s value: C{PORT} (every IPv4 interface), C{ADDRESS:PORT}
    or C{[IPV6-ADDRESS]:PORT}.

    @raise ValueError: naming what is wrong and how to write it.
    """
    forms = "give PORT, ADDRESS:PORT or [IPV6-ADDRESS]:PORT"
    if text.startswith("["):
        host, bracket_colon, port_text = text[1:].partition("]:")
        if not bracket_colon:
            raise ValueError("write an IPv6 address and its port as [ADDRESS]:PORT, e.g. [::1]:21567")
        if ":" not in host:
            raise ValueError("brackets are for IPv6 addresses; write an IPv4 one as ADDRESS:PORT")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError("put an IPv6 address in brackets: [ADDRESS]:PORT, e.g. [::1]:21567")
    else:
        host, port_text = "", text
    if host or text.startswith((":", "[")):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address; {forms}") from None
    if not (port_text.isascii() and port_text.isdigit() and int(port_text) <= _MAX_PORT):
        raise ValueError(f"{port_text!r} is not a port number (0-65535); {forms}")
    return UDPAddress(host, int(port_text))


def udp_listener(
    reactor: IReactorUDP,
    port: int,
    protocol: TimestampDatagram,
    interface: str = "",
) -> DatagramListener:
    """
    A L{DatagramListener} answering UDP on C{port} (all IPv4 interfaces by
    default, or C{interface}, an IPv4 or IPv6 address; port 0 picks a free
    one, named in the log).
    """

    def listen() -> IListeningPort:
        return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=protocol.max_datagram + 1)

    return DatagramListener(f"udp:{port}" + (f":interface={interface}" if interface else ""), listen)


def unix_datagram_listener(
    reactor: IReactorUNIXDatagram,
    path: str,
    protocol: TimestampDatagram,
    mode: int = 0o666,
) -> DatagramListener:
    """
    A L{DatagramListener} answering on a UNIX datagram socket at C{path}.

    A socket file left by a crashed run is removed before binding (see
    L{remove_stale_socket}); the socket file is removed when the listener
    stops.  The file gets C{mode} (like the C{unix:} stream endpoint's
    default, anyone who can reach the directory may send): restrict access
    with the directory's permissions.
    """
    bound: list[os.stat_result] = []

    def listen() -> IListeningPort:
        listening = reactor.listenUNIXDatagram(path, protocol, maxPacketSize=protocol.max_datagram + 1, mode=mode)
        bound.append(os.stat(path))
        return listening

    def cleanup() -> None:
        # Remove the file only if it is still ours, not a newer server's.
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return
        if bound and (now.st_dev, now.st_ino) == (bound[-1].st_dev, bound[-1].st_ino):
            os.unlink(path)

    return DatagramListener(f"unix-datagram:{path}", listen, lambda: remove_stale_socket(path), cleanup)


def remove_stale_socket(path: str) -> None:
    """
    Remove a UNIX datagram socket file at C{path} that no process is bound
    to any more, so that a crashed run does not stop the next start-up.

    @raise DatagramListenError: if C{path} is not a socket (never removed),
        or if another process is bound to it.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise DatagramListenError(f"cannot listen on unix-datagram:{path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        log.info("removing stale socket {path}", path=path)
        os.unlink(path)
        return
    except OSError as e:
        if e.errno != errno.EPROTOTYPE:
            raise
    finally:
        probe.close()
    raise DatagramListenError(f"cannot listen on unix-datagram:{path}: another process is bound to it")
