"""The SQLite store: the compliance kit over it, restarts, refused writes.

Every test runs a real server on a real file under ``tmp_path`` (the SIGKILL test,
for every durable store, is in ``test_store_restarts.py``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import REPO_ROOT, held, python_env
from test_history import check_history, run_handles

from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    OutcomeUnknown,
    SessionNotFound,
    StateError,
)
from dspex_actors.exports import columns_of
from dspex_actors.limits import Limits
from dspex_actors.messages import (
    DeleteVariable,
    GetVersioned,
    ImportState,
    RegisterVariable,
    SetVariable,
    UpdateVariables,
    WriteOperation,
)
from dspex_actors.stores import MemoryStore, SqliteStore, Store, open_store
from dspex_actors.supervision import Supervisor
from dspex_actors.testing import StateProviderContract

# -- the compliance kit -------------------------------------------------------------


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[SessionStoreServer]:
    with serve(store=f"sqlite:{tmp_path / 's.db'}") as server:
        yield server


class TestBridgedSqliteStore(StateProviderContract):
    """The whole contract, through BridgedState, against a server on a SQLite file."""

    provider = BridgedState

    @pytest.fixture
    def provider_options(self, sqlite_server: SessionStoreServer) -> dict[str, Any]:
        return {"address": sqlite_server.address}


# -- restarts -------------------------------------------------------------------------

VARIABLES: list[tuple[str, str, Any, dict[str, Any] | None]] = [
    ("temperature", "float", 0.7, {"min": 0.0, "max": 2.0}),
    ("max_tokens", "integer", 256, {"min": 1, "max": 4096}),
    ("style", "choice", "concise", {"choices": ["concise", "verbose"]}),
    ("module", "module", "ChainOfThought", {"allowed_modules": ["ChainOfThought", "Predict"]}),
    ("prompt", "string", "Answer briefly.", {"max_length": 100, "pattern": "^[A-Z]"}),
    ("enabled", "boolean", True, None),
    ("shots", "embedding", [0.25, -1.5, 3.0], {"dimensions": 3}),
    ("weights", "tensor", {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}, {"shape": [2, 2]}),
]


def _populate(state: BridgedState) -> None:
    """Every type, with constraints, metadata, updates, a batch and a deletion."""
    for name, type_name, value, constraints in VARIABLES:
        state.register_variable(
            name, type_name, value, constraints=constraints, metadata={"owner": name}
        )
    state.set_variable("temperature", 1.25, metadata={"tuned": True})
    state.set_variable("shots", [1, 2, 3])  # ints become floats, frozen as a tuple
    state.update_variables({"max_tokens": 512, "style": "verbose"}, metadata={"batch": 1})
    state.register_variable("scratch", "string", "gone soon")
    state.delete_variable("scratch")


def test_a_restart_keeps_every_session_as_it_was(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 's.db'}"
    with serve(store=spec) as server:
        tuned = BridgedState.init(address=server.address, session_id="tuned")
        _populate(tuned)
        imported = BridgedState.init(
            address=server.address,
            existing_state={**tuned.export_state(), "metadata": {"program": "rag"}},
        )
        imported.set_variable("temperature", 0.5)
        empty = BridgedState.init(
            address=server.address,
            existing_state={
                "session_id": "empty",
                "variables": {},
                "variable_index": {},
                "metadata": {"note": "no variables"},
            },
        )
        closed = BridgedState.init(address=server.address)
        closed.register_variable("x", "integer", 1)
        closed.cleanup()  # the owner closes it: it must not come back
        handles = (tuned, imported, empty)
        before = {h.session_id: (h.export_state(), h.session_info()) for h in handles}
    # The server stopped first: the owners' handles are still open, their sessions kept.
    with serve(store=spec) as server:
        for handle in handles:
            with BridgedState.init(
                address=server.address, session_id=handle.session_id, create=False
            ) as again:
                exported, info = before[handle.session_id]
                assert again.export_state() == exported
                now = again.session_info()
                for key in ("incarnation", "created_at", "metadata", "next_sequence"):
                    assert now[key] == info[key], key
                assert now["variable_count"] == info["variable_count"]
        with pytest.raises(SessionNotFound):
            BridgedState.init(address=server.address, session_id=closed.session_id, create=False)
        # Versions go on where they were; each incarnation closes as it was.
        for handle in handles:
            with BridgedState.init(
                address=server.address, session_id=handle.session_id, create=False
            ) as again:
                if handle is tuned:
                    assert again.set_variable("temperature", 0.1) == 2
                assert again.incarnation == handle.incarnation
                again.close_remote()
    for handle in (*handles, closed):
        handle.cleanup()  # their server is gone: only their channels are released
    with serve(store=spec) as server:
        for handle in handles:
            with pytest.raises(SessionNotFound):
                BridgedState.init(
                    address=server.address, session_id=handle.session_id, create=False
                )


def test_a_pending_session_is_loaded_pending_and_can_be_committed(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")

    async def create() -> str:
        store = SqliteStore(path)
        try:
            opened = await store.open("copy", create=True, metadata=None, pending=True)
            return opened.incarnation
        finally:
            await store.aclose()

    async def commit(incarnation: str) -> None:
        store = SqliteStore(path)
        try:
            with pytest.raises(SessionNotFound):  # pending: invisible to others
                await store.open("copy", create=False, metadata=None)
            await store.commit("copy", incarnation)
            await store.open("copy", create=False, metadata=None)
        finally:
            await store.aclose()

    async def visible() -> None:
        store = SqliteStore(path)
        try:
            assert (await store.info("copy")).incarnation == incarnation
        finally:
            await store.aclose()

    incarnation = asyncio.run(create())
    asyncio.run(commit(incarnation))
    asyncio.run(visible())


def test_a_session_migrated_into_the_store_survives_a_restart(tmp_path: Path) -> None:
    """The Supervisor's switch (a pending copy, imported, verified, committed) lands
    in the file with the event count it continued from."""
    spec = f"sqlite:{tmp_path / 's.db'}"
    with serve(store=spec) as server, Supervisor.start(bridge_address=server.address) as sup:
        ctx = sup.start_context()
        ctx.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        ctx.set_variable("temperature", 0.9, {"source": "tuner"})
        ctx.ensure_bridged()
        before = ctx.export_state()
        with BridgedState.init(
            address=server.address, session_id=ctx.session_id, create=False
        ) as peer:
            info = peer.session_info()
        assert info["next_sequence"] == 3  # registered, updated: the count went on
        session_id = ctx.session_id
        server.stop()  # before the context closes its session
    with (
        serve(store=spec) as server,
        BridgedState.init(address=server.address, session_id=session_id, create=False) as again,
    ):
        assert again.export_state() == before
        assert again.session_info()["next_sequence"] == info["next_sequence"]


def test_a_session_the_limits_no_longer_admit_stops_the_start(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 's.db'}"
    with serve(store=spec) as server:
        state = BridgedState.init(address=server.address, session_id="big")
        state.register_variable("text", "string", "x" * 1000)
    state.cleanup()
    with pytest.raises(InvalidExport, match="'big' cannot be loaded"):
        open_store(spec, limits=Limits(max_value_bytes=100))
    with (  # the file was left as it was
        serve(store=spec) as server,
        BridgedState.init(address=server.address, session_id="big", create=False) as again,
    ):
        assert again.get_variable("text") == "x" * 1000


def test_expired_sessions_are_gone_after_a_restart(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 's.db'}"
    now = [0.0]
    with serve(store=spec, session_ttl=10.0, clock=lambda: now[0]) as server:
        idle = BridgedState.init(address=server.address, session_id="idle")
        idle.register_variable("a", "integer", 1)
        now[0] = 20.0
        assert server.reap_expired() == ["idle"]
    idle.cleanup()
    with serve(store=spec) as server, pytest.raises(SessionNotFound):
        BridgedState.init(address=server.address, session_id="idle", create=False)


def test_a_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    spec = f"sqlite:{tmp_path / 's.db'}"
    with serve(store=spec), pytest.raises(OSError, match="in use by another store"):
        serve(store=spec)
    with serve(store=spec):  # the first let go of it
        pass


def test_an_emptied_file_is_said_to_start_a_new_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file of 0 bytes (truncated, or made by ``touch``) is a new database to SQLite:
    the store starts on it, and says so, where a new path is created without a word."""
    emptied, new = tmp_path / "emptied.db", tmp_path / "new.db"
    emptied.touch()
    with caplog.at_level("WARNING", logger="dspex_actors.stores.sqlite_file"):
        with serve(store=f"sqlite:{new}"):
            pass
        assert caplog.records == []
        with (
            serve(store=f"sqlite:{emptied}") as server,
            BridgedState.init(address=server.address) as state,
        ):
            state.register_variable("x", "integer", 1)
    assert [r.getMessage() for r in caplog.records] == [
        f"the sqlite store {str(emptied)!r} is an empty file (0 bytes): starting a new "
        "store in it; any sessions it held before it was emptied are gone"
    ]


# -- writes the file refuses ------------------------------------------------------------


def test_a_write_the_file_refuses_changes_nothing(tmp_path: Path) -> None:
    """Another connection holds the file's write lock: every write is refused (the
    server answers BridgeUnavailable, not applied; a client whose deadline passed
    while it retried may only know OutcomeUnknown) and nothing changes, here or
    after a restart."""
    path = tmp_path / "s.db"
    state: BridgedState | None = None
    try:
        # busy_timeout 0: refused at once, so each try ends well within the deadline.
        with serve(store=SqliteStore(str(path), busy_timeout=0.0)) as server:
            state = BridgedState.init(address=server.address, session_id="s", timeout=0.3)
            state.register_variable("a", "integer", 1)
            state.register_variable("b", "string", "keep")
            before = state.export_state()
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # held: the server's journal cannot write
            try:
                for write in (
                    lambda: state.set_variable("a", 2),
                    lambda: state.update_variables({"a": 3, "b": "lost"}),
                    lambda: state.register_variable("c", "integer", 0),
                    lambda: state.delete_variable("b"),
                    lambda: state.import_state(
                        {"session_id": "s", "variables": {}, "variable_index": {}, "metadata": {}}
                    ),
                ):
                    # The server answers "not applied"; a client whose deadline passed
                    # during its last retry can only say OutcomeUnknown.
                    with pytest.raises((BridgeUnavailable, OutcomeUnknown)) as refused:
                        write()
                    if isinstance(refused.value, BridgeUnavailable):
                        assert "could not record it" in str(refused.value)
                    assert state.export_state() == before
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert state.set_variable("a", 4) == 1  # the file takes writes again
            after = state.export_state()
        with (
            serve(store=f"sqlite:{path}") as server,
            BridgedState.init(address=server.address, session_id="s", create=False) as again,
        ):
            assert again.export_state() == after
            assert again.get_variable("b") == "keep"
    finally:
        if state is not None:
            state.cleanup()


def test_every_kind_of_write_the_file_refuses_changes_nothing(tmp_path: Path) -> None:
    """Straight to the store (no client retries): each write is answered
    BridgeUnavailable, naming the file, and the session is as it was."""
    path = tmp_path / "s.db"
    exported = {
        "session_id": "s",
        "variables": {},
        "variable_index": {},
        "metadata": {"from": "import"},
    }
    writes: list[WriteOperation[Any]] = [
        RegisterVariable("c", "integer", 0, None, None, None),
        SetVariable("a", 2, None, None),
        SetVariable("a", 2, {"tag": 1}, 0),
        UpdateVariables({"a": 3, "b": "lost"}, None),
        DeleteVariable("b"),
        ImportState(columns_of(exported)),
    ]

    async def scenario() -> None:
        store = SqliteStore(str(path), busy_timeout=0.0)
        try:
            await store.open("s", create=True, metadata={"kept": True})
            state = held(store, "s")
            state.register_variable("a", "integer", 1)
            state.register_variable("b", "string", "keep")
            before = state.export_state()
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # held: the journal cannot write
            try:
                for write in writes:
                    with pytest.raises(BridgeUnavailable, match=r"s\.db.*could not record it"):
                        await store.run("s", write, request_id=None, deadline=None)
                    assert state.export_state() == before, write
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
        finally:
            await store.aclose()
        reopened = SqliteStore(str(path))
        try:
            await reopened.open("s", create=False, metadata=None)
            assert held(reopened, "s").export_state() == before
        finally:
            await reopened.aclose()

    asyncio.run(scenario())


def test_a_refused_write_retried_with_its_request_id_is_applied_once(tmp_path: Path) -> None:
    """A refusal is "not applied", so it is not remembered as the request's answer."""
    path = tmp_path / "s.db"

    async def scenario() -> None:
        store = SqliteStore(str(path), busy_timeout=0.0)
        try:
            await store.open("s", create=True, metadata=None)
            held(store, "s").register_variable("a", "integer", 1)
            write = SetVariable("a", 2, None, None)
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                with pytest.raises(BridgeUnavailable):
                    await store.run("s", write, request_id="r1", deadline=None)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert await store.run("s", write, request_id="r1", deadline=None) == 1
            assert await store.run("s", write, request_id="r1", deadline=None) == 1  # deduped
            assert await store.run("s", GetVersioned("a"), request_id=None, deadline=None) == (
                2,
                1,
            )
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_a_closed_file_refuses_writes_as_not_applied(tmp_path: Path) -> None:
    """Writes that reach a session after its store closed the file are refused
    with a StateError (the journal's answer), and the table keeps its value."""
    path = str(tmp_path / "s.db")

    async def scenario() -> None:
        store = SqliteStore(path)
        await store.open("s", create=True, metadata=None)
        state = held(store, "s")
        state.register_variable("a", "integer", 1)
        store._db.close()  # what a failed disk leaves: no connection to write on
        try:
            with pytest.raises(StateError, match="could not record it"):
                state.set_variable("a", 2)
            assert await store.run("s", GetVersioned("a"), request_id=None, deadline=None) == (
                1,
                0,
            )
            with pytest.raises(BridgeUnavailable):
                await store.run(
                    "s", SetVariable("a", 3, None, None), request_id="r", deadline=None
                )
        finally:
            await store.aclose()

    asyncio.run(scenario())


# -- specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("sqlite:", ValueError),
        ("sqlite:x.db?synchronous=off", ValueError),
        ("mongodb://localhost", ValueError),
    ],
)
def test_open_store_refuses_what_it_cannot_open(spec: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        open_store(spec)


def test_open_store_builds_each_kind(tmp_path: Path) -> None:
    async def kinds() -> list[str]:
        stores: list[Store] = [
            open_store("memory"),
            open_store(f"sqlite:{tmp_path / 'a.db'}"),
            open_store(f"sqlite:{tmp_path / 'b.db'}?synchronous=full"),
        ]
        for store in stores:
            await store.aclose()
        return [store.kind for store in stores]

    assert asyncio.run(kinds()) == ["memory", "sqlite", "sqlite"]


def test_the_command_line_refuses_an_unknown_store() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dspex_actors", "serve", "--listen", "127.0.0.1:0", "--store", "x"],
        capture_output=True,
        check=False,
        text=True,
        env=python_env(),
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert done.returncode == 1
    assert "unknown store 'x'" in done.stderr


# -- a figure, not an assert ------------------------------------------------------------


def test_prints_set_variable_cost_on_each_store(tmp_path: Path) -> None:
    """set_variable through each store's ``run`` (no gRPC), for the record."""
    rounds = 500

    async def cost(store: MemoryStore) -> float:
        try:
            await store.open("s", create=True, metadata=None)
            held(store, "s").register_variable("t", "float", 0.0)
            started = time.perf_counter()
            for i in range(rounds):
                await store.run(
                    "s", SetVariable("t", i / rounds, None, None), request_id=None, deadline=None
                )
            return (time.perf_counter() - started) / rounds
        finally:
            await store.aclose()

    figures = {
        "memory": asyncio.run(cost(MemoryStore())),
        "sqlite (normal)": asyncio.run(cost(SqliteStore(str(tmp_path / "n.db")))),
        "sqlite (full)": asyncio.run(
            cost(SqliteStore(str(tmp_path / "f.db"), synchronous="full"))
        ),
    }
    print()
    for name, seconds in figures.items():
        print(f"set_variable on {name}: {seconds * 1e6:.1f} us")


def test_history_on_a_sqlite_server_is_linearizable(tmp_path: Path) -> None:
    """The history checker's workload, eight handles on a server journaling to a file."""
    with serve(store=f"sqlite:{tmp_path / 's.db'}") as server:
        ops, version, value = run_handles([server.address], "history")
    print(f"sqlite store: {len(ops)} operations checked")
    assert check_history(ops, version, value) == []
