"""The compliance kit catches broken backends (and passes the real one).

Each backend below is LocalState with exactly one defect, written against the public
API only. One pytest subprocess runs the kit against all of them, one test class per
backend. A broken backend runs only the kit tests aimed at its defect plus a few
unrelated controls (a generated ``conftest.py`` deselects the rest), and we check that
the aimed tests fail while the controls pass: the kit pinpoints the breakage rather
than failing wholesale. In the same run LocalState passes the whole kit, and
NeedsToken (correct, but its ``init`` needs an option) passes every kit test
function, proving that ``provider_options`` reach every ``init``.

The subprocess keeps the broken backends' stray threads (a hanging call, a half-done
batch) out of this process, where the leak check in ``conftest.py`` would see them.
It is one subprocess for all backends, each running only what it needs: starting
pytest and collecting the kit cost more than most backends' aimed tests.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import itertools
import os
import pkgutil
import queue
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self

import pykka
import pytest
from bridge_support import python_env

import dspex_actors.testing
from dspex_actors import LocalState
from dspex_actors.errors import (
    PartialFailure,
    SessionClosed,
    StateError,
    ValidationError,
    VariableNotFound,
)
from dspex_actors.records import VariableRecord, name_matches
from dspex_actors.streaming import Event, Subscriber
from dspex_actors.testing import StateProviderContract

# ------------------------------------------------------------------ broken backends


class PiecemealUpdates(LocalState):
    """update_variables applies entries one by one: a bad later entry leaves earlier ones."""

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        errors: dict[str, StateError] = {}
        for identifier, value in updates.items():
            try:
                self.set_variable(identifier, value, metadata)
            except StateError as exc:
                errors[identifier] = exc
        if errors:
            raise PartialFailure(f"updates failed: {', '.join(errors)}", errors=errors)


class UnbumpedSets(LocalState):
    """set_variable stores the value but leaves the version where it was."""

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        version = super().set_variable(
            identifier, new_value, metadata, expected_version=expected_version
        )
        # Rewrite the whole session with this variable one version back (an export
        # rebuilt and re-imported keeps ids, timestamps and creation order).
        exported = self.export_state()
        var_id = exported["variable_index"].get(identifier, identifier)
        exported["variables"][var_id]["version"] = version - 1
        for other_id in exported["variables"]:
            self.delete_variable(other_id)
        self.import_state(exported)
        return version - 1


class StrictBatchReads(LocalState):
    """get_variables raises VariableNotFound for a missing identifier instead of skipping."""

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        identifiers = list(identifiers)
        for identifier in identifiers:
            self.get_variable(identifier)
        return super().get_variables(identifiers)


class OneShotCleanup(LocalState):
    """cleanup works once; a second call raises."""

    _spent = False

    def cleanup(self) -> None:
        if self._spent:
            raise SessionClosed(f"session {self.session_id!r} was already cleaned up")
        super().cleanup()
        self._spent = True


class VersionlessImport(LocalState):
    """import_state drops the versions: every imported variable restarts at 0."""

    def import_state(self, exported: Mapping[str, Any]) -> None:
        variables = exported.get("variables") if isinstance(exported, Mapping) else None
        if isinstance(variables, Mapping):
            exported = copy.deepcopy(dict(exported))
            for record in exported["variables"].values():
                if isinstance(record, dict) and "version" in record:
                    record["version"] = 0
        super().import_state(exported)


class BlindCompareAndSet(LocalState):
    """set_variable ignores expected_version."""

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return super().set_variable(identifier, new_value, metadata)


class FuzzyCapabilities(LocalState):
    """capabilities() answers 1 and 0 instead of True and False."""

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        fuzzy: dict[str, Any] = {key: int(v) for key, v in super().capabilities().items()}
        return fuzzy


class VagueErrors(LocalState):
    """set_variable's ValidationError keeps its attributes but says nothing useful."""

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        try:
            return super().set_variable(
                identifier, new_value, metadata, expected_version=expected_version
            )
        except ValidationError as exc:
            raise ValidationError(
                "invalid value", variable=exc.variable, rule=exc.rule, value=exc.value
            ) from None


class LeakyFailedSet(LocalState):
    """A set that fails validation still writes: the version and metadata move."""

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        try:
            return super().set_variable(
                identifier, new_value, metadata, expected_version=expected_version
            )
        except ValidationError:
            super().set_variable(identifier, self.get_variable(identifier), metadata)
            raise


class LenientDelete(LocalState):
    """delete_variable of a missing variable silently succeeds."""

    def delete_variable(self, identifier: str) -> None:
        with contextlib.suppress(KeyError):
            super().delete_variable(identifier)


class PiecemealImport(LocalState):
    """import_state imports variable by variable, trusting the records over the index."""

    def import_state(self, exported: Mapping[str, Any]) -> None:
        variables = exported.get("variables") if isinstance(exported, Mapping) else None
        if not isinstance(variables, Mapping) or not {
            "session_id",
            "variable_index",
        } <= set(exported):
            super().import_state(exported)
            return
        for var_id, record in variables.items():
            name = record.get("name") if isinstance(record, Mapping) else None
            super().import_state(
                {
                    "session_id": exported["session_id"],
                    "variables": {var_id: record},
                    "variable_index": {name: var_id},
                    "metadata": {},
                }
            )


class TornExport(LocalState):
    """export_state is built from two moments: one record's value from an earlier read."""

    def export_state(self) -> dict[str, Any]:
        first = next(iter(self.list_variables()), None)
        exported = super().export_state()
        if first is not None and first["id"] in exported["variables"]:
            exported["variables"][first["id"]]["value"] = first["value"]
        return exported


_NEVER = threading.Event()


class HangsAfterCleanup(LocalState):
    """After cleanup, get_variable blocks forever instead of raising SessionClosed."""

    _closed_here = False

    def get_variable(self, identifier: str) -> Any:
        if self._closed_here:
            _NEVER.wait()
        return super().get_variable(identifier)

    def cleanup(self) -> None:
        super().cleanup()
        self._closed_here = True


class DeferredWrites(LocalState):
    """set_variable answers before the write is applied: a worker thread applies it
    later, so a read right after a completed set may see the old value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: queue.SimpleQueue[tuple[str, Any, Mapping[str, Any] | None]]
        self._pending = queue.SimpleQueue()
        threading.Thread(target=self._apply_pending, name="deferred-writes", daemon=True).start()

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        version = self.get_record(identifier).version
        if expected_version is not None and expected_version != version:
            return super().set_variable(
                identifier, new_value, metadata, expected_version=expected_version
            )
        self._pending.put((identifier, new_value, metadata))
        return version + 1

    def _apply_pending(self) -> None:
        while True:
            identifier, new_value, metadata = self._pending.get()
            with contextlib.suppress(StateError):
                super().set_variable(identifier, new_value, metadata)


class NameOnlyRecords(LocalState):
    """get_record finds a variable by its name only, not by its id."""

    def get_record(self, identifier: str) -> VariableRecord:
        for record in self.list_variables():
            if record["name"] == identifier:
                return VariableRecord.from_dict(record)
        raise VariableNotFound(f"variable {identifier!r} not found", variable=identifier)


class SharedRecords(LocalState):
    """get_record hands every caller the same record for a version, so one caller's
    edit to its value or metadata shows up in the next caller's record."""

    _shared: dict[tuple[str, int], VariableRecord] | None = None

    def get_record(self, identifier: str) -> VariableRecord:
        record = super().get_record(identifier)
        if self._shared is None:
            self._shared = {}
        return self._shared.setdefault((record.id, record.version), record)


class CaseBlindPatterns(LocalState):
    """list_variables(pattern) matches names without regard to case."""

    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        if not isinstance(pattern, str) or not pattern:
            return super().list_variables(pattern)
        glob = pattern.lower()
        records = super().list_variables()
        return [r for r in records if fnmatch.fnmatchcase(r["name"].lower(), glob)]


class LenientPatterns(LocalState):
    """list_variables lists everything for a pattern that is not a string."""

    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        return super().list_variables(pattern if isinstance(pattern, str) else None)


def _hand_to(subscriber: Subscriber, event: Event) -> None:
    """Give one event to a subscriber as LocalState would: call it, or tell the actor."""
    if isinstance(subscriber, pykka.ActorRef):
        subscriber.tell(event)
    else:
        subscriber(event)


class DropsEveryHundredth(LocalState):
    """A subscription misses every 100th event it should deliver."""

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> Any:
        count = itertools.count(1)

        def deliver(event: Event) -> None:
            if next(count) % 100:
                _hand_to(subscriber, event)

        return super().subscribe(pattern, deliver, start=start)


class SwapsNeighbours(LocalState):
    """A subscription delivers each event whose sequence ends in 7 after the event
    that follows it (and never, if none follows)."""

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> Any:
        held: list[Event] = []

        def deliver(event: Event) -> None:
            if event.sequence % 10 == 7 and event.kind not in ("overflow", "closed"):
                held.append(event)
                return
            _hand_to(subscriber, event)
            while held:
                _hand_to(subscriber, held.pop())

        return super().subscribe(pattern, deliver, start=start)


class _Listener:
    """NotifiesUnderWriteLock's subscription: a context manager that stops listening."""

    def __init__(
        self, pattern: str | None, subscriber: Subscriber, listeners: list[_Listener]
    ) -> None:
        self.pattern = pattern
        self.subscriber = subscriber
        self._listeners = listeners
        listeners.append(self)

    def deliver(self, event: Event) -> None:
        if name_matches(event.name or "", self.pattern):
            _hand_to(self.subscriber, event)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NotifiesUnderWriteLock(LocalState):
    """set_variable calls subscribers synchronously, in the writer's thread, while it
    holds the handle's write lock: a subscriber that writes back deadlocks. (Only
    set_variable notifies; this backend runs only the test aimed at that.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_lock = threading.Lock()
        self._listeners: list[_Listener] = []
        self._sequence = itertools.count(1)

    def subscribe(
        self, pattern: str | None, subscriber: Subscriber, *, start: int | None = None
    ) -> Any:
        return _Listener(pattern, subscriber, self._listeners)

    def unsubscribe(self, subscription: Any) -> None:
        subscription.close()

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        with self._write_lock:
            version = super().set_variable(
                identifier, new_value, metadata, expected_version=expected_version
            )
            record = self.get_record(identifier)
            event = Event(
                self.session_id,
                next(self._sequence),
                "updated",
                record.id,
                record.name,
                record.value,
                record.version,
                record.metadata,
                record.last_updated_at,
            )
            for listener in list(self._listeners):
                listener.deliver(event)
            return version


class NeedsToken(LocalState):
    """Not broken: a backend whose init requires an option, fed by provider_options."""

    @classmethod
    def init(
        cls,
        *,
        session_id: str | None = None,
        existing_state: Mapping[str, Any] | None = None,
        token: str | None = None,
        **backend_opts: Any,
    ) -> Self:
        if token != "s3cret":
            raise TypeError(f"NeedsToken.init needs token='s3cret', got {token!r}")
        return super().init(session_id=session_id, existing_state=existing_state, **backend_opts)


# ------------------------------------------------------------------------ harness


class Breakage(NamedTuple):
    """A broken backend and the kit tests (regular expressions over test names, one
    parametrized case or several) that must each fail against it."""

    backend: str
    must_fail: tuple[str, ...]
    guard: float = 30.0


BREAKAGES = [
    Breakage(
        "PiecemealUpdates",
        (
            r"test_update_variables_one_bad_value_changes_nothing",
            r"test_update_variables_unknown_identifier_changes_nothing",
            r"test_update_variables_reports_every_failing_entry",
            r"test_type_rejects_value\[.*-update\]",
            r"test_readers_never_see_half_a_batch",
            r"test_export_never_shows_half_a_batch",
        ),
    ),
    Breakage(
        "UnbumpedSets",
        (
            r"test_versions_start_at_zero_and_grow_by_one",
            r"test_expected_version_current_succeeds",
            r"test_type_accepts_value\[.*\]",
            r"test_get_record_version_follows_writes",
        ),
    ),
    Breakage(
        "StrictBatchReads",
        (
            r"test_get_variables_keyed_as_given_and_skips_missing",
            r"test_delete_then_get_raises_variable_not_found",
        ),
    ),
    Breakage(
        "OneShotCleanup",
        (r"test_cleanup_is_idempotent", r"test_basic_variable_lifecycle"),
    ),
    Breakage(
        "VersionlessImport",
        (
            r"test_import_state_keeps_everything",
            r"test_import_state_adds_to_existing_variables",
            r"test_init_with_existing_state_imports_it",
            r"test_export_state_is_msgpack_plain_data",
        ),
    ),
    Breakage(
        "BlindCompareAndSet",
        (
            r"test_expected_version_stale_raises_version_conflict\[.*\]",
            r"test_expected_version_concurrent_writers_lose_no_update",
        ),
    ),
    Breakage(
        "FuzzyCapabilities",
        (r"test_capabilities_are_exact_booleans", r"test_capabilities_and_metadata"),
    ),
    Breakage("VagueErrors", (r"test_type_rejects_value\[.*-set\]",)),
    Breakage(
        "LeakyFailedSet",
        (
            r"test_type_rejects_value\[.*-set\]",
            r"test_versions_start_at_zero_and_grow_by_one",
        ),
    ),
    Breakage("LenientDelete", (r"test_delete_missing_raises_variable_not_found",)),
    Breakage(
        "PiecemealImport",
        (
            r"test_import_rejects_bad_export\[(index|variable-missing|record|unknown"
            r"|value|constraint)-.*\]",
            r"test_import_rejects_name_clash",
            r"test_readers_never_see_half_an_import",
        ),
    ),
    Breakage(
        "TornExport",
        (r"test_export_and_list_are_whole_under_writes", r"test_export_never_shows_half_a_batch"),
    ),
    Breakage(
        "DeferredWrites",
        (r"test_writer_reads_its_own_writes", r"test_completed_write_is_visible_to_other_threads"),
    ),
    Breakage(
        "HangsAfterCleanup",
        (r"test_operations_after_cleanup_raise_promptly", r"test_context_manager_cleans_up"),
        guard=0.5,
    ),
    Breakage("NameOnlyRecords", (r"test_get_record_matches_the_listing_by_name_and_id",)),
    Breakage("SharedRecords", (r"test_get_record_returns_copies",)),
    Breakage(
        "CaseBlindPatterns",
        (r"test_list_variables_pattern_globs_names\[(temp_\*|Temp_\*|temp\*|TEMP_A)\]",),
    ),
    Breakage(
        "LenientPatterns",
        (r"test_list_variables_rejects_a_pattern_that_is_not_a_string\[.*\]",),
    ),
    Breakage(
        "DropsEveryHundredth",
        (
            r"test_rapid_writes_arrive_complete_and_in_order",
            r"test_batch_yields_consecutive_events",
        ),
    ),
    Breakage(
        "SwapsNeighbours",
        (
            r"test_rapid_writes_arrive_complete_and_in_order",
            r"test_batch_yields_consecutive_events",
        ),
        guard=5.0,
    ),
    Breakage(
        "NotifiesUnderWriteLock", (r"test_subscriber_may_call_back_into_the_session",), guard=0.5
    ),
]

_CONTROLS = (
    r"test_implements_all_required_callbacks",
    r"test_get_missing_raises_variable_not_found",
    r"test_register_taken_name_raises_variable_exists",
    r"test_unknown_type_rejected\[.*\]",
    r"test_list_variables_pattern_globs_names\[top_\?\]",
)
"""Tests unrelated to any of the defects: they pass for every broken backend."""

_CORRECT = ("LocalState", "NeedsToken")
"""Correct backends: they pass every kit test they run."""

_FIRST_CASE_ONLY = ("NeedsToken",)
"""Correct backends that run each kit test function once (its first parametrized
case): enough to open providers every way the kit does."""

_KIT_MODULE = """
import importlib.util

import pytest

# Everything the kit exports, in a test module's namespace: none of it may be
# collected by itself, only the Test* classes below.
from dspex_actors.testing import *

_spec = importlib.util.spec_from_file_location("broken_backends", {path!r})
_backends = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_backends)
"""

_KIT_CLASS = """

class Test{backend}(StateProviderContract):
    provider = _backends.{backend}
    hang_guard_seconds = {guard!r}
"""

_TOKEN_OPTIONS = """
    @pytest.fixture
    def provider_options(self):
        return {"token": "s3cret"}
"""

_CONFTEST = """
import re

# Per class: the kit test functions it runs, and patterns its test names must match.
FUNCTIONS = {functions!r}
PATTERNS = {patterns!r}
# Classes that run each kit test function once (its first parametrized case).
FIRST_CASE_ONLY = {first_case_only!r}


def pytest_pycollect_makeitem(collector, name, obj):
    # Skip a function no pattern of this class names before pytest builds its cases.
    functions = FUNCTIONS.get(collector.name)
    if functions is not None and name.startswith("test_") and name not in functions:
        return []
    return None


def pytest_collection_modifyitems(config, items):
    keep, drop, seen = [], [], set()
    for item in items:
        cls = item.cls.__name__
        patterns = PATTERNS.get(cls)
        if patterns is not None:
            wanted = any(re.fullmatch(p, item.name) for p in patterns)
        elif cls in FIRST_CASE_ONLY:
            wanted = (cls, item.originalname) not in seen
            seen.add((cls, item.originalname))
        else:
            wanted = True
        (keep if wanted else drop).append(item)
    config.hook.pytest_deselected(items=drop)
    items[:] = keep
"""


class KitRun(NamedTuple):
    """One subprocess run of the kit: per test class, test name -> outcome."""

    outcomes: dict[str, dict[str, str]]
    output: str

    def of(self, backend: str) -> dict[str, str]:
        """The outcomes of ``backend``'s class; fails when it ran nothing."""
        found = self.outcomes.get(f"Test{backend}", {})
        assert found, f"the kit ran nothing for {backend}:\n{self.output}"
        return found

    def report(self, backend: str) -> str:
        """The run's summary lines about ``backend``'s tests (what failed, and why)."""
        lines = [line for line in self.output.splitlines() if f"::Test{backend}::" in line]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def kit_run(tmp_path_factory: pytest.TempPathFactory) -> KitRun:
    """Run the kit once in a subprocess: the correct backends whole, each broken one
    on its aimed tests and the controls."""
    root = tmp_path_factory.mktemp("kit")
    module = _KIT_MODULE.format(path=__file__)
    for backend in _CORRECT:
        module += _KIT_CLASS.format(backend=backend, guard=30.0)
        module += _TOKEN_OPTIONS if backend == "NeedsToken" else ""
    for breakage in BREAKAGES:
        module += _KIT_CLASS.format(backend=breakage.backend, guard=breakage.guard)
    patterns = {f"Test{b.backend}": [*b.must_fail, *_CONTROLS] for b in BREAKAGES}
    functions = {cls: sorted({_function_of(p) for p in ps}) for cls, ps in patterns.items()}
    conftest = _CONFTEST.format(
        functions=functions,
        patterns=patterns,
        first_case_only=[f"Test{backend}" for backend in _FIRST_CASE_ONLY],
    )
    (root / "test_kit.py").write_text(module)
    (root / "conftest.py").write_text(conftest)
    report = root / "report.xml"
    # --tb=line: formatting two hundred expected failures in full took half the run.
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=line"]
    command += [f"--junitxml={report}", "--timeout=120", "test_kit.py"]
    # The subprocess imports this checkout's dspex_actors, whatever is installed, and
    # this file (for its backends) with the test helpers it imports.
    env = python_env()
    env["PYTHONPATH"] += os.pathsep + str(Path(__file__).parent)
    # check=False: failing kit tests are expected; the report says which.
    result = subprocess.run(
        command,
        check=False,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert report.exists(), f"no report; pytest said:\n{output}"
    return KitRun(_outcomes(report), output)


def _function_of(pattern: str) -> str:
    """The test function a pattern names: the part before its parameters."""
    function = pattern.partition(r"\[")[0]
    assert re.fullmatch(r"test_\w+", function), f"{pattern!r} does not start with a test name"
    return function


def _outcomes(report: Path) -> dict[str, dict[str, str]]:
    """Per class, per test: "failed" (a failure or error in any phase), "skipped" or
    "passed"."""
    outcomes: dict[str, dict[str, str]] = {}
    for case in ET.parse(report).iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        cls = str(case.get("classname")).rpartition(".")[2]
        outcomes.setdefault(cls, {})[str(case.get("name"))] = outcome
    return outcomes


def _matching(outcomes: dict[str, str], pattern: str) -> dict[str, str]:
    found = {name: o for name, o in outcomes.items() if re.fullmatch(pattern, name)}
    assert found, f"no kit test matches {pattern!r}; the run has {sorted(outcomes)}"
    return found


def _kit_functions() -> set[str]:
    """The names of the kit's test functions (each parametrized one once)."""
    return {name for name in dir(StateProviderContract) if name.startswith("test_")}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.backend for b in BREAKAGES])
def test_kit_catches_broken_backend(kit_run: KitRun, breakage: Breakage) -> None:
    outcomes = kit_run.of(breakage.backend)
    for pattern in breakage.must_fail:
        passed = [n for n, o in _matching(outcomes, pattern).items() if o != "failed"]
        assert not passed, f"{breakage.backend}: the kit did not catch it in {passed}"
    for pattern in _CONTROLS:
        broken = [n for n, o in _matching(outcomes, pattern).items() if o != "passed"]
        assert not broken, (
            f"{breakage.backend}: unrelated tests failed too: {broken}\n"
            + kit_run.report(breakage.backend)
        )


def test_kit_passes_for_local_state(kit_run: KitRun) -> None:
    outcomes = kit_run.of("LocalState")
    failed = sorted(n for n, o in outcomes.items() if o != "passed")
    assert not failed, f"LocalState fails the kit: {failed}\n" + kit_run.report("LocalState")
    ran = {name.partition("[")[0] for name in outcomes}
    assert ran == _kit_functions(), f"LocalState did not run {_kit_functions() - ran}"
    assert len(outcomes) > 250, "LocalState did not run every parametrized case"


def test_provider_options_reach_every_init(kit_run: KitRun) -> None:
    """NeedsToken's init fails without its option; it passes every kit test function
    (each parametrized one once: its cases open providers the same way)."""
    outcomes = kit_run.of("NeedsToken")
    failed = sorted(n for n, o in outcomes.items() if o != "passed")
    assert not failed, f"provider_options did not reach init: {failed}\n" + kit_run.report(
        "NeedsToken"
    )
    ran = {name.partition("[")[0] for name in outcomes}
    assert ran == _kit_functions(), f"NeedsToken did not run {_kit_functions() - ran}"


def test_kit_class_is_not_collected_by_itself(kit_run: KitRun) -> None:
    """Importing everything the kit exports into a test module collects nothing
    of it: the run holds only the generated ``Test*`` classes."""
    expected = {f"Test{b}" for b in _CORRECT} | {f"Test{b.backend}" for b in BREAKAGES}
    assert set(kit_run.outcomes) == expected


def test_kit_modules_get_assertion_rewriting() -> None:
    """conftest.py registers ``dspex_actors.testing``; every module of the package is
    rewritten with it, so the kit's failures show the values they compared."""
    package = dspex_actors.testing
    names = [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
    assert len(names) >= 9, names
    for name in [package.__name__, *names]:
        # The rewriter puts its helper import at the top of every module it rewrites.
        assert "@pytest_ar" in vars(sys.modules[name]), f"{name} was not rewritten"
    with LocalState.init() as state, pytest.raises(AssertionError) as info:
        state.register_variable("a", "integer", 1)
        dspex_actors.testing.base.assert_unchanged(state, [])
    assert "where False = same(" in str(info.value), str(info.value)
