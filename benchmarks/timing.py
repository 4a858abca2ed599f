"""Sampling helpers shared by every benchmark.

A sample times ``calls`` back-to-back calls and records the mean per call. Calls
that cross a thread or a socket are sampled one at a time, so their percentiles
are per call; sub-microsecond reads are sampled in batches (a single one is below
the timer's resolution), so their percentiles are of batch means. The garbage
collector is paused while sampling, as ``timeit`` does, and every op is sampled
round-robin (ours and the peers' alike, in a new order each round) so machine noise
falls on all of them alike.
"""

from __future__ import annotations

import functools
import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.progress import progress

__all__ = ["Summary", "Timed", "human", "measure", "sample", "summarize", "time_runs"]

Op = tuple[Callable[[], object], int]
"""An operation to sample: the function, and how many calls make one sample."""

Timed = Callable[[], float]
"""An operation that times itself and returns ns: one whose latency ends in another
thread (a change event reaching its subscriber), which no timer around the call sees."""


@dataclass(frozen=True)
class Summary:
    """Percentiles of one operation's samples, in nanoseconds, and its rate.

    ``ops_per_s`` is what one caller achieves back to back (1e9 / mean), unless the
    measurement states its own (a throughput run: calls / wall time, all clients).
    """

    samples: int
    calls_per_sample: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    ops_per_s: float

    FIGURES = ("p50", "p90", "p99", "max", "ops_per_s")

    def figure(self, name: str) -> float:
        value: float = getattr(self, name)
        return value


def _percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(samples: Sequence[float], calls: int = 1, rate: float | None = None) -> Summary:
    """Summarize ``samples`` (ns per call); ``rate`` overrides the derived ops/s."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples)
    mean = sum(ordered) / len(ordered)
    return Summary(
        samples=len(ordered),
        calls_per_sample=calls,
        p50=_percentile(ordered, 0.50),
        p90=_percentile(ordered, 0.90),
        p99=_percentile(ordered, 0.99),
        max=ordered[-1],
        mean=mean,
        ops_per_s=rate if rate is not None else (1e9 / mean if mean > 0 else 0.0),
    )


def sample(fn: Callable[[], object], calls: int) -> float:
    """Time ``calls`` back-to-back calls of ``fn``; return ns per call."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


def measure(
    label: str,
    ops: dict[str, Op],
    rounds: int,
    warmup: int = 20,
    timed: dict[str, Timed] | None = None,
) -> dict[str, list[float]]:
    """Round-robin sampling: each round samples every op once, in a shuffled order, so
    machine noise falls on all of them alike. ``ops`` maps a name to (fn, calls per
    sample), ``timed`` a name to an op that times itself (one call per sample);
    returns each name's samples in ns per call."""
    every: dict[str, Timed] = {
        name: functools.partial(sample, fn, calls) for name, (fn, calls) in ops.items()
    }
    every.update(timed or {})
    samples: dict[str, list[float]] = {name: [] for name in every}
    what = f"{len(every)} operation{'s' if len(every) != 1 else ''}"
    progress.stage(f"{label}: warming up {what}")
    for probe in every.values():
        for _ in range(warmup):
            probe()
    progress.stage(f"{label}: {what} round-robin, round", total=rounds)
    order = list(every.items())
    shuffle = random.Random(rounds).shuffle
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for done in range(rounds):
            # A new order each round: an op that follows a call to another server (or a
            # cold cache) does so as often as every other op.
            shuffle(order)
            for name, probe in order:
                samples[name].append(probe())
            progress.step(done + 1)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def time_runs(label: str, run: Callable[[], float], runs: int) -> list[float]:
    """Call ``run`` (which times its own critical part and returns ns) ``runs`` times."""
    progress.stage(label, total=runs)
    times = []
    for done in range(runs):
        times.append(run())
        progress.step(done + 1)
    return times


def human(ns: float) -> str:
    """A duration for a table column (9 characters)."""
    if ns < 1_000:
        return f"{ns:6.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:6.1f} us"
    if ns < 10_000_000_000:
        return f"{ns / 1_000_000:6.1f} ms"
    return f"{ns / 1e9:6.1f} s "
