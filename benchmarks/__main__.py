"""``python -m benchmarks``: the latency suite, ours beside raw baselines and peers.

Suites (all by default, in this order): local, memory, bridge, throughput,
migration, scale, streaming, watchers, aio, stores. Every figure is reported as a ratio
to something measured in the same run; ``--check`` holds the run to
``benchmarks/targets.toml`` (with ``--quick``: only the targets marked quick): it
exits 1 naming each miss; with no miss, 3 ("check inconclusive") naming each target
whose figure it cannot trust (too few samples, or what it divides by moved during
the run: ``benchmarks/trust.py``), which it reports as not measured; 0 only when
every target checked was met.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import (
    aio,
    bridge,
    local,
    memory,
    migration,
    plot,
    scale,
    stores,
    streaming,
    throughput,
    watchers,
)
from benchmarks.affinity import can_pin, format_cores, pin_benchmark, server_cores, suite_cores
from benchmarks.progress import progress, say
from benchmarks.report import markdown, print_suite, print_targets
from benchmarks.servers import ROOT, Servers
from benchmarks.suite import Run
from benchmarks.targets import TARGETS_FILE, Verdict, check_outcome, evaluate, load

BENCH_EXTRA = ("psutil", "redis", "grpc_tools")
"""What the suites import from the bench extra (matplotlib only for --plot)."""

SUITES: dict[str, tuple[Callable[[Run], None], str]] = {
    "local": (
        local.run,
        "local: LocalState and Context beside a dict lookup and a bare Pykka ask",
    ),
    "memory": (memory.run, "memory: live LocalState sessions, in a fresh process"),
    "bridge": (
        bridge.run,
        "bridge: BridgedState beside a bare grpcio echo, redis-py and etcd (blocks, round-robin)",
    ),
    "throughput": (throughput.run, "throughput: 1, 4 and 8 client processes"),
    "migration": (migration.run, "migration: local -> bridged while a writer writes"),
    "scale": (scale.run, "scale: as sessions grow in size and in number, beside Redis"),
    "streaming": (
        streaming.run,
        "streaming: change events beside a bare Pykka ask and grpcio echo; the cached read",
    ),
    "watchers": (
        watchers.run,
        "watchers: ordinary calls on an idle SessionStore, then beside 100 waiting streams",
    ),
    "aio": (
        aio.run,
        "aio: AsyncLocalState and AsyncBridgedState beside an awaited no-op, a bare "
        "grpc.aio echo and redis.asyncio (blocks, round-robin)",
    ),
    "stores": (
        stores.run,
        "stores: RedisState and BridgedState on the memory, sqlite and redis stores, "
        "beside redis-py (blocks, round-robin; 8 client processes)",
    ),
}

LIBRARIES = (
    "dspex_actors",
    "pykka",
    "grpcio",
    "protobuf",
    "msgpack",
    "redis",
    "grpcio-tools",
    "psutil",
    "matplotlib",
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("suites", nargs="*", metavar="suite", help=f"any of {', '.join(SUITES)}")
    parser.add_argument(
        "--quick", action="store_true", help="few rounds and small sizes: a smoke run (< 60 s)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="pin nothing: the benchmark, its servers and clients run on every core",
    )
    parser.add_argument("--no-peers", action="store_true", help="skip Redis and etcd")
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if a target in {TARGETS_FILE.name} is missed, 3 if none is but "
        "some could not be trusted (not measured)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every figure as JSON")
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="write the README's table as Markdown"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw latencies and curves (matplotlib)"
    )
    return parser


def _command_output(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=20, cwd=ROOT
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(pinned: str) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    servers = {
        name: (out.splitlines()[0] if (out := _command_output([name, "--version"])) else None)
        for name in ("redis-server", "etcd")
        if shutil.which(name)
    }
    status = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "suite_cores": sorted(suite_cores()),
            "server_cores": sorted(server_cores()),
            "pinning": pinned,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "python": {
            "implementation": platform.python_implementation(),
            "version": platform.python_version(),
            "executable": sys.executable,
        },
        "libraries": versions,
        "servers": servers,
        "git": {
            "commit": _command_output(["git", "rev-parse", "HEAD"]),
            "dirty": bool(status) if status is not None else None,
        },
    }


def _run_suites(run: Run, suites: list[str]) -> None:
    """Run each suite and print its tables; a suite that fails is reported and the
    others still run (the package may be mid-change), and the run exits 1."""
    reported: set[str] = set()
    for suite in suites:
        suite_run, title = SUITES[suite]
        run.results.suites.append(suite)
        try:
            suite_run(run)
        except Exception as exc:
            progress.clear()
            traceback.print_exc()
            run.results.failed[suite] = f"{type(exc).__name__}: {exc}"
        print_suite(run.results, suite, title)
        if suite in run.results.failed:
            say(f"  FAILED: {run.results.failed[suite]}")
        if suite in run.results.skipped:
            say(f"  skipped: {run.results.skipped[suite]}")
        for peer, reason in run.servers.unavailable.items():
            if peer not in reported:
                reported.add(peer)
                say(f"  skipped {peer}: {reason}")


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Unwind through the finally blocks, which stop the servers and remove their files.
    raise SystemExit(128 + signum)


def _write_outputs(
    args: argparse.Namespace,
    run: Run,
    verdicts: list[Verdict],
    heading: str,
    pinned: str,
    elapsed: float,
    stamp: str,
    argv: list[str] | None,
) -> None:
    """--json, --markdown and --plot."""
    if args.json is not None:
        document = {
            "run": {
                "command": ["python", "-m", "benchmarks", *(argv or sys.argv[1:])],
                "quick": args.quick,
                "started": stamp,
                "seconds": round(elapsed, 1),
            },
            **_environment(pinned),
            **run.results.to_json(),
            "targets": [v.to_json() for v in verdicts],
        }
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        say(f"wrote {args.json}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(run.results, verdicts, heading))
        say(f"wrote {args.markdown}")
    if args.plot is not None:
        plot.render(run.results, args.plot, heading.replace("`", ""))
        say(f"wrote {args.plot}")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    missing = [name for name in BENCH_EXTRA if not _importable(name)]
    if missing:
        print(
            f"python -m benchmarks needs the bench extra (missing: {', '.join(missing)}): "
            "pip install -e '.[bench]'",
            file=sys.stderr,
        )
        return 2
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        _parser().error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    if args.plot is not None and (why := plot.missing()) is not None:
        print(f"python -m benchmarks: {why}", file=sys.stderr)
        return 2
    targets = load()  # a malformed targets file fails before anything runs
    started = time.monotonic()
    suite_cores()  # remembered before the pin: what load clients get
    pinned = "unpinned, servers and clients too"
    if not args.no_pin and can_pin():
        core, servers_on = pin_benchmark()
        pinned = (
            f"pinned to core {core}, every server to core {format_cores(servers_on)}, "
            f"load clients on {format_cores(suite_cores())}"
        )
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    heading = (
        f"`python -m benchmarks{' --quick' if args.quick else ''}` on {stamp}: "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cores ({_cpu_model()}), {pinned}"
    )
    say(heading.replace("`", ""))
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    servers = Servers(peers=not args.no_peers)
    run = Run(quick=args.quick, servers=servers)
    try:
        _run_suites(run, args.suites or list(SUITES))
    finally:
        progress.clear()
        servers.close()
    run.results.skipped.update(servers.unavailable)
    verdicts = evaluate(targets, run.results, args.quick)
    print_targets(verdicts)
    elapsed = time.monotonic() - started
    say(f"\nfinished in {elapsed:.0f} s")
    _write_outputs(args, run, verdicts, heading, pinned, elapsed, stamp, argv)
    if run.results.failed:
        failed = ", ".join(run.results.failed)
        say(f"failed: suite(s) {failed} stopped with an error (traceback on stderr)")
        return 1
    if args.check:
        code, line = check_outcome(verdicts, args.quick)
        say(line)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
