"""Readers against writers: whole batches, whole snapshots and whole imports only,
and reads that see completed writes.

Threads meet on barriers, events and queues; every loop is bounded. Each race runs
a fixed number of rounds, each round one chance to catch a torn read:
``tests/test_compliance_catches.py`` proves the counts catch the defects they aim at.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import msgpack
import pytest

from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import (
    EXPORT_KEYS,
    RECORD_KEYS,
    WORKER_GUARD_SECONDS,
    ContractBase,
    record_of,
    run_threads,
    same,
)

__all__ = ["ConcurrencyContract"]


def _race_reader_against_writer(
    write: Callable[[int], None], rounds: int, read: Callable[[bool], None]
) -> None:
    """Run ``write(i)`` for ``i`` in 1..rounds in one thread, ``read`` in another.

    Before each round the writer waits until the reader has completed a read since
    the last round, so writes land among reads rather than in one burst while the
    reader waits for its turn. The reader reads until it has read once after the
    last round; ``read(finished)`` is told whether the writer had finished before
    that read began. A failing reader releases the writer, which then stops.
    """
    max_reads = 1_000_000  # bounds the reader should the writer get stuck
    barrier = threading.Barrier(2)
    written = threading.Event()
    have_read = threading.Event()
    reader_gone = threading.Event()

    def writer() -> None:
        barrier.wait(WORKER_GUARD_SECONDS)
        try:
            for i in range(1, rounds + 1):
                assert have_read.wait(WORKER_GUARD_SECONDS), "the reader stopped reading"
                if reader_gone.is_set():
                    return
                have_read.clear()
                write(i)
        finally:
            written.set()

    def reader() -> None:
        barrier.wait(WORKER_GUARD_SECONDS)
        try:
            for _ in range(max_reads):
                finished = written.is_set()
                read(finished)
                have_read.set()
                if finished:
                    return
        finally:
            reader_gone.set()
            have_read.set()

    # Hand the GIL over sooner than the default 5 ms: each round is a hand-off
    # between the two threads, and the reader never blocks on its own.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        run_threads([writer, reader])
    finally:
        sys.setswitchinterval(interval)


def _check_export_snapshot(exported: Any, session_id: str) -> dict[str, dict[str, Any]]:
    """Assert one export is whole and msgpack-encodable; return its records by name.

    Whole: ``variable_index`` maps exactly the names of ``variables`` to their ids,
    every record carries its own key as ``id``, and no name appears twice.
    """
    assert isinstance(exported, dict), f"export_state returned {type(exported).__name__}"
    missing = EXPORT_KEYS - set(exported)
    assert not missing, f"export lacks {sorted(missing)}"
    assert exported["session_id"] == session_id
    variables, index = exported["variables"], exported["variable_index"]
    assert isinstance(variables, dict), f"export variables is {type(variables).__name__}"
    assert isinstance(index, dict), f"export variable_index is {type(index).__name__}"
    by_name: dict[str, dict[str, Any]] = {}
    for var_id, record in variables.items():
        assert isinstance(record, dict), f"export record {var_id!r} is {record!r}"
        lacking = RECORD_KEYS - set(record)
        assert not lacking, f"export record {var_id!r} lacks {sorted(lacking)}"
        assert record["id"] == var_id, f"export record under {var_id!r} has id {record['id']!r}"
        assert record["name"] not in by_name, f"export names {record['name']!r} twice"
        by_name[record["name"]] = record
    expected_index = {name: record["id"] for name, record in by_name.items()}
    assert index == expected_index, (
        f"variable_index {index!r} does not match the variables {expected_index!r}"
    )
    assert isinstance(msgpack.packb(exported), bytes)
    return by_name


def _check_listing(records: Any) -> dict[str, dict[str, Any]]:
    """Assert one ``list_variables`` result has unique ids and names; return it by name."""
    assert isinstance(records, list), f"list_variables returned {type(records).__name__}"
    for record in records:
        assert isinstance(record, dict), f"list_variables gave a record {record!r}"
        lacking = RECORD_KEYS - set(record)
        assert not lacking, f"listed record {record.get('id')!r} lacks {sorted(lacking)}"
    ids = [record["id"] for record in records]
    names = [record["name"] for record in records]
    assert len(set(ids)) == len(ids), f"list_variables repeats an id: {ids}"
    assert len(set(names)) == len(names), f"list_variables repeats a name: {names}"
    return {record["name"]: record for record in records}


def _export_of_integers(names: list[str], value: int) -> dict[str, Any]:
    """An export map of integer variables ``names``, each holding ``value``."""
    now = time.time()
    records = {
        f"var_{uuid.uuid4().hex}": {
            "name": name,
            "type": "integer",
            "value": value,
            "constraints": {},
            "metadata": {},
            "version": 0,
            "created_at": now,
            "last_updated_at": now,
        }
        for name in names
    }
    for var_id, record in records.items():
        record["id"] = var_id
    return {
        "session_id": "elsewhere",
        "variables": records,
        "variable_index": {r["name"]: var_id for var_id, r in records.items()},
        "metadata": {},
    }


def _snapshots(state: StateProvider) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """An export, then a listing, each checked whole; each as its records by name."""
    exported = _check_export_snapshot(state.export_state(), state.session_id)
    listed = _check_listing(state.list_variables())
    return [("export_state", exported), ("list_variables", listed)]


def _advance(last: int, now: int, source: str, finished: bool, rounds: int) -> int:
    """``now``, the write a read saw, after checking it never goes back and, for a
    read begun after the writer finished, that it is the last of ``rounds``."""
    assert now >= last, f"{source} went back in time: {last} then {now}"
    if finished:
        assert now == rounds, f"{source} after the last write saw write {now}"
    return now


def _assert_one_version(record: Mapping[str, Any], source: str) -> int:
    """The record's value was written at its version (the writer sets value = version)."""
    value, version = record["value"], record["version"]
    assert type(version) is int, f"{source}: {record['name']!r} version is {version!r}"
    assert same(value, version), (
        f"{source}: {record['name']!r} mixes two writes: value {value!r} at version {version}"
    )
    return version


class ConcurrencyContract(ContractBase):
    """Readers against writers: whole batches and whole snapshots only, and reads see
    completed writes."""

    def test_readers_never_see_half_a_batch(self, state: StateProvider) -> None:
        """A batch ``{a: i, b: -i}`` is all in a ``get_variables`` read or not at all."""
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        # The hand-off puts each batch among reads: a backend that applies a batch
        # entry by entry is caught within a few rounds.
        rounds = 50
        state.register_variable("a", "integer", 0)
        state.register_variable("b", "integer", 0)

        def write(i: int) -> None:
            state.update_variables({"a": i, "b": -i})

        last = 0

        def read(finished: bool) -> None:
            nonlocal last
            got = state.get_variables(["a", "b"])
            assert got["a"] == -got["b"], f"half a batch: {got}"
            last = _advance(last, got["a"], "get_variables", finished, rounds)

        _race_reader_against_writer(write, rounds, read)
        assert state.get_variables(["a", "b"]) == {"a": rounds, "b": -rounds}

    # Bystanders registered before the threads start: every snapshot must hold them,
    # unchanged, and copying them widens the window in which a writer can strike.
    _FILLERS = 16

    def _register_fillers(self, state: StateProvider) -> dict[str, int]:
        fillers = {f"filler{f}": f for f in range(self._FILLERS)}
        for name, value in fillers.items():
            state.register_variable(name, "integer", value)
        return fillers

    @staticmethod
    def _assert_fillers(records: Mapping[str, Any], fillers: dict[str, int], source: str) -> None:
        lost = sorted(set(fillers) - set(records))
        assert not lost, f"{source} lost variables nobody deleted: {lost}"
        for name, value in fillers.items():
            record = records[name]
            assert same(record["value"], value) and record["version"] == 0, (
                f"{source}: untouched {name!r} reads {record['value']!r} "
                f"at version {record['version']!r}"
            )

    def test_export_and_list_are_whole_under_writes(self, state: StateProvider) -> None:
        """export_state and list_variables against a writer that registers, sets, deletes.

        Every export must be internally consistent and msgpack-encodable, every list
        free of duplicates, and the ``anchor`` record (set to ``i`` at version ``i``)
        one whole write, never moving back, while variables come and go around it.
        """
        # The anchor is set first in each round: that write lands while the reader
        # takes its next snapshot, which catches a snapshot built from two moments
        # within a few rounds (setting it second needed some 300).
        rounds = 100
        state.register_variable("anchor", "integer", 0)
        fillers = self._register_fillers(state)
        steady = {"anchor", *fillers}
        churn = {f"churn{i}" for i in range(1, rounds + 1)}

        def write(i: int) -> None:
            version = state.set_variable("anchor", i)
            assert version == i, f"anchor set to {i} got version {version}"
            state.register_variable(f"churn{i}", "integer", i)
            state.set_variable(f"churn{i}", -i)
            if i > 1:
                state.delete_variable(f"churn{i - 1}")
            if i == rounds:
                state.delete_variable(f"churn{i}")

        last = 0

        def read(finished: bool) -> None:
            nonlocal last
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                strays = sorted(set(records) - steady - churn)
                assert not strays, f"{source} shows variables never registered: {strays}"
                last = _advance(
                    last, _assert_one_version(records["anchor"], source), source, finished, rounds
                )
                if finished:
                    assert set(records) == steady, (
                        f"{source} after the last write: {sorted(records)}"
                    )

        _race_reader_against_writer(write, rounds, read)
        listed = _check_listing(state.list_variables())
        assert set(listed) == steady
        assert _assert_one_version(listed["anchor"], "list_variables") == rounds

    def test_export_never_shows_half_a_batch(self, state: StateProvider) -> None:
        """A batch ``{a: i, b: i}`` is all in an export (and a listing) or not at all."""
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        # Fewer rounds miss a snapshot built from two moments now and then (one run
        # in sixty at 100 rounds).
        rounds = 300
        # a and b sit at the two ends of the session, the fillers between them.
        state.register_variable("a", "integer", 0)
        fillers = self._register_fillers(state)
        state.register_variable("b", "integer", 0)

        def write(i: int) -> None:
            state.update_variables({"a": i, "b": i})

        last = 0

        def read(finished: bool) -> None:
            nonlocal last
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                a, b = records["a"], records["b"]
                assert same(a["value"], b["value"]) and a["version"] == b["version"], (
                    f"half a batch in {source}: a={a['value']!r} (version {a['version']!r})"
                    f", b={b['value']!r} (version {b['version']!r})"
                )
                last = _advance(last, _assert_one_version(a, source), source, finished, rounds)

        _race_reader_against_writer(write, rounds, read)
        assert state.get_variables(["a", "b"]) == {"a": rounds, "b": rounds}

    def test_readers_never_see_half_an_import(self, state: StateProvider) -> None:
        """An import's variables appear together: every read (a batch get, an export,
        a listing) holds all of an import's variables or none, and never loses one."""
        if not self.provider.capabilities()["atomic_updates"]:
            pytest.skip("backend does not claim atomic_updates")
        rounds, width = 20, 8
        fillers = self._register_fillers(state)
        names = {i: [f"imported{i}_{j}" for j in range(width)] for i in range(1, rounds + 1)}
        every_name = [name for group in names.values() for name in group]

        def write(i: int) -> None:
            state.import_state(_export_of_integers(names[i], i))

        last = 0

        def seen(present: Mapping[str, Any], source: str) -> int:
            """The last import ``present`` (name -> value) holds whole, failing on a
            partial one or a value the import did not write."""
            whole = 0
            for i, group in names.items():
                held = [name for name in group if name in present]
                assert len(held) in (0, width), (
                    f"{source} shows {len(held)} of the {width} variables of import {i}"
                )
                if held:
                    assert whole == i - 1, f"{source} holds import {i} but not {whole + 1}"
                    wrong = {name: present[name] for name in held if not same(present[name], i)}
                    assert not wrong, f"{source}: import {i} wrote {i}, reads {wrong}"
                    whole = i
            return whole

        def read(finished: bool) -> None:
            nonlocal last
            reads: list[tuple[str, Mapping[str, Any]]] = [
                ("get_variables", state.get_variables(every_name))
            ]
            for source, records in _snapshots(state):
                self._assert_fillers(records, fillers, source)
                reads.append((source, {n: r["value"] for n, r in records.items()}))
            for source, present in reads:
                last = _advance(last, seen(present, source), source, finished, rounds)

        _race_reader_against_writer(write, rounds, read)

    def test_writer_reads_its_own_writes(self, state: StateProvider) -> None:
        writers, rounds = 3, 30
        for w in range(writers):
            state.register_variable(f"w{w}", "integer", -1)
        barrier = threading.Barrier(writers)

        def write(w: int) -> Callable[[], None]:
            name = f"w{w}"

            def run() -> None:
                barrier.wait(WORKER_GUARD_SECONDS)
                for i in range(rounds):
                    state.set_variable(name, 2 * i)
                    assert state.get_variable(name) == 2 * i
                    state.update_variables({name: 2 * i + 1})
                    assert state.get_variables([name]) == {name: 2 * i + 1}

            return run

        run_threads([write(w) for w in range(writers)])
        for w in range(writers):
            record = record_of(state, f"w{w}")
            assert record["value"] == 2 * rounds - 1
            assert record["version"] == 2 * rounds

    def test_completed_write_is_visible_to_other_threads(self, state: StateProvider) -> None:
        """A read begun after a set returned sees it, from any thread.

        Writer and reader take turns: the reader reads right after each write, before
        the next one, the moment a write acknowledged before it is applied shows.
        """
        state.register_variable("progress", "integer", 0)
        rounds = 50
        written: queue.Queue[int | None] = queue.Queue()
        checked: queue.Queue[bool] = queue.Queue()

        def writer() -> None:
            try:
                for i in range(1, rounds + 1):
                    state.set_variable("progress", i)
                    written.put(i)
                    if not checked.get(timeout=WORKER_GUARD_SECONDS):
                        return
            finally:
                written.put(None)  # releases the reader even when a write fails

        def reader() -> None:
            try:
                for _ in range(rounds):
                    seen = written.get(timeout=WORKER_GUARD_SECONDS)
                    if seen is None:
                        return
                    got = state.get_variable("progress")
                    assert got == seen, f"writer finished {seen} but a reader saw {got}"
                    checked.put(True)
            finally:
                checked.put(False)  # releases the writer even when a read fails

        run_threads([writer, reader])
