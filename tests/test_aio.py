"""The asyncio API: the compliance kit on each asyncio handle, the method lists held
equal to the sync API's, cancellation outcomes, and a loop never blocked."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import grpc.aio
import pytest

from dspex_actors import BridgedState, LocalState
from dspex_actors.aio import AsyncBridgedState, AsyncLocalState
from dspex_actors.aio.methods import ASYNC_METHODS, AsyncSessionMethods
from dspex_actors.methods import SessionMethods
from dspex_actors.testing import StateProviderContract
from dspex_actors.testing.aio import blocking, shared_loop


@pytest.fixture(autouse=True, scope="module")
def facade_loop() -> Iterator[None]:
    """The facades' loop thread, and grpc.aio's poller thread, outlive single tests:
    start both before any test counts the threads it leaves. grpc.aio stops its
    poller when its last channel closes and starts another with the next one, so one
    channel stays open for the module."""

    async def open_one() -> grpc.aio.Channel:
        return grpc.aio.insecure_channel("127.0.0.1:1")

    loop = shared_loop()
    channel = loop.run(open_one())
    yield
    loop.run(channel.close(None))


class TestAsyncLocalStateCompliance(StateProviderContract):
    provider = blocking(AsyncLocalState, capabilities=LocalState.capabilities())


class TestAsyncBridgedStateCompliance(StateProviderContract):
    provider = blocking(AsyncBridgedState, capabilities=BridgedState.capabilities())


@pytest.mark.parametrize("name", ASYNC_METHODS)
def test_each_async_method_is_its_sync_twin_awaited(name: str) -> None:
    """Same name, same parameters, same defaults: the two APIs cannot drift apart."""
    sync = inspect.signature(getattr(SessionMethods, name))
    awaited = getattr(AsyncSessionMethods, name)
    assert inspect.iscoroutinefunction(awaited)
    assert inspect.signature(awaited).parameters == sync.parameters


def test_every_public_sync_method_with_an_async_twin_is_listed() -> None:
    public = {n for n in vars(SessionMethods) if not n.startswith("_")}
    sync_only = {"run", "events", "subscribe", "unsubscribe", "batch", "variable", "v"}
    sync_only |= {"import_with_digest"}  # a migration's step: Contexts only
    assert public - sync_only == set(ASYNC_METHODS)
