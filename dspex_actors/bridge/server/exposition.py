"""A SessionStore's metrics in Prometheus' text format, served over HTTP.

``serve(metrics="HOST:PORT")`` starts a :class:`MetricsEndpoint`: a small HTTP
server (the standard library's WSGI server, a thread per scrape) answering
``GET /metrics`` with ``prometheus_client``'s exposition of a registry of the
server's own (:class:`prometheus_client.CollectorRegistry`, never the process's
global one: a process may run many servers, and each reports only itself).

The registry holds one collector over the server's :class:`~dspex_actors.bridge.
server.metrics.ServerMetrics`, read when scraped (a custom collector rather than
``Counter`` objects: those take a lock on every increment, which the server's hot
path does not need: it is one thread), and ``prometheus_client``'s process
collector (CPU, memory, open files of the process). ``prometheus_client`` is the
``metrics`` extra; without it, asking for metrics raises an ``ImportError`` that
names the extra.

The endpoint has no authentication: what it shows are counts, never a session id,
a value or a token, so it may listen where the scraper reaches it.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from dspex_actors.bridge.server.metrics import LATENCY_BUCKETS, Histogram, ServerMetrics

try:
    from prometheus_client import CollectorRegistry, ProcessCollector, make_wsgi_app
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - the extra is installed in the tests
    raise ImportError(
        "metrics need prometheus_client: pip install 'dspex_actors[metrics]'"
    ) from exc

__all__ = ["Gauges", "MetricsEndpoint", "registry_for"]

_BOUNDS = [*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf"]
_SCRAPE_TIMEOUT = 10.0
"""Seconds a scrape's connection may stay silent before its thread lets it go."""
_POLL = 0.1
"""Seconds between the serving thread's looks at a request to shut down."""


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the server reads live at each scrape (each a cheap read)."""

    calls_in_flight: Callable[[], int]
    call_streams: Callable[[], int]
    rpcs_open: Callable[[], int]
    store: object
    """The store: its ``census()`` and ``dedupe_hits``, where it keeps them."""


def _buckets(histogram: Histogram) -> tuple[list[tuple[str, float]], float]:
    counts = list(histogram.counts)  # one copy: the buckets agree with each other
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(_BOUNDS, counts, strict=True):
        running += count
        cumulative.append((bound, running))
    return cumulative, histogram.total


class _Collector:
    """The server's metrics as Prometheus families, built at each scrape."""

    def __init__(self, metrics: ServerMetrics, gauges: Gauges) -> None:
        self._metrics = metrics
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        kind = m.store_kind
        calls = CounterMetricFamily(
            "dspex_calls",
            "SessionStore calls answered (unary, on a Calls stream, Watch streams ended), "
            "by method and gRPC status code.",
            labels=["method", "code"],
        )
        for (method, code), count in dict(m.calls).items():
            calls.add_metric([method, code], count)
        yield calls
        latency = HistogramMetricFamily(
            "dspex_call_duration_seconds",
            "Seconds from a call's arrival to its answer, by method (Watch excepted).",
            labels=["method"],
        )
        for method, histogram in dict(m.latency).items():
            latency.add_metric([method], *_buckets(histogram))
        yield latency
        refused = CounterMetricFamily(
            "dspex_calls_refused",
            "Calls refused at admission, by method and the rule that refused them.",
            labels=["method", "reason"],
        )
        for (method, reason), count in dict(m.refused).items():
            refused.add_metric([method, reason], count)
        yield refused
        gauges = self._gauges
        yield GaugeMetricFamily(
            "dspex_calls_in_flight",
            "Calls being served now (unary, and on Calls streams).",
            value=gauges.calls_in_flight(),
        )
        yield GaugeMetricFamily(
            "dspex_rpcs_open",
            "RPCs holding a slot of max_concurrent_calls now (a stream holds one).",
            value=gauges.rpcs_open(),
        )
        yield GaugeMetricFamily(
            "dspex_call_streams_open", "Calls streams open now.", value=gauges.call_streams()
        )
        lifecycle = CounterMetricFamily(
            "dspex_session_lifecycle",
            "Session lifecycle events: created, attached, closed, expired, crashed "
            "(closed after its actor died too often), imported, committed.",
            labels=["event"],
        )
        for event, count in dict(m.lifecycle).items():
            lifecycle.add_metric([event], count)
        yield lifecycle
        yield from self._held(kind)
        yield GaugeMetricFamily(
            "dspex_watch_streams_open", "Watch streams open now.", value=m.watch_streams
        )
        events = CounterMetricFamily(
            "dspex_watch_events_sent",
            "Events the Watch streams sent, by kind (progress: a filtered watch caught up).",
            labels=["kind"],
        )
        for event_kind, count in dict(m.watch_events).items():
            events.add_metric([event_kind], count)
        yield events
        yield CounterMetricFamily(
            "dspex_watch_overflows",
            "Overflow events sent: a watcher fell behind, or resumed from too far back.",
            value=m.overflows,
        )
        store_latency = HistogramMetricFamily(
            "dspex_store_duration_seconds",
            "Seconds each call into the store took, by store kind.",
            labels=["store"],
        )
        store_latency.add_metric([kind], *_buckets(m.store_latency))
        yield store_latency
        errors = CounterMetricFamily(
            "dspex_store_errors",
            "Store calls that failed to serve (unavailable, internal), by store kind and "
            "reason; answers such as not_found are not errors.",
            labels=["store", "reason"],
        )
        for reason, count in dict(m.store_errors).items():
            errors.add_metric([kind, reason], count)
        yield errors

    def _held(self, kind: str) -> Iterator[Metric]:
        """The store's own figures, where it keeps them."""
        store = self._gauges.store
        census: Callable[[], tuple[int, int]] | None = getattr(store, "census", None)
        if census is not None:
            sessions, variables = census()
            sessions_open = GaugeMetricFamily(
                "dspex_sessions_open", "Sessions the store holds now.", labels=["store"]
            )
            sessions_open.add_metric([kind], sessions)
            yield sessions_open
            held = GaugeMetricFamily(
                "dspex_variables", "Variables in the sessions the store holds.", labels=["store"]
            )
            held.add_metric([kind], variables)
            yield held
        hits = getattr(store, "dedupe_hits", None)
        if isinstance(hits, int):
            dedupe = CounterMetricFamily(
                "dspex_dedupe_hits",
                "Writes answered from the request-id window instead of applied again.",
                labels=["store"],
            )
            dedupe.add_metric([kind], hits)
            yield dedupe


def registry_for(metrics: ServerMetrics, gauges: Gauges) -> CollectorRegistry:
    """A registry of one server's metrics and its process's."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(metrics, gauges))
    ProcessCollector(registry=registry)
    return registry


class _Quiet(WSGIRequestHandler):
    """No access log on stderr; a silent connection is let go after a while."""

    timeout = _SCRAPE_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """A scrape per thread; closing joins them (none outlives the server)."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn): skipped, a
        # scrape needs no name and a slow resolver would stall the server's start.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


def _split(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for IPv6) as a host and a port; ValueError else."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(
            f"metrics address {address!r}: expected HOST:PORT (port 0 to 65535; 0 picks one)"
        )
    return host, int(port)


class MetricsEndpoint:
    """Prometheus' scrape endpoint for one registry, on a thread of its own.

    ``address`` is ``host:port`` with the real port (after binding ``:0``).
    ``OSError`` when the address cannot be bound; :meth:`close` stops it.
    """

    def __init__(self, address: str, registry: CollectorRegistry) -> None:
        host, port = _split(address)
        server_class = _Server6 if ":" in host else _Server
        try:
            self._httpd = server_class((host, port), _Quiet)
        except OSError as exc:
            raise OSError(f"could not serve metrics on {address!r}: {exc}") from exc
        self._httpd.set_app(make_wsgi_app(registry))
        bound = self._httpd.server_address[1]
        self.address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(_POLL,),
            name="dspex-metrics-http",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving; scrapes under way finish first."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
