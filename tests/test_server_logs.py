"""The SessionStore's structured log lines, from a real server on loopback.

One line on ``dspex_actors.server`` per session lifecycle event (opened, closed,
expired, crashed, and a migration's pending open, import and commit) and per
refused call, each with its session id, method and reason, as logfmt in the
message and as ``record.dspex``; never a variable's value, its metadata or a
token, and a session id that could forge a line is quoted. The library adds no
handler and sets no level.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import grpc
import pytest
from bridge_support import held

from dspex_actors.bridge import BridgedState, serve
from dspex_actors.bridge.server.logs import LOGGER_NAME
from dspex_actors.messages import Crash
from dspex_actors.supervision import Supervisor
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire.forms import SERVICE

VALUE = "VALUE-never-logged-7f3a"
META = "META-never-logged-91c2"
TOKEN = "TOKEN-never-logged-4b8e"
WRONG = "WRONG-never-logged-d05f"
WAIT = 30.0


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The server's structured records, as their ``dspex`` fields."""
    return [r.dspex for r in caplog.records if r.name == LOGGER_NAME]  # type: ignore[attr-defined]


_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)(?: |$)')


def _logfmt(message: str) -> dict[str, Any]:
    """A logfmt line's pairs (a quoted value is a JSON string); the whole line must
    be pairs."""
    pairs = _PAIR.findall(message)
    assert " ".join(f"{key}={value}" for key, value in pairs) == message
    return {key: json.loads(value) if value.startswith('"') else value for key, value in pairs}


def _no_secret(caplog: pytest.LogCaptureFixture) -> None:
    for secret in (VALUE, META, TOKEN, WRONG):
        assert secret not in caplog.text


def test_each_lifecycle_event_is_one_line_with_its_session_and_method(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    with serve(session_ttl=10.0, clock=clock) as server:
        owner = BridgedState.init(address=server.address)
        owner.register_variable("secret", "string", VALUE, metadata={"note": META})
        reader = BridgedState.init(
            address=server.address, session_id=owner.session_id, create=False
        )
        idle = BridgedState.init(address=server.address)
        reader.cleanup()
        owner.cleanup()
        clock.now = 20.0
        assert server.reap_expired() == [idle.session_id]
        idle.cleanup()
    lines = _lines(caplog)
    assert [(line["event"], line["session_id"], line["method"]) for line in lines] == [
        ("session.opened", owner.session_id, "OpenSession"),
        ("session.opened", owner.session_id, "OpenSession"),
        ("session.opened", idle.session_id, "OpenSession"),
        ("session.closed", owner.session_id, "CloseSession"),
        ("session.expired", idle.session_id, "-"),
    ]
    assert [line.get("created") for line in lines[:3]] == [True, False, True]
    assert lines[4]["reason"] == "idle"
    for record in caplog.records:
        if record.name == LOGGER_NAME:
            assert record.levelno == logging.INFO
            parsed = _logfmt(record.getMessage())
            assert parsed["event"] == record.dspex["event"]  # type: ignore[attr-defined]
            assert parsed["session_id"] == record.dspex["session_id"]  # type: ignore[attr-defined]
    _no_secret(caplog)


def test_a_migration_logs_its_pending_open_import_and_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with (
        serve() as server,
        Supervisor.start(bridge_address=server.address) as supervisor,
    ):
        ctx = supervisor.start_context(session_id="moving")
        ctx.register_variable("secret", "string", VALUE, metadata={"note": META})
        ctx.register_variable("other", "integer", 1)
        ctx.ensure_bridged()
        assert ctx.get_variable("secret") == VALUE
    events = [(line["event"], line["method"]) for line in _lines(caplog)]
    assert events[:3] == [
        ("session.opened", "OpenSession"),
        ("session.imported", "ImportSession"),
        ("session.committed", "CommitSession"),
    ]
    opened, imported = _lines(caplog)[:2]
    assert opened["pending"] is True and opened["session_id"] == "moving"
    assert imported["variables"] == 2 and imported["migration"] is True
    _no_secret(caplog)


def test_a_session_closed_after_crashes_is_logged_with_the_error_class_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    def crashed() -> list[dict[str, Any]]:
        return [line for line in _lines(caplog) if line.get("reason") == "crashed"]

    with (
        serve(clock=FakeClock(), max_restarts=0) as server,
        BridgedState.init(address=server.address) as state,
    ):
        state.register_variable("x", "string", VALUE)
        held(server, state.session_id).actor_ref.tell(Crash(f"boom {VALUE}"))
        deadline = time.monotonic() + WAIT
        while not crashed():  # polled: the restart supervisor gives up in its thread
            assert time.monotonic() < deadline, "no line for the crashed session"
            time.sleep(0.01)
    [line] = crashed()
    assert line["event"] == "session.closed"
    assert line["session_id"] == state.session_id
    assert line["method"] == "-"
    assert VALUE not in str(line)


def test_refused_calls_are_logged_with_method_and_reason_never_the_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    with serve(token=TOKEN) as server, grpc.insecure_channel(server.address) as channel:
        get = channel.unary_unary(
            f"/{SERVICE}/GetVariable",
            request_serializer=pb.GetVariableRequest.SerializeToString,
            response_deserializer=pb.GetVariableResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            get(
                pb.GetVariableRequest(session_id="s", identifier="x"),
                metadata=(("authorization", f"Bearer {WRONG}"),),
                timeout=WAIT,
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    [record] = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert record.levelno == logging.WARNING
    assert record.dspex == {  # type: ignore[attr-defined]
        "event": "call.refused",
        "method": "GetVariable",
        "reason": "unauthenticated",
    }
    assert record.getMessage() == "event=call.refused method=GetVariable reason=unauthenticated"
    _no_secret(caplog)


def test_a_session_id_that_could_forge_a_line_is_quoted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    forged = 'x\nevent=session.closed session_id=victim "quoted"'
    with serve() as server, BridgedState.init(address=server.address, session_id=forged):
        pass
    records = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert [r.dspex["session_id"] for r in records] == [forged, forged]  # type: ignore[attr-defined]
    for record in records:
        message = record.getMessage()
        assert "\n" not in message
        assert _logfmt(message)["session_id"] == forged


def test_the_library_configures_no_logging() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    server_logger = logging.getLogger(LOGGER_NAME)
    with serve() as server, BridgedState.init(address=server.address):
        pass
    assert (list(root.handlers), root.level) == before
    assert server_logger.handlers == []
    assert server_logger.level == logging.NOTSET
    assert server_logger.propagate
