"""Sampling helpers shared by every benchmark.

A sample times ``calls`` back-to-back calls and records the mean per call. Calls
that cross a thread or a socket are sampled one at a time, so their percentiles
are per call; sub-microsecond reads are sampled in batches (a single one is below
the timer's resolution), so their percentiles are of batch means. The garbage
collector is paused while sampling, as ``timeit`` does.

Blocks, interleaved round-robin (issue 20)
------------------------------------------
Every op of a suite (ours, the baselines' and the peers') is sampled in blocks of
consecutive calls, each after :data:`LEAD` untimed ones, and each round takes one
block of every op in a new shuffled order, so noise slower than a round falls on all
of them alike (:func:`measure`).

Why not one call per op per round, as the suite did before: then every call followed
another op's call, and paid for it. A redis-py ``GET`` ran while the gRPC threads of
the bridged call before it were still waking in this process: the suite's GET p50
came out 160-200 us one call at a time, 74-111 us in blocks, beside 70-116 us for the
same GET in a fresh process (nine full bridge runs in blocks of 20, 100 and 500); the
bare grpcio echo 600-700 us one at a time, 370-450 us in blocks. Ratios to Redis
were flattered (bridged get / GET 2.4-2.7x one call at a time, 3.9-5.6x in blocks,
three full runs each), and so were those to the unary echo and etcd, which paid more
for the call before them than our streamed calls did (get / echo 0.68-0.73x, 0.97-1.04x
in blocks; get / etcd Range 0.97-1.08x, 1.16-1.33x).

:data:`LEAD`. In 30 blocks of 100 per op (a full bridge run, no lead), a block's
first call took 1.8-3.3x the block's median, the second 1.10-1.35x, the third
1.04-1.19x, the fourth and fifth up to 1.14x, from the sixth on within 1.06x; the
GET in a process of its own pays the same first call (3.3x): whatever ran before, a
process or thread woken to call again starts cold. Five calls untimed keep it out.

Block length. Short enough that a round stays well inside the seconds for which this
machine's speed holds still, long enough that the lead is a small share. In three
full bridge runs per length, the suite's GET over the same GET alone (below) came out
1.00-1.07x with blocks of 20, 0.99-1.06x of 100 and 0.95-1.23x of 500 (a round of
blocks of 500 takes seconds). But a block of a fixed count lasts as long as its op
is slow: 100 GETs are 8 ms, 100 bridged calls 40 ms, so a burst of other work hit
the GET's blocks or the bridged ones, not both, and in quick runs the Redis ops'
block medians moved up to 2.4x within a run. So a block holds at least :data:`BLOCK`
samples (50 bridged calls, 20 ms) and as many more as last :data:`BLOCK_NS` (20 ms:
250 GETs, 600 Pykka asks), the count set from the op's warm-up: every op's block
spans about the same time, and a round of the bridge suite about half a second. A
quick run takes 10 rounds, a full run 60.

The cross-check. Two measurements of one thing that are compared (the suite's
redis-py ``GET`` and the same ``GET`` in a fresh process, :mod:`benchmarks.alone`)
are sampled beside each other (``beside``): each round, their blocks are cut into
turns of :data:`BLOCK` samples, taken A B, B A, A B, ..., so that a burst of other
work falls on both. Sampled as whole blocks, apart or one after the other, they came
out 17-29% apart in 5 quick runs of 28; in turns, within 12% in all 8 quick runs since
(``benchmarks/targets.toml`` has the ranges).
"""

from __future__ import annotations

import functools
import gc
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.progress import progress

__all__ = [
    "BLOCK",
    "BLOCK_NS",
    "LEAD",
    "MAX_BLOCK",
    "Sampled",
    "Sampler",
    "Summary",
    "Timed",
    "block_size",
    "block_sizes",
    "blocks",
    "human",
    "measure",
    "sample",
    "summarize",
    "time_runs",
    "turns",
]

BLOCK = 50
"""The fewest consecutive samples of one op in a block (module docstring)."""

BLOCK_NS = 20_000_000
"""How long a block lasts at the least, in ns: an op faster than ``BLOCK_NS / BLOCK``
per sample takes more samples a block, so every op's block spans about the same time
and noise of any duration falls on all of them alike (module docstring)."""

MAX_BLOCK = 1000
"""The most samples in a block, however fast the op."""

LEAD = 5
"""Untimed calls of an op before each of its blocks: what follows another op's call
pays for that op's threads still waking, for four or five calls (module docstring)."""


Op = tuple[Callable[[], object], int]
"""An operation to sample: the function, and how many calls make one sample."""

Timed = Callable[[], float]
"""An operation that times itself and returns ns: one whose latency ends in another
thread (a change event reaching its subscriber), which no timer around the call sees."""

Sampler = Callable[[int, int], list[float]]
"""An operation that samples a whole block itself: ``sampler(lead, count)`` makes
``lead`` untimed calls, then ``count`` timed ones, and returns their ns per call. One
that runs in another process (:mod:`benchmarks.alone`) is sampled this way, a block
per request."""


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


def blocks(samples: int, block: int | None = None) -> tuple[int, int]:
    """(rounds, samples in the shortest block) that give every op at least ``samples``:
    blocks of ``block`` (:data:`BLOCK`), or one block of ``samples`` when fewer."""
    block = BLOCK if block is None else block
    if samples < 1 or block < 1:
        raise ValueError(f"samples and block must be positive, got {samples} and {block}")
    size = min(block, samples)
    return math.ceil(samples / size), size


def block_size(per_sample_ns: float, least: int, block_ns: float = BLOCK_NS) -> int:
    """Samples in a block of an op whose sample takes ``per_sample_ns``: enough for the
    block to last ``block_ns`` (in tens), at least ``least``, at most :data:`MAX_BLOCK`."""
    if block_ns <= 0 or per_sample_ns <= 0:
        return least
    wanted = math.ceil(block_ns / per_sample_ns / 10) * 10
    return max(least, min(MAX_BLOCK, wanted))


def block_sizes(
    per_sample_ns: dict[str, float], least: int, block_ns: float, beside: dict[str, str]
) -> dict[str, int]:
    """Each op's block length (:func:`block_size`); a pair's (``beside``) both the
    longer of their two, so the two blocks compared span the same time."""
    sizes = {name: block_size(ns, least, block_ns) for name, ns in per_sample_ns.items()}
    for name, other in beside.items():
        sizes[name] = sizes[other] = max(sizes[name], sizes[other])
    return sizes


@dataclass(frozen=True)
class Sampled:
    """One op's samples, in ns per call in the order taken, and its blocks' length."""

    samples: list[float]
    block: int


def _block_of(probe: Timed) -> Sampler:
    def sampler(lead: int, count: int) -> list[float]:
        for _ in range(lead):
            probe()
        return [probe() for _ in range(count)]

    return sampler


def measure(
    label: str,
    ops: dict[str, Op],
    samples: int,
    warmup: int = 20,
    timed: dict[str, Timed] | None = None,
    samplers: dict[str, Sampler] | None = None,
    beside: dict[str, str] | None = None,
    block: int | None = None,
    block_ns: float | None = None,
    lead: int | None = None,
) -> dict[str, Sampled]:
    """Sample every op in blocks interleaved round-robin (module docstring).

    ``ops`` maps a name to (fn, calls per sample), ``timed`` a name to an op that times
    itself (one call per sample), ``samplers`` a name to one that samples its blocks
    itself. Each op is warmed up (``warmup`` untimed samples, whose time sets its
    block's length: :func:`block_size`); then each round takes one block of each op,
    in a shuffled order: ``lead`` untimed calls (:data:`LEAD`), then the block's
    samples, until every op has at least ``samples`` (the shortest blocks hold
    ``block``, :data:`BLOCK`; ``block_ns`` 0 makes every block that long). ``beside``
    maps a name to another whose block its own is always taken right beside, before or
    after at random, both of the longer length: two measurements of one thing,
    compared, see the same moment of the machine.
    """
    rounds, least = blocks(samples, block)
    lead = LEAD if lead is None else lead
    block_ns = BLOCK_NS if block_ns is None else block_ns
    every: dict[str, Sampler] = {
        name: _block_of(functools.partial(sample, fn, calls)) for name, (fn, calls) in ops.items()
    }
    every.update({name: _block_of(probe) for name, probe in (timed or {}).items()})
    every.update(samplers or {})
    units = _units(list(every), beside or {})
    what = f"{len(every)} operation{'s' if len(every) != 1 else ''}"
    progress.stage(f"{label}: warming up {what}")
    per_sample = {}
    for name, sampler in every.items():
        started = time.perf_counter_ns()
        sampler(warmup, 0)
        per_sample[name] = (time.perf_counter_ns() - started) / warmup if warmup else 0.0
    sizes = block_sizes(per_sample, least, block_ns, beside or {})
    taken: dict[str, list[float]] = {name: [] for name in every}
    progress.stage(f"{label}: {what} in blocks of {least} or more, round", total=rounds)
    rng = random.Random(rounds)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for done in range(rounds):
            # A new order each round: an op follows each other op, and a round's
            # start, as often as every other op does.
            rng.shuffle(units)
            for unit in units:
                first = unit if rng.random() < 0.5 else unit[::-1]
                for names, count in turns(first, sizes[unit[0]], least):
                    for name in names:
                        got = every[name](lead, count)
                        if len(got) != count:
                            raise RuntimeError(f"{name}: {count} samples asked, {len(got)} given")
                        taken[name].extend(got)
            progress.step(done + 1)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Sampled(taken[name], sizes[name]) for name in every}


def turns(unit: tuple[str, ...], size: int, least: int) -> list[tuple[tuple[str, ...], int]]:
    """How a round samples one unit: an op alone, its whole block; a pair, in turns of
    ``least`` samples (the block cut in as many), the two in ABBA order (A B, B A,
    A B, ...), so what the machine did during the pair's blocks fell on both alike."""
    if len(unit) == 1:
        return [(unit, size)]
    turns = max(1, size // least)
    counts = [size * (t + 1) // turns - size * t // turns for t in range(turns)]
    return [(unit if t % 2 == 0 else unit[::-1], count) for t, count in enumerate(counts)]


def _units(names: list[str], beside: dict[str, str]) -> list[tuple[str, ...]]:
    """What a round shuffles: each op alone, or a pair sampled side by side."""
    paired = {name for pair in beside.items() for name in pair}
    unknown = paired - set(names)
    if unknown:
        raise ValueError(f"beside names ops not sampled: {sorted(unknown)}")
    if len(paired) != 2 * len(beside):
        raise ValueError(f"an op is set beside two others, or itself: {beside}")
    units: list[tuple[str, ...]] = [(name,) for name in names if name not in paired]
    return units + [(name, other) for name, other in beside.items()]


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
