"""``python -m benchmarks`` as a user meets it: from any directory, saying which extra
it needs when it is missing (not a ModuleNotFoundError traceback), ``--check``
refusing to pass on a figure it cannot trust, ops sampled in blocks interleaved
round-robin, and the cross-check of redis-py's GET against the same GET alone."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from bridge_support import python_env

from benchmarks import bridge, stores
from benchmarks.peers import GET_KEY, RedisAlone, RedisPeer, alone_op, redis_ops
from benchmarks.report import markdown, print_targets
from benchmarks.results import Kind, Measurement, Results
from benchmarks.targets import (
    EXIT_INCONCLUSIVE,
    EXIT_MISSED,
    Target,
    Verdict,
    check_outcome,
    evaluate,
    load,
)
from benchmarks.timing import (
    BLOCK,
    LEAD,
    MAX_BLOCK,
    block_size,
    block_sizes,
    blocks,
    measure,
    turns,
)
from benchmarks.trust import (
    BLOCK_SAMPLES,
    BLOCKS,
    GROUP_BLOCKS,
    MAX_SPREAD,
    MIN_ROUNDS,
    MIN_SAMPLES,
    evidence,
    per_round,
    spread,
)

HIDE_PSUTIL = (
    "import runpy, sys\n"
    "sys.modules['psutil'] = None  # as if the bench extra were not installed\n"
    "sys.argv = ['benchmarks', '--quick', 'local']\n"
    "runpy.run_module('benchmarks', run_name='__main__')\n"
)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = python_env()
    env.pop("PYTHONPATH", None)  # only what the install put on the path
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_benchmarks_run_from_any_directory(tmp_path: Path) -> None:
    result = _run(["-m", "benchmarks", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_without_the_bench_extra_the_message_names_it(tmp_path: Path) -> None:
    result = _run(["-c", HIDE_PSUTIL], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "python -m benchmarks needs the bench extra (missing: psutil): pip install -e '.[bench]'\n"
    )
    assert "Traceback" not in result.stderr


# -- --check's verdicts: a figure it cannot trust is "not measured" ------------------------
# Built from constructed measurements: no timing is asserted, nothing sleeps.

STEADY = [100.0, 90.0, 110.0, 100.0] * 50  # 200 samples, p50 100 ns: enough for a p50
FEW = [100.0] * 10  # p50 100 ns too, of too few samples


def _measurement(
    id: str, samples: list[float], rates: list[float] | None = None, block: int = 1
) -> Measurement:
    kind: Kind = "throughput" if rates else "latency"
    return Measurement(
        id=id,
        label=id,
        suite="test",
        backend="baseline",
        op="op",
        kind=kind,
        samples=samples,
        rates=rates or [],
        block=block,
    )


def _results(*measurements: Measurement) -> Results:
    results = Results()
    for m in measurements:
        results.add(m)
    return results


def _target(
    ratio: str = "ours/base", limit: float = 2.0, figure: str = "p50", quick: bool = True
) -> Target:
    return Target(ratio, None, limit, quick, figure, label=ratio, note="")


def _verdict(results: Results, target: Target | None = None, quick: bool = True) -> Verdict:
    [verdict] = evaluate([target or _target()], results, quick)
    return verdict


def test_a_steady_run_with_enough_samples_is_judged() -> None:
    verdict = _verdict(_results(_measurement("ours", STEADY), _measurement("base", STEADY)))
    assert (verdict.status, verdict.reason) == ("met", "")
    assert verdict.value == 1.0
    assert check_outcome([verdict], quick=True) == (
        0,
        "check passed: 1 target(s) met (quick ones)",
    )


def test_a_p50_of_too_few_samples_is_not_measured() -> None:
    few = STEADY[: MIN_SAMPLES["p50"] - 1]
    verdict = _verdict(_results(_measurement("ours", few), _measurement("base", STEADY)))
    assert verdict.status == "not measured"
    assert verdict.value == 1.0  # taken, and within the limit, but not trusted
    assert verdict.reason == f"ours: p50 of {len(few)} sample(s), needs at least 50"


def test_a_p99_needs_more_samples_than_a_p50() -> None:
    results = _results(_measurement("ours", STEADY), _measurement("base", STEADY))
    verdict = _verdict(results, _target(figure="p99"))
    assert verdict.status == "not measured"
    assert "ours: p99 of 200 sample(s), needs at least 1000" in verdict.reason
    assert "base: p99 of 200 sample(s), needs at least 1000" in verdict.reason
    many = STEADY * 5
    verdict = _verdict(
        _results(_measurement("ours", many), _measurement("base", many)), _target(figure="p99")
    )
    assert verdict.status == "met"


def test_ops_per_s_of_a_single_round_is_not_measured() -> None:
    # The case: one quick round each, a bridge/Redis ratio of 1.55x where full
    # runs give 0.23x; held to ``min = 0.3`` it would have been "met".
    target = Target("ours/redis", 0.3, None, True, "ops_per_s", label="", note="")
    results = _results(
        _measurement("ours", STEADY, rates=[2_465.0]),
        _measurement("redis", STEADY, rates=[1_590.0]),
    )
    verdict = _verdict(results, target)
    assert verdict.status == "not measured"
    assert verdict.value == pytest.approx(1.55, abs=0.01)
    assert verdict.reason == (
        f"ours: ops/s of 1 round(s), needs at least {MIN_ROUNDS}; "
        f"redis: ops/s of 1 round(s), needs at least {MIN_ROUNDS}"
    )


def test_a_yardstick_that_moved_between_rounds_is_not_measured() -> None:
    target = Target("ours/redis", 0.3, None, True, "ops_per_s", label="", note="")
    steady = _measurement("ours", STEADY, rates=[5_000.0, 5_100.0, 5_200.0])
    moved = _measurement("redis", STEADY, rates=[19_084.0, 1_590.0, 20_000.0])
    verdict = _verdict(_results(steady, moved), target)
    assert verdict.status == "not measured"
    assert verdict.reason == (
        f"redis (divided by) moved 12.58x between rounds (1,590/s to 20,000/s), "
        f"bound {MAX_SPREAD:g}x"
    )


def test_a_yardstick_whose_latency_moved_between_blocks_is_not_measured() -> None:
    # Round-robin samples are cut into blocks of consecutive rounds, 200 samples into
    # four of 50; the yardstick's last 40 samples at 3x: its last block's median is 3x.
    slow = [100.0] * 160 + [300.0] * 40
    assert per_round(_measurement("base", slow), "p50") == (100.0, 100.0, 100.0, 300.0)
    verdict = _verdict(_results(_measurement("ours", STEADY), _measurement("base", slow)))
    assert verdict.status == "not measured"
    assert verdict.reason == (
        f"base (divided by) moved 3.00x between groups of blocks (100 ns to 300 ns), "
        f"bound {MAX_SPREAD:g}x"
    )


def test_a_yardstick_moving_as_it_does_in_sound_quick_runs_is_trusted() -> None:
    # Quick runs on the 2-core machine saw yardsticks move up to 1.74x between blocks
    # while their ratios held: that is not held against a figure.
    moved = [100.0] * 150 + [174.0] * 50
    assert spread(per_round(_measurement("base", moved), "p50")) == pytest.approx(1.74)
    verdict = _verdict(_results(_measurement("ours", moved), _measurement("base", moved)))
    assert verdict.status == "met"


def test_blocks_hold_what_a_p50_needs_and_a_duration_is_judged_run_by_run() -> None:
    def blocks(samples: int) -> int:
        return len(per_round(_measurement("m", [1.0] * samples), "p50"))

    assert (blocks(1500), blocks(200), blocks(150), blocks(100)) == (BLOCKS, 4, 3, 2)
    runs = Measurement("d", "d", "test", "bridged", "import", "duration", [5.0, 6.0, 7.0])
    assert per_round(runs, "p50") == (5.0, 6.0, 7.0)
    assert evidence(_results(runs), "d/d", "p50")[0].count == MIN_ROUNDS


def test_a_numerator_that_moves_is_still_judged() -> None:
    # What the target measures may move (a stall is part of it); only the yardstick's
    # movement says the machine changed under the run.
    moving = [100.0] * 160 + [300.0] * 40
    verdict = _verdict(_results(_measurement("ours", moving), _measurement("base", STEADY)))
    assert verdict.status == "met"


def test_a_yardstick_of_zero_is_not_measured_rather_than_absent() -> None:
    zero = [0.0] * 200
    verdict = _verdict(_results(_measurement("ours", STEADY), _measurement("base", zero)))
    assert (verdict.status, verdict.value) == ("not measured", None)
    assert verdict.reason == "base (divided by): p50 is 0"


def test_a_target_whose_suite_did_not_run_is_absent() -> None:
    verdict = _verdict(_results(_measurement("ours", STEADY)))
    assert (verdict.status, verdict.reason) == ("absent", "suite not run, or peer skipped")
    assert check_outcome([verdict], quick=True) == (
        0,
        "check passed: 0 target(s) met (quick ones)",
    )


def _judged(status: str, ratio: str, quick: bool = True) -> Verdict:
    samples = {"met": STEADY, "missed": [x * 3 for x in STEADY], "not measured": FEW}
    results = _results(_measurement("ours", samples[status]), _measurement("base", STEADY))
    verdict = _verdict(results, _target(ratio=ratio if ratio else "ours/base", quick=quick))
    assert verdict.status == status
    return verdict


def test_check_is_inconclusive_on_a_target_not_measured() -> None:
    verdicts = [_judged("met", ""), _judged("not measured", "")]
    code, line = check_outcome(verdicts, quick=True)
    assert code == EXIT_INCONCLUSIVE == 3
    assert line == (
        "check inconclusive: 1 target(s) not measured: "
        "ours/base: ours: p50 of 10 sample(s), needs at least 50"
    )
    assert "passed" not in line


def test_check_fails_on_a_miss_and_names_the_targets_not_measured_too() -> None:
    verdicts = [_judged("missed", ""), _judged("not measured", "")]
    code, line = check_outcome(verdicts, quick=True)
    assert code == EXIT_MISSED == 1
    assert line == (
        "check failed: 1 target(s) missed: ours/base (3.00, limit <= 2); "
        "1 more not measured: ours/base: ours: p50 of 10 sample(s), needs at least 50"
    )


def test_a_quick_check_ignores_what_it_does_not_hold_the_run_to() -> None:
    verdicts = [_judged("met", ""), _judged("not measured", "", quick=False)]
    assert not verdicts[1].checked
    assert check_outcome(verdicts, quick=True) == (0, "check passed: 1 target(s) met (quick ones)")
    # A full run holds it to every target.
    [full] = evaluate([verdicts[1].target], _results(*_pair(FEW)), quick=False)
    assert check_outcome([full], quick=False)[0] == EXIT_INCONCLUSIVE


def _pair(ours: list[float]) -> tuple[Measurement, Measurement]:
    return _measurement("ours", ours), _measurement("base", STEADY)


def test_json_and_markdown_show_not_measured_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = _results(*_pair(FEW))
    [verdict] = evaluate([_target()], results, quick=True)
    recorded = verdict.to_json()
    assert recorded["status"] == "not measured"
    assert recorded["reason"] == "ours: p50 of 10 sample(s), needs at least 50"
    assert [(side["id"], side["count"], side["needs"]) for side in recorded["rests_on"]] == [
        ("ours", 10, 50),
        ("base", 200, 50),
    ]
    json.dumps(recorded)  # JSON as it is, no Infinity
    table = markdown(results, [verdict], "heading")
    times = "\N{MULTIPLICATION SIGN}"
    assert (
        f"| ours/base | \N{LESS-THAN OR EQUAL TO} 2{times} | (1.00{times}) | not measured |"
        in table
    )
    assert "- not measured, ours/base: ours: p50 of 10 sample(s), needs at least 50" in table
    print_targets([verdict])
    printed = capsys.readouterr().out
    assert "(1.00x) <= 2     NOT MEASURED: ours: p50 of 10 sample(s), needs at least 50" in printed


# -- sampling in blocks, interleaved round-robin (benchmarks.timing.measure) ----------------
# Ops that record what they were asked to do: no timing is asserted, nothing sleeps.


def test_blocks_give_at_least_the_samples_asked_for() -> None:
    assert blocks(3000, 100) == (30, 100)
    assert blocks(450, 100) == (5, 100)  # 500 samples: whole blocks only
    assert blocks(40, 100) == (1, 40)  # fewer than a block: one block of them all
    assert blocks(400) == (400 // BLOCK, BLOCK)
    with pytest.raises(ValueError, match="positive"):
        blocks(0, 100)


def test_a_fast_op_takes_more_samples_a_block_so_every_block_lasts_alike() -> None:
    ms = 1_000_000
    assert block_size(400_000, 50, 20 * ms) == 50  # a bridged call: 50 last 20 ms
    assert block_size(80_000, 50, 20 * ms) == 250  # a redis-py GET: 250 do
    assert block_size(30_000, 50, 20 * ms) == 670  # rounded up to tens
    assert block_size(1_000, 50, 20 * ms) == MAX_BLOCK
    assert block_size(80_000, 50, 0) == 50  # block_ns 0: every block the shortest
    assert block_size(0.0, 50, 20 * ms) == 50  # no warm-up, nothing to go by


def _recording(log: list[str]) -> Callable[[str], Callable[[int, int], list[float]]]:
    def sampler(name: str) -> Callable[[int, int], list[float]]:
        def block(lead: int, count: int) -> list[float]:
            log.append(f"{name} {lead} {count}")
            return [float(len(log))] * count

        return block

    return sampler


def test_each_round_takes_one_block_of_every_op_after_its_lead() -> None:
    log: list[str] = []
    every = {name: _recording(log)(name) for name in "abc"}
    got = measure("t", {}, 250, warmup=7, samplers=every, block=100, block_ns=0)
    warm, sampled = log[:3], log[3:]
    assert warm == ["a 7 0", "b 7 0", "c 7 0"]  # warm-up: untimed calls
    assert [entry[2:] for entry in sampled] == [f"{LEAD} 100"] * 9  # 3 rounds of 3
    for r in range(3):
        assert sorted(entry[0] for entry in sampled[3 * r : 3 * r + 3]) == ["a", "b", "c"]
    assert {name: (len(s.samples), s.block) for name, s in got.items()} == dict.fromkeys(
        "abc", (300, 100)
    )
    # Each op's samples are its blocks, in the order taken.
    blocks_of_a = [i + 4 for i, entry in enumerate(sampled) if entry[0] == "a"]
    assert got["a"].samples == [float(i) for i in blocks_of_a for _ in range(100)]


def test_lead_calls_and_warm_up_are_made_but_not_sampled() -> None:
    stamps = iter(range(1, 10**6))

    def timed() -> float:
        return float(next(stamps))

    got = measure("t", {}, 6, warmup=1, timed={"x": timed}, block=3, block_ns=0, lead=2)
    # warm-up 1; round 1: lead 2, 3; samples 4, 5, 6; round 2: lead 7, 8; samples 9-11
    assert got["x"].samples == [4.0, 5.0, 6.0, 9.0, 10.0, 11.0]
    collecting: list[bool] = []

    def plain() -> None:
        collecting.append(gc.isenabled())

    got = measure("t", {"p": (plain, 3)}, 8, warmup=1, block=4, block_ns=0, lead=2)
    assert len(got["p"].samples) == 8  # each the mean of 3 calls
    assert len(collecting) == 3 * (1 + 2 * (2 + 4))  # warm-up, then 2 rounds of lead + block
    assert not any(collecting[3:])  # the collector is paused while sampling


def test_rounds_interleave_the_blocks_in_a_new_order_each_round() -> None:
    log: list[str] = []
    every = {name: _recording(log)(name) for name in "abc"}
    measure("t", {}, 40, warmup=0, samplers=every, block=2, block_ns=0)
    rounds = ["".join(entry[0] for entry in log[r : r + 3]) for r in range(3, len(log), 3)]
    assert len(rounds) == 20
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len(set(rounds)) > 1


def test_an_op_set_beside_another_is_always_sampled_next_to_it() -> None:
    log: list[str] = []
    every = {name: _recording(log)(name) for name in ("get", "alone", "x", "y", "z")}
    got = measure("t", {}, 30, warmup=0, samplers=every, beside={"alone": "get"}, block=1)
    rounds = [[entry.split()[0] for entry in log[r : r + 5]] for r in range(5, len(log), 5)]
    assert len(rounds) == 30
    assert all(abs(r.index("get") - r.index("alone")) == 1 for r in rounds)
    assert {r.index("get") < r.index("alone") for r in rounds} == {True, False}
    assert got["get"].block == got["alone"].block
    with pytest.raises(ValueError, match="not sampled"):
        measure("t", {}, 1, samplers=every, beside={"alone": "missing"})
    with pytest.raises(ValueError, match="beside two others"):
        measure("t", {}, 1, samplers=every, beside={"alone": "get", "x": "get"})


def test_a_pair_takes_the_longer_of_its_two_blocks() -> None:
    ms = 1_000_000
    per_sample = {"get": 80_000.0, "alone": 100_000.0, "bridged": 400_000.0}
    sizes = block_sizes(per_sample, 50, 20 * ms, {"alone": "get"})
    assert sizes == {"get": 250, "alone": 250, "bridged": 50}


def test_a_pair_is_sampled_in_turns_of_the_shortest_block_in_abba_order() -> None:
    assert turns(("get",), 250, 50) == [(("get",), 250)]
    pair = ("get", "alone")
    assert turns(pair, 250, 50) == [
        (pair, 50),
        (pair[::-1], 50),
        (pair, 50),
        (pair[::-1], 50),
        (pair, 50),
    ]
    assert [count for _, count in turns(pair, 130, 50)] == [65, 65]
    assert turns(pair, 40, 50) == [(pair, 40)]


def test_block_medians_are_of_groups_of_whole_blocks_of_one_stretch_of_rounds() -> None:
    # 10 blocks of 50 (a quick run's): three groups, of 3, 3 and 4 blocks.
    slow_second_group = [100.0] * 150 + [300.0] * 150 + [100.0] * 200
    figures = per_round(_measurement("m", slow_second_group, block=50), "p50")
    assert figures == (100.0, 300.0, 100.0)
    # One block that met a burst of other work does not move its group on its own.
    burst = [100.0] * 50 + [300.0] * 50 + [100.0] * 400
    assert per_round(_measurement("m", burst, block=50), "p50") == (100.0, 100.0, 100.0)
    # 60 blocks (a full run's): five groups of twelve.
    full = _measurement("m", [1.0] * 3000, block=50)
    assert len(per_round(full, "p50")) == BLOCKS
    # Blocks shorter than a p50 needs are grouped, whole, until each group has enough.
    short = [float(i // 20) for i in range(200)]  # blocks of 20: 0, 1, ... 9
    assert per_round(_measurement("m", short, block=20), "p50") == (1.0, 4.0, 8.0)
    assert BLOCK_SAMPLES <= GROUP_BLOCKS * 20


# -- the cross-check: redis-py's GET in the suite against the same GET alone -----------------


def _band(ratio: str = "in/alone") -> Target:
    return Target(ratio, 0.85, 1.15, True, "p50", label=ratio, note="the cross-check")


@pytest.mark.parametrize(
    ("scale", "status"),
    [(1.0, "met"), (1.14, "met"), (0.86, "met"), (1.2, "missed"), (0.8, "missed")],
)
def test_the_cross_check_fails_when_the_two_gets_differ_by_more_than_15_percent(
    scale: float, status: str
) -> None:
    results = _results(
        _measurement("in", [x * scale for x in STEADY]), _measurement("alone", STEADY)
    )
    verdict = _verdict(results, _band())
    assert verdict.status == status
    assert verdict.value == pytest.approx(scale)


def test_a_missed_cross_check_says_so_in_check_line_table_and_markdown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = _results(
        _measurement("in", [x * 1.3 for x in STEADY]), _measurement("alone", STEADY)
    )
    verdict = _verdict(results, _band())
    assert check_outcome([verdict], quick=True) == (
        EXIT_MISSED,
        "check failed: 1 target(s) missed: in/alone (1.30, limit 0.85 to 1.15)",
    )
    print_targets([verdict])
    assert "1.30x 0.85 to 1.15 MISSES: the cross-check" in capsys.readouterr().out
    table = markdown(results, [verdict], "heading")
    times = "\N{MULTIPLICATION SIGN}"
    assert f"| in/alone | 0.85\N{EN DASH}1.15{times} | 1.30{times} | **misses** |" in table


def test_the_cross_check_is_not_judged_when_the_get_alone_moved() -> None:
    moved = [100.0] * 160 + [250.0] * 40  # its last block 2.5x
    results = _results(_measurement("in", STEADY), _measurement("alone", moved))
    verdict = _verdict(results, _band())
    assert verdict.status == "not measured"
    assert verdict.reason.startswith("alone (divided by) moved 2.50x")


def test_the_targets_hold_both_suites_gets_to_the_get_alone_in_quick_runs_too() -> None:
    bands = {t.ratio: t for t in load() if t.low is not None and t.high is not None}
    for suite, get in ((bridge, "redis.get"), (stores, f"{stores.PEER}.get")):
        target = bands[f"{get}/{suite.ALONE}"]
        assert (target.low, target.high, target.quick) == (0.85, 1.15, True)


def test_the_suites_get_is_set_beside_the_get_alone() -> None:
    class Peer:  # redis_ops writes its keys first
        def put(self, key: str, value: object) -> None:
            pass

        def new_variable(self, key: str, value: object) -> int:
            return 0

    get = redis_ops(Peer(), "redis", None, alone="redis.alone.get")[0]  # type: ignore[arg-type]
    assert (get.id, get.peers) == ("redis.get", ("redis.alone.get",))

    class Alone:
        def block(self, lead: int, count: int) -> list[float]:
            return [1.0] * count

    op = alone_op(Alone(), "redis.alone.get", beside="redis.get")  # type: ignore[arg-type]
    assert (op.beside, op.sampler is not None) == ("redis.get", True)
    with pytest.raises(RuntimeError):
        op.fn()


def test_load_accepts_a_band_and_refuses_one_upside_down(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[target]]\nratio = "a/b"\nmin = 0.85\nmax = 1.15\nquick = true\n')
    [band] = load(good)
    assert (band.low, band.high, band.describe_limit()) == (0.85, 1.15, "0.85 to 1.15")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[target]]\nratio = "a/b"\nmin = 2\nmax = 1\nquick = true\n')
    with pytest.raises(ValueError, match="min 2 is above max 1"):
        load(bad)
    none = tmp_path / "none.toml"
    none.write_text('[[target]]\nratio = "a/b"\nquick = true\n')
    with pytest.raises(ValueError, match="give max, min, or both"):
        load(none)


ALONE_PROBE = """\
import io, sys
sys.stdin = io.StringIO("block 1 2\\nquit\\n")
from benchmarks.alone import main
main(int(sys.argv[1]), sys.argv[2])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "dspex_actors", "pykka")))
"""


def test_redis_alone_answers_blocks_and_loads_nothing_of_grpc_or_the_library(
    redis_url: str, tmp_path: Path
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])
    peer = RedisPeer(port)
    try:
        peer.put(GET_KEY, 0.7)
        alone = RedisAlone(port)
        try:
            got = alone.block(2, 5)
        finally:
            alone.close()
        assert len(got) == 5 and all(ns > 0 for ns in got)
        assert alone.process.returncode == 0
        # What the fresh process holds: redis-py and msgpack, nothing of the suite's.
        result = _run(["-c", ALONE_PROBE, str(port), GET_KEY], tmp_path)
    finally:
        peer.client.delete(GET_KEY)
        peer.close()
    assert result.returncode == 0, result.stderr
    ready, block, heavy = result.stdout.splitlines()
    assert (ready, len(json.loads(block)), heavy) == ("ready", 2, "[]")
