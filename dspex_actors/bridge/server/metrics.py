"""What a SessionStore server counts: calls, refusals, sessions, watches, its store.

:class:`ServerMetrics` is the record; ``exposition.py`` turns it into Prometheus'
text format for a scrape. The record is plain Python ints, lists and dicts,
written only on the server's event loop thread (every call runs there), so the
hot path takes no lock and calls no library: a streamed call costs a dict
increment and one bisect into a histogram's bounds. A scrape reads it from its
own thread; each read copies one dict or list whole (one step under the GIL), and
a histogram's count is the sum of its buckets, so the two always agree. A server
started without ``metrics=`` has no record at all: its handlers test for None.

What is counted (see the README's "Metrics" for the scrape):

* every SessionStore call once, by method and gRPC status code: unary calls, each
  call of a Calls stream, each Watch stream when it ends, and calls refused at
  admission; the call latency of each (Watch excepted: a stream's lifetime is not
  a latency), from its arrival to its answer;
* refusals at admission by reason: ``max_concurrent_calls`` (the server's limit, on
  RPCs and on streamed calls), ``max_calls_per_connection`` (a Calls stream's own
  limit), ``unauthenticated`` (no or a wrong token), ``stopping``;
* session lifecycle events (``created attached closed expired crashed imported
  committed``), watch streams and the events they sent (``overflow`` apart too);
* each call into the store: its latency and its failures, by store kind. A failure
  is what says the store could not serve (``BridgeUnavailable``, an internal
  error), not an answer such as ``VariableNotFound``.

Sessions and variables held, and request-id dedupe hits, are the store's own
figures: read at scrape time from a store that keeps them (``census()`` and
``dedupe_hits``; the memory and SQLite stores), absent for one that does not (a
Redis store's sessions belong to every server on that Redis).
"""

from __future__ import annotations

from bisect import bisect_left

from dspex_actors.errors import BridgeUnavailable, StateError

__all__ = [
    "LATENCY_BUCKETS",
    "Histogram",
    "ServerMetrics",
    "is_store_failure",
]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency buckets: a local call answers in tens of
microseconds, a store over the network in milliseconds, a stalled one in seconds."""

WATCH = "Watch"
"""The method label of the Watch stream (one of the two RPCs outside the wire table)."""


class Histogram:
    """Observations counted into :data:`LATENCY_BUCKETS` (the last slot: past them)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


def is_store_failure(exc: BaseException) -> bool:
    """Whether an exception from the store says it failed to serve, rather than being
    the answer to the request (an unknown variable, a value refused, a conflict)."""
    return (
        not isinstance(exc, StateError)
        or isinstance(exc, BridgeUnavailable)
        or (type(exc) is StateError)
    )


class ServerMetrics:
    """One server's counts (see the module docstring); written on its loop only."""

    def __init__(self, store_kind: str) -> None:
        self.store_kind = store_kind
        self.calls: dict[tuple[str, str], int] = {}
        """(method, status code name) -> calls answered."""
        self.latency: dict[str, Histogram] = {}
        """method -> how long its calls took, arrival to answer."""
        self.refused: dict[tuple[str, str], int] = {}
        """(method, reason) -> calls refused at admission."""
        self.lifecycle: dict[str, int] = {}
        """lifecycle event -> sessions it happened to."""
        self.watch_events: dict[str, int] = {}
        """event kind -> events the Watch streams sent."""
        self.watch_streams = 0
        """Watch streams open now."""
        self.overflows = 0
        """Overflow events sent (a watcher fell behind, or resumed from too far back)."""
        self.store_latency = Histogram()
        self.store_errors: dict[str, int] = {}
        """failure reason -> store calls that failed."""

    # -- calls ----------------------------------------------------------------------

    def answered(self, method: str, code: str, seconds: float) -> None:
        """A call was answered with ``code`` (a grpc.StatusCode name) ``seconds`` after
        it arrived."""
        key = (method, code)
        calls = self.calls
        calls[key] = calls.get(key, 0) + 1
        histogram = self.latency.get(method)
        if histogram is None:
            histogram = self.latency[method] = Histogram()
        histogram.observe(seconds)

    def watch_ended(self, code: str) -> None:
        """A Watch stream ended with ``code`` (counted as a call, with no latency)."""
        key = (WATCH, code)
        self.calls[key] = self.calls.get(key, 0) + 1

    def refused_call(self, method: str, reason: str) -> None:
        """A call was refused at admission (it is also counted as answered)."""
        key = (method, reason)
        self.refused[key] = self.refused.get(key, 0) + 1

    # -- sessions and watches -------------------------------------------------------

    def lifecycle_event(self, event: str, sessions: int = 1) -> None:
        """``sessions`` sessions were created, closed, expired, ... (see the module)."""
        self.lifecycle[event] = self.lifecycle.get(event, 0) + sessions

    def watch_event(self, kind: str) -> None:
        """A Watch stream sent an event of ``kind`` (or a progress message)."""
        self.watch_events[kind] = self.watch_events.get(kind, 0) + 1
        if kind == "overflow":
            self.overflows += 1

    # -- the store ------------------------------------------------------------------

    def store_call(self, seconds: float, failure: BaseException | None = None) -> None:
        """A call into the store took ``seconds``; ``failure`` is what it raised, if
        anything (counted only when :func:`is_store_failure`)."""
        self.store_latency.observe(seconds)
        if failure is not None and is_store_failure(failure):
            reason = failure.reason if isinstance(failure, StateError) else "internal"
            self.store_errors[reason] = self.store_errors.get(reason, 0) + 1
