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


def default_model(method: str, dataset: str | None = None) -> str:
    """The shipped bundle a learned method uses: ``<method>_<dataset>`` when shipped, else
    ``<method>_phantom`` when shipped, else the first shipped ``<method>_*`` bundle (by
    name), else ``<method>_phantom`` (whose absence the loader reports)."""
    from mecca.bundle import shipped_bundles

    shipped = shipped_bundles()
    for name in (f"{method}_{dataset}", f"{method}_phantom"):
        if name in shipped:
            return name
    others = [b for b in shipped if b.startswith(f"{method}_")]
    return others[0] if others else f"{method}_phantom"


def _learned(method: str) -> Callable[..., InteractiveMethod]:
    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """A trained ``method`` model: a shipped bundle's name or a bundle folder."""
        from mecca.bundle import load_bundle

        bundle = load_bundle(model or default_model(method))
        if bundle.metadata["method"] != method:
            raise ConfigError(
                f"bundle {bundle.path.name!r} holds a {bundle.metadata['method']} model, "
                f"not {method}",
                hint=f"use --method {bundle.metadata['method']}",
            )
        return bundle.method(device=device)

    return factory


ITERMRL_VARIANTS: dict[str, dict[str, str]] = {
    "focal_itermrl": {"reward": "focal"},
    "err_itermrl": {"reward": "err"},
    "edge_itermrl": {"reward": "relative", "user": "edge"},
}
"""IteR-MRL models trained with other settings, each a method of its own: MECCA's focal and
error-region reward weightings (MECCA Eqs. 12-14, the reward comparison of its Fig. 9), and
IteR-MRL given MECCA's edge points as Gaussian hint maps (the MECCA paper's Table 1
comparison, where every method gets the same hints). Name -> the training settings it needs."""


def _itermrl_variant(name: str, needs: dict[str, str]) -> Callable[..., InteractiveMethod]:
    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """An IteR-MRL bundle trained with the settings ``needs``: a folder or a shipped name."""
        from dataclasses import replace

        from mecca.bundle import load_bundle, shipped_bundles

        model = model or default_model(name)
        if model == default_model(name) and model not in shipped_bundles():
            raise ConfigError(
                f"no {name} model is shipped",
                hint=f"train one: mecca train --config configs/{name}_hippocampus.yaml --data "
                f"DIR --out RUN, export it (mecca export-model) and pass --weights {name}=BUNDLE",
            )
        bundle = load_bundle(model)
        method, trained = bundle.metadata["method"], bundle.metadata["train_config"]
        if method != "itermrl" or any(trained.get(k) != v for k, v in needs.items()):
            wanted = ", ".join(f"{k} {v!r}" for k, v in needs.items())
            held = ", ".join(f"{k} {trained.get(k)!r}" for k in needs)
            raise ConfigError(
                f"{name} needs an itermrl model trained with {wanted}; bundle "
                f"{bundle.path.name!r} holds {method} with {held}"
            )
        return replace(bundle.method(device=device), name=name)

    return factory


def _supervised(method: str) -> Callable[..., InteractiveMethod]:
    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """A trained ``method`` baseline: a run folder (best.pt, else last.pt), a checkpoint
        file, a bundle folder or a shipped bundle's name."""
        from mecca.methods.supervised import load_supervised

        return load_supervised(model or default_model(method), method=method, device=device)

    return factory


def _register_builtins() -> None:
    if "random_walker" in _FACTORIES:
        return
    from mecca.methods.classical import RandomWalkerMethod
    from mecca.methods.geos import GeosMethod
    from mecca.methods.graphcut import GraphCutMethod
    from mecca.methods.growcut import GrowCutMethod
    from mecca.methods.region_growing import RegionGrowingMethod

    _FACTORIES.setdefault("random_walker", RandomWalkerMethod)
    _FACTORIES.setdefault("graphcut", GraphCutMethod)
    _FACTORIES.setdefault("growcut", GrowCutMethod)
    _FACTORIES.setdefault("geos", GeosMethod)
    _FACTORIES.setdefault("region_growing", RegionGrowingMethod)
    _FACTORIES.setdefault("mecca", _learned("mecca"))
    _FACTORIES.setdefault("itermrl", _learned("itermrl"))
    for name, needs in ITERMRL_VARIANTS.items():
        _FACTORIES.setdefault(name, _itermrl_variant(name, needs))
    for name in ("pnet", "unet", "uamt", "intercnn", "deepigeos"):
        _FACTORIES.setdefault(name, _supervised(name))
    from mecca.methods.partial_method import partial_factory
    from mecca.methods.tta import tta_factory

    _FACTORIES.setdefault("tta", tta_factory)
    _FACTORIES.setdefault("partial", partial_factory)
    from mecca.methods.medsam_lite import MedSAMLiteMethod

    _FACTORIES.setdefault("medsam_lite", MedSAMLiteMethod)
