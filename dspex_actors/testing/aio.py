"""The compliance kit on an asyncio handle: :func:`blocking` makes it a StateProvider.

The kit is written for threads (it meets them on barriers, subscribes callables and
Pykka actors). ``blocking(AsyncLocalState)`` is a StateProvider class whose every
method runs the asyncio handle's coroutine on an event loop of its own, in a thread
of its own, and waits for it; its ``subscribe`` reads the handle's
``events()`` stream through the same :class:`~dspex_actors.delivery.Subscription`
every sync backend uses (so the same drain and unsubscribe rules are proven).
What the kit then proves is the asyncio handle's behaviour: the facade adds no rule
of its own. A backend class of your own proves itself the same way::

    class TestMyAsyncBackend(StateProviderContract):
        provider = blocking(MyAsyncBackend, capabilities=MySyncTwin.capabilities())
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, ClassVar, Self

from dspex_actors.aio.following import EventStream
from dspex_actors.aio.methods import AsyncSessionMethods
from dspex_actors.delivery import Ended, Subscription
from dspex_actors.errors import SessionClosed
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord, check_pattern
from dspex_actors.streaming import Event, Subscriber, check_subscriber

__all__ = ["Blocking", "blocking", "shared_loop"]

_FINISH = 5.0
"""Seconds a subscription may take to deliver what its stream holds at cleanup."""

_CALL_GUARD = 120.0
"""Seconds one facade call waits for its coroutine (a hang guard, far past any deadline)."""


class _Loop:
    """An event loop running in a thread of its own, for the life of the process:
    every facade shares it (grpc.aio keeps a poller thread per loop that uses it, so
    a loop per facade would leave one behind each time)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="dspex-aio-facade", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(_CALL_GUARD)


_shared: list[_Loop] = []
_shared_lock = threading.Lock()


def shared_loop() -> _Loop:
    """The facades' loop, started by the first that needs it."""
    with _shared_lock:
        if not _shared:
            _shared.append(_Loop())
        return _shared[0]


class _StreamSource:
    """An asyncio event stream read by a delivery thread, one event per read; a read
    that times out keeps its pending step for the next (cancelling it would end the
    stream)."""

    def __init__(self, loop: _Loop, stream: EventStream) -> None:
        self._loop = loop
        self._stream = stream
        self._pending: concurrent.futures.Future[Event | None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._woken = False
        self._lock = threading.Lock()

    async def _next(self) -> Event | None:
        self._task = asyncio.current_task()
        return await self._stream.step()

    def read(self, timeout: float) -> list[Event]:
        with self._lock:  # (a wake() between the check and the step would be lost)
            if self._woken:  # stopped: no step is started
                raise Ended
            if self._pending is None:
                self._pending = asyncio.run_coroutine_threadsafe(self._next(), self._loop.loop)
        try:
            event = self._pending.result(timeout)
        except concurrent.futures.TimeoutError:
            return []
        except (StopAsyncIteration, concurrent.futures.CancelledError):
            raise Ended from None
        self._pending = None
        return [] if event is None else [event]  # None: it moved past skipped events

    def ready(self) -> None:
        """Opened before the subscription was made: nothing to wait for."""

    @property
    def position(self) -> int | None:
        return self._stream.position

    def wake(self) -> None:
        """The delivery stops: its read returns now (its pending step is cancelled,
        started or not; :meth:`close` then waits for that step to end)."""
        with self._lock:
            self._woken = True
            pending = self._pending
        if pending is not None:
            pending.cancel()

    def close(self) -> None:
        self._loop.run(self._finish())

    async def _finish(self) -> None:
        """End the pending step (it may be running its stream's own cleanup), then
        the stream."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._stream.aclose()


class Blocking(StateProvider):
    """An asyncio handle behind a blocking StateProvider (see the module docstring)."""

    async_class: ClassVar[type[AsyncSessionMethods]]
    flags: ClassVar[dict[str, bool]] = {}

    def __init__(self, loop: _Loop, handle: AsyncSessionMethods) -> None:
        self._loop = loop
        self.handle = handle
        self.session_id = handle.session_id
        self._closed = False
        self._subscriptions: list[Subscription] = []

    @classmethod
    def init(cls, **opts: Any) -> Self:
        loop = shared_loop()
        init: Callable[..., Coroutine[Any, Any, AsyncSessionMethods]]
        init = cls.async_class.init  # type: ignore[attr-defined]
        return cls(loop, loop.run(init(**opts)))

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self._closed:  # the loop is gone with the handle
            coroutine.close()
            raise SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")
        return self._loop.run(coroutine)

    def register_variable(
        self,
        name: str,
        type: str,
        initial_value: Any,
        *,
        constraints: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> str:
        return self._run(  # type: ignore[no-any-return]
            self.handle.register_variable(
                name,
                type,
                initial_value,
                constraints=constraints,
                metadata=metadata,
                description=description,
            )
        )

    def get_variable(self, identifier: str) -> Any:
        return self._run(self.handle.get_variable(identifier))

    def set_variable(
        self,
        identifier: str,
        new_value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        expected_version: int | None = None,
    ) -> int:
        return self._run(  # type: ignore[no-any-return]
            self.handle.set_variable(
                identifier, new_value, metadata, expected_version=expected_version
            )
        )

    def list_variables(self, pattern: str | None = None) -> list[VariableRecord]:
        return self._run(self.handle.list_variables(pattern))  # type: ignore[no-any-return]

    def get_record(self, identifier: str) -> VariableRecord:
        return self._run(self.handle.get_record(identifier))  # type: ignore[no-any-return]

    def has_variable(self, identifier: str) -> bool:
        return self._run(self.handle.has_variable(identifier))  # type: ignore[no-any-return]

    def get_variables(self, identifiers: Iterable[str]) -> dict[str, Any]:
        return self._run(self.handle.get_variables(identifiers))  # type: ignore[no-any-return]

    def update_variables(
        self, updates: Mapping[str, Any], metadata: Mapping[str, Any] | None = None
    ) -> None:
        self._run(self.handle.update_variables(updates, metadata))

    def delete_variable(self, identifier: str) -> None:
        self._run(self.handle.delete_variable(identifier))

    def export_state(self) -> dict[str, Any]:
        return self._run(self.handle.export_state())  # type: ignore[no-any-return]

    def import_state(self, exported: Mapping[str, Any]) -> None:
        self._run(self.handle.import_state(exported))

    def heartbeat(self) -> float | None:
        return self._run(self.handle.heartbeat())  # type: ignore[no-any-return]

    def subscribe(self, pattern: str | None, subscriber: Subscriber) -> Subscription:
        glob = check_pattern(pattern)
        check_subscriber(subscriber)
        if self._closed:
            raise SessionClosed(f"session {self.session_id!r}: this handle is cleaned up")
        stream = self.handle.events(glob)
        self._run(stream.__aenter__())  # the stream is held: no later write is missed
        subscription = Subscription(
            _StreamSource(self._loop, stream),
            self.session_id,
            glob,
            subscriber,
            name=f"dspex-aio-events-{self.session_id}",
            fence=lambda: int(self._run(self.handle.session_info())["next_sequence"]),
        )
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Any) -> None:
        subscription.close()

    @classmethod
    def requires_bridge(cls) -> bool:
        return False

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return dict(cls.flags)

    def cleanup(self) -> None:
        if self._closed:
            return
        try:
            # The handle first: an owner's session closes, and each stream gives what
            # it still holds, up to its closed; then each subscription ends.
            self._run(self.handle.aclose())
            for subscription in self._subscriptions:
                subscription.finish(_FINISH)
        finally:
            self._closed = True


def blocking(
    async_class: type[AsyncSessionMethods], *, capabilities: Mapping[str, bool]
) -> type[Blocking]:
    """A StateProvider class over ``async_class`` (see the module docstring);
    ``capabilities``: the flags its sync twin proves."""
    return type(
        f"Blocking{async_class.__name__}",
        (Blocking,),
        {"async_class": async_class, "flags": dict(capabilities)},
    )
