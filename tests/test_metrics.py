"""A SessionStore's Prometheus metrics, scraped over HTTP from a real server on loopback.

The scrape is read with a real HTTP client (urllib) and parsed with
``prometheus_client``'s own parser; every count is checked exactly against the
calls the test made: calls by method and status code (unary and streamed alike),
the latency histograms' buckets summing to those calls, refusals at admission,
sessions and variables held, watch streams and their events, store failures,
dedupe hits, and each server's registry its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from bridge_support import held, server_process
from google.rpc.status_pb2 import Status
from prometheus_client.parser import text_string_to_metric_families

from dspex_actors import failpoints
from dspex_actors.bridge import BridgedState, SessionStoreServer, serve
from dspex_actors.bridge import server as server_package
from dspex_actors.bridge.client.calls import CALLS_METHOD
from dspex_actors.bridge.server.metrics import LATENCY_BUCKETS
from dspex_actors.errors import StateError, ValidationError, VariableNotFound
from dspex_actors.limits import Limits
from dspex_actors.messages import Crash
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire import codec
from dspex_actors.wire.forms import SERVICE

WAIT = 30.0
METRICS = "127.0.0.1:0"

Labels = frozenset[tuple[str, str]]


class Scrape:
    """One scrape of a server's endpoint: every sample by name and labels."""

    def __init__(self, server: SessionStoreServer) -> None:
        url = f"http://{server.metrics_address}/metrics"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            self.text = response.read().decode()
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value (0 when the server has not counted any yet)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def gauge(self, name: str, **labels: str) -> float:
        """A gauge's value, which must be there (a store that keeps none has none)."""
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no {name} {labels} in the scrape"
        return self.samples[key]

    def has(self, name: str) -> bool:
        return any(key[0] == name for key in self.samples)

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        """Samples of ``name`` matching ``labels``, by the value of ``label``."""
        wanted = set(labels.items())
        return {
            dict(key[1])[label]: value
            for key, value in self.samples.items()
            if key[0] == name and wanted <= key[1] and label in dict(key[1])
        }

    def buckets(self, name: str, **labels: str) -> list[float]:
        """A histogram's cumulative bucket counts, in bound order (+Inf last)."""
        bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
        found = self.by(f"{name}_bucket", "le", **labels)
        return [found[_le(bound)] for bound in bounds]


def _le(bound: str) -> str:
    """A bound as prometheus_client's parser spells it back (``1.0``, ``+Inf``)."""
    return bound if bound == "+Inf" else repr(float(bound))


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll a real condition with a deadline (no sleep stands in for an event)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _stalling_apply() -> tuple[concurrent.futures.Future[None], threading.Semaphore, Any]:
    """A gate, a count of writes that reached the store, and a store.apply action
    holding each write there until the gate opens."""
    gate: concurrent.futures.Future[None] = concurrent.futures.Future()
    stalled = threading.Semaphore(0)

    async def stall() -> None:
        stalled.release()
        await asyncio.wrap_future(gate)

    return gate, stalled, stall


def _set_request(session_id: str, name: str, value: Any, request_id: str) -> pb.SetVariableRequest:
    return pb.SetVariableRequest(
        session_id=session_id, identifier=name, value=codec.pack(value), request_id=request_id
    )


def _unary(channel: grpc.Channel, method: str, response: Any) -> Any:
    return channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response.FromString,
    )


# -- the load: counts and latency buckets, exact --------------------------------------------

WORKERS = 4  # two on the Calls stream, two unary
SETS, GETS, MISSING, INVALID = 60, 90, 6, 4
"""Per worker and per phase: writes, reads, reads of an absent variable (NOT_FOUND),
writes refused (INVALID_ARGUMENT)."""


def _work(handle: BridgedState, name: str, phase: int) -> None:
    for i in range(SETS):
        handle.set_variable(name, phase * SETS + i)
    for _ in range(GETS):
        handle.get_variable(name)
    for _ in range(MISSING):
        with pytest.raises(VariableNotFound):
            handle.get_variable("absent")
    for _ in range(INVALID):
        with pytest.raises(ValidationError):
            handle.set_variable(name, -1)


def _load_counts(before: Scrape, after: Scrape) -> dict[tuple[str, str], float]:
    return {
        (method, code): after.value("dspex_calls_total", method=method, code=code)
        - before.value("dspex_calls_total", method=method, code=code)
        for method, code in [
            ("SetVariable", "OK"),
            ("SetVariable", "INVALID_ARGUMENT"),
            ("GetVariable", "OK"),
            ("GetVariable", "NOT_FOUND"),
        ]
    }


def _expected(phases: int) -> dict[tuple[str, str], float]:
    return {
        ("SetVariable", "OK"): phases * WORKERS * SETS,
        ("SetVariable", "INVALID_ARGUMENT"): phases * WORKERS * INVALID,
        ("GetVariable", "OK"): phases * WORKERS * GETS,
        ("GetVariable", "NOT_FOUND"): phases * WORKERS * MISSING,
    }


def _check_histograms(scrape: Scrape) -> None:
    """Each method's latency buckets are cumulative and sum to the calls it answered."""
    for method in scrape.by("dspex_call_duration_seconds_count", "method"):
        buckets = scrape.buckets("dspex_call_duration_seconds", method=method)
        assert buckets == sorted(buckets), f"{method}: buckets not cumulative"
        calls = sum(scrape.by("dspex_calls_total", "code", method=method).values())
        assert buckets[-1] == calls, f"{method}: {buckets[-1]} in +Inf, {calls} calls"
        assert scrape.value("dspex_call_duration_seconds_count", method=method) == calls


def test_a_scrape_during_a_load_shows_its_calls_and_latency_buckets_exactly() -> None:
    with serve(metrics=METRICS) as server:
        owner = BridgedState.init(address=server.address, timeout=WAIT)
        names = [f"v{i}" for i in range(WORKERS)]
        for name in names:
            owner.register_variable(name, "integer", 0, constraints={"min": 0})
        handles = [
            BridgedState.init(
                address=server.address,
                session_id=owner.session_id,
                create=False,
                stream=n % 2 == 0,
                timeout=WAIT,
            )
            for n in range(WORKERS)
        ]
        paused, resumed = threading.Barrier(WORKERS + 1), threading.Barrier(WORKERS + 1)

        def worker(n: int) -> None:
            _work(handles[n], names[n], 0)
            paused.wait(WAIT)
            resumed.wait(WAIT)
            _work(handles[n], names[n], 1)

        scrapes: list[Scrape] = []
        done = threading.Event()

        def scraper() -> None:  # scrapes all through the second phase
            while not done.is_set():
                scrapes.append(Scrape(server))

        try:
            before = Scrape(server)
            with concurrent.futures.ThreadPoolExecutor(WORKERS + 1) as pool:
                workers = [pool.submit(worker, n) for n in range(WORKERS)]
                paused.wait(WAIT)  # the first phase is done; the second waits
                middle = Scrape(server)
                assert _load_counts(before, middle) == _expected(1)
                _check_histograms(middle)
                scraping = pool.submit(scraper)
                resumed.wait(WAIT)
                for future in workers:
                    future.result(WAIT)
                done.set()
                scraping.result(WAIT)
            after = Scrape(server)
        finally:
            for handle in handles:
                handle.cleanup()
            owner.cleanup()
        assert _load_counts(before, after) == _expected(2)
        _check_histograms(after)
        # Every call of the load went once into the store and was timed there.
        store_calls = after.value("dspex_store_duration_seconds_count", store="memory") - (
            before.value("dspex_store_duration_seconds_count", store="memory")
        )
        assert store_calls == sum(_expected(2).values())
        store_buckets = after.buckets("dspex_store_duration_seconds", store="memory")
        assert store_buckets[-1] == after.value(
            "dspex_store_duration_seconds_count", store="memory"
        )
        assert after.value("dspex_calls_in_flight") == 0
        # The scrapes during the second phase saw the counts rise, never fall.
        sets = [s.value("dspex_calls_total", method="SetVariable", code="OK") for s in scrapes]
        assert sets == sorted(sets)
        assert middle.value("dspex_calls_total", method="SetVariable", code="OK") <= sets[0]
        assert sets[-1] <= after.value("dspex_calls_total", method="SetVariable", code="OK")
        assert after.value("dspex_calls_refused_total", method="SetVariable", reason="x") == 0
        print(
            f"{len(scrapes)} scrapes during the second phase; "
            f"{int(sum(_expected(2).values()))} calls counted exactly"
        )


# -- refusals at admission ------------------------------------------------------------------


def test_calls_past_the_servers_limit_are_refused_counted_and_shown_in_flight() -> None:
    """Two unary writes held in the store fill max_concurrent_calls=2: the gauges show
    them, and a third call is refused RESOURCE_EXHAUSTED, counted by reason."""
    gate, stalled, stall = _stalling_apply()
    with (
        serve(metrics=METRICS, max_concurrent_calls=2) as server,
        BridgedState.init(address=server.address, stream=False, timeout=WAIT) as state,
    ):
        state.register_variable("x", "integer", 0)
        with (
            failpoints.enabled("store.apply", stall),
            grpc.insecure_channel(server.address) as channel,
        ):
            set_variable = _unary(channel, "SetVariable", pb.SetVariableResponse)
            stalled_calls = [
                set_variable.future(
                    _set_request(state.session_id, "x", n, f"held-{n}"), timeout=WAIT
                )
                for n in (1, 2)
            ]
            try:
                for _ in stalled_calls:
                    assert stalled.acquire(timeout=WAIT)
                during = Scrape(server)
                with pytest.raises(grpc.RpcError) as refused:
                    set_variable(_set_request(state.session_id, "x", 3, "third"), timeout=WAIT)
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "max_concurrent_calls" in str(refused.value.details())
            finally:
                gate.set_result(None)
            assert sorted(f.result(WAIT).version for f in stalled_calls) == [1, 2]
        after = Scrape(server)
    assert during.value("dspex_calls_in_flight") == 2
    assert during.value("dspex_rpcs_open") == 2
    reason = {"method": "SetVariable", "reason": "max_concurrent_calls"}
    assert after.value("dspex_calls_refused_total", **reason) == 1
    assert after.value("dspex_calls_total", method="SetVariable", code="RESOURCE_EXHAUSTED") == 1
    assert after.value("dspex_calls_total", method="SetVariable", code="OK") == 2


def test_calls_past_a_streams_limit_are_refused_and_counted() -> None:
    """Two calls may run on one Calls stream: of three writes held in the store, the
    third is refused (reason max_calls_per_connection), and counted as answered."""
    gate, stalled, stall = _stalling_apply()
    with (
        serve(metrics=METRICS, limits=Limits(max_calls_per_connection=2)) as server,
        BridgedState.init(address=server.address, stream=False, timeout=WAIT) as state,
    ):
        state.register_variable("x", "integer", 0)
        outbox: list[pb.CallRequest] = [
            pb.CallRequest(
                call=n,
                timeout_seconds=WAIT,
                set_variable=_set_request(state.session_id, "x", n, f"s-{n}"),
            )
            for n in (1, 2, 3)
        ]
        release = threading.Event()

        def requests() -> Iterator[pb.CallRequest]:
            yield from outbox
            release.wait(WAIT)  # the stream stays open until the answers are in

        with (
            failpoints.enabled("store.apply", stall),
            grpc.insecure_channel(server.address) as channel,
        ):
            call = channel.stream_stream(
                CALLS_METHOD,
                request_serializer=pb.CallRequest.SerializeToString,
                response_deserializer=pb.CallReply.FromString,
            )(requests(), timeout=WAIT)
            replies = iter(call)
            first = next(replies)  # the refusal comes while two are held
            for _ in range(2):
                assert stalled.acquire(timeout=WAIT)
            gate.set_result(None)
            answered = [first, next(replies), next(replies)]
            release.set()
            call.cancel()
        after = Scrape(server)
    assert first.call == 3
    assert "rule 'max_calls_per_connection'" in Status.FromString(first.error).message
    assert sorted(a.call for a in answered) == [1, 2, 3]
    reason = {"method": "SetVariable", "reason": "max_calls_per_connection"}
    assert after.value("dspex_calls_refused_total", **reason) == 1
    assert after.value("dspex_calls_total", method="SetVariable", code="RESOURCE_EXHAUSTED") == 1
    assert after.value("dspex_calls_total", method="SetVariable", code="OK") == 2


def test_calls_without_the_token_are_refused_and_counted() -> None:
    with serve(metrics=METRICS, token="s3cret") as server:
        with grpc.insecure_channel(server.address) as channel:
            get = _unary(channel, "GetVariable", pb.GetVariableResponse)
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as refused:
                    get(pb.GetVariableRequest(session_id="s", identifier="x"), timeout=WAIT)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        after = Scrape(server)
    assert (
        after.value("dspex_calls_refused_total", method="GetVariable", reason="unauthenticated")
        == 3
    )
    assert after.value("dspex_calls_total", method="GetVariable", code="UNAUTHENTICATED") == 3
    assert after.value("dspex_call_duration_seconds_count", method="GetVariable") == 3


# -- sessions, variables, watches, the store ---------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sessions_and_variables_held_and_lifecycle_events() -> None:
    clock = FakeClock()
    with serve(metrics=METRICS, session_ttl=10.0, clock=clock) as server:
        handles = [BridgedState.init(address=server.address) for _ in range(3)]
        for n, handle in enumerate(handles):
            for i in range(n + 2):  # 2, 3 and 4 variables
                handle.register_variable(f"v{i}", "integer", i)
        attached = BridgedState.init(
            address=server.address, session_id=handles[0].session_id, create=False
        )
        holding = Scrape(server)
        handles[2].cleanup()  # the owner closes it
        closed = Scrape(server)
        clock.now = 20.0
        assert len(server.reap_expired()) == 2
        expired = Scrape(server)
        for handle in (attached, *handles[:2]):
            handle.cleanup()  # nothing left to close
    assert (
        holding.gauge("dspex_sessions_open", store="memory"),
        holding.gauge("dspex_variables", store="memory"),
    ) == (3, 9)
    assert (
        closed.gauge("dspex_sessions_open", store="memory"),
        closed.gauge("dspex_variables", store="memory"),
    ) == (2, 5)
    assert expired.gauge("dspex_sessions_open", store="memory") == 0
    assert expired.by("dspex_session_lifecycle_total", "event") == {
        "created": 3,
        "attached": 1,
        "closed": 1,
        "expired": 2,
    }


def test_a_session_closed_after_crashes_is_counted() -> None:
    with (
        serve(metrics=METRICS, clock=FakeClock(), max_restarts=0) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("x", "integer", 0)
        held(server, state.session_id).actor_ref.tell(Crash("boom"))
        wait_for(
            lambda: Scrape(server).value("dspex_session_lifecycle_total", event="crashed") == 1,
            "the crash to be counted",
        )
        assert Scrape(server).gauge("dspex_sessions_open", store="memory") == 0


def test_watch_streams_and_the_events_they_send_are_counted() -> None:
    with serve(metrics=METRICS) as server, BridgedState.init(address=server.address) as state:
        state.register_variable("temperature", "float", 0.5)
        state.register_variable("other", "integer", 0)
        seen: list[Any] = []
        got = threading.Condition()

        def subscriber(event: Any) -> None:
            with got:
                seen.append(event)
                got.notify_all()

        with state.subscribe("temp*", subscriber):
            opened = Scrape(server)
            for n in range(5):
                state.set_variable("temperature", n / 10)
            with got:
                assert got.wait_for(lambda: len(seen) == 5, WAIT)
            during = Scrape(server)
        wait_for(lambda: Scrape(server).value("dspex_watch_streams_open") == 0, "the watch to end")
        after = Scrape(server)
    assert opened.value("dspex_watch_streams_open") == 1
    assert during.value("dspex_watch_events_sent_total", kind="updated") == 5
    assert after.value("dspex_calls_total", method="Watch", code="CANCELLED") == 1
    assert after.value("dspex_watch_overflows_total") == 0


def test_a_watch_resumed_from_too_far_back_counts_an_overflow() -> None:
    with (
        serve(metrics=METRICS, event_history=4) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("x", "integer", 0)
        for n in range(1, 11):
            state.set_variable("x", n)
        with grpc.insecure_channel(server.address) as channel:
            watch = channel.unary_stream(
                f"/{SERVICE}/Watch",
                request_serializer=pb.WatchRequest.SerializeToString,
                response_deserializer=pb.VariableEvent.FromString,
            )(pb.WatchRequest(session_id=state.session_id, start_sequence=1), timeout=WAIT)
            first = next(iter(watch))
            watch.cancel()
        wait_for(lambda: Scrape(server).value("dspex_watch_streams_open") == 0, "the watch to end")
        after = Scrape(server)
    assert first.kind == pb.VariableEvent.KIND_OVERFLOW
    assert after.value("dspex_watch_overflows_total") == 1
    assert after.value("dspex_watch_events_sent_total", kind="overflow") == 1


def test_a_store_failure_is_counted_and_an_answer_is_not() -> None:
    with serve(metrics=METRICS) as server, BridgedState.init(address=server.address) as state:
        state.register_variable("x", "integer", 0)
        with pytest.raises(VariableNotFound):
            state.get_variable("absent")  # an answer, not a failure
        with (
            failpoints.enabled("store.apply", failpoints.fail(RuntimeError("disk gone"))),
            pytest.raises(StateError, match="internal error"),
        ):
            state.set_variable("x", 1)
        after = Scrape(server)
    assert after.by("dspex_store_errors_total", "reason", store="memory") == {"internal": 1}
    assert (
        after.value("dspex_calls_total", method="SetVariable", code="INTERNAL")
        + after.value("dspex_calls_total", method="SetVariable", code="UNKNOWN")
        == 1
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_store_latency_is_counted_by_store_kind(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    spec = {
        "memory": lambda: "memory",
        "sqlite": lambda: f"sqlite:{tmp_path / 'sessions.db'}",
        "redis": lambda: request.getfixturevalue("redis_url"),  # skips without Redis
    }[kind]()
    with serve(metrics=METRICS, store=spec) as server:
        with BridgedState.init(address=server.address) as state:
            state.register_variable("x", "integer", 0)
            for n in range(1, 6):
                state.set_variable("x", n)
            holding = Scrape(server)
        after = Scrape(server)
    calls = sum(after.by("dspex_calls_total", "method", code="OK").values())
    assert after.value("dspex_calls_total", method="SetVariable", code="OK") == 5
    assert after.value("dspex_store_duration_seconds_count", store=kind) == calls
    assert after.buckets("dspex_store_duration_seconds", store=kind)[-1] == calls
    if kind == "redis":  # its sessions are every server's on that Redis: not counted here
        assert not holding.has("dspex_sessions_open")
        assert not holding.has("dspex_dedupe_hits_total")
    else:
        assert holding.gauge("dspex_sessions_open", store=kind) == 1
        assert holding.gauge("dspex_variables", store=kind) == 1
        assert after.gauge("dspex_sessions_open", store=kind) == 0


def test_a_repeated_request_id_counts_a_dedupe_hit() -> None:
    with (
        serve(metrics=METRICS) as server,
        BridgedState.init(address=server.address, stream=False) as state,
    ):
        state.register_variable("x", "integer", 0)
        with grpc.insecure_channel(server.address) as channel:
            set_variable = _unary(channel, "SetVariable", pb.SetVariableResponse)
            request = _set_request(state.session_id, "x", 7, "once")
            versions = [set_variable(request, timeout=WAIT).version for _ in range(3)]
        after = Scrape(server)
    assert versions == [1, 1, 1]  # applied once, answered three times
    assert after.value("dspex_dedupe_hits_total", store="memory") == 2
    assert after.value("dspex_calls_total", method="SetVariable", code="OK") == 3


# -- the endpoint itself --------------------------------------------------------------------


def test_each_server_has_its_own_registry() -> None:
    with serve(metrics=METRICS) as one, serve(metrics=METRICS) as two:
        assert one.metrics_address != two.metrics_address
        assert one.metrics_registry is not two.metrics_registry
        with BridgedState.init(address=one.address) as state:
            state.register_variable("x", "integer", 0)
        first, second = Scrape(one), Scrape(two)
    assert first.value("dspex_calls_total", method="RegisterVariable", code="OK") == 1
    assert not second.by("dspex_calls_total", "code")
    assert second.has("process_resident_memory_bytes")  # the process collector's


def test_a_server_without_metrics_has_no_endpoint() -> None:
    with serve() as server:
        assert server.metrics_address is None
        assert server.metrics_registry is None
        assert server.metrics is None


def test_a_bad_or_taken_metrics_address_is_refused_before_serving() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        serve(metrics="9464")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="could not serve metrics"):
            serve(metrics=f"127.0.0.1:{port}")


def test_without_prometheus_client_asking_for_metrics_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "dspex_actors.bridge.server.exposition", raising=False)
    monkeypatch.delattr(server_package, "exposition", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'dspex_actors\[metrics\]'"):
        serve(metrics=METRICS)  # and its store is closed: no actor is left behind


def test_metrics_listen_on_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = serve(metrics="[::1]:0")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with server:
        assert server.metrics_address is not None
        assert server.metrics_address.startswith("[::1]:")
        assert Scrape(server).has("dspex_calls_in_flight")


def test_a_server_without_metrics_loads_no_prometheus_client() -> None:
    script = (
        "import json, sys\n"
        "from dspex_actors.bridge.server.server import serve\n"
        "with serve() as server: pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    assert [m for m in loaded if m.startswith("prometheus_client")] == []


def test_the_serve_program_serves_metrics_where_it_says() -> None:
    """``dspex-actors serve --metrics 127.0.0.1:0`` prints where its metrics are, and a
    scrape there counts a call made to it."""
    with server_process("--metrics", "127.0.0.1:0") as server:
        assert server.process.stdout is not None
        line = server.process.stdout.readline().strip()
        prefix = "dspex_actors metrics on "
        assert line.startswith(prefix) and line.endswith("/metrics"), line
        with BridgedState.init(address=server.address, stream=False) as state:
            state.register_variable("temperature", "float", 0.5)
            state.get_variable("temperature")
        with urllib.request.urlopen(line[len(prefix) :], timeout=10) as answer:
            text = answer.read().decode()
    assert 'dspex_calls_total{code="OK",method="GetVariable"} 1.0' in text
