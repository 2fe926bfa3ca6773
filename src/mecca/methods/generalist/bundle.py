"""Export the generalist as a small model bundle with a model card, and load it back.

``python -m mecca.methods.generalist.bundle RUN OUT [--checkpoint best.pt] [--force]``

The bundle follows the MONAI-Bundle folder layout the project's other models use::

    OUT/
      configs/metadata.json   method, grid, network config, channels, prompts, held-out
                              data, training settings and validation figures, SHA-256
      models/model.pt         {"kind", "net_config", "grid", "net": float16 state dict}
                              (``torch.load(weights_only=True)``; about 4.5 MB)
      models/box_model.pt     optional, the same layout: the weights for inputs with a box
                              (:class:`~.method.GeneralistMethod`'s ``box_net``), added by
                              :func:`add_box_weights` (``--box``)
      models/slice_box_model.pt  optional, the same layout: the weights for a box drawn on
                              one slice (the CVPR 2025 box; ``slice_box_net``), added by
                              :func:`add_box_weights` with ``kind="slice_box"`` (``--slice-box``)
      docs/README.md          the model card

Weights are stored as float16 (half the size; the network runs in float32 after
loading, and the probabilities differ from the float32 weights' by about 1e-3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mecca.errors import InputError, MeccaError, OverwriteError
from mecca.io import atomic_write
from mecca.methods.generalist.net import (
    GeneralistNet,
    GeneralistNetConfig,
    count_parameters,
    time_forward,
)

CHANNELS = {
    "0": "image: the crop clipped to its 0.5/99.5 percentiles, z-scored",
    "1": "previous probability (0 before the first step, or init_prob)",
    "2": "foreground clicks: max of Gaussian bumps, sigma 1.5 grid voxels",
    "3": "background clicks: the same",
    "4": "box: 1 inside the box, 0 outside (all 0 without a box)",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_log(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _weights_file(path: Path) -> Path:
    """The weights behind a bundle folder, a run folder or a checkpoint file."""
    if path.is_file():
        return path
    for candidate in (path / "models" / "model.pt", path / "best.pt", path / "last.pt"):
        if candidate.is_file():
            return candidate
    raise InputError(
        "no generalist model here",
        path=path,
        hint="give a bundle folder, a run folder (best.pt / last.pt) or a checkpoint file",
    )


BOX_KINDS = ("box", "slice_box")
"""The extra weight sets a bundle may hold: ``models/<kind>_model.pt``, described by the
metadata's ``<kind>_model``."""


def _check_bundle(folder: Path, *, kind: str | None = None) -> None:
    """InputError when a bundle's weights (``kind``: one of :data:`BOX_KINDS`, its extra
    weights) do not match the SHA-256 of its metadata."""
    meta = json.loads((folder / "configs" / "metadata.json").read_text(encoding="utf-8"))
    file = f"{kind}_model.pt" if kind else "model.pt"
    expected = (meta.get(f"{kind}_model") or {}).get("sha256") if kind else meta.get("sha256")
    if _sha256(folder / "models" / file) != expected:
        raise InputError(
            f"models/{file} does not match the SHA-256 in configs/metadata.json",
            path=folder,
            hint="the file is damaged or was replaced; export the bundle again",
        )


def load_weights(path: str | Path) -> tuple[GeneralistNet, tuple[int, int, int]]:
    """The network (float32, eval mode) and its grid from a bundle, run or checkpoint."""
    path = Path(path).expanduser()
    if (path / "configs" / "metadata.json").is_file():
        _check_bundle(path)
    return _read_weights(_weights_file(path))


def load_box_weights(
    path: str | Path, grid: Sequence[int], kind: str = "box"
) -> GeneralistNet | None:
    """A bundle's box weights (``models/<kind>_model.pt``, ``kind`` one of
    :data:`BOX_KINDS`; float32, eval mode), None for a bundle without them, a run folder or
    a checkpoint; ``grid`` is the bundle's grid, which they must share."""
    folder = Path(path).expanduser()
    weights = folder / "models" / f"{kind}_model.pt"
    if not (folder / "configs" / "metadata.json").is_file() or not weights.is_file():
        return None
    _check_bundle(folder, kind=kind)
    net, box_grid = _read_weights(weights)
    if tuple(box_grid) != tuple(int(g) for g in grid):
        raise InputError(
            f"the box weights' grid {box_grid} differs from {tuple(grid)}", path=weights
        )
    return net


def _read_weights(weights: Path) -> tuple[GeneralistNet, tuple[int, int, int]]:
    try:
        data = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise InputError(
            f"cannot read the weights ({err.__class__.__name__})", path=weights
        ) from err
    if not isinstance(data, dict) or data.get("kind") != "generalist":
        raise InputError("not a generalist model", path=weights)
    net = GeneralistNet(GeneralistNetConfig.from_dict(data["net_config"]))
    net.load_state_dict({k: v.float() for k, v in data["net"].items()})
    g = data["grid"]
    return net.eval(), (int(g[0]), int(g[1]), int(g[2]))


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint of the generalist (InputError for anything else)."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("kind") != "generalist":
        raise InputError("not a generalist checkpoint", path=path)
    return data


def _half_payload(data: dict[str, Any]) -> dict[str, Any]:
    """What a bundle stores of a checkpoint: its network config, grid and float16 weights."""
    return {
        "kind": "generalist",
        "net_config": data["net_config"],
        "grid": data["grid"],
        "net": {k: (v.half() if v.is_floating_point() else v) for k, v in data["net"].items()},
    }


def _forward_ms(config: GeneralistNetConfig, grid: list[int]) -> dict[str, Any]:
    """The network's median forward time on its grid, measured here with one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms = 1000 * time_forward(config, (int(grid[0]), int(grid[1]), int(grid[2])))
    finally:
        torch.set_num_threads(before)
    return {
        "threads": 1,
        "median_ms": round(ms, 1),
        "cpus": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 1),
        "machine": platform.machine(),
    }


def _val_record(run: Path, iteration: int) -> dict[str, Any] | None:
    vals = [r for r in _read_log(run) if r.get("type") == "val" and r["iteration"] == iteration]
    return vals[-1] if vals else None


def _training_facts(run: Path, iteration: int) -> dict[str, Any]:
    """Iterations, hours of training and hardware from the run's log."""
    records = _read_log(run)
    train = {r["iteration"]: r for r in records if r.get("type") == "train"}
    seconds = sum(r["seconds"] for i, r in train.items() if i <= iteration)
    starts = [r for r in records if r.get("type") == "start"]
    start = starts[-1] if starts else {}
    return {
        "iterations": iteration,
        "train_hours": round(seconds / 3600, 2),
        "device": start.get("device"),
        "threads": start.get("threads"),
        "torch": start.get("torch"),
        "data": start.get("data"),
    }


def export_bundle(
    run: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "best.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """Write a bundle from a run's checkpoint; returns the bundle folder. ``description``
    (one paragraph) goes into the metadata and the model card."""
    run, out = Path(run), Path(out)
    data = _read_checkpoint(run / checkpoint)
    if out.exists() and any(out.iterdir()) and not force:
        raise OverwriteError("bundle folder is not empty", path=out, hint="pass --force")
    weights = out / "models" / "model.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    payload = _half_payload(data)
    atomic_write(weights, lambda tmp: torch.save(payload, tmp))
    for kind in BOX_KINDS:  # an old bundle's: not these
        (out / "models" / f"{kind}_model.pt").unlink(missing_ok=True)
    cfg = data["config"]
    net = GeneralistNet(GeneralistNetConfig.from_dict(data["net_config"]))
    meta = {
        "name": name or out.name,
        "method": "generalist",
        "description": description,
        "version": "1.0.0",
        "grid": data["grid"],
        "net_config": data["net_config"],
        "parameters": count_parameters(net),
        "channels": CHANNELS,
        "accepts": ["foreground", "background", "box"],
        "held_out": cfg["held_out"],
        "datasets": cfg["datasets"],
        "train_config": cfg,
        "checkpoint": checkpoint,
        "training": _training_facts(run, int(data["iteration"])),
        "validation": _val_record(run, int(data["iteration"])),
        "forward_ms": _forward_ms(net.config, data["grid"]),
        "sha256": _sha256(weights),
    }
    _write_meta(out, meta)
    return out


def _write_meta(out: Path, meta: dict[str, Any]) -> None:
    """configs/metadata.json and the model card made from it."""
    (out / "configs").mkdir(exist_ok=True)
    text = json.dumps(meta, indent=1)
    atomic_write(out / "configs" / "metadata.json", lambda t: t.write_text(text, encoding="utf-8"))
    (out / "docs").mkdir(exist_ok=True)
    card = model_card(meta)
    atomic_write(out / "docs" / "README.md", lambda t: t.write_text(card, encoding="utf-8"))


def add_box_weights(
    bundle: str | Path, checkpoint: str | Path, description: str, kind: str = "box"
) -> Path:
    """Add (or replace) a bundle's box weights: ``checkpoint`` (a generalist checkpoint or a
    run folder's best.pt) as ``models/<kind>_model.pt`` (``kind``: ``box`` for every box,
    ``slice_box`` for a box drawn on one slice), its SHA-256 and ``description`` (how they
    were made) in the metadata and the model card; returns the bundle folder."""
    if kind not in BOX_KINDS:
        raise InputError(f"unknown box weights {kind!r}", hint=f"one of {', '.join(BOX_KINDS)}")
    bundle = Path(bundle)
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise InputError("not a generalist bundle (no configs/metadata.json)", path=bundle)
    data = _read_checkpoint(_weights_file(Path(checkpoint)))
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if list(data["grid"]) != list(meta["grid"]):
        raise InputError(f"the checkpoint's grid {data['grid']} is not the bundle's {meta['grid']}")
    weights = bundle / "models" / f"{kind}_model.pt"
    payload = _half_payload(data)
    atomic_write(weights, lambda tmp: torch.save(payload, tmp))
    meta[f"{kind}_model"] = {"description": description, "sha256": _sha256(weights)}
    _write_meta(bundle, meta)
    return bundle


def _val_lines(val: dict[str, Any] | None) -> list[str]:
    if not val:
        return ["Not validated at this checkpoint."]
    lines = [
        "| val group | cases | box | +1 | +2 | +3 | +4 | +5 clicks |",
        "|---|---|" + "---|" * 6,
    ]
    for group, v in val["groups"].items():
        cells = " | ".join(f"{100 * d:.1f}" for d in v["dice_per_step"])
        lines.append(f"| {group} | {v['n']} | {cells} |")
    return lines


def _box_lines(box: dict[str, Any] | None, slice_box: dict[str, Any] | None) -> list[str]:
    lines = []
    if box:
        lines.append(
            "- Box weights: `models/box_model.pt` (float16, the same network), SHA-256 "
            f"`{box['sha256']}`; they run every input whose box channel is set (a box prompt, "
            "or the ROI as the box), `models/model.pt` every points-only input. "
            + box["description"]
        )
    if slice_box:
        lines.append(
            "- Slice-box weights: `models/slice_box_model.pt` (float16, the same network), "
            f"SHA-256 `{slice_box['sha256']}`; they run a box drawn on one slice (the CVPR "
            "2025 box: the middle slice's 2D box over the object's slice range), encoded as "
            "drawn (`prompts.slice_box_map`), where the caller says the box is one "
            "(`GeneralistMethod.for_slice_boxes`: the CVPR 2025 protocol and "
            "`mecca predict-npz`). " + slice_box["description"]
        )
    return lines


def model_card(meta: dict[str, Any]) -> str:
    """The model card (markdown) from a bundle's metadata."""
    tr, cfg = meta["training"], meta["train_config"]
    fwd = meta["forward_ms"]
    lines = [
        f"# {meta['name']}",
        "",
        "A click-conditioned 3D network for any target (issue 28): image crop, previous "
        "probability, foreground and background click maps and a box map in, a "
        "probability out (`mecca.methods.generalist`).",
        "",
        *([meta["description"], ""] if meta.get("description") else []),
        f"- Network: residual U-Net {meta['net_config']['widths']}, "
        f"{meta['parameters'] / 1e6:.2f} M parameters, grid {meta['grid']} (i, j, k)",
        f"- Prompts: {', '.join(meta['accepts'])} clicks; a box = two BOX clicks at its "
        "corners, the ROI = box + 25 % of its size per side "
        "(`mecca.interaction.clicks.box_prompt`); edge "
        "points as a foreground/background pair",
        f"- Forward pass: {fwd['median_ms']} ms (median, 1 CPU thread, measured at export "
        f"on {fwd['cpus']} {fwd['machine']} cores at load average {fwd['load_average']})",
        f"- Trained on the `{cfg['train_split']}` splits of: "
        + ", ".join(Path(d).name for d in meta["datasets"] if Path(d).name not in meta["held_out"])
        + f" (datasets without splits: every case), plus {cfg['synthetic_volumes']} "
        "procedural volumes"
        + (
            f" and {cfg['large_synthetic_volumes']} with an organ-sized object"
            if cfg.get("large_synthetic_volumes")
            else ""
        )
        + "; every target of each",
        f"- Held out (never trained on): {', '.join(meta['held_out'])}",
        f"- Training: {tr['iterations']} iterations of {cfg['batch_size']} crops "
        f"(0-{len(cfg['round_weights']) - 1} simulated correction rounds each), "
        f"{tr['train_hours']} h on {tr['device']} with {tr['threads']} thread(s), torch "
        f"{tr['torch']}; AdamW lr {cfg['lr']}, cosine",
        f"- Weights: `models/model.pt` (float16), SHA-256 `{meta['sha256']}`",
        *_box_lines(meta.get("box_model"), meta.get("slice_box_model")),
        "",
        f"Validation Dice (%) on the `{cfg['val_split']}` splits (first {cfg['val_cases']} "
        "cases per target), CVPR 2025 protocol: box, then clicks at the interior-most voxel "
        "of the largest error; `unseen:` rows are held-out data:",
        "",
        *_val_lines(meta["validation"]),
        "",
        "Exported from the run's `" + meta["checkpoint"] + "` with `mecca export-model RUN "
        f"--out OUT --checkpoint {meta['checkpoint']} --force` (the same as "
        "`python -m mecca.methods.generalist.bundle RUN OUT --checkpoint "
        f"{meta['checkpoint']} --force`).",
        "",
    ]
    return "\n".join(lines)


def export_generalist(
    run: Path,
    out: Path,
    *,
    checkpoint: str = "best.pt",
    name: str | None = None,
    description: str = "",
    force: bool = False,
) -> Path:
    """The registry's export (``mecca export-model RUN --out OUT``): :func:`export_bundle`."""
    return export_bundle(
        run, out, checkpoint=checkpoint, name=name, description=description, force=force
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: export a run's checkpoint as a bundle."""
    parser = argparse.ArgumentParser(
        prog="python -m mecca.methods.generalist.bundle",
        description="Export a generalist run as a bundle.",
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default="best.pt")
    parser.add_argument("--name", default=None)
    parser.add_argument("--force", action="store_true")
    extra = parser.add_mutually_exclusive_group()
    extra.add_argument(
        "--box",
        action="store_true",
        help="add RUN's checkpoint to the bundle OUT as its box weights (models/box_model.pt)",
    )
    extra.add_argument(
        "--slice-box",
        action="store_true",
        help="add RUN's checkpoint to the bundle OUT as its weights for a box drawn on one "
        "slice (models/slice_box_model.pt)",
    )
    parser.add_argument(
        "--description", default="", help="with --box or --slice-box: how they were made"
    )
    args = parser.parse_args(argv)
    try:
        if args.box or args.slice_box:
            kind = "slice_box" if args.slice_box else "box"
            path = add_box_weights(args.out, args.run / args.checkpoint, args.description, kind)
        else:
            path = export_bundle(
                args.run, args.out, checkpoint=args.checkpoint, name=args.name, force=args.force
            )
    except MeccaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
