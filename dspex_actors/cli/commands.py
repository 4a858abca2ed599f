"""``get``, ``set``, ``list`` and ``info``: one session read or written, then printed.

Each opens a handle that only attaches (``create=False``: a session that does not
exist is exit status 3, never created by a read or a write), makes its call
through the public methods every program uses, and prints the answer
(:mod:`dspex_actors.cli.render`). ``set`` reads the variable's record first, to
know its type (how the text reads: :mod:`dspex_actors.cli.values`) and to say
"not found" before anything is written; ``--expected-version`` makes it a
compare-and-set, exit status 4 when the version moved.
"""

from __future__ import annotations

import argparse
from typing import Any

from dspex_actors.cli.render import as_json, bare, fields, record_rows, shown, stamp, table
from dspex_actors.cli.target import Handle, Target, session_handle, target_of
from dspex_actors.cli.values import json_metadata, typed_value

__all__ = ["backend_of", "run_get", "run_info", "run_list", "run_set"]


def run_get(args: argparse.Namespace) -> int:
    """Print one variable's value (``--json``: its whole record)."""
    with session_handle(target_of(args), args.session) as state:
        record = state.get_record(args.name)
    print(as_json(record) if args.json else bare(record["value"]))
    return 0


def run_set(args: argparse.Namespace) -> int:
    """Write one variable from its JSON text; print its new version."""
    with session_handle(target_of(args), args.session) as state:
        record = state.get_record(args.name)
        value = typed_value(record, args.value)
        metadata = json_metadata(args.name, args.metadata) if args.metadata is not None else None
        version = state.set_variable(
            args.name, value, metadata, expected_version=args.expected_version
        )
    if args.json:
        print(as_json({"name": record["name"], "id": record["id"], "version": version}))
    else:
        print(f"{record['name']} = {shown(value)} (version {version})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print the variables whose names match a glob, in creation order."""
    with session_handle(target_of(args), args.session) as state:
        records = state.list_variables(args.pattern)
    if args.json:
        print(as_json(records))
    elif records:
        for line in table(("NAME", "TYPE", "VERSION", "VALUE"), record_rows(records)):
            print(line)
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the session's metadata: variables, sequence, incarnation, TTL."""
    target = target_of(args)
    with session_handle(target, args.session) as state:
        info = state.session_info()
        backend = backend_of(target, state)
    if args.json:
        print(as_json({**info, "backend": backend}))
        return 0
    ttl = info["ttl_seconds"]
    lines = fields(
        [
            ("session", str(info["session_id"])),
            ("incarnation", str(info["incarnation"]) or "-"),
            ("variables", str(info["variable_count"])),
            ("next sequence", str(info["next_sequence"])),
            ("created", stamp(info["created_at"])),
            ("last active", stamp(info["last_active_at"])),
            ("ttl", "never expires" if ttl is None else f"{ttl:g} s after its last use"),
            ("expires", _expiry(info)),
            ("metadata", shown(info["metadata"])),
            ("backend", _backend_line(backend)),
        ]
    )
    for line in lines:
        print(line)
    return 0


def _expiry(info: dict[str, Any]) -> str:
    """When the session expires unless used again: as its store said, else its last
    use plus its TTL (this command's own calls were uses too)."""
    if info["ttl_seconds"] is None:
        return "never"
    expires = info.get("expires_at")
    return stamp(expires if expires is not None else info["last_active_at"] + info["ttl_seconds"])


def backend_of(target: Target, state: Handle) -> dict[str, Any]:
    """Where the session is, as ``info`` reports it (no token, no password)."""
    if target.kind == "redis":
        return {"kind": "redis", "url": getattr(state, "where", target.shown)}
    return {"kind": "bridged", "address": target.location, "store": getattr(state, "store", "")}


def _backend_line(backend: dict[str, Any]) -> str:
    if backend["kind"] == "redis":
        return f"Redis at {backend['url']}"
    store = f" ({backend['store']} store)" if backend["store"] else ""
    return f"SessionStore at {backend['address']}{store}"
