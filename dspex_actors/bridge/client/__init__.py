"""The bridge's client: BridgedState and what it rides on (see ``handle.py``)."""
