"""CPU affinity: the suite's own pin, and the launcher every server and load client goes through.

``python -m benchmarks.affinity CORES -- PROGRAM ARGS...`` sets its CPU affinity to
CORES (``0,1``) and then replaces itself with PROGRAM (``exec``), so the program and
every thread it ever starts run on exactly those cores. Setting the mask before
``exec`` is the one way that works alike for a Python server and for a binary
(``redis-server``, ``etcd``) that cannot unpin itself, and it needs no
``preexec_fn``, which would run Python in a forked copy of a process whose gRPC
threads are live. This module imports nothing heavy, so the hop costs one bare
interpreter start. See :mod:`benchmarks.servers` for why the suite pins as it does.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "can_pin",
    "format_cores",
    "launcher",
    "own_cores",
    "parse_cores",
    "pin_benchmark",
    "server_cores",
    "suite_cores",
]

_SUITE_CORES: frozenset[int] | None = None
_SERVER_CORES: frozenset[int] | None = None


def can_pin() -> bool:
    """Whether this platform lets a process choose its cores (Linux does; macOS does not)."""
    return hasattr(os, "sched_setaffinity")


def suite_cores() -> frozenset[int]:
    """The cores this run was given before it pinned itself: what load clients get.

    Read once, at the first call, which ``__main__`` makes before pinning; a run started
    under ``taskset`` therefore keeps its servers and clients inside the same set.
    """
    global _SUITE_CORES  # noqa: PLW0603 - read once per process, before the pin
    if _SUITE_CORES is None:
        cores = os.sched_getaffinity(0) if can_pin() else range(os.cpu_count() or 1)
        _SUITE_CORES = frozenset(cores)
    return _SUITE_CORES


def pin_benchmark() -> tuple[int, frozenset[int]]:
    """Pin this process to the suite's first core and choose the servers' core.

    Servers get the next core of the suite's set (the same one when there is only
    one). Threads started later inherit the pin. Returns (our core, servers' cores).
    """
    global _SERVER_CORES  # noqa: PLW0603 - chosen once, with the pin
    cores = sorted(suite_cores())
    mine = cores[0]
    _SERVER_CORES = frozenset({cores[1] if len(cores) > 1 else mine})
    os.sched_setaffinity(0, {mine})
    return mine, _SERVER_CORES


def own_cores() -> frozenset[int]:
    """The cores this process runs on now: the benchmark's one core once pinned, what a
    process that stands in for the benchmark's own calls gets (:mod:`benchmarks.alone`)."""
    return frozenset(os.sched_getaffinity(0)) if can_pin() else suite_cores()


def server_cores() -> frozenset[int]:
    """The cores every server runs on: one core beside ours, or all when unpinned."""
    return _SERVER_CORES if _SERVER_CORES is not None else suite_cores()


def format_cores(cores: frozenset[int]) -> str:
    return ",".join(str(core) for core in sorted(cores))


def parse_cores(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part)


def launcher(argv: list[str], cores: frozenset[int]) -> list[str]:
    """The command that runs ``argv`` on ``cores`` (``argv`` itself where nothing pins)."""
    if not can_pin():
        return argv
    return [sys.executable, "-m", "benchmarks.affinity", format_cores(cores), "--", *argv]


def _main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        raise SystemExit("usage: python -m benchmarks.affinity CORES -- PROGRAM [ARGS...]")
    os.sched_setaffinity(0, parse_cores(args[0]))
    os.execvp(args[2], args[2:])


if __name__ == "__main__":
    _main(sys.argv[1:])
