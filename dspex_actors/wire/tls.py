"""PEM material for TLS, given as bytes or read from a path (client and server alike)."""

from __future__ import annotations

import os

__all__ = ["read_pem"]


def read_pem(source: bytes | str | os.PathLike[str]) -> bytes:
    """PEM bytes given as such, or read from a path."""
    if isinstance(source, bytes):
        return source
    with open(source, "rb") as file:
        return file.read()
