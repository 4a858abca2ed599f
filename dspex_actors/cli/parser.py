"""The client commands' arguments, added to ``dspex-actors`` beside ``serve`` and ``demo``.

Every client command takes the same options for where the session is and how to
print (:func:`_target_options`), before or after its own arguments, and runs
through :func:`~dspex_actors.cli.exits.guarded`, so each maps its failures to the
same exit statuses.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from dspex_actors.bridge.env import ADDRESS_ENV, TOKEN_ENV
from dspex_actors.cli.commands import run_get, run_info, run_list, run_set
from dspex_actors.cli.exits import guarded, statuses_help
from dspex_actors.cli.ping import run_ping
from dspex_actors.cli.target import REDIS_ENV
from dspex_actors.cli.transfer import FORMATS, STDIO, run_export, run_import
from dspex_actors.cli.watching import run_watch

__all__ = ["COMMANDS_HELP", "add_client_commands"]

COMMANDS_HELP = """\
  get     print a variable's value
  set     write a variable (JSON value; --expected-version for compare-and-set)
  list    list the variables whose names match a glob
  watch   print each change as it happens, until Ctrl-C, --count or --timeout
  export  write a whole session to a file or stdout (JSON, or msgpack)
  import  read an export from a file or stdin into a session
  info    a session's metadata: variables, sequence, incarnation, TTL
  ping    is the SessionStore (or Redis) there and serving?
"""
"""The client commands as the top-level help lists them."""

_WIDTH = 79


def _target_options() -> argparse.ArgumentParser:
    """The options every client command shares: where, how long, which output."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the session is")
    where.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="a SessionStore: HOST:PORT, dspex://HOST:PORT, or dspexs://HOST:PORT for TLS "
        f"(default: ${ADDRESS_ENV})",
    )
    where.add_argument(
        "--token",
        help=f"the server's token (default: ${TOKEN_ENV}; prefer the variable: a command "
        "line is visible to other users)",
    )
    where.add_argument(
        "--tls-root-cert",
        metavar="FILE",
        help="PEM certificate to trust; switches TLS on (dspexs:// alone trusts the "
        "system's roots)",
    )
    where.add_argument(
        "--redis",
        metavar="URL",
        help=f"a Redis instead, as in redis://HOST:PORT/DB (default: ${REDIS_ENV})",
    )
    where.add_argument(
        "--deadline",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long each call may take (default: 5)",
    )
    common.add_argument(
        "--json", action="store_true", help="print JSON for programs, one document a line"
    )
    return common


def _command(
    commands: Any, name: str, summary: str, description: str, examples: str, run: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, _WIDTH),
        epilog=f"examples:\n{examples}\n\n{statuses_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_target_options()],
    )
    parser.set_defaults(run=guarded(run))
    return parser


def add_client_commands(commands: Any) -> None:
    """Add ``get set list watch export import info ping`` to ``commands`` (the
    top-level parser's subparsers)."""
    get = _command(
        commands,
        "get",
        "print a variable's value",
        "Print one variable's value: a string as it is, anything else as JSON "
        "(--json: the whole record, with its version).",
        "  dspex-actors get SESSION temperature --address 127.0.0.1:50051",
        run_get,
    )
    get.add_argument("session", metavar="SESSION")
    get.add_argument("name", metavar="NAME", help="the variable's name or id")

    put = _command(
        commands,
        "set",
        "write a variable",
        "Write one variable. VALUE is JSON (0.9, 256, true, [0.1, 0.2], '\"text\"'); for "
        "a string or module variable, text that is not a JSON string is the string itself, "
        "and for a choice, text that is one of the choices is taken as it is.",
        "  dspex-actors set SESSION temperature 0.9\n"
        "  dspex-actors set SESSION style terse --expected-version 3",
        run_set,
    )
    put.add_argument("session", metavar="SESSION")
    put.add_argument("name", metavar="NAME", help="the variable's name or id")
    put.add_argument("value", metavar="VALUE", help="the new value, as JSON")
    put.add_argument(
        "--expected-version",
        type=int,
        metavar="N",
        help="write only if the variable is at version N (exit status 4 otherwise)",
    )
    put.add_argument("--metadata", metavar="JSON", help="a JSON object merged into its metadata")

    listing = _command(
        commands,
        "list",
        "list variables",
        "List the variables whose names match a glob (*, ?, [abc]; all without one), "
        "in creation order.",
        "  dspex-actors list SESSION 'temp*'",
        run_list,
    )
    listing.add_argument("session", metavar="SESSION")
    listing.add_argument("pattern", metavar="PATTERN", nargs="?", help="a glob over names")

    watch = _command(
        commands,
        "watch",
        "print each change as it happens",
        "Print each change to the variables whose names match a glob, one line each "
        "(--json: one JSON object each), until Ctrl-C, --count or --timeout. Once "
        "watching, it says so on stderr.",
        "  dspex-actors watch SESSION 'temp*'\n"
        "  dspex-actors watch SESSION --json --count 1 --timeout 30",
        run_watch,
    )
    watch.add_argument("session", metavar="SESSION")
    watch.add_argument("pattern", metavar="PATTERN", nargs="?", help="a glob over names")
    watch.add_argument("--count", type=int, metavar="N", help="stop after N changes")
    watch.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after this long")
    watch.add_argument(
        "--start",
        type=int,
        metavar="SEQUENCE",
        help="begin from this event sequence, if still kept (default: from now)",
    )

    export = _command(
        commands,
        "export",
        "write a whole session to a file or stdout",
        "Write the session's export (every variable with its id, type, constraints, "
        "value, metadata, version and timestamps) to FILE, or stdout. JSON by default; "
        "msgpack carries bytes in metadata, which JSON cannot.",
        "  dspex-actors export SESSION backup.json\n"
        "  dspex-actors export S --address A:1 | dspex-actors import S --address B:2 --create",
        run_export,
    )
    export.add_argument("session", metavar="SESSION")
    export.add_argument("file", metavar="FILE", nargs="?", default=STDIO, help="- for stdout")
    export.add_argument("--format", choices=FORMATS, default="json", help="(default: json)")

    load = _command(
        commands,
        "import",
        "read an export into a session",
        "Import an export (JSON or msgpack, told apart by its first byte) from FILE or "
        "stdin into SESSION, all or nothing, with ids, versions and timestamps kept. "
        "The session must exist unless --create; one --create makes outlives the command.",
        "  dspex-actors import SESSION backup.json --create",
        run_import,
    )
    load.add_argument("session", metavar="SESSION")
    load.add_argument("file", metavar="FILE", nargs="?", default=STDIO, help="- for stdin")
    load.add_argument("--create", action="store_true", help="create the session if absent")
    load.add_argument(
        "--ttl",
        type=float,
        metavar="SECONDS",
        help="with --create on Redis: how long the session lives unused (0: for ever; "
        "default: 3600)",
    )

    info = _command(
        commands,
        "info",
        "a session's metadata",
        "Print a session's metadata: its variables, next event sequence, incarnation, "
        "times and TTL, and where it is kept. (Reading it is a use: it renews the TTL.)",
        "  dspex-actors info SESSION --redis redis://127.0.0.1:6379/0",
        run_info,
    )
    info.add_argument("session", metavar="SESSION")

    _command(
        commands,
        "ping",
        "is the server there and serving?",
        "Ask a SessionStore's health service (or send Redis a PING) once, within the "
        "deadline; exit status 0 when it serves, 5 when not.",
        "  dspex-actors ping --address 127.0.0.1:50051",
        run_ping,
    )
