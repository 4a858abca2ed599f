"""A Node.js client built from the .proto alone shares a session with Python.

Runs tests/interop/client.mjs (@grpc/grpc-js, @grpc/proto-loader, @msgpack/msgpack);
skipped where Node.js is not installed. ``npm ci`` installs its locked dependencies
the first time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dspex_actors.bridge import BridgedState, serve

INTEROP = Path(__file__).resolve().parent / "interop"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js and npm are needed for the interop client",
)


@pytest.fixture(scope="module")
def node_client() -> Path:
    if not (INTEROP / "node_modules").is_dir():
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
        assert seen["invalid"] == {
            "code": "INVALID_ARGUMENT",
            "error_class": "ValidationError",
            "message": "variable 'from_node': above the maximum 1.0 (rule 'max', value 5.5)",
            "details": {"variable": "from_node", "rule": "max", "value": 5.5},
        }
        assert seen["conflict"]["code"] == "ABORTED"
        assert seen["conflict"]["error_class"] == "VersionConflict"
        assert seen["conflict"]["details"] == {"variable": "from_node", "expected": 0, "actual": 1}
        assert seen["listed"] == [{"name": "from_node", "type": "float", "version": 1}]
        assert seen["imported"] == 1
        assert seen["exported"] == {
            "names": ["greeting", "from_node", "node_columns"],
            "types": ["string", "float", "integer"],
            "values": ["hello from python", 0.75, 42],
            "versions": [0, 1, 3],
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
        [made] = state.list_variables(pattern="node_columns")
        assert (made["id"], made["value"], made["version"]) == ("var_" + "0" * 31 + "1", 42, 3)
        assert made["metadata"] == {"via": "columns"}
        assert made["constraints"] == {"min": 0}
