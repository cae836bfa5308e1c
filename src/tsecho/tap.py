"""
C{twistd tsecho}: its options and the service they build.

The plugin in C{twisted/plugins/tsecho_plugin.py} points here lazily, so
nothing below is imported until someone runs C{twistd tsecho}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python import usage

from tsecho._cli import port_number, stdout_may_close, usage_error_text, version_text
from tsecho._endpoint_errors import any_port, explain_description_error
from tsecho._signals import stop_once
from tsecho._startup import keep_stderr
from tsecho.datagram import TimestampDatagram, parse_udp_address, udp_listener, unix_datagram_listener
from tsecho.listeners import server_from_string
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.service import TimestampEchoService
from tsecho.timestamps import Timestamper, validate_time_format
from tsecho.wire import DEFAULT_PORT

if TYPE_CHECKING:
    from tsecho.workers import WorkerPool


def _number(kind: Callable[[str], float], minimum: float, what: str) -> Callable[[str], Any]:
    def coerce(value: str) -> float:
        try:
            number = kind(value)
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
        if not number >= minimum:  # also refuses NaN
            raise ValueError(f"{value!r} is not {what}")
        return number

    coerce.coerceDoc = f"Must be {what}."  # type: ignore[attr-defined]
    return coerce


_positive_int = _number(int, 1, "a positive whole number")
_seconds = _number(float, 0, "a number of seconds, 0 or more")
_worker_count = _number(int, 1, "a positive whole number of workers, or 'auto'")


def _workers(value: str) -> int:
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(_worker_count(value))


_workers.coerceDoc = "A positive whole number, or 'auto' (one per CPU this process may run on)."  # type: ignore[attr-defined]

_DEFAULTS = ServerConfig()  # the defaults are written once, in ServerConfig (the timeout in whole seconds, for --help)


@contextmanager
def _one_line_usage_errors(options: usage.Options) -> Iterator[None]:
    """
    As a C{twistd} command (C{options} with a parent), a usage error ends the
    process with one line on standard error and exit status 1 (C{twistd}
    itself would print its whole usage first, and before Twisted 26 exit 0);
    used on its own, L{usage.UsageError} is raised.
    """
    try:
        yield
    except usage.UsageError as e:
        if options.parent is None:
            raise
        raise SystemExit(f"twistd tsecho: {usage_error_text(e)} (see twistd tsecho --help)") from None


def _port_option(port: int | None, listen: bool) -> str:
    """
    How the TCP port of C{--port} was asked for: C{--port P}, the default
    port (no C{--listen}), or C{""} for none.
    """
    if port is not None:
        return f"--port {port}"
    return "" if listen else f"the default port {DEFAULT_PORT}"


class Options(usage.Options):
    """
    The command line of C{twistd tsecho}; see SPEC.md's options table.
    """

    synopsis = "[--port N | --listen DESCRIPTION ...] [options]"
    longdesc = (
        "A timestamp echo server: every line a client sends comes back as "
        "'[TIMESTAMP] LINE'. With neither --port nor --listen it serves TCP "
        f"port {DEFAULT_PORT} on all IPv4 interfaces."
    )

    optFlags = [
        ["one-shot", None, "Close each connection after its first reply (like socketserver)."],
        ["utc", None, "Timestamps in UTC instead of local time."],
        ["quiet", "q", "No per-connection log lines."],
    ]
    optParameters: list[list[Any]] = [
        ["unix-datagram", None, None, "Also answer datagrams on a UNIX datagram socket at this path [default: off]"],
        ["time-format", None, "ctime", "'ctime', 'iso' (RFC 3339) or a strftime pattern", validate_time_format],
        ["max-line", None, _DEFAULTS.max_line, "Longest request line, in bytes", _positive_int],
        [
            "max-connections",
            None,
            _DEFAULTS.max_connections,
            "Concurrent stream connections before 'ERROR server busy'",
            _positive_int,
        ],
        [
            "timeout",
            None,
            int(_DEFAULTS.timeout),
            "Close a connection idle this many seconds; 0 never",
            _seconds,
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this endpoint, e.g. tcp:9121:interface=127.0.0.1 [default: off]",
        ],
        ["workers", None, 1, "Worker processes serving every listener; 1 = this process alone", _workers],
    ]

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: the reactor to listen on and take the time from
            (tests pass a L{MemoryReactorClock}); the global one by default.
        """
        super().__init__()
        self["listen"] = []
        self["udp"] = None
        self["port"] = None
        self.reactor = reactor
        self._given: dict[str, str] = {}  # --port and --udp as typed, to name both when one is repeated

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}: a usage error is one line (L{_one_line_usage_errors}).
        """
        self.arguments = list(sys.argv[1:] if options is None else options)
        with _one_line_usage_errors(self), stdout_may_close():
            super().parseOptions(options)

    def opt_version(self) -> None:
        """
        Display the versions of tsecho, Twisted and Python, and exit.
        """
        print(version_text())
        raise SystemExit(0)

    def opt_listen(self, description: str) -> None:
        """
        Listen on a Twisted server endpoint, e.g. tcp:21567:interface=127.0.0.1,
        tcp6:21567, unix:/run/tsecho.sock, ssl:21568:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0, haproxy:tcp:21567. Repeatable.
        """
        self["listen"].append(description)

    # --help would keep the docstring's line breaks and indentation as runs of spaces.
    opt_listen.__doc__ = " ".join((opt_listen.__doc__ or "").split())

    def opt_port(self, port: str) -> None:
        self._once("port", port, "give it once, and --listen tcp:PORT for each other port")
        try:
            self["port"] = port_number(port)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    opt_port.__doc__ = (
        f"TCP port on all IPv4 interfaces; may be combined with --listen [default: {DEFAULT_PORT} when no --listen]. "
        f"{port_number.coerceDoc}"  # type: ignore[attr-defined]
    )
    opt_p = opt_port

    def opt_udp(self, address: str) -> None:
        """
        Also answer UDP datagrams on PORT (every IPv4 interface), ADDRESS:PORT or [IPV6-ADDRESS]:PORT [default: off]
        """
        self._once("udp", address, "tsecho answers datagrams on one UDP address")
        try:
            self["udp"] = parse_udp_address(address)
        except ValueError as e:
            raise usage.UsageError(f"--udp {address!r}: {e}") from None

    def _once(self, option: str, value: str, advice: str) -> None:
        """
        Refuse C{--OPTION value} if the option was given before (the last
        one would silently win).
        """
        if option in self._given:
            raise usage.UsageError(f"--{option} is given twice ({self._given[option]} and {value}): {advice}")
        self._given[option] = value

    def _refuse_clashes(self) -> None:
        """
        Refuse two listeners given the same description (C{--port P} is
        C{tcp:P}): the second would fail at start-up, seemingly because of
        another program.  Descriptions of port 0 (any free port) may repeat.
        """
        given = [(f"--listen {d}", d) for d in self["listen"]]
        port = DEFAULT_PORT if self["port"] is None else self["port"]
        given.insert(0, (_port_option(self["port"], bool(given)), f"tcp:{port}"))
        if self["metrics"] is not None:
            given.append((f"--metrics {self['metrics']}", self["metrics"]))
        seen: dict[str, str] = {}
        for option, description in given:
            if not option or any_port(description):
                continue
            if description in seen:
                earlier = seen[description]
                clash = "is given twice" if earlier == option else f"is also given by {earlier}"
                raise usage.UsageError(f"{option} {clash}: each listener needs a port (or socket path) of its own")
            seen[description] = option

    def postOptions(self) -> None:
        self._refuse_clashes()
        if self["max-connections"] < self["workers"]:
            raise usage.UsageError(
                f"--max-connections {self['max-connections']} is less than --workers {self['workers']}: "
                "each worker needs at least one connection"
            )

    def stream_descriptions(self) -> list[str]:
        """
        The stream listeners asked for, in order: C{--port}, then each C{--listen};
        with neither, the default port (L{DEFAULT_PORT}) on all interfaces.
        """
        descriptions = list(self["listen"])
        if self["port"] is not None:
            descriptions.insert(0, f"tcp:{self['port']}")
        elif not descriptions:
            descriptions.append(f"tcp:{DEFAULT_PORT}")
        return descriptions

    def endpoints(self) -> list[tuple[str, IStreamServerEndpoint]]:
        """
        Build the stream listeners' endpoints (called once, by L{makeService}).

        @raise usage.UsageError: naming a description Twisted refuses, and why.
        """
        return [(d, self._endpoint(d)) for d in self.stream_descriptions()]

    def metrics_endpoint(self) -> IStreamServerEndpoint | None:
        """
        Build the C{--metrics} endpoint, if asked for.

        @raise usage.UsageError: naming a description Twisted refuses, and why.
        """
        return None if self["metrics"] is None else self._endpoint(self["metrics"], "--metrics")

    def _endpoint(self, description: str, option: str = "--listen") -> IStreamServerEndpoint:
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        if not description:
            raise usage.UsageError(f"--listen needs an endpoint description, such as tcp:{DEFAULT_PORT}")
        try:
            return server_from_string(self.reactor, description)
        except Exception as e:
            raise usage.UsageError(f"{option} {description}: {explain_description_error(description, e)}") from None

    def config(self) -> ServerConfig:
        """
        The per-connection settings these options ask for.
        """
        return ServerConfig(
            max_line=self["max-line"],
            max_connections=self["max-connections"],
            timeout=self["timeout"],
            one_shot=bool(self["one-shot"]),
            quiet=bool(self["quiet"]),
        )


def _datagram_listeners(
    options: Options, timestamper: Timestamper, reactor: Any
) -> list[tuple[TimestampDatagram, Any]]:
    """
    The C{--udp} and C{--unix-datagram} listeners asked for, each with the protocol that answers.
    """
    quiet = bool(options["quiet"])
    listeners = []
    if options["udp"] is not None:
        answer = TimestampDatagram(timestamper, reactor, quiet=quiet)
        udp = options["udp"]
        listeners.append((answer, udp_listener(reactor, udp.port, answer, udp.interface)))
    if options["unix-datagram"] is not None:
        answer = TimestampDatagram(timestamper, reactor, quiet=quiet)
        listeners.append((answer, unix_datagram_listener(reactor, options["unix-datagram"], answer)))
    return listeners


def makeService(options: Options) -> IService:
    """
    Build the whole server from parsed L{Options}.
    """
    if options.parent is not None:  # a command (twistd, twist): it may daemonize after this
        keep_stderr()
    with _one_line_usage_errors(options):  # a listener description Twisted refuses
        endpoints, metrics_endpoint = options.endpoints(), options.metrics_endpoint()
    reactor = options.reactor  # given, or the global one that building the endpoints took
    timestamper = Timestamper(options["time-format"], bool(options["utc"]))
    factory = TimestampEchoFactory(options.config(), timestamper, reactor)
    service = TimestampEchoService(factory, endpoints, reactor)
    # Datagram listeners and the metrics page are child services, opened with
    # the stream listeners.
    datagram_listeners = _datagram_listeners(options, timestamper, reactor)
    for _, listener in datagram_listeners:
        listener.setServiceParent(service)
    metrics_dir = _add_metrics(options, metrics_endpoint, service, datagram_listeners)
    served: TimestampEchoService | WorkerPool = (
        service if options["workers"] == 1 else _worker_pool(options, service, metrics_dir)
    )
    from tsecho._twistd_logging import default_observer  # twistd internals: only when a server is made

    served.log_observer = default_observer(options.parent, reactor)
    if options.parent is not None:  # a command: its reactor stops on SIGTERM and SIGINT
        stop_once(reactor)
    return served


def _add_metrics(
    options: Options,
    endpoint: IStreamServerEndpoint | None,
    service: TimestampEchoService,
    datagram_listeners: list[tuple[TimestampDatagram, Any]],
) -> str | None:
    """
    With C{--metrics}, count what C{service} serves, and serve the page on
    C{endpoint} (a worker instead exports its counts for the main process to
    serve).  Return the directory where workers will keep their counts, if
    there will be workers.
    """
    if endpoint is None and not options.get("metrics-export"):
        return None
    from tsecho import metrics as m

    factory = service.factory
    metrics = factory.metrics = m.ServerMetrics(factory.connections)
    service.factory_for = lambda description: metrics.listener_factory(factory, description)
    for answer, listener in datagram_listeners:
        metrics.watch_datagrams(listener.description, answer)
    if options.get("metrics-export"):  # a worker: the main process serves the sums
        m.MultiprocessExport(metrics, service.clock).setServiceParent(service)
        return None
    assert endpoint is not None
    metrics_dir = m.make_multiprocess_dir() if options["workers"] > 1 else None
    if metrics_dir is not None:
        site = m.metrics_site(*m.workers_registry(metrics_dir, metrics))
    else:
        site = m.metrics_site(*m.registry_for(metrics))
    m.metrics_listener(options["metrics"], endpoint, site).setServiceParent(service)
    return metrics_dir


def _worker_pool(options: Options, service: TimestampEchoService, metrics_dir: str | None) -> WorkerPool:
    """
    C{--workers N}: worker processes serve what C{service} listens on.
    """
    from tsecho.workers import WorkerPool

    return WorkerPool(
        service,
        options["workers"],
        options.arguments,
        options.reactor,
        options["max-connections"],
        metrics_dir=metrics_dir,
    )
