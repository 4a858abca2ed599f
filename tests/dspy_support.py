"""Real DSPy for the tests: its DummyLM (no network, no weights) and a callback that
records the keyword arguments each LM call really carries (the LM's own, merged with
the call's), which is what a provider would be sent."""

from __future__ import annotations

import threading
from typing import Any

import dspy
import tqdm
from dspy.utils.callback import BaseCallback
from dspy.utils.dummies import DummyLM

ANSWERS = {
    "answer": "42",
    "reasoning": "six times seven",
    "next_thought": "I know it",
    "next_tool_name": "finish",
    "next_tool_args": {},
}
"""Every field the modules under test ask for; DummyLM answers each call with them."""


class Recorder(BaseCallback):
    """Keeps each LM call's effective kwargs, and the LM's model name."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        kwargs = {**instance.kwargs, **inputs.get("kwargs", {}), "model": instance.model}
        with self._lock:
            self.calls.append(kwargs)

    @property
    def last(self) -> dict[str, Any]:
        with self._lock:
            return self.calls[-1]


def configure() -> Recorder:
    """Point this process's DSPy at a DummyLM answering every prompt; the recorder."""
    # tqdm (DSPy's optimizers show progress with it) would leave its monitor thread
    # running; the suite fails a test that leaves a thread behind.
    tqdm.tqdm.monitor_interval = 0
    recorder = Recorder()
    # A "" key is in every prompt: DummyLM's dict mode then answers every call.
    dspy.configure(lm=DummyLM({"": ANSWERS}), callbacks=[recorder])
    return recorder
