"""AsyncBridgedState's coherent cache (``init(cache=True)``): the sync cache's model,
fed by a task on the loop. Real SessionStore servers on loopback (in this process,
on their own loop), a real TCP proxy, the server's own failpoints to hold its Watch.

Read your writes; another handle's write once its event came (``sync_cache()``);
the server stopped: every read goes to it and fails as an uncached read does, then
the copy is re-read once it is back; an ``overflow`` re-reads it; a closed session
drops it for good; closing the handle while its copy loads leaves nothing running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aio_support import on_shared_loop
from bridge_support import ServerHold
from cache_support import CachedContract
from tcp_proxy import TcpProxy

from dspex_actors import BridgedState, failpoints
from dspex_actors.aio import AsyncBridgedState
from dspex_actors.aio.cache import CacheFeed
from dspex_actors.aio.following import in_thread
from dspex_actors.bridge import serve
from dspex_actors.bridge.client.cache import SessionCopy
from dspex_actors.errors import BridgeUnavailable, StateError, VariableNotFound
from dspex_actors.streaming import Event
from dspex_actors.testing.aio import blocking

WAIT = 30.0  # a hang guard
T = TypeVar("T")


pytestmark = pytest.mark.usefixtures("aio_poller")


def _parts(state: AsyncBridgedState) -> tuple[SessionCopy, CacheFeed]:
    copy, feed = state._cache, state._cache_feed
    assert copy is not None and feed is not None
    return copy, feed


def _answered_at_once(state: AsyncBridgedState, name: str) -> Any:
    """``await state.get_variable(name)`` driven by hand: a cache hit returns at the
    first step, without suspending (no I/O, no await of anything that waits)."""
    step = state.get_variable(name)
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise AssertionError(f"get_variable({name!r}) suspended: not answered from the copy")


async def _when_back(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` once the channel has its connection back (gRPC reconnects on its
    own schedule; each attempt until then is unavailable)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            return await call()
        except BridgeUnavailable:
            if time.monotonic() > deadline:
                raise


# -- the model ---------------------------------------------------------------------------


def test_a_cached_handle_reads_its_own_writes_and_others_after_their_events() -> None:
    async def scenario(address: str) -> None:
        async with await AsyncBridgedState.init(address=address) as writer:
            await writer.register_variable("t", "float", 0.5, constraints={"max": 2})
            async with await AsyncBridgedState.init(
                session_id=writer.session_id, address=address, create=False, cache=True
            ) as cached:
                assert cached.cached  # loaded by init
                assert _answered_at_once(cached, "t") == 0.5
                for i in range(20):  # read-your-writes, every time
                    version = await cached.set_variable("t", i / 10)
                    assert await cached.get_variable("t") == i / 10
                    assert (await cached.get_record("t")).version == version
                await writer.set_variable("t", 1.5)
                await cached.sync_cache()  # the writer's write returned: its event is in
                assert _answered_at_once(cached, "t") == 1.5
                await writer.register_variable("n", "integer", 3, constraints={"min": 0})
                await cached.sync_cache()
                assert _answered_at_once(cached, "n") == 3
                record = await cached.get_record("n")  # whole: type and constraints too
                assert (record.type, record.constraints) == ("integer", {"min": 0})
                assert [r["name"] for r in await cached.list_variables()] == ["t", "n"]
                assert await cached.get_variables(["t", "n", "absent"]) == {"t": 1.5, "n": 3}
                await cached.delete_variable("t")
                with pytest.raises(VariableNotFound):
                    await cached.get_variable("t")
                await writer.update_variables({"n": 4})
                await cached.sync_cache()
                assert _answered_at_once(cached, "n") == 4 and cached.cached

    with serve() as server:
        on_shared_loop(scenario(server.address))


def test_a_cached_write_reads_back_while_its_event_is_held() -> None:
    """The server's Watch holds every event, so the copy is surely behind this
    handle's own writes: a set and a batch read back (from the server) at once."""
    hold = ServerHold()

    async def scenario(address: str) -> None:
        async with await AsyncBridgedState.init(address=address, cache=True) as cached:
            await cached.register_variable("x", "integer", 0)
            await cached.sync_cache()
            try:
                with failpoints.enabled("watch.event", hold):
                    assert await cached.set_variable("x", 1) == 1
                    assert await cached.get_variable("x") == 1
                    await cached.update_variables({"x": 2})
                    assert await cached.get_variable("x") == 2
                    assert await cached.get_variables(["x"]) == {"x": 2}
                    assert [r["value"] for r in await cached.list_variables()] == [2]
            finally:
                hold.release()
            await cached.sync_cache()
            assert _answered_at_once(cached, "x") == 2 and cached.cached

    with serve() as server:
        on_shared_loop(scenario(server.address))


# -- outages -----------------------------------------------------------------------------


def test_with_its_server_out_of_reach_every_read_goes_to_it_then_the_copy_is_reloaded() -> None:
    """The server out of reach (the proxy cuts the link and refuses new ones: a
    crash or a partition): the copy serves nothing, and each read fails as an
    uncached handle's read does (never a stale value), while another client writes.
    Back in reach: the copy is re-read and serves that write."""

    async def scenario(address: str, proxy: TcpProxy) -> None:
        writer = await AsyncBridgedState.init(address=address)
        cached = await AsyncBridgedState.init(
            session_id=writer.session_id,
            address=proxy.address,
            create=False,
            cache=True,
            timeout=0.5,
        )
        plain = await AsyncBridgedState.init(
            session_id=writer.session_id, address=proxy.address, create=False, timeout=0.5
        )
        try:
            await writer.register_variable("x", "integer", 1)
            await cached.sync_cache()
            copy, feed = _parts(cached)
            assert _answered_at_once(cached, "x") == 1 and copy.loads == 1
            proxy.refuse()
            proxy.cut()
            assert await feed.wait_down(WAIT)
            assert not cached.cached
            await writer.set_variable("x", 2)  # meanwhile, where the copy cannot see it
            with pytest.raises(BridgeUnavailable):
                await plain.get_variable("x")
            for read in (cached.get_variable("x"), cached.get_record("x")):
                with pytest.raises(BridgeUnavailable):
                    await read
            with pytest.raises(BridgeUnavailable):
                await cached.list_variables()
            proxy.refuse(False)
            await _when_back(lambda: cached.sync_cache(WAIT))
            assert cached.cached and copy.loads == 2  # re-read after the outage
            assert _answered_at_once(cached, "x") == 2
        finally:
            proxy.refuse(False)
            await plain.aclose()
            await cached.aclose()
            await writer.aclose()

    with serve() as server, TcpProxy(server.address) as proxy:
        on_shared_loop(scenario(server.address, proxy))


def test_a_stopped_server_closes_its_sessions_so_the_copy_is_dropped(tmp_path: Path) -> None:
    """A server stopped on purpose closes every session it holds (its watchers hear
    ``closed``), even a SQLite store's, which it finds again when started on the
    same file: the copy is dropped for good, reads fail while it is down, and once
    it is back every read goes to it, fresh."""
    spec = f"sqlite:{tmp_path / 'sessions.db'}"
    servers = [serve(store=spec)]
    address = servers[0].address

    async def scenario() -> None:
        cached = await AsyncBridgedState.init(address=address, cache=True, timeout=0.5)
        try:
            await cached.register_variable("x", "integer", 1)
            await cached.sync_cache()
            copy, feed = _parts(cached)
            await in_thread(servers[0].stop)
            assert await feed.wait_down(WAIT)
            assert copy.ended and not cached.cached and not feed.running
            with pytest.raises(BridgeUnavailable):
                await cached.get_variable("x")
            servers.append(await in_thread(lambda: serve(address, store=spec)))
            assert await _when_back(lambda: cached.get_variable("x")) == 1
            assert await cached.set_variable("x", 2) == 1
            assert await cached.get_variable("x") == 2 and not cached.cached
        finally:
            await cached.aclose()

    try:
        on_shared_loop(scenario())
    finally:
        servers[-1].stop()


def test_an_overflow_reloads_the_copy() -> None:
    """The server keeps 4 events per session; the cached handle's Watch is held at
    one event while 10 more are written: when it goes on, it is past the kept
    history (``overflow``), and the copy is re-read, not patched."""
    hold = ServerHold()

    async def scenario(address: str) -> None:
        async with await AsyncBridgedState.init(address=address) as writer:
            await writer.register_variable("x", "integer", 0)
            async with await AsyncBridgedState.init(
                session_id=writer.session_id, address=address, create=False, cache=True
            ) as cached:
                copy, _ = _parts(cached)
                assert cached.cached and copy.loads == 1
                try:
                    with failpoints.enabled("watch.event", hold):
                        await writer.set_variable("x", 1)
                        assert await in_thread(lambda: hold.reached.wait(WAIT))
                    for value in range(2, 12):
                        await writer.set_variable("x", value)
                finally:
                    hold.release()
                await cached.sync_cache()
                assert copy.loads == 2  # the overflow's re-read
                assert _answered_at_once(cached, "x") == 11 and cached.cached

    with serve(event_history=4) as server:
        on_shared_loop(scenario(server.address))


def test_a_closed_session_drops_the_copy_for_good() -> None:
    async def scenario(address: str) -> None:
        owner = await AsyncBridgedState.init(address=address)
        await owner.register_variable("x", "integer", 1)
        async with await AsyncBridgedState.init(
            session_id=owner.session_id, address=address, create=False, cache=True
        ) as cached:
            copy, feed = _parts(cached)
            assert _answered_at_once(cached, "x") == 1
            await owner.aclose()  # closes the session: its Watch ends with "closed"
            assert await feed.wait_down(WAIT)
            with pytest.raises(StateError) as read:
                await cached.get_variable("x")  # from the server, which has no session
            assert "not found" in str(read.value).lower() or "closed" in str(read.value)
            assert copy.ended and not cached.cached and not feed.running
            with pytest.raises(StateError):
                await cached.sync_cache(0.5)

    with serve() as server:
        on_shared_loop(scenario(server.address))


def test_closing_the_handle_while_its_copy_loads_leaves_nothing_running() -> None:
    """The copy's listing is in flight (the link frozen under it, so it never
    answers) when the handle is closed: the feed's task is cancelled with its call,
    and no task of the feed is left on the loop."""

    async def scenario(proxy: TcpProxy, session_id: str) -> None:
        state = await AsyncBridgedState.init(
            session_id=session_id, address=proxy.address, create=False, timeout=WAIT
        )
        state.enable_cache()
        copy, feed = _parts(state)
        task = feed._task
        assert task is not None
        loading = asyncio.Event()
        listing = feed._load

        async def frozen_listing() -> Any:  # the real listing, over a frozen link
            proxy.freeze()
            loading.set()
            return await listing()

        feed._load = frozen_listing
        async with asyncio.timeout(WAIT):
            await loading.wait()
            await state.aclose()
        assert task.cancelled() and copy.ended and not state.cached
        left = [t for t in asyncio.all_tasks() if t.get_name().startswith("dspex-aio-cache")]
        assert left == []

    with (
        serve() as server,
        TcpProxy(server.address) as proxy,
        AsyncBridgedStateOwner(server.address) as session_id,
    ):
        try:
            on_shared_loop(scenario(proxy, session_id))
        finally:
            proxy.thaw()


class AsyncBridgedStateOwner:
    """A session owned for the length of a ``with`` block (its id), on the loop."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._state: AsyncBridgedState | None = None

    def __enter__(self) -> str:
        self._state = on_shared_loop(AsyncBridgedState.init(address=self._address))
        on_shared_loop(self._state.register_variable("x", "integer", 1))
        return self._state.session_id

    def __exit__(self, *exc_info: object) -> None:
        if self._state is not None:
            on_shared_loop(self._state.aclose())


# -- the whole contract, answered from the copy where it can be -------------------------


class TestCachedAsyncBridgedStateCompliance(CachedContract):
    """The compliance kit on ``AsyncBridgedState.init(cache=True)`` (each handle on
    the embedded server): every answer the copy gives must be the server's."""

    provider = blocking(AsyncBridgedState, capabilities=BridgedState.capabilities())


# -- the bookkeeping both handles share ----------------------------------------------------


def test_a_version_a_listing_showed_is_met_by_the_variables_deletion() -> None:
    """A listing or export the server answered makes the copy expect each variable at
    least that new; when the variable is then deleted (by anyone), the expectation is
    met, not kept for ever: a kept one would send every read to the server from then
    on (the copy serves nothing while a write of the handle's is unseen)."""
    copy = SessionCopy("s")
    assert copy.reloading(0)
    listed = {
        "id": "v1",
        "name": "x",
        "type": "integer",
        "value": 1,
        "constraints": {},
        "metadata": {},
        "version": 1,
        "created_at": 0.0,
        "last_updated_at": 0.0,
    }
    copy.reloaded([listed], through=0)
    copy.expect("v1", 2)  # a server listing showed version 2, its event not come yet
    assert copy.expected == {"v1": 2}
    copy.take(Event("s", 1, "updated", "v1", "x", 2, 2, {}, 0.0))
    assert copy.expected == {}  # met by its version
    copy.expect("v1", 4)  # an export showed version 4; then the variable is deleted
    copy.take(Event("s", 2, "deleted", "v1", "x", None, 4, None, 0.0))
    assert copy.expected == {}
    assert copy.by_id == {}
