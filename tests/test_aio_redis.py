"""AsyncRedisState: the compliance kit on it, interop with RedisState both ways (events
included), the same outcomes and errors for failures, cancellation, a loop never
blocked, and the Sentinel and Cluster URLs with ``?wait=N`` (real servers on
loopback throughout)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis_support import redis_server
from redis_topologies import cluster_topology, sentinel_topology
from tcp_proxy import TcpProxy
from test_aio import _slow_callbacks
from test_redis_state import ReplyCutter

from dspex_actors.aio.methods import AsyncSessionMethods
from dspex_actors.aio.redis import AsyncRedisState
from dspex_actors.bulk import BULK_ITEMS
from dspex_actors.errors import (
    BridgeUnavailable,
    NotSupported,
    OutcomeUnknown,
    PartialFailure,
    SessionNotFound,
    StateError,
    ValidationError,
    VariableExists,
    VersionConflict,
)
from dspex_actors.redis.pages import DUMP_PAGE
from dspex_actors.redis.state import RedisState
from dspex_actors.streaming import Event
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.aio import blocking, shared_loop

pytest.importorskip("redis", reason="redis-py is not installed (pip install -e '.[dev]')")

WAIT = 30.0  # a hang guard


@pytest.fixture(autouse=True, scope="module")
def facade_loop() -> None:
    """The facades' loop thread outlives single tests: started before any test
    counts the threads it leaves."""
    shared_loop()


class TestAsyncRedisStateCompliance(StateProviderContract):
    provider = blocking(AsyncRedisState, capabilities=RedisState.capabilities())

    @pytest.fixture
    def provider_options(self, redis_url: str) -> dict[str, Any]:
        return {"url": redis_url}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def _events(stream: Any, count: int) -> list[Event]:
    """The next ``count`` events of an open stream (a hang guard around them)."""
    got: list[Event] = []
    async with asyncio.timeout(WAIT):
        async for event in stream:
            got.append(event)
            if len(got) == count:
                break
    return got


# -- interop ------------------------------------------------------------------------------


def test_writes_through_either_handle_are_seen_by_the_other_events_included(
    redis_url: str,
) -> None:
    """An asyncio handle and a RedisState on one session: each reads what the other
    wrote, and each one's events carry the other's writes, in one order."""

    async def scenario() -> None:
        async with await AsyncRedisState.init(url=redis_url) as state:
            sync = RedisState.init(url=redis_url, session_id=state.session_id, create=False)
            seen: list[Event] = []
            heard = threading.Event()

            def listen(event: Event) -> None:
                seen.append(event)
                if len(seen) == 4:
                    heard.set()

            subscription = sync.subscribe("t*", listen)
            try:
                async with state.events("t*") as events:
                    await state.register_variable("temperature", "float", 0.5)
                    sync.set_variable("temperature", 1.0)
                    assert await state.get_variable("temperature") == 1.0
                    await state.set_variable("temperature", 1.5, {"by": "async"})
                    assert sync.get_record("temperature")["metadata"] == {"by": "async"}
                    sync.update_variables({"temperature": 0.25})
                    assert (await state.get_record("temperature"))["version"] == 3
                    mine = await _events(events, 4)
                loop = asyncio.get_running_loop()
                assert await loop.run_in_executor(None, heard.wait, WAIT)
            finally:
                sync.unsubscribe(subscription)
                sync.cleanup()
            described = [(e.kind, e.sequence, e.value) for e in mine]
            assert described == [(e.kind, e.sequence, e.value) for e in seen]
            assert [value for _, _, value in described] == [0.5, 1.0, 1.5, 0.25]

    asyncio.run(scenario())


def test_the_same_bad_inputs_raise_the_same_errors_with_the_same_messages(
    redis_url: str,
) -> None:
    sync = RedisState.init(url=redis_url)
    sync.register_variable("temperature", "float", 0.5, constraints={"max": 2})
    sync.register_variable("max_tokens", "integer", 256)
    attempts: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("set_variable", ("temperature", 5.0), {}),
        ("set_variable", ("temperature", "hot"), {}),
        ("set_variable", ("temperature", 1.0), {"expected_version": 7}),
        ("set_variable", ("nowhere", 1.0), {}),
        ("register_variable", ("temperature", "float", 0.1), {}),
        ("register_variable", ("bad", "nonsense", 1), {}),
        ("update_variables", ({"temperature": 9.0, "max_tokens": "x", "gone": 1},), {}),
        ("get_variable", ("nowhere",), {}),
        ("delete_variable", ("nowhere",), {}),
    ]
    expected: list[tuple[type[BaseException], str]] = []
    for name, args, kwargs in attempts:
        with pytest.raises(StateError) as caught:
            getattr(sync, name)(*args, **kwargs)
        expected.append((type(caught.value), str(caught.value)))
    kinds = {kind for kind, _ in expected}
    assert {ValidationError, VersionConflict, VariableExists, PartialFailure} <= kinds

    async def scenario() -> list[tuple[type[BaseException], str]]:
        got: list[tuple[type[BaseException], str]] = []
        async with await AsyncRedisState.init(
            url=redis_url, session_id=sync.session_id, create=False
        ) as state:
            for name, args, kwargs in attempts:
                with pytest.raises(StateError) as caught:
                    await getattr(state, name)(*args, **kwargs)
                got.append((type(caught.value), str(caught.value)))
        return got

    try:
        assert asyncio.run(scenario()) == expected
    finally:
        sync.cleanup()


# -- failures -------------------------------------------------------------------------------


def test_a_write_whose_reply_was_lost_is_sent_again_and_applied_once(redis_url: str) -> None:
    cutter = ReplyCutter(_port(redis_url))

    async def scenario() -> dict[str, int]:
        url = f"redis://127.0.0.1:{cutter.port}/0"
        async with await AsyncRedisState.init(url=url, timeout=3.0) as state:
            await state.register_variable("counter", "integer", 0)
            await state.register_variable("other", "integer", 0)
            cutter.cut_replies(1)
            assert await state.set_variable("counter", 1) == 1  # the retry's first reply
            cutter.cut_replies(2)
            await state.update_variables({"counter": 2, "other": 2})
            cutter.cut_replies(1)
            await state.register_variable("late", "integer", 0)
            return {r["name"]: r["version"] for r in await state.list_variables()}

    try:
        assert asyncio.run(scenario()) == {"counter": 2, "other": 1, "late": 0}
    finally:
        cutter.close()


def test_a_write_never_answered_is_outcome_unknown_and_settles(redis_url: str) -> None:
    """Every reply lost: the write is OutcomeUnknown with its request id (as
    RedisState's), a read is BridgeUnavailable, and ``await settle()`` tells the
    truth once Redis answers again; the error's blocking settle() is not offered."""
    cutter = ReplyCutter(_port(redis_url))

    async def scenario() -> tuple[OutcomeUnknown, bool, int]:
        url = f"redis://127.0.0.1:{cutter.port}/0"
        async with await AsyncRedisState.init(url=url, timeout=0.5) as state:
            await state.register_variable("counter", "integer", 0)
            cutter.cut_replies(1_000_000)
            with pytest.raises(OutcomeUnknown) as unknown:
                await state.set_variable("counter", 1)
            with pytest.raises(BridgeUnavailable):  # a read is never "unknown"
                await state.get_variable("counter")
            cutter.cut_replies(0)
            request_id = unknown.value.request_id
            assert request_id is not None
            applied = await state.settle(request_id, age=2.0)
            return unknown.value, applied, (await state.get_record("counter"))["version"]

    try:
        unknown, applied, version = asyncio.run(scenario())
    finally:
        cutter.close()
    assert "settle() tells" in str(unknown)
    assert applied and version == 1, "applied once, whatever the retries"
    with pytest.raises(NotSupported):
        unknown.settle()


def test_a_stopped_redis_is_settled_not_applied_and_a_killed_one_fails_as_redis_states() -> None:
    """Redis stopped (SIGSTOP) under a write: no answer within the deadline, and the
    settle cannot be answered either: OutcomeUnknown. Once it runs again the script
    arrives past its deadline and is refused, and settling says not applied. Then
    Redis killed under idle connections: a write fails as RedisState's does, the
    same class (OutcomeUnknown with its request id: the broken connection may
    have carried it)."""
    with redis_server() as server:

        async def stopped() -> tuple[str, bool, Any]:
            async with await AsyncRedisState.init(url=server.url, timeout=0.5) as state:
                await state.register_variable("x", "integer", 0)
                os.kill(server.process.pid, signal.SIGSTOP)
                try:
                    with pytest.raises(OutcomeUnknown) as unknown:
                        await state.set_variable("x", 1)
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)
                request_id = unknown.value.request_id
                assert request_id is not None
                applied = await state.settle(request_id, age=1.0)
                return str(unknown.value), applied, await state.get_variable("x")

        message, applied, value = asyncio.run(stopped())
        assert "may or may not have been applied" in message
        assert (applied, value) == (False, 0)

        sync = RedisState.init(url=server.url, timeout=0.3)
        sync.register_variable("x", "integer", 0)

        async def killed() -> StateError:
            state = await AsyncRedisState.init(
                url=server.url, session_id=sync.session_id, create=False, timeout=0.3
            )
            # As the sync handle: x's definition known (the write goes out at once),
            # and a connection held idle, to find broken.
            await state.set_variable("x", 0)
            server.process.kill()
            server.process.wait(WAIT)
            try:
                with pytest.raises((BridgeUnavailable, OutcomeUnknown)) as refused:
                    await state.set_variable("x", 1)
            finally:
                await state.aclose()
            return refused.value

        error = asyncio.run(killed())
        with pytest.raises((BridgeUnavailable, OutcomeUnknown)) as sync_error:
            sync.set_variable("x", 1)
        sync.cleanup()
    # A connection that broke under the write may have carried it: both say so alike.
    assert type(error) is type(sync_error.value)
    assert isinstance(error, OutcomeUnknown) and error.request_id, repr(error)


def test_unreachable_redis_is_unavailable_at_init() -> None:
    from redis_support import free_port

    async def scenario() -> None:
        await AsyncRedisState.init(url=f"redis://127.0.0.1:{free_port()}/0", timeout=0.3)

    with pytest.raises(BridgeUnavailable, match="not applied"):
        asyncio.run(scenario())


# -- cancellation --------------------------------------------------------------------------


class _Proxy(TcpProxy):
    """A Redis proxy that tells when a client's bytes reach it (and are held, frozen)."""

    def __init__(self, upstream: str) -> None:
        self.took = threading.Event()
        super().__init__(upstream, http2=False)

    def in_hand(self, change: int) -> None:
        super().in_hand(change)
        if change > 0:
            self.took.set()


@contextlib.contextmanager
def _proxy(redis_url: str) -> Iterator[_Proxy]:
    proxy = _Proxy(f"127.0.0.1:{_port(redis_url)}")
    try:
        yield proxy
    finally:
        proxy.thaw()
        proxy.stop()


async def _cancelled(proxy: _Proxy, write: Awaitable[Any]) -> asyncio.CancelledError:
    """Run ``write`` with the proxy frozen; cancel it once its first bytes are held."""
    proxy.took.clear()
    proxy.freeze()
    task = asyncio.ensure_future(write)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, proxy.took.wait, WAIT)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError as cancelled:
        return cancelled
    finally:
        proxy.thaw()
    raise AssertionError("the cancelled write returned")


def test_a_write_cancelled_before_its_script_was_sent_is_not_applied(redis_url: str) -> None:
    """A handle that has not read the variable's definition yet: its write is
    cancelled while that read is held; the note says not applied, and it was not."""
    with _proxy(redis_url) as proxy:

        async def scenario() -> tuple[asyncio.CancelledError, Any]:
            url = f"redis://{proxy.address}/0"
            async with await AsyncRedisState.init(url=redis_url) as owner:
                await owner.register_variable("temperature", "float", 0.5)
                async with await AsyncRedisState.init(
                    url=url, session_id=owner.session_id, create=False
                ) as state:
                    cancelled = await _cancelled(proxy, state.set_variable("temperature", 1.5))
                    return cancelled, await owner.get_variable("temperature")

        cancelled, value = asyncio.run(scenario())
    notes = " ".join(getattr(cancelled, "__notes__", []))
    assert "was not applied" in notes and value == 0.5


def test_a_write_cancelled_after_it_was_sent_names_its_request_id_to_settle(
    redis_url: str,
) -> None:
    """The write's script is held on its way to Redis; the caller cancels: the note
    names the request id, and settling it tells the truth (whatever reached Redis
    first, the settle or the script, the value agrees)."""
    with _proxy(redis_url) as proxy:

        async def scenario() -> tuple[bool, Any]:
            url = f"redis://{proxy.address}/0"
            async with await AsyncRedisState.init(url=url) as state:
                await state.register_variable("temperature", "float", 0.5)
                cancelled = await _cancelled(proxy, state.set_variable("temperature", 1.5))
                notes = " ".join(getattr(cancelled, "__notes__", []))
                found = re.search(r"request_id='([0-9a-f]+)'", notes)
                assert found, notes
                applied = await state.settle(found.group(1), age=1.0)
                return applied, await state.get_variable("temperature")

        applied, value = asyncio.run(scenario())
    assert value == (1.5 if applied else 0.5)


# -- events ------------------------------------------------------------------------------


def test_a_detaching_handle_ends_its_streams_with_closed_and_an_owner_everyones(
    redis_url: str,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        owner = await AsyncRedisState.init(url=redis_url)
        attached = await AsyncRedisState.init(
            url=redis_url, session_id=owner.session_id, create=False
        )
        await owner.register_variable("x", "integer", 0)
        theirs = owner.events()
        mine = attached.events()
        async with theirs, mine:
            reading = asyncio.ensure_future(_events(mine, 2))
            await owner.set_variable("x", 1)
            await attached.aclose()  # detaches: its stream gives x=1, then closed
            detached = await reading
            await owner.aclose()  # closes the session: every stream ends
            ended = await _events(theirs, 2)
        return detached, ended

    detached, ended = asyncio.run(scenario())
    assert [e.kind for e in detached] == ["updated", "closed"]
    assert [e.kind for e in ended] == ["updated", "closed"]


def test_a_stream_resumes_from_a_sequence_and_past_the_history_gets_overflow(
    redis_url: str,
) -> None:
    async def scenario() -> tuple[list[Event], list[Event]]:
        async with await AsyncRedisState.init(url=redis_url, event_history=10) as state:
            await state.register_variable("x", "integer", 0)
            for n in range(1, 400):
                await state.set_variable("x", n)
            start = await state.history_start()
            async with state.events(start=start) as resumed:
                kept = await _events(resumed, 2)
            async with state.events(start=1) as late:
                # As RedisState's subscriber: past the history, overflow, then the
                # present only, so the write is made once the overflow was read (one
                # made before it is part of what was lost).
                past = await _events(late, 1)
                await state.set_variable("x", 1_000)
                past += await _events(late, 1)
            return kept, past

    kept, past = asyncio.run(scenario())
    assert kept[0].sequence + 1 == kept[1].sequence
    assert [e.kind for e in past] == ["overflow", "updated"] and past[1].value == 1_000
    assert past[0].sequence == 0  # as RedisState's: the cursor before the lost events


def test_a_listing_and_an_export_of_a_large_session_are_redis_states(redis_url: str) -> None:
    """Past BULK_ITEMS variables a scan's pages are decoded, and its answer built, in a
    thread (off the loop): the answer is the sync handle's all the same."""
    count = BULK_ITEMS + DUMP_PAGE
    sync = RedisState.init(url=redis_url)
    for n in range(count):
        sync.register_variable(f"v{n}", "integer", n)

    async def scenario() -> tuple[list[Any], dict[str, Any]]:
        async with await AsyncRedisState.init(
            url=redis_url, session_id=sync.session_id, create=False
        ) as state:
            return await state.list_variables(), await state.export_state()

    try:
        listed, exported = asyncio.run(scenario())
        assert listed == sync.list_variables()
        assert exported["variables"] == sync.export_state()["variables"]
    finally:
        sync.cleanup()
    assert len(listed) == count


def test_an_open_on_a_missing_session_is_session_not_found(redis_url: str) -> None:
    async def scenario() -> None:
        await AsyncRedisState.init(url=redis_url, session_id="never_made", create=False)

    with pytest.raises(SessionNotFound):
        asyncio.run(scenario())


# -- the loop -------------------------------------------------------------------------------


def test_no_call_blocks_the_loop_for_more_than_5_ms(redis_url: str) -> None:
    """test_aio's workload and probe on AsyncRedisState (a report in two runs out of
    two is a call that blocks)."""

    def opener() -> Awaitable[AsyncSessionMethods]:
        return AsyncRedisState.init(url=redis_url)

    first = _slow_callbacks(opener)
    second = _slow_callbacks(opener) if first else []
    assert not (first and second), f"the loop was blocked: {first} then {second}"


# -- Sentinel and Cluster -----------------------------------------------------------------


async def _round_trip(url: str, check: Callable[[AsyncRedisState], Awaitable[None]]) -> None:
    """Writes, reads, a listing and events through ``url``, seen by RedisState too."""
    async with await AsyncRedisState.init(url=url) as state:
        async with state.events() as events:  # open first: the registration is an event
            await state.register_variable("x", "integer", 0)
            for n in range(1, 6):
                await state.set_variable("x", n)
            got = await _events(events, 6)
        assert [e.value for e in got] == [0, 1, 2, 3, 4, 5]
        sync = RedisState.init(url=url, session_id=state.session_id, create=False)
        try:
            assert sync.get_record("x")["version"] == 5
        finally:
            sync.cleanup()
        await check(state)


def test_a_sentinel_url_with_wait_reaches_the_primary_and_its_replica() -> None:
    with sentinel_topology() as sentinel:

        async def on_the_replica(state: AsyncRedisState) -> None:
            replica = next(s for s in sentinel.servers if s.port != sentinel.primary_port())
            with contextlib.closing(replica.client()) as client:
                record = await state.get_record("x")
                # No polling: WAIT returned only once the replica had it.
                version = client.hget(state._session.keys[3], f"r:{record['id']}")
                assert version == str(record["version"]).encode()

        asyncio.run(_round_trip(sentinel.url + "?wait=1", on_the_replica))


def test_a_cluster_url_serves_sessions_whose_slots_are_on_different_nodes() -> None:
    with cluster_topology() as cluster:

        async def scenario() -> set[int]:
            owners: set[int] = set()
            while len(owners) < 2:
                async with await AsyncRedisState.init(url=cluster.url) as state:
                    await state.register_variable("x", "integer", 0)
                    owners.add(cluster.owner(state._session.keys[0]).port)
            await _round_trip(cluster.url, _nothing)
            return owners

        assert len(asyncio.run(scenario())) >= 2


async def _nothing(state: AsyncRedisState) -> None:
    pass
