"""A Context migrating from LocalState straight into Redis (``Supervisor.start(store=...)``).

The same lossless, verified switch as to the bridge: seal+export -> a pending copy in
Redis (invisible to other processes) -> import -> verify by digest -> commit ->
swap -> retire. A failure at any step before the swap leaves the session local,
whole and writable, with no key of the copy left in Redis; after the switch other
processes open the session by its id, and a subscriber's sequence goes on. A real
``redis-server`` serves every test (the ``redis_url`` fixture).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import python_env
from redis_support import session_key_names
from test_migration_failures import populate

from dspex_actors import failpoints
from dspex_actors.errors import SessionNotFound, StateError, VersionConflict
from dspex_actors.redis.state import RedisState
from dspex_actors.supervision import Supervisor
from dspex_actors.testing.streaming import EventRecorder, change

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0


@pytest.fixture
def supervisor(redis_url: str) -> Iterator[Supervisor]:
    with Supervisor.start(store=redis_url) as running:
        yield running


def _visible(redis_url: str, session_id: str) -> bool:
    try:
        handle = RedisState.init(url=redis_url, session_id=session_id, create=False)
    except SessionNotFound:
        return False
    handle.cleanup()
    return True


STEPS = [
    ("migration.export", "export"),
    ("migration.import", "import"),
    ("migration.import_reply", "import"),  # imported in Redis, the digest never read
    ("migration.verify", "verify"),
    ("migration.commit", "commit"),
    ("migration.swap", "swap"),  # committed already: the copy must be removed
]


@pytest.mark.parametrize(("point", "step"), STEPS)
def test_a_failed_step_leaves_the_session_local_whole_and_nothing_in_redis(
    supervisor: Supervisor, redis_url: str, raw: Any, point: str, step: str, request: Any
) -> None:
    session_id = f"moving-{request.node.callspec.id}"
    ctx = supervisor.start_context(session_id=session_id)
    populate(ctx)
    before = ctx.list_variables()
    with (
        failpoints.enabled(point, failpoints.fail(StateError("injected"))),
        pytest.raises(StateError) as failed,
    ):
        ctx.ensure_bridged()
    assert failed.value.details["step"] == step
    assert ctx.backend_info()["type"] == "local"
    assert ctx.list_variables() == before
    assert not _visible(redis_url, session_id)
    # Only the removed copy's tombstone stream (its 'closed' entry) may be left.
    assert all(b":events:" in key for key in session_key_names(raw, session_id))
    assert ctx.set_variable("temperature", 1.5) == 4
    after_write = ctx.list_variables()

    ctx.ensure_bridged()
    assert ctx.backend_info()["type"] == "redis"
    assert ctx.list_variables() == after_write
    assert ctx.set_variable("temperature", 1.6) == 5
    assert _visible(redis_url, session_id)


_PEER = """
import json, sys
from dspex_actors import RedisState, VersionConflict

state = RedisState.init(session_id=sys.argv[1], url=sys.argv[2], create=False)
record = state.get_record("temperature")
state.set_variable("temperature", 1.9, expected_version=record.version)
try:
    state.set_variable("temperature", 0.1, expected_version=record.version)
    stale = "applied"
except VersionConflict as exc:
    stale = exc.actual
print(json.dumps({"seen": [record.value, record.version], "stale": stale}), flush=True)
state.cleanup()
"""


def test_after_the_switch_another_process_shares_the_session(
    supervisor: Supervisor, redis_url: str, raw: Any
) -> None:
    ctx = supervisor.start_context()
    populate(ctx)
    recorder = EventRecorder(WAIT, "the context's subscriber")
    ctx.subscribe("temperature", recorder)
    ctx.ensure_bridged()
    switched = ctx.backend_info()
    assert (switched["type"], switched["switches"]) == ("redis", 1)
    assert switched["capabilities"]["persistence"] and switched["capabilities"]["distribution"]
    ctx.ensure_bridged()  # idempotent: a Redis session is shared already
    assert ctx.backend_info()["switches"] == 1

    done = subprocess.run(
        [sys.executable, "-c", _PEER, ctx.session_id, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        env=python_env(),
        check=True,
    )
    assert '"seen": [1.0, 3]' in done.stdout and '"stale": 4' in done.stdout
    events = recorder.wait_for("the other process's write", change("temperature", 4))
    # The local session wrote sequences 1..7; the copy's stream goes on from 8.
    assert [(e.sequence, e.value) for e in events] == [(8, 1.9)]
    with pytest.raises(VersionConflict):
        ctx.set_variable("temperature", 0.2, expected_version=3)
    assert ctx.get_variable("temperature") == 1.9
    session_id = ctx.session_id
    ctx.stop()  # the owner's stop deletes the session; its stream stays as a tombstone
    assert all(b":events:" in key for key in session_key_names(raw, session_id))


def test_a_context_may_name_its_own_redis_store(redis_url: str) -> None:
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context(store=redis_url)
        ctx.register_variable("n", "integer", 1)
        ctx.ensure_bridged()
        assert ctx.backend_info()["type"] == "redis"
        assert _visible(redis_url, ctx.session_id)
        with pytest.raises(ValueError, match="redis://"):
            supervisor.start_context(store="sqlite:x.db")


def test_a_supervisor_on_a_sqlite_store_bridges_into_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sessions.db"
    with Supervisor.start(store=f"sqlite:{path}") as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable("n", "integer", 1)
        ctx.ensure_bridged()
        assert ctx.backend_info()["type"] == "bridged"
        assert ctx.get_variable("n") == 1
        assert path.stat().st_size > 0


def test_an_unknown_store_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="unknown store"):
        Supervisor.start(store="mongodb://localhost")
