"""Interactive methods: ``mecca.methods.get(name)`` returns a ready method.

The interface is :mod:`mecca.methods.base` (defined in :mod:`mecca.interface`); the
registry (:mod:`mecca.methods.registry`) holds one :class:`~mecca.methods.spec.MethodSpec`
per method; each family lives in a folder of its own (``agents``, ``supervised``,
``partial``, ``classical``) or a module (``tta``, ``medsam_lite``). See
docs/adding-a-method.md.
"""

from mecca.interface import InteractiveMethod, MethodState, StepResult
from mecca.methods.registry import (
    available,
    build,
    default_model,
    get,
    model_for,
    register,
    served,
    spec,
    specs,
    trainable,
)
from mecca.methods.spec import MethodSpec, TrainRequest

__all__ = [
    "InteractiveMethod",
    "MethodSpec",
    "MethodState",
    "StepResult",
    "TrainRequest",
    "available",
    "build",
    "default_model",
    "get",
    "model_for",
    "register",
    "served",
    "spec",
    "specs",
    "trainable",
]
