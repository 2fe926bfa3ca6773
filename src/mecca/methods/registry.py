"""The registry of interactive methods: one :class:`~mecca.methods.spec.MethodSpec` per
name, found through one explicit dict (no scanning).

The built-in families register here, in this order (the server offers its ``served``
methods in it, :data:`DEFAULT_METHOD` first); a
user's own method is one ``register`` call away from the session, the app, the benchmark
and ``mecca train``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mecca import bundle
from mecca.errors import ConfigError
from mecca.interface import InteractiveMethod
from mecca.methods import agents, classical, generalist, medsam_lite, partial, supervised, tta
from mecca.methods.refine import generalist_mecca_factory
from mecca.methods.spec import MethodSpec

_SPECS: dict[str, MethodSpec] = {}
DEFAULT_METHOD = "generalist"
"""What runs where the user names no method (`mecca segment`, `mecca demo`, the page, 3D
Slicer's first model): the generalist network (any target; points, a box or both),
chosen on val splits (docs/defaults.md): with points and no box, as 3D Slicer and a
page's first clicks arrive, mean final Dice over 8 targets 0.650 against GeoS 0.543 and
GrowCut 0.530; with a box on 5 unseen targets it ties GeoS over the clicks (mean DSC
70.5 each) and ends 2 points below it; it is the only one that gives a mask from a box
alone."""


def register(
    name_or_spec: str | MethodSpec, factory: Callable[..., InteractiveMethod] | None = None
) -> None:
    """Register a method: a :class:`MethodSpec`, or a name and its factory (a method that
    needs no trained model, ``factory(**options)``)."""
    if isinstance(name_or_spec, MethodSpec):
        spec_ = name_or_spec
    elif factory is not None:
        spec_ = MethodSpec(name_or_spec, factory)
    else:
        raise ConfigError(f"register {name_or_spec!r}: give its factory, or a MethodSpec")
    _SPECS[spec_.name] = spec_


def spec(name: str) -> MethodSpec:
    """The spec of the method called ``name``; unknown names list the valid ones."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}", hint=f"choose one of: {', '.join(available())}"
        ) from None


def specs() -> list[MethodSpec]:
    """Every registered spec, in the order of registration."""
    return list(_SPECS.values())


def available() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_SPECS)


def trainable() -> list[str]:
    """Names of the methods ``mecca train`` trains, in the order of registration."""
    return [s.name for s in _SPECS.values() if s.train is not None]


def served() -> tuple[str, ...]:
    """The methods ``mecca serve`` offers by default, :data:`DEFAULT_METHOD` first."""
    names = [s.name for s in _SPECS.values() if s.served]
    return tuple(sorted(names, key=lambda name: name != DEFAULT_METHOD))


def get(name: str, **options: Any) -> InteractiveMethod:
    """Build the method called ``name`` with its options; unknown names list the valid ones."""
    return spec(name).factory(**options)


def default_model(method: str, dataset: str | None = None) -> str:
    """The shipped bundle a learned method loads for ``dataset`` (its backbone's, for a
    method wrapping another's model; rule: :func:`mecca.bundle.default_bundle`)."""
    name = _SPECS[method].model_of if method in _SPECS else method
    return bundle.default_bundle(name, dataset)


def model_for(name: str, model: str | None = None, dataset: str | None = None) -> str | None:
    """The model :func:`build` loads for these arguments (what the tools tell the user ran):
    ``model`` when given, else the shipped default of a learned method; None for a method
    without a trained model."""
    if not spec(name).learned:
        return None
    return str(model) if model is not None else default_model(name, dataset)


def build(name: str, model: str | None = None, dataset: str | None = None) -> InteractiveMethod:
    """The method as the commands build it: a learned one loads ``model`` (a bundle or a
    run folder), else the shipped bundle for ``dataset``; the others take no model."""
    s = spec(name)
    if s.learned:
        return s.factory(model=model or default_model(name, dataset))
    if model is not None:
        raise ConfigError(f"method {name!r} takes no --model")
    return s.factory()


for _family in (
    generalist.SPECS,
    agents.SPECS,
    classical.SPECS,
    supervised.SPECS,
    tta.SPECS,
    partial.SPECS,
):
    for _spec in _family:
        register(_spec)
register("medsam_lite", medsam_lite.MedSAMLiteMethod)
register(MethodSpec("generalist_mecca", generalist_mecca_factory, learned=True, backbone="mecca"))
