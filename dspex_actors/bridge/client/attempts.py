"""One call's attempts, decided without I/O: shared by the sync and asyncio clients.

A call is sent again, with the same request (a write's carries its request id, so
the server applies it once), while its deadline allows and the operation permits
it. When it must end without an answer, what it ends with depends on what its
attempts may have reached: :class:`Attempts` keeps that account, and the client
that owns the I/O (``BridgedState`` with threads, ``AsyncBridgedState`` with
``grpc.aio``) sleeps, retries or settles as it says.
"""

from __future__ import annotations

import time
from typing import Any

from dspex_actors.backoff import Backoff
from dspex_actors.bridge.client.calls import Unanswered
from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.wire.forms import Send

__all__ = ["Attempts", "MaybeApplied", "settled_not_applied"]


class MaybeApplied(Exception):
    """A write that may have reached the server got no answer: settle it."""

    def __init__(self, error: StateError) -> None:
        super().__init__(str(error))
        self.error = error


class Attempts:
    """The account of one call's attempts (see the module docstring)."""

    def __init__(
        self, send: Send[Any, Any], request_id: str, timeout: float, what: str, session_id: str
    ) -> None:
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.expires_ms = int((time.time() + timeout) * 1000)  # the deadline as an instant
        self._retry = send.retry
        self._request_id = request_id
        self._what = what
        self._session_id = session_id
        self._backoff = Backoff(Backoff.RETRY)
        self._maybe_sent = False
        self._telling: StateError | None = None  # the last failure saying more than "late"

    @property
    def maybe_sent(self) -> bool:
        """Whether an attempt that failed may have reached the server."""
        return self._maybe_sent

    def left(self) -> float:
        """How long the next attempt may take."""
        return max(self.deadline - time.monotonic(), 0.001)

    def failed(self, unanswered: Unanswered, closed: StateError | None) -> float:
        """An attempt got no answer: the pause before the next one; or raise what the
        call ends with — ``closed`` (the handle was closed meanwhile),
        :class:`MaybeApplied` (a write that may have been applied: settle it), or
        ``BridgeUnavailable`` (nothing was applied)."""
        self._maybe_sent = self._maybe_sent or unanswered.maybe_sent
        error = unanswered.error
        if self._telling is None or error.details.get("status") != "DEADLINE_EXCEEDED":
            self._telling = error  # (a last attempt cut short says less than a refusal)
        # A stopping server answered for this call (not run): another attempt would
        # only meet a server that is gone, and leave the outcome unknown.
        stopping = bool(error.details.get("stopping"))
        pause = self._backoff.next()
        retry = self._retry and not stopping and closed is None
        if retry and self.deadline - time.monotonic() > pause:
            return pause
        if closed is not None:
            raise closed from error
        if self._request_id and self._maybe_sent:
            raise MaybeApplied(error)
        telling = self._telling
        if self._request_id:
            details = {**telling.details, "session_id": self._session_id}
            raise BridgeUnavailable(
                f"{telling}; {self._what or 'the write'} was not applied", **details
            ) from telling
        if isinstance(telling, BridgeUnavailable):
            raise telling
        raise BridgeUnavailable(f"{telling} (not applied)", session_id=self._session_id)


def settled_not_applied(
    address: str, timeout: float, session_id: str, error: StateError
) -> BridgeUnavailable:
    """A write that got no answer and was settled as not applied: it never will be
    (what both clients raise, ``from error``)."""
    return BridgeUnavailable(
        f"SessionStore at {address} did not answer within {timeout}s; the write to "
        f"session {session_id!r} was settled as not applied and never will be "
        f"(last failure: {error})",
        session_id=session_id,
        settled=True,
    )
