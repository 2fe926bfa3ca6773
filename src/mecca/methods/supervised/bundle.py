"""The supervised baselines' bundles: export a run, load a run, checkpoint or bundle.

The layout is :mod:`mecca.bundle`'s; ``models/model.pt`` holds the run's config, every
network's configs and weights by role (``pnet``, ``unet``, ``student`` and ``teacher``,
``intercnn``, ``pnet`` and ``rnet``), which networks were frozen, and the step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mecca import bundle
from mecca.checkpoint import checkpoint_method, load_checkpoint
from mecca.errors import ConfigError, InputError
from mecca.interface import InteractiveMethod
from mecca.methods.supervised.method import (
    REFINERS,
    SEGMENTERS,
    SupervisedMethod,
    hint_encoder,
    method_from_nets,
)
from mecca.nets.segnet import build_segnet
from mecca.training.run import read_log


def _summary(run: Path, step: int) -> dict[str, Any]:
    """The exported checkpoint's training record, read from the run's ``log.jsonl``."""
    records = read_log(run)
    train = {r["step"]: r for r in records if r["type"] == "train" and r["step"] <= step}
    val = [r for r in records if r["type"] == "val" and r["step"] == step]
    starts = [r for r in records if r["type"] == "start"]
    seconds = [r["seconds"] for r in train.values()]
    return {
        "steps": step,
        "train_seconds": round(sum(seconds), 1),
        "seconds_per_step_median": round(float(np.median(seconds)), 3) if seconds else None,
        "validation_dice": val[-1]["dice"] if val else None,
        "validation_dice_per_step": val[-1]["dice_per_step"] if val else None,
        "validation_by_step": [
            [int(r["step"]), round(100 * r["dice"], 1)] for r in records if r["type"] == "val"
        ],
        "hardware": {k: starts[0].get(k) for k in ("device", "machine", "threads", "torch")}
        if starts
        else None,
        "sessions": len(starts),
    }


def _record_facts(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Model-card lines of the training record (hardware, wall time, validation curve)."""
    facts = []
    hw = summary.get("hardware")
    if hw:
        facts.append(
            f"Hardware: {hw['device']} on {hw['machine']}, {hw['threads']} torch thread(s), "
            f"torch {hw['torch']}; {summary['sessions']} session(s) (resumed "
            f"{summary['sessions'] - 1} time(s))"
        )
    if summary.get("seconds_per_step_median") is not None:
        facts.append(
            f"Wall time of the training steps: {summary['train_seconds'] / 3600:.2f} h for "
            f"the exported {summary['steps']} steps "
            f"({summary['seconds_per_step_median']} s per step median)"
        )
    curve = summary.get("validation_by_step") or []
    if curve:
        rounds = config["val_rounds"] if config["method"] in REFINERS else 0
        after = f", after {rounds} click rounds" if rounds else ""
        points = ", ".join(f"{s}: {d}" for s, d in curve)
        facts.append(
            f"Validation Dice (%) by training step (first {config['val_cases']} val cases"
            f"{after}; the whole run): {points}"
        )
    return facts


def export_supervised(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "best.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a bundle (:mod:`mecca.bundle`'s layout) from a supervised run's checkpoint;
    :func:`load_supervised` reads it."""
    run, out = Path(run), Path(out)
    data = load_checkpoint(run / checkpoint)
    config = data["config"]
    keep = ("config", "nets", "net_configs", "frozen", "step")
    summary = _summary(run, int(data["step"]))
    hints = None
    if config["method"] in REFINERS:
        enc = hint_encoder(config["method"])
        hints = {"encoding": enc.encoding, "channels": enc.channels}
    metadata = {
        "method": config["method"],
        "train_config": config,
        "net_configs": data["net_configs"],
        "hints": hints,
        "training": summary,
    }

    def card(meta: dict[str, Any]) -> str:
        return bundle.card_text(
            meta,
            description,
            [
                f"Method: {config['method']} (supervised baseline), width {config['width']}, "
                f"grid {config['grid']}, labeled fraction {config.get('labeled_fraction', 1.0)}",
                f"Training: {summary['steps']} steps of {config['batch_size']} crops, split "
                f"`{config['train_split']}`; validation Dice {summary['validation_dice']}",
                *_record_facts(summary, config),
            ],
        )

    return bundle.write_bundle(
        out,
        {k: data[k] for k in keep},
        metadata,
        card,
        name=name,
        description=description,
        checkpoint=checkpoint,
        force=force,
    )


def nets_from_payload(data: dict[str, Any]) -> dict[str, nn.Module]:
    """Networks from a checkpoint's ``net_configs`` and ``nets`` (state dicts)."""
    nets: dict[str, nn.Module] = {}
    for key, cfg in data["net_configs"].items():
        net = build_segnet(cfg)
        net.load_state_dict(data["nets"][key])
        nets[key] = net
    return nets


def load_supervised(
    path: str | Path, *, method: str | None = None, device: str | torch.device = "cpu"
) -> SupervisedMethod:
    """Load a trained baseline from a run folder, a checkpoint or a bundle folder.

    Args:
        path: run folder (its ``best.pt``, else ``last.pt``), a ``.pt`` file written by
            :func:`mecca.methods.supervised.train.train_supervised`, a bundle folder written
            by :func:`export_supervised`, or a shipped bundle's name.
        method: when given, the model must be of this method (ConfigError otherwise).
        device: where the networks run.
    """
    ckpt = bundle.model_checkpoint(path, "supervised model")
    data = load_checkpoint(ckpt)
    kind = checkpoint_method(data)
    if kind not in SEGMENTERS + REFINERS:
        raise InputError(
            f"not a supervised-baseline checkpoint (a {kind} model)",
            path=ckpt,
            hint=f"use --method {kind}",
        )
    if method is not None and kind != method:
        raise ConfigError(f"{path} holds a {kind} model, not {method}", hint=f"use method {kind}")
    return method_from_nets(kind, nets_from_payload(data), data["config"]["grid"], device)


def supervised_factory(method: str) -> Callable[..., InteractiveMethod]:
    """The registry factory of the baseline ``method``."""

    def factory(model: str | None = None, device: str = "cpu") -> InteractiveMethod:
        """A trained ``method`` baseline: a run folder (best.pt, else last.pt), a checkpoint
        file, a bundle folder or a shipped bundle's name."""
        return load_supervised(model or bundle.default_bundle(method), method=method, device=device)

    return factory
