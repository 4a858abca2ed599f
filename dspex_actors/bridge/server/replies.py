"""A Calls stream's answers, written one message at a time, coalesced when ready together.

gRPC takes one write at a time on a stream. Answers that become ready while one is
being written wait for it, then go out together: as one message (the first answer,
the others in its ``more``) to a client that opened the stream saying it reads them
so (``dspex-calls-batch: 1``), or one by one to any other. When other calls of the
stream are running as the first answer is ready, its writer lets them have their
turn first (one loop turn): the calls of one coalesced request, answered at once,
then leave in one message, not the first alone and the rest after it. Answers given
together (a message's reads, answered as they were read) go together. A lone answer
is written at once, as before: coalescing costs it nothing. Each message stays
within what the client said it receives, and no more answers wait for the writer
than the stream runs calls at once: a client that asks faster than it reads is
made to wait, not queued for without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from typing import Any

import grpc.aio

from dspex_actors.errors import BridgeUnavailable, StateError
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import status as wire_status
from dspex_actors.wire.coalesce import coalesced

__all__ = ["Replies", "failure", "stopped_stream"]


def failure(call: int, error: StateError) -> pb.CallReply:
    """The reply refusing a streamed call with ``error``."""
    return pb.CallReply(call=call, error=wire_status.error_status(error).SerializeToString())


def stopped_stream() -> BridgeUnavailable:
    """A stopping server's last word on a Calls stream (its reply to call 0)."""
    return BridgeUnavailable(
        "the SessionStore stopped: every call this stream did not answer was not run",
        not_run=True,
        stopping=True,
    )


class Replies:
    """The writer of one Calls stream's answers (see the module docstring)."""

    def __init__(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        coalesce: bool,
        max_reply: int,
        running: Collection[object] = (),
        most: int = 1 << 30,
    ) -> None:
        self._context = context
        self._most = most
        self._room = asyncio.Event()  # clear while ``most`` answers wait for the writer
        self._coalesce = coalesce
        self._running = running
        self._max_reply = max_reply
        self._pending: list[pb.CallReply | bytes] = []
        self._writing = False
        self.messages = 0
        """Messages written (fewer than answers when answers were coalesced)."""

    async def send(self, *replies: pb.CallReply | bytes, ours: int = 0) -> None:
        """Write ``replies`` (in one message where they fit); while another write is
        under way, leave them to that writer, which writes them next (with what else
        is ready then). ``ours``: how many of the stream's ``running`` calls are the
        sender's own (a call's task: 1). While ``most`` answers wait for a writer
        (the client reads slower than it asks), the sender waits for room: a call's
        task keeps its place among the stream's running calls (so the stream admits
        no more), and the stream's reader reads nothing more meanwhile. Raises what
        the write raised (the stream went away) to whichever caller was writing."""
        self._pending.extend(replies)
        if self._writing:
            if len(self._pending) >= self._most:
                self._room.clear()
                await self._room.wait()
            return
        self._writing = True
        try:
            if self._coalesce and len(self._running) > ours:
                await asyncio.sleep(0)  # their answers, ready this turn, join this one
            while self._pending:
                ready, self._pending = self._pending, []
                self._room.set()
                for message in self._grouped(ready):
                    await self._context.write(message)
                    self.messages += 1
        finally:
            self._writing = False
            self._room.set()  # (the stream went away, if answers are left: nobody waits)

    def _grouped(self, ready: list[pb.CallReply | bytes]) -> Iterator[pb.CallReply | bytes]:
        """The messages that carry ``ready``: runs of answers coalesced within the
        client's limit, an answer serialized already on its own; one answer each to
        a client that does not read them coalesced."""
        if not self._coalesce or len(ready) == 1:
            yield from ready
            return
        run: list[pb.CallReply] = []
        for reply in ready:
            if isinstance(reply, bytes):
                yield from coalesced(run, self._max_reply)
                run = []
                yield reply
            else:
                run.append(reply)
        yield from coalesced(run, self._max_reply)
