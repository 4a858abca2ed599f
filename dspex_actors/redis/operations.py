"""The Redis engine's table: each operation and the Lua script it runs.

:func:`run` is how both Redis front ends run an operation: RedisState for a handle,
the Redis store for a SessionStore server. Reads are one script each, answered from
one moment of the session; writes are planned in this process against the
variables' definitions and sent as one script each (:mod:`dspex_actors.redis.writes`).
A write's :attr:`Step.replayed` reads its answer back from the reply Redis remembered
for its request id, for a retry whose own checks would now refuse it.
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
from dspex_actors.redis.session import RedisSession, unpack

__all__ = ["SCRIPTS", "Step", "replayed", "run"]

R = TypeVar("R")


class Step(NamedTuple):
    """How the engine runs one operation, and how a write's remembered reply answers."""

    run: Callable[[RedisSession, Any], Any]
    replayed: Callable[[RedisSession, Any, list[Any]], Any] | None = None


def replayed(session: RedisSession, operation: Operation[R], reply: list[Any]) -> R:
    """What ``operation`` answered, from the reply Redis remembered for it (a write's)."""
    step = SCRIPTS[type(operation)]
    if step.replayed is None:
        raise NotSupported(f"{type(operation).__name__} leaves no reply to replay")
    result: R = step.replayed(session, operation, reply)
    return result


def run(session: RedisSession, operation: Operation[R]) -> R:
    """Run one operation on the session; raise its ``StateError``."""
    step = SCRIPTS.get(type(operation))
    if step is None:
        raise NotSupported(f"a Redis session cannot run {type(operation).__name__}")
    session.check_open()
    result: R = step.run(session, operation)
    return result


# -- reads ----------------------------------------------------------------------------


def _get(session: RedisSession, op: GetVariable | GetVersioned) -> Any:
    if not session.identifies(op.identifier):
        raise session.missing(op.identifier)
    value = session.call(scripts.GET, session.keys, [session.incarnation, op.identifier])
    if value is None:
        raise session.missing(op.identifier)
    return unpack(value)


def _record(session: RedisSession, op: GetRecord | GetVersioned) -> VariableRecord:
    if not session.identifies(op.identifier):
        raise session.missing(op.identifier)
    row = session.read(scripts.RECORD, op.identifier)
    if row is None:
        raise session.missing(op.identifier)
    return session.record_of(row, 0)


def _versioned(session: RedisSession, op: GetVersioned) -> tuple[Any, int]:
    record = _record(session, op)
    return record.value, record.version


def _get_many(session: RedisSession, op: GetVariables | HasVariable) -> dict[str, Any]:
    identifiers = op.identifiers if isinstance(op, GetVariables) else [op.identifier]
    wanted = list(dict.fromkeys(i for i in identifiers if session.identifies(i)))
    if not wanted:
        return {}
    values = session.read(scripts.GET_MANY, *wanted)
    return {
        identifier: unpack(value)
        for identifier, value in zip(wanted, values, strict=True)
        if value is not None
    }


def _list(session: RedisSession, op: ListVariables) -> list[VariableRecord]:
    """Every record in creation order (one moment); the pattern globs names here."""
    # The pages' rows are session.record_of's VariableRecords (pages.Records says dicts).
    records = cast("list[VariableRecord]", pages.read_whole(session)[2])
    if op.pattern is None:
        return records
    return [r for r in records if name_matches(r["name"], op.pattern)]


# -- the session as a whole -------------------------------------------------------------


def _info(session: RedisSession, op: GetSession) -> SessionInfo:
    return session.info()


def _heartbeat(session: RedisSession, op: Heartbeat) -> float | None:
    """Refresh the expiry of every key; when it would expire (None: no TTL)."""
    return session.info(heartbeat=True).expires_at


def _digest_now(session: RedisSession, op: Any = None, reply: Any = None) -> bytes:
    return columns_digest(pages.columns(session))


def _replayed_import(session: RedisSession, op: ImportState, reply: list[Any]) -> bytes:
    return _digest_now(session) if op.want_digest else b""


SCRIPTS: dict[type[Operation[Any]], Step] = {
    GetVariable: Step(_get),
    GetRecord: Step(_record),
    GetVersioned: Step(_versioned),
    GetVariables: Step(_get_many),
    HasVariable: Step(
        lambda session, op: (
            session.identifies(op.identifier) and op.identifier in _get_many(session, op)
        )
    ),
    ListVariables: Step(_list),
    ExportState: Step(lambda session, op: export_of(pages.columns(session))),
    ExportSession: Step(lambda session, op: pages.columns(session)),
    Digest: Step(_digest_now),
    RegisterVariable: Step(writes.register, lambda session, op, reply: str(reply[3])),
    SetVariable: Step(writes.set_value, lambda session, op, reply: int(reply[1])),
    UpdateVariables: Step(writes.update, lambda session, op, reply: int(reply[2])),
    DeleteVariable: Step(writes.delete, lambda session, op, reply: None),
    ImportState: Step(writes.add, _replayed_import),
    GetSession: Step(_info),
    Heartbeat: Step(_heartbeat),
    Settle: Step(
        lambda session, op: writes.settle_writes(
            session, [op.request_id], op.age, writes.RETAIN_SECONDS, op.within
        )
    ),
    CommitSession: Step(lambda session, op: session.commit_pending()),
    CloseSession: Step(lambda session, op: session.close()),
}
"""Every operation a Redis session runs, and the step that runs it."""
