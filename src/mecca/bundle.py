"""Trained models as MONAI-Bundle-layout folders: export from a run, load as a method.

A bundle folder::

    NAME/
      configs/metadata.json   what the model is: method, network configs, hint encoding,
                              grid, actions, input/output description, training summary,
                              SHA-256 of models/model.pt
      models/model.pt         {"net": state dict, "confidence": state dict or None},
                              loaded with ``torch.load(weights_only=True)``
      docs/README.md          the model card

The layout follows the MONAI Bundle specification (configs/, models/, docs/) so that the
files are where a MONAI user looks; the network itself is MECCA's, built from the
metadata, not from a MONAI inference config. Bundles shipped with the package live in
``mecca/models/`` and are found by name (:func:`shipped_bundles`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mecca import __version__
from mecca.checkpoint import load_checkpoint, save_checkpoint
from mecca.config import build_config
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.hints import HintEncoder
from mecca.io import atomic_write
from mecca.methods.rl_agent import RLAgentMethod
from mecca.nets import ActorCritic, ConfidenceConfig, ConfidenceNet, PNetConfig
from mecca.rl.actions import ACTIONS

SHIPPED = Path(__file__).parent / "models"
"""Folder of the bundles shipped in the package."""


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_log(run: Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl (none when it has no log)."""
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


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


def write_bundle(
    out: Path,
    weights_payload: dict[str, Any],
    metadata: dict[str, Any],
    card: Callable[[dict[str, Any]], str],
    *,
    name: str | None,
    description: str,
    checkpoint: str,
    force: bool,
) -> Path:
    """The bundle layout shared by every exported model: ``models/model.pt`` (plain data,
    ``weights_only``-loadable), ``configs/metadata.json`` (``metadata`` plus name, version,
    description, source checkpoint and the weights' SHA-256) and ``docs/README.md``
    (``card(metadata)``; rewritten on every export, so that it never names another
    checkpoint's SHA-256: notes added by hand, such as test figures, must be added again)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise OverwriteError("bundle folder is not empty", path=out, hint="pass --force")
    weights = out / "models" / "model.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(weights, weights_payload)
    meta = {
        "name": name or out.name,
        "version": "1.0.0",
        "mecca_version": __version__,
        "description": description,
        **metadata,
        "checkpoint": checkpoint,
        "sha256": sha256(weights),
    }
    (out / "configs").mkdir(exist_ok=True)
    _write_text(out / "configs" / "metadata.json", json.dumps(meta, indent=1))
    (out / "docs").mkdir(exist_ok=True)
    _write_text(out / "docs" / "README.md", card(meta))
    return out


def card_text(meta: dict[str, Any], description: str, facts: list[str]) -> str:
    """A first model card: the name, the description, ``facts`` as a list and the weights'
    SHA-256 (test-split figures are added from the benchmark)."""
    lines = [f"# {meta['name']}", "", description, ""]
    lines += [f"- {fact}" for fact in facts]
    lines += [f"- Weights: `models/model.pt`, SHA-256 `{meta['sha256']}`", ""]
    return "\n".join(lines)


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
    from mecca.training import TrainConfig, hint_encoder  # the run's own channel rule

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
    return write_bundle(
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
        """The model as an :class:`~mecca.methods.base.InteractiveMethod`."""
        return RLAgentMethod(
            net=self.net,
            encoder=self.encoder(),
            confidence=self.confidence,
            actions=tuple(self.metadata["actions"]),
            name=self.metadata["method"],
            grid=self.grid,
            device=torch.device(device),
        )


def shipped_bundles() -> list[str]:
    """Names of the bundles shipped in the package."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "configs" / "metadata.json").is_file())


def resolve_bundle(name_or_path: str | Path) -> Path:
    """A bundle folder from a path or the name of a shipped bundle."""
    path = Path(name_or_path)
    if (path / "configs" / "metadata.json").is_file():
        return path
    if (SHIPPED / str(name_or_path) / "configs" / "metadata.json").is_file():
        return SHIPPED / str(name_or_path)
    raise ConfigError(
        f"no model bundle {str(name_or_path)!r}",
        hint=f"give a bundle folder or one of: {', '.join(shipped_bundles()) or '(none shipped)'}",
    )


def checked_metadata(folder: Path) -> dict[str, Any]:
    """A bundle's metadata, after checking its weights against the SHA-256 it records."""
    try:
        meta: dict[str, Any] = json.loads(
            (folder / "configs" / "metadata.json").read_text(encoding="utf-8")
        )
    except json.JSONDecodeError as err:
        raise InputError(f"corrupt metadata.json ({err})", path=folder) from err
    weights = folder / "models" / "model.pt"
    if not weights.is_file():
        raise InputError("bundle has no models/model.pt", path=folder)
    if sha256(weights) != meta.get("sha256"):
        raise InputError(
            "models/model.pt does not match the SHA-256 in configs/metadata.json",
            path=weights,
            hint="the file is damaged or was replaced; export the bundle again",
        )
    return meta


def model_checkpoint(path: str | Path, what: str) -> Path:
    """The checkpoint file behind ``path``: a ``.pt`` file, a run folder (``best.pt``, else
    ``last.pt``), a bundle folder or a shipped bundle's name (bundles: SHA-256 checked).
    ``what`` names the kind of model in the error message."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists() and (SHIPPED / str(path) / "configs" / "metadata.json").is_file():
        path = SHIPPED / str(path)
    if (path / "configs" / "metadata.json").is_file():
        checked_metadata(path)
        return path / "models" / "model.pt"
    for candidate in (path / "best.pt", path / "last.pt"):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"no {what} here",
        path=path,
        hint="give a run folder (best.pt / last.pt), a checkpoint file, a bundle folder or "
        f"a shipped bundle's name ({', '.join(shipped_bundles()) or 'none shipped'})",
    )


def load_bundle(name_or_path: str | Path) -> Bundle:
    """Load and check a bundle (SHA-256 of the weights against the metadata)."""
    path = resolve_bundle(name_or_path)
    meta = checked_metadata(path)
    weights = path / "models" / "model.pt"
    if "net_configs" in meta:  # written by mecca.supervised.export_supervised
        raise ConfigError(
            f"bundle {path.name!r} holds a supervised {meta.get('method')} baseline",
            hint=f"use --method {meta.get('method')} (mecca.methods.supervised.load_supervised)",
        )
    if meta.get("method") == "partial":  # written by mecca.methods.partial_method
        raise ConfigError(
            f"bundle {path.name!r} holds a partial-segmentation model",
            hint="use --method partial (mecca.methods.partial_method.PartialMethod.from_run)",
        )
    data = load_checkpoint(weights)
    net = ActorCritic(build_config(PNetConfig, meta["net_config"]))
    net.load_state_dict(data["net"])
    conf = None
    if meta.get("confidence_config") is not None:
        conf = ConfidenceNet(build_config(ConfidenceConfig, meta["confidence_config"]))
        conf.load_state_dict(data["confidence"])
    return Bundle(path, meta, net.eval(), None if conf is None else conf.eval())
