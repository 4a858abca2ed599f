"""SessionModule and LiveValues against what a reviewer tried: set_lm, a module name
unknown here, a refresh overtaken by a re-registration, closing a copy."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from dspy_support import ANSWERS, Recorder, configure

from dspex_actors import LocalState
from dspex_actors.dspy import LiveValues, SessionModule
from dspex_actors.records import VariableRecord

WAIT = 10.0


@pytest.fixture
def recorder() -> Recorder:
    return configure()


@pytest.fixture
def state() -> Iterator[LocalState]:
    with LocalState.init() as local:
        local.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        yield local


def test_set_lm_gives_the_lm_to_tune(state: LocalState, recorder: Recorder) -> None:
    """``Module.set_lm`` (DSPy's way to give a program its LM) would set each
    predictor's own ``lm``, used before ``dspy.context``'s: on a SessionModule it
    sets the LM to tune, so the session's settings still reach every call."""
    with SessionModule(state, "question -> answer") as program:
        program.set_lm(DummyLM({"": ANSWERS}))
        program(question="q")
    assert recorder.last["temperature"] == 0.7  # not DummyLM's own 0.0


def test_a_string_module_variable_naming_an_unknown_module_keeps_the_last_good(
    state: LocalState, recorder: Recorder
) -> None:
    """A string variable may name any class: one this process cannot build keeps
    the module that ran last (not the first one built), ``module_name`` says which,
    and the refusal is counted."""
    state.register_variable("strategy", "string", "Predict")
    with SessionModule(state, "question -> answer", module_variable="strategy") as program:
        state["strategy"] = "ChainOfThought"
        record = state.get_record("strategy")
        assert program.values.wait_for("strategy", record.version, WAIT)
        assert isinstance(program.inner, dspy.ChainOfThought)  # the last good
        state["strategy"] = "NoSuchModule"
        record = state.get_record("strategy")
        assert program.values.wait_for("strategy", record.version, WAIT)
        name, inner = program.module_name, program.inner
        assert program.values.refused == 1
    assert isinstance(inner, dspy.ChainOfThought), type(inner)
    assert name == "ChainOfThought", name


class PausingState(LocalState):
    """A real LocalState whose next ``get_record`` of an armed name stops after
    reading, until released: a deterministic interleaving of a read and a write."""

    armed: str | None = None
    read = threading.Event()
    release = threading.Event()

    def get_record(self, identifier: str) -> VariableRecord:
        record = super().get_record(identifier)
        if identifier == self.armed:
            self.armed = None
            self.read.set()
            assert self.release.wait(WAIT)
        return record


def test_a_stale_refresh_does_not_undo_a_reregistration() -> None:
    """``refresh()`` reads a variable; before its answer is applied the variable is
    deleted and registered again (a new id) and the event of that lands. The read is
    then older than what the events said, and is dropped: the values keep the new
    variable's."""
    with PausingState.init() as state:
        state.read, state.release = threading.Event(), threading.Event()
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        with LiveValues(state, ["temperature"]) as values:
            state.armed = "temperature"
            refresher = threading.Thread(target=values.refresh)
            refresher.start()
            try:
                assert state.read.wait(WAIT)  # the refresh has read 0.7, not applied yet
                state.delete_variable("temperature")
                state.register_variable(
                    "temperature", "float", 0.3, constraints={"min": 0, "max": 2}
                )
                new = state.get_record("temperature")
                assert values.wait_for("temperature", new.version, WAIT, variable_id=new.id)
            finally:
                state.release.set()
                refresher.join(WAIT)
            assert values.values["temperature"] == 0.3  # not 0.7, the deleted one's


def test_closing_a_copy_leaves_the_original_following(
    state: LocalState, recorder: Recorder
) -> None:
    """A copy (``deepcopy``, ``reset_copy``, what ``BootstrapFewShot.compile``
    returns) reads its original's values; closing the copy leaves the original
    following the session."""
    with SessionModule(state, "question -> answer") as program:
        clone = program.deepcopy()
        clone.close()
        state["temperature"] = 1.5
        record = state.get_record("temperature")
        assert program.values.wait_for("temperature", record.version, WAIT)
        assert clone.values.values["temperature"] == 1.5  # the copy reads the same
