"""IteR-MRL models trained with other settings, each a method of its own.

MECCA's focal and error-region reward weightings (MECCA Eqs. 12-14, the reward comparison
of its Fig. 9), and IteR-MRL given MECCA's edge points as Gaussian hint maps (the MECCA
paper's Table 1 comparison, where every method gets the same hints). They are trained as
``itermrl`` runs with those settings (``configs/<name>_hippocampus.yaml``) and loaded from
their bundles only when the bundle was trained with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from mecca import bundle
from mecca.errors import ConfigError
from mecca.interface import InteractiveMethod
from mecca.methods.agents.bundle import load_bundle

ITERMRL_VARIANTS: dict[str, dict[str, str]] = {
    "focal_itermrl": {"reward": "focal"},
    "err_itermrl": {"reward": "err"},
    "edge_itermrl": {"reward": "relative", "user": "edge"},
}
"""Variant name -> the training settings its ``itermrl`` model needs."""


def variant_factory(name: str) -> Callable[..., InteractiveMethod]:
    """The registry factory of the variant ``name`` (see :data:`ITERMRL_VARIANTS`)."""
    needs = ITERMRL_VARIANTS[name]

    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """An IteR-MRL bundle trained with the settings ``needs``: a folder or a shipped name."""
        default = bundle.default_bundle(name)
        model = model or default
        if model == default and model not in bundle.shipped_bundles():
            raise ConfigError(
                f"no {name} model is shipped",
                hint=f"train one: mecca train --config configs/{name}_hippocampus.yaml --data "
                f"DIR --out RUN, export it (mecca export-model) and pass --weights {name}=BUNDLE",
            )
        loaded = load_bundle(model)
        method, trained = loaded.metadata["method"], loaded.metadata["train_config"]
        if method != "itermrl" or any(trained.get(k) != v for k, v in needs.items()):
            wanted = ", ".join(f"{k} {v!r}" for k, v in needs.items())
            held = ", ".join(f"{k} {trained.get(k)!r}" for k in needs)
            raise ConfigError(
                f"{name} needs an itermrl model trained with {wanted}; bundle "
                f"{loaded.path.name!r} holds {method} with {held}"
            )
        return replace(loaded.method(device=device), name=name)

    return factory
