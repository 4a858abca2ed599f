"""Waiting watchers cost no worker thread: ordinary calls on a SessionStore, idle and
beside 100 waiting streams.

The SessionStore runs on ``grpc.aio``: a Watch stream waiting for a change, or for
its client to read, is a suspended coroutine, not a worker thread. With a thread
pool (the server before, and the echo baseline still: ``min(32, cores + 4)``
workers, 6 here) a hundred such streams would hold every worker and an ordinary
call would wait for one to free up. This suite measures it: the p99 of ordinary
calls from this process (a ``BridgedState.get_variable`` and a compare-and-set
``set_variable``) on an idle server and on a loaded one, as loaded / idle, and the
threads the streams add to the loaded server.

The load, from two helper processes (``python -m benchmarks.watchers ROLE COUNT``,
on the load clients' cores), each on its own connection:

- **50 idle watchers** (role ``idle``): 50 sessions, one ``BridgedState.subscribe``
  on each, and nobody writes to them: 50 Watch coroutines waiting for a change.
- **50 slow readers** (role ``stuck``): 50 ``BridgedState.subscribe`` on one busy
  session whose subscriber blocks in its callback on its first event, so its client
  never reads the stream again. This process then writes 100 values of 64 KiB to
  that session: 6.4 MB per stream, more than gRPC's flow control lets a client
  that is not reading take in (about 4 MB, measured with grpcio 1.85: past it a
  server's ``write`` waits). So each of the 50 Watch coroutines ends up waiting in
  ``context.write`` for a reader that never comes, the case a thread-per-stream
  server cannot afford. (Checked once against a server in-process by walking its
  ``Watch`` coroutines: 50 suspended at ``await context.write``, 50 at ``async for``
  waiting for an event.)

The load is in place once every slow reader has its first event and the server's
CPU time stops growing (less than 5% of a core over 0.3 s: its writes are waiting,
not working). The threads it adds are counted after its sessions are open, so the
sessions' own actor threads (one per session, loaded or not) do not count.

Idle and loaded are sampled in blocks interleaved round-robin, as everything else in
the suite (:mod:`benchmarks.timing`):
two SessionStore processes of the suite's own, started alike on the servers' core,
one carrying the load and the other not, their roles swapped every phase (two
phases with ``--quick``, four in a full run; the load is opened afresh each time),
each state's samples pooled over its phases. On this shared machine, an idle phase
and a loaded phase one after the other differed by up to 10x in p99 in either
direction (other work comes and goes); interleaved, that noise falls on both alike,
and swapping the roles cancels any difference between the two processes.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from benchmarks.affinity import launcher, suite_cores
from benchmarks.progress import progress
from benchmarks.servers import child_env
from benchmarks.suite import Run, add_duration

if TYPE_CHECKING:
    import psutil
from benchmarks.timing import blocks, measure
from dspex_actors import BridgedState
from dspex_actors.streaming import Event

SUITE = "watchers"
WATCHERS = 50
SLOW_READERS = 50
BIG_VALUE = 64 * 1024
BIG_WRITES = 100
_QUIET_CPU = 0.05  # of one core: the server is waiting, not working
_QUIET_WINDOW = 0.3
_SETTLE_TIMEOUT = 60.0


class Helper:
    """A helper process holding one role's streams, told what to do on stdin."""

    def __init__(self, role: str, count: int) -> None:
        argv = [sys.executable, "-m", "benchmarks.watchers", role, str(count)]
        self.role = role
        self.process = subprocess.Popen(
            launcher(argv, suite_cores()),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        self._expect("ready")

    def ask(self, line: str) -> str:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()
        return self._answer()

    def _answer(self) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        answer = stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"the {self.role} helper exited ({self.process.wait()})")
        return answer

    def _expect(self, word: str) -> None:
        if (answer := self._answer()) != word:
            raise RuntimeError(f"the {self.role} helper said {answer!r}, not {word!r}")

    def close(self) -> None:
        try:
            self.process.communicate("quit\n", timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _settle(server: psutil.Process) -> float:
    """Wait until the server's CPU time stops growing; the seconds it took."""
    started = time.monotonic()
    before = _cpu_seconds(server)
    while True:
        time.sleep(_QUIET_WINDOW)  # sampling the server's CPU time, not synchronising
        now = _cpu_seconds(server)
        if now - before < _QUIET_CPU * _QUIET_WINDOW:
            return time.monotonic() - started
        if time.monotonic() - started > _SETTLE_TIMEOUT:
            raise TimeoutError(f"the server kept working for {_SETTLE_TIMEOUT:.0f} s")
        before = now


class Load:
    """The 50 idle watchers and 50 slow readers, opened on one server and closed again."""

    def __init__(self) -> None:
        self._idle = Helper("idle", WATCHERS)
        try:
            self._stuck = Helper("stuck", SLOW_READERS)
        except BaseException:
            self._idle.close()
            raise
        self._busy: BridgedState | None = None
        self.settle_seconds: list[float] = []
        self.stream_threads: list[int] = []

    def open(self, address: str, server: psutil.Process) -> None:
        """Open the load on ``address``; note the threads its streams added there."""
        busy = self._busy = BridgedState.init(address=address, timeout=30)
        busy.register_variable("blob", "string", "")
        self._idle.ask(f"sessions {address}")
        self._stuck.ask(f"attach {address} {busy.session_id}")
        before = server.num_threads()  # every session's actor is up: now the streams
        self._idle.ask("watch")
        self._stuck.ask("watch")
        busy.set_variable("blob", "first")  # each slow reader's subscriber now blocks
        deadline = time.monotonic() + 60
        while int(self._stuck.ask("stuck")) < SLOW_READERS:
            if time.monotonic() > deadline:
                raise TimeoutError("the slow readers did not all get their first event")
            time.sleep(0.02)  # polling a helper's count
        for k in range(BIG_WRITES):
            busy.set_variable("blob", chr(ord("a") + k % 26) * BIG_VALUE)
        self.settle_seconds.append(_settle(server))
        self.stream_threads.append(server.num_threads() - before)

    def close(self) -> None:
        self._stuck.ask("close")
        self._idle.ask("close")
        busy, self._busy = self._busy, None
        if busy is not None:
            busy.cleanup()

    def stop(self) -> None:
        if self._busy is not None:
            self.close()
        self._stuck.close()
        self._idle.close()


def _versioned_setter(state: BridgedState) -> Callable[[], object]:
    version = state.get_record("temperature").version
    flip = 0

    def call() -> object:
        nonlocal version, flip
        flip ^= 1
        version = state.set_variable("temperature", 1.0 if flip else 0.5, expected_version=version)
        return version

    return call


def run(run: Run) -> None:
    phases: int = run.pick(4, 2)
    per_phase: int = run.pick(1500, 800)  # samples of each op
    names = ("store.watchers.a", "store.watchers.b")
    samples: dict[str, list[float]] = {}
    try:
        stores = [run.servers.store(name) for name in names]
        import psutil  # the bench extra (checked by python -m benchmarks)

        processes = [psutil.Process(store.pid) for store in stores]
        with ExitStack() as cleanup:
            ops: list[dict[str, tuple[Callable[[], object], int]]] = []
            for store in stores:
                state = BridgedState.init(address=store.address, timeout=30)
                cleanup.callback(state.cleanup)
                state.register_variable(
                    "temperature", "float", 0.7, constraints={"min": 0, "max": 2}
                )
                getter = functools.partial(state.get_variable, "temperature")
                ops.append({"get": (getter, 1), "set": (_versioned_setter(state), 1)})
            progress.stage(f"watchers: starting the helpers ({WATCHERS} + {SLOW_READERS})")
            load = Load()
            cleanup.callback(load.stop)
            for phase in range(phases):
                loaded = phase % 2  # the servers swap roles each phase
                progress.stage(f"watchers: opening {WATCHERS + SLOW_READERS} streams")
                load.open(stores[loaded].address, processes[loaded])
                sampled = {
                    f"{'loaded' if i == loaded else 'idle'}.{op}": fn_calls
                    for i, server_ops in enumerate(ops)
                    for op, fn_calls in server_ops.items()
                }
                # Blocks of one length (block_ns 0), the same in every phase: each
                # state's samples are pooled over the phases, block by block.
                label = f"watchers: phase {phase + 1}/{phases}"
                got = measure(label, sampled, per_phase, block_ns=0)
                for name, taken in got.items():
                    samples.setdefault(name, []).extend(taken.samples)
                load.close()
    finally:
        for name in names:
            run.servers.stop(name)
    streams = f"{WATCHERS} idle watchers + {SLOW_READERS} slow readers"
    _, block = blocks(per_phase)
    for op, label in (
        ("get", "BridgedState.get_variable"),
        ("set", "BridgedState.set_variable (compare-and-set)"),
    ):
        add_duration(
            run,
            SUITE,
            f"watchers.idle.{op}",
            f"{label}, idle server",
            "bridged",
            op,
            samples[f"idle.{op}"],
            kind="latency",
            block=block,
        )
        add_duration(
            run,
            SUITE,
            f"watchers.loaded.{op}",
            f"{label}, 100 streams waiting",
            "bridged",
            op,
            samples[f"loaded.{op}"],
            kind="latency",
            block=block,
            baseline=f"watchers.idle.{op}",
        )
    run.results.value(
        "watchers.stream_threads",
        max(load.stream_threads),
        "threads",
        f"server threads added by the {streams} (beyond the sessions' own actors)",
    )
    run.results.value(
        "watchers.settle_ms",
        max(load.settle_seconds) * 1000,
        "ms",
        f"longest wait for the server to go quiet after opening the {streams}",
    )


# -- the helper process ---------------------------------------------------------------


def _serve_idle(count: int) -> Callable[[list[str]], str]:
    """Role ``idle``: ``sessions ADDRESS`` opens ``count`` sessions, ``watch`` subscribes
    to each once, and nobody writes to them."""
    sessions: list[BridgedState] = []
    subscriptions: list[Any] = []

    def ignore(event: Event) -> None:
        pass

    def command(words: list[str]) -> str:
        if words[0] == "sessions":
            sessions.extend(BridgedState.init(address=words[1], timeout=30) for _ in range(count))
        elif words[0] == "watch":
            subscriptions.extend(quiet.subscribe(None, ignore) for quiet in sessions)
        elif words[0] == "close":
            for subscription in subscriptions:
                subscription.close()
            for quiet in sessions:
                quiet.cleanup()
            subscriptions.clear()
            sessions.clear()
        else:
            raise ValueError(f"unknown command {words!r}")
        return "ok"

    return command


def _serve_stuck(count: int) -> Callable[[list[str]], str]:
    """Role ``stuck``: ``attach ADDRESS SESSION``, then ``watch`` subscribes ``count``
    times with a subscriber that blocks on its first event until ``close``, so its
    stream goes unread; ``stuck`` says how many are blocked."""
    subscriptions: list[Any] = []
    handles: list[BridgedState] = []
    lock = threading.Lock()
    stuck = 0
    release = threading.Event()

    def block(event: Event) -> None:
        nonlocal stuck
        if event.kind != "updated" or release.is_set():
            return
        with lock:
            stuck += 1
        release.wait()

    def command(words: list[str]) -> str:
        nonlocal stuck, release
        if words[0] == "attach":
            release, stuck = threading.Event(), 0
            handles.append(BridgedState.init(session_id=words[2], address=words[1], create=False))
        elif words[0] == "watch":
            subscriptions.extend(handles[-1].subscribe(None, block) for _ in range(count))
        elif words[0] == "stuck":
            with lock:
                return str(stuck)
        elif words[0] == "close":
            release.set()
            for subscription in subscriptions:
                subscription.close()
            for busy in handles:
                busy.cleanup()
            subscriptions.clear()
            handles.clear()
        else:
            raise ValueError(f"unknown command {words!r}")
        return "ok"

    return command


def _helper(role: str, count: int) -> None:
    command = (_serve_idle if role == "idle" else _serve_stuck)(count)
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        print(command(words), flush=True)
    command(["close"])


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("idle", "stuck"):
        raise SystemExit("usage: python -m benchmarks.watchers idle|stuck COUNT")
    _helper(sys.argv[1], int(sys.argv[2]))
