"""The partial-segmentation model's bundles: export a run (a folder of
:mod:`mecca.bundle`'s layout whose ``models/model.pt`` holds the config, the cVAE's weights
and the step); :meth:`~mecca.methods.partial.method.PartialMethod.from_run` loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mecca import bundle
from mecca.checkpoint import load_checkpoint
from mecca.methods.partial.model import config_from_checkpoint
from mecca.training.run import read_log


def export_partial(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "last.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a bundle (:mod:`mecca.bundle`'s layout) from a partial-segmentation run;
    :meth:`~mecca.methods.partial.method.PartialMethod.from_run` reads it. The run keeps only
    ``last.pt`` (training has no validation split to pick by)."""
    run, out = Path(run), Path(out)
    data = load_checkpoint(run / checkpoint)
    cfg = config_from_checkpoint(data)
    summary = _partial_summary(run, int(data["step"]))
    metadata = {
        "method": "partial",
        "train_config": data["config"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "num_channels": 3,
                    "spatial_shape": list(cfg.grid),
                    "channel_def": {
                        "0": "image (z-scored)",
                        "1": "x_m decided",
                        "2": "x_s decided foreground",
                    },
                }
            },
            "outputs": {
                "proposal": {
                    "num_channels": 2,
                    "spatial_shape": list(cfg.grid),
                    "channel_def": {"0": "y_m partialness", "1": "y_s foreground"},
                }
            },
        },
        "training": summary,
    }

    def card(meta: dict[str, Any]) -> str:
        return bundle.card_text(
            meta,
            description,
            [
                f"Method: partial (probabilistic partial segmentation, cVAE, {cfg.dims}D), "
                f"grid {list(cfg.grid)}, decoder width {cfg.dec_width}, latent {cfg.latent_size}",
                f"Training: {summary['steps']} steps of {cfg.batch_size} pairs, "
                f"{summary['train_seconds'] / 3600:.2f} h of steps on {summary['threads']} "
                f"thread(s), torch {summary['torch']}; last logged loss {summary['last_loss']}",
            ],
        )

    payload = {k: data[k] for k in ("method", "config", "net", "step")}
    return bundle.write_bundle(
        out, payload, metadata, card,
        name=name, description=description, checkpoint=checkpoint, force=force,
    )  # fmt: skip


def _partial_summary(run: Path, step: int) -> dict[str, Any]:
    """Steps, summed step time and the machine from a partial run's log.jsonl."""
    records = read_log(run)
    start = next((r for r in records if r.get("type") == "start"), {})
    by_step = {int(r["step"]): r for r in records if r.get("type") == "train"}  # a resume
    train = [by_step[s] for s in sorted(by_step) if s <= step]  # may log a step again
    seconds, last = 0.0, 0
    for r in train:  # each record's seconds_per_step covers the steps since the one before
        seconds += float(r["seconds_per_step"]) * (int(r["step"]) - last)
        last = int(r["step"])
    return {
        "steps": step,
        "train_seconds": seconds,
        "threads": start.get("threads"),
        "torch": start.get("torch"),
        "machine": start.get("machine"),
        "last_loss": round(float(train[-1]["loss"]), 4) if train else None,
    }
