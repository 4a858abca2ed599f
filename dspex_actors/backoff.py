"""The one retry pause policy: every reader of a stream and every retried call waits by it.

A leaf: the engines, the handles and the delivery path all use it.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """The one retry pause policy: from :attr:`FIRST`, doubling up to a maximum, and
    starting over once a try goes through.

    Followers of a stream wait up to :attr:`RECONNECT` seconds between tries; a call
    retried within its own deadline up to :attr:`RETRY` (the deadline bounds it).
    """

    FIRST = 0.01
    RETRY = 0.25
    RECONNECT = 1.0

    __slots__ = ("_maximum", "_pause")

    def __init__(self, maximum: float = RECONNECT) -> None:
        self._maximum = maximum
        self._pause = self.FIRST

    def next(self) -> float:
        """The pause before the next try (each one longer, up to the maximum)."""
        pause = self._pause
        self._pause = min(pause * 2, self._maximum)
        return pause

    def reset(self) -> None:
        """A try went through: the next failure waits :attr:`FIRST` again."""
        self._pause = self.FIRST
