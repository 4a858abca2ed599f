"""Structural rules of the package, checked by reading its source.

* Each operation is defined once: its message (``messages.py``), its wire form
  (``wire/operations.py``), its public method (``methods.py``) and its Redis steps
  (``redis/operations.py``, ``redis/writes.py``) are the only places that name it;
  a handle may answer a read from memory before building a message only where
  :data:`FAST_PATHS` lists it, with the reason measured.
* Every RPC of the ``.proto`` is served by the wire table, and every operation has a
  wire form (or is the server's own) and a Redis step.
* The layers read bottom-up: no import cycle (deferred imports included); the
  bridge's client never imports its server; no store imports a handle; the wire
  layer imports neither half of the bridge; the engines import no front end.
* A module past 600 lines says why at its top (a ``**Length.**`` paragraph).
* No string-tagged operation tuples, no private part of grpcio or Pykka, and
  supervision never branches on a concrete backend class.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from dspex_actors import messages
from dspex_actors.methods import RemoteSessionMethods, SessionMethods
from dspex_actors.redis.operations import SCRIPTS
from dspex_actors.v1 import session_store_pb2 as pb
from dspex_actors.wire.operations import CALL_FIELDS, RPCS, SENDS

PACKAGE = Path(__file__).resolve().parent.parent / "dspex_actors"
SOURCES = {
    path.relative_to(PACKAGE).as_posix(): path.read_text()
    for path in PACKAGE.rglob("*.py")
    if "v1" not in path.relative_to(PACKAGE).parts  # generated code
}
TREES = {name: ast.parse(text) for name, text in SOURCES.items()}

OPERATIONS = {
    cls.__name__: cls
    for cls in vars(messages).values()
    if inspect.isclass(cls)
    and issubclass(cls, messages.Operation)
    and cls.__module__ == messages.__name__
    and cls
    not in (
        messages.Operation,
        messages.ReadOperation,
        messages.WriteOperation,
        messages.SessionOperation,
    )
}
OPENED_BY_THE_ENGINE = {"OpenSession"}
"""A Redis session is opened by the engine itself (``RedisSession.open``), so it has
no step in the table."""
SERVER_ONLY = {"GetVersioned", "Digest"}
"""Operations a server runs for a request of another's RPC (GetVariable's answer
with its version; an import's digest): no wire form of their own."""

NAMED_IN = {
    "messages.py": "the operations themselves",
    "methods.py": "the public methods, one per operation",
    "aio/methods.py": "their asyncio twins (held equal to them by tests/test_aio.py)",
    "wire/operations.py": "each operation's wire form",
    "redis/operations.py": "the Redis engine's table of steps",
    "redis/writes.py": "the Redis table's write steps",
}
FAST_PATHS = {
    ("local.py", "GetVariable"): "a LocalState read meeting a write falls back to a message",
    ("local.py", "get_variable"): "LocalState answers from its table inline: a message and a "
    "dispatch would cost about 3x (local.get/dict.get 3.0-3.1x with it, python -m benchmarks)",
    ("bridge/client/bridged.py", "GetVariable"): "a cached read the copy cannot answer",
    ("bridge/client/bridged.py", "get_variable"): "a cached handle answers from its copy "
    "inline: a message and a dispatch would double cache.bridged.get/cache.dict.get",
    ("aio/bridged.py", "get_variable"): "a cached asyncio handle answers from its copy "
    "inline: a cached await is 4.6-5.1x a dict lookup (cache.dict.get); an operation and "
    "a dispatch would add to it",
}
CONTRACT = {"provider.py": "the StateProvider contract a backend of your own implements"}
NOT_A_HANDLE = {
    ("errors.py", "settle"): "OutcomeUnknown.settle calls the settle of the handle that "
    "sent the write (the one the error was raised by)",
    ("errors.py", "variable"): "an error's .variable: the variable it names",
    ("wire/forms.py", "batch"): "a wire form's decoder of a batch's bytes",
    ("access.py", "subscribe"): "a variable handle's subscribe calls its session's, "
    "with that one name as the glob",
}

PUBLIC_METHODS = {
    name
    for cls in (SessionMethods, RemoteSessionMethods)
    for name, member in vars(cls).items()
    if inspect.isfunction(member) and not name.startswith("_") and name not in ("run", "events")
}


def _hits(pattern: str, files: dict[str, str] = SOURCES) -> list[str]:
    found = re.compile(pattern)
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in files.items()
        for number, line in enumerate(text.splitlines(), 1)
        if found.search(line)
    ]


def _names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every identifier a module uses as code (docstrings and comments are not code)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.alias):
            found.append((node.lineno, node.asname or node.name.rpartition(".")[2]))
    return found


# -- each operation defined once ----------------------------------------------------------


def test_the_operations_were_found() -> None:
    assert {"GetVariable", "SetVariable", "HasVariable", "OpenSession"} <= set(OPERATIONS)
    assert {"get_variable", "set_variable", "has_variable", "commit"} <= PUBLIC_METHODS


def test_an_operation_is_named_only_where_it_is_defined() -> None:
    strays = [
        f"{module}:{line}: {name}"
        for module, tree in TREES.items()
        if module not in NAMED_IN
        for line, name in _names(tree)
        if name in OPERATIONS and (module, name) not in FAST_PATHS
    ]
    assert strays == [], "name the operation only in " + ", ".join(NAMED_IN)


def test_a_public_method_is_written_once() -> None:
    written = [
        f"{module}:{node.lineno}: def {node.name}"
        for module, tree in TREES.items()
        if module not in ("methods.py", *CONTRACT)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and node.name in PUBLIC_METHODS
        and (module, node.name) not in FAST_PATHS
        and (module, node.name) not in NOT_A_HANDLE
        and not module.startswith("testing/")  # the kit calls them, and tests them
    ]
    assert written == [], "write a public method once, in methods.py"


def _exported(tree: ast.Module) -> set[int]:
    """The ids of the string constants in a module's ``__all__`` (names, not RPCs)."""
    return {
        id(element)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for element in ast.walk(node.value)
    }


def test_an_rpc_name_is_spelled_only_in_the_wire_table() -> None:
    rpcs = set(RPCS)
    spelled = [
        f"{module}:{node.lineno}: {node.value!r}"
        for module, tree in TREES.items()
        if module != "wire/operations.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and node.value in rpcs
        and id(node) not in _exported(tree)
    ]
    assert spelled == []


def test_every_rpc_of_the_proto_is_served_by_the_table() -> None:
    service = pb.DESCRIPTOR.services_by_name["SessionStore"]
    streams = {"Watch", "Calls"}
    assert {method.name for method in service.methods} == set(RPCS) | streams
    body = pb.CallRequest.DESCRIPTOR.oneofs_by_name["body"]
    assert {field.name for field in body.fields} == set(CALL_FIELDS)
    for rpc in RPCS.values():  # the Calls reply carries what the RPC answers
        if rpc.field is not None:
            reply = pb.CallReply.DESCRIPTOR.fields_by_name[rpc.field].message_type
            assert reply is not None and reply.full_name == rpc.response.DESCRIPTOR.full_name


def test_every_operation_has_a_wire_form_and_a_redis_step() -> None:
    names = set(OPERATIONS)
    assert {cls.__name__ for cls in SENDS} == names - SERVER_ONLY
    assert {cls.__name__ for cls in SCRIPTS} == names - OPENED_BY_THE_ENGINE


# -- layers that read bottom-up -----------------------------------------------------------


def _module(name: str) -> str:
    parts = name.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["dspex_actors", *parts])


MODULES = {_module(name): name for name in SOURCES}


def _imports(tree: ast.Module, *, deferred: bool = True) -> set[str]:
    """The package's modules a module imports (those under ``if TYPE_CHECKING``
    excepted); with ``deferred``, those imported inside functions too."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("dspex_actors"):
                    for alias in node.names:
                        full = f"{node.module}.{alias.name}"
                        found.add(full if full in MODULES else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("dspex_actors"))
            elif deferred or top:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child], top and isinstance(node, ast.If | ast.Try))
                    elif deferred:
                        for grandchild in ast.walk(child):
                            if isinstance(grandchild, ast.stmt):
                                visit([grandchild], False)

    visit(tree.body, True)
    return {m for m in found if m in MODULES and m != "dspex_actors"}


GRAPH = {module: _imports(TREES[file]) for module, file in MODULES.items()}


def test_no_import_cycle_not_even_through_a_deferred_import() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            connect(node)
    assert cycles == []


def _importers(prefixes: tuple[str, ...], of: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        if module.startswith(prefixes)
        for target in targets
        if target.startswith(of)
    )


def test_the_bridge_client_never_imports_the_server() -> None:
    assert _importers(("dspex_actors.bridge.client",), ("dspex_actors.bridge.server",)) == []


def test_no_store_imports_a_handle() -> None:
    handles = (
        "dspex_actors.local",
        "dspex_actors.bridge.client",
        "dspex_actors.redis.state",
        "dspex_actors.supervision",
    )
    stores = ("dspex_actors.stores", "dspex_actors.redis.store")
    assert _importers(stores, handles) == []


def test_the_wire_layer_imports_neither_half_of_the_bridge() -> None:
    assert _importers(("dspex_actors.wire",), ("dspex_actors.bridge",)) == []


def test_the_engines_import_no_front_end() -> None:
    engines = (
        "dspex_actors.session",
        "dspex_actors.actor",
        "dspex_actors.engine",
        "dspex_actors.redis.session",
        "dspex_actors.redis.operations",
        "dspex_actors.redis.writes",
    )
    front_ends = (
        "dspex_actors.local",
        "dspex_actors.supervision",
        "dspex_actors.stores",
        "dspex_actors.bridge",
        "dspex_actors.redis.state",
        "dspex_actors.redis.store",
    )
    assert _importers(engines, front_ends) == []


def test_a_long_module_says_why_at_its_top() -> None:
    long = [
        f"{name} ({text.count(chr(10))} lines)"
        for name, text in SOURCES.items()
        if text.count("\n") > 600 and "**Length.**" not in (ast.get_docstring(TREES[name]) or "")
    ]
    assert long == []


# -- review rules kept ----------------------------------------------------------------------


def test_no_string_tagged_operation_tuples() -> None:
    operations = "register|set|update|delete|import|get|get_many|list|export|seal|close"
    assert _hits(rf"""\(\s*["']({operations})["']\s*,""") == []


def test_no_private_parts_of_grpc_or_pykka() -> None:
    assert _hits(r"\b(grpc|pykka)\._[a-z]") == []


def test_supervision_never_branches_on_a_concrete_backend() -> None:
    supervision = {
        name: SOURCES[name]
        for name in ("supervision.py", "restarts.py", "migration.py", "sharing.py")
    }
    assert _hits(r"isinstance\([^)]*\b(LocalState|BridgedState|RedisState)\b", supervision) == []


def test_the_sources_were_read() -> None:
    assert {"messages.py", "methods.py", "wire/operations.py", "bridge/server/server.py"} <= set(
        SOURCES
    )
