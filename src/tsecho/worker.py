"""
One worker process of C{twistd tsecho --workers N}.

The main process (L{tsecho.workers}) opens every listener, then starts
workers as C{python -m tsecho.worker SPEC OPTIONS...}: OPTIONS are the
C{twistd tsecho} options it was given, and SPEC (JSON) says which of the
worker's file descriptors hold the listening sockets, in the order of the
listeners.  The worker parses OPTIONS with the same L{tsecho.tap.Options},
builds the same service with L{tsecho.tap.makeService}, but every stream
endpoint is built on an L{AdoptingReactor}: its C{listenTCP}, C{listenSSL},
C{listenUNIX} and C{adoptStreamPort} adopt the inherited socket instead of
binding, so TLS half-close, the PROXY protocol and everything else the
endpoint string asks for works as in a single process.

The worker logs JSON events on its standard output; the main process
re-emits them, naming the worker.  It ignores SIGINT and SIGHUP (the main
process decides) and drains on SIGTERM like a lone C{twistd tsecho}.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReadDescriptor, IStreamServerEndpoint
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tsecho._accept import Balancer, Board

READY = "tsecho_ready"
"""
The field of the log event that tells the main process a worker serves.
"""

log = Logger(namespace="tsecho.worker")


@contextmanager
def nonblocking_sockets() -> Iterator[None]:
    """
    Make the socket objects created meanwhile non-blocking from the start.

    A listening socket's blocking mode belongs to the socket, shared by
    every process that has it.  PyPy's socket objects made from a descriptor
    (C{socket.fromfd}, as Twisted adopts one) switch it to blocking, unless
    the default timeout is 0 (CPython's leave it as it is): the other
    workers would then block in C{accept} whenever they lose the race for a
    connection.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.0)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def socket_family(fd: int) -> int:
    """
    The address family of the socket open on C{fd}.
    """
    with nonblocking_sockets():
        probe = socket.socket(fileno=fd)
    try:
        return int(probe.family)
    finally:
        probe.detach()


@implementer(IListeningPort)
class SharedPathPort:
    """
    An adopted UNIX listening port whose C{stopListening} only stops
    accepting: Twisted's would remove the socket's path, which the main
    process and the other workers still serve.
    """

    def __init__(self, port: Any) -> None:
        self._port = port

    def startListening(self) -> None:
        self._port.startListening()

    def stopListening(self) -> None:
        self._port.stopReading()

    def getHost(self) -> Any:
        return self._port.getHost()


class AdoptingReactor:
    """
    A reactor whose listening calls adopt the one inherited socket C{fd}
    instead of binding; everything else is the wrapped reactor's.
    """

    def __init__(self, reactor: Any, fd: int, owns_fd: bool = False, balancer: Balancer | None = None) -> None:
        """
        @param owns_fd: close C{fd} once it is adopted (a worker's inherited
            descriptor); tests adopt sockets they keep.
        @param balancer: shares the adopted stream port's connections with
            the other workers.
        """
        self._reactor = reactor
        self._fd = fd
        self._owns_fd = owns_fd
        self._balancer = balancer

    def _adopt(self, factory: IProtocolFactory) -> IListeningPort:
        family = socket_family(self._fd)
        with nonblocking_sockets():
            port = self._reactor.adoptStreamPort(self._fd, family, factory)
        if self._balancer is not None:
            self._balancer.add(port)
        self._release_inherited()
        return SharedPathPort(port) if family == socket.AF_UNIX else port

    def _release_inherited(self) -> None:
        """
        Close the inherited descriptor: Twisted adopted a copy of it, and
        once every process has closed its copies the port refuses new
        connections (a worker that stops listening must not keep it open).
        """
        if self._owns_fd:
            os.close(self._fd)

    def listenTCP(self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = "") -> IListeningPort:
        return self._adopt(factory)

    def listenUNIX(self, address: str, factory: IProtocolFactory, *args: Any, **kwargs: Any) -> IListeningPort:
        return self._adopt(factory)

    def listenSSL(self, port: int, factory: IProtocolFactory, contextFactory: Any, **kwargs: Any) -> IListeningPort:  # noqa: N803
        """
        Serve TLS as Twisted's C{listenSSL} does.  (Reached only when
        L{tsecho.tls} cannot keep half-close; otherwise its reactor wraps
        this one and calls L{listenTCP}.)
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        return self._adopt(TLSMemoryBIOFactory(contextFactory, False, factory))

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> IListeningPort:  # noqa: N803
        return self._adopt(factory)

    def listenUDP(
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,  # noqa: N803 (Twisted's name)
    ) -> IListeningPort:
        family = socket_family(self._fd)
        with nonblocking_sockets():
            listening: IListeningPort = self._reactor.adoptDatagramPort(self._fd, family, protocol, maxPacketSize)
        self._release_inherited()
        return listening

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def adoptable(description: str) -> str:
    """
    C{description}, parseable in a worker: a C{systemd:} socket (perhaps
    behind C{haproxy:}) becomes C{tcp:0}, since the C{LISTEN_*} variables
    that name it were the main process's; the worker adopts its copy of the
    socket whatever its address family.
    """
    head, systemd, _ = description.partition("systemd:")
    return head + "tcp:0" if systemd and head in ("", "haproxy:") else description


def worker_options(
    reactor: Any, stream_fds: Sequence[int], udp_fd: int | None, balancer: Balancer | None = None
) -> Any:
    """
    L{tsecho.tap.Options} whose listeners adopt the inherited sockets:
    stream endpoints, in the order given, adopt C{stream_fds} (sharing
    connections through C{balancer}); C{--udp} adopts C{udp_fd};
    C{--unix-datagram} is left to the main process.
    """
    from tsecho.listeners import server_from_string
    from tsecho.tap import Options

    fds = list(stream_fds)

    class WorkerOptions(Options):
        def _endpoint(self, description: str, option: str = "--listen") -> IStreamServerEndpoint:
            if not fds:
                raise usage.UsageError(f"{option} {description}: no inherited socket for it")
            adopting = AdoptingReactor(reactor, fds.pop(0), owns_fd=True, balancer=balancer)
            return server_from_string(adopting, adoptable(description))

        def postOptions(self) -> None:
            # The main process serves the page; this worker adds its counts
            # to the files in PROMETHEUS_MULTIPROC_DIR that the page sums.
            self["metrics-export"] = self["metrics"] is not None and "PROMETHEUS_MULTIPROC_DIR" in os.environ
            self["metrics"] = None
            super().postOptions()
            self["unix-datagram"] = None  # answered by the main process

    return WorkerOptions(reactor if udp_fd is None else AdoptingReactor(reactor, udp_fd, owns_fd=True))


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run one worker: C{argv} is C{[SPEC, OPTION...]}.  With C{"check": true}
    in SPEC, only import everything and parse the options (the main process
    does this once before starting workers, to fail start-up in one line).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(arguments.pop(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if spec.get("reactor"):
        from twisted.application.reactors import installReactor

        installReactor(spec["reactor"])

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, jsonFileLogObserver

    from tsecho.tap import makeService

    balancer = balancer_from(spec, reactor)
    options = worker_options(reactor, spec["stream"], spec.get("udp"), balancer)
    try:
        options.parseOptions(arguments)
        service = None if spec.get("check") else makeService(options)  # makeService builds the listeners
    except usage.UsageError as e:
        print(f"tsecho worker: {e}", file=sys.stderr)
        return 1
    if service is None:
        return 0
    globalLogBeginner.beginLoggingTo([jsonFileLogObserver(sys.stdout)], redirectStandardIO=False)
    service.privilegedStartService()  # adopts the listening sockets
    if balancer is not None:
        reactor.addSystemEventTrigger("before", "shutdown", balancer.stop)  # before the listeners close
        count_connections(balancer, service.factory)  # type: ignore[attr-defined]
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    stop = stop_on_signal(reactor)
    reactor.addReader(ParentWatch(0, stop))
    if balancer is not None:
        balancer.publish()  # its peers count it in from now on
    log.info("serving", **{READY: True})
    reactor.run(installSignalHandlers=False)  # type: ignore[call-arg]
    return 0


def balancer_from(spec: dict[str, Any], reactor: Any) -> Balancer | None:
    """
    This worker's side of the board its SPEC names (C{board}: the
    descriptor, which is closed once the board is mapped; C{rows}; and its
    C{row}), if any.
    """
    if spec.get("row") is None or spec.get("check"):
        return None
    board = Board(spec["board"], spec["rows"])
    os.close(spec["board"])
    return Balancer(board, spec["row"], reactor)


def count_connections(balancer: Balancer, factory: Any) -> None:
    """
    Tell C{balancer} how many connections this worker holds: those
    C{factory} (the worker's L{tsecho.protocol.TimestampEchoFactory})
    admitted, and those still sending their PROXY header on a C{haproxy:}
    listener; and its share of C{--max-connections}.
    """
    from tsecho._proxy import ProxyWrappingFactory

    proxies = []
    for port in balancer.ports:
        wrapper = port.factory
        while wrapper is not None:  # haproxy: under ssl: is wrapped in TLS
            if isinstance(wrapper, ProxyWrappingFactory):
                proxies.append(wrapper)
                wrapper.on_release = balancer.released
            wrapper = getattr(wrapper, "wrappedFactory", None)
    connections = factory.connections
    if proxies:
        balancer.holding = lambda: len(connections) + sum(proxy.pending for proxy in proxies)
    else:
        balancer.holding = connections.__len__
    factory.on_release = balancer.released
    balancer.limit = factory.config.max_connections


def stop_on_signal(reactor: Any) -> Callable[[], bool]:
    """
    Stop C{reactor} (gracefully) on the first SIGTERM, and ignore the ones
    that follow: a worker may get it twice, from the main process and from a
    service manager that signals the whole process group.  Return the
    function that stops it (and says whether it was running).
    """
    stopping: list[bool] = []

    def stop() -> bool:
        if stopping:
            return False
        stopping.append(True)
        reactor.stop()
        return True

    signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stop))
    return stop


@implementer(IReadDescriptor)
class ParentWatch:
    """
    Watch the pipe from the main process on C{fd} (which it never writes
    to): its end means the main process is gone, killed perhaps, and the
    worker then stops (gracefully) instead of serving on as an orphan.
    """

    def __init__(self, fd: int, gone: Callable[[], bool]) -> None:
        """
        @param gone: stops the worker; returns whether it was running.
        """
        self.fd = fd
        self.gone = gone

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> Any:
        return None if os.read(self.fd, 4096) else CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        if self.gone():  # else the worker was stopping already
            log.warn("the main process is gone: stopping")

    def logPrefix(self) -> str:
        return "ParentWatch"


if __name__ == "__main__":
    sys.exit(main())
