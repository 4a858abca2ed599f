"""``--plot FILE.png``: latency distributions and scale curves, ours and the peers' in one picture.

The top panel shows every sampled operation's distribution per call (box: p25-p75,
whiskers: p1-p99, tick: p50, dot: max) on a log scale, grouped by what the
operation does and coloured by backend, so Redis's GET sits beside our get and
the echo beside both. Below it, one panel per scale curve. Needs matplotlib (the
``bench`` extra); :func:`missing` says so before a run starts.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from benchmarks.report import CURVES, distinct
from benchmarks.results import Measurement, Results

__all__ = ["missing", "render"]

COLOURS = {
    "baseline": "#7f7f7f",
    "local": "#1f77b4",
    "context": "#9467bd",
    "bridged": "#ff7f0e",
    "redis_state": "#8c564b",
    "redis": "#d62728",
    "etcd": "#2ca02c",
}
_OP_ORDER = ("echo", "ask", "get", "get100", "set", "put", "update100")
# Ours solid and peers dashed; the marker tells reads (o) from writes (s).
_MARKERS = {"get": "o", "set": "s", "import": "s", "export": "o", "switch": "^"}


def missing() -> str | None:
    """Why ``--plot`` cannot work here, or None."""
    if importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install -e '.[bench]'"
    return None


def _distributions(ax: Any, results: Results) -> None:
    rows = [m for m in results.measurements.values() if m.kind == "latency" and m.curve is None]
    rows.sort(key=lambda m: (_OP_ORDER.index(m.op) if m.op in _OP_ORDER else 99, m.suite))
    if not rows:
        ax.set_visible(False)
        return
    positions = list(range(len(rows), 0, -1))
    boxes = ax.boxplot(
        [[ns / 1000 for ns in m.samples] for m in rows],
        positions=positions,
        vert=False,
        whis=(1, 99),
        showfliers=False,
        widths=0.6,
        patch_artist=True,
        medianprops={"color": "black"},
    )
    for patch, m in zip(boxes["boxes"], rows, strict=True):
        patch.set_facecolor(COLOURS[m.backend])
        patch.set_alpha(0.7)
    ax.scatter([m.summary.max / 1000 for m in rows], positions, s=8, color="black", zorder=3)
    labels = distinct([_row_label(m) for m in rows], rows)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per call (log scale)")
    ax.set_title("Latency per operation and backend, one run, in blocks interleaved round-robin")
    ax.grid(axis="x", which="both", alpha=0.3)
    for backend, colour in COLOURS.items():
        if any(m.backend == backend for m in rows):
            ax.barh(0, 0, color=colour, alpha=0.7, label=backend)
    ax.legend(loc="lower right", fontsize=8)


def _row_label(m: Measurement) -> str:
    calls = f" (means of {m.calls})" if m.calls > 1 else ""
    return f"{m.label}{calls}"


def _curve(ax: Any, results: Results, curves: tuple[str, ...]) -> None:
    points = [m for m in results.measurements.values() if m.curve in curves]
    throughput = curves == ("clients",)
    series: dict[tuple[str | None, str, str], list[Measurement]] = {}
    for m in points:
        series.setdefault((m.curve, m.backend, m.op), []).append(m)
    for (_curve, backend, op), members in series.items():
        members.sort(key=lambda m: m.x or 0)
        xs = [m.x for m in members]
        if throughput:
            ys = [m.summary.ops_per_s for m in members]
        else:
            ys = [m.summary.p50 / 1000 for m in members]
        ax.plot(
            xs,
            ys,
            "--" if backend in ("redis", "etcd", "baseline") else "-",
            marker=_MARKERS.get(op, "o"),
            color=COLOURS[backend],
            label=members[0].label,
            markersize=5,
        )
    if throughput:
        ax.set_xticks(sorted({m.x for m in points if m.x is not None}))
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(" / ".join(CURVES[c] for c in curves))
    ax.set_ylabel("ops/s, all clients" if throughput else "p50, microseconds")
    ax.set_title(("throughput" if throughput else "p50") + " by " + CURVES[curves[0]])
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7)


def render(results: Results, path: Path, title: str) -> None:
    """Draw the run into ``path`` (PNG)."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    present = {m.curve for m in results.measurements.values()}
    panels = [
        c
        for c in (("variables",), ("sessions",), ("size", "switch"), ("clients",))
        if present & set(c)
    ]
    latency_rows = sum(
        1 for m in results.measurements.values() if m.kind == "latency" and m.curve is None
    )
    curve_rows = (len(panels) + 1) // 2
    top = max(3.0, 0.28 * latency_rows)
    fig = plt.figure(figsize=(14, top + 4.5 * curve_rows + 1), layout="constrained")
    grid = fig.add_gridspec(1 + curve_rows, 2, height_ratios=[top] + [4.5] * curve_rows)
    _distributions(fig.add_subplot(grid[0, :]), results)
    for i, curves in enumerate(panels):
        _curve(fig.add_subplot(grid[1 + i // 2, i % 2]), results, curves)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
