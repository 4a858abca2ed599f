"""Sampling and reporting helpers shared by every benchmark.

A sample times ``calls`` back-to-back calls and records the mean per call. Calls
that cross a thread or a socket are sampled one at a time, so their p50 and p99
are per call; sub-microsecond reads are sampled in batches (a single one is below
the timer's resolution), so their p99 is of batch means. The garbage collector is
paused while sampling, as ``timeit`` does, and every op is sampled round-robin so
machine noise falls on all of them alike.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Series:
    """Per-operation latency samples, in nanoseconds per call."""

    name: str
    samples: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


def sample(fn: Callable[[], object], calls: int) -> float:
    """Time ``calls`` back-to-back calls of ``fn``; return ns per call."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


def measure(
    ops: dict[str, tuple[Callable[[], object], int]], rounds: int, warmup: int = 20
) -> dict[str, Series]:
    """Round-robin sampling: each round samples every op once, so machine noise
    falls on all of them alike. ``ops`` maps a name to (fn, calls per sample)."""
    series = {name: Series(name) for name in ops}
    for fn, calls in ops.values():
        for _ in range(warmup):
            sample(fn, calls)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, (fn, calls) in ops.items():
                series[name].samples.append(sample(fn, calls))
    finally:
        if gc_was_enabled:
            gc.enable()
    return series


def human(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:7.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:7.1f} us"
    return f"{ns / 1_000_000:7.2f} ms"


def table(series: dict[str, Series], baseline: str) -> None:
    """Print p50/p99 of each series and its p50 ratio to ``baseline``."""
    base = series[baseline].p50
    print(f"  {'operation':<44} {'p50':>10} {'p99':>10}  {'p50 / ' + baseline:>14}")
    for s in series.values():
        print(f"  {s.name:<44} {human(s.p50)} {human(s.p99)}  {s.p50 / base:13.2f}x")


def target(label: str, ratio: float, limit: float) -> bool:
    verdict = "meets" if ratio <= limit else "MISSES"
    print(f"  target {label:<58} {ratio:7.2f}x (<= {limit}x) {verdict}")
    return ratio <= limit
