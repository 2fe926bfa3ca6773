"""Networks, found by name through one explicit registry (no scanning).

``build("pnet", width=16, in_channels=4)`` returns a ready :class:`torch.nn.Module`; the
keyword arguments are the fields of the network's config dataclass. A user's own network
is one ``register("name", factory)`` away from the methods that look networks up by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from mecca.errors import ConfigError
from mecca.nets.confidence import (
    ConfidenceConfig,
    ConfidenceNet,
    action_agreement,
    action_confidence,
    confidence_loss,
)
from mecca.nets.pnet import (
    DEFAULT_ACTIONS,
    ActorCritic,
    PNetConfig,
    batch_statistics,
    iter_mrl_config,
)

__all__ = [
    "DEFAULT_ACTIONS",
    "NETWORKS",
    "ActorCritic",
    "ConfidenceConfig",
    "ConfidenceNet",
    "PNetConfig",
    "action_agreement",
    "batch_statistics",
    "build",
    "action_confidence",
    "confidence_loss",
    "iter_mrl_config",
    "register",
]


def _check_keys(cls: type, cfg: dict[str, Any]) -> None:
    """Report settings that ``cls`` (a config dataclass) lacks as a :class:`ConfigError`."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} settings: {', '.join(unknown)}",
            hint=f"valid ones: {', '.join(sorted(known))}",
        )


def _pnet(**cfg: Any) -> nn.Module:
    _check_keys(PNetConfig, cfg)
    return ActorCritic(PNetConfig(**cfg))


def _iter_mrl(**cfg: Any) -> nn.Module:
    _check_keys(PNetConfig, cfg)
    return ActorCritic(iter_mrl_config(**cfg))


def _confidence(**cfg: Any) -> nn.Module:
    _check_keys(ConfidenceConfig, cfg)
    return ConfidenceNet(ConfidenceConfig(**cfg))


#: Network factories by name; each takes its config's fields as keyword arguments.
NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "pnet": _pnet,
    "iter_mrl_pnet": _iter_mrl,
    "confidence": _confidence,
}


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory(**cfg)`` available as network ``name``."""
    NETWORKS[name] = factory


def build(name: str, **cfg: Any) -> nn.Module:
    """The network called ``name``, built from its config fields ``cfg``."""
    try:
        factory = NETWORKS[name]
    except KeyError:
        raise ConfigError(
            f"unknown network {name!r}", hint=f"choose one of: {', '.join(sorted(NETWORKS))}"
        ) from None
    return factory(**cfg)
