"""Change streaming: how soon a subscriber hears of a write, how many events it absorbs,
and the cached bridged read.

**Event latency.** A subscriber stamps each event (``time.perf_counter_ns()``, first
thing in its callback); the writer stamps the moment ``set_variable`` returns. The
figure is arrival minus return, as the issue defines it, with one decision: an event
the subscriber had *before* the set returned counts as 0 (the subscriber knew before
the writer could tell anyone), not as a negative time. That is the common case, not
a corner: the session appends the event (waking the delivery thread, or the server's
Watch coroutine) in the same actor turn that answers the write, so the two race;
locally about half the events win, over the bridge nearly all of them (the event and
the reply leave the server together, and the reply has one more hop to make). Each
backend's share of events that came first is reported beside it, and so is the whole
path from the *call* of ``set_variable`` to the subscriber (``.call`` ids): the write
and the delivery together, which no clamping touches. All of them, the bare Pykka ask
and the bare grpcio echo they are judged against, and the cached reads below are
sampled in blocks interleaved round-robin (:mod:`benchmarks.timing`). The bridged
subscriber is a ``BridgedState.subscribe`` in this process, fed by the run's
SessionStore in its own process.

**Events absorbed per second.** A writer on a fresh session makes its writes back to
back (``set_variable`` one at a time, or ``update_variables`` of 100: 100 events a
call) while one subscriber to every name counts what arrives; the rate is events
delivered over the time from the first write to the last delivery, and each event's
lag (from its write's call to its arrival) gives the percentiles. Beside it, the same
writer alone, with no subscriber: events written per second. A session keeps its last
10,000 events, so a subscriber more than that behind gets one ``overflow`` event and
goes on from the present: the batch runs write more events than that on purpose, and
the events lost are reported (a set-at-a-time writer writes fewer, so it cannot lose
any: its rate is what matters there). Over the bridge the server's Watch falls behind
too (it sends one message per event): a full run's 30,000-event floods overflow in
some runs and not in others. An overflow can carry the subscriber past the writer's
closing mark, so the writer marks again after any overflow until a mark arrives.

**Cached read.** ``BridgedState.init(cache=True)`` after ``sync_cache()``, read like
``LocalState.get_variable`` and the dict lookup beside it: in batches of 2,000 calls,
so the percentiles are of batch means.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import grpc

from benchmarks.local import EchoActor
from benchmarks.progress import progress
from benchmarks.results import Backend
from benchmarks.servers import echo_stub
from benchmarks.suite import Op, Run, add_duration, sample_ops
from dspex_actors import BridgedState, LocalState
from dspex_actors.streaming import Event

SUITE = "streaming"
ASK = "event.pykka.ask"
ECHO = "event.grpc.echo"
DICT = "cache.dict.get"
_WAIT = 60.0  # seconds a writer waits for its event: only a broken stream takes long

State = LocalState | BridgedState


class EventClock:
    """A subscriber that stamps the arrival of each event of one variable, by version,
    and lets the writer wait for the event its write made."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._arrived = threading.Condition()
        self._stamps: dict[int, int] = {}

    def __call__(self, event: Event) -> None:
        now = time.perf_counter_ns()
        if event.name == self._name and event.version is not None:
            with self._arrived:
                self._stamps[event.version] = now
                self._arrived.notify_all()

    def arrival(self, version: int) -> int:
        """When the event of ``version`` arrived (waiting for it if it has not)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: version in self._stamps, _WAIT):
                raise TimeoutError(f"no event for version {version} of {self._name!r}")
            return self._stamps.pop(version)


class EventLatency:
    """One backend's two event probes (timed ops) over one subscribed variable.

    :meth:`after_return` is the issue's figure (arrival minus the set's return, 0 when
    the event came first); :meth:`from_call` times from the call. ``signed`` keeps every
    unclamped arrival-minus-return, for the share of events that came first.
    """

    def __init__(self, state: State, name: str) -> None:
        self.clock = EventClock(name)
        self._state = state
        self._name = name
        self._flip = 0
        self.signed: list[int] = []

    def _write(self) -> int:
        self._flip ^= 1
        version: int = self._state.set_variable(self._name, 1.0 if self._flip else 0.5)
        return version

    def after_return(self) -> float:
        version = self._write()
        returned = time.perf_counter_ns()
        lag = self.clock.arrival(version) - returned
        self.signed.append(lag)
        return float(max(0, lag))

    def from_call(self) -> float:
        called = time.perf_counter_ns()
        version = self._write()
        return float(self.clock.arrival(version) - called)

    def first_share(self, last: int) -> float:
        """Percent of the ``last`` after-return samples whose event came first."""
        recent = self.signed[-last:]
        return 100.0 * sum(1 for lag in recent if lag < 0) / len(recent)


@dataclass
class Flood:
    """One writer's run: what it wrote and what one subscriber (if any) received."""

    written: int  # events written (calls x batch)
    delivered: int  # "updated" events the subscriber received (0 without one)
    overflows: int  # "overflow" events it received
    seconds: float  # first write to last delivery (to the last write's return without one)
    samples: list[float]  # ns: each event's lag with a subscriber, each call's time without


class FloodCounter:
    """A subscriber to every name that stamps each flood event on arrival and follows
    the writer's ``mark`` variable (1: the stream is up; 2 and on: the flood is over)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int]] = []  # (value written = call + 1, ns)
        self.overflows = 0
        self.mark = 0
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        now = time.perf_counter_ns()
        if event.kind == "updated" and event.name != "mark":
            self.arrivals.append((event.value, now))
        elif event.kind in ("updated", "overflow"):
            with self._changed:
                if event.kind == "overflow":
                    self.overflows += 1
                else:
                    self.mark = event.value
                self._changed.notify_all()

    def wait(self, done: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(done, _WAIT * 4):
                raise TimeoutError(f"{what}: the subscriber had {len(self.arrivals)} events")

    def _ended(self, overflows_seen: int) -> bool:
        return self.mark >= 2 or self.overflows > overflows_seen

    def wait_for_end(self, state: State) -> None:
        """Write a mark after the flood and wait for it. An overflow may take the
        subscriber past a mark (it goes on from the present, and the mark is behind
        it): then the next mark, written after that overflow, is certain to come."""
        mark = 2
        seen = self.overflows
        state.set_variable("mark", mark)
        while True:
            self.wait(functools.partial(self._ended, seen), "after the flood")
            if self.mark >= 2:
                return
            seen, mark = self.overflows, mark + 1
            state.set_variable("mark", mark)


def _flood(make: Callable[[], State], batch: int, calls: int, subscribed: bool) -> Flood:
    """``calls`` writes of ``batch`` variables (one: ``set_variable``) on a fresh session."""
    state = make()
    try:
        names = ["x"] if batch == 1 else [f"x{i}" for i in range(batch)]
        for name in names:
            state.register_variable(name, "integer", 0)
        state.register_variable("mark", "integer", 0)
        batches = [dict.fromkeys(names, i + 1) for i in range(calls)] if batch > 1 else []
        counter = FloodCounter()
        issued = [0] * (calls + 1)
        with ExitStack() as stack:
            if subscribed:
                stack.enter_context(state.subscribe(None, counter))
                state.set_variable("mark", 1)
                counter.wait(lambda: counter.mark >= 1, "before the flood")
            for i in range(calls):
                issued[i] = time.perf_counter_ns()
                if batch == 1:
                    state.set_variable("x", i + 1)
                else:
                    state.update_variables(batches[i])
            issued[calls] = time.perf_counter_ns()
            if subscribed:
                counter.wait_for_end(state)
        written = calls * batch
        if not subscribed:
            per_call = [float(issued[i + 1] - issued[i]) for i in range(calls)]
            return Flood(written, 0, 0, (issued[calls] - issued[0]) / 1e9, per_call)
        arrivals = counter.arrivals
        lags = [float(stamp - issued[value - 1]) for value, stamp in arrivals]
        seconds = (arrivals[-1][1] - issued[0]) / 1e9 if arrivals else float("inf")
        return Flood(written, len(arrivals), counter.overflows, seconds, lags)
    finally:
        state.cleanup()


def _absorb(
    run: Run, backend: Backend, make: Callable[[], State], batch: int, calls: int, rounds: int
) -> None:
    """Floods with and without a subscriber, alternating; median rates, pooled samples."""
    kind = "set" if batch == 1 else "batch"
    base = f"events.{backend}.{kind}"
    what = "set_variable" if batch == 1 else f"update_variables ({batch} names)"
    doing = "sets" if batch == 1 else f"batches of {batch}"
    cls = "LocalState" if backend == "local" else "BridgedState"
    floods: dict[bool, list[Flood]] = {True: [], False: []}
    progress.stage(f"streaming: {cls}, {calls * batch:,} events by {what}, run", 2 * rounds)
    for r in range(rounds):
        for j, subscribed in enumerate((False, True)):
            floods[subscribed].append(_flood(make, batch, calls, subscribed))
            progress.step(2 * r + j + 1)
    alone = floods[False]
    add_duration(
        run,
        SUITE,
        f"{base}.alone",
        f"{cls}.{what}, writer alone: events written",
        backend,
        f"write.{kind}",
        [s for f in alone for s in f.samples],
        kind="throughput",
        rates=[f.written / f.seconds for f in alone],
    )
    heard = floods[True]
    add_duration(
        run,
        SUITE,
        base,
        f"{cls}: events absorbed, writer doing {doing}",
        backend,
        f"absorb.{kind}",
        [s for f in heard for s in f.samples],
        kind="throughput",
        baseline=f"{base}.alone",
        rates=[f.delivered / f.seconds for f in heard],
    )
    lost = sum(f.written - f.delivered for f in heard)
    overflows = sum(f.overflows for f in heard)
    run.results.value(
        f"streaming.{backend}.{kind}.lost",
        lost,
        "events",
        f"{cls}, writer doing {what}: events the subscriber lost to overflow, of "
        f"{sum(f.written for f in heard):,} written in {rounds} run(s) "
        f"({overflows} overflow event(s))",
    )


def run(run: Run) -> None:
    samples: int = run.pick(3000, 500)
    store, echo_server = run.servers.store(), run.servers.echo()
    with ExitStack() as cleanup:
        echo_actor = EchoActor.start()
        cleanup.callback(echo_actor.stop)
        channel = grpc.insecure_channel(echo_server.address)
        cleanup.callback(channel.close)
        echo = echo_stub(channel)

        local = LocalState.init()
        cleanup.callback(local.cleanup)
        bridged = BridgedState.init(address=store.address, timeout=30)
        cleanup.callback(bridged.cleanup)
        cached = BridgedState.init(address=store.address, timeout=30, cache=True)
        cleanup.callback(cached.cleanup)
        probes: dict[str, EventLatency] = {}
        for backend, state in (("local", local), ("bridged", bridged)):
            state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
            probes[backend] = EventLatency(state, "temperature")
            cleanup.enter_context(state.subscribe("temperature", probes[backend].clock))
        cached.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        cached.sync_cache()
        if not cached.cached:
            raise RuntimeError("BridgedState(cache=True) does not serve from its copy")
        plain: dict[str, Any] = {"temperature": 0.7}

        local_probe, bridged_probe = probes["local"], probes["bridged"]
        ops = [
            Op(ASK, "bare Pykka ask", "baseline", "ask", lambda: echo_actor.ask(1)),
            Op(
                "event.local",
                "LocalState event, after set_variable returned",
                "local",
                "event",
                local_probe.after_return,
                timed=True,
                kind="lag",
                baseline=ASK,
            ),
            Op(
                "event.local.call",
                "LocalState event, from set_variable's call",
                "local",
                "event.call",
                local_probe.from_call,
                timed=True,
                baseline=ASK,
            ),
            Op(
                ECHO,
                "bare grpcio echo (16 bytes)",
                "baseline",
                "echo",
                lambda: echo(b"\x00" * 16, timeout=10),
            ),
            Op(
                "event.bridged",
                "BridgedState event, after set_variable returned",
                "bridged",
                "event",
                bridged_probe.after_return,
                timed=True,
                kind="lag",
                baseline=ECHO,
            ),
            Op(
                "event.bridged.call",
                "BridgedState event, from set_variable's call",
                "bridged",
                "event.call",
                bridged_probe.from_call,
                timed=True,
                baseline=ECHO,
            ),
            Op(
                DICT,
                "dict lookup (d.get)",
                "baseline",
                "get",
                lambda: plain.get("temperature"),
                2000,
            ),
            Op(
                "cache.bridged.get",
                "BridgedState(cache=True).get_variable",
                "bridged",
                "cached.get",
                lambda: cached.get_variable("temperature"),
                2000,
                baseline=DICT,
            ),
            Op(
                "cache.local.get",
                "LocalState.get_variable",
                "local",
                "get",
                lambda: local.get_variable("temperature"),
                2000,
                baseline=DICT,
            ),
        ]
        sample_ops(run, SUITE, "streaming", ops, samples)
        for backend, probe in probes.items():
            cls = "LocalState" if backend == "local" else "BridgedState"
            run.results.value(
                f"streaming.{backend}.event_first_pct",
                probe.first_share(samples),
                "%",
                f"{cls} events the subscriber had before set_variable returned (counted as 0)",
            )
        if not cached.cached:
            raise RuntimeError("the cached handle stopped serving from its copy while sampled")

    runs: int = run.pick(3, 1)

    def bridged_session() -> BridgedState:
        return BridgedState.init(address=store.address, timeout=30)

    _absorb(run, "local", LocalState.init, 1, run.pick(10_000, 2_000), runs)
    _absorb(run, "local", LocalState.init, 100, run.pick(500, 150), runs)
    _absorb(run, "bridged", bridged_session, 1, run.pick(1_000, 300), runs)
    _absorb(run, "bridged", bridged_session, 100, run.pick(300, 120), runs)
