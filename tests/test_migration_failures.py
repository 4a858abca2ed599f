"""A switch to the bridge that fails at any step leaves the session whole where it was.

Each migration step has a failpoint (``dspex_actors.failpoints``). Failing any step
before the swap must leave the session on its local backend, whole (every value
and version) and writable, with no session of that id visible on the server; the
StateError names the step; and a second attempt without the fault succeeds and
keeps everything (a failure at the swap, after the copy was committed, discards
that copy too). A failure at retirement comes after the swap: the switch stands and
is recorded, and the old backend is stopped all the same (no actor outlives the
supervisor; a handle kept from before says SessionClosed instead of reading stale
values). A copy that could not be removed (the bridge refused the close) stays
invisible and is removed before the next attempt. And incarnations: an owner whose
session expired can neither close nor write into a newcomer's session with the same
id, nor read the newcomer's values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bridge_support import held

from dspex_actors import LocalState, failpoints
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import BridgeUnavailable, SessionClosed, SessionNotFound, StateError
from dspex_actors.records import VariableRecord
from dspex_actors.supervision import Context, Supervisor

SESSION = "moving"


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture
def supervisor(server: SessionStoreServer) -> Iterator[Supervisor]:
    with Supervisor.start(bridge_address=server.address) as running:
        yield running


def populate(ctx: Context) -> None:
    ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
    ctx.register_variable("model", "choice", "gpt", constraints={"choices": ["gpt", "llama"]})
    ctx.register_variable("vector", "embedding", [1.0, 2.0], metadata={"unit": "m"})
    for value in (0.8, 0.9, 1.0):
        ctx.set_variable("temperature", value)
    ctx.set_variable("model", "llama", {"by": "test"})


def _snapshot(ctx: Context) -> list[VariableRecord]:
    """Everything a migration must keep: ids, names, values, versions, metadata..."""
    return ctx.list_variables()


def _visible_on(server: SessionStoreServer, session_id: str = SESSION) -> bool:
    """Whether another handle can attach to ``session_id`` (a pending copy cannot)."""
    try:
        handle = BridgedState.init(session_id=session_id, address=server.address, create=False)
    except SessionNotFound:
        return False
    handle.cleanup()
    return True


STEPS = [
    ("migration.export", "export"),
    ("migration.import", "import"),
    ("migration.import_reply", "import"),  # applied on the server, its answer lost
    ("migration.verify", "verify"),
    ("migration.commit", "commit"),
    # After the commit: the copy is visible already, so the failure must discard it
    # (else every later switch fails at 'import', the session existing already).
    ("migration.swap", "swap"),
]


@pytest.mark.parametrize(("point", "step"), STEPS)
def test_a_failed_step_leaves_the_session_local_whole_and_writable(
    server: SessionStoreServer, supervisor: Supervisor, point: str, step: str
) -> None:
    ctx = supervisor.start_context(session_id=SESSION)
    populate(ctx)
    before = _snapshot(ctx)
    with (
        failpoints.enabled(point, failpoints.fail(StateError("injected"))),
        pytest.raises(StateError) as failed,
    ):
        ctx.ensure_bridged()
    assert failed.value.details["step"] == step
    assert ctx.backend_info()["type"] == "local"
    assert ctx.backend_info()["switches"] == 0
    assert _snapshot(ctx) == before  # whole: values, versions, metadata, timestamps
    assert not _visible_on(server)  # nothing of it is left visible on the server
    with pytest.raises(KeyError):  # nor held there at all
        held(server, SESSION)
    assert ctx.set_variable("temperature", 1.5) == 4  # writable
    after_write = _snapshot(ctx)

    ctx.ensure_bridged()  # the same switch without the fault
    assert ctx.backend_info()["type"] == "bridged"
    assert _snapshot(ctx) == after_write  # every value and version kept
    assert ctx.set_variable("temperature", 1.6) == 5
    assert _visible_on(server)
    print(f"fault injected at {point}: refused at step {step!r}, then switched whole")


def test_a_failed_retirement_still_switches_and_is_recorded(
    server: SessionStoreServer, supervisor: Supervisor
) -> None:
    switches: list[dict[str, Any]] = []
    supervisor.on_switch = switches.append
    ctx = supervisor.start_context(session_id=SESSION)
    populate(ctx)
    before = _snapshot(ctx)
    old = ctx.backend
    try:
        with failpoints.enabled("migration.retire", failpoints.fail(StateError("injected"))):
            ctx.ensure_bridged()  # raises nothing: the switch has happened
        info = ctx.backend_info()
        assert info["type"] == "bridged"
        assert info["switches"] == 1
        assert [(e["from"], e["to"], e["variables"]) for e in info["history"]] == [
            ("local", "bridged", 3)
        ]
        assert [(e["from"], e["to"]) for e in switches] == [("local", "bridged")]
        assert _snapshot(ctx) == before
        assert _visible_on(server)
        assert ctx.set_variable("temperature", 1.5) == 4
    finally:
        old.cleanup()  # idempotent: the failed retirement stopped it already


def test_a_failed_retirement_leaves_no_actor_running(
    server: SessionStoreServer, supervisor: Supervisor
) -> None:
    """When retiring the old backend fails, it is stopped all the same: its session
    actor does not outlive the supervisor."""
    ctx = supervisor.start_context(session_id=SESSION)
    populate(ctx)
    old = ctx.backend
    assert isinstance(old, LocalState)
    try:
        with failpoints.enabled("migration.retire", failpoints.fail(StateError("injected"))):
            ctx.ensure_bridged()
        supervisor.stop()
        assert not old.alive, "the old session's actor outlived its supervisor"
    finally:
        old.cleanup()


def test_a_handle_kept_across_a_failed_retirement_is_closed(
    server: SessionStoreServer, supervisor: Supervisor
) -> None:
    """A handle kept from before the switch cannot follow the session; after a failed
    retirement it says SessionClosed at once (not applied), instead of reading the
    stale values or waiting 30 s for a migration that never settles."""
    ctx = supervisor.start_context(session_id=SESSION)
    populate(ctx)
    old = ctx.backend
    try:
        with failpoints.enabled("migration.retire", failpoints.fail(StateError("injected"))):
            ctx.ensure_bridged()
        assert ctx.set_variable("temperature", 1.5) == 4
        start = time.perf_counter()
        with pytest.raises(SessionClosed):
            old.get_variable("temperature")  # never the stale 1.0
        with pytest.raises(SessionClosed):
            old.set_variable("temperature", 0.1)
        elapsed = time.perf_counter() - start
        assert elapsed < 5, f"the kept handle took {elapsed:.1f} s to answer"
        assert ctx.get_variable("temperature") == 1.5  # its write went nowhere
    finally:
        old.cleanup()
    print(f"a handle kept across a failed retirement: SessionClosed in {elapsed * 1000:.1f} ms")


def test_a_copy_that_could_not_be_removed_stays_invisible_and_is_removed_next_time(
    server: SessionStoreServer, supervisor: Supervisor
) -> None:
    ctx = supervisor.start_context(session_id=SESSION)
    populate(ctx)
    before = _snapshot(ctx)
    attach_attempts: list[str] = []

    def verify_fails_after_a_peek() -> None:
        # Another handle tries to attach while the copy exists on the server.
        attach_attempts.append("visible" if _visible_on(server) else "not found")
        raise StateError("injected")

    with (
        failpoints.enabled("migration.verify", verify_fails_after_a_peek),
        failpoints.enabled("store.close", failpoints.fail(BridgeUnavailable("x"), times=1)),
        pytest.raises(StateError) as failed,
    ):
        ctx.ensure_bridged()
    assert failed.value.details["step"] == "verify"
    assert ctx.backend_info()["type"] == "local"
    held(server, SESSION)  # the copy is still held there (its close failed)...
    assert not _visible_on(server)  # ...and invisible: pending, never committed
    attach_attempts.append("visible" if _visible_on(server) else "not found")
    assert attach_attempts == ["not found", "not found"]
    assert ctx.set_variable("temperature", 1.5) == 4
    expected = _snapshot(ctx)

    ctx.ensure_bridged()  # removes the stale incarnation first, then switches
    assert ctx.backend_info()["type"] == "bridged"
    assert _snapshot(ctx) == expected
    assert expected[:1] != before[:1]  # the write after the failure was kept too
    assert _visible_on(server)
    print("faults injected: verify failed and the copy's close failed; next switch whole")


def test_the_first_switch_after_a_partition_heals_succeeds(server: SessionStoreServer) -> None:
    """The link freezes as the import's reply comes back (the copy is on the server,
    its answer lost) and stays frozen while the switch tries to remove the copy: the
    switch fails, local and whole. Once the link thaws, the very next switch removes
    the stale copy and succeeds (it used to fail once more, on the way the channel
    came back)."""
    from tcp_proxy import TcpProxy

    with (
        TcpProxy(server.address) as proxy,
        Supervisor.start(bridge_address=proxy.address, bridge_timeout=2.0) as supervisor,
    ):
        ctx = supervisor.start_context(session_id=SESSION)
        populate(ctx)
        before = _snapshot(ctx)

        def partition() -> None:
            proxy.freeze()
            raise BridgeUnavailable("the import's reply was lost in a partition")

        with (
            failpoints.enabled("migration.import_reply", partition),
            pytest.raises(StateError) as failed,
        ):
            ctx.ensure_bridged()
        assert failed.value.details["step"] == "import"
        held(server, SESSION)  # the copy is on the server: its removal met the partition
        assert not _visible_on(server)
        assert ctx.backend_info()["type"] == "local"
        assert _snapshot(ctx) == before
        proxy.thaw()
        ctx.ensure_bridged()  # the first attempt after the heal
        assert ctx.backend_info()["type"] == "bridged"
        assert _snapshot(ctx) == before
        assert _visible_on(server)
        ctx.stop()


def test_an_expired_owner_cannot_close_a_newcomers_session() -> None:
    now = [1000.0]
    clock: Callable[[], float] = lambda: now[0]  # noqa: E731 - a fake clock
    with serve(session_ttl=10, clock=clock) as server:
        first = BridgedState.init(session_id="reused", address=server.address)
        try:
            first.register_variable("mine", "integer", 1)
            now[0] += 11
            assert server.reap_expired() == ["reused"]
            second = BridgedState.init(session_id="reused", address=server.address)
            try:
                assert second.owner
                assert second.incarnation != first.incarnation
                second.register_variable("theirs", "integer", 2)
                with pytest.raises(SessionNotFound):
                    first.close_remote()  # names the old incarnation only
                first.cleanup()  # the old owner's cleanup leaves the newcomer alone
                with BridgedState.init(
                    session_id="reused", address=server.address, create=False
                ) as third:
                    assert [r["name"] for r in third.list_variables()] == ["theirs"]
                    assert third.get_variable("theirs") == 2
            finally:
                second.cleanup()
            assert not _visible_on(server, "reused")  # its own owner did close it
        finally:
            first.cleanup()


def test_an_expired_owner_cannot_write_into_a_newcomers_session() -> None:
    """Every write carries the handle's incarnation and is applied to that
    incarnation only: a handle whose session expired gets SessionNotFound, and the
    newcomer's session reusing the id is left alone."""
    now = [1000.0]
    with serve(session_ttl=10, clock=lambda: now[0]) as server:
        first = BridgedState.init(session_id="reused", address=server.address)
        second: BridgedState | None = None
        writes: list[Callable[[], object]] = [
            lambda: first.set_variable("v", 2),
            lambda: first.update_variables({"v": 3, "w": 4}),
            lambda: first.delete_variable("w"),
            lambda: first.register_variable("x", "integer", 5),
        ]
        try:
            first.register_variable("v", "integer", 1)
            now[0] += 11
            assert server.reap_expired() == ["reused"]
            second = BridgedState.init(session_id="reused", address=server.address)
            second.register_variable("v", "integer", 100)
            second.register_variable("w", "integer", 200)
            for write in writes:
                with pytest.raises(SessionNotFound):  # its session is gone
                    write()
            assert second.get_variables(["v", "w"]) == {"v": 100, "w": 200}
            assert [(r["name"], r["version"]) for r in second.list_variables()] == [
                ("v", 0),
                ("w", 0),
            ]
        finally:
            if second is not None:
                second.cleanup()
            first.cleanup()
    print(f"an expired owner's {len(writes)} writes: each SessionNotFound, the newcomer's intact")


@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
def test_a_handle_on_an_ended_session_cannot_read_a_newcomers_values(
    store: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """Every read carries the handle's incarnation too: a handle attached to a
    session that was closed gets SessionNotFound from each read, never the values of
    a newcomer's session with the same id."""
    url = {
        "memory": None,
        "sqlite": f"sqlite:{tmp_path / 'store.db'}",
        "redis": request.getfixturevalue("redis_url") if store == "redis" else None,
    }[store]
    sid = f"reused-{store}-{time.monotonic_ns()}"
    with serve(store=url) as server:
        owner = BridgedState.init(session_id=sid, address=server.address)
        attached = BridgedState.init(session_id=sid, address=server.address, create=False)
        newcomer: BridgedState | None = None
        reads: dict[str, Callable[[], object]] = {
            "get_variable": lambda: attached.get_variable("v"),
            "get_variables": lambda: attached.get_variables(["v"]),
            "get_record": lambda: attached.get_record("v"),
            "has_variable": lambda: attached.has_variable("v"),
            "list_variables": attached.list_variables,
            "export_state": attached.export_state,
            "digest": attached.digest,
            "session_info": attached.session_info,
            "heartbeat": attached.heartbeat,
        }
        try:
            owner.register_variable("v", "integer", 1)
            assert attached.get_variable("v") == 1
            owner.cleanup()  # the owner closes the session
            newcomer = BridgedState.init(session_id=sid, address=server.address)
            assert newcomer.incarnation != attached.incarnation
            newcomer.register_variable("v", "integer", 100)
            answered = {}
            for name, read in reads.items():
                try:
                    answered[name] = read()
                except SessionNotFound:
                    continue
            assert answered == {}, f"read the newcomer's session: {answered}"
            assert newcomer.get_variable("v") == 100
        finally:
            if newcomer is not None:
                newcomer.cleanup()
            attached.cleanup()
            owner.cleanup()
    print(f"{store}: {len(reads)} reads of an ended incarnation, each SessionNotFound")
