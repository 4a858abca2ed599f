"""A Node.js client built from the .proto alone shares a session with Python.

Runs tests/interop/client.mjs (@grpc/grpc-js, @grpc/proto-loader, @msgpack/msgpack,
google-proto-files for the standard google.rpc error details); skipped where Node.js
is not installed. ``npm ci`` installs its locked dependencies whenever one of them
is missing (the first time, or after package.json gained one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dspex_actors.bridge import BridgedState, serve
from dspex_actors.errors import ValidationError

INTEROP = Path(__file__).resolve().parent / "interop"
FLOATS = [0.5, 1.0, 2.0]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js and npm are needed for the interop client",
)


@pytest.fixture(scope="module")
def node_client() -> Path:
    wanted = json.loads((INTEROP / "package.json").read_text())["dependencies"]
    if not all((INTEROP / "node_modules" / name).is_dir() for name in wanted):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=600
        )
    return INTEROP / "client.mjs"


def test_node_client_shares_a_session_with_python(node_client: Path) -> None:
    with (
        serve(token="interop-token") as server,
        BridgedState.init(address=server.address, token="interop-token") as state,
    ):
        state.register_variable("greeting", "string", "hello from python")
        state.register_variable("py_choice", "choice", 0.5, constraints={"choices": FLOATS})
        result = subprocess.run(
            ["node", str(node_client), server.address, state.session_id, "interop-token"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)

        assert seen["attached"] is True
        assert seen["greeting"] == "hello from python"
        assert seen["version"] == 1
        assert seen["read_back"] == 0.75
        check_errors(seen["invalid"], seen["conflict"])
        assert seen["listed"] == [{"name": "from_node", "type": "float", "version": 1}]
        assert seen["imported"] == 1
        assert seen["exported"] == {
            "names": ["greeting", "py_choice", "from_node", "node_choice", "node_columns"],
            "types": ["string", "choice", "float", "choice", "integer"],
            "values": ["hello from python", 1.0, 0.75, 1, 42],
            "versions": [0, 1, 1, 1, 3],
        }

        # What Node wrote, Python sees.
        assert state.get_variable("from_node") == 0.75
        [record] = state.list_variables(pattern="from_node")
        assert record["id"] == seen["var_id"]
        assert record["version"] == 1
        assert record["metadata"] == {
            "description": "written by the Node.js client",
            "source": "node",
        }
        check_choices(seen["choices"], state)
        [made] = state.list_variables(pattern="node_columns")
        assert (made["id"], made["value"], made["version"]) == ("var_" + "0" * 31 + "1", 42, 3)
        assert made["metadata"] == {"via": "columns"}
        assert made["constraints"] == {"min": 0}


def check_errors(invalid: dict[str, Any], conflict: dict[str, Any]) -> None:
    """Node read both errors from the standard rich status, and our ErrorDetail too."""
    assert invalid["code"] == "INVALID_ARGUMENT"
    assert invalid["status_code_matches"] and invalid["status_message_matches"]
    assert invalid["detail_types"] == [
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
        "dspex_actors.v1.ErrorDetail",
    ]
    # The standard details: what any gRPC client reads, without our .proto.
    assert (invalid["reason"], invalid["domain"]) == ("invalid", "dspex_actors")
    assert invalid["info"] == {
        "error_class": "ValidationError",
        "variable": "from_node",
        "rule": "max",
        "value": "5.5",
    }
    message = "variable 'from_node': above the maximum 1.0 (rule 'max', value 5.5)"
    assert invalid["violations"] == [
        {"field": "from_node", "description": message, "reason": "max"}
    ]
    # Our ErrorDetail: the exact class, message and attributes.
    assert invalid["error_class"] == "ValidationError"
    assert invalid["message"] == message
    assert invalid["details"] == {"variable": "from_node", "rule": "max", "value": 5.5}

    assert conflict["code"] == "ABORTED"
    assert conflict["detail_types"] == ["google.rpc.ErrorInfo", "dspex_actors.v1.ErrorDetail"]
    assert conflict["reason"] == "version_conflict"
    assert conflict["info"] == {
        "error_class": "VersionConflict",
        "variable": "from_node",
        "expected": "0",
        "actual": "1",
    }
    assert conflict["error_class"] == "VersionConflict"
    assert conflict["details"] == {"variable": "from_node", "expected": 0, "actual": 1}


def check_choices(seen: dict[str, Any], state: BridgedState) -> None:
    """Numeric choices match by value across languages; booleans never match numbers."""
    assert seen["one_on_the_wire"] == [1]  # msgpack's positive fixint 1: JS sends no float
    assert seen["py_choice"] == {"version": 1, "value": 1}
    assert seen["not_a_boolean"]["reason"] == "invalid"
    assert seen["not_a_boolean"]["info"]["rule"] == "choices"
    assert seen["node_choice"] == {"version": 1, "value": 1}
    # Python's float choice, set from JavaScript with the integer 1, holds the listed 1.0.
    py_choice = state.get_variable("py_choice")
    assert (type(py_choice), py_choice) == (float, 1.0)
    # Choices Node listed as whole numbers take Python's floats by value and hold the
    # listed choice.
    [node_choice] = state.list_variables(pattern="node_choice")
    assert node_choice["constraints"] == {"choices": [0.5, 1, 2]}
    assert state.get_variable("node_choice") == 1.0
    state.set_variable("node_choice", 2.0)
    stored = state.get_variable("node_choice")
    assert (type(stored), stored) == (int, 2)
    with pytest.raises(ValidationError) as caught:
        state.set_variable("node_choice", True)
    assert caught.value.rule == "choices"
