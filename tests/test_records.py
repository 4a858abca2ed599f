"""dspex_actors.records: VariableRecord, the one record ``get_record`` and
``list_variables`` answer on every backend.

A record is a dict of the nine ``RECORD_KEYS`` (equal to a plain dict of its items,
``dict()``, JSON, msgpack), each key also a typed read-only attribute. The type is
checked on its own, then on every backend: LocalState, a Context, BridgedState with
and without its cache, RedisState, and a provider that keeps StateProvider's
default ``get_record``.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from dspex_actors import LocalState
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.bridge.client.cache import MISS, RecordCache
from dspex_actors.exports import RECORD_KEYS
from dspex_actors.provider import StateProvider
from dspex_actors.records import VariableRecord
from dspex_actors.streaming import Event
from dspex_actors.supervision import Context

ITEMS: dict[str, Any] = {
    "id": "var_1",
    "name": "temperature",
    "type": "float",
    "value": 0.7,
    "constraints": {"min": 0.0, "max": 2.0},
    "metadata": {"by": ["tests"]},
    "version": 3,
    "created_at": 1.5,
    "last_updated_at": 2.5,
}


def _record() -> VariableRecord:
    return VariableRecord.from_dict(copy.deepcopy(ITEMS))


# -- the type ---------------------------------------------------------------------------


def test_a_record_is_a_dict_of_the_nine_keys_and_each_is_an_attribute() -> None:
    record = VariableRecord(**copy.deepcopy(ITEMS))
    assert isinstance(record, dict)
    assert list(record) == list(RECORD_KEYS)
    for key in RECORD_KEYS:
        assert getattr(record, key) == record[key] == ITEMS[key]
    assert (record.name, record.value, record.version) == ("temperature", 0.7, 3)


def test_a_record_equals_the_plain_dict_of_its_items() -> None:
    record = _record()
    assert record == ITEMS
    assert ITEMS == record  # noqa: SIM300  # the plain dict's side of the comparison
    assert record != {**ITEMS, "version": 4}
    plain = dict(record)
    assert type(plain) is dict and plain == record
    assert type(record.to_dict()) is dict and record.to_dict() == ITEMS
    assert [record] == [ITEMS]


def test_a_record_round_trips_as_plain_data() -> None:
    record = _record()
    assert json.loads(json.dumps(record)) == record
    assert json.dumps(record) == json.dumps(ITEMS)
    assert msgpack.unpackb(msgpack.packb(record)) == record
    assert msgpack.packb(record) == msgpack.packb(ITEMS)
    for again in (pickle.loads(pickle.dumps(record)), copy.copy(record), copy.deepcopy(record)):
        assert type(again) is VariableRecord and again == record


def test_attributes_are_read_only_and_read_the_items() -> None:
    record = _record()
    for key in RECORD_KEYS:
        with pytest.raises(AttributeError):
            setattr(record, key, 1)
    with pytest.raises(AttributeError):
        record.other = 1  # type: ignore[attr-defined]  # no __dict__ (slots)
    record["value"] = 0.9  # the caller's own dict
    assert record.value == 0.9


def test_from_dict_takes_the_nine_keys_and_names_what_is_missing() -> None:
    record = VariableRecord.from_dict({**ITEMS, "description": "extra"})
    assert type(record) is VariableRecord and record == ITEMS
    lacking = {k: v for k, v in ITEMS.items() if k not in ("version", "created_at")}
    with pytest.raises(ValueError, match=r"lacks version, created_at$"):
        VariableRecord.from_dict(lacking)


def test_replace_answers_a_changed_copy() -> None:
    record = _record()
    changed = record.replace(value=1.1, version=4)
    assert type(changed) is VariableRecord
    assert changed == {**ITEMS, "value": 1.1, "version": 4}
    assert record == ITEMS  # unchanged
    with pytest.raises(TypeError, match="no key valu"):
        record.replace(valu=1.1)


def test_repr_names_the_type() -> None:
    assert repr(_record()).startswith("VariableRecord({'id': 'var_1', 'name': 'temperature'")


# -- every backend ------------------------------------------------------------------------


class DefaultRecords(LocalState):
    """A provider of its own that keeps StateProvider's default ``get_record``."""

    get_record = StateProvider.get_record


@pytest.fixture
def bridge_server() -> Iterator[SessionStoreServer]:
    with serve() as server:
        yield server


@pytest.fixture(
    params=["local", "context", "bridged", "bridged-cached", "redis", "default-get_record"]
)
def backend(request: pytest.FixtureRequest) -> Iterator[StateProvider]:
    state: StateProvider
    if request.param == "local":
        state = LocalState.init()
    elif request.param == "context":
        state = Context.init()
    elif request.param.startswith("bridged"):
        server: SessionStoreServer = request.getfixturevalue("bridge_server")
        cache = request.param == "bridged-cached"
        state = BridgedState.init(address=server.address, cache=cache)
    elif request.param == "redis":
        from dspex_actors.redis.state import RedisState

        state = RedisState.init(url=request.getfixturevalue("redis_url"))
    else:
        state = DefaultRecords.init()
    try:
        yield state
    finally:
        state.cleanup()


def _populate(state: StateProvider) -> None:
    state.register_variable("temperature", "float", 0.7, constraints={"min": 0.0, "max": 2.0})
    state.register_variable("tags", "string", "a", metadata={"by": ["tests"]})
    state.set_variable("temperature", 0.9, {"step": 1})
    if isinstance(state, BridgedState) and state.cached:
        state.sync_cache()


def test_list_variables_lists_variable_records(backend: StateProvider) -> None:
    _populate(backend)
    for listing in (backend.list_variables(), backend.list_variables("t*")):
        assert [r["name"] for r in listing] == ["temperature", "tags"]
        for listed in listing:
            assert type(listed) is VariableRecord, type(listed)
            assert listed == dict(listed)
            for key in RECORD_KEYS:
                assert getattr(listed, key) == listed[key]
        temperature = listing[0]
        assert (temperature.name, temperature.type) == ("temperature", "float")
        assert (temperature.value, temperature.version) == (0.9, 1)
        assert temperature.metadata == {"step": 1}
        assert temperature.constraints == {"min": 0.0, "max": 2.0}


def test_get_record_equals_its_listing_entry(backend: StateProvider) -> None:
    _populate(backend)
    for listed in backend.list_variables():
        for identifier in (listed.name, listed.id):
            record = backend.get_record(identifier)
            assert type(record) is VariableRecord
            assert record == listed
            assert record == next(r for r in backend.list_variables() if r["id"] == listed["id"])
    tags = backend.get_record("tags")
    assert tags == {
        "id": tags.id,
        "name": "tags",
        "type": "string",
        "value": "a",
        "constraints": {},
        "metadata": {"by": ["tests"]},
        "version": 0,
        "created_at": tags.created_at,
        "last_updated_at": tags.last_updated_at,
    }


def test_records_of_every_backend_are_plain_data(backend: StateProvider) -> None:
    _populate(backend)
    listing = backend.list_variables()
    plain = [dict(r) for r in listing]
    assert listing == plain
    assert json.loads(json.dumps(listing)) == plain
    assert msgpack.unpackb(msgpack.packb(listing)) == plain
    record = backend.get_record("temperature")
    assert msgpack.unpackb(msgpack.packb(record)) == dict(record) == plain[0]


# -- the bridged cache --------------------------------------------------------------------


def test_a_cached_handle_answers_variable_records_from_its_copy(
    bridge_server: SessionStoreServer,
) -> None:
    with BridgedState.init(address=bridge_server.address) as plain:
        _populate(plain)
        with BridgedState.init(
            session_id=plain.session_id, address=bridge_server.address, cache=True
        ) as cached:
            cached.set_variable("tags", "b")
            cached.sync_cache()
            assert cached.cached
            listing, record = cached.list_variables(), cached.get_record("tags")
            assert listing == plain.list_variables()
            assert all(type(r) is VariableRecord for r in listing)
            assert type(record) is VariableRecord and (record.value, record.version) == ("b", 1)
            assert record == listing[1] == plain.get_record("tags")


def test_the_cache_hands_out_variable_records_it_copies() -> None:
    listing = [dict(ITEMS)]
    cache = RecordCache("s", lambda: listing, lambda var_id: VariableRecord.from_dict(ITEMS))
    cache.connected()
    (listed,) = cache.listing(None)
    record = cache.record("temperature")
    assert type(listed) is VariableRecord and type(record) is VariableRecord
    assert listed == record == ITEMS
    record.metadata["by"].append("caller")
    assert cache.record("var_1") == ITEMS  # a copy: the caller's edit stays with the caller
    cache.on_event(Event("s", 2, "updated", "var_1", "temperature", 1.2, 4, {}, 3.0))
    assert cache.record("temperature") == {
        **ITEMS,
        "value": 1.2,
        "version": 4,
        "metadata": {},
        "last_updated_at": 3.0,
    }
    assert cache.value("temperature") == 1.2
    cache.disconnected()
    assert cache.listing(None) is MISS
