"""The bridge's server: the SessionStore, its one dispatch, health and reflection."""
