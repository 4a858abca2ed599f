"""How the Redis engine writes: each write planned in this process, sent as one script.

Every value is checked here by the variable's compiled type (:mod:`dspex_actors.
vartypes`, with the same :mod:`dspex_actors.limits`), against the definition read
from Redis (cached per id and ordinal), before anything is sent; the errors are the
session actor's, with the same attributes and, where several rules are broken at
once, the same one reported first. The write itself is one Lua script per kind: it
checks that the session is the same incarnation, that each variable exists (and is
the one whose definition was used: a variable deleted and registered again under the
same name is caught), compares versions and counts, applies, and appends the change
events to the session's stream, all in one step no other client can interleave.
Metadata is merged here on a copy of the variable's metadata of a known version,
and the script refuses the write if the version moved meanwhile; the plan is then
made again from what Redis holds.

Every script is sent by :func:`send`, with its request id and its deadline as an
instant (Redis refuses, and remembers refusing, a script that arrives after it). A
write that got no answer is settled (:func:`settle_writes`): Redis answers whether it was
applied, or remembers a refusal under its request id, so that it never will be.

**Length.** Past 600 lines because every write step is a generator a driver runs
(:mod:`dspex_actors.redis.steps`): each nested step is ``yield from`` and wrapped,
which the one blocking and the one asyncio driver share instead of two copies.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from dspex_actors import vartypes
from dspex_actors.errors import (
    BridgeUnavailable,
    OutcomeUnknown,
    PartialFailure,
    SessionNotFound,
    StateError,
    ValidationError,
    VariableExists,
)
from dspex_actors.exports import ExportColumns, check_shape, columns_digest
from dspex_actors.imported import records_from_columns
from dspex_actors.limits import (
    check_batch_size,
    check_metadata_size,
    check_variable_count,
)
from dspex_actors.messages import (
    DeleteVariable,
    ImportState,
    RegisterVariable,
    SetVariable,
    UpdateVariables,
)
from dspex_actors.redis import pages, scripts
from dspex_actors.redis.connections import CHAIN_LENGTH, current_scope
from dspex_actors.redis.scripts import Script
from dspex_actors.redis.session import Definition, Retry, SessionEngine, pack, text, unpack
from dspex_actors.redis.steps import Steps, Unreplicated
from dspex_actors.session import Record, SessionTable
from dspex_actors.text import describe_value
from dspex_actors.vartypes import (
    check_expected_version,
    check_metadata,
    compile_type,
    sized_metadata,
)

__all__ = [
    "RETAIN_SECONDS",
    "add",
    "delete",
    "register",
    "send",
    "set_value",
    "settle_writes",
    "update",
]

_IMPORT_SECONDS = 300e-6
"""An import runs in Redis for about 30 us a variable; its deadline allows ten times that."""


# -- sending a write, and settling one that got no answer -----------------------------

SETTLE_SECONDS = 1.0
"""At most this long (and at most the timeout) is spent settling a write that got no
answer, after its deadline, before ``OutcomeUnknown`` is raised."""
RETAIN_SECONDS = 30
"""Redis remembers a write's reply (or a settled refusal) at least this long: a
write's ``OutcomeUnknown`` can be settled for about as long."""


def send(
    session: SessionEngine, script: Script, args: Sequence[Any], extra_time: float = 0.0
) -> Steps[list[Any]]:
    """Run a write script with a fresh request id; its reply, decoded.

    Redis refuses the script when it arrives after the call's deadline. One that
    got no answer is settled here, within :data:`SETTLE_SECONDS`: not applied
    raises ``BridgeUnavailable``; applied answers its remembered reply; neither
    raises ``OutcomeUnknown``, whose ``settle()`` asks again. A server's relayed
    write (``call_scope``) is settled by its client instead, through the server.
    Under ``?wait=N``, a write fewer replicas acknowledged is ``OutcomeUnknown``
    too, without a settle now: the primary would say applied, and a failover
    could still lose it.
    """
    session.check_open()
    retain = max(RETAIN_SECONDS, int(2 * (session.timeout + extra_time)) + 1)
    started = time.monotonic()
    scope = current_scope()
    if scope is not None and scope.request_id:
        if scope.attempts >= CHAIN_LENGTH:
            raise StateError(
                f"session {session.session_id!r}: the write met a change {CHAIN_LENGTH} "
                "times in a row; not applied"
            )
        request_id = f"{scope.request_id}.{scope.attempts}"
        scope.attempts += 1
        retain = max(retain, scope.retain)
        expires_ms = scope.expires_ms
    else:
        scope = None
        request_id = uuid.uuid4().hex
        expires_ms = int((time.time() + session.timeout + extra_time) * 1000)
    terms = f"{retain} {expires_ms}" if expires_ms > 0 else str(retain)
    request = [session.keys, [session.incarnation, request_id, session.history, terms, *args]]
    try:
        packed = yield from session.call(
            script, *request, write=True, extra_time=extra_time, request_id=request_id
        )
    except SessionNotFound:
        if scope is not None:  # "gone" is not remembered: the number is unused
            scope.attempts -= 1
        raise
    except OutcomeUnknown as unknown:
        if scope is not None:
            raise
        packed = yield from _settle_unknown(
            session, script, request, unknown, request_id, started, retain
        )
    except Unreplicated as short:
        raise _unreplicated(session, script, short, request_id, started, retain) from None
    reply: list[Any] = unpack(packed)
    if reply[0] == "not_applied":
        raise BridgeUnavailable(
            f"session {session.session_id!r}: {script.name} was refused, not applied: it "
            "reached Redis after its deadline (delayed in transit, or the clocks of "
            "this host and Redis disagree by more than the timeout), or was settled",
            session_id=session.session_id,
            settled=True,
        )
    return reply


def _unreplicated(
    session: SessionEngine,
    script: Script,
    short: Unreplicated,
    request_id: str,
    started: float,
    retain: int,
) -> OutcomeUnknown:
    """A write the primary applied that too few replicas acknowledged (``?wait=N``):
    not acknowledged, since a failover could still lose it. ``settle()`` later
    tells whether it is there (on the primary of that moment)."""
    unknown = OutcomeUnknown(
        f"session {session.session_id!r}: {script.name} at {session.where}: {short}; "
        "settle() tells whether it is there",
        session_id=session.session_id,
        request_id=request_id,
    )
    settler = session.settler(
        lambda: settle_writes(session, [request_id], time.monotonic() - started, retain)
    )
    return unknown if settler is None else unknown.settled_by(settler)


def _settle_unknown(
    session: SessionEngine,
    script: Script,
    request: list[Any],
    unknown: OutcomeUnknown,
    request_id: str,
    started: float,
    retain: int,
) -> Steps[Any]:
    """A write that got no answer: settled within a short bound (see :func:`send`)."""
    bound = min(session.timeout, SETTLE_SECONDS)
    unknown = OutcomeUnknown(
        f"{unknown.message}; settle() tells", session_id=session.session_id, request_id=request_id
    )

    def settle_later() -> Steps[bool]:
        try:
            return (
                yield from settle_writes(session, [request_id], time.monotonic() - started, retain)
            )
        except BridgeUnavailable as exc:  # still not reachable: still unknown
            raise unknown from exc

    settler = session.settler(settle_later)
    if settler is not None:
        unknown.settled_by(settler)
    try:
        applied = yield from settle_writes(
            session, [request_id], time.monotonic() - started, retain, bound
        )
    except StateError:
        raise unknown from None
    if not applied:
        raise BridgeUnavailable(
            f"Redis at {session.where} did not answer within {session.timeout}s; the write to "
            f"session {session.session_id!r} was settled as not applied and never will be",
            session_id=session.session_id,
            settled=True,
        )
    try:  # applied: its request id fetches the reply Redis remembered
        return (
            yield from session.call(
                script, *request, write=True, budget=bound, request_id=request_id
            )
        )
    except StateError:
        raise unknown from None


def settle_writes(
    session: SessionEngine,
    request_ids: Sequence[str],
    age: float,
    retain: float,
    budget: float | None = None,
) -> Steps[bool]:
    """Whether the write that sent ``request_ids`` (in order; first sent ``age``
    seconds ago; its replies remembered ``retain`` seconds) was applied; after
    False it never will be. ``OutcomeUnknown`` when Redis may have forgotten it."""
    session.check_open()
    if age + (budget or session.timeout) >= retain:
        raise OutcomeUnknown(
            f"session {session.session_id!r}: the write was sent {age:.3g}s ago and Redis "
            f"remembers replies for {retain:.3g}s; it can no longer tell whether it "
            "was applied",
            session_id=session.session_id,
        )
    reply = yield from session.call(
        scripts.SETTLE,
        session.keys,
        [session.incarnation, int(retain), *request_ids],
        budget=budget,
    )
    return bool(int(reply))


# -- the writes -----------------------------------------------------------------------


def _stamp(seconds: float) -> str:
    """A timestamp as stored: ``repr`` reads back as the same float."""
    return repr(float(seconds))


def register(session: SessionEngine, op: RegisterVariable) -> Steps[str]:
    """Check the definition, value and metadata here, then add the variable with its
    event in one script (a taken name or the variable limit refused there)."""
    name, type_name, initial_value = op.name, op.type_name, op.initial_value
    constraints, metadata, description = op.constraints, op.metadata, op.description
    vartypes.check_name(name)
    limits = session.limits
    try:
        validator = compile_type(name, type_name, constraints, limits)
        value = validator.check(name, initial_value)
        meta = check_metadata(name, metadata, limits)
        if vartypes.check_description(name, description) is not None:
            meta["description"] = description
            check_metadata_size(name, meta, limits)
    except StateError:
        yield from _register_preconditions(session, name)  # the actor checks those first
        raise
    while True:
        var_id = f"var_{uuid.uuid4().hex}"
        reply = yield from send(
            session,
            scripts.REGISTER,
            [
                name,
                var_id,
                session.definition_bytes(validator),
                pack(value),
                pack(meta),
                limits.max_variables_per_session,
            ],
        )
        if reply[0] != "id_taken":  # a generated id that is someone's name: again
            break
    if reply[0] == "exists":
        raise session.exists_error(name)
    if reply[0] == "limit":
        check_variable_count(session.session_id, int(reply[1]), 1, limits)
    var_id = str(reply[3])  # a retry's reply names the first attempt's id
    session.remember(Definition(var_id, name, int(reply[1]), validator))
    session.metadata[var_id] = (0, meta)
    return var_id


def _register_preconditions(session: SessionEngine, name: str) -> Steps[None]:
    """Raise what the session actor checks before a registration's type and value
    (a taken name, the variable limit), on the failure path only."""
    if (yield from session.describe([name])):
        raise session.exists_error(name)
    held = int((yield from session.read(scripts.INFO, "0"))[1])
    check_variable_count(session.session_id, held, 1, session.limits)


def set_value(session: SessionEngine, op: SetVariable) -> Steps[int]:
    """Check the value against the variable's cached definition here, then write it
    in one script that checks the definition, the version and the incarnation; a
    plan that met a change is made again from what Redis holds."""
    identifier, new_value, metadata = op.identifier, op.value, op.metadata
    expected_version = op.expected_version
    if not session.identifies(identifier):
        raise session.missing(identifier)
    deadline = time.monotonic() + session.timeout
    fresh = False
    while True:
        try:
            return (
                yield from _set_once(
                    session, identifier, new_value, metadata, expected_version, fresh
                )
            )
        except Retry:
            fresh = True
            session.forget(identifier)
            if time.monotonic() > deadline:
                raise StateError(
                    f"session {session.session_id!r}: {identifier!r} kept changing under "
                    f"set_variable for {session.timeout}s; not applied"
                ) from None


def _set_once(
    session: SessionEngine,
    identifier: str,
    new_value: Any,
    metadata: Mapping[str, Any] | None,
    expected_version: int | None,
    fresh: bool,
) -> Steps[int]:
    found = yield from session.definitions_for(
        [identifier], fresh, with_metadata=metadata is not None
    )
    definition = found.get(identifier)
    if definition is None:
        raise session.missing(identifier)
    name = definition.name
    base = 0
    merged: dict[str, Any] | None = None
    try:
        check_expected_version(name, expected_version)
        checked = definition.validator.check(name, new_value)
        if metadata is not None:
            meta = check_metadata(name, metadata, session.limits)
            if meta:
                base, current = session.metadata[definition.id]
                merged = {**current, **meta}
                if current:
                    check_metadata_size(name, merged, session.limits)
    except StateError:
        if not fresh:
            raise Retry from None  # decide on what Redis holds now
        # The session actor's order: a bad expected_version, then a conflict, then
        # the value and the metadata (a fresh definition comes with the version).
        check_expected_version(name, expected_version)
        version = session.metadata[definition.id][0]
        if expected_version is not None and expected_version != version:
            raise session.conflict(name, expected_version, version) from None
        raise
    reply = yield from send(
        session,
        scripts.SET,
        [
            identifier,
            definition.id,
            definition.ordinal,
            "" if expected_version is None else str(expected_version),
            "" if merged is None else str(base),
            pack(checked),
            b"" if merged is None else pack(merged),
        ],
    )
    code = reply[0]
    if code == "ok":
        version = int(reply[1])
        _wrote(session, definition.id, version, None if merged is None else (base, merged))
        return version
    if code == "conflict":
        raise session.conflict(name, expected_version, int(reply[1]))
    if code == "overflow":
        raise session.overflow(name)
    if code == "not_found" and fresh:
        raise session.missing(identifier)
    raise Retry  # stale, moved, or not found in a cached definition


def update(session: SessionEngine, op: UpdateVariables) -> Steps[int]:
    """Apply every update or none, in one script; ``PartialFailure`` names each
    failing entry (checked here against the definitions in Redis). Answers the
    session's next event sequence after the batch."""
    batch, metadata = dict(op.updates), op.metadata
    deadline = time.monotonic() + session.timeout
    fresh = False
    while True:
        try:
            return (yield from _update_once(session, batch, metadata, fresh))
        except Retry:
            fresh = True
            if time.monotonic() > deadline:
                raise StateError(
                    f"session {session.session_id!r}: the batch's variables kept changing "
                    f"for {session.timeout}s; not applied"
                ) from None


def _update_once(
    session: SessionEngine, batch: dict[Any, Any], metadata: Any, fresh: bool
) -> Steps[int]:
    staged, merged = yield from _plan_batch(session, batch, metadata, fresh)
    if not staged:
        return int((yield from session.read(scripts.INFO, "0"))[0])
    args: list[Any] = [len(staged), "1" if merged else "0"]
    for definition, checked, identifier in staged.values():
        entry = merged.get(definition.id)
        args += [
            identifier,
            definition.id,
            definition.ordinal,
            "" if entry is None else str(entry[0]),
            pack(checked),
            b"" if entry is None else pack(entry[1]),
        ]
    reply = yield from send(session, scripts.UPDATE, args)
    code = reply[0]
    if code == "ok":
        for (definition, _, _), version in zip(staged.values(), reply[1], strict=True):
            _wrote(session, definition.id, int(version), merged.get(definition.id))
        return int(reply[2])
    if code == "overflow":
        name = next(d.name for d, _, given in staged.values() if given == reply[1])
        raise PartialFailure.for_batch({reply[1]: session.overflow(name)}, len(batch))
    for identifier in reply[1] if code in ("not_found", "stale") else batch:
        if isinstance(identifier, str):
            session.forget(identifier)
    raise Retry


def _plan_batch(
    session: SessionEngine, batch: dict[Any, Any], metadata: Any, fresh: bool
) -> Steps[tuple[dict[str, tuple[Definition, Any, str]], dict[str, tuple[int, dict[str, Any]]]]]:
    """Check a batch as the session actor does: the entries to write (id ->
    definition, checked value, identifier as given) and, for a batch with
    metadata, each one's merged metadata and the version it was merged on."""
    limits = session.limits
    definitions = yield from session.definitions_for(
        [i for i in batch if session.identifies(i)], fresh, with_metadata=metadata is not None
    )
    errors: dict[str, StateError] = {}
    staged: dict[str, tuple[Definition, Any, str]] = {}
    for identifier, new_value in batch.items():
        definition = definitions.get(identifier) if isinstance(identifier, str) else None
        try:
            if definition is None:
                raise session.missing(identifier)
            if definition.id in staged:
                raise ValidationError(
                    f"variable {definition.name!r} appears twice in one batch "
                    f"(rule 'unique', value {describe_value(identifier)})",
                    variable=definition.name,
                    rule="unique",
                    value=identifier,
                )
            checked = definition.validator.check(definition.name, new_value)
            staged[definition.id] = (definition, checked, identifier)
        except StateError as exc:
            errors[str(identifier)] = exc
    merged: dict[str, tuple[int, dict[str, Any]]] = {}
    meta_size = 0
    if metadata is not None:
        try:
            meta, meta_size = sized_metadata("<batch>", metadata, limits)
            if meta:
                for definition, _, _ in staged.values():
                    base, current = session.metadata[definition.id]
                    merged[definition.id] = (base, {**current, **meta})
                    if current:
                        check_metadata_size(definition.name, merged[definition.id][1], limits)
        except StateError as exc:
            errors["<metadata>"] = exc
    if errors:
        if not fresh:
            raise Retry  # decide on what Redis holds now
        raise PartialFailure.for_batch(errors, len(batch))
    if staged:
        check_batch_size(
            "<batch>",
            list(batch),
            [checked for _, checked, _ in staged.values()],
            limits,
            extra_bytes=meta_size,
        )
    return staged, merged


def _wrote(
    session: SessionEngine, var_id: str, version: int, merged: tuple[int, dict[str, Any]] | None
) -> None:
    """Keep the metadata a write left (known when it merged some, or when the
    version it wrote follows the one kept), so the next merge needs no read."""
    known = session.metadata.get(var_id)
    if merged is not None:
        session.metadata[var_id] = (version, merged[1])
    elif known is not None and known[0] == version - 1:
        session.metadata[var_id] = (version, known[1])
    else:
        session.metadata.pop(var_id, None)


def delete(session: SessionEngine, op: DeleteVariable) -> Steps[None]:
    identifier = op.identifier
    if not session.identifies(identifier):
        raise session.missing(identifier)
    reply = yield from send(session, scripts.DELETE, [identifier])
    session.forget(identifier)
    if reply[0] == "not_found":
        raise session.missing(identifier)


def add(session: SessionEngine, op: ImportState) -> Steps[bytes]:
    """Import, then (``want_digest``) the digest of what Redis then holds, read back."""
    yield from _add_columns(session, op.columns, op.continue_from)
    if not op.want_digest:
        return b""
    return columns_digest((yield from pages.columns(session)))


def _add_columns(
    session: SessionEngine, columns: ExportColumns, continue_from: int | None = None
) -> Steps[None]:
    """Import every variable or none: checked here as the session actor checks an
    import, then added (names and ids new to the session, the variable limit
    kept) with their change events in one script. With ``continue_from`` (a
    migration's copy) it yields no events and the session's event sequence
    continues from that number, as the session actor's does."""
    check_shape(columns)
    limits = session.limits
    try:
        records = records_from_columns(columns, SessionTable(session.session_id), limits)
        session_meta = check_metadata("<session>", columns.metadata, limits)
    except StateError:
        yield from _import_preconditions(session, columns)  # the session actor's order
        raise
    pairs = list(session_meta.items())
    args: list[Any] = [
        "" if continue_from is None else str(continue_from),
        limits.max_variables_per_session,
        len(records),
        len(pairs),
    ]
    for key, value in pairs:
        args += [key, pack(value)]
    for record in records:
        args += [
            record.id,
            record.name,
            session.definition_bytes(record.validator),
            pack(record.value),
            str(record.version),
            pack(record.metadata),
            _stamp(record.created_at),
            _stamp(record.last_updated_at),
        ]
    # An import runs in Redis for about 30 us a variable; allow ten times that.
    reply = yield from send(
        session, scripts.IMPORT, args, extra_time=_IMPORT_SECONDS * len(records)
    )
    if reply[0] == "limit":
        check_variable_count(session.session_id, int(reply[1]), len(records), limits)
    if reply[0] == "exists":
        _, key, how, existing = reply
        raise VariableExists(
            f"variable {key!r} already exists in session {session.session_id!r} "
            f"(as {how} of {existing!r})",
            variable=key,
        )
    for record in records:
        session.forget(record.id)
        session.forget(record.name)


def _import_preconditions(session: SessionEngine, columns: ExportColumns) -> Steps[None]:
    """Check ``columns`` as the session actor would, against the session's names
    and ids (read now): raises the error it would raise first."""
    flat = yield from session.read(scripts.NAMES)
    table = SessionTable(session.session_id)
    placeholder = compile_type("<placeholder>", "integer", None)
    for at in range(0, len(flat), 2):
        name, var_id = text(flat[at]), text(flat[at + 1])
        record = Record(var_id, name, 0, 0, {}, 0.0, 0.0, placeholder, None)
        table.index[name] = table.index[var_id] = table.by_id[var_id] = record
    check_variable_count(
        session.session_id, len(table.by_id), columns.variable_count, session.limits
    )
    records_from_columns(columns, table, session.limits)
