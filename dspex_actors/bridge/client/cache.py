"""A BridgedState's coherent copy of its session, fed by its own Watch stream.

Opt-in (``BridgedState.init(..., cache=True)``). The handle keeps every record of
its session and answers ``get_variable``, ``get_variables``, ``get_record`` and
``list_variables`` from that copy, without a round trip. The consistency model:

* **Read your writes.** When a write through this handle returns, a read through
  it sees that write (or a later one): the handle notes the version it expects,
  and a read of a variable whose copy is older goes to the server instead.
* **Others' writes** are visible once their events arrive, in the session's order
  (a fraction of a round trip after the write, on loopback).
* **Never stale while disconnected.** While the stream is down (and until the copy
  has been re-read after it came back, or after an ``overflow``), every read goes
  to the server. After a ``closed`` event the copy is dropped for good.
* **Never older than an event the handle gave out.** A subscriber of the handle is
  told of a change by a stream of its own; until the copy has taken that change in
  too, every read goes to the server (:class:`Told`).

The copy is loaded from a listing taken after the stream started, and events that
arrive meanwhile are applied on top by version, so nothing between the two is
lost or applied twice.

Two feeds, one bookkeeping: :class:`SessionCopy` holds the records, the handle's
expectations and the versions, and answers lookups; it does no I/O. Its feed hands
it what it loaded (:meth:`SessionCopy.reloading`, :meth:`SessionCopy.reloaded`)
and each event (:meth:`SessionCopy.take`, which says what to fetch or re-read
next). :class:`RecordCache` is the sync handle's: fed from its Watch
subscription's thread, it loads and fetches through the handle's own blocking
calls and lets threads wait on it. The asyncio handle's feed is a task that awaits
its own listing (:mod:`dspex_actors.aio.cache`).

**Length.** Past 600 lines: the one consistency model, its bookkeeping and the
sync feed and source that drive it, kept together so that every rule of it reads
in one place (the asyncio feed, in :mod:`dspex_actors.aio.cache`, only drives it).

The copy keeps each variable as a :class:`CachedRecord`, a ``NamedTuple``, not a
VariableRecord: the handle's inline read takes ``.value`` through a C tuple getter,
under half what a VariableRecord's property costs (a cached ``get_variable`` would
be about a fifth slower), and an event replaces it with ``_replace``. Callers only
ever get VariableRecords, built as copies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from dspex_actors.exports import RECORD_KEYS
from dspex_actors.records import VariableRecord, name_matches, variable_not_found
from dspex_actors.streaming import Event
from dspex_actors.vartypes import plain_copy

__all__ = [
    "ABSENT",
    "MISS",
    "RELOAD",
    "SCALARS",
    "CachedRecord",
    "RecordCache",
    "SessionCopy",
    "Told",
]

logger = logging.getLogger(__name__)

MISS: Any = object()
"""What a lookup answers when the copy cannot answer (ask the server)."""

ABSENT: Any = object()
"""What a lookup answers for a variable the copy knows does not exist."""

SCALARS = frozenset({int, float, str, bool, bytes, type(None)})

RELOAD: Any = "\x00reload"
"""What :meth:`SessionCopy.take` answers when the feed fell behind (``overflow``):
re-read the session. No variable id can be it."""

_GONE = -1
"""An expected 'version' meaning: this handle deleted the variable."""

_DELETIONS_KEPT = 4096
"""Deleted variable ids the copy remembers, oldest forgotten first: a version a
reply taught about one of them (the Watch and the Calls stream keep no order
between them) is then known met by its deletion."""

_WAITING = "\x00waiting"
"""A key of ``expected`` (no identifier can be it) held while any identifier waits
on a sequence (see ``expect_sequence``)."""


class CachedRecord(NamedTuple):
    """One variable as the copy holds it (fields in ``RECORD_KEYS`` order); replaced
    whole, never changed, never handed out (see the module docstring)."""

    id: str
    name: str
    type: str
    value: Any
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: float
    last_updated_at: float


_fields_of: Callable[[Mapping[str, Any]], tuple[Any, ...]] = itemgetter(*RECORD_KEYS)
_cached: Callable[[tuple[Any, ...]], CachedRecord] = partial(tuple.__new__, CachedRecord)


def _cached_record(record: Mapping[str, Any]) -> CachedRecord:
    """The copy's entry of a listed record (its nine fields taken in C)."""
    return _cached(_fields_of(record))


class SessionCopy:
    """The records of one session and this handle's expectations (see the module
    docstring); thread-safe, and no I/O: its feed hands it what it read.

    ``by_id`` (id -> record), ``ids`` (name -> id), ``expected`` (this handle's
    writes not yet seen) and ``serving`` are public so that the handle's hot read
    can do its few dict lookups inline: records are replaced whole, never changed,
    so those reads need no lock while ``serving`` and nothing is ``expected``.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._lock = threading.Lock()
        self.by_id: dict[str, CachedRecord] = {}
        self.ids: dict[str, str] = {}  # name -> id
        self.expected: dict[str, int] = {}  # id or identifier -> version it must reach
        self._behind: dict[str, int] = {}  # id or identifier -> sequence it waits for
        # Ids registered since the listing: an event carries no type or constraints,
        # so their whole record comes from the server until the next listing.
        self._partial: set[str] = set()
        self._deleted: dict[str, int] = {}  # id -> the version its deletion carried
        self._stale: set[str] = set()  # expectations older than the reload under way
        self.serving = False
        self._ended = False
        self.loads = 0
        """How many listings the copy has taken in (the first load, then one per
        reconnection or overflow)."""
        # The last event sequence this copy has taken in: the feed's first start
        # sets it (the listing taken once the feed is up covers what came before).
        self._applied = -1
        # The last event this handle's own subscribers were told of: until the copy
        # has taken it in, every read goes to the server (one told of a change and
        # reading back must not find the copy older than what it was told).
        self._told = -1
        self._caught_up = threading.Condition(self._lock)
        self._pending: list[Event] | None = None  # events met while (re)loading

    @property
    def live(self) -> bool:
        """Whether reads are answered from the copy now."""
        return self.serving

    @property
    def ended(self) -> bool:
        """Whether the session closed (or the feed ended for good): nothing is
        served from the copy again."""
        return self._ended

    def caught_up(self, sequence: int) -> bool:
        """Whether the copy serves and has taken in every event before ``sequence``,
        or has ended (what a wait for ``sequence`` stops at)."""
        return self._ended or (self.serving and self._applied >= sequence - 1)

    # -- fed by the feed -------------------------------------------------------------

    def reloading(self, start: int | None = None) -> bool:
        """The feed is (again) up, from sequence ``start``, and re-reads the session:
        events met from now on wait for the listing. False once the copy has ended
        (nothing to load)."""
        with self._lock:
            if self._ended:
                return False
            if start is not None and self._applied < 0:  # the first start
                self._applied = start - 1
            self._pending = []
            self._stale = set(self.expected)
            return True

    def reload_failed(self, error: BaseException) -> None:
        """The listing failed: the copy serves nothing until the next one."""
        logger.warning("cache: reloading the session failed (%s); reads go to it", error)
        with self._lock:
            self._pending = None

    def reloaded(self, listing: Iterable[Mapping[str, Any]], through: int | None = None) -> None:
        """The listing the feed took after :meth:`reloading`: it replaces the copy,
        the events met meanwhile go on top by version, and the copy serves.
        ``through``: the listing is known to hold every event up to that sequence
        (the feed read the session's next sequence before listing)."""
        with self._lock:
            self.by_id = {}
            self.ids = {}
            self._partial = set()
            for raw in listing:
                record = _cached_record(raw)
                self.by_id[record.id] = record
                self.ids[record.name] = record.id
            pending, self._pending = self._pending or [], None
            for event in pending:
                self._apply(event)
            for var_id, record in self.by_id.items():
                self._met(var_id, record.name)
            # Met by the listing: a deletion of ours it shows, and what was expected
            # before it was taken of a variable it does not hold (deleted since).
            stale, self._stale = self._stale, set()
            self.expected = {
                key: wanted
                for key, wanted in self.expected.items()
                if not (
                    (wanted == _GONE or (key in stale and key != _WAITING))
                    and self.ids.get(key, key) not in self.by_id
                )
            }
            if through is not None and through > self._applied:
                self._taken_through(through)
            self.loads += 1
            self.serving = not self._ended
            self._caught_up.notify_all()

    def disconnected(self) -> None:
        """The feed broke: serve nothing from the copy until it is re-read."""
        with self._lock:
            self.serving = False
            self._caught_up.notify_all()

    def end(self) -> None:
        """The feed ended for good (the session is gone): serve nothing, ever."""
        with self._lock:
            self.serving = False
            self._ended = True
            self._caught_up.notify_all()

    def take(self, event: Event) -> str | None:
        """Take in one event of the feed. What the feed must do next: :data:`RELOAD`
        (it fell behind: re-read the session), the id of a new variable the copy
        holds only partly (fetch its record for :meth:`completed`), or None."""
        with self._lock:
            if event.kind != "overflow":
                self._taken_through(event.sequence)
                self._caught_up.notify_all()
            if event.kind == "overflow":
                self.serving = False
                return None if self._ended else RELOAD
            if event.kind == "closed":
                self.serving = False
                self._ended = True
            elif self._pending is not None:
                self._pending.append(event)
            else:
                self._apply(event)
            var_id = event.variable_id
            if event.kind == "registered" and var_id is not None and var_id in self._partial:
                return var_id
            return None

    def _taken_through(self, sequence: int) -> None:
        """Every event up to ``sequence`` is in the copy (under the lock)."""
        self._applied = max(self._applied, sequence)
        if self._behind:
            self._behind = {k: q for k, q in self._behind.items() if q - 1 > self._applied}
        self._sync_flag()

    def completed(self, var_id: str, whole: VariableRecord) -> None:
        """A new variable's record as the server gave it: its type and constraints
        (they never change after) complete the copy's entry."""
        with self._lock:
            current = self.by_id.get(var_id)
            if current is not None and var_id in self._partial:
                self.by_id[var_id] = current._replace(
                    type=whole.type, constraints=whole.constraints, created_at=whole.created_at
                )
                self._partial.discard(var_id)

    def _apply(self, event: Event) -> None:
        """Apply one change by version (under the lock): never go back."""
        var_id, name = event.variable_id, event.name
        if var_id is None or name is None or event.version is None:
            return
        current = self.by_id.get(var_id)
        if event.kind == "deleted":
            if current is not None and current.version > event.version:
                return
            if current is not None:
                del self.by_id[var_id]
                self._partial.discard(var_id)
                if self.ids.get(current.name) == var_id:
                    del self.ids[current.name]
            if len(self._deleted) >= _DELETIONS_KEPT:
                del self._deleted[next(iter(self._deleted))]
            self._deleted[var_id] = event.version
            self._met(var_id, name, deleted_at=event.version)
            return
        if current is not None and current.version >= event.version:
            return
        if current is None:
            if event.kind != "registered":
                return  # an update of a variable the copy never had: the listing has it
            record = CachedRecord(
                var_id,
                name,
                "",
                event.value,
                {},
                dict(event.metadata or {}),
                event.version,
                event.timestamp or 0.0,
                event.timestamp or 0.0,
            )
            self._partial.add(var_id)
        else:
            record = current._replace(
                value=event.value,
                version=event.version,
                metadata=dict(event.metadata or {}),
                last_updated_at=event.timestamp or current.last_updated_at,
            )
        self.by_id[var_id] = record
        self.ids[name] = var_id
        self._met(var_id, name)

    def _met(self, var_id: str, name: str, deleted_at: int | None = None) -> None:
        """Drop the expectations this change meets (under the lock); a deletion at
        ``deleted_at`` meets every version up to it (the variable is gone: a read
        of it finds nothing, as the copy says)."""
        record = self.by_id.get(var_id)
        for key in (var_id, name):
            wanted = self.expected.get(key)
            if wanted is None:
                continue
            if (
                (wanted == _GONE and record is None)
                or (wanted != _GONE and record is not None and record.version >= wanted)
                or (deleted_at is not None and record is None and wanted <= deleted_at)
            ):
                del self.expected[key]

    # -- read by the handle ---------------------------------------------------------

    def expect(self, identifier: str, version: int) -> None:
        """This handle wrote ``identifier`` (or the server answered it that new):
        reads must see at least ``version``."""
        with self._lock:
            self._expect(identifier, version)

    def expect_all(self, versions: Iterable[tuple[str, int]]) -> None:
        """:meth:`expect` of each (identifier, version) pair, under the lock once (a
        listing or an export the server answered)."""
        with self._lock:
            for identifier, version in versions:
                self._expect(identifier, version)

    def _expect(self, identifier: str, version: int) -> None:
        gone = self._deleted.get(identifier)
        if gone is not None and gone >= version:
            return  # its deletion came first: nothing of it is left to see
        key = self.ids.get(identifier, identifier)
        self.expected[key] = max(self.expected.get(key, version), version)
        if key != identifier:
            self.expected[identifier] = self.expected[key]
        record = self.by_id.get(key)
        if record is not None:  # its event may have come before the reply
            self._met(key, record.name)

    def expect_sequence(self, identifiers: Iterable[Any], sequence: int) -> None:
        """This handle's batch returned when the session's next event was
        ``sequence``: until the copy has taken in every event before it, reads of
        these identifiers go to the server (a batch answers no versions)."""
        with self._lock:
            if self._applied >= sequence - 1:
                return
            for identifier in identifiers:
                if isinstance(identifier, str):
                    key = self.ids.get(identifier, identifier)
                    self._behind[key] = max(self._behind.get(key, 0), sequence)
                    self._behind[identifier] = self._behind[key]
            self.expected = self.expected or {}  # keep the fast path off meanwhile
            self._sync_flag()

    def _sync_flag(self) -> None:
        """Keep ``expected`` non-empty while any identifier waits on a sequence, or
        the copy is behind what a subscriber was told (the hot read checks
        ``expected`` alone)."""
        if self._behind or self._applied < self._told:
            self.expected.setdefault(_WAITING, 0)
        else:
            self.expected.pop(_WAITING, None)

    def told(self, sequence: int) -> None:
        """A subscriber of this handle is about to be told of event ``sequence``:
        until the copy has taken it in, reads go to the server."""
        with self._lock:
            if sequence > self._told and sequence > self._applied:
                self._told = sequence
                self._sync_flag()

    def expect_gone(self, identifier: str) -> None:
        """This handle deleted ``identifier``: reads must not find it any more."""
        with self._lock:
            key = self.ids.get(identifier, identifier)
            self.expected[key] = _GONE
            self.expected[identifier] = _GONE
            if key not in self.by_id:  # its event came before the reply
                del self.expected[key]
                self.expected.pop(identifier, None)

    def _resolve(self, identifier: str) -> CachedRecord | Any | None:
        """The record, None if the copy knows it absent, MISS if it cannot tell."""
        var_id = self.ids.get(identifier, identifier)
        record = self.by_id.get(var_id)
        behind = self._behind
        if behind and (identifier in behind or var_id in behind):
            return MISS  # a batch of this handle's that the copy has not taken in yet
        if self._applied < self._told:
            return MISS  # a subscriber was told of a change the copy has not taken in
        for key in {identifier, var_id}:
            wanted = self.expected.get(key)
            if wanted is None:
                continue
            if wanted == _GONE:
                if record is not None:
                    return MISS
            elif record is None or record.version < wanted:
                return MISS
            del self.expected[key]  # met: the copy has caught up with this write
        if record is None and identifier not in self.ids and self._unseen():
            return MISS  # it may be a variable of ours the copy knows by no name yet
        return record

    def _unseen(self) -> bool:
        """Whether this handle wrote a variable the copy holds nothing of yet (under
        the lock): an import's reply names its variables by id only, so a name the
        copy does not know may be one of them."""
        return any(
            wanted != _GONE and key != _WAITING and self.ids.get(key, key) not in self.by_id
            for key, wanted in self.expected.items()
        )

    def value(self, identifier: str) -> Any:
        """The value, ABSENT when the variable does not exist, MISS when the server
        must answer. Lock-free: records are replaced whole, never changed, and a
        read meeting any unmet expectation of this handle takes the locked path."""
        if not self.serving or self.expected:
            record = self.record(identifier, whole=False)
            if record is MISS:
                return MISS
            return ABSENT if record is None else record.value
        if type(identifier) is not str:
            return MISS
        record = self.by_id.get(self.ids.get(identifier, identifier))
        if record is None:
            return ABSENT
        value = record.value
        return value if type(value) in SCALARS else plain_copy(value)

    def record(self, identifier: str, *, whole: bool = True) -> VariableRecord | Any | None:
        """A copy of the record, None when absent, MISS when the server must answer
        (``whole``: the type and constraints are needed too)."""
        if not self.serving or not isinstance(identifier, str):
            return MISS
        with self._lock:
            if not self.serving:
                return MISS
            record = self._resolve(identifier)
            if whole and isinstance(record, CachedRecord) and record.id in self._partial:
                return MISS
        if record is None or record is MISS:
            return record
        return _copied(record)

    # -- what read operations run on (messages.Reads): MISS where the copy cannot tell

    def get(self, identifier: str) -> Any:
        value = self.value(identifier)
        if value is ABSENT:
            raise variable_not_found(identifier, self.session_id)
        return value

    def get_many(self, identifiers: list[str]) -> dict[str, Any] | Any:
        return self.values(identifiers)

    def whole_record(self, identifier: str) -> VariableRecord | Any:
        record = self.record(identifier)
        if record is None:
            raise variable_not_found(identifier, self.session_id)
        return record

    def get_versioned(self, identifier: str) -> Any:
        return MISS  # the server's answer carries what the copy must learn

    def export(self) -> Any:
        return MISS

    def columns(self) -> Any:
        return MISS

    def content_digest(self) -> Any:
        return MISS

    def info(self) -> Any:
        return MISS

    def values(self, identifiers: list[str]) -> dict[str, Any] | Any:
        """Values keyed as given (absent ones left out), or MISS."""
        if not self.serving:
            return MISS
        with self._lock:
            if not self.serving:
                return MISS
            found = {}
            for identifier in identifiers:
                if not isinstance(identifier, str):
                    continue
                record = self._resolve(identifier)
                if record is MISS:
                    return MISS
                if record is not None:
                    found[identifier] = record.value
        return {key: plain_copy(value) for key, value in found.items()}

    def listing(self, pattern: str | None) -> list[VariableRecord] | Any:
        """Every record (names matching ``pattern``) in creation order, or MISS."""
        if not self.serving:
            return MISS
        with self._lock:
            if not self.serving or self.expected or self._partial:
                return MISS  # a write of ours not seen yet, or a record not whole
            records = [r for r in self.by_id.values() if name_matches(r.name, pattern)]
        return [_copied(record) for record in records]


class Told:
    """A source of this handle's own events, for a handle that keeps a copy: before
    its events reach the subscriber, the copy hears how far they go
    (:meth:`SessionCopy.told`), so a subscriber that reads back through the handle
    never finds a value older than the event it was told of."""

    def __init__(self, source: Any, copy: SessionCopy) -> None:
        self._source = source
        self._copy = copy

    def read(self, timeout: float) -> list[Event]:
        events: list[Event] = self._source.read(timeout)
        if events:
            self._copy.told(max(event.sequence for event in events))
        return events

    def ready(self) -> None:
        self._source.ready()

    def wake(self) -> None:
        self._source.wake()

    def close(self) -> None:
        self._source.close()

    @property
    def position(self) -> int | None:
        position: int | None = self._source.position
        return position


class RecordCache(SessionCopy):
    """The sync handle's copy, fed from its Watch subscription's thread: it loads
    and fetches through the handle's own (blocking) calls, and threads wait on it.
    ``next_sequence`` is what the session's next event will be numbered (read before
    a re-read after an ``overflow``, whose stream goes on from the present: the
    listing then holds every event before it)."""

    def __init__(
        self,
        session_id: str,
        load: Callable[[], Sequence[Mapping[str, Any]]],
        fetch: Callable[[str], VariableRecord],
        next_sequence: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(session_id)
        self._load = load
        self._fetch = fetch
        self._next_sequence = next_sequence

    # -- fed by the stream (its own thread) ----------------------------------------

    def connected(self, start: int | None = None) -> None:
        """The stream is (again) up, from sequence ``start``: re-read the session,
        then serve from the copy."""
        self._reload(start, None if start is None else start - 1)

    def _reload(self, start: int | None, through: int | None) -> None:
        if not self.reloading(start):
            return
        try:
            if through is None and self._next_sequence is not None:
                through = self._next_sequence() - 1  # (after an overflow)
            listing = self._load()
        except Exception as exc:
            self.reload_failed(exc)
            return
        self.reloaded(listing, through)

    def on_event(self, event: Event) -> None:
        """One event of the stream."""
        follow = self.take(event)
        if follow is RELOAD:
            self._reload(None, None)  # fell behind: re-read, as after an outage
        elif follow is not None:
            self._complete(follow)

    def _complete(self, var_id: str) -> None:
        """Fetch a new variable's type and constraints (they never change after)."""
        try:
            whole = self._fetch(var_id)
        except Exception:  # deleted meanwhile, or the server unreachable: stays partial
            return
        self.completed(var_id, whole)

    # -- waited on by threads --------------------------------------------------------

    def wait_down(self, timeout: float | None) -> bool:
        """Block until the copy serves nothing (its stream broke, or it ended); False
        on timeout."""
        with self._lock:
            return self._caught_up.wait_for(lambda: not self.serving, timeout)

    def wait_until(self, sequence: int, timeout: float | None) -> bool:
        """Block until the copy serves and has taken in every event before
        ``sequence``; False on timeout (or once the stream ended)."""
        with self._lock:
            return (
                self._caught_up.wait_for(lambda: self.caught_up(sequence), timeout)
                and not self._ended
            )


def _copied(record: CachedRecord) -> VariableRecord:
    """What a caller gets: a VariableRecord of fresh copies of the entry's maps (an
    empty one a new ``{}``, without ``plain_copy``'s walk)."""
    constraints, metadata = record.constraints, record.metadata
    return VariableRecord(
        id=record.id,
        name=record.name,
        type=record.type,
        value=plain_copy(record.value),
        constraints=plain_copy(constraints) if constraints else {},
        metadata=plain_copy(metadata) if metadata else {},
        version=record.version,
        created_at=record.created_at,
        last_updated_at=record.last_updated_at,
    )
