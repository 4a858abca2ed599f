"""Exit statuses of the client commands, and the one place a failure becomes one.

A script tests ``$?``: each failure a caller can act on differently has a status of
its own, chosen by the class of the ``dspex_actors.errors`` exception the command
met, through :data:`EXIT_CODES` (the first class that matches wins, so a subclass
is listed before its base). :func:`guarded` wraps every client command: it prints
the failure as one line on stderr (a JSON object with ``--json``) and never a
traceback for a failure the table knows, and it ends a command interrupted by
Ctrl-C with 130, as a shell does.
"""

from __future__ import annotations

import argparse
import base64
import enum
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from dspex_actors.errors import (
    BridgeUnavailable,
    InvalidExport,
    OutcomeUnknown,
    SessionNotFound,
    StateError,
    Unauthenticated,
    ValidationError,
    VariableExists,
    VariableNotFound,
    VersionConflict,
)

__all__ = ["EXIT_CODES", "Exit", "UsageError", "exit_status", "guarded", "statuses_help"]


class UsageError(Exception):
    """The command line asks for something it cannot mean (no target, two targets, a
    malformed address): exit status 2, as for arguments argparse refuses."""


class Exit(enum.IntEnum):
    """The exit statuses of the client commands."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNREACHABLE = 5
    INVALID = 6
    EXISTS = 7
    DENIED = 8
    OUTCOME_UNKNOWN = 9
    TIMED_OUT = 124
    INTERRUPTED = 130
    BROKEN_PIPE = 141


EXIT_CODES: tuple[tuple[type[BaseException], Exit], ...] = (
    (UsageError, Exit.USAGE),
    (VariableNotFound, Exit.NOT_FOUND),
    (SessionNotFound, Exit.NOT_FOUND),
    (VersionConflict, Exit.CONFLICT),
    (BridgeUnavailable, Exit.UNREACHABLE),  # before OSError: it is a ConnectionError too
    (ValidationError, Exit.INVALID),
    (InvalidExport, Exit.INVALID),
    (VariableExists, Exit.EXISTS),
    (Unauthenticated, Exit.DENIED),
    (OutcomeUnknown, Exit.OUTCOME_UNKNOWN),
)
"""Failure class -> exit status; anything else a command reports is ``Exit.ERROR``."""

_MEANINGS = {
    Exit.OK: "done",
    Exit.ERROR: "any other error (a file that cannot be read, a limit, ...)",
    Exit.USAGE: "the command line is wrong (unknown option, no address, bad address)",
    Exit.NOT_FOUND: "no such session or variable (or the watched session ended)",
    Exit.CONFLICT: "version conflict: --expected-version did not match",
    Exit.UNREACHABLE: "the server or Redis could not be reached (nothing was written)",
    Exit.INVALID: "a value, a JSON text or an export that breaks a rule (nothing written)",
    Exit.EXISTS: "a variable the import brings exists already (nothing imported)",
    Exit.DENIED: "the server refused the token",
    Exit.OUTCOME_UNKNOWN: "a write got no answer: it may or may not have been applied",
    Exit.TIMED_OUT: "watch --timeout ended before --count events came",
    Exit.INTERRUPTED: "stopped by Ctrl-C (SIGINT)",
    Exit.BROKEN_PIPE: "the reader of the output went away",
}


def statuses_help() -> str:
    """The exit statuses as ``--help`` lists them."""
    lines = [f"  {int(code):>3}  {meaning}" for code, meaning in _MEANINGS.items()]
    return "exit status:\n" + "\n".join(lines)


def exit_status(exc: BaseException) -> Exit:
    """The exit status a failure stands for (:data:`EXIT_CODES`)."""
    for cls, status in EXIT_CODES:
        if isinstance(exc, cls):
            return status
    return Exit.ERROR


Command = Callable[[argparse.Namespace], int]


def guarded(command: Command) -> Command:
    """``command`` with its failures turned into exit statuses and one-line reports.

    Known failures (the package's errors, usage mistakes, files and sockets the OS
    refused, a missing extra) are reported without a traceback; anything else is a
    bug and keeps its traceback. Ctrl-C ends with 130, a closed output pipe with
    141, quietly.
    """

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except KeyboardInterrupt:
            return Exit.INTERRUPTED
        except BrokenPipeError:
            _silence_stdout()
            return Exit.BROKEN_PIPE
        except (StateError, UsageError, OSError, ImportError) as exc:
            status = exit_status(exc)
            _report(args, exc, status)
            return status

    return run


def _report(args: argparse.Namespace, exc: BaseException, status: Exit) -> None:
    """One line on stderr: the command and the message, or a JSON object with
    ``--json`` (the error's class, reason, message, status and details)."""
    command = getattr(args, "command", "") or ""
    message = str(exc) or type(exc).__name__
    if getattr(args, "json", False):
        report: dict[str, Any] = {
            "error": type(exc).__name__,
            "reason": getattr(exc, "reason", "usage" if status == Exit.USAGE else "error"),
            "message": message,
            "exit_status": int(status),
            "details": getattr(exc, "details", {}),
        }
        print(json.dumps(report, default=_shown, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"dspex-actors {command}: {message}", file=sys.stderr)


def _shown(data: Any) -> Any:
    """What JSON cannot carry in an error's details, as text."""
    if isinstance(data, bytes):
        return base64.b64encode(data).decode()
    return repr(data)


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush meets no closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
