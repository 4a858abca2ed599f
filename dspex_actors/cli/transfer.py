"""``export`` and ``import``: a whole session to a file or a pipe, and back.

What moves is the session's export map (``export_state()``: every variable with
its id, type, constraints, value, metadata, version and timestamps), which
``import_state()`` takes back all or nothing; so ids, versions and timestamps
survive, and ``export | import`` between two servers (or a server and Redis)
leaves two sessions with the same digest.

**The format: JSON by default, msgpack on request.** JSON, because an export is
for people too: it can be read, diffed, kept in git, edited and filtered with
``jq``, and Python's json round-trips every value a session can hold exactly
(floats by their shortest repr, integers to 64 bits, NaN and infinities as
``NaN``/``Infinity``, which Python reads back but strict parsers refuse). The one
thing JSON cannot carry is bytes, which only metadata may hold: ``export`` then
refuses, naming the variable, rather than write a lossy file, and
``--format msgpack`` writes the same map as msgpack (the wire's own encoding:
exact for everything, and smaller and faster for large sessions). ``import``
tells the two apart by the first byte (a JSON export starts with ``{``), so it
needs no flag.

``import SESSION`` imports into SESSION whatever id the export was taken from.
It attaches only, unless ``--create`` (then a session it creates outlives the
command, under its store's TTL; one it created for an import that failed is
closed again). Variables that exist already are ``VariableExists`` (exit 7):
nothing is imported. A file is written whole or not at all (a temporary file
renamed over it), readable by its owner only: an export holds every prompt and
value of the session.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from typing import Any

import msgpack

from dspex_actors.cli.exits import UsageError
from dspex_actors.cli.render import as_json
from dspex_actors.cli.target import session_handle, target_of
from dspex_actors.errors import InvalidExport, ValidationError
from dspex_actors.text import describe_value

__all__ = ["FORMATS", "decoded", "encoded", "run_export", "run_import"]

FORMATS = ("json", "msgpack")
STDIO = "-"


def encoded(exported: dict[str, Any], form: str) -> bytes:
    """An export map in ``form`` (``json``, one line and a newline, or ``msgpack``);
    ``ValidationError`` (rule ``json``) naming a variable JSON cannot carry."""
    if form == "msgpack":
        packed: bytes = msgpack.packb(exported, use_bin_type=True)
        return packed
    try:
        text = json.dumps(exported, ensure_ascii=False, default=_not_json)
    except TypeError:
        raise _unencodable(exported) from None
    return (text + "\n").encode()


def _not_json(data: Any) -> Any:
    raise TypeError(f"{type(data).__name__} cannot be written as JSON")


def _unencodable(exported: dict[str, Any]) -> ValidationError:
    """The error naming the first variable (or the session's metadata) JSON cannot carry."""
    for record in exported.get("variables", {}).values():
        try:
            json.dumps(record, default=_not_json)
        except TypeError:
            name, shown = record.get("name"), describe_value(record.get("metadata"))
            return ValidationError(
                f"variable {name!r}: its metadata holds bytes, which JSON cannot carry; "
                f"export with --format msgpack, which does (rule 'json', value {shown})",
                variable=name,
                rule="json",
                value=shown,
            )
    return ValidationError(
        "the session's metadata holds data JSON cannot carry (bytes); export with "
        "--format msgpack (rule 'json')",
        rule="json",
    )


def decoded(data: bytes) -> Any:
    """The export map in ``data``, JSON or msgpack (told by its first byte);
    ``InvalidExport`` when it is neither."""
    if not data.strip():
        raise InvalidExport("the export is empty: nothing to import")
    if data.lstrip()[:1] == b"{":
        try:
            return json.loads(data)
        except ValueError as exc:
            raise InvalidExport(f"the export is not valid JSON: {exc}") from None
    try:
        return msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError) as exc:  # msgpack's own errors are ValueErrors
        raise InvalidExport(
            f"the export is neither JSON (it does not start with '{{') nor msgpack: {exc}"
        ) from None


def run_export(args: argparse.Namespace) -> int:
    """Write the session's export to a file (or stdout)."""
    with session_handle(target_of(args), args.session) as state:
        exported = state.export_state()
    data = encoded(exported, args.format)
    count = len(exported["variables"])
    if args.file == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    _write_whole(args.file, data)
    if args.json:
        print(
            as_json(
                {
                    "session_id": args.session,
                    "variables": count,
                    "format": args.format,
                    "file": args.file,
                    "bytes": len(data),
                }
            )
        )
    else:
        print(
            f"exported {count} variables of session {args.session!r} to {args.file} "
            f"({args.format}, {len(data)} bytes)"
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import an export (a file, or stdin) into a session, all or nothing."""
    if args.ttl is not None and not args.ttl >= 0:
        raise UsageError("--ttl must be 0 (never expires) or a positive number of seconds")
    target = target_of(args)
    if args.ttl is not None and (target.kind != "redis" or not args.create):
        raise UsageError("--ttl is for a session --create makes in Redis (a server uses its own)")
    data = sys.stdin.buffer.read() if args.file == STDIO else _read(args.file)
    exported = decoded(data)
    variables = exported.get("variables") if isinstance(exported, dict) else None
    count = len(variables) if isinstance(variables, dict) else 0
    options: dict[str, Any] = {}
    if args.ttl is not None:
        options["ttl"] = args.ttl or None
    with session_handle(target, args.session, create=args.create, **options) as state:
        created = state.owner
        state.import_state(exported)
    source = exported.get("session_id")
    if args.json:
        print(
            as_json(
                {
                    "session_id": args.session,
                    "variables": count,
                    "created": created,
                    "from_session_id": source,
                }
            )
        )
    else:
        made = "created, " if created else ""
        print(
            f"imported {count} variables into session {args.session!r} ({made}exported "
            f"from session {source!r})"
        )
    return 0


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _write_whole(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: a failed
    export leaves no half file."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".dspex-export-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
