"""
Prometheus metrics: C{--metrics ENDPOINT} serves C{/metrics}.

Counting must cost the data path nothing measurable, so L{ServerMetrics}
keeps plain integers, added to once when a connection ends (the protocol
counts its own lines and bytes as it goes), and C{prometheus_client} reads
them only when scraped: L{ServerMetrics.snapshot} adds in the open
connections' counts, so counters are live, not only updated at close.  The
page is C{prometheus_client.twisted.MetricsResource}, which renders in the
reactor's thread pool; L{MetricsPage} first takes the L{Snapshot} on the
reactor thread, so that thread never reads state the reactor is changing.

Several worker processes (C{prometheus_client}'s multiprocess mode): the
main process creates an empty directory, sets C{PROMETHEUS_MULTIPROC_DIR} to
it before it starts any worker, and serves
C{metrics_site(multiprocess_registry(path))}, calling L{worker_exited} when
a worker exits (L{tsecho.workers.WorkerPool} does all this).  Each worker
counts with its own L{ServerMetrics} as above and runs
L{export_to_multiprocess} (the L{MultiprocessExport} service): once a second
(and once more when stopped) it adds what changed to C{prometheus_client}
metrics kept in files in that directory.  One scrape of the main process sums every worker,
including those that have exited (their counters stay in the sums, so
totals never go back when a worker is replaced).
"""

from __future__ import annotations

import bisect
import tempfile
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from tsecho._tally import Ending
from tsecho.datagram import DatagramListener

if TYPE_CHECKING:
    from tsecho.datagram import TimestampDatagram
    from tsecho.protocol import TimestampEcho

DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 3600.0)
"""
Upper bounds, in seconds, of the connection duration histogram's buckets
(and +Inf): from one request per connection to a long-lived session.
"""


@attrs.frozen
class Snapshot:
    """
    Every count at one moment; the open connections' lines and bytes included.
    """

    accepted: int
    refused: int
    closed: dict[Ending, int]
    open: int
    lines: int
    bytes_in: int
    bytes_out: int
    duration_buckets: tuple[int, ...]  # per bucket, not cumulative; the last is +Inf
    duration_sum: float
    datagrams: tuple[tuple[str, int, int], ...]  # (listener, answered, dropped)


class ServerMetrics:
    """
    The counts of one server process; the factory's L{tsecho._tally.ConnectionMetrics}.
    """

    def __init__(self, connections: Collection[TimestampEcho]) -> None:
        """
        @param connections: the open, admitted connections (the factory's set).
        """
        self._connections = connections
        self._datagrams: list[tuple[str, TimestampDatagram]] = []
        self.refused_count = 0
        self.ended: dict[Ending, int] = {}
        self.lines = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.recent_durations: list[float] | None = None  # kept only for L{export_to_multiprocess}

    # What the protocol calls.

    def refused(self) -> None:
        self.refused_count += 1

    def closed(self, connection: TimestampEcho, ending: Ending, duration: float) -> None:
        self.ended[ending] = self.ended.get(ending, 0) + 1
        self.lines += connection.lines_answered
        self.bytes_in += connection.bytes_in
        self.bytes_out += connection.bytes_out
        self.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        if self.recent_durations is not None:
            self.recent_durations.append(duration)

    # Datagrams count themselves.

    def watch_datagrams(self, listener: str, protocol: TimestampDatagram) -> None:
        """
        Report C{protocol}'s datagrams, labelled C{listener}.
        """
        self._datagrams.append((listener, protocol))

    def snapshot(self) -> Snapshot:
        """
        Every count, now.  Call on the reactor thread.
        """
        open_connections = list(self._connections)
        return Snapshot(
            accepted=sum(self.ended.values()) + len(open_connections),
            refused=self.refused_count,
            closed={Ending.BUSY: self.refused_count, **self.ended},
            open=len(open_connections),
            lines=self.lines + sum(c.lines_answered for c in open_connections),
            bytes_in=self.bytes_in + sum(c.bytes_in for c in open_connections),
            bytes_out=self.bytes_out + sum(c.bytes_out for c in open_connections),
            duration_buckets=tuple(self.duration_buckets),
            duration_sum=self.duration_sum,
            datagrams=tuple((d, p.datagrams_answered, p.datagrams_dropped) for d, p in self._datagrams),
        )


def families(s: Snapshot) -> Iterator[Metric]:
    """
    The C{tsecho_} metric families of a snapshot.
    """
    yield CounterMetricFamily("tsecho_connections_accepted", "Stream connections accepted and served.", s.accepted)
    yield CounterMetricFamily(
        "tsecho_connections_refused", "Stream connections refused with ERROR server busy.", s.refused
    )
    closed = CounterMetricFamily("tsecho_connections_closed", "Stream connections ended, by reason.", labels=["reason"])
    for ending in Ending:
        closed.add_metric([ending.value], s.closed.get(ending, 0))
    yield closed
    yield GaugeMetricFamily("tsecho_connections_open", "Stream connections open now.", s.open)
    yield CounterMetricFamily("tsecho_lines_answered", "Lines answered on stream connections.", s.lines)
    yield CounterMetricFamily("tsecho_received_bytes", "Bytes received on stream connections.", s.bytes_in)
    yield CounterMetricFamily("tsecho_sent_bytes", "Bytes sent on stream connections.", s.bytes_out)
    yield CounterMetricFamily(
        "tsecho_lines_too_long", "Lines longer than --max-line.", s.closed.get(Ending.LINE_TOO_LONG, 0)
    )
    cumulative, buckets = 0, []
    for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), s.duration_buckets):
        cumulative += count
        buckets.append((bound, cumulative))
    yield HistogramMetricFamily(
        "tsecho_connection_duration_seconds",
        "How long served stream connections lasted.",
        buckets=buckets,
        sum_value=s.duration_sum,
    )
    answered = CounterMetricFamily("tsecho_datagrams_answered", "Datagrams answered.", labels=["listener"])
    dropped = CounterMetricFamily(
        "tsecho_datagrams_dropped",
        "Datagrams dropped: too long, unanswerable, or the reply failed.",
        labels=["listener"],
    )
    for listener, n_answered, n_dropped in s.datagrams:
        answered.add_metric([listener], n_answered)
        dropped.add_metric([listener], n_dropped)
    yield answered
    yield dropped


class _SnapshotCollector:
    """
    A C{prometheus_client} collector of the latest L{Snapshot}.
    """

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.latest: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snapshot = self.latest if self.latest is not None else self.metrics.snapshot()
        return families(snapshot)


def registry_for(metrics: ServerMetrics) -> tuple[CollectorRegistry, _SnapshotCollector]:
    """
    A registry with the server's metrics and the default process collector.
    """
    registry = CollectorRegistry()
    collector = _SnapshotCollector(metrics)
    registry.register(collector)
    ProcessCollector(registry=registry)
    return registry, collector


class MetricsPage(Resource):
    """
    C{/metrics}: C{prometheus_client}'s own C{twisted.web} resource, after a
    snapshot taken on the reactor thread.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, collector: _SnapshotCollector | None = None) -> None:
        from prometheus_client.twisted import MetricsResource

        super().__init__()
        self._collector = collector
        self._page = MetricsResource(registry)

    def render(self, request: Any) -> Any:
        if self._collector is not None:
            self._collector.latest = self._collector.metrics.snapshot()
        return self._page.render(request)


def metrics_site(registry: CollectorRegistry, collector: _SnapshotCollector | None = None) -> Any:
    """
    A C{twisted.web} site serving C{registry} at C{/metrics}.
    """
    from twisted.web.server import Site

    class MetricsSite(Site):
        noisy = False
        displayTracebacks = False

        def log(self, request: Any) -> None:
            """
            No access log line per scrape.
            """

    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry, collector))
    return MetricsSite(root)


# Several processes.


def multiprocess_registry(path: str) -> CollectorRegistry:
    """
    For the main process: every worker's metrics in C{path}, summed, and this
    process's own resource use.
    """
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    ProcessCollector(registry=registry)
    return registry


def worker_exited(pid: int, path: str) -> None:
    """
    For the main process, when a worker has exited: drop its open-connections
    gauge (its counters stay in the sums).
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


class _Exporter:
    """
    Add what changed in a worker's L{ServerMetrics} to C{prometheus_client}
    metrics that live in C{PROMETHEUS_MULTIPROC_DIR}.
    """

    def __init__(self, metrics: ServerMetrics, registry: CollectorRegistry) -> None:
        self.metrics = metrics
        metrics.recent_durations = []
        self.last = metrics.snapshot()
        r = registry
        self.accepted = Counter("tsecho_connections_accepted", "Stream connections accepted and served.", registry=r)
        self.refused = Counter(
            "tsecho_connections_refused", "Stream connections refused with ERROR server busy.", registry=r
        )
        self.closed = Counter(
            "tsecho_connections_closed", "Stream connections ended, by reason.", ["reason"], registry=r
        )
        self.open = Gauge(
            "tsecho_connections_open", "Stream connections open now.", registry=r, multiprocess_mode="livesum"
        )
        self.lines = Counter("tsecho_lines_answered", "Lines answered on stream connections.", registry=r)
        self.bytes_in = Counter("tsecho_received_bytes", "Bytes received on stream connections.", registry=r)
        self.bytes_out = Counter("tsecho_sent_bytes", "Bytes sent on stream connections.", registry=r)
        self.too_long = Counter("tsecho_lines_too_long", "Lines longer than --max-line.", registry=r)
        self.duration = Histogram(
            "tsecho_connection_duration_seconds",
            "How long served stream connections lasted.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.answered = Counter("tsecho_datagrams_answered", "Datagrams answered.", ["listener"], registry=r)
        self.dropped = Counter(
            "tsecho_datagrams_dropped",
            "Datagrams dropped: too long, unanswerable, or the reply failed.",
            ["listener"],
            registry=r,
        )
        for ending in Ending:
            self.closed.labels(ending.value)

    def export(self) -> None:
        now, last = self.metrics.snapshot(), self.last
        self.last = now
        self.accepted.inc(now.accepted - last.accepted)
        self.refused.inc(now.refused - last.refused)
        for ending in Ending:
            self.closed.labels(ending.value).inc(now.closed.get(ending, 0) - last.closed.get(ending, 0))
        self.open.set(now.open)
        self.lines.inc(now.lines - last.lines)
        self.bytes_in.inc(now.bytes_in - last.bytes_in)
        self.bytes_out.inc(now.bytes_out - last.bytes_out)
        self.too_long.inc(now.closed.get(Ending.LINE_TOO_LONG, 0) - last.closed.get(Ending.LINE_TOO_LONG, 0))
        durations = self.metrics.recent_durations or []
        self.metrics.recent_durations = []
        for duration in durations:
            self.duration.observe(duration)
        before = {d[0]: d for d in last.datagrams}
        for listener, answered, dropped in now.datagrams:
            _, was_answered, was_dropped = before.get(listener, (listener, 0, 0))
            self.answered.labels(listener).inc(answered - was_answered)
            self.dropped.labels(listener).inc(dropped - was_dropped)


def export_to_multiprocess(metrics: ServerMetrics, clock: IReactorTime, interval: float = 1.0) -> Any:
    """
    For a worker process (with C{PROMETHEUS_MULTIPROC_DIR} set before
    C{prometheus_client} was imported): every C{interval} seconds, add what
    changed to the shared files.  Returns the running C{LoopingCall}; stop it
    at shutdown, and it exports once more.
    """
    from twisted.internet.task import LoopingCall

    exporter = _Exporter(metrics, CollectorRegistry())
    loop = LoopingCall(exporter.export)
    loop.clock = clock
    loop.start(interval, now=False).addCallback(lambda _: exporter.export())
    return loop


class MultiprocessExport(Service):
    """
    A worker's L{export_to_multiprocess}, while the service runs.  It stops
    when the reactor has shut down, after the connections have drained, so
    their counts are exported too.
    """

    def __init__(self, metrics: ServerMetrics, reactor: Any) -> None:
        self.metrics = metrics
        self.reactor = reactor
        self._loop: Any = None

    def startService(self) -> None:
        super().startService()
        self._loop = export_to_multiprocess(self.metrics, self.reactor)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._stop)

    def _stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()


def make_multiprocess_dir() -> str:
    """
    For the main process: a new private directory (mode 0700) for the
    workers' metric files; L{tsecho.workers.WorkerPool} removes it when it stops.
    """
    return tempfile.mkdtemp(prefix="tsecho-metrics-")


def metrics_listener(description: str, endpoint: IStreamServerEndpoint, site: Any) -> DatagramListener:
    """
    A service serving C{site} on C{endpoint}, opened with the other listeners
    (a start-up error names it) and logged as C{listening on --metrics
    DESCRIPTION (ADDRESS)}.
    """

    def listen() -> IListeningPort:
        result: list[Any] = []
        endpoint.listen(site).addBoth(result.append)
        if not result:  # an endpoint that listens later: not one the options accept
            raise error.CannotListenError(None, None, "the endpoint did not listen at once")
        if isinstance(result[0], Failure):
            result[0].raiseException()
        port: IListeningPort = result[0]
        return port

    return DatagramListener(f"--metrics {description}", listen, logger=Logger(namespace=__name__))
