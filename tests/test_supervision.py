"""Supervisor and Context: restarts, restart intensity, and the local -> bridged switch."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dspex_actors import LocalState
from dspex_actors.errors import NotSupported, StateError, ValidationError, VariableNotFound
from dspex_actors.exports import columns_digest, columns_of
from dspex_actors.messages import Crash, GetVariable
from dspex_actors.supervision import Context, Supervisor


@pytest.fixture
def sup() -> Iterator[Supervisor]:
    with Supervisor.start(max_restarts=2, within_seconds=600) as supervisor:
        yield supervisor


def _local(context: Context) -> LocalState:
    backend = context.backend
    assert isinstance(backend, LocalState)
    return backend


def _kill(context: Context) -> None:
    """Crash the context's session actor from outside and wait until it is dead."""
    ref = _local(context).actor_ref
    ref.tell(Crash("killed by the test"))
    assert ref.actor_stopped.wait(10)


def _dead_address() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_context_has_the_provider_api_on_a_local_backend(sup: Supervisor) -> None:
    ctx = sup.start_context(session_id="ctx-api")
    var_id = ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
    assert ctx.get_variable("temperature") == 0.7
    assert ctx.get_variable(var_id) == 0.7
    assert ctx.set_variable("temperature", 1.1) == 1
    ctx.update_variables({"temperature": 1.2})
    assert ctx.get_variables(["temperature", "missing"]) == {"temperature": 1.2}
    assert [r["version"] for r in ctx.list_variables()] == [2]
    with pytest.raises(ValidationError, match="temperature"):
        ctx.set_variable("temperature", 5)
    assert ctx.get_variable("temperature") == 1.2
    with LocalState.init() as elsewhere:
        elsewhere.register_variable("top_k", "integer", 40)
        ctx.import_columns(elsewhere.export_columns())
    assert ctx.export_columns().names == ["temperature", "top_k"]
    ctx.delete_variable("top_k")
    ctx.delete_variable("temperature")
    with pytest.raises(VariableNotFound):
        ctx.get_variable("temperature")
    info = ctx.backend_info()
    assert info["type"] == "local"
    assert info["requires_bridge"] is False
    assert info["switches"] == 0
    assert info["history"] == []
    assert info["last_switch_ms"] is None
    assert ctx.session_id == "ctx-api"
    assert sup.contexts() == [ctx]


def test_duplicate_session_and_bad_backend_are_rejected(sup: Supervisor) -> None:
    sup.start_context(session_id="dup")
    with pytest.raises(StateError, match="already running"):
        sup.start_context(session_id="dup")
    with pytest.raises(TypeError):
        sup.start_context(backend="remote")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="missing required StateProvider methods"):
        sup.start_context(backend=dict)  # type: ignore[arg-type]


def test_custom_backend_class(sup: Supervisor) -> None:
    class Custom(LocalState):
        pass

    ctx = sup.start_context(backend=Custom)
    ctx.register_variable("x", "integer", 1)
    assert ctx.backend_info()["type"] == "local"  # a LocalState subclass is local
    assert ctx.get_variable("x") == 1


def test_a_killed_actor_comes_back_without_any_call() -> None:
    restarted = threading.Event()
    with Supervisor.start(on_restart=lambda sid, err: restarted.set()) as sup:
        ctx = sup.start_context(session_id="watched")
        var_id = ctx.register_variable("n", "integer", 7)
        first_ref = _local(ctx).actor_ref
        _kill(ctx)
        assert restarted.wait(30)  # the exit hook alone brought it back
        assert _local(ctx).actor_ref is not first_ref
        assert _local(ctx).alive
        [record] = ctx.list_variables()
        assert (record["id"], record["value"], record["version"]) == (var_id, 7, 0)


def test_restart_intensity_window_slides() -> None:
    now = [0.0]
    with Supervisor.start(max_restarts=1, within_seconds=10, clock=lambda: now[0]) as sup:
        ctx = sup.start_context()
        ctx.register_variable("x", "integer", 0)
        _kill(ctx)
        assert ctx.set_variable("x", 1) == 1  # first restart, at t=0
        now[0] = 11.0  # outside the window: the old restart is forgiven
        _kill(ctx)
        assert ctx.set_variable("x", 2) == 2
        _kill(ctx)  # second restart within 10 s of the last: too many
        with pytest.raises(StateError, match="died more than 1 times"):
            ctx.set_variable("x", 3)


def test_killed_actor_is_restarted_with_its_state(sup: Supervisor) -> None:
    ctx = sup.start_context(session_id="phoenix")
    var_id = ctx.register_variable("n", "integer", 0)
    ctx.set_variable("n", 5)
    first_ref = _local(ctx).actor_ref
    _kill(ctx)
    # Reads come from the session's table and keep working while the actor is down.
    assert ctx.get_variable("n") == 5
    # A write finds the actor dead, waits for the supervisor's restart and is applied once.
    assert ctx.set_variable("n", 6) == 2
    assert _local(ctx).actor_ref is not first_ref
    assert _local(ctx).alive
    [record] = ctx.list_variables()
    assert (record["id"], record["value"], record["version"]) == (var_id, 6, 2)


def test_external_clean_stop_is_also_restarted(sup: Supervisor) -> None:
    ctx = sup.start_context()
    ctx.register_variable("s", "string", "a")
    ref = _local(ctx).actor_ref
    ref.stop(block=True, timeout=10)
    assert ctx.set_variable("s", "b") == 1
    assert ctx.get_variable("s") == "b"


def test_restart_intensity_stops_only_that_child(sup: Supervisor) -> None:
    fragile = sup.start_context(session_id="fragile")
    sturdy = sup.start_context(session_id="sturdy")
    fragile.register_variable("x", "integer", 0)
    sturdy.register_variable("y", "integer", 0)
    for i in range(2):  # max_restarts=2: two restarts are allowed
        _kill(fragile)
        assert fragile.set_variable("x", i + 1) == i + 1
    _kill(fragile)
    with pytest.raises(StateError, match="died more than 2 times") as excinfo:
        fragile.set_variable("x", 10)
    assert "fragile" in str(excinfo.value)
    with pytest.raises(StateError, match="died more than 2 times"):
        fragile.get_variable("x")
    # The sibling is untouched.
    assert sturdy.set_variable("y", 1) == 1
    assert sturdy.get_variable("y") == 1


def test_stop_is_idempotent_and_later_calls_fail(sup: Supervisor) -> None:
    ctx = sup.start_context()
    ctx.register_variable("x", "integer", 0)
    ctx.stop()
    ctx.stop()
    with pytest.raises(StateError):
        ctx.set_variable("x", 1)
    with pytest.raises(StateError):
        ctx.get_variable("x")
    assert sup.contexts() == []


def test_migration_to_a_dead_bridge_leaves_the_session_local_and_whole() -> None:
    with Supervisor.start(bridge_address=_dead_address(), bridge_timeout=0.5) as sup:
        ctx = sup.start_context()
        var_id = ctx.register_variable("t", "float", 0.5)
        ctx.set_variable("t", 0.6)
        before = ctx.export_state()
        with pytest.raises(StateError, match="failed at step 'import'") as excinfo:
            ctx.ensure_bridged()
        assert "stays on LocalState" in str(excinfo.value)
        assert ctx.backend_info()["type"] == "local"
        assert ctx.export_state() == before
        assert ctx.set_variable(var_id, 0.7) == 2
        assert ctx.get_variable("t") == 0.7
        assert ctx.backend_info()["switches"] == 0


def test_migration_keeps_ids_versions_and_metadata() -> None:
    events: list[dict[str, Any]] = []
    with Supervisor.start(on_switch=events.append) as sup:
        ctx = sup.start_context()
        ids = {
            "temperature": ctx.register_variable(
                "temperature", "float", 0.7, constraints={"min": 0, "max": 2}, description="t"
            ),
            "style": ctx.register_variable(
                "style", "choice", "short", constraints={"choices": ["short", "long"]}
            ),
            "emb": ctx.register_variable("emb", "embedding", [1, 2, 3]),
        }
        ctx.set_variable("temperature", 0.9, {"source": "tuner"})
        before = ctx.list_variables()
        assert sup.bridge_address is None
        ctx.ensure_bridged()
        assert sup.bridge_address is not None
        after = ctx.list_variables()
        assert after == before
        assert {r["name"]: r["id"] for r in after} == ids
        info = ctx.backend_info()
        assert info["type"] == "bridged"
        assert info["requires_bridge"] is True
        assert info["capabilities"]["distribution"] is True
        assert info["switches"] == 1
        assert info["history"][0]["from"] == "local"
        assert info["history"][0]["to"] == "bridged"
        assert info["history"][0]["variables"] == 3
        assert info["last_switch_ms"] == info["history"][0]["duration_ms"] > 0
        assert [e["session_id"] for e in events] == [ctx.session_id]
        # Same handle, same API, now on the bridge.
        assert ctx.set_variable("temperature", 1.0) == 2
        with pytest.raises(ValidationError, match="temperature"):
            ctx.set_variable("temperature", 9.0)
        ctx.ensure_bridged()  # idempotent
        assert ctx.backend_info()["switches"] == 1


def test_register_program_decides_the_switch() -> None:
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        ctx.register_variable("x", "integer", 1)
        ctx.register_program("elixir_only", {"type": "native"})
        assert ctx.backend_info()["type"] == "local"
        ctx.register_program("qa", {"type": "dspy", "signature": "question -> answer"})
        assert ctx.backend_info()["type"] == "bridged"
        other = sup.start_context()
        other.register_program("needs", {"requires_bridge": True})
        assert other.backend_info()["type"] == "bridged"
        with pytest.raises(TypeError):
            ctx.register_program("", {})
        with pytest.raises(TypeError):
            ctx.register_program("p", ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_writers_during_migration_lose_nothing_and_double_nothing() -> None:
    writers, before_switch, writes_each = 4, 25, 150
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        for w in range(writers):
            ctx.register_variable(f"c{w}", "integer", 0)
        progress = threading.Condition()
        acked = [0] * writers
        on_bridge = [0] * writers
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                for k in range(1, writes_each + 1):
                    backend = ctx.backend
                    version = ctx.set_variable(f"c{w}", k)
                    assert version == k
                    with progress:
                        acked[w] = k
                        on_bridge[w] += backend.requires_bridge()
                        progress.notify_all()
            except BaseException as exc:
                errors.append(exc)
                with progress:
                    progress.notify_all()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        # Every writer is mid-stream, on the local backend, when the switch starts.
        with progress:
            assert progress.wait_for(lambda: min(acked) >= before_switch or bool(errors), 30)
        ctx.ensure_bridged()
        for t in threads:
            t.join(60)
        assert not errors
        assert ctx.backend_info()["type"] == "bridged"
        # Writes landed on both sides of the switch.
        assert min(acked) == writes_each
        assert sum(on_bridge) > 0
        assert sum(acked) - sum(on_bridge) >= writers * before_switch
        records = {r["name"]: r for r in ctx.list_variables()}
        for w in range(writers):
            # version == number of acknowledged writes: none lost, none applied twice.
            assert records[f"c{w}"]["value"] == writes_each
            assert records[f"c{w}"]["version"] == writes_each


def test_readers_and_handles_kept_from_before_the_switch_follow_it() -> None:
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        ctx.register_variable("t", "float", 0.5)
        get = ctx.get_variable  # e.g. bound once in a DSPy module's __init__
        old_backend = ctx.backend
        ctx.ensure_bridged()
        assert ctx.set_variable("t", 0.9) == 1
        assert get("t") == 0.9  # forwarded to the bridged copy, not a frozen table
        # A write through the old handle is forwarded too: applied once, not lost.
        assert old_backend.set_variable("t", 1.1) == 2
        assert ctx.get_variable("t") == 1.1
        assert [r["version"] for r in ctx.list_variables()] == [2]
        # So is a whole import, and an export of columns.
        with LocalState.init() as elsewhere:
            elsewhere.register_variable("u", "integer", 4)
            old_backend.import_state(elsewhere.export_state())
        assert ctx.get_variable("u") == 4
        assert old_backend.export_columns().names == ["t", "u"]


EMPTY_EXPORT = {"session_id": "e", "variables": {}, "variable_index": {}, "metadata": {}}


def test_every_public_method_of_a_handle_kept_from_before_the_switch_works() -> None:
    """Each public name of LocalState is called on the retired handle; a method added
    later without a line here fails the test, so none escapes the forwarding."""
    with Supervisor.start() as sup, LocalState.init() as elsewhere, LocalState.init() as more:
        ctx = sup.start_context()
        var_id = ctx.register_variable("t", "float", 0.5, metadata={"k": 1})
        elsewhere.register_variable("w", "integer", 3)
        more.register_variable("v", "string", "x")
        old = _local(ctx)
        ctx.ensure_bridged()
        new = ctx.backend
        assert not isinstance(new, LocalState)
        calls: dict[str, Callable[[], Any]] = {
            "get_variable": lambda: old.get_variable("t"),
            "get_variables": lambda: old.get_variables(["t"]),
            "get_record": lambda: old.get_record(var_id),
            "has_variable": lambda: old.has_variable("t"),
            "list_variables": lambda: old.list_variables("t*"),
            "export_state": old.export_state,
            "export_columns": old.export_columns,
            "digest": old.digest,
            "session_info": old.session_info,
            "events": lambda: old.events(None).close(),
            "run": lambda: old.run(GetVariable("t")),
            "import_with_digest": lambda: old.import_with_digest(columns_of(EMPTY_EXPORT)),
            "register_variable": lambda: old.register_variable("u", "integer", 1),
            "set_variable": lambda: old.set_variable("t", 0.75, expected_version=0),
            "update_variables": lambda: old.update_variables({"u": 2}),
            "delete_variable": lambda: old.delete_variable("u"),
            "import_state": lambda: old.import_state(elsewhere.export_state()),
            "import_columns": lambda: old.import_columns(more.export_columns()),
            "heartbeat": old.heartbeat,
            "requires_bridge": old.requires_bridge,
            "capabilities": old.capabilities,
            "actor_ref": lambda: old.actor_ref,
            "variable_count": lambda: old.variable_count,
            "session_metadata": lambda: old.session_metadata,
            "alive": lambda: old.alive,
            "restart": old.restart,
            "kind": lambda: old.kind,
            "session_id": lambda: old.session_id,
            "init": lambda: LocalState.init().cleanup(),
            "cleanup": old.cleanup,
        }
        # Streaming and the migration protocol forward too; the bridged successor
        # streams, and does not seal (NotSupported).
        heard: list[Any] = []
        subscription: list[Any] = []
        calls["subscribe"] = lambda: subscription.append(old.subscribe("t", heard.append))

        def batched() -> None:
            with old.batch():
                old["t"] = 0.75  # the value set_variable left (a new version)

        calls["batch"] = batched
        calls["v"] = lambda: old.v.t
        calls["variable"] = lambda: old.variable("t").value
        calls["unsubscribe"] = lambda: old.unsubscribe(subscription[0])
        for name in ("seal", "unseal", "retire"):
            calls[name] = {
                "seal": old.seal,
                "unseal": old.unseal,
                "retire": lambda: old.retire(new),
            }[name]
        calls["cleanup"] = calls.pop("cleanup")  # last: nothing to release once retired
        calls["close"] = old.close  # the same as cleanup (idempotent)
        public = {n for n in dir(LocalState) if not n.startswith("_")}
        assert public == set(calls), f"add a call for {public ^ set(calls)}"
        answers = {}
        for name, call in calls.items():
            try:
                answers[name] = call()
            except NotSupported:
                assert name in ("seal", "unseal", "retire"), name
                answers[name] = NotSupported
        assert answers["get_variable"] == 0.5
        assert answers["get_record"].version == 0
        assert answers["has_variable"] is True
        assert answers["set_variable"] == 1
        assert answers["variable_count"] == 3  # t, w and v (u came and went)
        assert answers["alive"] is True
        assert ctx.get_variable("t") == 0.75
        assert ctx.get_variable("w") == 3
        assert old.digest() == columns_digest(ctx.export_columns())


def test_migration_rejected_by_the_bridge_leaves_no_remote_session() -> None:
    from dspex_actors import serve
    from dspex_actors.bridge import BridgedState

    with serve(max_variables_per_session=2) as server:
        with Supervisor.start(bridge_address=server.address) as sup:
            ctx = sup.start_context(session_id="too-big")
            for name in ("a", "b", "c"):
                ctx.register_variable(name, "integer", 1)
            with pytest.raises(StateError, match="failed at step 'import'"):
                ctx.ensure_bridged()
            assert ctx.backend_info()["type"] == "local"
            assert ctx.set_variable("a", 2) == 1
        # The half-made remote session was removed: opening the id creates it afresh.
        probe = BridgedState.init(session_id="too-big", address=server.address)
        try:
            assert probe.owner
            assert probe.list_variables() == []
        finally:
            probe.cleanup()


def test_migration_whose_copy_fails_verification_stays_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dspex_actors import migration
    from dspex_actors.bridge import BridgedState

    monkeypatch.setattr(migration, "columns_digest", lambda columns: b"not the digest")
    with Supervisor.start() as sup:
        ctx = sup.start_context(session_id="unverified")
        ctx.register_variable("x", "integer", 1)
        with pytest.raises(StateError, match="failed at step 'verify'"):
            ctx.ensure_bridged()
        assert ctx.backend_info()["type"] == "local"
        assert ctx.set_variable("x", 2) == 1
        probe = BridgedState.init(session_id="unverified", address=sup.bridge_address)
        try:
            assert probe.owner  # the unverified copy was removed
        finally:
            probe.cleanup()


def test_bridged_contexts_send_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    from dspex_actors.bridge import BridgedState

    beat = threading.Event()
    real = BridgedState.heartbeat

    def spy(self: BridgedState) -> float | None:
        expires = real(self)
        beat.set()
        return expires

    monkeypatch.setattr(BridgedState, "heartbeat", spy)
    with Supervisor.start(heartbeat_interval=0.01) as sup:
        ctx = sup.start_context(backend="bridged")
        ctx.register_variable("x", "integer", 1)
        assert beat.wait(30)


def test_another_process_sees_and_changes_a_migrated_session() -> None:
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        ctx.register_variable("style", "string", "terse")
        ctx.ensure_bridged()
        code = (
            "import sys; from dspex_actors.bridge import BridgedState\n"
            "s = BridgedState.init(session_id=sys.argv[1], address=sys.argv[2])\n"
            "assert s.get_variable('style') == 'terse'\n"
            "print(s.set_variable('style', 'verbose'))\n"
            "s.cleanup()\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, ctx.session_id, str(sup.bridge_address)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.strip() == "1"
        assert ctx.get_variable("style") == "verbose"


def test_migration_never_imports_into_someone_elses_session() -> None:
    from dspex_actors.bridge import BridgedState

    with Supervisor.start() as sup:
        ctx = sup.start_context(session_id="taken")
        ctx.register_variable("mine", "integer", 1)
        # Start the bridge by migrating another context, then squat on "taken".
        sup.start_context().ensure_bridged()
        squatter = BridgedState.init(session_id="taken", address=sup.bridge_address)
        try:
            squatter.register_variable("theirs", "string", "x")
            with pytest.raises(StateError, match="already exists"):
                ctx.ensure_bridged()
            assert ctx.backend_info()["type"] == "local"
            assert ctx.set_variable("mine", 2) == 1
            # The squatter's session was neither polluted nor closed.
            assert [r["name"] for r in squatter.list_variables()] == ["theirs"]
        finally:
            squatter.cleanup()


def test_a_session_holding_a_2_mib_value_migrates_whole() -> None:
    """The same limits on both sides: what a local session accepted, the bridge takes."""
    document = "d" * (2 << 20)
    with Supervisor.start() as sup:
        ctx = sup.start_context()
        ctx.register_variable("document", "string", document)
        ctx.register_variable("embedding", "embedding", [0.5] * 200_000)
        ctx.register_program("qa", {"type": "dspy"})
        assert ctx.backend_info()["type"] == "bridged"
        assert ctx.get_variable("document") == document
        assert len(ctx.get_variable("embedding")) == 200_000


def test_a_migrated_context_is_kept_alive_by_its_servers_ttl_from_the_switch_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The heartbeats start with the first move, before the session is bridged, when
    their period is still the hour asked for; the switch makes them take the server's
    short TTL at once, so the first heartbeat comes within a third of it, not an hour
    later (when the session would long have expired); with a 2 s TTL the context then
    stays alive through more than 10 s of idling."""
    from dspex_actors import serve
    from dspex_actors.bridge import BridgedState

    beats = threading.Semaphore(0)
    real = BridgedState.heartbeat

    def spy(self: BridgedState) -> float | None:
        expires = real(self)
        beats.release()
        return expires

    monkeypatch.setattr(BridgedState, "heartbeat", spy)
    with (
        serve(session_ttl=2.0) as server,
        Supervisor.start(bridge_address=server.address, heartbeat_interval=3600.0) as sup,
    ):
        ctx = sup.start_context()
        ctx.register_variable("x", "integer", 1)
        ctx.ensure_bridged()
        assert sup._heartbeat_period() == pytest.approx(2.0 / 3)
        assert beats.acquire(timeout=30)  # an hour without the fix; 0.67 s with it
        idle = time.monotonic()
        for _ in range(15):  # 10 s and more of idling, kept alive by heartbeats alone
            assert beats.acquire(timeout=30)
            assert server.reap_expired() == []
        idle = time.monotonic() - idle
        assert ctx.get_variable("x") == 1
    print(f"a migrated context under a 2 s TTL: alive after {idle:.1f} s idle, 16 heartbeats")


def test_heartbeats_come_more_often_than_the_ttl_the_server_reported() -> None:
    """A 60 s heartbeat no longer lets a session with a shorter TTL expire."""
    from dspex_actors import serve

    with (
        serve(session_ttl=9.0) as server,
        Supervisor.start(bridge_address=server.address, heartbeat_interval=60.0) as sup,
    ):
        assert sup._heartbeat_period() == 60.0  # no bridged context yet
        ctx = sup.start_context(backend="bridged")
        assert (ctx.backend.heartbeat() or 0) > 0
        assert sup._heartbeat_period() == 3.0  # a third of the server's 9 s


def test_a_subscription_ended_while_its_session_moves_opens_nothing_on_the_new_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unsubscribed after the switch listed the subscription but before it moved: it
    opens no source on the new backend (or closes the one it opened), and the switch
    does not wait for events of a subscription that is gone (its timeout raised to an
    hour: a wait would fail this test by its hang guard)."""
    from dspex_actors import migration

    monkeypatch.setattr(migration, "CALL_TIMEOUT", 3600.0)
    opened: list[Any] = []
    real_events_of = migration.events_of

    def events_of(provider: Any, pattern: str | None, start: int | None) -> Any:
        source = real_events_of(provider, pattern, start)
        closed = threading.Event()
        real_close = source.close

        def close() -> None:
            closed.set()
            real_close()

        source.close = close  # type: ignore[method-assign]  # a spy on this one source
        opened.append(closed)
        return source

    monkeypatch.setattr(migration, "events_of", events_of)
    real_move = migration.ContextSource.move

    def move(self: Any, backend: Any, start: int | None) -> None:
        subscription.close()  # the user's unsubscribe, racing the switch
        real_move(self, backend, start)

    with Context.init() as ctx:
        ctx.register_variable("x", "integer", 0)
        subscription = ctx.subscribe(None, lambda event: None)
        monkeypatch.setattr(migration.ContextSource, "move", move)
        ctx.ensure_bridged()
        assert ctx.set_variable("x", 1) == 1
    assert all(closed.is_set() for closed in opened)  # nothing left open on the bridge
