"""The voxel agents' bundles: export a MECCA or IteR-MRL run, load a bundle as a method.

The layout is :mod:`mecca.bundle`'s; here are what the agents put in it and read back:
``models/model.pt`` holds ``{"config", "net", "confidence"}`` (state dicts; the
confidence network's is None for IteR-MRL) and ``configs/metadata.json`` the network
configs, the hint encoding, the action set, the grid, the input/output description and a
training summary from the run's log. The network is MECCA's own, built from the metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mecca import bundle
from mecca.checkpoint import load_checkpoint
from mecca.config import build_config
from mecca.errors import ConfigError
from mecca.interaction.hints import HintEncoder
from mecca.interface import InteractiveMethod
from mecca.methods.agents.config import AGENTS, TrainConfig, hint_encoder
from mecca.methods.agents.method import RLAgentMethod
from mecca.nets import ActorCritic, ConfidenceConfig, ConfidenceNet, PNetConfig
from mecca.rl.actions import ACTIONS
from mecca.training.run import read_log


def training_summary(run: Path, episode: int) -> dict[str, Any]:
    """Episodes, wall time, hardware and the validation Dice per step of ``episode``, from
    the run's log (hardware from its last ``start`` line; None when the log has none)."""
    records = [r for r in read_log(run) if r["episode"] <= episode]
    # a resumed run repeats the episodes after its last checkpoint: keep the last of each
    train = list({r["episode"]: r for r in records if r["type"] == "train"}.values())
    val = [r for r in records if r["type"] == "val" and r["episode"] == episode]
    starts = [r for r in records if r["type"] == "start"]
    start = starts[-1] if starts else {}
    return {
        "episodes": episode,
        "train_seconds": round(sum(r["seconds"] for r in train), 1),
        "validation_dice_per_step": val[-1]["dice_per_step"] if val else None,
        "validation_cases": val[-1].get("cases") if val else None,  # absent in older logs
        "torch": start.get("torch"),
        "machine": start.get("machine"),
        "device": start.get("device"),
        "threads": start.get("threads"),
        "world_size": start.get("world_size"),
    }


def _io_description(config: dict[str, Any], n_hints: int) -> dict[str, Any]:
    grid = list(config["grid"])
    return {
        "inputs": {
            "state": {
                "type": "image",
                "format": "magnitude",
                "num_channels": 2 + n_hints,
                "spatial_shape": grid,
                "dtype": "float32",
                "channel_def": {
                    "0": "intensity (z-score over the crop)",
                    "1": "current foreground probability",
                    **{str(2 + i): f"hint map {i}" for i in range(n_hints)},
                },
            }
        },
        "outputs": {
            "policy": {
                "type": "probabilities",
                "num_channels": len(ACTIONS),
                "spatial_shape": grid,
                "channel_def": {str(i): f"action {a:+.1f}" for i, a in enumerate(ACTIONS)},
            }
        },
    }


def export_bundle(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "best.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a bundle from a training run's checkpoint (``best.pt`` or ``last.pt``)."""
    run, out = Path(run), Path(out)
    data = load_checkpoint(run / checkpoint)
    config = data["config"]
    encoder = hint_encoder(build_config(TrainConfig, config))
    metadata = {
        "method": config["method"],
        "train_config": config,
        "net_config": data["net_config"],
        "confidence_config": data["confidence_config"],
        "hints": {"encoding": encoder.encoding, "channels": encoder.channels},
        "actions": list(ACTIONS),
        "network_data_format": _io_description(config, encoder.n_channels),
        "training": training_summary(run, int(data["episode"])),
    }
    payload = {"config": config, "net": data["net"], "confidence": data["confidence"]}
    return bundle.write_bundle(
        out,
        payload,
        metadata,
        model_card,
        name=name,
        description=description,
        checkpoint=checkpoint,
        force=force,
    )


def model_card(meta: dict[str, Any]) -> str:
    """A first model card from the metadata; test-split figures are added from the benchmark."""
    cfg, tr = meta["train_config"], meta["training"]
    val = tr["validation_dice_per_step"]
    hardware = (
        f"{tr['device']} on {tr['machine']}, {tr['threads']} threads, torch {tr['torch']}"
        if tr.get("threads")
        else "hardware not recorded in the run's log"
    )
    val_text = ", ".join(f"{100 * d:.1f}" for d in val) if val else "not validated"
    cases = tr.get("validation_cases")
    val_which = (
        f"{cases} case{'s' * (cases != 1)}"
        if cases
        else f"first {cfg['val_cases']} cases (or all, if fewer)"
    )
    start = (
        [f"- Started from the weights of `{cfg['init_from']}`; the episodes below are this run's."]
        if cfg.get("init_from")
        else []
    )
    return "\n".join(
        [
            f"# {meta['name']}",
            "",
            meta["description"],
            "",
            f"- Method: {meta['method']} (user `{cfg['user']}`, hints `{cfg['hints']}`, "
            f"reward `{cfg['reward']}`, advantage `{cfg['advantage']}`)",
            f"- Network: width {meta['net_config']['width']}, grid {cfg['grid']}",
            *start,
            f"- Training: split `{cfg['train_split']}` of target `{cfg['target'] or 'default'}`, "
            f"{tr['episodes']} episodes of {cfg['batch_size']} crops x {cfg['steps']} steps, "
            f"{tr['train_seconds'] / 3600:.2f} h of episodes; {hardware}",
            f"- Validation Dice (%) per step, split `{cfg['val_split']}`, {val_which}: {val_text}",
            f"- Weights: `models/model.pt`, SHA-256 `{meta['sha256']}`",
            "",
        ]
    )


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its metadata and the networks, ready for inference."""

    path: Path
    metadata: dict[str, Any]
    net: ActorCritic
    confidence: ConfidenceNet | None

    @property
    def grid(self) -> tuple[int, int, int]:
        g = self.metadata["train_config"]["grid"]
        return (int(g[0]), int(g[1]), int(g[2]))

    def encoder(self) -> HintEncoder:
        return HintEncoder(**self.metadata["hints"])

    def method(self, *, device: str | torch.device = "cpu") -> RLAgentMethod:
        """The model as an :class:`~mecca.interface.InteractiveMethod`."""
        return RLAgentMethod(
            net=self.net,
            encoder=self.encoder(),
            confidence=self.confidence,
            actions=tuple(self.metadata["actions"]),
            name=self.metadata["method"],
            grid=self.grid,
            device=torch.device(device),
        )


def load_bundle(name_or_path: str | Path) -> Bundle:
    """Load and check a voxel agent's bundle (SHA-256 of the weights against the metadata);
    a bundle of another method is refused with the method to use."""
    path = bundle.resolve_bundle(name_or_path)
    meta = bundle.checked_metadata(path)
    weights = path / "models" / "model.pt"
    held = meta.get("method")
    if held not in AGENTS:
        raise ConfigError(
            f"bundle {path.name!r} holds a {held} model, not a voxel-agent policy "
            f"({' or '.join(AGENTS)})",
            hint=f"use --method {held}",
        )
    data = load_checkpoint(weights)
    net = ActorCritic(build_config(PNetConfig, meta["net_config"]))
    net.load_state_dict(data["net"])
    conf = None
    if meta.get("confidence_config") is not None:
        conf = ConfidenceNet(build_config(ConfidenceConfig, meta["confidence_config"]))
        conf.load_state_dict(data["confidence"])
    return Bundle(path, meta, net.eval(), None if conf is None else conf.eval())


def agent_factory(method: str) -> Callable[..., InteractiveMethod]:
    """The registry factory of ``mecca`` or ``itermrl``: a shipped bundle's name or a bundle
    folder (default: the method's shipped bundle)."""

    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """A trained ``method`` model: a shipped bundle's name or a bundle folder."""
        loaded = load_bundle(model or bundle.default_bundle(method))
        if loaded.metadata["method"] != method:
            raise ConfigError(
                f"bundle {loaded.path.name!r} holds a {loaded.metadata['method']} model, "
                f"not {method}",
                hint=f"use --method {loaded.metadata['method']}",
            )
        return loaded.method(device=device)

    return factory
