"""The speed targets (``benchmarks/targets.toml``), a run's verdict on each, and --check's.

A verdict is one of four:

- ``met`` / ``missed``: the run's figure against the limit;
- ``not measured``: the figure was taken but cannot be trusted, and says why: too few
  samples, or the measurement it divides by moved during the run (:mod:`benchmarks.trust`
  holds the bounds); it is neither met nor missed;
- ``absent``: the run has no such figure (its suite not run, or its peer skipped).

``--check`` (:func:`check_outcome`) fails (exit 1) on any miss among the targets it
holds the run to; with no miss but some of them not measured it is inconclusive (exit
3, :data:`EXIT_INCONCLUSIVE`): it does not pass on a figure it cannot trust, and
does not call a figure it could not trust a miss either. Absent targets do not count:
a run of some suites is checked on what it measured.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from benchmarks.results import Results
from benchmarks.timing import Summary
from benchmarks.trust import Evidence, doubt, evidence

__all__ = [
    "EXIT_INCONCLUSIVE",
    "EXIT_MISSED",
    "TARGETS_FILE",
    "Target",
    "Verdict",
    "check_outcome",
    "evaluate",
    "load",
]

TARGETS_FILE = Path(__file__).resolve().parent / "targets.toml"

EXIT_MISSED = 1
"""--check's exit code when a target is missed (as for a suite that failed)."""
EXIT_INCONCLUSIVE = 3
"""--check's exit code when none is missed but some are not measured (2 is a usage error)."""

Status = Literal["met", "missed", "not measured", "absent"]


@dataclass(frozen=True)
class Target:
    """One limit on one ratio (or value) of a run: at most ``high`` (the file's ``max``),
    at least ``low`` (``min``), or both: a band, for a cross-check that two figures of
    one thing agree (the in-suite redis-py ``GET`` and the same ``GET`` alone)."""

    ratio: str
    low: float | None
    high: float | None
    quick: bool
    figure: str
    label: str
    note: str

    def describe_limit(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:g} to {self.high:g}"
        if self.low is not None:
            return f">= {self.low:g}"
        return f"<= {self.high:g}"

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (
            self.high is None or value <= self.high
        )


@dataclass(frozen=True)
class Verdict:
    """A target against one run: met, missed, not measured or absent (and whether checked)."""

    target: Target
    value: float | None
    status: Status
    checked: bool  # whether --check holds this run to it
    reason: str = ""  # why it is not measured (or absent)
    evidence: tuple[Evidence, ...] = ()  # what each side of the ratio rests on

    def describe(self) -> str:
        """``ratio (figure): value, limit`` or ``ratio: reason``, for --check's last line."""
        figure = "" if self.target.figure == "p50" else f" ({self.target.figure})"
        if self.status == "not measured":
            return f"{self.target.ratio}{figure}: {self.reason}"
        shown = "-" if self.value is None else f"{self.value:.2f}"
        return f"{self.target.ratio}{figure} ({shown}, limit {self.target.describe_limit()})"

    def to_json(self) -> dict[str, Any]:
        """The verdict as --json records it: a target not measured says why, and what
        each side of its ratio rested on (counts, the figure round by round, spread)."""
        return {
            "ratio": self.target.ratio,
            "figure": self.target.figure,
            "limit": self.target.describe_limit(),
            "quick": self.target.quick,
            "value": self.value,
            "status": self.status,
            "reason": self.reason or None,
            "checked": self.checked,
            "rests_on": [
                {
                    "id": e.id,
                    "divides": e.divides,
                    "count": e.count,
                    "needs": e.needs,
                    "unit": e.unit,
                    "rounds": list(e.rounds),
                    "spread": e.spread if math.isfinite(e.spread) else None,
                }
                for e in self.evidence
            ],
        }


def load(path: Path = TARGETS_FILE) -> list[Target]:
    """Read and check the targets file; a malformed entry names itself."""
    with path.open("rb") as f:
        entries = tomllib.load(f).get("target", [])
    targets = []
    for i, entry in enumerate(entries, 1):
        where = f"{path.name}, target {i} ({entry.get('ratio', '?')!r})"
        unknown = set(entry) - {"ratio", "figure", "max", "min", "quick", "label", "note"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        if "max" not in entry and "min" not in entry:
            raise ValueError(f"{where}: give max, min, or both (a band)")
        low, high = entry.get("min"), entry.get("max")
        if low is not None and high is not None and low > high:
            raise ValueError(f"{where}: min {low} is above max {high}")
        figure = entry.get("figure", "p50")
        if figure not in Summary.FIGURES:
            raise ValueError(f"{where}: figure must be one of {', '.join(Summary.FIGURES)}")
        if not isinstance(entry.get("quick"), bool) or not isinstance(entry.get("ratio"), str):
            raise ValueError(f"{where}: needs a ratio (string) and quick (true or false)")
        targets.append(
            Target(
                ratio=entry["ratio"],
                low=None if low is None else float(low),
                high=None if high is None else float(high),
                quick=entry["quick"],
                figure=figure,
                label=entry.get("label", entry["ratio"]),
                note=entry.get("note", ""),
            )
        )
    return targets


def evaluate(targets: list[Target], results: Results, quick: bool) -> list[Verdict]:
    """Each target's verdict on ``results``; a --quick run checks only quick targets."""
    verdicts = []
    for target in targets:
        value = results.ratio(target.ratio, target.figure)
        sides = evidence(results, target.ratio, target.figure)
        reason = doubt(sides)
        status: Status
        if value is None and len(sides) < 2:  # both sides there: a yardstick of 0
            status, reason = "absent", "suite not run, or peer skipped"
        elif reason or value is None:
            status = "not measured"
        else:
            status = "met" if target.holds(value) else "missed"
        checked = target.quick or not quick
        verdicts.append(Verdict(target, value, status, checked, reason, sides))
    return verdicts


def check_outcome(verdicts: list[Verdict], quick: bool) -> tuple[int, str]:
    """--check's exit code and last line: failed on a miss, inconclusive on a target not
    measured, passed only when every checked target present was met."""
    checked = [v for v in verdicts if v.checked]
    misses = [v for v in checked if v.status == "missed"]
    doubtful = [v for v in checked if v.status == "not measured"]
    unsure = "; ".join(v.describe() for v in doubtful)
    if misses:
        line = f"check failed: {len(misses)} target(s) missed: "
        line += ", ".join(v.describe() for v in misses)
        if doubtful:
            line += f"; {len(doubtful)} more not measured: {unsure}"
        return EXIT_MISSED, line
    if doubtful:
        return (
            EXIT_INCONCLUSIVE,
            f"check inconclusive: {len(doubtful)} target(s) not measured: {unsure}",
        )
    met = sum(1 for v in checked if v.status == "met")
    return 0, f"check passed: {met} target(s) met" + (" (quick ones)" if quick else "")
