"""``python -m benchmarks`` as a user meets it: from any directory, saying which extra
it needs when it is missing (not a ModuleNotFoundError traceback), and ``--check``
refusing to pass on a figure it cannot trust."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bridge_support import python_env

from benchmarks.report import markdown, print_targets
from benchmarks.results import Kind, Measurement, Results
from benchmarks.targets import (
    EXIT_INCONCLUSIVE,
    EXIT_MISSED,
    Target,
    Verdict,
    check_outcome,
    evaluate,
)
from benchmarks.trust import (
    BLOCKS,
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


def _measurement(id: str, samples: list[float], rates: list[float] | None = None) -> Measurement:
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
    )


def _results(*measurements: Measurement) -> Results:
    results = Results()
    for m in measurements:
        results.add(m)
    return results


def _target(
    ratio: str = "ours/base", limit: float = 2.0, figure: str = "p50", quick: bool = True
) -> Target:
    return Target(ratio, limit, False, quick, figure, label=ratio, note="")


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
    target = Target("ours/redis", 0.3, True, True, "ops_per_s", label="", note="")
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
    target = Target("ours/redis", 0.3, True, True, "ops_per_s", label="", note="")
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
        f"base (divided by) moved 3.00x between blocks of samples (100 ns to 300 ns), "
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
