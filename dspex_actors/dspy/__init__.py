"""DSPy programs tuned live by session variables (the ``dspy`` extra).

``SessionModule(ctx, "question -> answer", module_variable="module")`` is a DSPy
module whose LM settings (``temperature``, ``max_tokens``, any LM kwarg), inner
module class and attributes are the session's variables, kept current in this
process by a subscription: another process (an optimizer) sets ``temperature`` and
the next call here uses it, with no round trip per call. See :mod:`.program`.
"""

from dspex_actors.dspy.live import LiveValues, Snapshot
from dspex_actors.dspy.modules import DSPY_MODULES, Modules, modules
from dspex_actors.dspy.program import COMMON_LM_SETTINGS, SessionModule

__all__ = [
    "COMMON_LM_SETTINGS",
    "DSPY_MODULES",
    "LiveValues",
    "Modules",
    "SessionModule",
    "Snapshot",
    "modules",
]
