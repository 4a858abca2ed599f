"""BridgedState: ownership, deadlines, the embedded default, and errors equal to local ones."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from bridge_support import run_worker

from dspex_actors import LocalState
from dspex_actors.bridge import (
    ADDRESS_ENV,
    TOKEN_ENV,
    BridgedState,
    SessionStoreServer,
    embedded,
    serve,
)
from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    PartialFailure,
    SessionClosed,
    SessionNotFound,
    StateError,
    ValidationError,
    VariableNotFound,
)
from dspex_actors.provider import StateProvider


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


@pytest.fixture(autouse=True)
def no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


# -- reaching the server ---------------------------------------------------------------


def test_unreachable_server_raises_bridge_unavailable() -> None:
    with serve() as gone:
        address = gone.address  # a port nobody listens on once the server stops
    with pytest.raises(BridgeUnavailable, match=address):
        BridgedState.init(address=address, timeout=0.5)


def test_a_server_that_never_answers_raises_bridge_unavailable() -> None:
    # A loopback socket that listens but never speaks: the TCP connect succeeds (the
    # kernel's backlog accepts it) and gRPC then waits for an HTTP/2 reply that never
    # comes, so only the deadline can end the call. Loopback only: tests send no
    # traffic anywhere else.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host, port = silent.getsockname()
        with pytest.raises(BridgeUnavailable):
            BridgedState.init(address=f"{host}:{port}", timeout=0.2)


def test_a_server_that_stops_mid_session_leaves_writes_not_applied() -> None:
    """Once the client has seen its server gone (a read failed), a write cannot have
    been sent: BridgeUnavailable, not applied (see test_server_down.py)."""
    server = serve()
    state = BridgedState.init(address=server.address, timeout=1)
    state.register_variable("a", "integer", 1)
    server.stop()
    with pytest.raises(BridgeUnavailable):
        state.get_variable("a")
    for _ in range(2):
        with pytest.raises(BridgeUnavailable, match="was not applied"):
            state.set_variable("a", 2)
    state.cleanup()


def test_init_checks_its_arguments(server: SessionStoreServer) -> None:
    with pytest.raises(TypeError, match="unknown options: colour"):
        BridgedState.init(address=server.address, colour="red")
    bad_ids: list[Any] = ["", "s" * 257, "bad\ud800id", 42]
    for bad in bad_ids:
        with pytest.raises(ValidationError, match="session_id") as caught:
            BridgedState.init(address=server.address, session_id=bad)
        assert caught.value.rule == "session_id"  # the same error LocalState.init gives
    with pytest.raises(ValueError, match="timeout"):
        BridgedState.init(address=server.address, timeout=0)


def test_address_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(token="t0k") as server:
        monkeypatch.setenv(ADDRESS_ENV, server.address)
        monkeypatch.setenv(TOKEN_ENV, "t0k")
        with BridgedState.init() as state:
            assert state.address == server.address
            state.register_variable("a", "integer", 1)
        assert embedded.current_address() is None


# -- ownership -------------------------------------------------------------------------


def test_the_creator_owns_the_session_and_attached_handles_detach(
    server: SessionStoreServer,
) -> None:
    owner = BridgedState.init(session_id="shared", address=server.address)
    attached = BridgedState.init(session_id="shared", address=server.address)
    assert owner.owner and not attached.owner
    owner.register_variable("a", "integer", 1)
    attached.set_variable("a", 2)
    attached.cleanup()
    assert owner.get_variable("a") == 2  # detaching closed nothing
    again = BridgedState.init(session_id="shared", address=server.address)
    owner.cleanup()
    with pytest.raises(SessionNotFound):
        again.get_variable("a")
    again.cleanup()


def test_a_cleaned_up_handle_raises_session_closed_without_a_call() -> None:
    server = serve()
    state = BridgedState.init(address=server.address)
    state.cleanup()
    server.stop()
    with pytest.raises(SessionClosed, match="cleaned up"):
        state.get_variable("a")
    state.cleanup()


def test_existing_state_is_imported(server: SessionStoreServer) -> None:
    with LocalState.init(session_id="source") as local:
        var_id = local.register_variable("t", "float", 0.5, constraints={"max": 1.0})
        local.set_variable("t", 0.75)
        exported = local.export_state()
    with BridgedState.init(address=server.address, existing_state=exported) as state:
        [record] = state.list_variables()
        assert record == exported["variables"][var_id]


def test_a_failed_import_at_init_closes_the_new_session(server: SessionStoreServer) -> None:
    with pytest.raises(InvalidExport):
        BridgedState.init(session_id="s", address=server.address, existing_state={"x": 1})
    with BridgedState.init(session_id="s", address=server.address) as state:
        assert state.owner  # created afresh: the failed init closed its session


def test_embedded_server_runs_while_handles_use_it() -> None:
    assert embedded.current_address() is None
    first = BridgedState.init()
    second = BridgedState.init(session_id=first.session_id)
    assert first.address == second.address == embedded.current_address()
    first.register_variable("a", "integer", 1)
    assert second.get_variable("a") == 1
    first.cleanup()
    assert embedded.current_address() == second.address
    second.cleanup()
    assert embedded.current_address() is None


def test_capabilities() -> None:
    assert BridgedState.capabilities() == {
        "atomic_updates": True,
        "streaming": True,
        "persistence": False,
        "distribution": True,
    }
    assert BridgedState.requires_bridge() is True


# -- two processes ---------------------------------------------------------------------


def test_two_processes_share_a_session(server: SessionStoreServer) -> None:
    with BridgedState.init(address=server.address) as state:
        state.register_variable("temperature", "float", 0.5)
        run_worker(server.address, state.session_id)
        assert state.get_variable("temperature") == 1.0
        assert state.get_variable("from_worker") == "hello"


# -- the same errors as LocalState ------------------------------------------------------

Operation = Callable[[Any], Any]
"""A call on a backend; typed Any because most of them pass what the API's types refuse."""


def _prepare(state: StateProvider) -> None:
    state.register_variable("t", "float", 0.5, constraints={"min": 0.0, "max": 1.0})
    state.register_variable("n", "integer", 1)


def _export_of(name: str) -> dict[str, Any]:
    with LocalState.init(session_id="other") as other:
        other.register_variable(name, "integer", 1)
        return other.export_state()


OPAQUE = object()  # one object, so both backends' messages quote the same repr

BAD_OPERATIONS: dict[str, Operation] = {
    "above max": lambda s: s.set_variable("t", 2.0),
    "wrong type": lambda s: s.set_variable("n", "one"),
    "bool for integer": lambda s: s.set_variable("n", True),
    "unknown variable": lambda s: s.get_variable("missing"),
    "non-string identifier": lambda s: s.get_variable(42),
    "delete unknown": lambda s: s.delete_variable("missing"),
    "name taken": lambda s: s.register_variable("t", "float", 0.1),
    "unknown type": lambda s: s.register_variable("x", "complex", 1),
    "non-string type": lambda s: s.register_variable("x", 3, 1),
    "non-string name": lambda s: s.register_variable(7, "integer", 1),
    "bad constraint": lambda s: s.register_variable(
        "x", "integer", 1, constraints={"min": 5, "max": 1}
    ),
    "constraints not a mapping": lambda s: s.register_variable("x", "integer", 1, constraints=[1]),
    "bad regex": lambda s: s.register_variable("x", "string", "a", constraints={"pattern": "("}),
    "unencodable value": lambda s: s.register_variable("x", "embedding", {1.0, 2.0}),
    "unencodable metadata": lambda s: s.set_variable("t", 0.1, {"k": OPAQUE}),
    "metadata not a mapping": lambda s: s.register_variable("x", "integer", 1, metadata=[1]),
    "description not a string": lambda s: s.register_variable("x", "integer", 1, description=5),
    "stale version": lambda s: s.set_variable("t", 0.1, expected_version=7),
    "partial batch": lambda s: s.update_variables({"t": 0.2, "n": "x", "missing": 1}),
    "expected_version a bool": lambda s: s.set_variable("t", 0.1, expected_version=True),
    "expected_version a string": lambda s: s.set_variable("t", 0.1, expected_version="1"),
    "expected_version past int64": lambda s: s.set_variable("t", 0.1, expected_version=2**70),
    "expected_version negative": lambda s: s.set_variable("t", 0.1, expected_version=-1),
    "batch with a non-string key": lambda s: s.update_variables({1: 2}),
    "batch with keys of several kinds": lambda s: s.update_variables({"t": 0.2, 1.5: 1, None: 2}),
    "batch metadata not a mapping": lambda s: s.update_variables({"t": 0.2}, [1]),
    "empty list as metadata": lambda s: s.set_variable("t", 0.1, []),
    "empty list as batch metadata": lambda s: s.update_variables({"t": 0.2}, []),
    "empty string as metadata": lambda s: s.set_variable("t", 0.1, ""),
    "get a non-UTF-8 identifier": lambda s: s.get_variable("\ud800"),
    "set a non-UTF-8 identifier": lambda s: s.set_variable("t\udfff", 0.1),
    "delete a non-UTF-8 identifier": lambda s: s.delete_variable("\ud800"),
    "batch with a non-UTF-8 key": lambda s: s.update_variables({"\ud800": 1, "t": 0.2}),
    "register a non-UTF-8 name": lambda s: s.register_variable("x\ud800", "integer", 1),
    "non-UTF-8 string in metadata": lambda s: s.set_variable("t", 0.1, {"k": "\ud800"}),
    "non-UTF-8 metadata key": lambda s: s.set_variable("t", 0.1, {"\ud800": 1}),
    "export not a mapping": lambda s: s.import_state([1]),
    "export incomplete": lambda s: s.import_state({"session_id": "x"}),
    "import name clash": lambda s: s.import_state(_export_of("t")),
}


def _error_of(state: StateProvider, operation: Operation) -> BaseException:
    with pytest.raises((StateError, TypeError)) as caught:
        operation(state)
    return caught.value


def _shape(error: BaseException) -> tuple[Any, ...]:
    inner = getattr(error, "errors", None)
    nested = {k: _shape(v) for k, v in inner.items()} if inner else None
    return type(error), str(error), getattr(error, "details", None), nested


@pytest.mark.parametrize("case", BAD_OPERATIONS)
def test_errors_match_the_local_backend(server: SessionStoreServer, case: str) -> None:
    operation = BAD_OPERATIONS[case]
    with (
        LocalState.init(session_id="same") as local,
        BridgedState.init(session_id="same", address=server.address) as bridged,
    ):
        _prepare(local)
        _prepare(bridged)
        local_error = _error_of(local, operation)
        bridged_error = _error_of(bridged, operation)
        assert _shape(bridged_error) == _shape(local_error)
        records = bridged.list_variables()
        assert [(r["name"], r["value"], r["version"]) for r in records] == [
            ("t", 0.5, 0),
            ("n", 1, 0),
        ]


@pytest.fixture
def pair(server: SessionStoreServer) -> Iterator[tuple[LocalState, BridgedState]]:
    """A local and a bridged session with the same id, both prepared alike."""
    with (
        LocalState.init(session_id="same") as local,
        BridgedState.init(session_id="same", address=server.address) as bridged,
    ):
        _prepare(local)
        _prepare(bridged)
        yield local, bridged


@pytest.mark.parametrize("bad", [True, False, "1", 1.0, 2**63, 2**70, -1, [0]], ids=repr)
def test_a_bad_expected_version_is_a_validation_error(
    pair: tuple[LocalState, BridgedState], bad: Any
) -> None:
    for state in pair:
        with pytest.raises(ValidationError) as caught:
            state.set_variable("t", 0.1, expected_version=bad)
        assert caught.value.rule == "expected_version"
        assert caught.value.variable == "t"
    assert pair[1].set_variable("t", 0.1, expected_version=0) == 1


def test_a_batch_names_every_entry_that_cannot_be_sent(
    pair: tuple[LocalState, BridgedState],
) -> None:
    updates: dict[Any, Any] = {"t": 0.2, 1: 2, "n": 2**64, "\ud800": 3, (1, 2): 4}
    failures = []
    for state in pair:
        with pytest.raises(PartialFailure) as caught:
            state.update_variables(updates)
        failures.append(caught.value)
        assert state.get_variables(["t", "n"]) == {"t": 0.5, "n": 1}  # nothing applied
    local, bridged = failures
    assert list(bridged.errors) == list(local.errors) == ["1", "n", "\ud800", "(1, 2)"]
    for key, error in bridged.errors.items():
        assert type(error) is type(local.errors[key]), key
    assert isinstance(bridged.errors["1"], VariableNotFound)
    assert bridged.errors["1"].variable == "1"
    assert isinstance(bridged.errors["\ud800"], VariableNotFound)
    unencodable = bridged.errors["n"]
    assert isinstance(unencodable, ValidationError)
    assert (unencodable.variable, unencodable.rule) == ("n", "type")


def test_a_batch_with_only_a_non_string_key_is_a_partial_failure(
    pair: tuple[LocalState, BridgedState],
) -> None:
    # msgpack carries an int key; the server refuses to decode it and the client
    # then names the entry, as the local session does.
    with pytest.raises(PartialFailure) as caught:
        pair[1].update_variables(cast(Any, {"t": 0.2, 7: 1}))
    assert list(caught.value.errors) == ["7"]
    assert isinstance(caught.value.errors["7"], VariableNotFound)
    assert pair[1].get_variable("t") == 0.5


def test_a_batch_with_a_str_subclass_key_is_applied(
    pair: tuple[LocalState, BridgedState],
) -> None:
    class Name(str):
        pass

    for state in pair:
        state.update_variables({Name("t"): 0.25})
        assert state.get_variable("t") == 0.25


@pytest.mark.parametrize("metadata", [[], "", (), 0], ids=repr)
def test_falsy_metadata_that_is_not_a_mapping_is_refused(
    pair: tuple[LocalState, BridgedState], metadata: Any
) -> None:
    for state in pair:
        with pytest.raises(ValidationError) as caught:
            state.set_variable("t", 0.1, metadata)
        assert caught.value.rule == "metadata"
        with pytest.raises(PartialFailure) as batch:
            state.update_variables({"t": 0.2}, metadata)
        [(key, error)] = batch.value.errors.items()
        assert key == "<metadata>"
        assert isinstance(error, ValidationError) and error.rule == "metadata"
        assert state.get_variable("t") == 0.5
        state.set_variable("t", 0.3, {})  # an empty mapping is no metadata
        state.update_variables({"t": 0.5}, {})


def test_non_utf8_strings_are_errors_of_the_contract(
    pair: tuple[LocalState, BridgedState],
) -> None:
    lone = "\ud800"
    for state in pair:
        state.register_variable("s", "string", "text")
        with pytest.raises(VariableNotFound):
            state.get_variable(lone)
        with pytest.raises(VariableNotFound):
            state.set_variable(lone, 1)
        with pytest.raises(VariableNotFound):
            state.delete_variable(lone)
        assert state.get_variables([lone, "s"]) == {"s": "text"}
        with pytest.raises(ValidationError) as caught:
            state.set_variable("s", "a" + lone)
        assert caught.value.variable == "s"
        with pytest.raises(ValidationError):
            state.register_variable("x", "string", lone)
        with pytest.raises(ValidationError) as named:
            state.register_variable(lone, "string", "text")
        assert named.value.rule == "name"
        with pytest.raises(PartialFailure) as batch:
            state.update_variables({"s": lone})
        assert list(batch.value.errors) == ["s"]
        assert isinstance(batch.value.errors["s"], ValidationError)
        assert state.get_variable("s") == "text"
        assert [r["name"] for r in state.list_variables()] == ["t", "n", "s"]
    bridged = pair[1]
    with pytest.raises(ValidationError) as description:
        bridged.register_variable("y", "string", "a", description=lone)
    assert description.value.rule == "description"
    with pytest.raises(ValidationError) as constraints:
        bridged.register_variable("z", "string", "a", constraints={"enum": [lone, "a"]})
    assert constraints.value.rule == "constraints"
    assert [r["name"] for r in bridged.list_variables()] == ["t", "n", "s"]


def test_a_fresh_handle_right_after_a_server_restart_waits_for_it_within_its_deadline() -> None:
    """The shared channel is in its reconnection backoff when the server comes back;
    a new handle retries its open within its deadline instead of failing at once."""
    first = serve()
    address = first.address
    with BridgedState.init(address=address, timeout=1) as warm:
        warm.register_variable("a", "integer", 1)
        first.stop()
        with pytest.raises(BridgeUnavailable):
            warm.get_variable("a")  # the channel has seen the server go
        with serve(address) as second, BridgedState.init(address=address, timeout=10) as fresh:
            assert fresh.owner
            fresh.register_variable("b", "integer", 2)
            assert fresh.get_variable("b") == 2
            assert second.address == address


def test_an_attach_that_finds_nothing_says_which_server_it_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forgetting the address attaches to this process's own embedded server, which
    cannot hold another process's session: the error says so, and how to reach one;
    with an address, it names the server asked. A session of this process is still
    found without one."""
    monkeypatch.delenv("DSPEX_BRIDGE_ADDRESS", raising=False)
    with pytest.raises(SessionNotFound) as embedded:
        BridgedState.init(session_id="shared-demo", create=False)
    assert embedded.value.details["session_id"] == "shared-demo"
    assert "this process's embedded server" in str(embedded.value)
    assert "pass address='HOST:PORT' or set $DSPEX_BRIDGE_ADDRESS" in str(embedded.value)
    with serve() as server, pytest.raises(SessionNotFound) as remote:
        BridgedState.init(session_id="shared-demo", create=False, address=server.address)
    assert str(remote.value).endswith(f"on the SessionStore at {server.address}")
    with (
        BridgedState.init() as owner,
        BridgedState.init(session_id=owner.session_id, create=False) as attached,
    ):
        owner.register_variable("x", "integer", 1)
        assert attached.get_variable("x") == 1
