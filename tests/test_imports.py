"""What importing a front end loads: only its own layers.

Each check runs in a fresh interpreter and lists the modules loaded: a client never
pays for a server, a store or ``sqlite3``, and a local program never for grpc.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _loaded(statement: str) -> set[str]:
    script = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    return set(json.loads(done.stdout))


def _under(loaded: set[str], *prefixes: str) -> list[str]:
    return sorted(m for m in loaded if m.startswith(prefixes))


def test_the_package_loads_no_grpc_redis_or_sqlite3() -> None:
    loaded = _loaded("import dspex_actors")
    assert _under(loaded, "grpc", "redis", "sqlite3", "dspex_actors.bridge.") == []


def test_bridged_state_loads_no_server_store_or_sqlite3() -> None:
    loaded = _loaded("from dspex_actors import BridgedState")
    assert "dspex_actors.bridge.client.bridged" in loaded
    assert "grpc" in loaded
    server_side = ("dspex_actors.bridge.server", "dspex_actors.stores", "dspex_actors.redis")
    assert _under(loaded, *server_side, "sqlite3", "redis") == []


def test_redis_state_loads_no_grpc_and_no_redis_py_before_a_session_opens() -> None:
    loaded = _loaded("from dspex_actors import RedisState")
    assert "dspex_actors.redis.state" in loaded
    assert _under(loaded, "grpc", "dspex_actors.bridge", "dspex_actors.stores", "sqlite3") == []
    assert "redis" not in loaded  # redis-py comes with the first session opened


def test_a_server_loads_its_store_and_no_client() -> None:
    loaded = _loaded("from dspex_actors.bridge.server.server import serve")
    assert "dspex_actors.stores.memory" in loaded
    assert _under(loaded, "dspex_actors.bridge.client") == []


def test_a_type_checker_sees_the_installed_package(tmp_path: Path) -> None:
    """After the README's editable install, mypy run outside the checkout finds the
    package and its types (an install that used an import hook hid it: "Cannot find
    implementation or library stub")."""
    program = tmp_path / "uses_it.py"
    program.write_text(
        "from dspex_actors import LocalState\n"
        "state: LocalState = LocalState.init()\n"
        "count: int = state.set_variable('x', 1)\n"
        "wrong: str = state.set_variable('x', 1)\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "mypy", "--no-incremental", "--follow-imports=silent", "--strict"),
            program.name,
        ],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Cannot find implementation" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[:-1] == [
        'uses_it.py:4: error: Incompatible types in assignment (expression has type "int", '
        'variable has type "str")  [assignment]'
    ], result.stdout
