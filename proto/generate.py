"""Regenerate dspex_actors/v1/ from proto/: the one command, ``python proto/generate.py``.

The ``.proto`` sits at a path mirroring its package (``proto/dspex_actors/v1/``) and is
compiled with ``-I proto``, so the generated modules import each other absolutely with
no post-processing. ``grpcio-tools`` is pinned in pyproject.toml: the output depends on
its version, and tests/test_generated.py fails when the committed code differs.

``--out DIR`` writes the package tree under DIR instead of the repository (the test uses it).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PROTO_FILES = ("dspex_actors/v1/session_store.proto",)


def generate(out_root: Path) -> None:
    """Compile every file of PROTO_FILES into ``out_root`` (mirroring the package)."""
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(PROTO_ROOT / name) for name in PROTO_FILES),
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="root to write into")
    options = parser.parse_args(argv)
    generate(options.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
