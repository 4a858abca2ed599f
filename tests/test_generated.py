"""The generated gRPC modules match the .proto: regenerate and compare byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED = REPO_ROOT / "dspex_actors" / "v1"


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
        check=True,
        cwd=REPO_ROOT,
    )
    fresh_dir = tmp_path / "dspex_actors" / "v1"
    fresh = {p.name: p.read_bytes() for p in fresh_dir.iterdir() if p.is_file()}
    committed = {
        p.name: p.read_bytes()
        for p in GENERATED.iterdir()
        if p.is_file() and p.name != "__init__.py"
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from the .proto: run `python proto/generate.py`"
