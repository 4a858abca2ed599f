"""The client commands (``dspex-actors get/set/list/info/ping/export/import``), run
in this process through ``main()`` against real SessionStore servers on loopback
and a real redis-server: what they print for people and with ``--json``, and the
exit status of each failure a script tests. ``tests/test_cli_processes.py`` runs
the installed command as separate processes (watch, pipes, Ctrl-C)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bridge_support import ServerProcess, server_process
from redis_support import free_port

from dspex_actors.__main__ import main
from dspex_actors.bridge import BridgedState, serve
from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV
from dspex_actors.cli.exits import EXIT_CODES, Exit, exit_status
from dspex_actors.cli.target import REDIS_ENV
from dspex_actors.errors import (
    AttributeNotFound,
    BridgeUnavailable,
    LimitExceeded,
    SessionNotFound,
)
from dspex_actors.redis.state import RedisState

TENSOR = {"shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}


@dataclass
class Ran:
    status: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def no_target_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ADDRESS_ENV, TOKEN_ENV, REDIS_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A ``dspex-actors serve`` process (an in-process server's actors would outlive
    each test, which the leak check refuses)."""
    with server_process() as running:
        yield running


@pytest.fixture
def session(server: ServerProcess) -> Iterator[BridgedState]:
    """A session of every kind of variable, owned (and closed) by the test."""
    with BridgedState.init(address=server.address) as state:
        state.register_variable("temperature", "float", 0.7, constraints={"min": 0, "max": 2})
        state.register_variable("max_tokens", "integer", 256)
        state.register_variable(
            "style", "choice", "terse", constraints={"choices": ["terse", "1"]}
        )
        state.register_variable("prompt", "string", "hello", metadata={"by": "test"})
        state.register_variable("module", "module", "Predict")
        state.register_variable("verbose", "boolean", False)
        state.register_variable("vector", "embedding", [0.25, -1.5])
        state.register_variable("weights", "tensor", TENSOR)
        yield state


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str) -> Ran:
        status = main(list(args))
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)

    return run


def on(state: BridgedState, *args: str) -> list[str]:
    """``args`` with the session's id first and the address its server's."""
    return [args[0], state.session_id, *args[1:], "--address", state.address]


# -- what they print ------------------------------------------------------------------------


def test_get_prints_the_bare_value_and_with_json_the_record(cli: Any, session: Any) -> None:
    assert cli(*on(session, "get", "temperature")) == Ran(0, "0.7\n", "")
    assert cli(*on(session, "get", "prompt")).out == "hello\n"  # a string without quotes
    assert cli(*on(session, "get", "weights")).out == json.dumps(TENSOR) + "\n"
    record = cli(*on(session, "get", "prompt", "--json")).json()
    assert record == dict(session.get_record("prompt"))
    assert record["metadata"] == {"by": "test"} and record["version"] == 0


def test_set_reads_json_and_prints_the_new_version(cli: Any, session: Any) -> None:
    assert cli(*on(session, "set", "temperature", "0.9")) == Ran(
        0, "temperature = 0.9 (version 1)\n", ""
    )
    assert session.get_variable("temperature") == 0.9
    ran = cli(*on(session, "set", "vector", "[1, 2.5]", "--json"))
    assert ran.json() == {"name": "vector", "id": session.get_record("vector").id, "version": 1}
    assert session.get_variable("vector") == [1.0, 2.5]
    cli(*on(session, "set", "weights", json.dumps({"shape": [1], "data": [9.0]})))
    cli(*on(session, "set", "verbose", "true"))
    cli(*on(session, "set", "max_tokens", "512", "--metadata", '{"by": "cli"}'))
    assert session.get_variables(["weights", "verbose"]) == {
        "weights": {"shape": [1], "data": [9.0]},
        "verbose": True,
    }
    assert session.get_record("max_tokens").metadata == {"by": "cli"}


def test_strings_need_no_quotes_and_json_strings_work_too(cli: Any, session: Any) -> None:
    cli(*on(session, "set", "prompt", "be brief"))
    assert session.get_variable("prompt") == "be brief"
    cli(*on(session, "set", "prompt", '"quoted"'))
    assert session.get_variable("prompt") == "quoted"
    assert cli(*on(session, "set", "prompt", "123")).out == 'prompt = "123" (version 3)\n'
    assert session.get_variable("prompt") == "123"  # a string variable: the text itself
    cli(*on(session, "set", "module", "ChainOfThought"))
    assert session.get_variable("module") == "ChainOfThought"
    cli(*on(session, "set", "style", "1"))  # a listed string choice, not the number 1
    assert session.get_variable("style") == "1"


def test_list_prints_a_table_in_creation_order_and_json_records(cli: Any, session: Any) -> None:
    ran = cli(*on(session, "list", "t*"))
    assert ran.status == 0
    assert ran.out.splitlines() == [
        "NAME         TYPE   VERSION  VALUE",
        "temperature  float  0        0.7",
    ]
    everything = cli(*on(session, "list", "--json")).json()
    assert [r["name"] for r in everything] == [r["name"] for r in session.list_variables()]
    assert everything == [dict(r) for r in session.list_variables()]
    assert cli(*on(session, "list", "nothing*")) == Ran(0, "", "")
    assert cli(*on(session, "list", "nothing*", "--json")) == Ran(0, "[]\n", "")


def test_info_shows_the_sessions_metadata(cli: Any, session: Any) -> None:
    info = cli(*on(session, "info", "--json")).json()
    expected = session.session_info()
    assert {k: info[k] for k in expected if k != "last_active_at"} == {
        k: v for k, v in expected.items() if k != "last_active_at"
    }
    assert info["variable_count"] == 8
    assert info["backend"] == {"kind": "bridged", "address": session.address, "store": "memory"}
    lines = dict(
        line.split(None, 1)
        for line in cli(*on(session, "info")).out.splitlines()
        if not line.startswith(("next", "last"))
    )
    assert lines["session"] == session.session_id
    assert lines["incarnation"] == session.incarnation
    assert lines["variables"] == "8"
    assert lines["ttl"] == "3600 s after its last use"
    assert lines["backend"] == f"SessionStore at {session.address} (memory store)"


def test_ping_asks_the_health_service(cli: Any, server: ServerProcess) -> None:
    ran = cli("ping", "--address", server.address)
    assert ran.status == 0
    assert ran.out.startswith(f"SessionStore at {server.address}: SERVING (")
    answer = cli("ping", "--address", server.address, "--json").json()
    assert answer["status"] == "SERVING" and answer["kind"] == "bridge"


def test_the_address_and_token_come_from_the_environment(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        serve(token="s3cret-t0ken") as guarded,
        BridgedState.init(address=guarded.address, token="s3cret-t0ken") as state,
    ):
        state.register_variable("a", "integer", 1)
        monkeypatch.setenv(ADDRESS_ENV, guarded.address)
        monkeypatch.setenv(TOKEN_ENV, "s3cret-t0ken")
        assert cli("get", state.session_id, "a") == Ran(0, "1\n", "")
        # A wrong token: exit 8, and no token (right or wrong) is ever printed.
        for extra in ([], ["--json"]):
            ran = cli("get", state.session_id, "a", "--token", "wr0ng-t0ken", *extra)
            assert ran.status == Exit.DENIED
            assert "t0ken" not in ran.out + ran.err
        monkeypatch.delenv(TOKEN_ENV)
        ran = cli("set", state.session_id, "a", "2")
        assert ran.status == Exit.DENIED and "t0ken" not in ran.err
        assert state.get_variable("a") == 1


# -- exit statuses ----------------------------------------------------------------------------


def test_not_found_is_3(cli: Any, session: Any, server: ServerProcess) -> None:
    ran = cli(*on(session, "get", "nope"))
    assert ran == Ran(
        3, "", f"dspex-actors get: variable 'nope' not found in session {session.session_id!r}\n"
    )
    ran = cli("get", "no-such-session", "a", "--address", server.address, "--json")
    assert ran.status == Exit.NOT_FOUND
    error = json.loads(ran.err)
    assert error["error"] == "SessionNotFound" and error["exit_status"] == 3
    assert error["details"]["session_id"] == "no-such-session"
    # A read never creates the session it does not find.
    with pytest.raises(SessionNotFound):
        BridgedState.init(address=server.address, session_id="no-such-session", create=False)


def test_a_version_conflict_is_4_and_writes_nothing(cli: Any, session: Any) -> None:
    session.set_variable("temperature", 1.0)
    ran = cli(*on(session, "set", "temperature", "1.5", "--expected-version", "0"))
    assert ran.status == Exit.CONFLICT
    assert "expected version 0 but it is at version 1" in ran.err
    assert session.get_variable("temperature") == 1.0
    assert cli(*on(session, "set", "temperature", "1.5", "--expected-version", "1")).status == 0


def test_an_unreachable_server_is_5(cli: Any) -> None:
    address = f"127.0.0.1:{free_port()}"
    for args in (["get", "s", "a"], ["set", "s", "a", "1"], ["ping"], ["info", "s"]):
        ran = cli(*args, "--address", address, "--deadline", "1")
        assert ran.status == Exit.UNREACHABLE, ran
        assert f"SessionStore at {address}" in ran.err and "unreachable" in ran.err
        assert ran.err.count("\n") == 1 and "Traceback" not in ran.err


def test_a_value_that_is_not_json_is_6_naming_the_variable_and_value(
    cli: Any, session: Any
) -> None:
    ran = cli(*on(session, "set", "temperature", "warm"))
    assert ran.status == Exit.INVALID
    assert ran.err.startswith(
        "dspex-actors set: variable 'temperature' (float): 'warm' is not JSON"
    )
    assert "(rule 'json', value 'warm')" in ran.err
    error = json.loads(cli(*on(session, "set", "max_tokens", "lots", "--json")).err)
    assert error["error"] == "ValidationError" and error["exit_status"] == 6
    assert error["details"] == {"variable": "max_tokens", "rule": "json", "value": "lots"}
    # Valid JSON of the wrong type, or out of bounds: the session's own refusal, also 6.
    ran = cli(*on(session, "set", "temperature", "3"))
    assert (ran.status, "rule 'max'" in ran.err) == (Exit.INVALID, True)
    ran = cli(*on(session, "set", "style", "chatty"))
    assert (ran.status, "rule 'choices'" in ran.err) == (Exit.INVALID, True)
    ran = cli(*on(session, "set", "prompt", "x", "--metadata", "[1]"))
    assert (ran.status, "rule 'metadata'" in ran.err) == (Exit.INVALID, True)
    assert all(record.version == 0 for record in session.list_variables())  # nothing written


def test_usage_mistakes_are_2(cli: Any, server: ServerProcess) -> None:
    nowhere = cli("get", "s", "a")
    assert nowhere.status == Exit.USAGE and "--address HOST:PORT" in nowhere.err
    both = cli("get", "s", "a", "--address", server.address, "--redis", "redis://h:1/0")
    assert both.status == Exit.USAGE and "not both" in both.err
    bad = cli("get", "s", "a", "--address", "localhost")
    assert bad.status == Exit.USAGE and "needs a host and a port" in bad.err
    assert cli("watch", "s", "--address", server.address, "--count", "0").status == 2
    with pytest.raises(SystemExit) as caught:  # argparse's own refusals: 2 as well
        main(["set", "s", "a"])
    assert caught.value.code == 2


def test_one_table_maps_errors_to_statuses() -> None:
    classes = [cls for cls, _ in EXIT_CODES]
    for i, cls in enumerate(classes):  # a subclass before its base, or it is never met
        assert not any(issubclass(cls, earlier) for earlier in classes[:i]), cls
    not_failures = {Exit.OK, Exit.ERROR, Exit.TIMED_OUT, Exit.INTERRUPTED, Exit.BROKEN_PIPE}
    assert {status for _, status in EXIT_CODES} == set(Exit) - not_failures
    assert exit_status(AttributeNotFound("gone")) == Exit.NOT_FOUND
    assert exit_status(BridgeUnavailable("down")) == Exit.UNREACHABLE  # an OSError too
    assert exit_status(LimitExceeded("big")) == Exit.ERROR


# -- export and import ---------------------------------------------------------------------


def test_export_to_a_file_and_import_it_with_ids_versions_and_times(
    cli: Any, session: Any, server: ServerProcess, tmp_path: Path
) -> None:
    session.set_variable("temperature", 1.25, {"tuned": True})
    for form in ("json", "msgpack"):
        path = tmp_path / f"export.{form}"
        ran = cli(*on(session, "export", str(path), "--format", form))
        assert ran.status == 0 and ran.out.startswith("exported 8 variables of session")
        copy = f"copy-{form}"
        ran = cli("import", copy, str(path), "--address", server.address, "--create", "--json")
        assert ran.json() == {
            "session_id": copy,
            "variables": 8,
            "created": True,
            "from_session_id": session.session_id,
        }
        with BridgedState.init(address=server.address, session_id=copy, create=False) as made:
            assert made.digest() == session.digest()  # ids, versions, times, all of it
            made.owner = True  # the test closes what the command left
    assert (tmp_path / "export.json").read_text().startswith('{"session_id": ')


def test_import_refuses_what_exists_and_a_malformed_export(
    cli: Any, session: Any, server: ServerProcess, tmp_path: Path
) -> None:
    path = tmp_path / "export.json"
    cli(*on(session, "export", str(path)))
    ran = cli(*on(session, "import", str(path)))
    assert ran.status == Exit.EXISTS and "already exists" in ran.err
    assert cli("import", "absent", str(path), "--address", server.address).status == 3
    (tmp_path / "bad.json").write_text('{"variables": {}}')
    ran = cli(
        "import", "half", str(tmp_path / "bad.json"), "--address", server.address, "--create"
    )
    assert ran.status == Exit.INVALID and "export is missing" in ran.err
    # The session --create made for the failed import was closed again.
    assert cli("info", "half", "--address", server.address).status == Exit.NOT_FOUND
    (tmp_path / "junk").write_bytes(b"\xc1 not an export")
    ran = cli("import", "x", str(tmp_path / "junk"), "--address", server.address, "--create")
    assert ran.status == Exit.INVALID and "neither JSON" in ran.err
    missing = cli("import", "x", str(tmp_path / "none"), "--address", server.address)
    assert missing.status == Exit.ERROR and "No such file" in missing.err


def test_json_refuses_bytes_and_msgpack_carries_them(
    cli: Any, session: Any, server: ServerProcess, tmp_path: Path
) -> None:
    session.set_variable("prompt", "hi", {"raw": b"\x00\xff"})
    path = tmp_path / "export"
    ran = cli(*on(session, "export", str(path)))
    assert ran.status == Exit.INVALID and "variable 'prompt'" in ran.err
    assert "--format msgpack" in ran.err and not path.exists()
    assert cli(*on(session, "export", str(path), "--format", "msgpack")).status == 0
    assert cli("import", "bytes", str(path), "--address", server.address, "--create").status == 0
    with BridgedState.init(address=server.address, session_id="bytes", create=False) as made:
        assert made.get_record("prompt").metadata == {"by": "test", "raw": b"\x00\xff"}
        assert made.digest() == session.digest()
        made.owner = True
    shown = cli(*on(session, "get", "prompt", "--json")).json()
    assert shown["metadata"]["raw"] == {"$base64": "AP8="}


# -- Redis ----------------------------------------------------------------------------------


def test_a_redis_url_run(
    cli: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with RedisState.init(url=redis_url) as state:
        state.register_variable("temperature", "float", 0.7)
        state.register_variable("style", "string", "terse")
        sid = state.session_id
        assert cli("get", sid, "temperature", "--redis", redis_url) == Ran(0, "0.7\n", "")
        monkeypatch.setenv(REDIS_ENV, redis_url)
        assert cli("set", sid, "style", "verbose").out == 'style = "verbose" (version 1)\n'
        assert state.get_variable("style") == "verbose"
        assert cli("set", sid, "style", "x", "--expected-version", "0").status == Exit.CONFLICT
        assert [r["name"] for r in cli("list", sid, "t*", "--json").json()] == ["temperature"]
        info = cli("info", sid, "--json").json()
        assert info["variable_count"] == 2 and info["incarnation"] == state.incarnation
        assert info["backend"] == {"kind": "redis", "url": redis_url}
        assert cli("get", sid, "nope").status == Exit.NOT_FOUND
        assert cli("get", f"absent-{sid}", "x").status == Exit.NOT_FOUND
        assert cli("ping").out.startswith(f"Redis at {redis_url}: PONG (")
        ran = cli("ping", "--redis", f"redis://127.0.0.1:{free_port()}/0", "--deadline", "1")
        assert ran.status == Exit.UNREACHABLE and "unreachable" in ran.err
        # Into a new Redis session that never expires, through a file.
        path, copy = str(tmp_path / "export.json"), f"copy-{sid}"
        assert cli("export", sid, path).status == 0
        assert cli("import", copy, path, "--ttl", "0").status == Exit.USAGE  # not --create
        assert cli("import", copy, path, "--create", "--ttl", "0").status == 0
        with RedisState.init(url=redis_url, session_id=copy, create=False) as made:
            assert made.digest() == state.digest()
            assert made.ttl_seconds is None
            made.owner = True  # the test removes what the command left


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_with_a_root_certificate(cli: Any, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert)),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    with (
        serve(tls_cert=cert, tls_key=key) as server,
        BridgedState.init(address=server.address, tls_root_cert=cert) as state,
    ):
        state.register_variable("a", "string", "over tls")
        secure = f"dspexs://{server.address}"
        trusted = ["--address", secure, "--tls-root-cert", str(cert)]
        assert cli("get", state.session_id, "a", *trusted).out == "over tls\n"
        assert cli("ping", *trusted).out.startswith(f"SessionStore at {secure}: SERVING")
        plain = cli("get", state.session_id, "a", "--address", server.address, "--deadline", "1")
        assert plain.status == Exit.UNREACHABLE
