"""A Calls stream's reader: each call admitted as it arrives, small reads answered on the spot.

The reader takes the stream's messages one at a time and admits each call in it
(each of a coalesced message's ``more`` is a call of its own) with the moment it
arrived. Admitting either answers the call now (a refusal, or a read the store
answered from what it holds: no task, no turn of the loop) or starts its task. The
answers of one message are written together, by the reader itself, before it reads
the next: a message of reads costs the server one read and one write.

A stopping server stops the reader while it waits for the client's next message,
never in the middle of a write: a write the reader took over may carry the answers
of other calls too (writes among them), and the stream's last word, that the calls
it did not answer were not run, must not follow an answer lost under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from google.protobuf.message import DecodeError

from dspex_actors.bridge.server.replies import Replies
from dspex_actors.v1 import session_store_pb2 as pb

__all__ = ["Admit", "CallsReader"]

Admit = Callable[[pb.CallRequest, float], pb.CallReply | bytes | None]
"""Admit one call that arrived at a moment (monotonic): the reply to write now (its
answer, or its refusal), or None when a task of its own runs it."""


class CallsReader:
    """The reader of one Calls stream (see the module docstring)."""

    def __init__(
        self,
        requests: AsyncIterator[pb.CallRequest],
        admit: Admit,
        replies: Replies,
        most: int,
    ) -> None:
        self._requests = requests
        self._admit = admit
        self._replies = replies
        self._most = most
        self._task: asyncio.Task[bool] | None = None
        self._writing = False
        self._stopped = False

    def start(self) -> asyncio.Task[bool]:
        """Start reading, in a task of its own: its result is False at a message that
        is not protobuf, or whose ``more`` holds ``most`` calls or more or nests them
        (the stream then ends), True when the client ended its side or the reader
        was stopped."""
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self._task

    def stop(self) -> None:
        """Read no more: at once while waiting for a message, else once the answers
        being written are written."""
        self._stopped = True
        if not self._writing and self._task is not None:
            self._task.cancel()

    async def _read(self) -> bool:
        admit, most = self._admit, self._most
        try:
            async for request in self._requests:
                arrived = time.monotonic()
                more = list(request.more)
                if more:  # calls coalesced in one message: each is a call of its own
                    if len(more) >= most or any(call.more for call in more):
                        return False  # more than the stream runs, or nested
                    del request.more[:]
                answers = []
                for call in (request, *more) if more else (request,):
                    answer = admit(call, arrived)
                    if answer is not None:
                        answers.append(answer)
                if answers:
                    self._writing = True
                    try:
                        await self._replies.send(*answers)
                    finally:
                        self._writing = False
                    if self._stopped:
                        return True
        except DecodeError:
            return False
        return True
