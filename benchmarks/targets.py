"""The speed targets (``benchmarks/targets.toml``) and a run's verdict on each."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchmarks.results import Results
from benchmarks.timing import Summary

__all__ = ["TARGETS_FILE", "Target", "Verdict", "evaluate", "load"]

TARGETS_FILE = Path(__file__).resolve().parent / "targets.toml"

Status = Literal["met", "missed", "unmeasured"]


@dataclass(frozen=True)
class Target:
    """One limit on one ratio (or value) of a run."""

    ratio: str
    limit: float
    at_least: bool  # ``min``: the figure must reach the limit; ``max``: stay under it
    quick: bool
    figure: str
    label: str
    note: str

    def describe_limit(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:g}"

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


@dataclass(frozen=True)
class Verdict:
    """A target against one run: met, missed, or not measured in it (and whether checked)."""

    target: Target
    value: float | None
    status: Status
    checked: bool  # whether --check holds this run to it


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
        if ("max" in entry) == ("min" in entry):
            raise ValueError(f"{where}: give exactly one of max and min")
        figure = entry.get("figure", "p50")
        if figure not in Summary.FIGURES:
            raise ValueError(f"{where}: figure must be one of {', '.join(Summary.FIGURES)}")
        if not isinstance(entry.get("quick"), bool) or not isinstance(entry.get("ratio"), str):
            raise ValueError(f"{where}: needs a ratio (string) and quick (true or false)")
        targets.append(
            Target(
                ratio=entry["ratio"],
                limit=float(entry.get("max", entry.get("min"))),
                at_least="min" in entry,
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
        if value is None:
            status: Status = "unmeasured"
        else:
            status = "met" if target.holds(value) else "missed"
        verdicts.append(Verdict(target, value, status, checked=target.quick or not quick))
    return verdicts
