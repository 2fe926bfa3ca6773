"""Registry of interactive methods: ``mecca.methods.get(name)`` returns a ready method.

Methods register through one explicit dict (no scanning): a user's own method is one
``register("name", factory)`` call away from the session, the app and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mecca.errors import ConfigError
from mecca.methods.base import InteractiveMethod, MethodState, StepResult

__all__ = ["InteractiveMethod", "MethodState", "StepResult", "available", "get", "register"]

_FACTORIES: dict[str, Callable[..., InteractiveMethod]] = {}


def register(name: str, factory: Callable[..., InteractiveMethod]) -> None:
    """Make ``factory(**options)`` available as method ``name``."""
    _FACTORIES[name] = factory


def available() -> list[str]:
    """Names of the registered methods, sorted."""
    _register_builtins()
    return sorted(_FACTORIES)


def get(name: str, **options: Any) -> InteractiveMethod:
    """Build the method called ``name`` with its options; unknown names list the valid ones."""
    _register_builtins()
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}", hint=f"choose one of: {', '.join(sorted(_FACTORIES))}"
        ) from None
    return factory(**options)


def _register_builtins() -> None:
    if "random_walker" in _FACTORIES:
        return
    from mecca.methods.classical import RandomWalkerMethod

    _FACTORIES.setdefault("random_walker", RandomWalkerMethod)
