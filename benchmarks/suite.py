"""What every suite shares: the run's settings, results and servers, and one way to sample ops."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.results import Backend, Kind, Measurement, Results
from benchmarks.servers import Servers
from benchmarks.timing import Sampler, Timed, measure

__all__ = [
    "Op",
    "Run",
    "add_duration",
    "alternating",
    "export_of_floats",
    "sample_ops",
    "versioned_set",
]


@dataclass
class Run:
    """One ``python -m benchmarks`` run: its mode, its servers and what it measured."""

    quick: bool
    servers: Servers
    results: Results = field(default_factory=Results)

    def pick(self, full: Any, quick: Any) -> Any:
        """``quick`` under ``--quick``, else ``full`` (rounds, sizes, ...)."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Op:
    """One operation to sample, with where its figures go."""

    id: str
    label: str
    backend: Backend
    op: str
    fn: Callable[[], object]
    calls: int = 1  # calls per sample: >1 only for sub-microsecond reads
    timed: bool = False  # fn times itself and returns ns (see timing.Timed); calls is 1
    sampler: Sampler | None = None  # samples its blocks itself (timing.Sampler); fn unused
    beside: str | None = None  # an op sampled in turns with this one (timing.measure)
    kind: Kind = "latency"  # "lag": a timed op whose ns are no call's duration
    baseline: str | None = None
    peers: tuple[str, ...] = ()
    curve: str | None = None
    x: int | None = None


def sample_ops(run: Run, suite: str, label: str, ops: Sequence[Op], samples: int) -> None:
    """Sample ``ops`` in blocks interleaved round-robin (:func:`benchmarks.timing.measure`),
    at least ``samples`` each, and add them to the results."""
    plain = {op.id: (op.fn, op.calls) for op in ops if not op.timed and op.sampler is None}
    timed = {op.id: _timed(op.fn) for op in ops if op.timed and op.sampler is None}
    samplers = {op.id: op.sampler for op in ops if op.sampler is not None}
    beside = {op.id: op.beside for op in ops if op.beside is not None}
    got = measure(label, plain, samples, timed=timed, samplers=samplers, beside=beside)
    for op in ops:
        run.results.add(
            Measurement(
                id=op.id,
                label=op.label,
                suite=suite,
                backend=op.backend,
                op=op.op,
                kind=op.kind,
                samples=got[op.id].samples,
                calls=op.calls,
                block=got[op.id].block,
                baseline=op.baseline,
                peers=op.peers,
                curve=op.curve,
                x=op.x,
            )
        )


def _timed(fn: Callable[[], object]) -> Timed:
    def probe() -> float:
        ns = fn()
        if not isinstance(ns, int | float):
            raise TypeError(f"a timed op returns ns, got {ns!r}")
        return float(ns)

    return probe


def alternating() -> Callable[[], float]:
    """0.5, 1.0, 0.5, ...: every write changes the value."""
    flip = iter(range(10**12))
    return lambda: 1.0 if next(flip) & 1 else 0.5


def versioned_set(setter: Callable[[float, int], int], start: int) -> Callable[[], object]:
    """A call that sets with the version the previous call returned (compare-and-set)."""
    version = start
    value = alternating()

    def call() -> object:
        nonlocal version
        version = setter(value(), version)
        return version

    return call


def add_duration(
    run: Run,
    suite: str,
    id: str,
    label: str,
    backend: Backend,
    op: str,
    times: list[float],
    *,
    kind: Kind = "duration",
    baseline: str | None = None,
    peers: tuple[str, ...] = (),
    curve: str | None = None,
    x: int | None = None,
    rates: list[float] | None = None,
    block: int = 1,
) -> Measurement:
    """Add a measurement made outside :func:`sample_ops`: whole runs (an import, a
    switch: one sample per run) or a throughput run (per-call samples and the ops/s of
    each of its rounds, ``rates``: its figure is their median); or samples taken
    in blocks of ``block`` elsewhere (:func:`benchmarks.timing.measure`)."""
    return run.results.add(
        Measurement(
            id=id,
            label=label,
            suite=suite,
            backend=backend,
            op=op,
            kind=kind,
            samples=times,
            baseline=baseline,
            peers=peers,
            curve=curve,
            x=x,
            rates=rates or [],
            block=block,
        )
    )


def export_of_floats(count: int, session_id: str = "bench") -> dict[str, Any]:
    """A session export of ``count`` float variables ``x0``.. in [0, 1], built directly.

    The export and its record are copied from a real export of a one-variable session
    (so a field the library adds later comes along), with only ids, names and times
    changed per variable.
    """
    from dspex_actors import LocalState

    probe = LocalState.init()
    try:
        probe.register_variable("x", "float", 0.5, constraints={"min": 0.0, "max": 1.0})
        exported = probe.export_state()
        template = next(iter(exported["variables"].values()))
    finally:
        probe.cleanup()
    now = time.time()
    variables = {}
    for i in range(count):
        var_id = f"var_{i:032x}"
        variables[var_id] = {
            **template,
            "id": var_id,
            "name": f"x{i}",
            "created_at": now,
            "last_updated_at": now,
        }
    return {
        **exported,
        "session_id": session_id,
        "variables": variables,
        "variable_index": {record["name"]: var_id for var_id, record in variables.items()},
    }
