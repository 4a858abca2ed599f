"""SessionActor, SessionTable and LocalState internals: crashes, restarts, the seqlock.

The compliance kit proves the contract; these tests look behind it: what happens when
the session actor dies, how the table outlives it, and when reads go through the actor.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from dspex_actors import (
    InvalidExport,
    LocalState,
    SessionClosed,
    StateError,
    ValidationError,
    VariableExists,
    VariableNotFound,
)
from dspex_actors.actor import SEALED, SessionActor
from dspex_actors.exports import RECORD_KEYS
from dspex_actors.messages import Close, Crash, GetVariable, RegisterVariable, SetVariable
from dspex_actors.session import CLOSED, SessionTable, new_session_id

WAIT = 10.0  # upper bound for waiting on an actor thread; never reached when all is well
SESSION = "sess_test_session"


class ExitLog:
    """An ``on_exit`` hook that records its calls; ``wait(n)`` blocks until the n-th."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseException | None]] = []
        self._events = [threading.Event() for _ in range(8)]
        self._lock = threading.Lock()

    def __call__(self, session_id: str, error: BaseException | None) -> None:
        with self._lock:
            self.calls.append((session_id, error))
            self._events[len(self.calls) - 1].set()

    def wait(self, count: int) -> list[tuple[str, BaseException | None]]:
        assert self._events[count - 1].wait(WAIT), f"on_exit call #{count} never came"
        with self._lock:
            return list(self.calls)


@pytest.fixture
def exits() -> ExitLog:
    return ExitLog()


@pytest.fixture
def state(exits: ExitLog) -> Iterator[LocalState]:
    provider = LocalState.init(session_id=SESSION, on_exit=exits)
    try:
        yield provider
    finally:
        provider.cleanup()


@pytest.fixture
def asks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The operations LocalState sends to its actor (reads should send none)."""
    sent: list[str] = []
    original = LocalState._ask

    def spy(self: LocalState, message: Any) -> Any:
        sent.append(type(message).__name__)
        return original(self, message)

    monkeypatch.setattr(LocalState, "_ask", spy)
    return sent


def populate(state: LocalState) -> dict[str, str]:
    """A few variables of several types, some written more than once; name -> id."""
    ids = {
        "temperature": state.register_variable(
            "temperature", "float", 0.7, constraints={"min": 0, "max": 2}
        ),
        "max_tokens": state.register_variable("max_tokens", "integer", 256),
        "style": state.register_variable(
            "style",
            "string",
            "concise",
            constraints={"enum": ["concise", "detailed"]},
            metadata={"owner": "me", "tags": ["a", "b"]},
            description="answer style",
        ),
        "emb": state.register_variable("emb", "embedding", [1, 2, 3]),
        "weights": state.register_variable(
            "weights", "tensor", {"shape": [2, 2], "data": [1, 2, 3, 4]}
        ),
    }
    state.set_variable("temperature", 0.9)
    state.set_variable("max_tokens", 512, {"note": "raised"})
    state.update_variables({"temperature": 1.1, "emb": [4, 5, 6]})
    return ids


def table_of(state: LocalState) -> SessionTable:
    table = state._table
    assert isinstance(table, SessionTable)
    return table


def crash(state: LocalState, exits: ExitLog, reason: str = "boom") -> BaseException:
    """Make the session actor fail on purpose and wait until it has stopped."""
    already = len(exits.calls)
    state.actor_ref.tell(Crash(reason))
    session_id, error = exits.wait(already + 1)[already]
    assert session_id == state.session_id
    assert isinstance(error, RuntimeError)
    assert not state.actor_ref.is_alive()
    return error


WRITES: list[tuple[str, Callable[[LocalState], Any]]] = [
    ("register", lambda s: s.register_variable("new", "integer", 1)),
    ("set", lambda s: s.set_variable("max_tokens", 1)),
    ("update", lambda s: s.update_variables({"max_tokens": 2})),
    ("delete", lambda s: s.delete_variable("max_tokens")),
    (
        "import",
        lambda s: s.import_state({"session_id": "x", "variables": {}, "variable_index": {}}),
    ),
]

READS: list[tuple[str, Callable[[LocalState], Any]]] = [
    ("get", lambda s: s.get_variable("max_tokens")),
    ("get_many", lambda s: s.get_variables(["max_tokens", "emb"])),
    ("list", lambda s: s.list_variables()),
    ("export", lambda s: s.export_state()),
]


def _raises_closed(
    calls: list[tuple[str, Callable[[LocalState], Any]]], state: LocalState
) -> None:
    for what, call in calls:
        try:
            call(state)
        except SessionClosed:
            continue
        pytest.fail(f"{what} did not raise SessionClosed")


def assert_writes_closed(state: LocalState) -> None:
    _raises_closed(WRITES, state)


def assert_reads_closed(state: LocalState) -> None:
    _raises_closed(READS, state)


# -- a crashed or stopped actor ---------------------------------------------------------


def test_crash_by_ask_stops_the_actor(state: LocalState, exits: ExitLog) -> None:
    """The documented way to fail on purpose: an ask whose handler raises a non-StateError.

    SessionActor's docstring: any other exception is a bug; the caller hears of it as
    a StateError, and the actor stops.
    """
    populate(state)
    answer = state.actor_ref.ask(Crash("boom"))
    assert isinstance(answer, StateError)
    assert isinstance(answer.__cause__, RuntimeError)
    assert "crashed handling Crash" in str(answer)
    assert not state.alive, "the handle still thinks the actor serves"
    session_id, error = exits.wait(1)[0]
    assert not state.actor_ref.is_alive(), "the actor survived a crash"
    assert session_id == SESSION
    assert isinstance(error, RuntimeError)
    assert str(error) == "boom"
    with pytest.raises(SessionClosed):
        state.set_variable("max_tokens", 1)


def test_a_crash_is_logged_once_as_an_error_naming_the_session(
    state: LocalState, exits: ExitLog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert isinstance(state.actor_ref.ask(Crash("boom")), StateError)
    exits.wait(1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"session {SESSION}: actor crashed: RuntimeError('boom')"
    ]
    assert errors[0].exc_info is not None


def test_crashed_actor_makes_writes_raise_session_closed(
    state: LocalState, exits: ExitLog
) -> None:
    populate(state)
    assert state.alive
    crash(state, exits)
    assert not state.alive
    assert_writes_closed(state)
    with pytest.raises(SessionClosed, match="not running"):
        state.set_variable("max_tokens", 1)
    # Nothing was written by the failed calls.
    assert state.get_variable("max_tokens") == 512
    assert "new" not in state.export_state()["variable_index"]


def test_cleanly_stopped_actor_makes_writes_raise_session_closed(
    state: LocalState, exits: ExitLog
) -> None:
    populate(state)
    state.actor_ref.stop()
    assert exits.wait(1) == [(SESSION, None)]
    assert not state.alive
    assert_writes_closed(state)
    state.restart()
    assert state.alive
    assert state.set_variable("max_tokens", 7) == 2


def test_restart_brings_a_new_actor_on_the_same_table(state: LocalState, exits: ExitLog) -> None:
    ids = populate(state)
    before = state.export_state()
    listed = state.list_variables()
    old_ref = state.actor_ref
    old_table = table_of(state)
    crash(state, exits)
    state.restart()
    assert state.alive
    assert state.actor_ref is not old_ref
    assert table_of(state) is old_table
    # Every variable, version, id and timestamp survived.
    assert state.export_state() == before
    assert state.list_variables() == listed
    assert {name: state.export_state()["variable_index"][name] for name in ids} == ids
    # The new actor writes on from the surviving versions.
    assert state.set_variable("max_tokens", 1024) == 2
    assert state.set_variable(ids["temperature"], 0.1, expected_version=2) == 3
    assert state.get_variable("max_tokens") == 1024
    with pytest.raises(ValidationError):
        state.set_variable("temperature", 5.0)  # constraints survived too


def test_restart_of_a_live_actor_is_a_no_op(state: LocalState, exits: ExitLog) -> None:
    ref = state.actor_ref
    state.restart()
    assert state.actor_ref is ref
    assert state.alive
    assert exits.calls == []


def test_a_second_crash_and_restart_cycle_works(state: LocalState, exits: ExitLog) -> None:
    populate(state)
    first = crash(state, exits, "first")
    state.restart()
    assert state.set_variable("max_tokens", 1) == 2
    second = crash(state, exits, "second")
    assert_writes_closed(state)
    state.restart()
    assert state.alive
    assert state.get_variable("max_tokens") == 1
    assert state.set_variable("max_tokens", 2) == 3
    assert [str(first), str(second)] == ["first", "second"]
    state.cleanup()
    assert exits.calls == [(SESSION, first), (SESSION, second)]  # cleanup is no death


# -- the on_exit hook -------------------------------------------------------------------


def test_on_exit_is_silent_for_a_stop_the_handle_asked_for(
    state: LocalState, exits: ExitLog
) -> None:
    """Cleanup (and retire) stop the actor on purpose: nothing to restart, no report."""
    state.register_variable("x", "integer", 1)
    state.cleanup()
    assert not state.actor_ref.is_alive()
    assert exits.calls == []


def test_on_exit_hears_an_unasked_stop_with_none(state: LocalState, exits: ExitLog) -> None:
    state.register_variable("x", "integer", 1)
    state.actor_ref.stop()
    assert exits.wait(1) == [(SESSION, None)]


def test_on_exit_hears_a_crash_with_the_exception(state: LocalState, exits: ExitLog) -> None:
    error = crash(state, exits, "kaboom")
    assert str(error) == "kaboom"
    assert exits.calls == [(SESSION, error)]
    state.cleanup()
    # Cleaning up a dead actor does not report a second exit.
    assert exits.calls == [(SESSION, error)]


def test_on_exit_is_optional() -> None:
    provider = LocalState.init()
    try:
        provider.actor_ref.tell(Crash("no hook"))
        # Without a hook, wait for the actor thread through pykka's stop future.
        assert provider.actor_ref.actor_stopped.wait(WAIT)
        assert not provider.alive
        provider.restart()
        assert provider.alive
    finally:
        provider.cleanup()
    assert not provider.alive


# -- cleanup -----------------------------------------------------------------------------


def test_cleanup_after_a_crash_works_and_is_idempotent(state: LocalState, exits: ExitLog) -> None:
    populate(state)
    crash(state, exits)
    state.cleanup()
    state.cleanup()
    assert not state.alive
    assert table_of(state).closed
    assert_writes_closed(state)
    assert_reads_closed(state)
    with pytest.raises(SessionClosed):
        state.restart()
    assert len(exits.calls) == 1


def test_restart_after_cleanup_raises_session_closed(state: LocalState) -> None:
    populate(state)
    state.cleanup()
    with pytest.raises(SessionClosed, match="closed"):
        state.restart()
    assert not state.alive
    assert not state.actor_ref.is_alive()


def test_closed_table_makes_every_read_raise_session_closed(state: LocalState) -> None:
    ids = populate(state)
    state.cleanup()
    table = table_of(state)
    assert table.seq == CLOSED
    assert table.closed
    assert_reads_closed(state)
    with pytest.raises(SessionClosed):
        state.get_variable(ids["emb"])
    with pytest.raises(SessionClosed):
        state.get_variable("never-existed")
    assert "closed" in repr(state)


# -- reads from the table and the seqlock fallback --------------------------------------


def test_readers_keep_reading_the_table_after_the_actor_died(
    state: LocalState, exits: ExitLog, asks: list[str]
) -> None:
    ids = populate(state)
    before = state.export_state()
    crash(state, exits)
    asks.clear()
    assert state.get_variable("max_tokens") == 512
    assert state.get_variable(ids["emb"]) == [4.0, 5.0, 6.0]
    assert state.get_variables(["temperature", "weights", "nope"]) == {
        "temperature": 1.1,
        "weights": {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]},
    }
    assert [r["name"] for r in state.list_variables()] == list(ids)
    assert state.export_state() == before
    with pytest.raises(VariableNotFound):
        state.get_variable("nope")
    assert asks == []  # all from the table: the dead actor was never asked


def test_reads_are_served_from_the_table_without_asking(
    state: LocalState, asks: list[str]
) -> None:
    populate(state)
    asks.clear()
    for _, read in READS:
        read(state)
    assert asks == []


def test_reads_go_through_the_actor_while_a_batch_is_being_applied(
    state: LocalState, asks: list[str]
) -> None:
    ids = populate(state)
    expected_export = state.export_state()
    expected_list = state.list_variables()
    table = table_of(state)
    seq = table.seq
    assert seq % 2 == 0
    asks.clear()
    table.seq = seq + 1  # what the actor does while it applies a batch
    try:
        assert state.get_variable("max_tokens") == 512
        assert state.get_variable(ids["temperature"]) == 1.1
        assert state.get_variable("emb") == [4.0, 5.0, 6.0]
        assert state.get_variables(["max_tokens", "style", "missing"]) == {
            "max_tokens": 512,
            "style": "concise",
        }
        assert state.list_variables() == expected_list
        assert state.export_state() == expected_export
        with pytest.raises(VariableNotFound):
            state.get_variable("missing")
        assert asks == [
            "GetVariable",
            "GetVariable",
            "GetVariable",
            "GetVariables",
            "ListVariables",
            "ExportState",
            "GetVariable",
        ]
    finally:
        table.seq = seq
    asks.clear()
    assert state.get_variable("max_tokens") == 512
    assert asks == []  # even again: back to the fast path


def test_reads_during_a_batch_of_a_dead_actor_raise_session_closed(
    state: LocalState, exits: ExitLog
) -> None:
    populate(state)
    crash(state, exits)
    table = table_of(state)
    table.seq += 1  # the actor died half way through a batch
    assert_reads_closed(state)
    # A new actor on the table evens the counter, so readers trust it again.
    state.restart()
    assert table.seq % 2 == 0
    assert state.get_variable("max_tokens") == 512


def test_a_write_publishes_inside_one_seqlock_window(state: LocalState) -> None:
    table = table_of(state)
    start = table.seq
    state.register_variable("x", "integer", 1)
    assert table.seq == start + 2
    state.update_variables({"x": 2})
    assert table.seq == start + 4
    with pytest.raises(ValidationError):
        state.set_variable("x", "not an int")
    assert table.seq == start + 4  # a rejected write does not touch the table


# -- returned values are copies -----------------------------------------------------------


def test_returned_embedding_and_tensor_are_copies(state: LocalState) -> None:
    populate(state)
    emb = state.get_variable("emb")
    emb[0] = 99.0
    emb.append(7.0)
    weights = state.get_variable("weights")
    weights["data"][0] = 99.0
    weights["shape"].append(1)
    weights["extra"] = True
    many = state.get_variables(["emb", "weights"])
    many["emb"].clear()
    many["weights"]["data"].clear()
    assert state.get_variable("emb") == [4.0, 5.0, 6.0]
    assert state.get_variable("weights") == {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}
    assert state.get_variables(["emb"]) == {"emb": [4.0, 5.0, 6.0]}


def test_records_and_exports_are_copies(state: LocalState) -> None:
    populate(state)
    before = copy.deepcopy(state.export_state())
    records = {r["name"]: r for r in state.list_variables()}
    records["style"]["metadata"]["tags"].append("c")
    records["style"]["metadata"]["owner"] = "someone else"
    records["style"]["constraints"]["enum"].append("verbose")
    records["emb"]["value"].append(1.0)
    records["weights"]["value"]["data"][0] = -1.0
    records["max_tokens"]["version"] = 100
    exported = state.export_state()
    exported["variables"][records["style"]["id"]]["metadata"]["owner"] = "x"
    exported["variable_index"]["ghost"] = "var_ghost"
    exported["metadata"]["k"] = "v"
    assert state.export_state() == before
    with pytest.raises(ValidationError):
        state.set_variable("style", "verbose")  # the stored enum is untouched


def test_values_given_are_copied_in(state: LocalState) -> None:
    embedding = [1.0, 2.0]
    tensor: dict[str, Any] = {"shape": [2], "data": [1.0, 2.0]}
    metadata: dict[str, Any] = {"tags": ["a"]}
    state.register_variable("e", "embedding", embedding, metadata=metadata)
    state.register_variable("t", "tensor", tensor)
    embedding.append(3.0)
    tensor["data"][0] = 9.0
    metadata["tags"].append("b")
    assert state.get_variable("e") == [1.0, 2.0]
    assert state.get_variable("t") == {"shape": [2], "data": [1.0, 2.0]}
    assert state.list_variables()[0]["metadata"] == {"tags": ["a"]}


# -- export and import ---------------------------------------------------------------------


def test_export_import_round_trip_keeps_everything_exactly(state: LocalState) -> None:
    populate(state)
    exported = state.export_state()
    copy_of = LocalState.init(existing_state=exported)
    try:
        assert copy_of.session_id != state.session_id
        again = copy_of.export_state()
        assert again["variables"] == exported["variables"]
        assert again["variable_index"] == exported["variable_index"]
        for var_id, record in exported["variables"].items():
            imported = again["variables"][var_id]
            for key in ("created_at", "last_updated_at"):
                assert type(imported[key]) is float
                assert imported[key] == record[key]  # exact, not approximately
            assert imported["version"] == record["version"]
        assert copy_of.list_variables() == state.list_variables()
        # The imported session writes on from the imported versions.
        assert copy_of.set_variable("max_tokens", 1) == 2
    finally:
        copy_of.cleanup()


def test_import_rejects_an_id_that_is_another_variables_name(state: LocalState) -> None:
    ids = populate(state)
    before = state.export_state()
    source = LocalState.init()
    try:
        source.register_variable("a", "integer", 1)
        source.register_variable("b", "integer", 2)
        exported = source.export_state()
    finally:
        source.cleanup()
    # Give "b" the id "a": an id equal to another variable's name.
    b_id = exported["variable_index"]["b"]
    record_b = exported["variables"].pop(b_id)
    record_b["id"] = "a"
    exported["variables"]["a"] = record_b
    exported["variable_index"]["b"] = "a"
    with pytest.raises(InvalidExport, match="id that is also a variable name"):
        state.import_state(exported)
    assert state.export_state() == before
    assert set(state.export_state()["variable_index"]) == set(ids)


def test_import_rejects_an_id_that_is_an_existing_variables_name(state: LocalState) -> None:
    populate(state)
    before = state.export_state()
    source = LocalState.init()
    try:
        source.register_variable("fresh", "integer", 1)
        source.register_variable("other", "integer", 2)
        exported = source.export_state()
    finally:
        source.cleanup()
    fresh_id = exported["variable_index"]["fresh"]
    record = exported["variables"].pop(fresh_id)
    record["id"] = "max_tokens"  # the name of a variable the session already holds
    exported["variables"]["max_tokens"] = record
    exported["variable_index"]["fresh"] = "max_tokens"
    with pytest.raises(VariableExists) as info:
        state.import_state(exported)
    assert info.value.variable == "max_tokens"
    assert state.export_state() == before  # "other" was not imported either


def test_import_rejects_a_name_that_is_an_existing_variables_id(state: LocalState) -> None:
    ids = populate(state)
    before = state.export_state()
    source = LocalState.init()
    try:
        source.register_variable(ids["emb"], "integer", 1)
        exported = source.export_state()
    finally:
        source.cleanup()
    with pytest.raises(VariableExists) as info:
        state.import_state(exported)
    assert info.value.variable == ids["emb"]
    assert state.export_state() == before


def test_init_with_a_bad_export_raises_and_leaves_nothing_running() -> None:
    # The autouse fixture fails this test if the half-made session's actor survives.
    with pytest.raises(InvalidExport):
        LocalState.init(existing_state={"session_id": "s", "variables": {}})
    source = LocalState.init()
    try:
        source.register_variable("x", "integer", 1)
        exported = source.export_state()
    finally:
        source.cleanup()
    (record,) = exported["variables"].values()
    record["value"] = "not an int"
    with pytest.raises(ValidationError) as info:
        LocalState.init(existing_state=exported)
    assert info.value.rule == "type"


# -- LocalState.init arguments ------------------------------------------------------------


def test_init_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="bogus"):
        LocalState.init(bogus=1)
    with pytest.raises(TypeError, match="persist"):
        LocalState.init(session_id="s", persist=True)


@pytest.mark.parametrize("session_id", ["", 123, b"sess", ["s"], 1.5, "s" * 257, "bad\ud800id"])
def test_init_rejects_a_bad_session_id(session_id: Any) -> None:
    """The bridge's rule, locally too: every local session id can cross the wire."""
    with pytest.raises(ValidationError, match="session_id") as info:
        LocalState.init(session_id=session_id)
    assert info.value.rule == "session_id"


def test_init_keeps_a_given_session_id_and_generates_unguessable_ones() -> None:
    given = LocalState.init(session_id="my-session")
    generated = [LocalState.init() for _ in range(2)]
    try:
        assert given.session_id == "my-session"
        for provider in generated:
            assert re.fullmatch(r"sess_[0-9a-f]{32}", provider.session_id)
        assert generated[0].session_id != generated[1].session_id
    finally:
        for provider in [given, *generated]:
            provider.cleanup()


def test_two_handles_with_the_same_session_id_are_independent() -> None:
    first = LocalState.init(session_id="shared")
    second = LocalState.init(session_id="shared")
    try:
        first.register_variable("x", "integer", 1)
        assert second.list_variables() == []
        second.register_variable("x", "integer", 2)
        first.cleanup()
        assert second.get_variable("x") == 2
    finally:
        first.cleanup()
        second.cleanup()


# -- SessionTable and SessionActor directly ------------------------------------------------


def test_new_table_is_empty_and_open() -> None:
    table = SessionTable("sess_x")
    assert (table.session_id, table.seq, table.closed) == ("sess_x", 0, False)
    assert table.export() == {
        "session_id": "sess_x",
        "variables": {},
        "variable_index": {},
        "metadata": {},
    }
    table.seq = CLOSED
    assert table.closed


@pytest.mark.parametrize("identifier", ["missing", 5, None, ("t",)])
def test_table_lookup_of_a_missing_variable(identifier: Any) -> None:
    table = SessionTable("sess_x")
    with pytest.raises(VariableNotFound) as info:
        table.lookup(identifier)
    assert "sess_x" in str(info.value)
    expected = identifier if isinstance(identifier, str) else repr(identifier)
    assert info.value.variable == expected


def test_ids_are_unguessable_hex() -> None:
    assert re.fullmatch(r"sess_[0-9a-f]{32}", new_session_id())
    assert new_session_id() != new_session_id()


def test_actor_on_a_bare_table() -> None:
    table = SessionTable("sess_direct")
    ref = SessionActor.start(table)
    try:
        var_id = ref.ask(RegisterVariable("x", "integer", 1, None, None, "about x"))
        assert isinstance(var_id, str)
        assert re.fullmatch(r"var_[0-9a-f]{32}", var_id)
        record = table.lookup("x")
        assert table.lookup(var_id) is record
        identifiers: list[Any] = ["x", var_id, "nope", 3]
        assert table.values(identifiers) == {"x": 1, var_id: 1}
        as_dict = record.to_dict()
        assert tuple(as_dict) == RECORD_KEYS
        assert as_dict["metadata"] == {"description": "about x"}
        assert as_dict["created_at"] == as_dict["last_updated_at"]
        # Rule breaks are answered, not raised, so the actor keeps running.
        answer = ref.ask(SetVariable("x", "one", None, None))
        assert isinstance(answer, ValidationError)
        missing = ref.ask(GetVariable("nope"))
        assert isinstance(missing, VariableNotFound)
        assert ref.is_alive()
        assert ref.ask(SetVariable("x", 2, None, 0)) == 1
        assert table.lookup("x").version == 1
    finally:
        ref.stop()
    assert table.lookup("x").value == 2  # the table outlives its actor


def test_a_new_actor_takes_over_the_table() -> None:
    table = SessionTable("sess_heir")
    first = SessionActor.start(table)
    try:
        first.ask(RegisterVariable("x", "integer", 1, None, None, None))
    finally:
        first.stop()
    table.seq += 1  # as if the first actor died mid-batch
    second = SessionActor.start(table)
    try:
        assert table.seq % 2 == 0
        assert second.ask(SetVariable("x", 5, None, None)) == 1
        assert table.lookup("x").value == 5
    finally:
        second.stop()


def test_a_new_actor_leaves_a_closed_table_closed() -> None:
    table = SessionTable("sess_closed")
    table.seq = CLOSED
    ref = SessionActor.start(table)
    try:
        assert table.seq == CLOSED
    finally:
        ref.stop()


def test_something_that_is_no_message_is_refused_without_a_crash() -> None:
    table = SessionTable("sess_unknown")
    ref = SessionActor.start(table)
    try:
        answer = ref.ask(("no-such-operation",))
        assert isinstance(answer, StateError)
        assert "tuple, not a message" in str(answer)
        assert ref.is_alive()
    finally:
        ref.stop()
    assert not ref.is_alive()


def test_stopped_actor_refuses_asks() -> None:
    table = SessionTable("sess_stopped")
    ref = SessionActor.start(table)
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(GetVariable("x"))


# -- close and seal are cuts: nothing queued behind them slips through ---------------


def test_a_write_queued_behind_close_is_refused_and_the_table_stays_closed() -> None:
    from dspex_actors.actor import SessionActor
    from dspex_actors.session import CLOSED, SessionTable

    table = SessionTable("cut")
    ref = SessionActor.start(table)
    try:
        ref.ask(RegisterVariable("x", "integer", 0, None, None, None))
        assert ref.ask(Close()) is None
        refused = ref.ask(SetVariable("x", 1, None, None))
        assert isinstance(refused, SessionClosed)
        assert table.seq == CLOSED
        assert table.index["x"].version == 0
    finally:
        ref.stop()


def test_a_write_that_meets_the_seal_lands_once_after_unseal() -> None:
    state = LocalState.init()
    try:
        state.register_variable("x", "integer", 0)
        sealed = state.seal()
        assert sealed.names == ["x"]
        assert sealed.values == [0]
        # The actor itself refuses writes from the seal on (the cut is exact): it
        # answers SEALED, a plain value, not an error.
        refused = state.actor_ref.ask(SetVariable("x", 9, None, None))
        assert refused is SEALED
        result: list[int] = []
        writer = threading.Thread(target=lambda: result.append(state.set_variable("x", 5)))
        writer.start()
        state.unseal()
        writer.join(30)
        assert result == [1]
        assert state.get_variable("x") == 5
    finally:
        state.cleanup()


def test_a_write_that_meets_the_seal_is_forwarded_after_retire() -> None:
    old = LocalState.init(session_id="moving")
    new = None
    try:
        old.register_variable("x", "integer", 0)
        sealed = old.seal()
        result: list[int] = []
        writer = threading.Thread(target=lambda: result.append(old.set_variable("x", 5)))
        writer.start()
        new = LocalState.init(session_id="moving")
        new.import_columns(sealed)
        old.retire(successor=new)
        writer.join(30)
        assert result == [1]
        assert new.get_variable("x") == 5
        assert old.get_variable("x") == 5  # reads through the old handle follow too
        assert old.alive  # it serves, by forwarding
    finally:
        old.cleanup()
        if new is not None:
            new.cleanup()


def test_restart_is_refused_while_sealed() -> None:
    state = LocalState.init()
    try:
        state.seal()
        with pytest.raises(SessionClosed, match="being migrated"):
            state.restart()
        state.unseal()
    finally:
        state.cleanup()


def test_digest_matches_the_digest_of_an_export() -> None:
    from dspex_actors.exports import export_digest

    state = LocalState.init()
    try:
        state.register_variable("t", "float", 1, constraints={"min": 0}, description="d")
        state.register_variable("e", "embedding", [1, 2])
        state.register_variable("m", "tensor", {"shape": [1, 2], "data": [3, 4]})
        state.set_variable("t", 0.5, {"by": "test"})
        assert state.digest() == export_digest(state.export_state())
        before = state.digest()
        state.set_variable("t", 0.6)
        assert state.digest() != before
    finally:
        state.cleanup()


def test_without_the_gil_every_read_takes_the_actor_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a free-threaded interpreter gets: the sequence number starts odd and each
    # write adds 2, so it never looks stable and readers always ask the actor.
    from dspex_actors import actor, session

    monkeypatch.setattr(session, "LOCK_FREE_READS", False)  # a table's start
    monkeypatch.setattr(actor, "LOCK_FREE_READS", False)  # its actor's step
    monkeypatch.setattr(actor, "SEQ_STEP", 2)
    state = LocalState.init()
    asked: list[str] = []
    real_ask = LocalState._ask

    def spy(self: LocalState, message: Any) -> Any:
        asked.append(type(message).__name__)
        return real_ask(self, message)

    monkeypatch.setattr(LocalState, "_ask", spy)
    try:
        state.register_variable("x", "integer", 1)
        state.set_variable("x", 2)
        state.update_variables({"x": 3})
        assert state._table.seq & 1
        assert state.get_variable("x") == 3
        assert state.get_variables(["x"]) == {"x": 3}
        assert [r["value"] for r in state.list_variables()] == [3]
        assert state.export_state()["variables"]
        assert state.get_record("x").value == 3
        assert {"GetVariable", "GetVariables", "GetRecord", "ListVariables", "ExportState"} <= set(
            asked
        )
    finally:
        state.cleanup()


def test_a_delivered_message_behind_close_is_answered_not_dropped() -> None:
    """A Deliver (told, with a reply callback) queued behind the close still gets
    its answer: SessionClosed, so the sender knows at once it was not applied."""
    from dspex_actors.messages import Deliver

    table = SessionTable("delivered")
    ref = SessionActor.start(table)
    answers: list[Any] = []
    answered = threading.Event()

    def reply(answer: Any) -> None:
        answers.append(answer)
        answered.set()

    try:
        ref.ask(RegisterVariable("x", "integer", 0, None, None, None))
        ref.tell(Close())
        ref.tell(Deliver(SetVariable("x", 1, None, None), reply, [True]))
        assert answered.wait(WAIT)
        assert isinstance(answers[0], SessionClosed)
        assert table.lookup("x").version == 0
    finally:
        ref.stop()
