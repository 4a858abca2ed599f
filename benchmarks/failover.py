"""Failover and ``WAIT``, measured: ``python -m benchmarks.failover [--rounds N] [--json PATH]``.

Two figures the README states about Redis under Sentinel, each from real processes
on loopback (``redis-server``, three ``redis-server --sentinel``; nothing mocked):

- **Acknowledged writes lost at a failover.** ``tests/test_redis_failover.py``'s run,
  ``--rounds`` times for each link and ``?wait``: a primary with two replicas, four
  RedisState writers each registering one new variable per write, the primary
  killed (SIGKILL), the Sentinels promoting a replica, the same handles writing on
  until each has ten writes acknowledged by the new primary; then every
  acknowledged write is looked for. "healthy": the replicas follow the primary
  directly; "lagging": through a proxy frozen before the kill (the writes
  acknowledged meanwhile are on the old primary only); "cluster": a Redis Cluster
  of three primaries with a replica each, the primary of the session's slot
  killed. Each run also checks its two watchers (a RedisState subscription, a
  watch through a server on the same URL): no gap without ``overflow``.
- **What ``?wait=1`` costs.** ``RedisState.set_variable`` through the Sentinels'
  primary without and with ``?wait=1`` (Redis ``WAIT 1 1000`` after the write, sent
  in the same packet), beside redis-py's ``SET`` and ``SET`` + ``WAIT 1``, each in
  blocks interleaved round-robin (:func:`benchmarks.timing.measure`), one replica
  on the same machine. Not pinned: a ratio of two things measured in the same run.

The topologies and the run are the tests' own (``tests/redis_topologies.py``,
``tests/test_redis_failover.py``), imported from the ``tests`` folder beside this
one, so the figures come from exactly what the tests check; pytest must be
installed (it is in the ``dev`` extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"
LINKS = ("healthy", "lagging", "cluster")
WAITS = (0, 1)
"""Each link is run with each wait but the cluster with ``?wait=0`` only: its
promoted replica has no replica of its own, so ``?wait=1`` could acknowledge
nothing after the failover."""


def _tests() -> Any:
    """The tests' failover module (its folder on the path first)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import test_redis_failover

    return test_redis_failover


def failovers(rounds: int) -> list[dict[str, Any]]:
    """``rounds`` runs of each link and wait; one row of figures per run."""
    module = _tests()
    rows = []
    for link in LINKS:
        for wait in WAITS if link != "cluster" else (0,):
            for n in range(rounds):
                started = time.monotonic()
                figures = module.run_failover(link, wait)
                rows.append(
                    {
                        "link": link,
                        "wait": wait,
                        "round": n,
                        "acknowledged": figures.acknowledged,
                        "missing": len(figures.missing),
                        "acknowledged_frozen": figures.acknowledged_frozen,
                        "not_acknowledged": figures.unknown,
                        "not_acknowledged_present": figures.unknown_present,
                        "no_ack_seconds": round(figures.stall, 3),
                        "overflows": figures.overflows,
                        "seconds": round(time.monotonic() - started, 1),
                    }
                )
                print(figures.line(), flush=True)
    return rows


def wait_cost(samples: int) -> dict[str, Any]:
    """p50/p99 (us) of a set with and without ``?wait=1``, and redis-py's SET with
    and without ``WAIT 1``, on one topology."""
    _tests()
    import redis
    from redis_topologies import sentinel_topology

    from benchmarks.timing import Op, measure, summarize
    from dspex_actors.redis.state import RedisState

    with contextlib.ExitStack() as stack:
        topology = stack.enter_context(sentinel_topology(replicas=1))
        plain = stack.enter_context(RedisState.init(url=topology.url))
        plain.register_variable("x", "integer", 0)
        waiting = stack.enter_context(
            RedisState.init(session_id=plain.session_id, url=topology.url + "?wait=1")
        )
        client = redis.Redis(port=topology.primary_port())
        stack.callback(client.close)

        def set_then_wait() -> None:
            with client.pipeline(transaction=False) as pipe:
                pipe.set("k", 1)
                pipe.execute_command("WAIT", 1, 1000)
                pipe.execute()

        ops: dict[str, Op] = {
            "RedisState set": (lambda: plain.set_variable("x", 1), 1),
            "RedisState set, ?wait=1": (lambda: waiting.set_variable("x", 2), 1),
            "redis-py SET": (lambda: client.set("k", 1), 1),
            "redis-py SET + WAIT 1": (set_then_wait, 1),
        }
        taken = measure("wait", ops, samples)
    figures = {name: summarize(s.samples) for name, s in taken.items()}
    out: dict[str, Any] = {
        name: {"p50_us": round(f.p50 / 1000, 1), "p99_us": round(f.p99 / 1000, 1)}
        for name, f in figures.items()
    }
    out["ratio_wait_p50"] = round(
        figures["RedisState set, ?wait=1"].p50 / figures["RedisState set"].p50, 2
    )
    out["redis_py_ratio_wait_p50"] = round(
        figures["redis-py SET + WAIT 1"].p50 / figures["redis-py SET"].p50, 2
    )
    return out


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for link in LINKS:
        for wait in WAITS:
            mine = [r for r in rows if r["link"] == link and r["wait"] == wait]
            if not mine:
                continue
            missing = [r["missing"] for r in mine]
            stalls = [r["no_ack_seconds"] for r in mine]
            lines.append(
                f"{link:>7} link, wait={wait}: {len(mine)} runs, "
                f"{sum(r['acknowledged'] for r in mine)} acknowledged, "
                f"{sum(missing)} missing (per run {min(missing)}-{max(missing)}), "
                f"{sum(r['not_acknowledged'] for r in mine)} not acknowledged, "
                f"no write acknowledged for {statistics.median(stalls):.2f}s "
                f"(median; {min(stalls):.2f}-{max(stalls):.2f})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each link and wait")
    parser.add_argument("--samples", type=int, default=2000, help="samples of each set")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--skip-failover", action="store_true", help="only the WAIT cost")
    args = parser.parse_args(argv)
    rows = [] if args.skip_failover else failovers(args.rounds)
    cost = wait_cost(args.samples)
    print()
    for line in _summary(rows):
        print(line)
    for name, value in cost.items():
        print(f"{name}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps({"failovers": rows, "wait_cost": cost}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
