"""What one run measured: every operation's samples, and the values and ratios drawn from them.

A :class:`Measurement` is one operation on one backend: its samples (ns per call),
the baseline it is judged against (a dict lookup, a bare Pykka ask, a bare grpcio
echo, or for a scale curve the same operation at the curve's smallest size) and the
peers it is set beside (redis-py, etcd). A ratio's name is ``"numerator/denominator"``
of two measurement ids, always from the same run; ``benchmarks/targets.toml`` names
ratios this way. Scale curves are measurements with a ``curve`` and an ``x``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks.timing import Summary, summarize

__all__ = ["Backend", "Measurement", "Results", "Value"]

Backend = Literal["baseline", "local", "bridged", "context", "redis_state", "redis", "etcd"]
Kind = Literal["latency", "lag", "duration", "throughput"]
"""What the samples are: ns per call (latency); ns from one event to another, no call's
duration, so no ops/s (lag: a change event's arrival after its write returned); ns per
whole run (duration); ns per call under load, with the run's own ops/s (throughput)."""


@dataclass
class Measurement:
    """One operation on one backend, sampled in this run."""

    id: str  # "bridged.get", "vars.redis.cas@1000", "throughput.bridged.get@8"
    label: str  # what a reader recognises: "BridgedState.get_variable"
    suite: str
    backend: Backend
    op: str  # what it does, across backends: "get", "set", "import", ...
    kind: Kind
    samples: list[float]  # ns per call (latency, throughput) or per run (duration), in order
    calls: int = 1  # calls per sample
    block: int = 1  # samples per round: one block (timing.measure), in order
    baseline: str | None = None
    peers: tuple[str, ...] = ()
    curve: str | None = None
    x: int | None = None
    rates: list[float] = field(default_factory=list)  # a throughput run's ops/s, each round's
    summary: Summary = field(init=False)

    def __post_init__(self) -> None:
        # A throughput run's ops/s (all clients, wall time) is its median round's.
        rate = statistics.median(self.rates) if self.rates else None
        self.summary = summarize(self.samples, self.calls, rate)


@dataclass(frozen=True)
class Value:
    """A single figure that is not a latency: KB per session, threads left, ms waited."""

    name: str
    value: float
    unit: str
    label: str


@dataclass
class Results:
    """Everything one run measured, in the order it was measured."""

    measurements: dict[str, Measurement] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> one-line reason
    failed: dict[str, str] = field(default_factory=dict)  # suite -> its error
    suites: list[str] = field(default_factory=list)

    def add(self, measurement: Measurement) -> Measurement:
        if measurement.id in self.measurements:
            raise ValueError(f"measured {measurement.id!r} twice")
        self.measurements[measurement.id] = measurement
        return measurement

    def value(self, name: str, value: float, unit: str, label: str) -> None:
        self.values[name] = Value(name, value, unit, label)

    def skip(self, what: str, reason: str) -> None:
        self.skipped[what] = reason

    def of_suite(self, suite: str, curves: bool = False) -> Iterator[Measurement]:
        for m in self.measurements.values():
            if m.suite == suite and (m.curve is not None) == curves:
                yield m

    def ratio(self, name: str, figure: str = "p50") -> float | None:
        """``"a/b"``: measurement a's figure over b's; a plain name is a value or None."""
        if "/" not in name:
            value = self.values.get(name)
            return value.value if value is not None else None
        numerator, denominator = name.split("/", 1)
        a, b = self.measurements.get(numerator), self.measurements.get(denominator)
        if a is None or b is None:
            return None
        bottom = b.summary.figure(figure)
        return a.summary.figure(figure) / bottom if bottom else None

    def ratios_of(self, m: Measurement) -> dict[str, dict[str, float]]:
        """Every figure of ``m`` over its baseline's and each present peer's."""
        out: dict[str, dict[str, float]] = {}
        for other in (m.baseline, *m.peers):
            if other is None or other not in self.measurements or other == m.id:
                continue
            lag = "lag" in (m.kind, self.measurements[other].kind)  # a lag has no ops/s
            theirs = self.measurements[other].summary
            out[other] = {
                f: m.summary.figure(f) / theirs.figure(f)
                for f in Summary.FIGURES
                if theirs.figure(f) and not (lag and f == "ops_per_s")
            }
        return out

    def to_json(self) -> dict[str, Any]:
        measurements = []
        for m in self.measurements.values():
            s = m.summary
            ratios = self.ratios_of(m)
            measurements.append(
                {
                    "id": m.id,
                    "label": m.label,
                    "suite": m.suite,
                    "backend": m.backend,
                    "op": m.op,
                    "kind": m.kind,
                    "curve": m.curve,
                    "x": m.x,
                    "samples": s.samples,
                    "calls_per_sample": s.calls_per_sample,
                    "samples_per_block": m.block,
                    "ns": {"p50": s.p50, "p90": s.p90, "p99": s.p99, "max": s.max, "mean": s.mean},
                    "ops_per_s": None if m.kind == "lag" else s.ops_per_s,
                    "rounds_ops_per_s": m.rates or None,  # a throughput run's, each round's
                    "baseline": m.baseline,
                    "vs_baseline": ratios.get(m.baseline) if m.baseline else None,
                    "peers": list(m.peers),
                    "vs_peers": {p: ratios[p] for p in m.peers if p in ratios},
                }
            )
        return {
            "suites": self.suites,
            "measurements": measurements,
            "values": {
                v.name: {"value": v.value, "unit": v.unit, "label": v.label}
                for v in self.values.values()
            },
            "skipped": self.skipped,
            "failed": self.failed,
        }
