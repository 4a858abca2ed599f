"""The server answering reads at once: ``Store.read_now`` and the Calls stream's reader.

A read the store answers from what it holds is answered in the reader's own turn,
with no task; what it cannot answer so (a scan of a large session, a store on an
engine) says MISSED and is run. The reader, stopped by a stopping server, never
stops in the middle of a write: the answers it carries (other calls' among them)
are written first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from bridge_support import held

from dspex_actors.bridge import BridgedState, serve
from dspex_actors.bridge.server.reading import CallsReader
from dspex_actors.bridge.server.replies import Replies
from dspex_actors.bulk import BULK_ITEMS
from dspex_actors.errors import SessionNotFound, VariableNotFound
from dspex_actors.messages import GetVersioned, ListVariables
from dspex_actors.session import MISSED, Missed
from dspex_actors.stores.memory import MemoryStore
from dspex_actors.stores.sqlite import SqliteStore
from dspex_actors.v1 import session_store_pb2 as pb

WAIT = 30.0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_store_answers_a_read_now_or_says_it_must_be_run(kind: str, tmp_path: Path) -> None:
    """A get is answered at once, with the version; its errors are raised as ``run``
    raises them; another incarnation is not this session; a listing of a large
    session is MISSED (``run`` reads it off the loop), of a small one answered."""

    async def scenario() -> None:
        store = MemoryStore() if kind == "memory" else SqliteStore(str(tmp_path / "s.db"))
        try:
            opened = await store.open("s", create=True, metadata=None)
            state = held(store, "s")
            state.register_variable("t", "float", 0.5)
            assert store.read_now("s", GetVersioned("t")) == (0.5, 0)
            assert store.read_now("s", GetVersioned("t"), opened.incarnation) == (0.5, 0)
            with pytest.raises(VariableNotFound):
                store.read_now("s", GetVersioned("absent"))
            with pytest.raises(SessionNotFound):
                store.read_now("s", GetVersioned("t"), "another incarnation")
            with pytest.raises(SessionNotFound):
                store.read_now("nobody", GetVersioned("t"))
            listing = store.read_now("s", ListVariables(None))
            assert not isinstance(listing, Missed)
            assert [r.name for r in listing] == ["t"]
            for i in range(BULK_ITEMS):
                state.register_variable(f"v{i}", "integer", i)
            assert store.read_now("s", ListVariables(None)) is MISSED
            listed = await store.run("s", ListVariables(None), request_id=None, deadline=None)
            assert len(listed) == BULK_ITEMS + 1
        finally:
            await store.aclose()

    asyncio.run(scenario())


class _HeldWrites:
    """A stream's write side whose writes wait until released, saying when one started."""

    def __init__(self) -> None:
        self.written: list[pb.CallReply] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def write(self, message: pb.CallReply) -> None:
        self.started.set()
        await self.release.wait()
        self.written.append(message)


async def _one_then_wait(
    request: pb.CallRequest, never: asyncio.Event
) -> AsyncIterator[pb.CallRequest]:
    """A client that sends one request, then waits and sends nothing more."""
    yield request
    await never.wait()


def test_a_reader_stopped_while_it_writes_finishes_the_write_first() -> None:
    """The reader answers a call at once and writes the answer; stopped while the
    write is held, it is not cancelled: the answer goes out, then it returns. Stopped
    while it waits for the client's next message, it ends at once."""

    async def scenario() -> None:
        writes = _HeldWrites()
        replies = Replies(writes, True, max_reply=1 << 20)  # type: ignore[arg-type]
        never = asyncio.Event()

        def admit(request: pb.CallRequest, arrived: float) -> pb.CallReply:
            return pb.CallReply(call=request.call)

        requests = _one_then_wait(pb.CallRequest(call=7), never)
        reader = CallsReader(requests, admit, replies, most=8)
        task = reader.start()
        await asyncio.wait_for(writes.started.wait(), WAIT)
        reader.stop()
        await asyncio.sleep(0)
        assert not task.done()  # the write it carries is under way: not cut off
        writes.release.set()
        assert await asyncio.wait_for(task, WAIT) is True
        assert [m.call for m in writes.written] == [7]

        writes = _HeldWrites()
        writes.release.set()
        replies = Replies(writes, True, max_reply=1 << 20)  # type: ignore[arg-type]
        requests = _one_then_wait(pb.CallRequest(call=8), never)
        reader = CallsReader(requests, admit, replies, most=8)
        task = reader.start()
        await asyncio.wait_for(writes.started.wait(), WAIT)
        while not writes.written:  # its answer written, it waits for the next message
            await asyncio.sleep(0)
        reader.stop()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT)
        assert [m.call for m in writes.written] == [8]

    asyncio.run(scenario())


def test_answers_waiting_for_a_slow_reader_are_bounded() -> None:
    """The first answer's write is held (a client that does not read); with room for
    two answers behind it, a third sender waits until the writer takes them, then
    all go out in order."""

    async def scenario() -> None:
        writes = _HeldWrites()
        replies = Replies(writes, True, max_reply=1 << 20, most=2)  # type: ignore[arg-type]
        first = asyncio.create_task(replies.send(pb.CallReply(call=1)))
        await asyncio.wait_for(writes.started.wait(), WAIT)
        await replies.send(pb.CallReply(call=2))  # room: left to the writer
        third = asyncio.create_task(replies.send(pb.CallReply(call=3)))
        await asyncio.sleep(0)
        assert not third.done()  # two wait already: it waits for room
        writes.release.set()
        await asyncio.wait_for(asyncio.gather(first, third), WAIT)
        assert [m.call for m in writes.written] == [1, 2]
        assert [r.call for r in writes.written[1].more] == [3]

    asyncio.run(scenario())


class _StoreWithoutReadNow:
    """A store written to the contract as it stood before ``read_now``: every other
    member of a memory store, that one absent."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name == "read_now":
            raise AttributeError(name)
        return getattr(self._inner, name)


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "unary"])
def test_a_store_without_read_now_has_its_reads_run(stream: bool) -> None:
    store = _StoreWithoutReadNow()
    with (
        serve(store=store) as server,
        BridgedState.init(address=server.address, stream=stream) as state,
    ):
        state.register_variable("x", "integer", 1)
        assert state.get_variable("x") == 1
        assert state.get_variables(["x", "absent"]) == {"x": 1}
        with pytest.raises(VariableNotFound):
            state.get_variable("absent")
