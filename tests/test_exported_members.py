"""Pins the public surface: dspex_actors.__all__ is exactly this list, all importable."""

from __future__ import annotations

import importlib
import subprocess
import sys

import dspex_actors

# The public API. Extend this literal (and only this) when the package's __all__ grows,
# e.g. when the gRPC bridge and supervision are exported.
EXPECTED_PUBLIC_NAMES = {
    "TYPE_NAMES",
    "AttributeNotFound",
    "BridgeUnavailable",
    "BridgedState",
    "Context",
    "InvalidExport",
    "LimitExceeded",
    "LocalState",
    "NotSupported",
    "OutcomeUnknown",
    "PartialFailure",
    "RedisState",
    "SessionClosed",
    "SessionNotFound",
    "SessionStoreServer",
    "StateError",
    "StateProvider",
    "Supervisor",
    "Unauthenticated",
    "ValidationError",
    "VariableExists",
    "VariableNotFound",
    "VariableRecord",
    "VersionConflict",
    "errors",
    "get_capabilities",
    "is_provider",
    "serve",
    "validate_provider",
}


def test_all_is_exactly_the_expected_public_names() -> None:
    assert set(dspex_actors.__all__) == EXPECTED_PUBLIC_NAMES


def test_all_has_no_duplicates() -> None:
    assert len(dspex_actors.__all__) == len(set(dspex_actors.__all__))


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("dspex_actors")
    for name in dspex_actors.__all__:
        assert hasattr(module, name), name
        namespace: dict[str, object] = {}
        exec(f"from dspex_actors import {name}", namespace)
        assert namespace[name] is getattr(module, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from dspex_actors import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(dspex_actors.__all__)


def test_reexports_are_the_defining_objects() -> None:
    from dspex_actors import errors, local, provider, vartypes

    assert dspex_actors.errors is errors
    assert dspex_actors.LocalState is local.LocalState
    assert dspex_actors.StateProvider is provider.StateProvider
    assert dspex_actors.validate_provider is provider.validate_provider
    assert dspex_actors.TYPE_NAMES is vartypes.TYPE_NAMES
    for name in errors.__all__:
        assert getattr(dspex_actors, name) is getattr(errors, name)


def test_version_is_a_string() -> None:
    assert isinstance(dspex_actors.__version__, str)
    assert dspex_actors.__version__


def test_importing_the_package_does_not_load_grpc() -> None:
    """Local users pay nothing for the bridge: grpc loads on first use of its names."""
    script = (
        "import sys, dspex_actors\n"
        "from dspex_actors import LocalState, Supervisor, Context, errors\n"
        "with Supervisor.start() as sup:\n"
        "    ctx = sup.start_context()\n"
        "    ctx.register_variable('t', 'float', 0.5)\n"
        "    assert ctx.get_record('t').version == 0\n"
        "assert not [m for m in sys.modules if m.startswith('grpc')], 'grpc was imported'\n"
        "from dspex_actors import BridgedState\n"
        "assert 'grpc' in sys.modules and BridgedState.kind == 'bridged'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_each_handle_says_how_it_is_opened_and_refuses_a_constructor_call() -> None:
    """help() of a handle opens with its door: ``init`` (the constructor is internal,
    and calling it as users would is refused), or the Supervisor's constructor, which
    is public and takes what ``start`` takes."""
    import inspect
    import pydoc

    import pytest

    for handle in (dspex_actors.LocalState, dspex_actors.BridgedState, dspex_actors.RedisState):
        doc = pydoc.plain(pydoc.render_doc(handle))
        assert ".init" in doc or ":meth:`init`" in doc, f"help({handle.__name__}) names no init"
        with pytest.raises(TypeError):
            handle(session_id="s")  # type: ignore[call-arg]  # what a user might try
    start = inspect.signature(dspex_actors.Supervisor.start).parameters
    assert inspect.signature(dspex_actors.Supervisor).parameters.keys() == start.keys()
    with dspex_actors.Supervisor(max_restarts=1) as supervisor:
        assert supervisor.policy.max_restarts == 1
