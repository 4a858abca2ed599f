"""Which DSPy module class a name stands for: what a ``module`` variable chooses among.

A session's ``module`` variable holds a name (``"Predict"``, ``"ChainOfThought"``),
checked against its ``allowed_modules``; this process turns the name into a class.
:data:`modules` knows DSPy's own modules; :meth:`Modules.register` adds a program's
own (any class built as ``cls(signature, **kwargs)``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from dspex_actors.errors import ValidationError
from dspex_actors.text import describe_value

__all__ = ["DSPY_MODULES", "Modules", "modules"]

DSPY_MODULES = ("Predict", "ChainOfThought", "ReAct", "ProgramOfThought")
"""The DSPy modules known by name without registering them."""

ModuleFactory = Callable[..., Any]


class Modules:
    """A registry of module names, shared by the threads of a process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registered: dict[str, ModuleFactory] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Modules:
        return self  # one registry per process: a copied program uses the same one

    def register(self, name: str, factory: ModuleFactory) -> None:
        """Make ``name`` stand for ``factory`` (a class or a callable taking a
        signature and keyword arguments), replacing what it stood for."""
        if not isinstance(name, str) or not name:
            raise ValidationError(
                f"a module name is a non-empty string (rule 'module_name', value "
                f"{describe_value(name)})",
                variable=None,
                rule="module_name",
                value=describe_value(name),
            )
        if not callable(factory):
            raise ValidationError(
                f"module {name!r} must be a class or a callable (rule 'module_factory', "
                f"value {describe_value(factory)})",
                variable=None,
                rule="module_factory",
                value=describe_value(factory),
            )
        with self._lock:
            self._registered[name] = factory

    def names(self) -> list[str]:
        """Every name known here: DSPy's own, then the registered ones."""
        with self._lock:
            registered = list(self._registered)
        return list(dict.fromkeys([*DSPY_MODULES, *registered]))

    def resolve(self, name: str, *, variable: str | None = None) -> ModuleFactory:
        """The class ``name`` stands for; ``ValidationError`` (rule ``known_modules``,
        naming ``variable`` when a variable chose it) for a name unknown here."""
        with self._lock:
            factory = self._registered.get(name)
        if factory is not None:
            return factory
        if isinstance(name, str) and name in DSPY_MODULES:
            import dspy

            found: ModuleFactory = getattr(dspy, name)
            return found
        where = f"variable {variable!r}: " if variable is not None else ""
        raise ValidationError(
            f"{where}unknown module type {describe_value(name)} (rule 'known_modules'; "
            f"known here: {', '.join(self.names())}; register others with "
            "dspex_actors.dspy.modules.register)",
            variable=variable,
            rule="known_modules",
            value=describe_value(name),
        )

    def check_all(self, names: Iterable[str], *, variable: str) -> None:
        """Every name resolves (what a ``module`` variable's ``allowed_modules`` may hold)."""
        for name in names:
            self.resolve(name, variable=variable)

    def create(self, name: str, signature: Any, **kwargs: Any) -> Any:
        """A new module of the class ``name`` stands for."""
        return self.resolve(name)(signature, **kwargs)


modules = Modules()
"""This process's registry."""
