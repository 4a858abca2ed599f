"""Structural rules of the package, checked by reading its source.

Each operation is one typed message (no string-tagged tuples), no private part of
grpcio or Pykka is imported, and supervision code never branches on a concrete
backend class: these held by review once and are kept by this test.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dspex_actors"
SOURCES = {
    path.relative_to(PACKAGE).as_posix(): path.read_text()
    for path in PACKAGE.rglob("*.py")
    if "v1" not in path.relative_to(PACKAGE).parts  # generated code
}


def _hits(pattern: str, files: dict[str, str] = SOURCES) -> list[str]:
    found = re.compile(pattern)
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in files.items()
        for number, line in enumerate(text.splitlines(), 1)
        if found.search(line)
    ]


def test_no_string_tagged_operation_tuples() -> None:
    operations = "register|set|update|delete|import|get|get_many|list|export|seal|close"
    assert _hits(rf"""\(\s*["']({operations})["']\s*,""") == []


def test_no_private_parts_of_grpc_or_pykka() -> None:
    assert _hits(r"\b(grpc|pykka)\._[a-z]") == []


def test_supervision_never_branches_on_a_concrete_backend() -> None:
    supervision = {name: SOURCES[name] for name in ("supervision.py", "restarts.py")}
    assert _hits(r"isinstance\([^)]*\b(LocalState|BridgedState)\b", supervision) == []


def test_the_sources_were_read() -> None:
    assert {"messages.py", "session.py", "supervision.py", "bridge/server/server.py"} <= set(
        SOURCES
    )
