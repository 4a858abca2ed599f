"""Shared fixtures: every test must leave no actors and no extra threads running."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import grpc.aio
import pykka
import pytest
from redis_support import redis_server

# The compliance kit's asserts should show their values, as the tests' own do.
pytest.register_assert_rewrite("dspex_actors.testing")

_JOIN_SECONDS = 10.0


def _extra_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves pykka actors or Python threads behind.

    Threads get a bounded join first: an actor's thread may still be finishing its
    teardown when the stop call returns. This waits on the threads themselves, so
    it synchronises instead of sleeping.
    """
    before = set(threading.enumerate())
    yield
    actors = pykka.ActorRegistry.get_all()
    for thread in _extra_threads(before):
        thread.join(_JOIN_SECONDS)
    leftover = _extra_threads(before)
    if actors or leftover:
        pykka.ActorRegistry.stop_all(block=True, timeout=_JOIN_SECONDS)
        pytest.fail(
            f"test left running: {len(actors)} actor(s) {actors!r}, "
            f"thread(s) {[t.name for t in leftover]!r}"
        )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One ``redis-server`` for the whole run (no persistence); skips without one."""
    with redis_server() as server:
        yield server.url


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client of the run's Redis, to look at what was written there."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (every module imported, DSPy's among them) out of
    the garbage collector's sight: a full collection would otherwise walk it again and
    again, and the suite's teardowns spent minutes in it."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module")
def aio_poller() -> Iterator[None]:
    """The facades' loop thread, and grpc.aio's poller thread, outlive single tests:
    start both before any test counts the threads it leaves. grpc.aio stops its
    poller when its last channel closes and starts another with the next one, so one
    channel stays open for the module (an asyncio test module uses it with
    ``pytestmark = pytest.mark.usefixtures("aio_poller")``)."""

    # (imported here: the kit's modules load after pytest set up its assert rewriting)
    from dspex_actors.testing.aio import shared_loop

    async def open_one() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel("127.0.0.1:1")

    loop = shared_loop()
    channel = loop.run(open_one())
    yield
    loop.run(channel.close(None))
