"""
Tests for L{tsecho.metrics}: what is counted, the Prometheus text a scrape
gets, several processes summed, and C{--metrics} on the real C{twistd}.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from unittest import mock

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from serverprocess import exchange, running_server
from test_workers import exchange as stream_exchange
from tsecho._tally import NO_METRICS, Ending
from tsecho.datagram import TimestampDatagram
from tsecho.metrics import (
    MetricsPage,
    MultiprocessExport,
    ServerMetrics,
    metrics_listener,
    metrics_site,
    multiprocess_registry,
    registry_for,
    worker_exited,
    workers_registry,
)
from tsecho.protocol import ServerConfig, TimestampEchoFactory
from tsecho.service import TimestampEchoService
from tsecho.tap import Options, makeService
from tsecho.testing import connect, make_factory
from tsecho.timestamps import Timestamper
from tsecho.worker import worker_options
from tsecho.workers import WorkerPool

REASONS = [ending.value for ending in Ending]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Every sample of a Prometheus text exposition, parsed by
    C{prometheus_client}'s own parser: C{(name, sorted labels) -> value}.
    """
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def tsecho_values(text: str) -> dict[str, float]:
    """
    The C{tsecho_} samples, keyed C{name} or C{name{label=value}}.
    """
    values = {}
    for (name, labels), value in samples(text).items():
        if name.startswith("tsecho_"):
            suffix = ",".join(f"{k}={v}" for k, v in labels)
            values[f"{name}{{{suffix}}}" if suffix else name] = value
    return values


TCP = "tcp:0:interface=127.0.0.1"
UNIT = "tcp:21567"  # the listener of the in-memory tests


def expected(listener: str = TCP, **counts: float) -> dict[str, float]:
    """
    Every C{tsecho_} stream sample a scrape has for C{listener}, zero unless
    given (C{NAME=VALUE} for C{tsecho_NAME{listener=LISTENER}}); C{closed_REASON}
    keys give the C{tsecho_connections_closed_total} samples.
    """
    names = [
        "connections_accepted_total",
        "connections_refused_total",
        "connections_open",
        "lines_answered_total",
        "received_bytes_total",
        "sent_bytes_total",
        "lines_too_long_total",
    ]
    values = {f"tsecho_{name}{{listener={listener}}}": 0.0 for name in names}
    for reason in REASONS:
        values[f"tsecho_connections_closed_total{{listener={listener},reason={reason}}}"] = counts.pop(
            "closed_" + reason.replace(" ", "_").replace("-", "_"), 0.0
        )
    for name, value in counts.items():
        values[f"tsecho_{name}{{listener={listener}}}"] = value
    return values


def open_connections(values: dict[str, float]) -> float:
    """
    The open connections of every listener.
    """
    return sum(v for k, v in values.items() if k.startswith("tsecho_connections_open{"))


def without_durations(values: dict[str, float]) -> dict[str, float]:
    """
    C{values} but the connection duration histogram.
    """
    return {k: v for k, v in values.items() if not k.startswith("tsecho_connection_duration")}


class ServerMetricsTests(SynchronousTestCase):
    """
    L{ServerMetrics} counts what the connections of a factory did, live.
    """

    def setUp(self) -> None:
        self.factory = make_factory(ServerConfig(max_line=4, max_connections=2, timeout=10))
        self.metrics = ServerMetrics(self.factory.connections)
        self.factory.metrics = self.metrics
        self.listener = cast(TimestampEchoFactory, self.metrics.listener_factory(self.factory, UNIT))
        self.registry, _ = registry_for(self.metrics)

    def scrape(self) -> dict[str, float]:
        """
        The C{tsecho_} values a scrape gets now.
        """
        return tsecho_values(generate_latest(self.registry).decode())

    def test_nothing_yet(self) -> None:
        """
        Before any connection, every counter is there, at zero.
        """
        values = self.scrape()
        self.assertEqual(without_durations(values), expected(UNIT))
        self.assertEqual(values[f"tsecho_connection_duration_seconds_count{{listener={UNIT}}}"], 0)

    def test_counted_before_drain_ends(self) -> None:
        """
        When the last connection's loss ends a drain, what runs then (a
        worker's last export) finds that connection counted as closed, with
        its lines: never missing from both the open and the closed.
        """
        one = connect(self.listener)
        replies = one.send(b"ab\n")
        seen: list[dict[str, float]] = []
        self.factory.drain().addCallback(lambda _: seen.append(without_durations(self.scrape())))
        one.lose()
        self.assertEqual(
            seen,
            [
                expected(
                    UNIT,
                    connections_accepted_total=1,
                    closed_client_closed=1,
                    lines_answered_total=1,
                    received_bytes_total=3,
                    sent_bytes_total=len(replies),
                )
            ],
        )

    def test_known_load(self) -> None:
        """
        Lines, bytes, a too-long line, a busy refusal, an idle close and a
        reset, each counted exactly; open connections' lines and bytes count
        before they close.
        """
        one = connect(self.listener)
        replies = one.send(b"ab\ncd\n")
        two = connect(self.listener)
        busy = connect(self.listener)
        self.assertEqual(busy.take(), b"ERROR server busy\r\n")
        values = self.scrape()
        self.assertEqual(
            without_durations(values),
            expected(
                UNIT,
                connections_accepted_total=2,
                connections_refused_total=1,
                closed_busy=1,
                connections_open=2,
                lines_answered_total=2,
                received_bytes_total=6,
                sent_bytes_total=len(replies),
            ),
        )
        busy.lose()
        too_long = two.send(b"toolong\n")
        two.lose()
        self.factory.clock.advance(10)  # type: ignore[attr-defined]
        one.lose()
        three = connect(self.listener)
        last = three.send(b"x\n")
        three.lose(Failure(error.ConnectionLost()))
        values = self.scrape()
        self.assertEqual(
            without_durations(values),
            expected(
                UNIT,
                connections_accepted_total=3,
                connections_refused_total=1,
                closed_busy=1,
                closed_idle_timeout=1,
                closed_line_too_long=1,
                closed_reset=1,
                lines_too_long_total=1,
                lines_answered_total=3,
                received_bytes_total=6 + 8 + 2,
                sent_bytes_total=len(replies) + len(too_long) + len(last),  # not the refusal
            ),
        )
        duration = "tsecho_connection_duration_seconds"
        self.assertEqual(values[f"{duration}_count{{listener={UNIT}}}"], 3)
        self.assertEqual(values[f"{duration}_sum{{listener={UNIT}}}"], 10.0)
        self.assertEqual(values[f"{duration}_bucket{{le=0.001,listener={UNIT}}}"], 2)
        self.assertEqual(values[f"{duration}_bucket{{le=10.0,listener={UNIT}}}"], 3)
        self.assertEqual(values[f"{duration}_bucket{{le=+Inf,listener={UNIT}}}"], 3)

    def test_listeners(self) -> None:
        """
        Each listener's connections count under its own label, and the
        connection limit is the whole server's: a connection on one listener
        makes another's busy, and the refusal counts where it happened.  Two
        listeners with one description share one label.
        """
        unix = "unix:/run/tsecho.sock"
        other = cast(TimestampEchoFactory, self.metrics.listener_factory(self.factory, unix))
        again = cast(TimestampEchoFactory, self.metrics.listener_factory(self.factory, unix))
        sent = connect(self.listener).send(b"a\n")
        two = connect(other)
        self.assertEqual(connect(again).take(), b"ERROR server busy\r\n")  # max_connections=2
        two.lose()
        self.assertEqual(
            without_durations(self.scrape()),
            {
                **expected(
                    UNIT,
                    connections_accepted_total=1,
                    connections_open=1,
                    lines_answered_total=1,
                    received_bytes_total=2,
                    sent_bytes_total=len(sent),
                ),
                **expected(
                    unix,
                    connections_accepted_total=1,
                    connections_refused_total=1,
                    closed_busy=1,
                    closed_client_closed=1,
                ),
            },
        )

    def test_datagrams(self) -> None:
        """
        Datagrams answered and dropped, labelled by listener.
        """
        answer = TimestampDatagram(Timestamper("ctime", True), self.factory.clock, max_datagram=3)
        self.metrics.watch_datagrams("udp:21567", answer)
        answer.datagrams_answered, answer.datagrams_dropped = 5, 2
        values = self.scrape()
        self.assertEqual(values["tsecho_datagrams_answered_total{listener=udp:21567}"], 5)
        self.assertEqual(values["tsecho_datagrams_dropped_total{listener=udp:21567}"], 2)

    def test_process_collector(self) -> None:
        """
        The default process metrics are there too.
        """
        names = {name for name, _ in samples(generate_latest(self.registry).decode())}
        self.assertIn("process_cpu_seconds_total", names)
        self.assertIn("process_open_fds", names)


WORKER = textwrap.dedent(
    """
    import os
    import sys
    from types import SimpleNamespace
    from twisted.internet.task import Clock
    from tsecho.metrics import export_to_multiprocess, ServerMetrics
    from tsecho.protocol import ServerConfig
    from tsecho.testing import connect, make_factory

    lines, leave_open, datagrams = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    factory = make_factory(ServerConfig(max_connections=leave_open))
    metrics = ServerMetrics(factory.connections)
    factory.metrics = metrics
    if datagrams:
        metrics.watch_datagrams("udp:21567", SimpleNamespace(datagrams_answered=datagrams, datagrams_dropped=1))
    listener = metrics.listener_factory(factory, "tcp:21567")
    clock = Clock()
    loop = export_to_multiprocess(metrics, clock)
    done = connect(listener)
    done.send(b"x\\n" * lines)
    done.lose()
    for _ in range(leave_open):
        connect(listener).send(b"open\\n")
    clock.advance(1)
    connect(listener)  # refused as busy
    clock.advance(1)
    print(os.getpid())
    """
)


def run_worker(directory: Path, lines: int, leave_open: int, datagrams: int = 0) -> int:
    """
    Run a worker process that serves a known load (and with C{datagrams},
    answers that many on C{udp:21567} and drops one) and exports its metrics
    into C{directory}; return its process id.
    """
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    process = subprocess.run(
        [sys.executable, "-c", WORKER, str(lines), str(leave_open), str(datagrams)],
        env=env,
        timeout=60,
        check=True,
        capture_output=True,
    )
    return int(process.stdout)


class ThreadedPage(Resource):
    """
    Stands in for C{prometheus_client}'s page, which collects on a thread
    of the reactor's pool: C{meanwhile} runs (the reactor thread goes on
    serving) before it collects, here at once.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry
        self.meanwhile: Callable[[], object] = lambda: None

    def render(self, request: object) -> bytes:
        self.meanwhile()
        return generate_latest(self.registry)


class MetricsPageTests(SynchronousTestCase):
    """
    L{MetricsPage} takes a snapshot on the reactor thread as a scrape
    arrives; the thread that renders the page reads only that snapshot.
    """

    def test_snapshot_at_request(self) -> None:
        """
        A scrape shows the counts as they were when it arrived, not what
        the reactor thread changed while the page was rendered; the next
        scrape shows the change.
        """
        factory = make_factory(ServerConfig())
        metrics = ServerMetrics(factory.connections)
        factory.metrics = metrics
        listener = cast(TimestampEchoFactory, metrics.listener_factory(factory, UNIT))
        registry, collector = registry_for(metrics)
        import prometheus_client.twisted  # imports the reactor

        self.patch(prometheus_client.twisted, "MetricsResource", ThreadedPage)
        page = MetricsPage(registry, collector)
        threaded = cast(ThreadedPage, page._page)
        threaded.meanwhile = lambda: connect(listener)
        accepted = f"tsecho_connections_accepted_total{{listener={UNIT}}}"
        self.assertEqual(tsecho_values(page.render(object()).decode())[accepted], 0)
        threaded.meanwhile = lambda: None
        self.assertEqual(tsecho_values(page.render(object()).decode())[accepted], 1)


class ScrapeRequestTests(SynchronousTestCase):
    """
    The metrics site refuses a request that brings a body, before reading
    it, whatever its method and path.
    """

    def request(self, data: bytes) -> StringTransport:
        """
        Send C{data} to the metrics site; return what it wrote.
        """
        site = metrics_site(*registry_for(ServerMetrics(set())))
        site.reactor = Clock()  # the connection's timeout
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5))
        transport = StringTransport()
        channel.makeConnection(transport)
        for offset in range(0, len(data), 7):  # in slices: a body's length is known when its headers end
            channel.dataReceived(data[offset : offset + 7])
        return transport

    def test_body_refused(self) -> None:
        """
        A body announced by C{Content-Length} (here 200 MB, or 5 bytes that
        all arrive) or sent in chunks gets C{413} at once, the connection
        closes, and nothing of it is kept; no other answer follows.
        """
        for headers, body in (
            (b"Content-Length: 200000000", b"x" * 1000),
            (b"Content-Length: 200000000\r\nExpect: 100-continue", b""),
            (b"Content-Length: 5", b"hello"),
            (b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
        ):
            for method_path in (b"POST /metrics", b"PUT /nope", b"GET /metrics"):
                transport = self.request(method_path + b" HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n\r\n" + body)
                self.assertEqual(
                    transport.value(),
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                self.assertTrue(transport.disconnecting)

    def test_no_body(self) -> None:
        """
        A request without a body is served as usual (here: not found).
        """
        transport = self.request(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 404 "), transport.value())
        self.assertFalse(transport.disconnecting)


class MultiprocessTests(SynchronousTestCase):
    """
    Workers export into C{PROMETHEUS_MULTIPROC_DIR}; the main process's
    registry sums them, and keeps a replaced worker's counts.
    """

    def test_sum_of_workers(self) -> None:
        """
        Two workers' counters add up; the open-connections gauge counts the
        live workers only once one is marked as exited.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        first = run_worker(directory, lines=3, leave_open=1)
        run_worker(directory, lines=4, leave_open=2)
        values = tsecho_values(generate_latest(multiprocess_registry(str(directory))).decode())
        summed = expected(
            UNIT,
            connections_accepted_total=2 + 3,
            connections_refused_total=2,
            closed_busy=2,
            closed_client_closed=2,
            connections_open=1 + 2,
            lines_answered_total=3 + 4 + 3,
            received_bytes_total=6 + 8 + 3 * 5,
        )
        sent = values.pop(f"tsecho_sent_bytes_total{{listener={UNIT}}}")
        summed.pop(f"tsecho_sent_bytes_total{{listener={UNIT}}}")
        self.assertEqual(without_durations(values), summed)
        self.assertGreater(sent, 0)
        self.assertEqual(values[f"tsecho_connection_duration_seconds_count{{listener={UNIT}}}"], 2)
        worker_exited(first, str(directory))
        values = tsecho_values(generate_latest(multiprocess_registry(str(directory))).decode())
        self.assertEqual(values[f"tsecho_connections_open{{listener={UNIT}}}"], 2)
        self.assertEqual(
            values[f"tsecho_lines_answered_total{{listener={UNIT}}}"], 10
        )  # the replaced worker's counts stay

    def test_own_datagrams(self) -> None:
        """
        Under workers, the datagrams the main process answers itself
        (C{--unix-datagram}) are added to the workers' datagram families,
        under their own listener label, and are there when no worker
        answered any; a listener the workers answer (C{--udp}, which the main
        process watches too) keeps the workers' count.
        """
        own = ServerMetrics([])
        unix_datagram = SimpleNamespace(datagrams_answered=7, datagrams_dropped=2)
        own.watch_datagrams("unix-datagram:/run/d", cast(Any, unix_datagram))
        own.watch_datagrams("udp:21567", cast(Any, SimpleNamespace(datagrams_answered=0, datagrams_dropped=0)))
        alone = Path(self.mktemp())
        alone.mkdir()
        run_worker(alone, lines=1, leave_open=1)
        registry, collector = workers_registry(str(alone), own)
        values = tsecho_values(generate_latest(registry).decode())
        self.assertEqual(values["tsecho_datagrams_answered_total{listener=unix-datagram:/run/d}"], 7)
        self.assertEqual(values["tsecho_datagrams_dropped_total{listener=unix-datagram:/run/d}"], 2)
        self.assertIs(collector.metrics, own)
        both = Path(self.mktemp())
        both.mkdir()
        run_worker(both, lines=1, leave_open=1, datagrams=5)
        text = generate_latest(workers_registry(str(both), own)[0]).decode()
        values = tsecho_values(text)
        self.assertEqual(values["tsecho_datagrams_answered_total{listener=udp:21567}"], 5)
        self.assertEqual(values["tsecho_datagrams_answered_total{listener=unix-datagram:/run/d}"], 7)
        self.assertEqual(values["tsecho_datagrams_dropped_total{listener=udp:21567}"], 1)
        self.assertEqual(text.count("# TYPE tsecho_datagrams_answered_total counter"), 1)
        self.assertEqual(text.count('tsecho_datagrams_answered_total{listener="udp:21567"}'), 1)


def scrape(url: str) -> str:
    """
    Get C{url} over HTTP, as Prometheus would.
    """
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode())


def metrics_url(log: str) -> str | None:
    """
    The metrics URL that the server logged, if it has yet.
    """
    found = re.search(r"listening on --metrics \S+ \((\S+)\)", log)
    return f"http://{found[1]}/metrics" if found else None


def wait_for_url(server: object) -> str:
    """
    Wait until the server serves its metrics; return their URL.
    """
    deadline = time.monotonic() + 20
    while (url := metrics_url(server.log())) is None:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, server.log()  # type: ignore[attr-defined]
        time.sleep(0.05)
    return url


def wait_until_closed(url: str) -> dict[str, float]:
    """
    Scrape until no connection is open; return that scrape's values.
    """
    deadline = time.monotonic() + 10
    while open_connections(values := tsecho_values(scrape(url))) and time.monotonic() < deadline:
        time.sleep(0.05)
    return values


def test_counts_from_real_twistd(tmp_path: Path) -> None:
    """
    A known load against the real C{twistd tsecho --metrics}, on a TCP and a
    UNIX listener that share one connection limit: lines, a too-long line,
    a busy refusal (C{--max-connections 1}: a connection held on TCP makes
    the UNIX one busy), an idle close (C{--timeout}), UDP datagrams; one
    scrape over HTTP, every counter exact, under each listener's label.
    """
    unix = f"unix:{tmp_path / 's.sock'}"
    options = (
        "--listen", TCP, "--listen", unix, "--metrics", "tcp:0:interface=127.0.0.1",
        "--udp", "0", "--max-line", "10", "--max-connections", "1", "--timeout", "2",
    )  # fmt: skip
    with running_server(tmp_path, options, listeners=3) as server:
        url = wait_for_url(server)
        udp_port = int(server.addresses[2].rsplit(":", 1)[1])
        sent = exchange(server.port, b"one\ntwo\r\nthree\n")
        wait_until_closed(url)  # --max-connections 1
        sent += exchange(server.port, b"short\nfar too long a line\n")
        wait_until_closed(url)
        sent_unix = stream_exchange(socket.AF_UNIX, str(tmp_path / "s.sock"), b"unix\n")
        wait_until_closed(url)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
            held.sendall(b"held\n")
            first = held.recv(1024)
            assert stream_exchange(socket.AF_UNIX, str(tmp_path / "s.sock"), b"") == b"ERROR server busy\r\n"
            rest = b""
            while chunk := held.recv(1024):  # the idle timeout closes it
                rest += chunk
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            for n in range(3):
                udp.sendto(b"datagram %d" % n, ("127.0.0.1", udp_port))
                udp.recv(65536)
        values = wait_until_closed(url)
    assert without_durations(values) == {
        **expected(
            TCP,
            connections_accepted_total=3,
            closed_client_closed=1,
            closed_line_too_long=1,
            closed_idle_timeout=1,
            lines_too_long_total=1,
            lines_answered_total=3 + 1 + 1,
            received_bytes_total=len(b"one\ntwo\r\nthree\n") + len(b"short\nfar too long a line\n") + 5,
            sent_bytes_total=len(sent) + len(first) + len(rest),
        ),
        **expected(
            unix,
            connections_accepted_total=1,
            connections_refused_total=1,
            closed_busy=1,
            closed_client_closed=1,
            lines_answered_total=1,
            received_bytes_total=5,
            sent_bytes_total=len(sent_unix),
        ),
        "tsecho_datagrams_answered_total{listener=udp:0}": 3,
        "tsecho_datagrams_dropped_total{listener=udp:0}": 0,
    }
    assert values[f"tsecho_connection_duration_seconds_count{{listener={TCP}}}"] == 3
    assert values[f"tsecho_connection_duration_seconds_sum{{listener={TCP}}}"] >= 2
    assert values[f"tsecho_connection_duration_seconds_count{{listener={unix}}}"] == 1


def percentile(values: list[float], fraction: float) -> float:
    """
    The C{fraction} quantile of C{values}.
    """
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def test_scrape_under_load(tmp_path: Path) -> None:
    """
    While 50 clients pipeline lines, scrapes are answered and line service
    does not stall: both p99 latencies stay sane (generous bounds: the
    machine may be loaded).
    """
    options = ("--listen", "tcp:0:interface=127.0.0.1", "--metrics", "tcp:0:interface=127.0.0.1", "--quiet")
    with running_server(tmp_path, options) as server:
        url = wait_for_url(server)
        stop = threading.Event()
        line_latencies: list[float] = []
        errors: list[BaseException] = []

        def client() -> None:
            try:
                with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                    batch = b"pipelined line\n" * 16
                    while not stop.is_set():
                        started = time.monotonic()
                        sock.sendall(batch)
                        received = 0
                        while received < 16:
                            received += sock.recv(65536).count(b"\n")
                        line_latencies.append(time.monotonic() - started)
            except BaseException as e:
                errors.append(e)

        clients = [threading.Thread(target=client) for _ in range(50)]
        for thread in clients:
            thread.start()
        scrape_latencies = []
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                started = time.monotonic()
                text = scrape(url)
                scrape_latencies.append(time.monotonic() - started)
                time.sleep(0.02)
        finally:
            stop.set()
            for thread in clients:
                thread.join(30)
        assert not errors, errors
        assert tsecho_values(text)[f"tsecho_lines_answered_total{{listener={TCP}}}"] > 0
    assert len(scrape_latencies) >= 5
    assert percentile(scrape_latencies, 0.99) < 2.0, scrape_latencies
    assert percentile(line_latencies, 0.99) < 2.0


class OptionTests(SynchronousTestCase):
    """
    C{--metrics ENDPOINT}: off by default; a bad endpoint is a usage error.
    """

    def make(self, *arguments: str) -> TimestampEchoService:
        options = Options(MemoryReactorClock())
        options.parseOptions(["--port", "0", *arguments])
        service = makeService(options)
        assert isinstance(service, TimestampEchoService)
        return service

    def test_off_by_default(self) -> None:
        """
        Without C{--metrics}, nothing is counted and nothing more listens.
        """
        service = self.make()
        self.assertIs(service.factory.metrics, NO_METRICS)
        self.assertEqual(list(service), [])  # type: ignore[call-overload]

    def test_on(self) -> None:
        """
        With C{--metrics}, the factory counts and a child service serves the page.
        """
        service = self.make("--metrics", "tcp:9121:interface=127.0.0.1", "--udp", "0")
        self.assertIsInstance(service.factory.metrics, ServerMetrics)
        [_, page] = list(service)  # type: ignore[call-overload]
        self.assertEqual(page.description, "--metrics tcp:9121:interface=127.0.0.1")

    def test_workers(self) -> None:
        """
        With C{--workers}, the page stays in the main process, and the pool
        gets a new private directory for the workers' counts.
        """
        options = Options(MemoryReactorClock())
        options.parseOptions(["--port", "0", "--metrics", "tcp:9121:interface=127.0.0.1", "--workers", "2"])
        pool = makeService(options)
        assert isinstance(pool, WorkerPool)
        assert pool.metrics_dir is not None
        self.addCleanup(shutil.rmtree, pool.metrics_dir, True)
        self.assertEqual(os.stat(pool.metrics_dir).st_mode & 0o777, 0o700)
        self.assertEqual(os.listdir(pool.metrics_dir), [])
        [page] = list(pool.listeners)  # type: ignore[call-overload]
        self.assertEqual(page.description, "--metrics tcp:9121:interface=127.0.0.1")

    def test_worker_exports(self) -> None:
        """
        A worker given C{--metrics} and C{PROMETHEUS_MULTIPROC_DIR} listens
        for no page but exports its counts; without the directory, it counts nothing.
        """
        arguments = ["--port", "0", "--metrics", "tcp:9121:interface=127.0.0.1"]
        for env, exports in [({"PROMETHEUS_MULTIPROC_DIR": self.mktemp()}, True), ({}, False)]:
            options = worker_options(MemoryReactorClock(), [3], None)
            environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"} | env
            with mock.patch.dict(os.environ, environ, clear=True):
                options.parseOptions(arguments)
            service = makeService(options)
            assert isinstance(service, TimestampEchoService)
            kinds = [type(child) for child in service]  # type: ignore[attr-defined]
            self.assertEqual(kinds, [MultiprocessExport] if exports else [])
            self.assertEqual(isinstance(service.factory.metrics, ServerMetrics), exports)

    def test_bad_endpoint(self) -> None:
        """
        A bad endpoint is named in a usage error.
        """
        with self.assertRaises(UsageError) as caught:
            self.make("--metrics", "bogus:1")
        self.assertIn("--metrics bogus:1: bogus is not an endpoint type Twisted knows", str(caught.exception))


def wait_for_values(url: str, wanted: dict[str, float], what: str) -> dict[str, float]:
    """
    Scrape until the C{tsecho_} values but durations are C{wanted} (workers
    export once a second); return them, or fail showing the last scrape.
    """
    deadline = time.monotonic() + 20
    while (values := without_durations(tsecho_values(scrape(url)))) != wanted:
        assert time.monotonic() < deadline, f"{what}: {values} != {wanted}"
        time.sleep(0.1)
    return values


def server_side_owner(client: socket.socket, pids: list[int]) -> int:
    """
    Which of C{pids} holds the server end of C{client}'s TCP connection
    (from C{/proc}: the socket whose remote port is C{client}'s own).
    """
    port = client.getsockname()[1]
    inodes = {
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if int((fields := line.split())[2].rsplit(":", 1)[1], 16) == port
    }
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                    return pid
    raise AssertionError(f"no worker of {pids} holds the connection from port {port}")


@pytest.mark.slow
def test_workers_summed_and_replaced(tmp_path: Path) -> None:
    """
    C{--workers 2 --metrics}: one scrape of the main process sums both
    workers' counts exactly (lines over connections that reach both, a
    too-long line, a datagram); after C{kill -9} of one worker and its
    replacement, no counter goes back and the replacement's traffic adds up.
    The workers' private directory is removed when the server stops.
    """
    from test_workers import wait_for, worker_pids

    def closed_by(server: object) -> list[int]:
        """
        The worker pid that served each connection closed so far, in order,
        from the closing log lines (not keyed by client port: ports are reused).
        """
        closed = re.finditer(r"worker \d+ \(pid (\d+)\): connection from \S+ closed", server.log())  # type: ignore[attr-defined]
        return [int(m[1]) for m in closed]

    dgram_path = tmp_path / "d.sock"
    options = (
        "--workers", "2", "--listen", "tcp:0:interface=127.0.0.1", "--metrics", "tcp:0:interface=127.0.0.1",
        "--udp", "0", "--unix-datagram", str(dgram_path), "--max-line", "10",
    )  # fmt: skip
    with running_server(tmp_path, options, listeners=4) as server:
        url = wait_for_url(server)
        wait_for(lambda: server.log().count(": serving") >= 2, "two workers")
        udp_port = int(server.addresses[1].rsplit(":", 1)[1])
        totals = {"accepted": 0, "lines": 0, "in": 0, "out": 0}

        def connect_until(pids: set[int]) -> None:
            """
            Exchange two lines per connection until they reached C{pids}.
            """
            for _ in range(200):
                before = len(closed_by(server))
                payload = b"one\ntwo\n"
                totals["out"] += len(exchange(server.port, payload))
                totals["accepted"] += 1
                totals["lines"] += 2
                totals["in"] += len(payload)
                wait_for(lambda seen=before: len(closed_by(server)) > seen, "the connection logged")
                if pids <= set(closed_by(server)):
                    return
            raise AssertionError(f"connections never reached {pids}")

        def wanted(too_long: int = 1, killed: int = 0, drained: int = 0) -> dict[str, float]:
            return {
                **expected(
                    connections_accepted_total=totals["accepted"],
                    closed_client_closed=totals["accepted"] - too_long - killed - drained,
                    closed_shutdown=drained,
                    closed_line_too_long=too_long,
                    lines_too_long_total=too_long,
                    lines_answered_total=totals["lines"],
                    received_bytes_total=totals["in"],
                    sent_bytes_total=totals["out"],
                ),
                "tsecho_datagrams_answered_total{listener=udp:0}": 1,
                "tsecho_datagrams_dropped_total{listener=udp:0}": 0,
                # answered by the main process itself
                f"tsecho_datagrams_answered_total{{listener=unix-datagram:{dgram_path}}}": 1,
                f"tsecho_datagrams_dropped_total{{listener=unix-datagram:{dgram_path}}}": 0,
            }

        first, second = worker_pids(server)
        connect_until({first, second})
        too_long = b"far too long a line\n"
        totals["out"] += len(exchange(server.port, too_long))
        totals["accepted"] += 1
        totals["in"] += len(too_long)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"datagram", ("127.0.0.1", udp_port))
            udp.recv(65536)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unix:
            unix.settimeout(10)
            unix.bind(str(tmp_path / "c.sock"))
            unix.sendto(b"datagram", str(dgram_path))
            unix.recv(65536)
        before = wait_for_values(url, wanted(), "both workers summed")

        # A connection open on the worker killed: its gauge must drop out.
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
            held.sendall(b"held\n")
            totals["out"] += len(held.recv(1024))
            totals["accepted"] += 1
            totals["lines"] += 1
            totals["in"] += 5
            victim = server_side_owner(held, worker_pids(server))
            held_open = {**wanted(killed=1), f"tsecho_connections_open{{listener={TCP}}}": 1}
            before = wait_for_values(url, held_open, "one held open")
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(worker_pids(server)) == 3, "a replacement")
            wait_for(lambda: server.log().count(": serving") >= 3, "the replacement serving")
            after = without_durations(tsecho_values(scrape(url)))
            assert {
                k: v for k, v in after.items() if v < before[k] and not k.startswith("tsecho_connections_open")
            } == {}
            connect_until({worker_pids(server)[2]})
        wait_for_values(url, wanted(killed=1), "after a worker was replaced")

        # A connection open across a rolling restart: its worker drains it,
        # and that worker's last export counts it.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as held:
            held.sendall(b"held\n")
            totals["out"] += len(held.recv(1024))
            totals["accepted"] += 1
            totals["lines"] += 1
            totals["in"] += 5
            server.process.send_signal(signal.SIGHUP)
            assert held.recv(1024) == b""  # closed once quiet
        wait_for(lambda: len(worker_pids(server)) == 5, "two fresh workers")
        wait_for(lambda: server.log().count(" stopped") >= 2, "the old workers stopped")
        wait_for_values(url, wanted(killed=1, drained=1), "after a rolling restart")
        environ = Path(f"/proc/{worker_pids(server)[-1]}/environ").read_bytes().split(b"\0")
        [metrics_dir] = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]
        assert os.path.isdir(metrics_dir)
        server.stop()
    assert not os.path.exists(metrics_dir)  # removed at exit


class MetricsListenerLogTests(SynchronousTestCase):
    """
    The C{--metrics} listener says where it listens under its own namespace.
    """

    def test_namespace(self) -> None:
        """
        C{listening on --metrics ...} is logged under C{tsecho.metrics}, not
        the datagram listeners' namespace.
        """
        listener = metrics_listener("tcp:9100", TCP4ServerEndpoint(MemoryReactorClock(), 9100), Site(Resource()))
        with capturedLogs() as events:
            listener.startService()
        [event] = [e for e in events if e["log_format"].startswith("listening on")]
        self.assertEqual(event["log_namespace"], "tsecho.metrics")
        self.assertEqual(event["description"], "--metrics tcp:9100")
