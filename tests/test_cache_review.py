"""What a reviewer tried against the coherent copy's bookkeeping (SessionCopy): listings and
exports the server answered make the copy expect each variable's version; a
deletion meets what is expected of it. Can an expectation outlive its variable and
leave the copy answering nothing from itself for ever?

The bookkeeping is driven directly (it does no I/O: these are the exact calls its
feeds make), and end to end on a real SessionStore in this process whose Watch the
server's own failpoint holds, then breaks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bridge_support import ServerHold
from cache_support import CachedContract

from dspex_actors import BridgedState, failpoints
from dspex_actors.bridge import SessionStoreServer, serve
from dspex_actors.bridge.client.cache import MISS, SessionCopy
from dspex_actors.errors import BridgeUnavailable
from dspex_actors.streaming import Event

WAIT = 30.0  # a hang guard


def _listed(var_id: str, name: str, version: int, value: Any = 0) -> dict[str, Any]:
    return {
        "id": var_id,
        "name": name,
        "type": "integer",
        "value": value,
        "constraints": {},
        "metadata": {},
        "version": version,
        "created_at": 0.0,
        "last_updated_at": 0.0,
    }


def _serving(*records: dict[str, Any]) -> SessionCopy:
    copy = SessionCopy("s")
    assert copy.reloading(1)
    copy.reloaded(records, through=0)
    assert copy.serving and copy.expected == {}
    return copy


# -- held ---------------------------------------------------------------------------------


def test_a_listing_taught_before_the_deletion_event_is_met_by_it() -> None:
    """The order the brief names: listing (x at 2), then x's deletion event."""
    copy = _serving(_listed("v1", "x", 1))
    copy.expect("v1", 2)
    copy.take(Event("s", 1, "updated", "v1", "x", 2, 2, {}, 0.0))
    copy.expect("v1", 3)
    copy.take(Event("s", 2, "deleted", "v1", "x", None, 3, None, 0.0))
    assert copy.expected == {}
    assert copy.listing(None) == []


def test_listed_deleted_and_registered_again_under_the_name_is_met() -> None:
    """x listed at 1, deleted, registered again (a new id) under the same name: the
    old id's expectation is met by the deletion, the name maps to the new id."""
    copy = _serving(_listed("v1", "x", 1))
    copy.expect("v1", 1)  # a listing: met at once (the copy holds it at 1)
    copy.expect("v1", 2)  # a later listing, its event not come
    copy.take(Event("s", 1, "updated", "v1", "x", 5, 2, {}, 0.0))
    copy.take(Event("s", 2, "deleted", "v1", "x", None, 2, None, 0.0))
    copy.take(Event("s", 3, "registered", "v2", "x", 7, 1, {}, 0.0))
    assert copy.expected == {}
    assert copy.get("x") == 7


# -- broken -------------------------------------------------------------------------------


def test_a_listing_reply_that_arrives_after_the_deletion_event_is_not_kept_for_ever() -> None:
    """The server listed x at 2, then another client deleted x; the Watch delivered
    the deletion to the copy before the listing's reply (on the Calls stream) came
    back to the caller, who then teaches the copy ``expect(x, 2)``."""
    copy = _serving(_listed("v1", "x", 1))
    copy.take(Event("s", 1, "updated", "v1", "x", 5, 2, {}, 0.0))
    copy.take(Event("s", 2, "deleted", "v1", "x", None, 2, None, 0.0))
    copy.expect("v1", 2)  # the listing's reply, taken before the deletion, lands now
    assert copy.listing(None) is not MISS, f"stuck: expected={copy.expected}"
    assert copy.get_many(["unknown"]) == {}  # a name the copy knows absent


def test_a_deletion_met_during_a_reload_meets_what_a_listing_taught() -> None:
    """The feed broke; meanwhile the handle's listing went to the server (x at 2,
    copy at 1) and another client deleted x; the reload's listing has no x."""
    copy = _serving(_listed("v1", "x", 1))
    copy.disconnected()
    copy.expect("v1", 2)  # the server's listing, the copy still at 1
    assert copy.reloading(None)
    copy.take(Event("s", 3, "deleted", "v1", "x", None, 3, None, 0.0))  # pending
    copy.reloaded([], through=3)  # the fresh listing: x is gone
    assert copy.serving
    assert copy.listing(None) is not MISS, f"stuck: expected={copy.expected}"


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SessionStoreServer]:
    with serve() as running:
        yield running


def test_bridged_listed_then_deleted_across_a_watch_break_leaves_the_copy_whole(
    server: SessionStoreServer,
) -> None:
    reached = threading.Event()
    release = threading.Event()
    hits = [0]

    async def hold_then_break() -> None:  # on the server's loop: the first event only
        hits[0] += 1
        if hits[0] > 1:
            return
        reached.set()
        await asyncio.to_thread(release.wait, WAIT)
        raise BridgeUnavailable("review: the Watch drops here")

    cached = BridgedState.init(address=server.address, cache=True)
    other = BridgedState.init(address=server.address, session_id=cached.session_id, create=False)
    try:
        cached.register_variable("x", "integer", 0)
        cached.register_variable("y", "integer", 0)
        cached.sync_cache()
        copy = cached._cache
        assert copy is not None and copy.serving
        loads = copy.loads
        try:
            with failpoints.enabled("watch.event", hold_then_break):
                other.set_variable("x", 1)  # its event is held: the copy stays at 0
                assert reached.wait(WAIT)
                cached.set_variable("y", 1)  # a write of ours: listings go to the server
                assert [r["name"] for r in cached.list_variables()] == ["x", "y"]
                other.delete_variable("x")
                release.set()  # the held event breaks the Watch
                deadline = time.monotonic() + WAIT
                while copy.loads == loads:  # reloaded after the break (a real condition)
                    assert time.monotonic() < deadline, "the copy was not reloaded"
                    cached.sync_cache()
        finally:
            release.set()
        cached.sync_cache()
        assert cached.get_variable("y") == 1
        assert copy.listing(None) is not MISS, f"stuck: expected={copy.expected}"
    finally:
        other.cleanup()
        cached.cleanup()


# -- a subscriber reading back -------------------------------------------------------------


def test_a_copy_behind_what_a_subscriber_was_told_sends_reads_to_the_server() -> None:
    """A handle's subscriber told of event 2 reads back through the handle before the
    copy's own feed took event 2 in: the copy answers nothing (the read goes to the
    server) until it has, then serves again. Without this, the kit's
    ``test_subscriber_may_call_back_into_the_session`` read the old value on a
    cached BridgedState about one run in six."""
    copy = _serving(_listed("v1", "x", 1, value=0))
    copy.take(Event("s", 1, "updated", "v1", "x", 5, 2, {}, 0.0))
    assert copy.value("x") == 5
    copy.told(2)  # the subscriber's stream is ahead of the copy's
    assert copy.value("x") is MISS
    assert copy.listing(None) is MISS
    copy.take(Event("s", 2, "updated", "v1", "x", 6, 3, {}, 0.0))
    assert copy.value("x") == 6
    assert copy.expected == {}  # the hot path is on again
    copy.told(1)  # an event the copy has already: nothing to wait for
    assert copy.value("x") == 6


class TestCachedBridgedStateCompliance(CachedContract):
    """The compliance kit on a sync ``BridgedState.init(cache=True)``: every answer
    the copy gives must be the server's (the asyncio twin's run is in
    ``tests/test_aio_cache.py``, with the same known gap)."""

    provider = BridgedState


def test_after_an_overflow_with_nothing_written_since_sync_cache_returns() -> None:
    """The server keeps 4 events; the cached handle's Watch is held at one event
    while 10 more are written, then let go: its stream says ``overflow`` and goes
    on from the present, with nothing after. The copy re-reads the session, and
    ``sync_cache()`` returns: the re-read is known to hold every event before the
    session's next (read first), where before it waited for an event that never
    came and raised after its timeout."""
    hold = ServerHold()

    with serve(event_history=4) as server, BridgedState.init(address=server.address) as writer:
        writer.register_variable("x", "integer", 0)
        with BridgedState.init(
            session_id=writer.session_id, address=server.address, create=False, cache=True
        ) as cached:
            copy = cached._cache
            assert copy is not None and cached.cached and copy.loads == 1
            try:
                with failpoints.enabled("watch.event", hold):
                    writer.set_variable("x", 1)
                    assert hold.reached.wait(WAIT)
                for value in range(2, 12):
                    writer.set_variable("x", value)
            finally:
                hold.release()
            cached.sync_cache(timeout=WAIT)
            assert copy.loads == 2  # the overflow's re-read
            assert cached.get_variable("x") == 11 and cached.cached
