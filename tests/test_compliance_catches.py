"""The compliance kit catches broken backends (and passes the real one).

Each backend below is LocalState with exactly one defect, written against the public
API only. For each, pytest runs the whole kit in a subprocess (``pytester``) and we
check that the contract tests aimed at that defect fail, while a few unrelated
control tests still pass: the kit pinpoints the breakage rather than failing
wholesale. The same kit, run the same way, passes for LocalState itself.

The subprocess keeps the broken backends' stray threads (a hanging call, a half-done
batch) out of this process, where the leak check in ``conftest.py`` would see them.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Self

import pytest

import dspex_actors
from dspex_actors import LocalState
from dspex_actors.errors import PartialFailure, SessionClosed, StateError, ValidationError

pytest_plugins = ["pytester"]

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

_REPO_ROOT = Path(dspex_actors.__file__).resolve().parents[1]

_KIT_MODULE = """
import importlib.util

import pytest

from dspex_actors.testing import StateProviderContract

_spec = importlib.util.spec_from_file_location("broken_backends", {path!r})
_backends = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_backends)


class TestKit(StateProviderContract):
    provider = _backends.{backend}
    hang_guard_seconds = {guard!r}
{extra}
"""

_TOKEN_OPTIONS = """
    @pytest.fixture
    def provider_options(self):
        return {"token": "s3cret"}
"""

_CONTROLS = (
    r"test_implements_all_required_callbacks",
    r"test_get_missing_raises_variable_not_found",
    r"test_register_taken_name_raises_variable_exists",
    r"test_unknown_type_rejected\[.*\]",
)
"""Tests unrelated to any of the defects: they pass for every broken backend."""


def _run_kit(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    *,
    guard: float = 30.0,
    extra: str = "",
) -> dict[str, str]:
    """Run the whole kit against ``backend`` in a subprocess; test name -> outcome."""
    pytester.makepyfile(
        test_kit=_KIT_MODULE.format(path=__file__, backend=backend, guard=guard, extra=extra)
    )
    # The subprocess imports this checkout's dspex_actors, whatever is installed.
    monkeypatch.setenv("PYTHONPATH", str(_REPO_ROOT))
    report = pytester.path / "report.xml"
    args = ["-p", "no:cacheprovider", "-q", f"--junitxml={report}"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        args.append("--timeout=120")
    result = pytester.runpytest_subprocess(*args, timeout=600)
    assert report.exists(), f"no report; pytest said:\n{result.stdout.str()}"
    outcomes = _outcomes(report)
    assert outcomes, f"the kit collected nothing:\n{result.stdout.str()}"
    return outcomes


def _outcomes(report: Path) -> dict[str, str]:
    """Per test: "failed" (a failure or error in any phase), "skipped" or "passed"."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            outcome = "failed"
        elif "skipped" in tags:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes[str(case.get("name"))] = outcome
    return outcomes


def _matching(outcomes: dict[str, str], pattern: str) -> dict[str, str]:
    found = {name: o for name, o in outcomes.items() if re.fullmatch(pattern, name)}
    assert found, f"no kit test matches {pattern!r}; the kit has {sorted(outcomes)}"
    return found


class Breakage(NamedTuple):
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
        ),
    ),
    Breakage(
        "UnbumpedSets",
        (
            r"test_versions_start_at_zero_and_grow_by_one",
            r"test_expected_version_current_succeeds",
            r"test_type_accepts_value\[.*\]",
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
        (r"test_expected_version_stale_raises_version_conflict\[.*\]",),
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
        "HangsAfterCleanup",
        (r"test_operations_after_cleanup_raise_promptly", r"test_context_manager_cleans_up"),
        guard=1.0,
    ),
]


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.backend for b in BREAKAGES])
def test_kit_catches_broken_backend(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, breakage: Breakage
) -> None:
    outcomes = _run_kit(pytester, monkeypatch, breakage.backend, guard=breakage.guard)
    for pattern in breakage.must_fail:
        passed = [n for n, o in _matching(outcomes, pattern).items() if o != "failed"]
        assert not passed, f"{breakage.backend}: the kit did not catch it in {passed}"
    for pattern in _CONTROLS:
        broken = [n for n, o in _matching(outcomes, pattern).items() if o != "passed"]
        assert not broken, f"{breakage.backend}: unrelated tests failed too: {broken}"


def test_kit_passes_for_local_state(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = _run_kit(pytester, monkeypatch, "LocalState")
    failed = sorted(n for n, o in outcomes.items() if o != "passed")
    assert not failed, f"LocalState fails the kit: {failed}"
    assert len(outcomes) > 200


def test_provider_options_reach_every_init(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes = _run_kit(pytester, monkeypatch, "NeedsToken", extra=_TOKEN_OPTIONS)
    failed = sorted(n for n, o in outcomes.items() if o != "passed")
    assert not failed, f"provider_options did not reach init: {failed}"


def test_kit_class_is_not_collected_by_itself(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(_REPO_ROOT))
    pytester.makepyfile(
        test_only_import="from dspex_actors.testing import StateProviderContract\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
