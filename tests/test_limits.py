"""dspex_actors.limits: encoded sizes, measured where a value is written.

Sizes at, just under and just over each limit, for every sized type and for
metadata; what a refusal leaves behind in a LocalState (nothing); imports refused
for NaN or infinite timestamps. Exact boundaries use small Limits on the Validators
directly; LocalState runs with the defaults every backend shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from dspex_actors import (
    InvalidExport,
    LimitExceeded,
    LocalState,
    PartialFailure,
    ValidationError,
    VariableNotFound,
)
from dspex_actors.exports import columns_of
from dspex_actors.imported import records_from_columns
from dspex_actors.limits import (
    DEFAULT_LIMITS,
    NUMBER_BYTES,
    Limits,
    array_header_size,
    check_batch_size,
    check_columns_size,
    check_metadata_size,
    encoded_size,
    float_array_size,
    size_bound,
    str_size,
)
from dspex_actors.session import SessionTable
from dspex_actors.vartypes import check_metadata, compile_type

KIB = 1 << 10
MIB = 1 << 20


def limited(value_bytes: int = 1000, metadata_bytes: int = 500, message: int = 5000) -> Limits:
    return Limits(
        max_value_bytes=value_bytes, max_metadata_bytes=metadata_bytes, max_message_bytes=message
    )


def assert_too_large(
    call: Callable[[], Any], *, variable: str, limit: str, size: int | None = None
) -> LimitExceeded:
    """The call raises LimitExceeded carrying the limit's name, the variable and the
    size; its message names the variable and the limit."""
    with pytest.raises(LimitExceeded) as info:
        call()
    exc = info.value
    assert exc.limit == limit
    assert exc.details["variable"] == variable
    if size is not None:
        assert exc.details["size"] == size
    assert variable in str(exc)
    assert limit in str(exc)
    return exc


def checker(type_name: str, limits: Limits, constraints: Any = None) -> Callable[[Any], Any]:
    validator = compile_type("var", type_name, constraints, limits)
    return lambda value: validator.check("var", value)


# -- measuring ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 31, 32, 255, 256, 65535, 65536])
@pytest.mark.parametrize("char", ["a", "é", "€", "😀"])
def test_str_size_is_the_encoded_size(length: int, char: str) -> None:
    text = char * length
    assert str_size(text) == encoded_size(text)
    assert size_bound(text) >= encoded_size(text)


@pytest.mark.parametrize("count", [0, 15, 16, 65535, 65536])
def test_float_array_size_is_the_encoded_size(count: int) -> None:
    assert float_array_size(count) == encoded_size((0.5,) * count)
    assert array_header_size(count) == encoded_size([None] * count) - count


@pytest.mark.parametrize(
    "data",
    [
        None,
        True,
        -(2**63),
        2**64 - 1,
        1.5,
        "",
        "x" * 40,
        "ü" * 300,
        b"",
        b"b" * 300,
        (0.5,) * 20,
        {"shape": (2, 70_000), "data": (1.0,) * 3},
        {"nested": [1, "two", {"three": b"3", "four": [None, 4.0]}], "ünï": "cödé"},
        [],
        {},
    ],
)
def test_size_bound_never_underestimates(data: Any) -> None:
    assert size_bound(data) >= encoded_size(data)


# -- values: at, just under and just over the limit --------------------------------------


@pytest.mark.parametrize("type_name", ["string", "module"])
@pytest.mark.parametrize("char", ["a", "é", "😀"])
def test_a_string_may_encode_to_exactly_the_limit(type_name: str, char: str) -> None:
    check = checker(type_name, limited(1000))
    header = 3  # str16: lengths 256 to 65535
    per_char = len(char.encode())
    fits = (1000 - header) // per_char
    at_limit = char * fits
    assert str_size(at_limit) <= 1000 < str_size(at_limit + char)
    assert check(at_limit) == at_limit
    assert check(at_limit[:-1]) == at_limit[:-1]
    assert_too_large(
        lambda: check(at_limit + char),
        variable="var",
        limit="max_value_bytes",
        size=str_size(at_limit + char),
    )


def test_an_ascii_string_of_exactly_the_limit_fits() -> None:
    check = checker("string", limited(1000))
    assert check("a" * 997) == "a" * 997  # 3 header bytes + 997: exactly 1000
    assert_too_large(lambda: check("a" * 998), variable="var", limit="max_value_bytes", size=1001)


def test_the_size_is_checked_before_the_other_string_rules() -> None:
    # Measured before UTF-8 or the pattern look at it: an oversized value costs little.
    check = checker("string", limited(1000), {"pattern": "^b"})
    assert_too_large(lambda: check("a" * 2000), variable="var", limit="max_value_bytes")


def test_an_embedding_is_measured_as_the_floats_it_becomes() -> None:
    fits = 110
    limit = float_array_size(fits)  # 3 + 9 * 110
    check = checker("embedding", limited(limit))
    stored = check([1] * fits)  # ints, stored as 9-byte floats
    assert encoded_size(stored) == limit
    check([0.5] * (fits - 1))
    assert_too_large(
        lambda: check([1] * (fits + 1)),
        variable="var",
        limit="max_value_bytes",
        size=float_array_size(fits + 1),
    )


def test_a_tensor_may_encode_to_exactly_the_limit() -> None:
    count = 100
    limit = encoded_size({"shape": [count], "data": [0.5] * count})
    check = checker("tensor", limited(limit))
    stored = check({"shape": [count], "data": [1] * count})
    assert encoded_size(stored) == limit
    check({"shape": [count - 1], "data": [0.5] * (count - 1)})
    over = {"shape": [count + 1], "data": [0.5] * (count + 1)}
    assert_too_large(
        lambda: check(over), variable="var", limit="max_value_bytes", size=encoded_size(over)
    )


def test_a_tensor_shape_counts_toward_its_size() -> None:
    flat = {"shape": [2], "data": [0.5, 0.5]}
    check = checker("tensor", limited(encoded_size(flat)))
    check(flat)
    same_data = {"shape": [1, 2], "data": [0.5, 0.5]}  # one byte more of shape
    assert_too_large(
        lambda: check(same_data),
        variable="var",
        limit="max_value_bytes",
        size=encoded_size(flat) + 1,
    )


def test_a_choice_too_large_to_store_is_refused_when_chosen() -> None:
    big = "b" * 200
    check = checker("choice", limited(100, metadata_bytes=1000), {"choices": ["a", big, 2.5]})
    assert check("a") == "a"
    assert check(2.5) == 2.5
    assert_too_large(lambda: check(big), variable="var", limit="max_value_bytes")


def test_scalars_are_never_measured() -> None:
    # The hot path: a float, an integer or a boolean encodes to at most 9 bytes.
    tiny = limited(1)
    assert checker("float", tiny)(1.5) == 1.5
    assert checker("integer", tiny)(2**63) == 2**63
    assert checker("boolean", tiny)(True) is True


def test_validators_are_cached_per_value_limit() -> None:
    assert compile_type("a", "string", None, limited(100)) is compile_type(
        "b", "string", None, limited(100)
    )
    assert compile_type("a", "string", None, limited(100)) is not compile_type(
        "a", "string", None, limited(200)
    )
    # Scalars ignore the limit: one Validator for every limit.
    assert compile_type("a", "float", None, limited(100)) is compile_type(
        "a", "float", None, limited(200)
    )


def test_constraints_are_bounded_like_metadata() -> None:
    constraints = {"enum": ["x" * 600]}
    assert_too_large(
        lambda: compile_type("var", "string", constraints, limited(metadata_bytes=500)),
        variable="var",
        limit="max_metadata_bytes",
        size=encoded_size(constraints),
    )
    compile_type("var", "string", constraints, limited(metadata_bytes=1000))


# -- metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "item_header"),
    [(lambda n: "s" * n, 3), (lambda n: b"b" * n, 3)],
    ids=["str", "bytes"],
)
def test_metadata_may_encode_to_exactly_the_limit(
    make: Callable[[int], Any], item_header: int
) -> None:
    limits = limited(metadata_bytes=500)
    fits = 500 - 1 - len(msgpack.packb("blob")) - item_header  # map, key, value header
    at_limit = {"blob": make(fits)}
    assert encoded_size(at_limit) == 500
    assert check_metadata("var", at_limit, limits) == at_limit
    check_metadata("var", {"blob": make(fits - 1)}, limits)
    assert_too_large(
        lambda: check_metadata("var", {"blob": make(fits + 1)}, limits),
        variable="var",
        limit="max_metadata_bytes",
        size=501,
    )


def test_metadata_holding_an_integer_msgpack_cannot_carry_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        check_metadata("var", {"n": 2**64})
    assert info.value.rule == "metadata"


def test_check_metadata_size_bounds_a_merged_map() -> None:
    # What a write's metadata merged over the record's must pass, though each part fits.
    limits = limited(metadata_bytes=100)
    old, new = {"a": "x" * 50}, {"b": "y" * 50}
    assert check_metadata("var", old, limits) == old
    assert check_metadata("var", new, limits) == new
    assert check_metadata_size("var", old, limits) == encoded_size(old)
    assert_too_large(
        lambda: check_metadata_size("var", {**old, **new}, limits),
        variable="var",
        limit="max_metadata_bytes",
        size=encoded_size({**old, **new}),
    )


# -- batches and imports: the whole message ---------------------------------------------------


@pytest.mark.parametrize("char", ["x", "é"])
def test_check_batch_size_is_exact_at_the_limit(char: str) -> None:
    keys = [f"v{i}" for i in range(48)]
    values = [char * 100] * 48
    size = encoded_size(dict(zip(keys, values, strict=True))) + 7  # 7: the batch's metadata
    check_batch_size("<batch>", keys, values, limited(200, message=size), extra_bytes=7)
    assert_too_large(
        lambda: check_batch_size(
            "<batch>", keys, values, limited(200, message=size - 1), extra_bytes=7
        ),
        variable="<batch>",
        limit="max_message_bytes",
        size=size,
    )


def test_a_short_batch_is_not_measured() -> None:
    # 15 values at the value limit fit 64 MiB: the values are not even looked at.
    check_batch_size("<batch>", [f"v{i}" for i in range(15)], [object()] * 15)


def test_check_columns_size_is_exact_at_the_limit() -> None:
    columns = ([f"id{i}" for i in range(50)], [0.5] * 50, [{"k": "é" * 30}] * 50)
    size = sum(encoded_size(list(c)) for c in columns) + 11
    check_columns_size("<import>", "the import", columns, limited(message=size), extra_bytes=11)
    assert_too_large(
        lambda: check_columns_size(
            "<import>", "the import", columns, limited(message=size - 1), extra_bytes=11
        ),
        variable="<import>",
        limit="max_message_bytes",
        size=size,
    )


def _export(count: int, value: Any = 0.5, type_name: str = "float") -> dict[str, Any]:
    return {
        "session_id": "s",
        "variables": {
            f"id{i}": {
                "id": f"id{i}",
                "name": f"v{i}",
                "type": type_name,
                "value": value,
                "constraints": {},
                "metadata": {},
                "version": 0,
                "created_at": 1.0,
                "last_updated_at": 1.0,
            }
            for i in range(count)
        },
        "variable_index": {f"v{i}": f"id{i}" for i in range(count)},
        "metadata": {},
    }


def test_an_import_over_the_message_limit_is_refused() -> None:
    limits = limited(value_bytes=200, message=3000)
    fits = columns_of(_export(15, "x" * 150, "string"))
    assert len(records_from_columns(fits, SessionTable("s"), limits)) == 15
    over = columns_of(_export(20, "x" * 150, "string"))
    assert_too_large(
        lambda: records_from_columns(over, SessionTable("s"), limits),
        variable="<import>",
        limit="max_message_bytes",
    )


def test_an_import_is_measured_as_the_bridge_columns_carry_it() -> None:
    exported = _export(100)
    exported["metadata"] = {"session": "é" * 40}
    exported["variables"]["id7"]["metadata"] = {"unit": "kelvin"}
    columns = columns_of(exported)
    parts: tuple[Any, ...] = (
        columns.ids,
        columns.names,
        ["float"],  # the definitions' types and constraints, once each
        [{}],
        [0.5] * 100,
        columns.variable_metadata,
        exported["metadata"],
    )
    # And 27 bytes per variable: version, created_at, last_updated_at.
    size = sum(map(encoded_size, parts)) + 3 * NUMBER_BYTES * 100
    records_from_columns(columns, SessionTable("s"), limited(message=size))
    with pytest.raises(LimitExceeded):
        records_from_columns(columns, SessionTable("s"), limited(message=size - 1))


# -- LocalState: the defaults, and nothing changes on a refusal -----------------------------


@pytest.fixture
def state() -> Iterator[LocalState]:
    provider = LocalState.init()
    try:
        yield provider
    finally:
        provider.cleanup()


def test_default_limits_admit_a_4_mib_string(state: LocalState) -> None:
    state.register_variable("doc", "string", "a" * (4 * MIB))
    assert len(state.get_variable("doc")) == 4 * MIB
    assert_too_large(
        lambda: state.register_variable("big", "string", "a" * (4 * MIB + 100 * KIB)),
        variable="big",
        limit="max_value_bytes",
    )
    with pytest.raises(VariableNotFound):
        state.get_variable("big")
    assert state.variable_count == 1


def test_default_limits_admit_an_embedding_up_to_the_value_limit(state: LocalState) -> None:
    fits = (DEFAULT_LIMITS.max_value_bytes - 5) // 9
    state.register_variable("emb", "embedding", [0.5] * fits)
    version = state.get_record("emb").version
    assert_too_large(
        lambda: state.set_variable("emb", [0.25] * (fits + 1)),
        variable="emb",
        limit="max_value_bytes",
    )
    record = state.get_record("emb")
    assert record.version == version
    assert record.value[0] == 0.5


def test_oversized_metadata_changes_nothing(state: LocalState) -> None:
    state.register_variable("temp", "float", 0.5, metadata={"a": 1})
    big = {"blob": b"x" * (DEFAULT_LIMITS.max_metadata_bytes + 1)}
    assert_too_large(
        lambda: state.set_variable("temp", 0.75, big),
        variable="temp",
        limit="max_metadata_bytes",
    )
    assert_too_large(
        lambda: state.register_variable("other", "float", 0.5, metadata=big),
        variable="other",
        limit="max_metadata_bytes",
    )
    record = state.get_record("temp")
    assert (record.value, record.version, record.metadata) == (0.5, 0, {"a": 1})
    assert state.variable_count == 1


def test_a_batch_with_one_oversized_value_applies_nothing(state: LocalState) -> None:
    state.register_variable("a", "string", "x")
    state.register_variable("b", "string", "y")
    with pytest.raises(PartialFailure) as info:
        state.update_variables({"a": "ok", "b": "z" * (4 * MIB + 100 * KIB)})
    assert set(info.value.errors) == {"b"}
    assert isinstance(info.value.errors["b"], LimitExceeded)
    assert state.get_variables(["a", "b"]) == {"a": "x", "b": "y"}


def test_an_import_with_an_oversized_value_imports_nothing(state: LocalState) -> None:
    exported = _export(3, "s", "string")
    exported["variables"]["id2"]["value"] = "s" * (4 * MIB + 100 * KIB)
    assert_too_large(lambda: state.import_state(exported), variable="v2", limit="max_value_bytes")
    assert state.variable_count == 0


@pytest.mark.parametrize("field", ["created_at", "last_updated_at"])
@pytest.mark.parametrize("stamp", [math.nan, math.inf, -math.inf])
def test_an_import_refuses_a_timestamp_that_is_not_finite(
    state: LocalState, field: str, stamp: float
) -> None:
    exported = _export(3)
    exported["variables"]["id1"][field] = stamp
    with pytest.raises(InvalidExport) as info:
        state.import_state(exported)
    assert "'v1'" in str(info.value)
    assert field in str(info.value)
    assert info.value.details == {"variable": "v1", "field": field}
    assert state.variable_count == 0


def test_an_import_accepts_finite_timestamps_whose_sum_overflows(state: LocalState) -> None:
    exported = _export(2)
    for record in exported["variables"].values():
        record["created_at"] = record["last_updated_at"] = 1e308
    state.import_state(exported)
    assert state.get_record("v0").created_at == 1e308


def test_a_session_enforces_the_limits_it_was_given_locally_and_bridged() -> None:
    """Custom limits reach the actor's every check, and a server with the same limits
    refuses the same inputs with the same class."""
    from dspex_actors import serve
    from dspex_actors.bridge import BridgedState

    small = Limits(max_value_bytes=64, max_metadata_bytes=64, max_message_bytes=120)
    with (
        LocalState.init(limits=small) as local,
        serve(limits=small) as server,
        BridgedState.init(address=server.address) as bridged,
    ):
        for state in (local, bridged):
            state.register_variable("s", "string", "ok", metadata={"k": "v"})
            state.register_variable("t", "string", "ok")
            before = state.list_variables()
            for write, limit in (
                (lambda st: st.set_variable("s", "x" * 100), "max_value_bytes"),
                (lambda st: st.set_variable("s", "y", {"k": "v" * 80}), "max_metadata_bytes"),
                (
                    lambda st: st.update_variables({"s": "a" * 60, "t": "b" * 60}, {"m": "c"}),
                    "max_message_bytes",
                ),
            ):
                with pytest.raises(LimitExceeded) as info:
                    write(state)
                assert info.value.limit == limit, (state, info.value)
                assert state.list_variables() == before


def test_a_batch_over_the_message_limit_is_the_same_error_local_and_bridged() -> None:
    """17 values of 100 KiB in a 1 MiB message: locally the session refuses the batch,
    bridged the client does before sending (gRPC's own refusal would read as the
    server's RESOURCE_EXHAUSTED); the same class, variable, limit and wording, and
    nothing changes."""
    from dspex_actors.bridge import BridgedState, serve

    limit = 1 << 20
    batch = {f"v{i}": "a" * (100 << 10) for i in range(17)}
    errors = []
    with serve() as server:
        for state in (
            LocalState.init(limits=Limits(max_message_bytes=limit)),
            BridgedState.init(address=server.address, max_message_bytes=limit),
        ):
            try:
                for name in batch:
                    state.register_variable(name, "string", "")
                with pytest.raises(LimitExceeded) as caught:
                    state.update_variables(batch)
                errors.append(caught.value)
                assert state.get_variables(list(batch)) == dict.fromkeys(batch, "")
            finally:
                state.cleanup()
    local, bridged = errors
    assert [local.details["variable"], local.details["limit"]] == ["<batch>", "max_message_bytes"]
    assert [bridged.details["variable"], bridged.details["limit"]] == [
        "<batch>",
        "max_message_bytes",
    ]
    prefix = "variable '<batch>': the batch of 17 updates is "
    assert str(local).startswith(prefix)
    assert str(bridged).startswith(prefix)
    assert str(bridged).endswith("the limit is this client's own, and nothing was sent")
