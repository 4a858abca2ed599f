"""The command line: ``dspex-actors`` (installed with the package) or
``python -m dspex_actors``.

``demo`` walks a session from local to shared (the README's first command).
``serve`` runs a SessionStore until SIGTERM or SIGINT, then stops gracefully (calls in
flight get ``--grace`` seconds) and exits 0. ``--store`` says where its sessions live:
``memory`` (the default; they end with the server), ``sqlite:PATH`` (kept in that
file across restarts) or ``redis://HOST:PORT/DB`` (kept in Redis, where every server
on it serves them). It prints one line,
``dspex_actors SessionStore listening on HOST:PORT``, once it accepts calls, so a
parent process that asked for port 0 can read the real port (and, with
``--metrics HOST:PORT``, ``dspex_actors metrics on http://HOST:PORT/metrics``).

The client commands (``get``, ``set``, ``list``, ``watch``, ``export``, ``import``,
``info``, ``ping``) read, write and watch a session on a server or in Redis; they
live in :mod:`dspex_actors.cli`, with their exit statuses.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from dspex_actors.bridge.env import TOKEN_ENV
from dspex_actors.bridge.server.server import Limits, serve
from dspex_actors.cli.parser import COMMANDS_HELP, add_client_commands
from dspex_actors.errors import StateError

__all__ = ["main"]

DEFAULT_LISTEN = "127.0.0.1:50051"
SWITCH_INTERVAL = 0.001
"""Seconds between GIL hand-overs in the server program (Python's default: 0.005)."""

logger = logging.getLogger("dspex_actors.serve")


def _serve(args: argparse.Namespace) -> int:
    """Run a SessionStore in the foreground until a stop signal arrives."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The server's event loop answers every session; bulk work (a large listing or
    # export) runs beside it in a thread. Handing the GIL over every 1 ms instead
    # of Python's 5 ms cuts what each wake of the loop may wait behind that thread.
    sys.setswitchinterval(SWITCH_INTERVAL)
    stop = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only flag it here: logging from a signal handler could meet its own lock.
        received.append(signum)
        stop.set()

    # Handlers go in before the server starts, so an early signal is not lost.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = serve(
                args.listen,
                # An explicit --token "" is refused by serve(), not taken for "none".
                token=args.token if args.token is not None else os.environ.get(TOKEN_ENV),
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                session_ttl=args.ttl,
                max_sessions=args.max_sessions,
                max_variables_per_session=args.max_variables,
                max_value_bytes=args.max_value_bytes,
                max_message_bytes=args.max_message_bytes,
                max_concurrent_calls=args.max_concurrent_calls,
                allow_remote_without_token=args.allow_remote_without_token,
                store=args.store,
                metrics=args.metrics,
            )
        except (OSError, RuntimeError, ValueError, StateError, ImportError) as exc:
            print(f"dspex_actors serve: {exc}", file=sys.stderr)
            return 1
        print(f"dspex_actors SessionStore listening on {server.address}", flush=True)
        if server.metrics_address is not None:
            print(f"dspex_actors metrics on http://{server.metrics_address}/metrics", flush=True)
        stop.wait()
        logger.info("received %s, stopping", signal.Signals(received[0]).name)
        server.stop(grace=args.grace)
        logger.info("stopped")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _demo(args: argparse.Namespace) -> int:
    from dspex_actors import demo

    demo.run()
    return 0


_DESCRIPTION = """\
Per-session typed variables, held by one actor per session, shared over gRPC.

commands:
  serve   run a SessionStore server until SIGTERM or SIGINT (then stop gracefully);
          it prints "dspex_actors SessionStore listening on HOST:PORT" once it
          accepts calls
  demo    a session going from local to shared, in a minute

client commands (on a server: --address or $DSPEX_BRIDGE_ADDRESS; on Redis: --redis
or $DSPEX_REDIS_URL; --json for programs; see COMMAND --help for exit statuses):
"""

_STORE_HELP = (
    "where sessions live: 'memory' (they end with the server), 'sqlite:PATH' (kept in "
    "that file across restarts; add '?synchronous=full' to sync every write to disk) or "
    "'redis://HOST:PORT/DB' (kept in Redis, shared by every server on it; needs the "
    "redis extra), 'redis+sentinel://HOST:PORT[,...]/SERVICE[/DB]' or "
    "'redis+cluster://HOST:PORT[,...]' (add '?wait=N' to wait for N replicas)"
)


class _Defaults(argparse.HelpFormatter):
    """Help that shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        return f"{action.help} (default: %(default)s)" if shown else action.help


def _parser() -> argparse.ArgumentParser:
    from dspex_actors import __version__

    parser = argparse.ArgumentParser(
        prog="dspex-actors",
        description=_DESCRIPTION + COMMANDS_HELP,
        epilog="Also run as: python -m dspex_actors COMMAND",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dspex-actors {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_command = commands.add_parser(
        "serve",
        help="run a SessionStore server",
        description="Run a SessionStore: sessions shared over gRPC.",
        formatter_class=_Defaults,
    )
    serve_command.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="address to listen on (port 0 picks a free port)",
    )
    serve_command.add_argument(
        "--token",
        help=f"shared secret every call must carry (default: ${TOKEN_ENV}, or none; "
        "prefer the variable: a command line is visible to other users)",
    )
    serve_command.add_argument(
        "--tls-cert", metavar="FILE", help="PEM certificate chain (with --tls-key)"
    )
    serve_command.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key (with --tls-cert)"
    )
    serve_command.add_argument("--store", default="memory", metavar="SPEC", help=_STORE_HELP)
    serve_command.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one; "
        "needs the metrics extra)",
    )
    serve_command.add_argument(
        "--ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long an idle session lives",
    )
    serve_command.add_argument(
        "--max-sessions", type=int, default=Limits.max_sessions, help="sessions held at once"
    )
    serve_command.add_argument(
        "--max-variables",
        type=int,
        default=Limits.max_variables_per_session,
        help="variables per session",
    )
    serve_command.add_argument(
        "--max-value-bytes",
        type=int,
        default=Limits.max_value_bytes,
        help="encoded size of one value",
    )
    serve_command.add_argument(
        "--max-message-bytes",
        type=int,
        default=Limits.max_message_bytes,
        help="encoded size of one request or reply",
    )
    serve_command.add_argument(
        "--max-concurrent-calls",
        type=int,
        default=Limits.max_concurrent_calls,
        help="calls served at once; more are refused (RESOURCE_EXHAUSTED)",
    )
    serve_command.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long calls in flight may finish on shutdown",
    )
    serve_command.add_argument(
        "--allow-remote-without-token",
        action="store_true",
        help="serve a non-loopback address without a token (not recommended)",
    )
    serve_command.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="what the server logs",
    )
    serve_command.set_defaults(run=_serve)

    demo_command = commands.add_parser(
        "demo",
        help="show a session going from local to shared",
        description="Sessions, typed variables, a validation error, the switch to the "
        "bridge, and a second process changing a variable.",
    )
    demo_command.set_defaults(run=_demo)

    add_client_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
