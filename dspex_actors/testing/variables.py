"""Single variables: registration, lookup by name and id, versions and
``expected_version``, metadata, listed records, deletion, and copies on the way out."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable

import pytest

from dspex_actors.errors import (
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)
from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import (
    RECORD_KEYS,
    TENSOR_2X2,
    WORKER_GUARD_SECONDS,
    ContractBase,
    assert_unchanged,
    record_of,
    run_threads,
    same,
)

__all__ = ["VariablesContract"]


class VariablesContract(ContractBase):
    """Registration, lookup by name and id, versions, metadata, records and deletion."""

    def test_register_returns_distinct_ids_usable_as_identifiers(
        self, state: StateProvider
    ) -> None:
        ids = [state.register_variable(f"v{i}", "integer", i) for i in range(5)]
        assert all(isinstance(i, str) and i for i in ids)
        assert len(set(ids)) == 5
        assert set(ids).isdisjoint({f"v{i}" for i in range(5)})
        for i, var_id in enumerate(ids):
            assert state.get_variable(var_id) == i
            assert state.get_variable(f"v{i}") == i
            assert record_of(state, f"v{i}")["id"] == var_id

    def test_register_taken_name_raises_variable_exists(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 0.7)
        before = state.list_variables()
        with pytest.raises(VariableExists) as info:
            state.register_variable("temperature", "integer", 3)
        assert info.value.variable == "temperature"
        assert "temperature" in str(info.value)
        assert_unchanged(state, before)
        assert state.get_variable("temperature") == 0.7

    def test_versions_start_at_zero_and_grow_by_one(self, state: StateProvider) -> None:
        var_id = state.register_variable("temperature", "float", 0.7)
        assert record_of(state, "temperature")["version"] == 0
        assert state.set_variable("temperature", 0.8) == 1
        assert state.set_variable(var_id, 0.9) == 2
        assert state.set_variable("temperature", 0.9) == 3  # same value is still a write
        assert record_of(state, "temperature")["version"] == 3
        assert state.export_state()["variables"][var_id]["version"] == 3

        with pytest.raises(ValidationError):
            state.set_variable("temperature", "hot")
        assert record_of(state, "temperature")["version"] == 3

    def test_update_variables_bumps_each_updated_variable_once(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 0)
        state.register_variable("b", "integer", 0)
        state.register_variable("c", "integer", 0)
        state.set_variable("b", 1)
        state.update_variables({a_id: 5, "b": 6})
        versions = {r["name"]: r["version"] for r in state.list_variables()}
        assert versions == {"a": 1, "b": 2, "c": 0}
        assert state.get_variables(["a", "b", "c"]) == {"a": 5, "b": 6, "c": 0}

    def test_expected_version_current_succeeds(self, state: StateProvider) -> None:
        state.register_variable("temperature", "float", 0.7)
        assert state.set_variable("temperature", 0.8, expected_version=0) == 1
        assert state.set_variable("temperature", 0.9, expected_version=1) == 2
        assert state.get_variable("temperature") == 0.9

    @pytest.mark.parametrize("expected", [0, 5])
    def test_expected_version_stale_raises_version_conflict(
        self, state: StateProvider, expected: int
    ) -> None:
        state.register_variable("temperature", "float", 0.7)
        state.set_variable("temperature", 0.8)
        before = state.list_variables()
        with pytest.raises(VersionConflict) as info:
            state.set_variable("temperature", 1.5, {"by": "stale"}, expected_version=expected)
        err = info.value
        assert err.variable == "temperature"
        assert err.expected == expected
        assert err.actual == 1
        assert "temperature" in str(err)
        assert_unchanged(state, before)
        assert state.get_variable("temperature") == 0.8

    def test_expected_version_concurrent_writers_lose_no_update(
        self, state: StateProvider
    ) -> None:
        """Compare-and-set increments from several threads: every increment lands once."""
        state.register_variable("counter", "integer", 0)
        writers, increments = 4, 30
        max_attempts = increments * 200
        barrier = threading.Barrier(writers)
        conflicts: list[int] = [0] * writers

        def increment(index: int) -> Callable[[], None]:
            def run() -> None:
                barrier.wait(WORKER_GUARD_SECONDS)
                done = attempts = 0
                while done < increments:
                    attempts += 1
                    assert attempts <= max_attempts, f"writer {index} made no progress"
                    record = record_of(state, "counter")
                    try:
                        new_version = state.set_variable(
                            "counter", record["value"] + 1, expected_version=record["version"]
                        )
                    except VersionConflict as exc:
                        assert exc.expected == record["version"]
                        assert exc.actual is not None
                        assert exc.actual > record["version"]
                        conflicts[index] += 1
                        continue
                    assert new_version == record["version"] + 1
                    done += 1

            return run

        run_threads([increment(i) for i in range(writers)])
        record = record_of(state, "counter")
        assert record["value"] == writers * increments, f"lost updates ({conflicts=})"
        assert record["version"] == writers * increments

    def test_set_variable_merges_metadata(self, state: StateProvider) -> None:
        state.register_variable(
            "style",
            "choice",
            "concise",
            constraints={"choices": ["concise", "verbose"]},
            metadata={"owner": "tuner", "round": 1},
            description="Prompt style",
        )
        record = record_of(state, "style")
        assert record["metadata"]["owner"] == "tuner"
        assert record["metadata"]["round"] == 1
        assert record["metadata"]["description"] == "Prompt style"

        state.set_variable("style", "verbose", {"round": 2, "source": "optimizer"})
        metadata = record_of(state, "style")["metadata"]
        assert metadata == {
            "owner": "tuner",
            "round": 2,
            "source": "optimizer",
            "description": "Prompt style",
        }
        state.set_variable("style", "concise")  # no metadata: metadata kept
        assert record_of(state, "style")["metadata"] == metadata

    def test_update_variables_merges_metadata_into_each(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1, metadata={"keep": True})
        state.register_variable("b", "integer", 2)
        state.register_variable("c", "integer", 3)
        state.update_variables({"a": 10, "b": 20}, {"source": "batch"})
        records = {r["name"]: r for r in state.list_variables()}
        assert records["a"]["metadata"] == {"keep": True, "source": "batch"}
        assert records["b"]["metadata"] == {"source": "batch"}
        assert records["c"]["metadata"] == {}

    def test_description_is_kept_in_metadata(self, state: StateProvider) -> None:
        var_id = state.register_variable(
            "max_tokens", "integer", 256, description="Completion budget"
        )
        assert record_of(state, "max_tokens")["metadata"] == {"description": "Completion budget"}
        exported = state.export_state()["variables"][var_id]
        assert exported["metadata"]["description"] == "Completion budget"

    def test_list_variables_records_in_creation_order(self, state: StateProvider) -> None:
        names = ["zeta", "alpha", "mu", "beta"]
        t0 = time.time()
        ids = [state.register_variable(n, "integer", i) for i, n in enumerate(names)]
        state.register_variable("vector", "embedding", [1.0, 2.0], constraints={"dimensions": 2})
        t1 = time.time()
        records = state.list_variables()
        assert isinstance(records, list)
        assert [r["name"] for r in records] == [*names, "vector"]
        assert [r["id"] for r in records[:4]] == ids
        for record in records:
            assert set(record) >= RECORD_KEYS, f"record lacks {RECORD_KEYS - set(record)}"
            assert isinstance(record["id"], str)
            assert isinstance(record["name"], str)
            assert isinstance(record["type"], str)
            assert isinstance(record["constraints"], dict)
            assert isinstance(record["metadata"], dict)
            assert type(record["version"]) is int
            assert type(record["created_at"]) is float
            assert type(record["last_updated_at"]) is float
            # Epoch seconds (loose bounds: a sanity check on the clock, not a timing test).
            assert t0 - 60 <= record["created_at"] <= t1 + 60
            assert record["created_at"] <= record["last_updated_at"]
        assert records[4]["type"] == "embedding"
        assert records[4]["constraints"] == {"dimensions": 2}

        # Deleting and re-registering moves a name to the end.
        state.delete_variable("alpha")
        state.register_variable("alpha", "integer", 9)
        assert [r["name"] for r in state.list_variables()] == [
            "zeta",
            "mu",
            "beta",
            "vector",
            "alpha",
        ]

    def test_timestamps_follow_writes(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        first = record_of(state, "a")
        state.set_variable("a", 2)
        second = record_of(state, "a")
        assert second["created_at"] == first["created_at"]
        assert second["last_updated_at"] >= first["last_updated_at"]
        state.update_variables({"a": 3})
        third = record_of(state, "a")
        assert third["created_at"] == first["created_at"]
        assert third["last_updated_at"] >= second["last_updated_at"]

    def test_get_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        with pytest.raises(VariableNotFound) as info:
            state.get_variable("nope")
        assert isinstance(info.value, KeyError)
        assert info.value.variable == "nope"
        assert "nope" in str(info.value)

    def test_set_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        before = state.list_variables()
        with pytest.raises(VariableNotFound) as info:
            state.set_variable("nope", 1)
        assert info.value.variable == "nope"
        assert "nope" in str(info.value)
        assert_unchanged(state, before)

    def test_delete_then_get_raises_variable_not_found(self, state: StateProvider) -> None:
        a_id = state.register_variable("a", "integer", 1)
        b_id = state.register_variable("b", "integer", 2)
        assert state.delete_variable("a") is None
        assert state.delete_variable(b_id) is None
        for identifier in ("a", a_id, "b", b_id):
            with pytest.raises(VariableNotFound) as info:
                state.get_variable(identifier)
            assert isinstance(info.value, KeyError)
            assert info.value.variable == identifier
        assert state.list_variables() == []
        assert state.get_variables(["a", b_id]) == {}
        exported = state.export_state()
        assert exported["variables"] == {}
        assert exported["variable_index"] == {}

    def test_delete_missing_raises_variable_not_found(self, state: StateProvider) -> None:
        state.register_variable("a", "integer", 1)
        state.delete_variable("a")
        before = state.list_variables()
        for identifier in ("a", "never"):
            with pytest.raises(VariableNotFound) as info:
                state.delete_variable(identifier)
            assert info.value.variable == identifier
            assert identifier in str(info.value)
        assert_unchanged(state, before)

    def test_deleted_name_can_be_registered_again(self, state: StateProvider) -> None:
        old_id = state.register_variable("a", "integer", 1)
        state.set_variable("a", 2)
        state.delete_variable("a")
        new_id = state.register_variable("a", "string", "fresh")
        assert new_id != old_id
        assert state.get_variable("a") == "fresh"
        assert record_of(state, "a")["version"] == 0
        with pytest.raises(VariableNotFound):
            state.get_variable(old_id)

    def test_returned_values_are_copies(self, state: StateProvider) -> None:
        initial = [1.0, 2.0]
        meta = {"tags": ["x"]}
        var_id = state.register_variable("vector", "embedding", initial, metadata=meta)
        initial.append(99.0)  # the caller's list is not the stored one
        meta["tags"].append("y")

        state.get_variable("vector").append(3.0)
        state.get_variables(["vector"])["vector"].append(4.0)
        record = record_of(state, "vector")
        record["value"].append(5.0)
        record["metadata"]["tags"].append("z")
        record["constraints"]["dimensions"] = 1
        exported = state.export_state()
        exported["variables"][var_id]["value"].append(6.0)
        exported["variables"][var_id]["metadata"]["added"] = True
        exported["variable_index"]["ghost"] = var_id

        assert state.get_variable("vector") == [1.0, 2.0]
        record = record_of(state, "vector")
        assert record["metadata"] == {"tags": ["x"]}
        assert record["constraints"] == {}
        assert state.export_state()["variable_index"] == {"vector": var_id}

        tensor = copy.deepcopy(TENSOR_2X2)
        state.register_variable("weights", "tensor", tensor)
        tensor["data"][0] = 42.0
        state.get_variable("weights")["data"][1] = 42.0
        assert state.get_variable("weights") == TENSOR_2X2

        value = [7.0, 8.0]
        state.set_variable("vector", value)
        value.append(9.0)
        assert state.get_variable("vector") == [7.0, 8.0]

        # Coercion makes new values; the caller's objects are left as they were.
        ints = [1, 2]
        state.register_variable("coerced", "embedding", ints)
        state.set_variable("coerced", ints)
        state.update_variables({"coerced": ints})
        assert same(ints, [1, 2])
        assert same(state.get_variable("coerced"), [1.0, 2.0])
