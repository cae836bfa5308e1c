"""
C{twistd tsecho}: its options and the service they build.

The plugin in C{twisted/plugins/tsecho_plugin.py} points here lazily, so
nothing below is imported until someone runs C{twistd tsecho}.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import IService
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python import usage

from tsecho.cli import stdout_may_close
from tsecho.datagram import TimestampDatagram, udp_listener, unix_datagram_listener
from tsecho.protocol import DEFAULT_PORT, ServerConfig, TimestampEchoFactory
from tsecho.proxy import server_from_string
from tsecho.service import TimestampEchoService
from tsecho.timestamps import Timestamper, validate_time_format


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


class Options(usage.Options):
    """
    The command line of C{twistd tsecho}; see SPEC.md's options table.
    """

    synopsis = "[--port N | --listen DESCRIPTION ...] [options]"
    longdesc = (
        "A timestamp echo server: every line a client sends comes back as "
        "'[TIMESTAMP] LINE'. With neither --port nor --listen it serves TCP "
        f"port {DEFAULT_PORT} on all interfaces."
    )

    optFlags = [
        ["one-shot", None, "Close each connection after its first reply (like socketserver)."],
        ["utc", None, "Timestamps in UTC instead of local time."],
        ["quiet", "q", "No per-connection log lines."],
    ]
    optParameters: list[list[Any]] = [
        [
            "port",
            "p",
            None,
            f"TCP port on all interfaces; may be combined with --listen [default: {DEFAULT_PORT} when no --listen]",
            usage.portCoerce,
        ],
        ["udp", None, None, "Also answer UDP datagrams on this port [default: off]", usage.portCoerce],
        ["unix-datagram", None, None, "Also answer datagrams on a UNIX datagram socket at this path [default: off]"],
        ["time-format", None, "ctime", "'ctime', 'iso' (RFC 3339) or a strftime pattern", validate_time_format],
        ["max-line", None, 16384, "Longest request line, in bytes", _positive_int],
        ["max-connections", None, 10000, "Concurrent stream connections before 'ERROR server busy'", _positive_int],
        ["timeout", None, 300, "Close a connection idle this many seconds; 0 never", _seconds],
        ["workers", None, 1, "Worker processes serving every listener; 1 = this process alone", _workers],
    ]

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: the reactor to listen on and take the time from
            (tests pass a L{MemoryReactorClock}); the global one by default.
        """
        super().__init__()
        self["listen"] = []
        self.reactor = reactor

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse C{options}.  As a C{twistd} command, a usage error ends the
        process here with one line on standard error and exit status 1
        (C{twistd} itself would print its whole usage first, and before
        Twisted 26 exit 0); used on its own, this raises L{usage.UsageError}.
        """
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            with stdout_may_close():
                super().parseOptions(options)
        except usage.UsageError as e:
            if self.parent is None:
                raise
            raise SystemExit(f"twistd tsecho: {e} (see twistd tsecho --help)") from None

    def opt_listen(self, description: str) -> None:
        """
        Listen on a Twisted server endpoint, e.g. tcp:21567:interface=127.0.0.1,
        tcp6:21567, unix:/run/tsecho.sock, ssl:21568:privateKey=key.pem:certKey=cert.pem,
        systemd:domain=INET:index=0, haproxy:tcp:21567. Repeatable.
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        descriptions = list(self["listen"])
        if self["port"] is not None:
            descriptions.insert(0, f"tcp:{self['port']}")
        elif not descriptions:
            descriptions.append(f"tcp:{DEFAULT_PORT}")
        self["endpoints"] = [(d, self._endpoint(d)) for d in descriptions]
        if self["max-connections"] < self["workers"]:
            raise usage.UsageError(
                f"--max-connections {self['max-connections']} is less than --workers {self['workers']}: "
                "each worker needs at least one connection"
            )

    def _endpoint(self, description: str) -> IStreamServerEndpoint:
        if self.reactor is None:
            from twisted.internet import reactor

            self.reactor = reactor
        try:
            return server_from_string(self.reactor, description)
        except Exception as e:
            raise usage.UsageError(f"--listen {description!r}: {e or type(e).__name__}") from None

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


def makeService(options: Options) -> IService:
    """
    Build the whole server from parsed L{Options}.
    """
    reactor = options.reactor
    if reactor is None:
        from twisted.internet import reactor
    timestamper = Timestamper(options["time-format"], bool(options["utc"]))
    factory = TimestampEchoFactory(options.config(), timestamper, reactor)
    service = TimestampEchoService(factory, options["endpoints"], reactor)
    # Datagram listeners are child services, opened with the stream ones.
    quiet = bool(options["quiet"])
    if options["udp"] is not None:
        answer = TimestampDatagram(timestamper, reactor, quiet=quiet)
        udp_listener(reactor, options["udp"], answer).setServiceParent(service)
    if options["unix-datagram"] is not None:
        answer = TimestampDatagram(timestamper, reactor, quiet=quiet)
        unix_datagram_listener(reactor, options["unix-datagram"], answer).setServiceParent(service)
    if options["workers"] > 1:
        from tsecho.workers import WorkerPool

        return WorkerPool(service, options["workers"], options.arguments, reactor, options["max-connections"])
    return service
