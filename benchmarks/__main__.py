"""``python -m benchmarks [--quick] [suite ...]``: run the latency suite."""

from __future__ import annotations

import argparse
import os
import platform

from benchmarks import bridge, local, memory, migration

SUITES = ("local", "memory", "bridge", "migration")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="suite", help=f"any of {', '.join(SUITES)}")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for a smoke run")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the benchmark process to one core"
    )
    args = parser.parse_args()
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    rounds = 200 if args.quick else 1500
    pinned = "unpinned"
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        # Python threads take turns on the GIL, so one core loses nothing for an
        # in-process ping-pong; across two cores each hand-off may wake an idle core,
        # whose wake-up time depends on where the scheduler put each thread and
        # swamps what is measured. Threads started later inherit the pin.
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        pinned = f"pinned to core {core} (--no-pin to compare)"
    print(
        f"dspex_actors latency suite on {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, {pinned}"
    )
    for suite in args.suites or SUITES:
        if suite == "local":
            local.run(rounds)
        elif suite == "memory":
            memory.run(1_000 if args.quick else 10_000)
        elif suite == "bridge":
            bridge.run(rounds, calls_per_client=300 if args.quick else 2000)
        elif suite == "migration":
            migration.run(rounds // 3)


if __name__ == "__main__":
    main()
