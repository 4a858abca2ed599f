"""The programs under ``examples/``, run as their docstrings say (and the README
repeats): each as a separate Python process, its servers started as a user would
start them (``dspex-actors serve --token``, ``redis-server``); what each prints is
checked line for line."""

from __future__ import annotations

import sys
from pathlib import Path

from bridge_support import REPO_ROOT, python_env, run_python, server_process

EXAMPLES = REPO_ROOT / "examples"
TOKEN = "s3cret"


def run_example(name: str, **env: str) -> list[str]:
    """Run ``python examples/NAME`` from the repository root; its output lines."""
    output = run_python(
        str(Path("examples") / name), env=python_env(**env), cwd=REPO_ROOT, what=f"examples/{name}"
    )
    return output.splitlines()


def test_every_example_is_run_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "redis_sessions.py",
        "shared_session.py",
        "supervised_app.py",
        "tuned_live.py",
    ]


def test_the_supervised_app_migrates_and_its_subscription_follows() -> None:
    assert run_example("supervised_app.py") == [
        "backend: local",
        "backend: bridged",
        "refused: variable 'temperature': above the maximum 2.0 (rule 'max', value 3.5)",
        "event: updated temperature = 0.9 (version 1)",
        "event: updated temperature = 1.2 (version 2)",
        "temperature: 1.2",
        "style: concise",
    ]


def test_two_processes_share_a_session_through_a_server_with_a_token() -> None:
    script = Path(sys.executable).with_name("dspex-actors")
    with server_process("--token", TOKEN, command=[str(script)]) as server:
        lines = run_example(
            "shared_session.py", DSPEX_BRIDGE_ADDRESS=server.address, DSPEX_BRIDGE_TOKEN=TOKEN
        )
    values = ["0.2", "0.4", "0.6", "0.8", "1.0"]
    assert lines == [
        "reader: attached, cached=True",
        *(f"reader: temperature = {v} (version {n})" for n, v in enumerate(values, 1)),
        "reader: cached read 1.0",
        "writer: reader exited with 0",
    ]


def test_two_processes_share_a_session_in_redis(redis_url: str) -> None:
    assert run_example("redis_sessions.py", DSPEX_REDIS_URL=redis_url) == [
        "follower: temperature = 0.3 (version 1)",
        "follower: temperature = 0.5 (version 2)",
        "follower: max_tokens = 1024 (version 1)",
        "follower: temperature is 0.5",
        "writer: follower exited with 0",
    ]


def test_an_optimizer_tunes_two_workers_dspy_modules_live() -> None:
    assert run_example("tuned_live.py") == [
        *(
            f"temperature {t}: workers answered [('42', {t}), ('42', {t})]"
            for t in (0.7, 0.4, 0.1)
        ),
        "backend: bridged",
    ]
