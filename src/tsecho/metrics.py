"""
Prometheus metrics: C{--metrics ENDPOINT} serves C{/metrics}.

Counting must cost the data path nothing measurable, so L{ServerMetrics}
keeps plain integers per stream listener (the C{listener} label), added to
once when a connection ends (the protocol counts its own lines and bytes as
it goes; its class names its listener's L{ListenerTally}, see
L{ServerMetrics.listener_factory}), and C{prometheus_client} reads them
only when scraped: L{ServerMetrics.snapshot} adds in the open
connections' counts, so counters are live, not only updated at close.  The
page is C{prometheus_client.twisted.MetricsResource}, which renders in the
reactor's thread pool; L{MetricsPage} first takes the L{Snapshot} on the
reactor thread, so that thread never reads state the reactor is changing.

Several worker processes (C{prometheus_client}'s multiprocess mode): the
main process creates an empty directory, sets C{PROMETHEUS_MULTIPROC_DIR} to
it before it starts any worker, and serves
C{metrics_site(*workers_registry(path, metrics))} (the workers' sums, and the
datagrams it answers itself), calling L{worker_exited} when a worker exits
(L{tsecho.workers.WorkerPool} does all this).  Each worker
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
from collections.abc import Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from twisted.application.service import Service
from twisted.internet import error
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource

from tsecho._tally import Ending
from tsecho.datagram import DatagramListener

if TYPE_CHECKING:
    from tsecho.datagram import TimestampDatagram
    from tsecho.protocol import TimestampEcho, TimestampEchoFactory

DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 3600.0)
"""
Upper bounds, in seconds, of the connection duration histogram's buckets
(and +Inf): from one request per connection to a long-lived session.
"""

# What is exported, named once for one process and for several: (name, help).
ACCEPTED = ("tsecho_connections_accepted", "Stream connections accepted and served.")
REFUSED = ("tsecho_connections_refused", "Stream connections refused with ERROR server busy.")
CLOSED = ("tsecho_connections_closed", "Stream connections ended, by reason.")
OPEN = ("tsecho_connections_open", "Stream connections open now.")
LINES = ("tsecho_lines_answered", "Lines answered on stream connections.")
RECEIVED = ("tsecho_received_bytes", "Bytes received on stream connections.")
SENT = ("tsecho_sent_bytes", "Bytes sent on stream connections.")
TOO_LONG = ("tsecho_lines_too_long", "Lines longer than --max-line.")
DURATION = ("tsecho_connection_duration_seconds", "How long served stream connections lasted.")
ANSWERED = ("tsecho_datagrams_answered", "Datagrams answered.")
DROPPED = ("tsecho_datagrams_dropped", "Datagrams dropped: too long, unanswerable, or the reply failed.")

STREAM_COUNTERS = (
    (ACCEPTED, "accepted"),
    (REFUSED, "refused"),
    (LINES, "lines"),
    (RECEIVED, "bytes_in"),
    (SENT, "bytes_out"),
    (TOO_LONG, "too_long"),
)
"""
The stream counters labelled C{listener} alone, each with the L{StreamCounts} attribute it exports.
"""


@attrs.frozen
class StreamCounts:
    """
    Every count of one stream listener at one moment; its open connections'
    lines and bytes included.
    """

    listener: str
    accepted: int = 0
    refused: int = 0
    closed: dict[Ending, int] = attrs.Factory(dict)
    open: int = 0
    lines: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration_buckets: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)  # per bucket; the last is +Inf
    duration_sum: float = 0.0

    @property
    def too_long(self) -> int:
        return self.closed.get(Ending.LINE_TOO_LONG, 0)


@attrs.frozen
class Snapshot:
    """
    Every count at one moment.
    """

    streams: tuple[StreamCounts, ...]
    datagrams: tuple[tuple[str, int, int], ...]  # (listener, answered, dropped)


class ListenerTally:
    """
    What one stream listener's connections did, counted when each ended, and
    its busy refusals.
    """

    def __init__(self, listener: str) -> None:
        self.listener = listener
        self.refused = 0
        self.ended: dict[Ending, int] = {}
        self.lines = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0

    def snapshot(self, open_connections: Collection[TimestampEcho]) -> StreamCounts:
        """
        These counts, and those of C{open_connections} (this listener's), now.
        """
        return StreamCounts(
            listener=self.listener,
            accepted=sum(self.ended.values()) + len(open_connections),
            refused=self.refused,
            closed={Ending.BUSY: self.refused, **self.ended},
            open=len(open_connections),
            lines=self.lines + sum(c.lines_answered for c in open_connections),
            bytes_in=self.bytes_in + sum(c.bytes_in for c in open_connections),
            bytes_out=self.bytes_out + sum(c.bytes_out for c in open_connections),
            duration_buckets=tuple(self.duration_buckets),
            duration_sum=self.duration_sum,
        )


class ListenerFactory(ServerFactory):
    """
    The server's one L{TimestampEchoFactory}, as one listener hands it
    connections: they are of a subclass of its protocol whose C{tally}, a
    class attribute (nothing per connection), is the listener's
    L{ListenerTally}.  Everything else is the one factory's, shared by every
    listener: the configuration, the open connections, the connection limit.
    (Its C{buildProtocol} is Twisted's, as the one factory's is.)

    @ivar clock: the one factory's, for a wrapper that times the connection
        (C{haproxy:}, L{tsecho._proxy}, times the PROXY header with it).
    """

    noisy = False

    def __init__(self, shared: TimestampEchoFactory, protocol: type[TimestampEcho]) -> None:
        self.shared = shared
        self.protocol = self._connection = protocol
        self.clock = shared.clock

    def buildProtocol(self, addr: Any) -> TimestampEcho:
        connection = self._connection()
        connection.factory = self.shared
        return connection


class ServerMetrics:
    """
    The counts of one server process, by listener; the factory's
    L{tsecho._tally.ConnectionMetrics}.  A connection counts under its
    listener's L{ListenerTally} if it came through a L{listener_factory},
    else under listener C{""}.
    """

    def __init__(self, connections: Collection[TimestampEcho]) -> None:
        """
        @param connections: the open, admitted connections (the factory's set).
        """
        self._connections = connections
        self._datagrams: list[tuple[str, TimestampDatagram]] = []
        self._listeners: dict[str, ListenerTally] = {}
        self._unlabelled = ListenerTally("")
        self.recent_durations: list[tuple[str, float]] | None = None  # kept only for L{export_to_multiprocess}

    def listener_factory(self, shared: TimestampEchoFactory, listener: str) -> ListenerFactory:
        """
        The factory that stream listener C{listener} (its description) hands
        its connections to, so that they count under its label.
        """
        tally = self._listeners.setdefault(listener, ListenerTally(listener))  # one label, however many listeners
        base = shared.protocol
        protocol = type(base.__name__, (base,), {"tally": tally})
        return ListenerFactory(shared, cast("type[TimestampEcho]", protocol))

    # What the protocol calls.

    def refused(self, connection: TimestampEcho) -> None:
        tally: ListenerTally = getattr(connection, "tally", self._unlabelled)
        tally.refused += 1

    def closed(self, connection: TimestampEcho, ending: Ending, duration: float) -> None:
        tally: ListenerTally = getattr(connection, "tally", self._unlabelled)
        tally.ended[ending] = tally.ended.get(ending, 0) + 1
        tally.lines += connection.lines_answered
        tally.bytes_in += connection.bytes_in
        tally.bytes_out += connection.bytes_out
        tally.duration_buckets[bisect.bisect_left(DURATION_BUCKETS, duration)] += 1
        tally.duration_sum += duration
        if self.recent_durations is not None:
            self.recent_durations.append((tally.listener, duration))

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
        open_by: dict[ListenerTally, list[TimestampEcho]] = {}
        for connection in self._connections:
            open_by.setdefault(getattr(connection, "tally", self._unlabelled), []).append(connection)
        unlabelled = self._unlabelled
        used = unlabelled in open_by or unlabelled.refused or unlabelled.ended or not self._listeners
        tallies = [*self._listeners.values(), *([unlabelled] if used else [])]
        return Snapshot(
            streams=tuple(tally.snapshot(open_by.get(tally, ())) for tally in tallies),
            datagrams=tuple((d, p.datagrams_answered, p.datagrams_dropped) for d, p in self._datagrams),
        )


def families(s: Snapshot) -> Iterator[Metric]:
    """
    The C{tsecho_} metric families of a snapshot.
    """
    yield from _stream_families(s.streams)
    yield _duration_family(s.streams)
    yield from _datagram_families(s.datagrams)


def _stream_families(streams: Sequence[StreamCounts]) -> Iterator[Metric]:
    for (name, documentation), attribute in STREAM_COUNTERS:
        counter = CounterMetricFamily(name, documentation, labels=["listener"])
        for counts in streams:
            counter.add_metric([counts.listener], getattr(counts, attribute))
        yield counter
    closed = CounterMetricFamily(*CLOSED, labels=["listener", "reason"])
    open_now = GaugeMetricFamily(*OPEN, labels=["listener"])
    for counts in streams:
        for ending in Ending:
            closed.add_metric([counts.listener, ending.value], counts.closed.get(ending, 0))
        open_now.add_metric([counts.listener], counts.open)
    yield closed
    yield open_now


def _duration_family(streams: Sequence[StreamCounts]) -> Metric:
    durations = HistogramMetricFamily(*DURATION, labels=["listener"])
    for counts in streams:
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), counts.duration_buckets):
            cumulative += count
            buckets.append((bound, cumulative))
        durations.add_metric([counts.listener], buckets, counts.duration_sum)
    return durations


def _datagram_families(datagrams: Sequence[tuple[str, int, int]]) -> Iterator[Metric]:
    answered = CounterMetricFamily(*ANSWERED, labels=["listener"])
    dropped = CounterMetricFamily(*DROPPED, labels=["listener"])
    for listener, n_answered, n_dropped in datagrams:
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

    def current(self) -> Snapshot:
        """
        The snapshot the page took, or one taken now.
        """
        return self.latest if self.latest is not None else self.metrics.snapshot()

    def collect(self) -> Iterator[Metric]:
        return families(self.current())


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

    def __init__(self, registry: CollectorRegistry, collector: _SnapshotCollector) -> None:
        from prometheus_client.twisted import MetricsResource

        super().__init__()
        self._collector = collector
        self._page = MetricsResource(registry)

    def render(self, request: Any) -> Any:
        self._collector.latest = self._collector.metrics.snapshot()
        return self._page.render(request)


def metrics_site(registry: CollectorRegistry, collector: _SnapshotCollector) -> Any:
    """
    A C{twisted.web} site serving C{registry} at C{/metrics}.
    """
    from twisted.web.pages import notFound
    from twisted.web.server import Request, Site

    class ScrapeRequest(Request):
        """
        A scrape has no body.  Twisted keeps a request's body until all of
        it has come (past 100 kB in a temporary file), before any resource
        sees the request; this refuses a request that announces a body, as
        soon as its headers end: C{413}, and the connection closes.  It
        overrides what C{HTTPChannel} calls on its request (public names,
        documented as not for users): C{ScrapeRequestTests} checks on every
        Twisted tested that a body is still refused this way.
        """

        too_large = False

        def gotLength(self, length: int | None) -> None:
            super().gotLength(0)  # an empty buffer in memory
            if length != 0:  # a Content-Length, or chunks (None)
                self.too_large = True
                self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the refusal
                transport = self.channel.transport
                assert transport is not None  # the headers came over it
                transport.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                transport.loseConnection()

        def handleContentChunk(self, data: bytes) -> None:
            """
            Drop what arrives of a refused body before the connection closes.
            """

        def process(self) -> None:
            if not self.too_large:  # else answered already
                super().process()

    class MetricsSite(Site):
        noisy = False
        displayTracebacks = False
        requestFactory = ScrapeRequest

        def log(self, request: Any) -> None:
            """
            No access log line per scrape.
            """

    class Root(Resource):
        def getChild(self, path: bytes, request: Any) -> IResource:
            return notFound()  # Twisted's default page is deprecated

    root = Root()
    root.putChild(b"metrics", MetricsPage(registry, collector))
    return MetricsSite(root)


# Several processes.


def multiprocess_registry(path: str, own: _SnapshotCollector | None = None) -> CollectorRegistry:
    """
    For the main process: every worker's metrics in C{path}, summed, and this
    process's own resource use; given C{own}, with the datagrams this process
    answers itself too (L{workers_registry}).
    """
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    workers = multiprocess.MultiProcessCollector(None, path=path)
    registry.register(workers if own is None else _WithOwnDatagrams(workers, own))
    ProcessCollector(registry=registry)
    return registry


def workers_registry(path: str, metrics: ServerMetrics) -> tuple[CollectorRegistry, _SnapshotCollector]:
    """
    For the main process under C{--workers}: L{multiprocess_registry}, with
    the datagrams that C{metrics} counts in this process (C{--unix-datagram},
    which workers cannot adopt) added to the workers' datagram families, and
    the collector that L{MetricsPage} snapshots on the reactor thread.
    """
    collector = _SnapshotCollector(metrics)
    return multiprocess_registry(path, collector), collector


class _WithOwnDatagrams:
    """
    The workers' sums, with the main process's own datagram counts added
    under their own listener labels (it watches every datagram listener, and
    answers only those the workers do not).
    """

    def __init__(self, workers: Any, own: _SnapshotCollector) -> None:
        self._workers = workers
        self._own = own

    def collect(self) -> Iterator[Metric]:
        mine = {family.name: family for family in _datagram_families(self._own.current().datagrams) if family.samples}
        for family in self._workers.collect():
            extra = mine.pop(family.name, None)
            if extra is not None:  # what workers answer (--udp), the main process counts as nothing
                theirs = [sample.labels for sample in family.samples]
                family.samples.extend(sample for sample in extra.samples if sample.labels not in theirs)
            yield family
        yield from mine.values()


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
        self.last = Snapshot(streams=(), datagrams=())
        r = registry
        self.counters = [
            (Counter(name, documentation, ["listener"], registry=r), attribute)
            for (name, documentation), attribute in STREAM_COUNTERS
        ]
        self.closed = Counter(*CLOSED, ["listener", "reason"], registry=r)
        self.open = Gauge(*OPEN, ["listener"], registry=r, multiprocess_mode="livesum")
        self.duration = Histogram(*DURATION, ["listener"], buckets=DURATION_BUCKETS, registry=r)
        self.answered = Counter(*ANSWERED, ["listener"], registry=r)
        self.dropped = Counter(*DROPPED, ["listener"], registry=r)
        self.export()  # every listener's samples, at zero

    def export(self) -> None:
        now, last = self.metrics.snapshot(), self.last
        self.last = now
        before = {counts.listener: counts for counts in last.streams}
        for counts in now.streams:
            self._export_stream(counts, before.get(counts.listener, StreamCounts(counts.listener)))
        durations, self.metrics.recent_durations = self.metrics.recent_durations or [], []
        for listener, duration in durations:
            self.duration.labels(listener).observe(duration)
        was = {listener: (answered, dropped) for listener, answered, dropped in last.datagrams}
        for listener, answered, dropped in now.datagrams:
            was_answered, was_dropped = was.get(listener, (0, 0))
            self.answered.labels(listener).inc(answered - was_answered)
            self.dropped.labels(listener).inc(dropped - was_dropped)

    def _export_stream(self, now: StreamCounts, last: StreamCounts) -> None:
        listener = now.listener
        for counter, attribute in self.counters:
            counter.labels(listener).inc(getattr(now, attribute) - getattr(last, attribute))
        for ending in Ending:
            self.closed.labels(listener, ending.value).inc(now.closed.get(ending, 0) - last.closed.get(ending, 0))
        self.open.labels(listener).set(now.open)
        self.duration.labels(listener)


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

    return DatagramListener(f"--metrics {description}", listen, logger=Logger(namespace=__name__), tcp=True)
