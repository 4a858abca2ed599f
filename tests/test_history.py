"""Linearizability of one variable under concurrent clients, checked from a history.

Eight clients hammer ONE variable with reads (``get_record``), compare-and-set writes
(``set_variable(..., expected_version=v)``, each value unique) and some blind
writes, recording each operation's invocation and completion (``monotonic_ns``, used
only to order them) and its result. The recorded history is then checked against
the sequential specification of a versioned compare-and-set register.

Because every write answers its version and every read answers value and version,
the linearization order is fixed by the versions themselves: write ``v`` sits at
position ``(v, 0)`` and a read (or a refused compare-and-set, which read the
version ``actual``) of version ``v`` at ``(v, 1)``, after write ``v`` and before
write ``v + 1``. A history is linearizable exactly when:

* the successful writes' versions are unique and consecutive from the start
  version, a compare-and-set that succeeded got ``expected + 1``, and a refused one
  saw an ``actual`` other than its ``expected``;
* every read returns exactly the value written with the version it reports;
* real time agrees with the positions: an operation that completed before another
  was invoked has a position no later than it (so a write that completed before
  another was invoked has the smaller version, and a read is never older than a
  write completed before it began, nor newer than every write invoked before it
  ended).

The same check runs on LocalState, on BridgedState (the embedded server), on a
Context whose session moves from local to bridged in the middle of the run, and on a
BridgedState with ``cache=True`` shared by the threads (whose reads can still go
backwards: a strict xfail, with the race also made deterministic). A unit test feeds
the checker hand-made histories that break each rule, so it is known to reject what
it must.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pytest

from dspex_actors import LocalState
from dspex_actors.bridge import ADDRESS_ENV, TOKEN_ENV, BridgedState, serve
from dspex_actors.errors import VersionConflict
from dspex_actors.records import VariableRecord
from dspex_actors.streaming import Event
from dspex_actors.supervision import Supervisor

CLIENTS = 8
OPS_PER_CLIENT = 60
NAME = "register"
START_VALUE = "start"

Kind = Literal["read", "cas", "write"]


@dataclass(frozen=True)
class Op:
    """One completed operation of the history."""

    client: int
    kind: Kind
    invoked: int  # monotonic_ns before the call
    completed: int  # monotonic_ns after it returned or raised
    value: Any = None  # the value written, or the value read
    version: int | None = None  # the new version (writes) or the version read
    expected: int | None = None  # a compare-and-set's expected version
    conflict: int | None = None  # a refused compare-and-set: VersionConflict.actual

    @property
    def refused(self) -> bool:
        return self.kind == "cas" and self.version is None

    @property
    def is_write(self) -> bool:
        return self.kind != "read" and not self.refused

    def position(self) -> tuple[int, int]:
        """Where the operation sits in the linearization the versions dictate."""
        if self.is_write:
            assert self.version is not None
            return (self.version, 0)
        seen = self.conflict if self.refused else self.version
        assert seen is not None
        return (seen, 1)


def check_history(ops: list[Op], start_version: int, start_value: Any) -> list[str]:
    """Every way ``ops`` breaks the versioned compare-and-set register (empty: none)."""
    problems: list[str] = []
    writes = sorted((op for op in ops if op.is_write), key=lambda op: op.version or 0)
    versions = [op.version for op in writes]
    expected_versions = list(range(start_version + 1, start_version + 1 + len(writes)))
    if versions != expected_versions:
        problems.append(
            f"write versions are not unique and consecutive from {start_version + 1}: "
            f"{versions[:20]}{'...' if len(versions) > 20 else ''}"
        )
    value_at: dict[int, Any] = {start_version: start_value}
    for op in writes:
        assert op.version is not None
        value_at.setdefault(op.version, op.value)
    for op in ops:
        if op.kind == "cas" and not op.refused and op.version != (op.expected or 0) + 1:
            problems.append(f"compare-and-set expecting {op.expected} got version {op.version}")
        if op.refused:
            if op.conflict == op.expected:
                problems.append(f"VersionConflict whose actual equals expected ({op.expected})")
            if op.conflict not in value_at:
                problems.append(f"VersionConflict saw version {op.conflict}, never written")
        if op.kind == "read":
            if op.version not in value_at:
                problems.append(f"read of version {op.version}, never written: {op}")
            elif value_at[op.version] != op.value:
                problems.append(
                    f"read of version {op.version} returned {op.value!r}, but that version "
                    f"holds {value_at[op.version]!r}"
                )
    problems.extend(_real_time_problems(ops))
    return problems


def _real_time_problems(ops: list[Op]) -> list[str]:
    """Operations whose position is before that of one that completed before they began.

    Sorted by completion, a prefix maximum of positions answers, for each operation,
    the latest position among all operations completed before its invocation.
    """
    by_completion = sorted(ops, key=lambda op: op.completed)
    completions = [op.completed for op in by_completion]
    latest: list[Op] = []
    for op in by_completion:
        if not latest or op.position() > latest[-1].position():
            latest.append(op)
        else:
            latest.append(latest[-1])
    problems = []
    for op in ops:
        before = bisect.bisect_left(completions, op.invoked)  # completed strictly before
        if before and latest[before - 1].position() > op.position():
            earlier = latest[before - 1]
            problems.append(
                f"real-time order broken: {earlier.kind} at {earlier.position()} completed "
                f"before {op.kind} at {op.position()} was invoked"
            )
    return problems


# -- the checker rejects what it must ---------------------------------------------------


def _w(client: int, t0: int, t1: int, value: str, version: int, expected: int | None = None) -> Op:
    return Op(client, "cas" if expected is not None else "write", t0, t1, value, version, expected)


def _r(client: int, t0: int, t1: int, value: str, version: int) -> Op:
    return Op(client, "read", t0, t1, value, version)


def test_the_checker_accepts_a_linearizable_history() -> None:
    ops = [
        _r(0, 0, 10, "s", 0),
        _w(1, 5, 30, "a", 1, expected=0),  # overlaps the read and the next write
        Op(2, "cas", 6, 31, None, None, expected=0, conflict=1),  # lost the race to "a"
        _w(0, 20, 40, "b", 2),
        _r(2, 35, 50, "a", 1),  # invoked before "b" completed: may still see "a"
        _r(1, 41, 60, "b", 2),
    ]
    assert check_history(ops, 0, "s") == []


@pytest.mark.parametrize(
    ("history", "complaint"),
    [
        pytest.param([_w(0, 0, 10, "a", 1), _r(1, 20, 30, "s", 0)], "real-time", id="stale read"),
        pytest.param(
            [_w(0, 0, 10, "a", 1), _r(1, 5, 30, "b", 1)], "holds 'a'", id="value not of version"
        ),
        pytest.param([_r(1, 0, 5, "a", 1), _w(0, 10, 20, "a", 1)], "real-time", id="future read"),
        pytest.param(
            [_w(0, 0, 10, "a", 1), _w(1, 5, 15, "b", 1)], "unique", id="duplicate version"
        ),
        pytest.param([_w(0, 0, 10, "a", 2)], "consecutive", id="version gap"),
        pytest.param(
            [_w(0, 0, 10, "a", 2), _w(1, 20, 30, "b", 1)], "real-time", id="writes reversed"
        ),
        pytest.param(
            [_w(0, 0, 10, "a", 1), Op(1, "cas", 20, 30, None, None, expected=0, conflict=0)],
            "actual equals expected",
            id="conflict with itself",
        ),
        pytest.param(
            [_w(0, 0, 10, "a", 1), Op(1, "cas", 20, 30, None, None, expected=5, conflict=0)],
            "real-time",
            id="conflict saw the past",
        ),
        pytest.param([_w(0, 0, 10, "a", 1, expected=3)], "expecting 3", id="cas wrong version"),
        pytest.param(
            [_w(0, 0, 10, "a", 1), _r(1, 20, 30, "a", 1), _r(2, 40, 50, "s", 0)],
            "real-time",
            id="reads go backwards",
        ),
    ],
)
def test_the_checker_rejects_a_non_linearizable_history(history: list[Op], complaint: str) -> None:
    problems = check_history(history, 0, "s")
    assert problems, "a non-linearizable history was accepted"
    assert any(complaint in problem for problem in problems), problems


# -- running a history -------------------------------------------------------------------


class Register(Protocol):
    """What the clients call: any provider, or a Context."""

    def get_record(self, identifier: str) -> VariableRecord: ...

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Any = None,
        *,
        expected_version: int | None = None,
    ) -> int: ...


def run_clients(
    targets: Sequence[Register], on_progress: Callable[[int], None] | None = None
) -> tuple[list[Op], int, Any]:
    """Run the workload on the variable (client ``n`` calls ``targets[n % len]``);
    return the history and its start version and value."""
    start = targets[0].get_record(NAME)
    history: list[list[Op]] = [[] for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)
    failures: list[BaseException] = []
    done = [0]
    done_lock = threading.Lock()

    def client(number: int) -> None:
        ops = history[number]
        target = targets[number % len(targets)]

        def record(op: Op) -> None:
            ops.append(op)
            with done_lock:
                done[0] += 1
                count = done[0]
            if on_progress is not None:
                on_progress(count)

        try:
            barrier.wait()
            step = 0
            while len(ops) < OPS_PER_CLIENT:
                invoked = time.monotonic_ns()
                seen = target.get_record(NAME)
                record(Op(number, "read", invoked, time.monotonic_ns(), seen.value, seen.version))
                value = f"c{number}-{step}"
                step += 1
                if step % 5 == 0:  # a blind write now and then
                    invoked = time.monotonic_ns()
                    version = target.set_variable(NAME, value)
                    record(Op(number, "write", invoked, time.monotonic_ns(), value, version))
                    continue
                invoked = time.monotonic_ns()
                try:
                    version = target.set_variable(NAME, value, expected_version=seen.version)
                except VersionConflict as conflict:
                    record(
                        Op(
                            number,
                            "cas",
                            invoked,
                            time.monotonic_ns(),
                            value,
                            None,
                            expected=seen.version,
                            conflict=conflict.actual,
                        )
                    )
                else:
                    record(
                        Op(
                            number,
                            "cas",
                            invoked,
                            time.monotonic_ns(),
                            value,
                            version,
                            expected=seen.version,
                        )
                    )
        except BaseException as exc:  # reported by the test, not lost in the thread
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return [op for ops in history for op in ops], start.version, start.value


def _summary(backend: str, ops: list[Op]) -> str:
    writes = sum(op.is_write for op in ops)
    refused = sum(op.refused for op in ops)
    reads = sum(op.kind == "read" for op in ops)
    return (
        f"{backend}: {len(ops)} operations checked ({reads} reads, {writes} writes, "
        f"{refused} refused compare-and-sets)"
    )


@pytest.fixture(autouse=True)
def no_bridge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def local() -> Iterator[LocalState]:
    state = LocalState.init()
    try:
        yield state
    finally:
        state.cleanup()


@pytest.fixture
def bridged() -> Iterator[BridgedState]:
    state = BridgedState.init()  # the embedded server
    try:
        yield state
    finally:
        state.cleanup()


def test_local_history_is_linearizable(local: LocalState) -> None:
    local.register_variable(NAME, "string", START_VALUE)
    ops, version, value = run_clients([local])
    print(_summary("LocalState", ops))
    assert check_history(ops, version, value) == []
    assert local.get_record(NAME).version == version + sum(op.is_write for op in ops)


def test_bridged_history_is_linearizable(bridged: BridgedState) -> None:
    bridged.register_variable(NAME, "string", START_VALUE)
    ops, version, value = run_clients([bridged])
    print(_summary("BridgedState", ops))
    assert check_history(ops, version, value) == []
    assert bridged.get_record(NAME).version == version + sum(op.is_write for op in ops)


def run_handles(addresses: list[str], session_id: str) -> tuple[list[Op], int, str]:
    """The clients' workload with a handle each, round-robin over ``addresses`` (the
    first creates the session and the register; all are cleaned up after)."""
    handles = [BridgedState.init(session_id=session_id, address=addresses[0])]
    try:
        handles += [
            BridgedState.init(
                session_id=session_id, address=addresses[n % len(addresses)], create=False
            )
            for n in range(1, CLIENTS)
        ]
        handles[0].register_variable(NAME, "string", START_VALUE)
        return run_clients(handles)
    finally:
        for handle in reversed(handles):
            handle.cleanup()


def test_bridged_history_with_a_handle_per_client_is_linearizable() -> None:
    """Eight handles, as eight processes would hold (here they share one channel)."""
    with serve() as server:
        ops, version, value = run_handles([server.address], "shared")
    print(_summary("BridgedState, a handle per client", ops))
    assert check_history(ops, version, value) == []


CACHED_READS_GO_BACKWARDS = (
    "bridge/client/bridged.py get_record on a cached handle: while the copy is behind a "
    "version this handle expects (its own write N, or a VersionConflict's actual N) "
    "the read goes to the server, which may answer a newer N+1 (another writer's), "
    "and that version is not noted (no cache.expect); when the Watch event of N "
    "arrives the expectation is met and dropped, and the next read is served from "
    "the copy at N: reads go backwards (N+1, then N)"
)


class HeldEvents:
    """Stands between a cached handle's Watch stream and its copy: each event waits
    in the stream's thread until the test lets it through, so the test decides when
    the copy learns of a write."""

    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self._deliver = deliver
        self._changed = threading.Condition()
        self._holding = True
        self._allowed = 0
        self.delivered: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._changed:
            self._changed.wait_for(lambda: not self._holding or self._allowed > 0)
            if self._holding:
                self._allowed -= 1
        self._deliver(event)
        with self._changed:
            self.delivered.append(event)
            self._changed.notify_all()

    def let_through(self, count: int, timeout: float = 10.0) -> list[Event]:
        """Deliver the next ``count`` events; the events delivered."""
        with self._changed:
            target = len(self.delivered) + count
            self._allowed += count
            self._changed.notify_all()
            assert self._changed.wait_for(lambda: len(self.delivered) >= target, timeout)
            return self.delivered[target - count : target]

    def release(self) -> None:
        """Stop holding: every event goes through from now on."""
        with self._changed:
            self._holding = False
            self._changed.notify_all()


def test_a_cached_handle_never_reads_older_than_it_has_answered() -> None:
    """The race of the run below, made deterministic by holding the Watch feed: the
    handle writes version 1 (its event held back), another handle writes version 2,
    a read through the cached handle answers version 2 (from the server: the copy
    is behind this handle's own write), then the event of version 1 arrives. A
    later read must not answer version 1."""
    with serve() as server, BridgedState.init(address=server.address, cache=True) as cached:
        cached.register_variable(NAME, "string", START_VALUE)
        cached.sync_cache()
        cache, feed = cached._cache, cached._cache_feed  # the handle's copy and its feed
        assert cache is not None and feed is not None and cached.cached
        held = HeldEvents(cache.on_event)
        feed.subscriber = held
        try:
            with BridgedState.init(
                session_id=cached.session_id, address=server.address, create=False
            ) as other:
                assert cached.set_variable(NAME, "mine") == 1  # its event is held back
                assert other.set_variable(NAME, "theirs") == 2
            first = cached.get_record(NAME)  # the copy is behind "mine": from the server
            assert (first.version, first.value) == (2, "theirs")
            assert [event.version for event in held.let_through(1)] == [1]
            second = cached.get_record(NAME)
        finally:
            held.release()
    print(f"cached handle: read version {first.version}, then version {second.version}")
    assert second.version >= first.version, "a read went backwards"


def test_a_cached_handle_shared_by_threads_is_linearizable() -> None:
    """Twenty runs, stopping at the first violation. The race this guards against
    (the handle's copy behind a version the server already answered) showed in about
    one run in twelve before the fix, so twenty runs catch a regression most of the
    time; the test above makes that race deterministic."""
    with serve() as server:
        for run in range(20):
            with BridgedState.init(address=server.address, cache=True) as cached:
                cached.register_variable(NAME, "string", START_VALUE)
                ops, version, value = run_clients([cached])
            problems = check_history(ops, version, value)
            print(_summary(f"cached handle, run {run + 1}", ops), f"{len(problems)} violations")
            assert problems == [], problems[:3]


def test_history_across_a_migration_is_linearizable() -> None:
    """The switch happens mid-run, from another thread, once half the operations are
    done: the history must be linearizable across it, with nothing lost or doubled."""
    half = CLIENTS * OPS_PER_CLIENT // 2
    halfway = threading.Event()
    migration_errors: list[BaseException] = []
    with Supervisor.start() as supervisor:
        ctx = supervisor.start_context()
        ctx.register_variable(NAME, "string", START_VALUE)

        def migrate() -> None:
            halfway.wait()
            try:
                ctx.ensure_bridged()
            except BaseException as exc:
                migration_errors.append(exc)

        def progress(count: int) -> None:
            if count >= half:
                halfway.set()

        migrator = threading.Thread(target=migrate)
        migrator.start()
        try:
            ops, version, value = run_clients([ctx], progress)
        finally:
            halfway.set()  # never leave the migrator waiting
            migrator.join()
        assert not migration_errors, migration_errors
        info = ctx.backend_info()
        assert info["type"] == "bridged"
        assert info["switches"] == 1
        print(_summary("Context local->bridged", ops), f"switch {info['last_switch_ms']:.1f} ms")
        assert check_history(ops, version, value) == []
        assert ctx.get_record(NAME).version == version + sum(op.is_write for op in ops)
