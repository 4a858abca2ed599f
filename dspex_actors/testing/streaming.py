"""Change streaming: ``subscribe``, ``unsubscribe`` and the events they deliver.

A backend whose ``capabilities()["streaming"]`` is True must deliver every change
(``registered``, ``updated``, ``deleted``) to every subscriber whose glob matches
the variable's name, complete and in sequence order, from the moment ``subscribe``
returns until ``unsubscribe`` (or the end of a ``with`` block) returns — the events
of writes made before it delivered by then, and nothing (not even ``closed``) after
it; a batch's
or an import's events come together; a subscriber that raises, calls back into
the session or is a Pykka actor works; cleanup ends every subscription with one
``closed`` event. Against a backend without streaming each test here checks
instead that ``subscribe`` and ``unsubscribe`` raise ``NotSupported`` (so every
test still opens a provider through ``provider_options``).

Subscribers are :class:`EventRecorder` objects, which keep what they are given
under a condition. A test waits only for an event it knows must come (a marker
written after the writes it checks, so with ordered delivery everything before it
has come too), never for an absence; the hang guard turns an event that never
comes, or a write that deadlocks with its subscriber, into a failure. Nothing is
timed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import pykka
import pytest

from dspex_actors.errors import NotSupported, StateError, ValidationError
from dspex_actors.provider import StateProvider
from dspex_actors.testing.base import ContractBase, Opener, guarded_call, run_threads, same

__all__ = ["EventRecorder", "StreamEvent", "StreamingContract"]

RAPID_WRITES = 1_000
"""Writes in a burst that every subscriber must see complete and in order."""

BATCHES = 50
"""Three-variable batches raced against single writes to another variable."""

WRITES_AFTER_SUBSCRIBE = 20
"""Writes the racing writer still makes once ``subscribe`` has returned."""

MAX_RACING_WRITES = 100_000
"""Bounds the racing writer should ``subscribe`` never return."""

WRITES_AFTER_UNSUBSCRIBE = 50
"""Writes a stopped subscription must not see (each one a chance to catch a leak)."""

DRAIN_ROUNDS = 20
"""Subscriptions left right after a write, each of which must have delivered it."""


class StreamEvent(Protocol):
    """What the kit reads of an event (:class:`dspex_actors.streaming.Event` has it)."""

    @property
    def session_id(self) -> str: ...
    @property
    def sequence(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def variable_id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def value(self) -> Any: ...
    @property
    def version(self) -> int | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def timestamp(self) -> float | None: ...


def _ignore(event: Any) -> None:
    """A subscriber that does nothing (for the not-supported checks)."""


def describe(events: Iterable[StreamEvent], last: int = 12) -> str:
    """The last few events, briefly, for a failure message."""
    shown = [f"#{e.sequence} {e.kind} {e.name}@{e.version}={e.value!r}" for e in events]
    skipped = max(0, len(shown) - last)
    return ("… " if skipped else "") + ", ".join(shown[skipped:])


class EventRecorder:
    """A subscriber keeping every event it is given, in order; tests wait on it.

    ``react`` runs after each event is recorded (in the delivery thread), so a
    test can make a subscriber that raises or calls back into the session.
    """

    def __init__(
        self,
        guard: float,
        label: str,
        react: Callable[[StreamEvent], None] | None = None,
    ) -> None:
        self.label = label
        self._guard = guard
        self._react = react
        self._events: list[StreamEvent] = []
        self._changed = threading.Condition()

    def __call__(self, event: StreamEvent) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()
        if self._react is not None:
            self._react(event)

    @property
    def events(self) -> list[StreamEvent]:
        """A copy of the events so far."""
        with self._changed:
            return list(self._events)

    def wait_for(self, what: str, found: Callable[[StreamEvent], bool]) -> list[StreamEvent]:
        """Wait (within the hang guard) until an event ``found`` accepts has come;
        return every event so far."""
        scanned = 0

        def arrived() -> bool:
            nonlocal scanned
            while scanned < len(self._events):
                if found(self._events[scanned]):
                    return True
                scanned += 1
            return False

        with self._changed:
            if not self._changed.wait_for(arrived, self._guard):
                pytest.fail(
                    f"subscriber {self.label!r}: {what} was not delivered within "
                    f"{self._guard}s; it got {len(self._events)} events: "
                    f"{describe(self._events)}"
                )
            return list(self._events)


def change(name: str, version: int, kind: str | None = None) -> Callable[[StreamEvent], bool]:
    """Accepts the event of ``name`` reaching ``version`` (of ``kind``, if given)."""

    def matches(event: StreamEvent) -> bool:
        return (
            event.name == name
            and event.version == version
            and (kind is None or event.kind == kind)
        )

    return matches


def assert_in_order(recorder: EventRecorder, events: list[StreamEvent]) -> None:
    """Sequences strictly increase: no event twice, none out of order."""
    for before, after in itertools.pairwise(events):
        assert after.sequence > before.sequence, (
            f"subscriber {recorder.label!r} got #{after.sequence} after #{before.sequence}: "
            f"{describe(events[: events.index(after) + 1])}"
        )


def assert_consecutive(what: str, events: list[StreamEvent]) -> None:
    """The events' sequences are consecutive: nothing missing, nothing between them."""
    sequences = [e.sequence for e in events]
    expected = list(range(sequences[0], sequences[0] + len(sequences))) if sequences else []
    if sequences != expected:
        gaps = [(a, b) for a, b in itertools.pairwise(sequences) if b != a + 1]
        pytest.fail(f"{what}: sequences not consecutive, breaks at {gaps[:10]}")


def _versions_of(events: Iterable[StreamEvent], name: str) -> list[int | None]:
    return [e.version for e in events if e.name == name]


class _EventActor(pykka.ThreadingActor):
    """A Pykka actor subscriber: hands every message it is told to a recorder."""

    def __init__(self, recorder: EventRecorder) -> None:
        super().__init__()
        self._recorder = recorder

    def on_receive(self, message: Any) -> None:
        self._recorder(message)


class StreamingContract(ContractBase):
    """``subscribe`` / ``unsubscribe`` and their events; ``NotSupported`` without streaming."""

    def _streams(self, state: StateProvider) -> bool:
        """Whether the backend streams; if it does not, check that it says so."""
        if self.provider.capabilities()["streaming"]:
            return True
        with pytest.raises(NotSupported), contextlib.ExitStack() as stack:
            stack.enter_context(state.subscribe(None, _ignore))  # stopped should it start
        with pytest.raises(NotSupported):
            state.unsubscribe(object())
        return False

    def _recorder(
        self, label: str, react: Callable[[StreamEvent], None] | None = None
    ) -> EventRecorder:
        return EventRecorder(self.hang_guard_seconds, label, react)

    def test_subscription_follows_the_streaming_capability(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        recorder = self._recorder("all")
        subscription = state.subscribe(None, recorder)
        with subscription as entered:
            assert entered is subscription, "a subscription's `with` must yield itself"
            state.register_variable("a", "integer", 1)
            recorder.wait_for("a's registration", change("a", 0, "registered"))
            state.unsubscribe(subscription)
        # The block closed it once more, and so does this: stopping is idempotent.
        state.unsubscribe(subscription)

    def test_subscribe_rejects_a_bad_pattern_or_subscriber(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        for pattern in (42, b"a*", ["a*"]):
            with pytest.raises(ValidationError), contextlib.ExitStack() as stack:
                stack.enter_context(state.subscribe(pattern, _ignore))  # type: ignore[arg-type]
        with pytest.raises(TypeError), contextlib.ExitStack() as stack:
            stack.enter_context(state.subscribe(None, 42))

    def test_rapid_writes_arrive_complete_and_in_order(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        state.register_variable("counter", "integer", 0)
        state.register_variable("marker", "integer", 0)
        recorder = self._recorder("all")
        with state.subscribe(None, recorder):
            for value in range(1, RAPID_WRITES + 1):
                state.set_variable("counter", value)
            state.set_variable("marker", 1)
            events = recorder.wait_for("the marker after the burst", change("marker", 1))
        counted = [e for e in events if e.name == "counter"]
        versions = [e.version for e in counted]
        expected = list(range(1, RAPID_WRITES + 1))
        missing = sorted(set(expected) - set(versions))
        assert not missing, f"{len(missing)} of {RAPID_WRITES} writes lost: {missing[:10]}"
        assert versions == expected, f"versions out of order or repeated: {describe(counted)}"
        assert [e.value for e in counted] == expected
        assert {e.kind for e in counted} == {"updated"}
        assert_in_order(recorder, events)
        assert_consecutive("a subscriber of every variable", events)
        assert events[-1].name == "marker", describe(events)

    def test_events_describe_each_change_and_the_glob_filters(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        other_id = state.register_variable("other", "integer", 5)  # before: not delivered
        everything = self._recorder("all")
        t_only = self._recorder("t*")
        with state.subscribe(None, everything), state.subscribe("t*", t_only):
            temp_id = state.register_variable("temp", "float", 1.5, metadata={"unit": "C"})
            state.set_variable("temp", 2.5, {"source": "kit"})
            state.set_variable("other", 6)
            state.delete_variable("temp")
            end_id = state.register_variable("t_end", "integer", 0)
            events = everything.wait_for("t_end's registration", change("t_end", 0))
            filtered = t_only.wait_for("t_end's registration", change("t_end", 0))
        expected = [
            ("registered", "temp", temp_id, 0, 1.5),
            ("updated", "temp", temp_id, 1, 2.5),
            ("updated", "other", other_id, 1, 6),
            ("deleted", "temp", temp_id, 1, None),
            ("registered", "t_end", end_id, 0, 0),
        ]
        got = [(e.kind, e.name, e.variable_id, e.version, e.value) for e in events]
        assert len(got) == len(expected) and all(
            same(g, x) for g, x in zip(got, expected, strict=True)
        ), f"events {got!r}\nexpected {expected!r}"
        for event in events:
            assert event.session_id == state.session_id
            assert isinstance(event.timestamp, float), f"timestamp {event.timestamp!r}"
        registered, updated = events[0], events[1]
        assert registered.metadata is not None and registered.metadata.get("unit") == "C"
        assert updated.metadata is not None and updated.metadata.get("source") == "kit"
        assert_in_order(everything, events)
        assert_consecutive("a subscriber of every variable", events)
        names = [e.name for e in filtered]
        assert names == ["temp", "temp", "temp", "t_end"], (
            f"'t*' got {describe(filtered)}; expected temp's three changes and t_end"
        )
        assert [e.sequence for e in filtered] == [events[i].sequence for i in (0, 1, 3, 4)]

    def test_batch_yields_consecutive_events(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        batched = ("a", "b", "c")
        for name in (*batched, "x"):
            state.register_variable(name, "integer", 0)
        recorder = self._recorder("all")

        def batches() -> None:
            for i in range(1, BATCHES + 1):
                state.update_variables(dict.fromkeys(batched, i))

        def singles() -> None:
            for i in range(1, 4 * BATCHES + 1):
                state.set_variable("x", i)

        with state.subscribe(None, recorder):
            run_threads([batches, singles])
            state.register_variable("marker", "integer", 0)
            events = recorder.wait_for("the marker after the batches", change("marker", 0))
        assert_in_order(recorder, events)
        assert_consecutive("a subscriber of every variable", events)
        assert _versions_of(events, "x") == list(range(1, 4 * BATCHES + 1))
        for i in range(1, BATCHES + 1):
            at = [n for n, e in enumerate(events) if e.name in batched and e.version == i]
            batch = [events[n] for n in at]
            assert sorted(str(e.name) for e in batch) == list(batched), (
                f"batch {i} gave {describe(batch)}; expected one event per variable"
            )
            assert at == list(range(at[0], at[0] + len(at))), (
                f"batch {i}'s events are not together: {describe(events[at[0] : at[-1] + 1])}"
            )
            assert all(e.kind == "updated" and same(e.value, i) for e in batch), describe(batch)

    def test_import_yields_one_registered_event_per_variable(
        self, state: StateProvider, open_state: Opener
    ) -> None:
        if not self._streams(state):
            return
        source = open_state()
        source.register_variable("alpha", "integer", 1)
        source.set_variable("alpha", 2)
        source.set_variable("alpha", 3)
        source.register_variable("beta", "string", "b")
        source.register_variable("gamma", "float", 0.5)
        source.set_variable("gamma", 1.5)
        exported = source.export_state()
        state.register_variable("before", "integer", 0)
        recorder = self._recorder("all")
        with state.subscribe(None, recorder):
            state.import_state(exported)
            state.set_variable("before", 1)
            events = recorder.wait_for("the marker after the import", change("before", 1))
        imported, marker = events[:-1], events[-1]
        assert marker.name == "before", describe(events)
        assert_in_order(recorder, events)
        assert_consecutive("an import's events and the next write", events)
        assert sorted(str(e.name) for e in imported) == ["alpha", "beta", "gamma"], (
            f"the import gave {describe(imported)}; expected one event per variable"
        )
        expected = {"alpha": (2, 3), "beta": (0, "b"), "gamma": (1, 1.5)}
        for event in imported:
            assert event.kind == "registered", describe(imported)
            name = str(event.name)
            version, value = expected[name]
            assert event.version == version, f"{name} imported at {event.version}"
            assert same(event.value, value), f"{name} imported as {event.value!r}"
            assert event.variable_id == state.get_record(name).id

    def test_writes_after_subscribe_are_never_lost(self, state: StateProvider) -> None:
        """A writer races ``subscribe``: a write finished before ``subscribe`` was
        called is not delivered; one begun after it returned always is; between
        them, a suffix of the writes, in order."""
        if not self._streams(state):
            return
        state.register_variable("v", "integer", 0)
        state.register_variable("marker", "integer", 0)
        recorder = self._recorder("all")
        lock = threading.Lock()
        started = returned = 0
        writing = threading.Event()
        subscribed = threading.Event()

        def writer() -> None:
            nonlocal started, returned
            extra = 0
            for i in range(1, MAX_RACING_WRITES + 1):
                with lock:
                    started = i
                state.set_variable("v", i)
                with lock:
                    returned = i
                if i == 10:
                    writing.set()
                if subscribed.is_set():
                    extra += 1
                    if extra >= WRITES_AFTER_SUBSCRIBE:
                        return
            writing.set()

        def subscriber() -> None:
            assert writing.wait(self.hang_guard_seconds), "the writer did not start"
            with lock:
                finished_before = returned
            subscription = state.subscribe(None, recorder)
            with lock:
                begun_before = started
            subscribed.set()
            bounds.extend((finished_before, begun_before))
            subscriptions.append(subscription)

        bounds: list[int] = []
        subscriptions: list[Any] = []
        try:
            run_threads([writer, subscriber])
            state.set_variable("marker", 1)
            events = recorder.wait_for("the marker after the writer", change("marker", 1))
        finally:
            for subscription in subscriptions:
                state.unsubscribe(subscription)
        finished_before, begun_before = bounds
        last = state.get_record("v").version
        versions = _versions_of(events, "v")
        assert_in_order(recorder, events)
        assert not versions or versions == list(range(int(versions[0] or 0), last + 1)), (
            f"not a suffix of the writes 1..{last}: {describe(events)}"
        )
        first = versions[0] if versions else last + 1
        assert first is not None and first > finished_before, (
            f"write {first} finished before subscribe was called, but was delivered"
        )
        assert first <= begun_before + 1, (
            f"writes {begun_before + 1}..{first - 1} began after subscribe returned, "
            "but were not delivered"
        )

    def test_unsubscribe_stops_delivery(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        state.register_variable("v", "integer", 0)
        witness = self._recorder("witness")
        dropped = self._recorder("unsubscribed")
        left = self._recorder("left its with block")
        with state.subscribe(None, witness), state.subscribe(None, dropped) as subscription:
            with state.subscribe(None, left):
                state.set_variable("v", 1)
                for recorder in (witness, dropped, left):
                    recorder.wait_for("v's first write", change("v", 1))
            state.unsubscribe(subscription)
            last = 1 + WRITES_AFTER_UNSUBSCRIBE
            for value in range(2, last + 1):
                state.set_variable("v", value)
            witness.wait_for("the writes after unsubscribe", change("v", last))
            for recorder in (dropped, left):
                versions = _versions_of(recorder.events, "v")
                assert versions == [1], (
                    f"subscriber {recorder.label!r} still got events after it was stopped: "
                    f"{describe(recorder.events)}"
                )

    def test_leaving_a_subscription_first_delivers_what_was_written(
        self, state: StateProvider
    ) -> None:
        """The README's promise, without waiting: a write that returned before the
        subscription is left has been delivered when it is left, also when later
        writes (to names the pattern skips) came after it; every round, both ways."""
        if not self._streams(state):
            return
        state.register_variable("temperature", "integer", 0)
        state.register_variable("other", "integer", 0)
        for version in range(1, DRAIN_ROUNDS + 1):
            recorder = self._recorder(f"round {version}")
            subscription = state.subscribe("temp*", recorder)
            with subscription:
                state.set_variable("temperature", version)
                state.set_variable("other", version)
                if version % 2:
                    state.unsubscribe(subscription)  # the other rounds leave the block
            got = [(e.kind, e.name, e.version) for e in recorder.events]
            assert got == [("updated", "temperature", version)], describe(recorder.events)

    def test_nothing_follows_unsubscribe_not_even_closed(self, open_state: Opener) -> None:
        state = open_state()
        if not self._streams(state):
            return
        witness = self._recorder("witness")
        dropped = self._recorder("unsubscribed")
        state.register_variable("v", "integer", 0)
        with state.subscribe(None, witness):
            subscription = state.subscribe(None, dropped)
            state.set_variable("v", 1)
            state.unsubscribe(subscription)
            at_unsubscribe = dropped.events
            _, error = guarded_call("cleanup", state.cleanup, self.hang_guard_seconds)
            assert error is None, f"cleanup raised {error!r}"
            witness.wait_for("the closed event", lambda e: e.kind == "closed")
        assert [(e.kind, e.version) for e in at_unsubscribe] == [("updated", 1)]
        assert dropped.events == at_unsubscribe, (
            f"events after unsubscribe returned: {describe(dropped.events[len(at_unsubscribe) :])}"
        )

    def test_failing_subscriber_is_logged_and_isolated(
        self, state: StateProvider, caplog: pytest.LogCaptureFixture
    ) -> None:
        if not self._streams(state):
            return
        raised: list[BaseException] = []

        def fail(event: StreamEvent) -> None:
            error = RuntimeError(f"subscriber fails on #{event.sequence}")
            raised.append(error)
            raise error

        failing = self._recorder("failing", react=fail)
        healthy = self._recorder("healthy")
        state.register_variable("v", "integer", 0)
        with caplog.at_level(logging.WARNING), state.subscribe(None, failing):
            with state.subscribe(None, healthy):
                for value in (1, 2, 3):
                    state.set_variable("v", value)
                for recorder in (failing, healthy):
                    recorder.wait_for("every write despite the failures", change("v", 3))
            logged = [r for r in caplog.records if r.exc_info and r.exc_info[1] in raised]
        for recorder in (failing, healthy):
            assert _versions_of(recorder.events, "v") == [1, 2, 3], describe(recorder.events)
        assert state.get_variable("v") == 3
        assert state.set_variable("v", 4) == 4
        # Each failure was logged (before the next event: one delivery thread).
        assert len(logged) >= 2, (
            f"{len(raised)} subscriber failures, {len(logged)} logged with the exception"
        )
        assert all(r.levelno >= logging.WARNING for r in logged)

    def test_subscriber_may_call_back_into_the_session(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        state.register_variable("trigger", "integer", 0)
        state.register_variable("echo", "integer", 0)
        answers: list[Any] = []
        failures: list[Exception] = []

        def call_back(event: StreamEvent) -> None:
            try:
                answers.append(state.get_variable("trigger"))
                state.set_variable("echo", event.value)
            except Exception as exc:  # reported by the test, not lost in a log
                failures.append(exc)

        caller = self._recorder("calls back", react=call_back)
        echoes = self._recorder("echo")
        with state.subscribe("trigger", caller), state.subscribe("echo", echoes):
            _, error = guarded_call(
                "set_variable with a subscriber that writes back",
                lambda: state.set_variable("trigger", 1),
                self.hang_guard_seconds,
            )
            assert error is None, f"set_variable raised {error!r}"
            echoes.wait_for("the subscriber's own write", change("echo", 1))
        assert not failures, f"calling back from a subscriber raised {failures!r}"
        assert answers == [1]
        assert state.get_variable("echo") == 1

    def test_actor_subscriber_is_told_events(self, state: StateProvider) -> None:
        if not self._streams(state):
            return
        recorder = self._recorder("actor")
        actor = _EventActor.start(recorder)
        try:
            with state.subscribe("a", actor):
                state.register_variable("a", "integer", 1)
                state.register_variable("b", "integer", 1)
                state.set_variable("a", 2)
                events = recorder.wait_for("a's update", change("a", 1))
        finally:
            actor.stop()
        got = [(e.kind, e.name, e.version, e.value) for e in events]
        assert got == [("registered", "a", 0, 1), ("updated", "a", 1, 2)], got

    def test_cleanup_ends_subscriptions_with_closed(self, open_state: Opener) -> None:
        state = open_state()
        if not self._streams(state):
            return
        recorder = self._recorder("all")
        with state.subscribe(None, recorder):
            state.register_variable("a", "integer", 1)
            _, error = guarded_call("cleanup", state.cleanup, self.hang_guard_seconds)
            assert error is None, f"cleanup raised {error!r}"
            events = recorder.wait_for("the closed event", lambda e: e.kind == "closed")
        kinds = [e.kind for e in events]
        assert kinds == ["registered", "closed"], describe(events)
        closed = events[-1]
        assert closed.session_id == state.session_id
        assert closed.sequence >= events[0].sequence, describe(events)
        late, error = guarded_call(
            "subscribe after cleanup",
            lambda: state.subscribe(None, _ignore),
            self.hang_guard_seconds,
        )
        if late is not None:
            state.unsubscribe(late)
        assert isinstance(error, StateError), (
            f"subscribe after cleanup returned {late!r} / raised {error!r}"
        )
