"""``watch``: print each change to a session's variables as it happens, one line each.

The command subscribes (``subscribe(pattern, ...)``, the same subscription a program
gets: ordered, resumed across outages, ``overflow`` when it falls behind) and
prints every event on stdout as it arrives, flushed, one line each: a line for
people, or (``--json``) one JSON object. Once the subscription is held by the
server (or Redis), it says so on stderr (``watching session ...``), so a script
knows that every change from then on will be printed.

It runs until Ctrl-C (exit status 130), ``--count N`` change events (0), or
``--timeout SECONDS`` (0; 124 if ``--count`` was given and not reached), or until
the session ends (its ``closed`` event is printed; 3). Whichever way it stops it
unsubscribes first, and prints nothing after.

Events pass from the subscription's delivery thread to the printing thread through
a :class:`Feed` of at most :data:`FEED_SIZE` events: a reader that does not keep
up (a stalled pipe) holds the delivery thread, and the subscription then reports
``overflow`` from its bounded source instead of growing without bound here.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import deque

from dspex_actors.cli.exits import Exit, UsageError
from dspex_actors.cli.render import as_json, event_line, event_record
from dspex_actors.cli.target import session_handle, target_of
from dspex_actors.errors import SessionNotFound
from dspex_actors.streaming import Event

__all__ = ["FEED_SIZE", "Feed", "run_watch"]

FEED_SIZE = 1024
"""Events waiting to be printed, at most."""

CHANGES = frozenset({"registered", "updated", "deleted"})
"""The kinds ``--count`` counts (``overflow`` and ``closed`` are not changes)."""


class Feed:
    """A bounded hand-over of events from the delivery thread to the printer."""

    def __init__(self, size: int = FEED_SIZE) -> None:
        self._events: deque[Event] = deque()
        self._size = size
        self._changed = threading.Condition()
        self._stopped = False

    def put(self, event: Event) -> None:
        """Called by the delivery thread: waits while the feed is full; drops the
        event once the printer stopped."""
        with self._changed:
            self._changed.wait_for(lambda: self._stopped or len(self._events) < self._size)
            if not self._stopped:
                self._events.append(event)
                self._changed.notify_all()

    def take(self, deadline: float | None) -> Event | None:
        """The next event, waiting until ``deadline`` (monotonic; None: for ever);
        None when it passed. Ctrl-C interrupts the wait."""
        with self._changed:
            while not self._events:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._changed.wait(left)
            event = self._events.popleft()
            self._changed.notify_all()
            return event

    def stop(self) -> None:
        """Take no more events: a delivery waiting to put one goes on at once."""
        with self._changed:
            self._stopped = True
            self._events.clear()
            self._changed.notify_all()


def run_watch(args: argparse.Namespace) -> int:
    """Subscribe and print events until stopped (see the module docstring)."""
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    feed = Feed()
    with session_handle(target_of(args), args.session) as state:
        subscription = state.subscribe(args.pattern, feed.put, start=args.start)
        try:
            shown = repr(args.pattern) if args.pattern else "every variable"
            print(
                f"watching session {args.session!r} for {shown} (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )
            return _print_until_done(feed, args, deadline)
        finally:
            # The feed first, so a delivery blocked on a full feed lets go; nothing
            # more is printed, so the subscription stops without draining.
            feed.stop()
            subscription.close(drain=False)


def _print_until_done(feed: Feed, args: argparse.Namespace, deadline: float | None) -> int:
    changes = 0
    while True:
        event = feed.take(deadline)
        if event is None:  # --timeout
            return Exit.TIMED_OUT if args.count is not None else Exit.OK
        print(as_json(event_record(event)) if args.json else event_line(event), flush=True)
        if event.kind == "closed":
            raise SessionNotFound(
                f"session {args.session!r} ended while it was watched",
                session_id=args.session,
            )
        if event.kind in CHANGES:
            changes += 1
            if args.count is not None and changes >= args.count:
                return Exit.OK
