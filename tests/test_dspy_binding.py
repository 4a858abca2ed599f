"""SessionModule beyond Stage 2's cases: a ``module`` variable choosing the class,
bindings checked when made, a snapshot per call, and DSPy's optimizers."""

from __future__ import annotations

from collections.abc import Iterator

import dspy
import pytest
from dspy_support import Recorder, configure

from dspex_actors import LocalState
from dspex_actors.dspy import SessionModule
from dspex_actors.errors import ValidationError

WAIT = 10.0


@pytest.fixture
def state() -> Iterator[LocalState]:
    with LocalState.init() as local:
        local.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        local.register_variable("max_tokens", "integer", 700, constraints={"min": 1})
        local.register_variable(
            "module",
            "module",
            "Predict",
            constraints={"allowed_modules": ["Predict", "ChainOfThought"]},
        )
        yield local


@pytest.fixture
def recorder() -> Recorder:
    return configure()


def arrived(program: SessionModule, state: LocalState, name: str) -> bool:
    record = state.get_record(name)
    return program.values.wait_for(name, record.version, WAIT, variable_id=record.id)


def test_a_module_variable_switches_the_inner_class_and_keeps_each_instance(
    state: LocalState, recorder: Recorder
) -> None:
    with SessionModule(state, "question -> answer", module_variable="module") as program:
        predict = program.inner
        assert isinstance(predict, dspy.Predict) and program.module_name == "Predict"
        state["module"] = "ChainOfThought"
        assert arrived(program, state, "module")
        assert program(question="q").reasoning == "six times seven"
        assert isinstance(program.inner, dspy.ChainOfThought)
        state["module"] = "Predict"
        assert arrived(program, state, "module")
        assert program.inner is predict  # what it learned is kept
        assert program.bindings["module"] == "module"


def test_a_module_variable_allowing_a_name_unknown_here_is_refused_when_bound(
    state: LocalState,
) -> None:
    state.register_variable(
        "strategy", "module", "Predict", constraints={"allowed_modules": ["Predict", "Mystery"]}
    )
    with pytest.raises(ValidationError, match=r"'strategy'.*unknown module type 'Mystery'") as bad:
        SessionModule(state, "question -> answer", module_variable="strategy")
    assert (bad.value.variable, bad.value.rule) == ("strategy", "known_modules")
    with pytest.raises(ValidationError, match="'temperature' cannot choose a module") as wrong:
        SessionModule(state, "question -> answer", module_variable="temperature")
    assert (wrong.value.variable, wrong.value.rule) == ("temperature", "module_variable")


def test_a_value_its_pinned_definition_refuses_never_reaches_the_module(
    state: LocalState, recorder: Recorder
) -> None:
    with SessionModule(state, "question -> answer") as program:
        state.delete_variable("temperature")
        state.register_variable("temperature", "float", 9.5)  # no max now; the pin has 2
        assert arrived(program, state, "temperature")
        assert program.values.refused == 1
        program(question="q")
        assert recorder.last["temperature"] == 0.7
        state["temperature"] = 1.5  # a value the pin takes, on the new variable
        assert arrived(program, state, "temperature")
        program(question="q")
        assert recorder.last["temperature"] == 1.5


def test_closed_it_keeps_its_last_settings_and_follows_no_more(
    state: LocalState, recorder: Recorder
) -> None:
    program = SessionModule(state, "question -> answer")
    program.close()
    program.close()  # idempotent
    state["temperature"] = 1.9
    program(question="q")
    assert recorder.last["temperature"] == 0.7
    assert program.refresh() == {"temperature": 1.9}  # an explicit read still works


def test_an_optimizer_compiles_it_and_the_copy_follows_the_same_session(
    state: LocalState, recorder: Recorder
) -> None:
    examples = [dspy.Example(question=f"q{i}", answer="42") for i in (1, 2)]
    trainset = [example.with_inputs("question") for example in examples]
    with SessionModule(state, "question -> answer") as program:
        optimizer = dspy.BootstrapFewShot(metric=lambda *_: True, max_bootstrapped_demos=1)
        compiled = optimizer.compile(program, trainset=trainset)
        assert compiled is not program and compiled.values.snapshot is program.values.snapshot
        assert compiled.inner.demos  # it learned a demo
        state["temperature"] = 0.1
        assert arrived(compiled, state, "temperature")
        compiled(question="q")
        assert recorder.last["temperature"] == 0.1
