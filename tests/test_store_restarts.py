"""A SessionStore server killed with SIGKILL under load loses no acknowledged write,
on each durable store: ``sqlite:`` (the file) and ``redis://`` (Redis keeps the
sessions; the server holds nothing of its own).

The server runs as a separate process (``python -m dspex_actors serve --store``);
writers compare-and-set counters until it is killed, and a server started again on
the same store must hold every version it acknowledged.
"""

from __future__ import annotations

import signal
import threading
import uuid
from pathlib import Path

import pytest
from bridge_support import killable_server, server_process

from dspex_actors.bridge import BridgedState
from dspex_actors.errors import BridgeUnavailable, OutcomeUnknown, VersionConflict


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 's.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


# -- SIGKILL under load -------------------------------------------------------------

WRITERS = 4
VARIABLES_PER_WRITER = 2
KILL_AFTER = 300  # acknowledged writes


class _Writers:
    """Threads that compare-and-set integer counters to their next version (so a
    counter's value always equals its version) and record every version the server
    acknowledged, until the server is gone."""

    def __init__(self, address: str, session_id: str, names: list[str]) -> None:
        self.session_id = session_id
        self.acknowledged: dict[str, int] = {}  # counter -> highest acknowledged version
        self.count = 0
        self.in_flight: list[OutcomeUnknown] = []  # writes cut off by the kill
        self.failures: list[BaseException] = []
        self.enough = threading.Event()  # KILL_AFTER writes acknowledged (or a failure)
        self._lock = threading.Lock()
        # Two writers per counter, so compare-and-set really races.
        self._threads = [
            threading.Thread(
                target=self._write, args=(address, names[i % WRITERS :: WRITERS]), name=f"w{i}"
            )
            for i in range(WRITERS * 2)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)

    def _write(self, address: str, names: list[str]) -> None:
        try:
            with BridgedState.init(
                address=address, session_id=self.session_id, create=False, timeout=2.0
            ) as state:
                while True:
                    for name in names:
                        self._bump(state, name)
        except OutcomeUnknown as exc:
            self.in_flight.append(exc)  # the server is gone, maybe after applying it
        except BridgeUnavailable:
            pass  # the server is gone
        except BaseException as exc:
            self.failures.append(exc)
            self.enough.set()

    def _bump(self, state: BridgedState, name: str) -> None:
        record = state.get_record(name)
        assert record.value == record.version
        try:
            done = state.set_variable(name, record.version + 1, expected_version=record.version)
        except VersionConflict:
            return
        with self._lock:
            self.acknowledged[name] = max(self.acknowledged.get(name, 0), done)
            self.count += 1
            if self.count >= KILL_AFTER:
                self.enough.set()


def test_sigkill_under_load_loses_no_acknowledged_write(store_spec: str) -> None:
    """The server is killed with SIGKILL while writers compare-and-set counters,
    started again on the store, and must hold every version it acknowledged."""
    spec = store_spec
    session_id = f"load-{uuid.uuid4().hex}"
    names = [f"counter_{i}" for i in range(WRITERS * VARIABLES_PER_WRITER)]
    with killable_server("--store", spec) as (process, address):
        owner = BridgedState.init(address=address, session_id=session_id, timeout=2.0)
        for name in names:
            owner.register_variable(name, "integer", 0)
        writers = _Writers(address, session_id, names)
        writers.start()
        writers.enough.wait(60)
        process.send_signal(signal.SIGKILL)
        process.wait()
        writers.join()
    owner.cleanup()  # the server is gone: only the channel is released
    assert not writers.failures, writers.failures
    print(
        f"\n{writers.count} writes acknowledged before SIGKILL on {len(writers.acknowledged)} "
        f"counters; {len(writers.in_flight)} in flight when it came"
    )
    assert writers.count >= KILL_AFTER
    with (
        server_process("--store", spec) as server,
        BridgedState.init(address=server.address, session_id=session_id, create=False) as state,
    ):
        for name in names:
            record = state.get_record(name)
            assert record.version >= writers.acknowledged.get(name, 0), name
            assert record.value == record.version, name  # each value is its own write's
