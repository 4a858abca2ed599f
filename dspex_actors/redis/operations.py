"""The Redis engine's table: each operation and the Lua script it runs.

:func:`run` is how both Redis front ends run an operation: RedisState for a handle,
the Redis store for a SessionStore server. Reads are one script each, answered from
one moment of the session; writes are planned in this process against the
variables' definitions and sent as one script each (:mod:`dspex_actors.redis.writes`).
A write's :attr:`Step.replayed` reads its answer back from the reply Redis remembered
for its request id, for a retry whose own checks would now refuse it.

Each step is a generator a driver runs (:mod:`dspex_actors.redis.steps`): :func:`run`
runs one blocking, on redis-py; ``AsyncRedisState`` awaits the same on
``redis.asyncio``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

from dspex_actors.errors import NotSupported
from dspex_actors.exports import columns_digest, export_of
from dspex_actors.messages import (
    CloseSession,
    CommitSession,
    DeleteVariable,
    Digest,
    ExportSession,
    ExportState,
    GetRecord,
    GetSession,
    GetVariable,
    GetVariables,
    GetVersioned,
    HasVariable,
    Heartbeat,
    ImportState,
    ListVariables,
    Operation,
    RegisterVariable,
    Settle,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.records import SessionInfo, VariableRecord, name_matches
from dspex_actors.redis import pages, scripts, writes
from dspex_actors.redis.session import RedisSession, SessionEngine, unpack
from dspex_actors.redis.steps import Steps, answered

__all__ = ["SCRIPTS", "Step", "replay", "replayed", "run", "steps"]

R = TypeVar("R")


class Step(NamedTuple):
    """How the engine runs one operation, and how a write's remembered reply answers
    (both steps: :mod:`dspex_actors.redis.steps`)."""

    run: Callable[[SessionEngine, Any], Steps[Any]]
    replayed: Callable[[SessionEngine, Any, list[Any]], Steps[Any]] | None = None


def steps(session: SessionEngine, operation: Operation[R]) -> Steps[R]:
    """The step that runs one operation on the session, for a driver to run; raises
    its ``StateError``."""
    step = SCRIPTS.get(type(operation))
    if step is None:
        raise NotSupported(f"a Redis session cannot run {type(operation).__name__}")
    session.check_open()
    found: Steps[R] = step.run(session, operation)
    return found


def replay(session: SessionEngine, operation: Operation[R], reply: list[Any]) -> Steps[R]:
    """What ``operation`` answered, from the reply Redis remembered for it (a write's)."""
    step = SCRIPTS[type(operation)]
    if step.replayed is None:
        raise NotSupported(f"{type(operation).__name__} leaves no reply to replay")
    found: Steps[R] = step.replayed(session, operation, reply)
    return found


def run(session: RedisSession, operation: Operation[R]) -> R:
    """Run one operation on a blocking engine; raise its ``StateError``."""
    return session.drive(steps(session, operation))


def replayed(session: RedisSession, operation: Operation[R], reply: list[Any]) -> R:
    """:func:`replay`, blocking."""
    return session.drive(replay(session, operation, reply))


def _given(answer: Callable[[Any, list[Any]], Any]) -> Callable[..., Steps[Any]]:
    """A replay that needs no request: the answer read off the remembered reply."""
    return lambda session, op, reply: answered(answer(op, reply))


# -- reads ----------------------------------------------------------------------------


def _get(session: SessionEngine, op: GetVariable | GetVersioned) -> Steps[Any]:
    if not session.identifies(op.identifier):
        raise session.missing(op.identifier)
    value = yield from session.call(
        scripts.GET, session.keys, [session.incarnation, op.identifier]
    )
    if value is None:
        raise session.missing(op.identifier)
    return unpack(value)


def _record(session: SessionEngine, op: GetRecord | GetVersioned) -> Steps[VariableRecord]:
    if not session.identifies(op.identifier):
        raise session.missing(op.identifier)
    row = yield from session.read(scripts.RECORD, op.identifier)
    if row is None:
        raise session.missing(op.identifier)
    return session.record_of(row, 0)


def _versioned(session: SessionEngine, op: GetVersioned) -> Steps[tuple[Any, int]]:
    record = yield from _record(session, op)
    return record.value, record.version


def _get_many(session: SessionEngine, op: GetVariables | HasVariable) -> Steps[dict[str, Any]]:
    identifiers = op.identifiers if isinstance(op, GetVariables) else [op.identifier]
    wanted = list(dict.fromkeys(i for i in identifiers if session.identifies(i)))
    if not wanted:
        return {}
    values = yield from session.read(scripts.GET_MANY, *wanted)
    return {
        identifier: unpack(value)
        for identifier, value in zip(wanted, values, strict=True)
        if value is not None
    }


def _has(session: SessionEngine, op: HasVariable) -> Steps[bool]:
    if not session.identifies(op.identifier):
        return False
    return op.identifier in (yield from _get_many(session, op))


def _list(session: SessionEngine, op: ListVariables) -> Steps[list[VariableRecord]]:
    """Every record in creation order (one moment); the pattern globs names here."""
    # The pages' rows are session.record_of's VariableRecords (pages.Records says dicts).
    records = cast("list[VariableRecord]", (yield from pages.read_whole(session))[2])
    if op.pattern is None:
        return records
    return [r for r in records if name_matches(r["name"], op.pattern)]


def _export(session: SessionEngine, op: ExportState) -> Steps[dict[str, Any]]:
    return export_of((yield from pages.columns(session)))


# -- the session as a whole -------------------------------------------------------------


def _info(session: SessionEngine, op: GetSession) -> Steps[SessionInfo]:
    return (yield from session.info())


def _heartbeat(session: SessionEngine, op: Heartbeat) -> Steps[float | None]:
    """Refresh the expiry of every key; when it would expire (None: no TTL)."""
    return (yield from session.info(heartbeat=True)).expires_at


def _digest_now(session: SessionEngine, op: Any = None, reply: Any = None) -> Steps[bytes]:
    return columns_digest((yield from pages.columns(session)))


def _replayed_import(session: SessionEngine, op: ImportState, reply: list[Any]) -> Steps[bytes]:
    if not op.want_digest:
        return b""
    return (yield from _digest_now(session))


def _settle(session: SessionEngine, op: Settle) -> Steps[bool]:
    return writes.settle_writes(session, [op.request_id], op.age, writes.RETAIN_SECONDS, op.within)


SCRIPTS: dict[type[Operation[Any]], Step] = {
    GetVariable: Step(_get),
    GetRecord: Step(_record),
    GetVersioned: Step(_versioned),
    GetVariables: Step(_get_many),
    HasVariable: Step(_has),
    ListVariables: Step(_list),
    ExportState: Step(_export),
    ExportSession: Step(lambda session, op: pages.columns(session)),
    Digest: Step(_digest_now),
    RegisterVariable: Step(writes.register, _given(lambda op, reply: str(reply[3]))),
    SetVariable: Step(writes.set_value, _given(lambda op, reply: int(reply[1]))),
    UpdateVariables: Step(writes.update, _given(lambda op, reply: int(reply[2]))),
    DeleteVariable: Step(writes.delete, _given(lambda op, reply: None)),
    ImportState: Step(writes.add, _replayed_import),
    GetSession: Step(_info),
    Heartbeat: Step(_heartbeat),
    Settle: Step(_settle),
    CommitSession: Step(lambda session, op: session.commit_pending()),
    CloseSession: Step(lambda session, op: session.close()),
}
"""Every operation a Redis session runs, and the step that runs it."""
