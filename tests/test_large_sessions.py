"""A large session is listed and exported in bounded pieces: other sessions keep answering.

* Two clients list and export a 100,000-variable session in a loop, in processes of
  their own, against a ``serve`` process on the memory store and on the Redis store,
  while this process times another session's gets. Every listing and export is whole
  and every get answers; the figures (p50, p99, max) are printed (run with ``-s``).
* The pieces are the same message: a listing serialized a record at a time is
  byte-identical to the whole response, an export in pieces parses to the same
  message, a Calls reply around serialized bytes parses to the reply gRPC would
  have built.
* The Redis store reads a large session a page per script, and pages are one
  moment: a write between two pages makes it read the session again.

Evidence tests print their figures; they assert outcomes only.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from bridge_support import REPO_ROOT, python_env, server_process

from dspex_actors import LocalState
from dspex_actors.bridge import BridgedState
from dspex_actors.exports import ExportColumns
from dspex_actors.messages import ExportSession, ListVariables
from dspex_actors.records import VariableRecord
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire.forms import call_reply_bytes
from dspex_actors.wire.operations import RPCS

VARIABLES = 100_000
ROUNDS = 2

LISTER = textwrap.dedent(
    """
    import sys
    from dspex_actors.bridge import BridgedState

    address, session_id, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with BridgedState.init(
        address=address, session_id=session_id, create=False, timeout=300
    ) as state:
        print("ready", flush=True)
        for _ in range(rounds):
            listed = state.list_variables()
            exported = state.export_columns()
            print(len(listed), listed[-1]["name"], exported.variable_count, flush=True)
    """
)


def _floats(count: int, session_id: str) -> ExportColumns:
    """A session of ``count`` float variables ``x0``.. in [0, 1], as columns."""
    now = time.time()
    return ExportColumns(
        session_id,
        {},
        [f"var_{i:032x}" for i in range(count)],
        [f"x{i}" for i in range(count)],
        [("float", {"min": 0.0, "max": 1.0})],
        [0] * count,
        [i / count for i in range(count)],
        [1] * count,
        [now] * count,
        [now] * count,
        [{} for _ in range(count)],
    )


def _quantile(sorted_seconds: list[float], q: float) -> float:
    return sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))] * 1000


def _list_and_export_beside_gets(address: str, store: str) -> None:
    big = BridgedState.init(address=address, timeout=300)
    other = BridgedState.init(address=address, timeout=30)
    listers: list[subprocess.Popen[str]] = []
    try:
        big.import_columns(_floats(VARIABLES, big.session_id))
        other.register_variable("n", "integer", 7)
        listers = [
            subprocess.Popen(
                [sys.executable, "-c", LISTER, address, big.session_id, str(ROUNDS)],
                stdout=subprocess.PIPE,
                text=True,
                env=python_env(),
                cwd=REPO_ROOT,
            )
            for _ in range(2)
        ]
        for lister in listers:
            assert lister.stdout is not None
            assert lister.stdout.readline() == "ready\n"
        seconds: list[float] = []
        values = set()
        while any(lister.poll() is None for lister in listers):
            started = time.perf_counter()
            values.add(other.get_variable("n"))
            seconds.append(time.perf_counter() - started)
        reports = []
        for lister in listers:
            assert lister.stdout is not None
            reports += lister.stdout.read().split("\n")[:-1]
            assert lister.wait() == 0
    finally:
        for lister in listers:
            if lister.poll() is None:
                lister.kill()
                lister.wait()
            if lister.stdout is not None:
                lister.stdout.close()
        big.cleanup()
        other.cleanup()
    whole = f"{VARIABLES} x{VARIABLES - 1} {VARIABLES}"
    assert reports == [whole] * (2 * ROUNDS)
    assert values == {7}
    seconds.sort()
    print(
        f"{store} store: 2 clients listed and exported a {VARIABLES:,}-variable session "
        f"{ROUNDS} times each; meanwhile another session answered {len(seconds)} gets "
        "one after another, each within: "
        f"p50 {_quantile(seconds, 0.5):.1f} ms, p99 {_quantile(seconds, 0.99):.1f} ms, "
        f"max {seconds[-1] * 1000:.1f} ms"
    )


def test_listing_and_exporting_a_large_session_stalls_no_other_session() -> None:
    with server_process() as server:
        _list_and_export_beside_gets(server.address, "memory")


def test_listing_and_exporting_a_large_redis_session_stalls_no_other_session(
    redis_url: str,
) -> None:
    with server_process("--store", redis_url) as server:
        _list_and_export_beside_gets(server.address, "redis")


# -- the pieces are the same message ---------------------------------------------------


@pytest.fixture
def session() -> Iterator[LocalState]:
    state = LocalState.init()
    state.import_columns(_floats(2_500, state.session_id))
    state.register_variable(
        "style", "string", "terse", constraints={"max_length": 10}, metadata={"by": ["me"]}
    )
    yield state
    state.cleanup()


def test_a_listing_in_pieces_is_the_whole_response(session: LocalState) -> None:
    rpc, operation = RPCS["ListVariables"], ListVariables(None)
    records = session.list_variables()
    assert rpc.pieces is not None
    pieces = rpc.pieces(operation, records)
    assert pieces == rpc.answer(operation, records).SerializeToString()
    assert len(pb.ListVariablesResponse.FromString(pieces).variables) == 2_501


def test_an_export_in_pieces_parses_to_the_whole_response(session: LocalState) -> None:
    rpc, operation = RPCS["ExportSession"], ExportSession()
    columns = session.export_columns()
    assert rpc.pieces is not None
    parsed = pb.ExportSessionResponse.FromString(rpc.pieces(operation, columns))
    assert parsed == rpc.answer(operation, columns)
    assert len(parsed.columns.ids) == 2_501


def test_a_calls_reply_around_serialized_bytes_is_the_reply(session: LocalState) -> None:
    response = RPCS["ListVariables"].answer(ListVariables("x1*"), session.list_variables("x1*"))
    assert isinstance(response, pb.ListVariablesResponse)
    call = 2**40 + 3
    wire = call_reply_bytes(call, "list_variables", response.SerializeToString())
    assert wire == pb.CallReply(call=call, list_variables=response).SerializeToString()


# -- the Redis store's pages are one moment ------------------------------------------------


def _between_pages(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, change: Callable[[Any], None]
) -> tuple[list[VariableRecord], list[VariableRecord], list[int], int]:
    """List a Redis session of 2 pages and 5 variables while ``change(writer)`` runs
    between its first page and its second; then list it again, untouched. Returns
    both listings, the sizes of the pages read and how often what changed was read
    again."""
    from dspex_actors.redis import RedisState
    from dspex_actors.redis import pages as paging
    from dspex_actors.redis.pages import DUMP_PAGE

    state = RedisState.init(url=redis_url)
    writer = RedisState.init(url=redis_url, session_id=state.session_id, create=False)
    pages: list[int] = []
    caught_up: list[int] = []
    real_page, real_caught_up = paging.page_of, paging.caught_up_since

    def page(session: Any, reply: list[Any]) -> Any:
        read = real_page(session, reply)
        pages.append(len(read[4]))
        if len(pages) == 1:
            change(writer)
        return read

    def catch_up(session: Any, since: int, records: list[dict[str, Any]]) -> Any:
        caught_up.append(since)
        return real_caught_up(session, since, records)

    try:
        state.import_columns(_floats(2 * DUMP_PAGE + 5, state.session_id))
        with monkeypatch.context() as patch:
            patch.setattr(paging, "page_of", page)
            patch.setattr(paging, "caught_up_since", catch_up)
            listed = state.list_variables()
        again = state.list_variables()
    finally:
        writer.cleanup()
        state.cleanup()
    return listed, again, pages, len(caught_up)


def test_a_write_between_pages_is_caught_up_not_read_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lands between the first page and the second: each page is read once,
    and one more script reads again what changed since the first; the listing is
    one moment, the write in it."""
    from dspex_actors.redis.pages import DUMP_PAGE

    listed, again, pages, caught_up = _between_pages(
        redis_url, monkeypatch, lambda writer: writer.set_variable("x0", 0.25)
    )
    assert pages == [DUMP_PAGE, DUMP_PAGE, 5] and caught_up == 1
    assert listed == again
    assert listed[0]["value"] == 0.25 and listed[0]["version"] == 2


def test_deletes_and_registers_between_pages_neither_skip_nor_repeat(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Variables deleted on the page read and on one not read yet, and one registered,
    between two pages (pages by rank would skip one that stayed): the listing is the
    session of the moment after, as a second listing reads it."""

    def change(writer: Any) -> None:
        writer.delete_variable("x3")
        writer.delete_variable("x600")
        writer.register_variable("late", "integer", 7)

    from dspex_actors.redis.pages import DUMP_PAGE

    listed, again, pages, caught_up = _between_pages(redis_url, monkeypatch, change)
    names = [record["name"] for record in listed]
    assert pages == [DUMP_PAGE, DUMP_PAGE, 5] and caught_up == 1  # no page read again
    assert listed == again
    assert len(names) == len(set(names)) == 1_005 - 2 + 1
    assert "x3" not in names and "x600" not in names and names[-1] == "late"
