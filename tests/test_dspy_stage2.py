"""DSPex Stage 2's integration cases, against real DSPy and real backends.

DSPex's ``test/python/test_stage2_integration.py`` tested ``VariableAwareMixin``,
``VariableAwarePredict``/``ChainOfThought``/``ReAct``, ``ModuleVariableResolver``
and ``create_variable_aware_program`` against mocks of DSPy and of the session. Each
case below keeps its original name and tests its intent on
:class:`~dspex_actors.dspy.SessionModule`, with DSPy's own ``DummyLM`` and every
handle kind (LocalState, BridgedState on a real loopback server, RedisState on a
real Redis, a supervised Context). Where the old API differs, the docstring says
how the intent maps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import dspy
import pytest
from dspy_support import Recorder, configure

from dspex_actors import BridgedState, LocalState, RedisState, Supervisor
from dspex_actors.dspy import DSPY_MODULES, Modules, SessionModule, modules
from dspex_actors.errors import ValidationError, VariableNotFound
from dspex_actors.methods import SessionMethods

WAIT = 10.0  # a hang guard for a subscription's delivery


@pytest.fixture(params=["local", "bridged", "redis", "context"])
def session(request: pytest.FixtureRequest) -> Iterator[SessionMethods]:
    """A fresh session on one kind of handle."""
    if request.param == "local":
        with LocalState.init() as state:
            yield state
    elif request.param == "bridged":
        with BridgedState.init() as bridged:
            yield bridged
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        with RedisState.init(url=url) as stored:
            yield stored
    else:
        with Supervisor.start() as supervisor:
            yield supervisor.start_context()


@pytest.fixture
def recorder() -> Recorder:
    return configure()


def settle(program: SessionModule, state: SessionMethods, *names: str) -> None:
    """Wait until ``program`` holds the session's current value of each name."""
    for name in names:
        record = state.get_record(name)
        assert program.values.wait_for(name, record.version, WAIT, variable_id=record.id)


def lm_settings(state: SessionMethods, **values: Any) -> None:
    """Register the LM settings the cases use, with Stage 2's constraints."""
    rules = {
        "temperature": ("float", {"min": 0, "max": 2}),
        "reasoning_temp": ("float", {"min": 0, "max": 2}),
        "max_tokens": ("integer", {"min": 1, "max": 4096}),
        "max_react_iterations": ("integer", {"min": 1, "max": 20}),
        "model": ("string", {}),
    }
    for name, value in values.items():
        type_name, constraints = rules.get(name, ("float", {}))
        state.register_variable(name, type_name, value, constraints=constraints)


# --- TestVariableAwareMixin -------------------------------------------------------


def test_variable_binding(session: SessionMethods, recorder: Recorder) -> None:
    """An LM kwarg bound to a variable of another name: the binding is listed, and
    the call carries the variable's value."""
    lm_settings(session, llm_temperature=0.8)
    with SessionModule(
        session, "question -> answer", lm_variables={"temperature": "llm_temperature"}
    ) as program:
        assert program.bindings == {"temperature": "llm_temperature"}
        program(question="What is six times seven?")
    assert recorder.last["temperature"] == 0.8


def test_variable_sync(session: SessionMethods, recorder: Recorder) -> None:
    """``refresh()`` (was ``sync_variables_sync``) reads the variables now and returns
    what changed; the module's settings follow."""
    lm_settings(session, temperature=0.7)
    with SessionModule(session, "question -> answer") as program:
        assert program.settings == {"temperature": 0.7}
        session["temperature"] = 0.9
        updates = program.refresh()
        assert updates in ({"temperature": 0.9}, {})  # {}: the subscription was first
        assert program.settings == {"temperature": 0.9}
        assert program.refresh() == {}  # nothing changed since
        program(question="q")
    assert recorder.last["temperature"] == 0.9


def test_async_variable_sync(session: SessionMethods, recorder: Recorder) -> None:
    """The async path (``acall``) runs under the same live settings."""
    lm_settings(session, temperature=0.85)
    with SessionModule(session, "question -> answer") as program:
        result = asyncio.run(program.acall(question="q"))
    assert result.answer == "42"
    assert recorder.last["temperature"] == 0.85


def test_auto_sync_decorator(session: SessionMethods, recorder: Recorder) -> None:
    """No call to sync before ``forward``: a value set elsewhere reaches the module by
    its subscription, and the next call uses it (no round trip per call)."""
    lm_settings(session, temperature=0.5)
    with SessionModule(session, "question -> answer") as program:
        session["temperature"] = 0.95
        settle(program, session, "temperature")
        result = program(question="Test question")
    assert result.answer == "42"
    assert recorder.last["temperature"] == 0.95


# --- TestVariableAwareModules -----------------------------------------------------


def test_variable_aware_predict(session: SessionMethods, recorder: Recorder) -> None:
    """Stage 2's ``auto_bind_common``: with no bindings given, the LM's temperature and
    max_tokens bind to the session's variables of those names."""
    lm_settings(session, temperature=0.7, max_tokens=256)
    with SessionModule(session, "question -> answer") as program:
        assert program.bindings == {"temperature": "temperature", "max_tokens": "max_tokens"}
        assert isinstance(program.inner, dspy.Predict)
        program(question="q")
    assert (recorder.last["temperature"], recorder.last["max_tokens"]) == (0.7, 256)


def test_variable_aware_chain_of_thought(session: SessionMethods, recorder: Recorder) -> None:
    lm_settings(session, temperature=0.8, max_tokens=512)
    with SessionModule(session, "question -> answer", module="ChainOfThought") as program:
        result = program(question="Explain step by step: What is 2+2?")
        assert isinstance(program.inner, dspy.ChainOfThought)
    assert (result.reasoning, result.answer) == ("six times seven", "42")
    assert (recorder.last["temperature"], recorder.last["max_tokens"]) == (0.8, 512)


def test_variable_aware_react(session: SessionMethods, recorder: Recorder) -> None:
    """A ReAct's ``max_iters`` (was ``max_iterations``) bound to a session variable
    after the module was made (``bind``, was ``bind_variable``), and the LM settings
    reach every call of its loop."""
    lm_settings(session, temperature=0.6, max_react_iterations=3)
    with SessionModule(session, "question -> answer", module="ReAct", tools=[]) as program:
        program.bind(attribute_variables={"max_iters": "max_react_iterations"})  # a binding added
        with pytest.raises(VariableNotFound):
            program.bind(attribute_variables={"max_iters": "nothing"})  # changes nothing
        assert program.bindings["max_iters"] == "max_react_iterations"
        result = program(question="q")
        assert program.inner.max_iters == 3
        session["max_react_iterations"] = 7
        settle(program, session, "max_react_iterations")
        program(question="q")
        assert program.inner.max_iters == 7
    assert result.answer == "42"
    assert len(recorder.calls) >= 4  # a thought and an extract per call
    assert {call["temperature"] for call in recorder.calls} == {0.6}


def test_module_without_session_context(session: SessionMethods, recorder: Recorder) -> None:
    """A module bound to nothing (the session holds none of the common settings)
    works as plain DSPy: no bindings, nothing to refresh, the LM's own settings."""
    with SessionModule(session, "question -> answer") as program:
        assert program.bindings == {}
        assert program.refresh() == {}
        result = program(question="Test")
    assert result.answer == "42"
    assert recorder.last["temperature"] == 0.0  # DummyLM's own


# --- TestModuleVariableResolver ---------------------------------------------------


def test_module_resolution() -> None:
    assert modules.resolve("Predict") is dspy.Predict
    assert modules.resolve("ChainOfThought") is dspy.ChainOfThought
    assert modules.resolve("ReAct") is dspy.ReAct
    assert set(DSPY_MODULES) <= set(modules.names())


def test_unknown_module() -> None:
    with pytest.raises(ValidationError, match="unknown module type 'UnknownModule'") as caught:
        modules.resolve("UnknownModule", variable="module")
    assert (caught.value.variable, caught.value.rule) == ("module", "known_modules")


def test_module_creation(session: SessionMethods, recorder: Recorder) -> None:
    """The resolver builds a module by name; a SessionModule builds its inner one so."""
    assert isinstance(modules.create("Predict", "question -> answer"), dspy.Predict)
    with SessionModule(session, "question -> answer", module="ChainOfThought") as program:
        assert isinstance(program.inner, dspy.ChainOfThought)
        assert program.values.handle is session


class Custom(dspy.Module):
    """A program's own module, built as ``Custom(signature)``."""

    def __init__(self, signature: Any, **kwargs: Any) -> None:
        super().__init__()
        self.predict = dspy.Predict(signature)

    def forward(self, **kwargs: Any) -> Any:
        return self.predict(**kwargs)


def test_custom_module_registration(session: SessionMethods, recorder: Recorder) -> None:
    """A registered module is resolvable, creatable, and a ``module`` variable may
    choose it (checked against ``allowed_modules`` when bound)."""
    registry = Modules()
    registry.register("Custom", Custom)
    assert registry.resolve("Custom") is Custom
    assert isinstance(registry.create("Custom", "input -> output"), Custom)
    session.register_variable(
        "module", "module", "Custom", constraints={"allowed_modules": ["Custom", "Predict"]}
    )
    with SessionModule(
        session, "question -> answer", module_variable="module", registry=registry
    ) as program:
        assert program.module_name == "Custom"
        assert program(question="q").answer == "42"
        assert isinstance(program.inner, Custom)
    with pytest.raises(ValidationError, match="unknown module type 'Custom'"):
        SessionModule(session, "question -> answer", module_variable="module")  # not here


# --- TestVariableAwareProgram -----------------------------------------------------


def test_create_variable_aware_program(session: SessionMethods, recorder: Recorder) -> None:
    """``create_variable_aware_program('ChainOfThought', sig, ctx, bindings)`` is a
    SessionModule with those bindings."""
    lm_settings(session, reasoning_temp=0.3, max_tokens=64)
    with SessionModule(
        session,
        "question -> answer",
        module="ChainOfThought",
        lm_variables={"temperature": "reasoning_temp", "max_tokens": "max_tokens"},
    ) as program:
        assert isinstance(program.inner, dspy.ChainOfThought)
        assert program.bindings == {"temperature": "reasoning_temp", "max_tokens": "max_tokens"}
        program(question="q")
    assert (recorder.last["temperature"], recorder.last["max_tokens"]) == (0.3, 64)


def test_create_with_auto_prefix(session: SessionMethods, recorder: Recorder) -> None:
    """Stage 2 added a ``VariableAware`` prefix to a plain module name; here a plain
    DSPy name is all it takes to get a session-bound module."""
    lm_settings(session, temperature=1.1)
    with SessionModule(session, "question -> answer", module="Predict") as program:
        assert type(program.inner) is dspy.Predict
        program(question="q")
    assert recorder.last["temperature"] == 1.1


# --- TestIntegrationScenarios -----------------------------------------------------


def test_dynamic_module_configuration(session: SessionMethods, recorder: Recorder) -> None:
    """Temperature, max_tokens and the model itself reconfigured while the module
    lives; a refresh reports the two that changed."""
    lm_settings(session, temperature=0.7, max_tokens=256, model="gpt-4")
    with SessionModule(
        session,
        "question -> answer",
        lm_variables={"temperature": "temperature", "max_tokens": "max_tokens", "model": "model"},
    ) as program:
        program(question="q")
        assert (recorder.last["temperature"], recorder.last["max_tokens"]) == (0.7, 256)
        assert recorder.last["model"] == "gpt-4"
        session.update_variables({"temperature": 0.9, "max_tokens": 512})
        updates = program.refresh()
        assert set(updates) <= {"temperature", "max_tokens"}  # the rest came by events
        settle(program, session, "temperature", "max_tokens")
        program(question="q")
    assert (recorder.last["temperature"], recorder.last["max_tokens"]) == (0.9, 512)


def test_concurrent_variable_updates(session: SessionMethods, recorder: Recorder) -> None:
    """Two modules bound to one variable while two threads write it: both end on the
    value the session ends on (the last write, whichever it was)."""
    lm_settings(session, temperature=0.7)
    with (
        SessionModule(session, "q1 -> a1") as first,
        SessionModule(session, "q2 -> a2", module="ChainOfThought") as second,
    ):
        writers = [
            threading.Thread(target=session.set_variable, args=("temperature", value))
            for value in (0.8, 0.85)
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(WAIT)
        final = session["temperature"]
        assert final in (0.8, 0.85)
        for program in (first, second):
            settle(program, session, "temperature")
            assert program.settings == {"temperature": final}


def test_error_handling(session: SessionMethods, recorder: Recorder) -> None:
    """Binding a variable the session lacks fails at once, naming it (Stage 2
    swallowed the error and synced nothing); a bound variable deleted later leaves
    the module its last good value, and it keeps answering."""
    lm_settings(session, temperature=0.4)
    with pytest.raises(VariableNotFound, match="nonexistent"):
        SessionModule(session, "question -> answer", lm_variables={"missing": "nonexistent"})
    with SessionModule(session, "question -> answer") as program:
        session.delete_variable("temperature")
        assert program.refresh() == {}
        result = program(question="Test")
    assert result.answer == "42"
    assert recorder.last["temperature"] == 0.4
