"""A DSPy module whose settings are session variables, tuned live.

:class:`SessionModule` is a ``dspy.Module`` that runs an inner module (``Predict``,
``ChainOfThought``, ``ReAct``, a registered one) under settings held by a session:

- LM keyword arguments (``temperature``, ``max_tokens``, any LM kwarg) from the
  variables ``lm_variables`` names: each call runs under ``dspy.context(lm=...)``
  with a copy of the LM (``BaseLM.copy``) carrying the values of that moment, so
  every model call inside, however deep (a ``ReAct``'s tools loop), uses them.
  The copy is made once per change, not per call;
- the inner module's class, from a ``module`` variable (``module_variable``) whose
  ``allowed_modules`` are names :data:`~dspex_actors.dspy.modules.modules` knows;
  one instance per class is kept, so switching back keeps what was learned;
- attributes of the inner module (``attribute_variables``, e.g. a ``ReAct``'s
  ``max_iters``), set when their variable changes.

The values come from :class:`~dspex_actors.dspy.live.LiveValues`: read once, then
kept current by a subscription, so a call costs no round trip. A value the
variable's definition refuses never reaches the module; it keeps its last good
settings. This is the intent of DSPex Stage 2's ``VariableAwareMixin``,
``VariableAwarePredict``/``ChainOfThought``/``ReAct`` and
``create_variable_aware_program``, in today's DSPy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import dspy

from dspex_actors.dspy.live import LiveValues, Snapshot
from dspex_actors.dspy.modules import Modules, modules
from dspex_actors.errors import ValidationError
from dspex_actors.methods import SessionMethods

__all__ = ["COMMON_LM_SETTINGS", "SessionModule"]

COMMON_LM_SETTINGS = ("temperature", "max_tokens")
"""What ``lm_variables=None`` binds: each LM kwarg of these names that the session
holds, to the variable of the same name (Stage 2's ``auto_bind_common``)."""

logger = logging.getLogger(__name__)

_NAME_TYPES = frozenset({"module", "choice", "string"})


class _Lock:
    """A lock that a copy of the program (DSPy's optimizers deep-copy) gets anew."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def __deepcopy__(self, memo: dict[int, Any]) -> _Lock:
        return _Lock()


class SessionModule(dspy.Module):
    """A DSPy module tuned by session variables (see the module docstring).

    ``handle`` is a session handle or a ``Context`` of the process that runs the
    module. ``module`` is the inner module's class name when no variable chooses it.
    ``lm`` is the LM to tune (default: ``dspy.settings.lm`` at each call).
    ``module_kwargs`` go to the inner module's constructor (e.g. a ``ReAct``'s
    ``tools``). Close it (or use ``with``) to stop following the session.
    """

    def __init__(
        self,
        handle: SessionMethods,
        signature: Any,
        *,
        module: str = "Predict",
        module_variable: str | None = None,
        lm_variables: Mapping[str, str] | None = None,
        attribute_variables: Mapping[str, str] | None = None,
        lm: Any = None,
        registry: Modules = modules,
        **module_kwargs: Any,
    ) -> None:
        super().__init__()
        if lm_variables is None:
            lm_variables = {name: name for name in COMMON_LM_SETTINGS if handle.has_variable(name)}
        self.signature = signature
        self.lm = lm
        self.lm_variables: dict[str, str] = dict(lm_variables)
        """LM kwarg -> the variable holding it."""
        self.attribute_variables: dict[str, str] = dict(attribute_variables or {})
        """Inner module attribute -> the variable holding it."""
        self.module_variable = module_variable
        self._default_module = module
        self._registry = registry
        self._module_kwargs = module_kwargs
        self._lock = _Lock()
        self._choices: dict[str, Any] = {}
        self._tuned: tuple[Any, int, Any] | None = None  # (base LM, generation, its copy)
        self._attributes_at: dict[int, int] = {}  # id of inner module -> generation applied
        self._last_module = module  # the last class a call ran (kept for a name unknown here)
        self._refused_module: str | None = None
        choices = [module]
        if module_variable is not None:
            choices = self._check_module_variable(handle, module_variable)
        # Every choice is built now, so the program's predictors are the same from
        # its first call on: DSPy's optimizers map them by name.
        for name in choices:
            self._choices[name] = registry.create(name, signature, **module_kwargs)
        self._last_module = choices[0]
        names = [*self.lm_variables.values(), *self.attribute_variables.values()]
        if module_variable is not None:
            names.append(module_variable)
        self.values = LiveValues(handle, names)
        """The bound variables' values in this process, kept current."""

    def _check_module_variable(self, handle: SessionMethods, name: str) -> list[str]:
        """The module names the variable may hold (all it allows, else its value),
        each one this process can build; ``ValidationError`` for a variable of a type
        that holds no names."""
        record = handle.get_record(name)
        if record.type not in _NAME_TYPES:
            raise ValidationError(
                f"variable {name!r} cannot choose a module (rule 'module_variable', value "
                f"type {record.type!r}; give a module, choice or string variable)",
                variable=name,
                rule="module_variable",
                value=record.type,
            )
        allowed = record.constraints.get("allowed_modules") or record.constraints.get("choices")
        names = list(dict.fromkeys([record.value, *(allowed or ())]))
        self._registry.check_all(names, variable=name)
        return names

    def bind(
        self,
        *,
        lm_variables: Mapping[str, str] | None = None,
        attribute_variables: Mapping[str, str] | None = None,
    ) -> None:
        """Bind more LM kwargs or attributes to variables (Stage 2's
        ``bind_variable``): every bound variable is read again and followed from
        here. A name the session lacks raises ``VariableNotFound`` and changes
        nothing."""
        handle = self.values.handle
        lm = {**self.lm_variables, **(lm_variables or {})}
        attributes = {**self.attribute_variables, **(attribute_variables or {})}
        names = [*lm.values(), *attributes.values()]
        if self.module_variable is not None:
            names.append(self.module_variable)
        fresh = LiveValues(handle, names)
        with self._lock:
            old, self.values = self.values, fresh
            self.lm_variables, self.attribute_variables = lm, attributes
            self._tuned = None
            self._attributes_at.clear()
        old.close()

    @property
    def bindings(self) -> dict[str, str]:
        """Every binding: LM kwargs and attributes to their variables, and ``module``
        to the variable choosing the class (when one does)."""
        bound = {**self.lm_variables, **self.attribute_variables}
        if self.module_variable is not None:
            bound["module"] = self.module_variable
        return bound

    @property
    def settings(self) -> dict[str, Any]:
        """The LM kwargs a call made now would use (beyond the LM's own)."""
        return self._lm_kwargs(self.values.snapshot)

    @property
    def module_name(self) -> str:
        """The inner module's class name a call made now would run."""
        return self._inner(self.values.snapshot)[0]

    @property
    def inner(self) -> Any:
        """The inner DSPy module a call made now would run."""
        return self._inner(self.values.snapshot)[1]

    def set_lm(self, lm: Any) -> None:
        """The LM to tune (DSPy's ``Module.set_lm``, which would give each predictor
        its own LM, and a predictor's own LM is used before the tuned one)."""
        self.lm = lm

    def get_lm(self) -> Any:
        """The LM a call made now would tune."""
        return self.lm if self.lm is not None else dspy.settings.lm

    def refresh(self) -> dict[str, Any]:
        """Read the bound variables now (a round trip each); the values that changed,
        by variable name. A subscription does this by itself; call it to be sure a
        write made elsewhere is here before the next call."""
        return self.values.refresh()

    def forward(self, **kwargs: Any) -> Any:
        snapshot = self.values.snapshot
        _, inner = self._inner(snapshot)
        with dspy.context(lm=self._tuned_lm(snapshot)):
            return inner(**kwargs)

    async def aforward(self, **kwargs: Any) -> Any:
        snapshot = self.values.snapshot
        _, inner = self._inner(snapshot)
        with dspy.context(lm=self._tuned_lm(snapshot)):
            return await inner.acall(**kwargs)

    def close(self) -> None:
        """Stop following the session; the last settings stay. Idempotent."""
        self.values.close()

    def __enter__(self) -> SessionModule:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _lm_kwargs(self, snapshot: Snapshot) -> dict[str, Any]:
        values = snapshot.values
        return {kw: values[name] for kw, name in self.lm_variables.items() if name in values}

    def _inner(self, snapshot: Snapshot) -> tuple[str, Any]:
        """The inner module for this snapshot's class (its name and itself), its
        attributes applied. A name this process cannot build (a string variable may
        hold any) keeps the last good module, counted in ``values.refused``."""
        name = self._default_module
        if self.module_variable is not None:
            name = str(snapshot.values.get(self.module_variable, name))
        with self._lock:
            inner = self._choices.get(name)
            if inner is None:
                try:
                    factory = self._registry.resolve(name, variable=self.module_variable)
                except ValidationError as exc:
                    if name != self._refused_module:
                        self._refused_module = name
                        self.values.refused += 1
                        logger.warning("kept module %r: %s", self._last_module, exc)
                    name = self._last_module
                    inner = self._choices[name]
                else:
                    inner = self._choices[name] = factory(self.signature, **self._module_kwargs)
            self._last_module = name
            applied = self._attributes_at.get(id(inner), -1)
            if self.attribute_variables and applied < snapshot.generation:
                values = snapshot.values
                for attribute, variable in self.attribute_variables.items():
                    if variable in values:
                        setattr(inner, attribute, values[variable])
                self._attributes_at[id(inner)] = snapshot.generation
        return name, inner

    def _tuned_lm(self, snapshot: Snapshot) -> Any:
        """The LM with this snapshot's kwargs: one copy per change of either."""
        base = self.lm if self.lm is not None else dspy.settings.lm
        if base is None or not self.lm_variables:
            return base
        tuned = self._tuned
        if tuned is not None and tuned[0] is base and tuned[1] == snapshot.generation:
            return tuned[2]
        copy = base.copy(**self._lm_kwargs(snapshot))
        self._tuned = (base, snapshot.generation, copy)
        return copy
