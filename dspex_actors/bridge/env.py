"""The environment variables a bridge client and the command line read."""

from __future__ import annotations

__all__ = ["ADDRESS_ENV", "TOKEN_ENV"]

ADDRESS_ENV = "DSPEX_BRIDGE_ADDRESS"
"""Environment variable naming the SessionStore a handle uses when given no address."""

TOKEN_ENV = "DSPEX_BRIDGE_TOKEN"
"""Environment variable holding the token used with ``DSPEX_BRIDGE_ADDRESS`` (and by
``serve`` on the command line when given no ``--token``)."""
