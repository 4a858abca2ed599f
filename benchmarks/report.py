"""How a run is shown: tables on stdout, the README's table as Markdown, the target check.

Every figure is a ratio to something measured in the same run; the tables show p50,
p90, p99 and max per call, ops/s, and the p50 ratio to the operation's baseline and
to each peer (the JSON has the ratio of every figure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from benchmarks.progress import say
from benchmarks.results import Measurement, Results
from benchmarks.targets import Verdict
from benchmarks.timing import human

__all__ = ["CURVES", "curve_rows", "distinct", "markdown", "print_suite", "print_targets"]

CURVES = {
    "variables": "variables per session",
    "sessions": "live sessions",
    "size": "variables in the session moved",
    "switch": "variables in the session switched",
    "clients": "client processes",
}
"""Each scale curve and what its x counts."""


TIMES = "\N{MULTIPLICATION SIGN}"


def _ratio(value: float, sign: str = "x") -> str:
    """A ratio for a table, two decimals below 100: signed TIMES in Markdown, x on stdout."""
    return f"{value:.2f}{sign}" if value < 100 else f"{value:.0f}{sign}"


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _rate(ops: float) -> str:
    return f"{ops:,.0f}/s" if ops >= 10 else f"{ops:.2f}/s"


def _ops(m: Measurement) -> str:
    """The ops/s cell: none for a lag, which times no call."""
    return "-" if m.kind == "lag" else _rate(m.summary.ops_per_s)


def _vs(results: Results, m: Measurement) -> tuple[str, str]:
    """(p50 over the baseline, p50 over each peer), as table cells."""
    ratios = results.ratios_of(m)
    figure = "ops_per_s" if m.kind == "throughput" else "p50"
    base = ""
    if m.baseline in ratios and figure in ratios[m.baseline]:
        base = f"{_ratio(ratios[m.baseline][figure])} {m.baseline}"
    peers = ", ".join(
        f"{_ratio(ratios[p][figure])} {p}" for p in m.peers if p in ratios and figure in ratios[p]
    )
    return base, peers


def print_suite(results: Results, suite: str, title: str) -> None:
    """The suite's operations, its curves and its values, on stdout."""
    say(f"\n== {title} ==")
    rows = list(results.of_suite(suite))
    width = min(60, max([44, *(len(m.label) for m in rows)]))
    if rows:
        say(
            f"  {'operation':<{width}} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9} {'ops/s':>12}"
            "  p50 vs baseline; vs peers"
        )
    for m in rows:
        s = m.summary
        base, peers = _vs(results, m)
        line = (
            f"  {m.label:<{width}} {human(s.p50)} {human(s.p90)} {human(s.p99)} {human(s.max)}"
            f" {_ops(m):>12}  {base}"
        )
        say(line + (f"; {peers}" if peers else ""))
    curves = {m.curve for m in results.of_suite(suite, curves=True)}
    for curve in (c for c in CURVES if c in curves):
        _print_curve(results, curve)
    for value in results.values.values():
        if value.name.split(".", 1)[0] == suite:
            say(f"  {value.label}: {_number(value.value)} {value.unit}")


@dataclass
class CurveRow:
    """One series of a curve (a backend's operation), or its ratio to a peer."""

    label: str
    cells: dict[int, str]


def curve_rows(
    results: Results, curve: str, sign: str = "x"
) -> tuple[list[int], list[CurveRow], str]:
    """A curve as a table: its x values, its rows, and what the cells are."""
    points = [m for m in results.measurements.values() if m.curve == curve and m.x is not None]
    xs = sorted({m.x for m in points if m.x is not None})
    throughput = curve == "clients"
    series: dict[tuple[str, str], list[Measurement]] = {}
    for m in points:
        series.setdefault((m.backend, m.op), []).append(m)
    rows = []
    for members in series.values():
        cells = {
            m.x: _rate(m.summary.ops_per_s) if throughput else human(m.summary.p50).strip()
            for m in members
            if m.x is not None
        }
        rows.append(CurveRow(members[0].label, cells))
        peer_cells: dict[str, dict[int, str]] = {}
        peer_labels: dict[str, str] = {}
        for m in members:
            for peer, ratios in results.ratios_of(m).items():
                if peer == m.baseline or m.x is None:
                    continue
                key = results.measurements[peer].label
                peer_labels[key] = key
                value = ratios.get("ops_per_s" if throughput else "p50")
                if value is not None:
                    peer_cells.setdefault(key, {})[m.x] = _ratio(value, sign)
        rows.extend(CurveRow(f"  / {label}", cells) for label, cells in peer_cells.items())
    what = "ops/s of all clients together" if throughput else "p50"
    return xs, rows, what


def _print_curve(results: Results, curve: str) -> None:
    xs, rows, what = curve_rows(results, curve)
    say(f"  -- {what} by {CURVES[curve]} (rows '/ X': the row above over X at each point)")
    say(f"  {'':<50}" + "".join(f"{x:>11,}" for x in xs))
    for row in rows:
        say(f"  {row.label:<50}" + "".join(f"{row.cells.get(x, '-'):>11}" for x in xs))


def _figure(v: Verdict, sign: str = "x") -> str:
    """A target's figure in this run; in brackets when it is not trusted."""
    if v.value is None:
        return ""
    shown = _ratio(v.value, sign) if "/" in v.target.ratio else _number(v.value)
    return f"({shown})" if v.status == "not measured" else shown


def print_targets(verdicts: Iterable[Verdict]) -> None:
    """Every target present in the run with its figure and verdict; a target not measured
    says why, and its figure is shown in brackets: taken, not trusted."""
    say("\n== targets (benchmarks/targets.toml) ==")
    absent = []
    for v in verdicts:
        t = v.target
        if v.status == "absent":
            absent.append(t.ratio)
            continue
        figure = "" if t.figure == "p50" else f" ({t.figure})"
        shown = _figure(v) or "-"
        unchecked = "" if v.checked else " (not checked by --quick)"
        if v.status == "met":
            state = "meets"
        elif v.status == "missed":
            state = ("MISSES" if v.checked else "misses") + unchecked
            state += f": {t.note}" if t.note else ""
        else:
            state = f"{'NOT MEASURED' if v.checked else 'not measured'}{unchecked}: {v.reason}"
        say(f"  {t.ratio + figure:<52} {shown:>8} {t.describe_limit():<8} {state}")
    if absent:
        say(f"  absent from this run (suite not run, or peer skipped): {', '.join(absent)}")


def distinct(labels: list[str], rows: list[Measurement]) -> list[str]:
    """``labels`` of ``rows``, each with its suite where two would read alike: a peer's
    op sampled by two suites, each beside its own ops, shows up twice."""
    return [
        f"{label} [{m.suite}]" if labels.count(label) > 1 else label
        for label, m in zip(labels, rows, strict=True)
    ]


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(results: Results, verdicts: list[Verdict], heading: str) -> str:
    """The README's "Speed, measured" table for this run, then every operation and curve."""
    lines = [heading, ""]
    lines += [
        _md_row(["measured (p50 ratio unless named)", "target", "this run", "verdict"]),
        "|---|---|---|---|",
    ]
    covered = set()
    doubts = []
    for v in verdicts:
        covered.add(v.target.ratio)
        if v.status == "absent":
            continue
        t = v.target
        shown = _figure(v, TIMES)
        limit = t.describe_limit().replace("<=", "\N{LESS-THAN OR EQUAL TO}")
        limit = limit.replace(">=", "\N{GREATER-THAN OR EQUAL TO}").replace(" to ", "\N{EN DASH}")
        limit += TIMES if "/" in t.ratio else ""
        verdict = {"met": "meets", "missed": "**misses**"}.get(v.status, "not measured")
        if v.status == "not measured":
            doubts.append(f"- not measured, {t.label}: {v.reason}")
        lines.append(_md_row([t.label, limit, shown, verdict]))
    for m in results.measurements.values():
        if m.curve is not None:
            continue
        for other, ratios in results.ratios_of(m).items():
            if f"{m.id}/{other}" in covered:
                continue
            label = f"`{m.label}` / {results.measurements[other].label}"
            figure = "ops_per_s" if m.kind == "throughput" else "p50"
            if figure != "p50":
                label += " (ops/s)"
            if figure in ratios:
                lines.append(_md_row([label, "\N{EM DASH}", _ratio(ratios[figure], TIMES), ""]))
    if doubts:  # below the table: a figure in brackets was taken, not trusted
        lines += ["", *doubts]
    lines += ["", _md_row(["operation", "p50", "p90", "p99", "max", "ops/s"]), "|---" * 6 + "|"]
    plain = [m for m in results.measurements.values() if m.curve is None]
    for m, label in zip(plain, distinct([m.label for m in plain], plain), strict=True):
        s = m.summary
        figures = [human(f).strip() for f in (s.p50, s.p90, s.p99, s.max)]
        lines.append(_md_row([f"`{label}`", *figures, _ops(m)]))
    for curve in (c for c in CURVES if any(m.curve == c for m in results.measurements.values())):
        xs, rows, what = curve_rows(results, curve, TIMES)
        lines += ["", f"{what.capitalize()} by {CURVES[curve]}:", ""]
        lines.append(_md_row(["", *(f"{x:,}" for x in xs)]))
        lines.append("|---" * (len(xs) + 1) + "|")
        lines += [_md_row([row.label, *(row.cells.get(x, "-") for x in xs)]) for row in rows]
    values = [v for v in results.values.values() if v.name not in covered]
    if values:
        lines.append("")
        lines += [f"- {v.label}: {_number(v.value)} {v.unit}" for v in values]
    if results.skipped:
        lines.append("")
        lines += [f"- skipped {what}: {reason}" for what, reason in results.skipped.items()]
    return "\n".join(lines) + "\n"
