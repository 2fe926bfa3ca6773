"""The model store: trained models as MONAI-Bundle-layout folders, for any method.

A bundle folder::

    NAME/
      configs/metadata.json   what the model is: its method (the registry name), the
                              method's own description of its networks and training, the
                              SHA-256 of models/model.pt
      models/model.pt         the method's weights as plain data (a checkpoint naming its
                              method), loaded with ``torch.load(weights_only=True)``
      docs/README.md          the model card

The layout follows the MONAI Bundle specification (configs/, models/, docs/) so that the
files are where a MONAI user looks; the networks are MECCA's, built from the metadata by
the method's family (``mecca.methods.<family>.bundle``), not from a MONAI inference
config. This module knows no method: it writes and checks the layout, finds shipped
bundles (``mecca/models/``) by name and picks a learned method's default one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mecca._version import __version__
from mecca.checkpoint import save_checkpoint
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.io import atomic_write

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
    ``weights_only``-loadable), ``configs/metadata.json`` (``metadata``, which names the
    ``method``, plus name, version,
    description, source checkpoint and the weights' SHA-256) and ``docs/README.md``
    (``card(metadata)``; rewritten on every export, so that it never names another
    checkpoint's SHA-256: notes added by hand, such as test figures, must be added again)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise OverwriteError("bundle folder is not empty", path=out, hint="pass --force")
    weights = out / "models" / "model.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(weights, weights_payload, method=str(metadata["method"]))
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


def shipped_bundles() -> list[str]:
    """Names of the bundles shipped in the package."""
    if not SHIPPED.is_dir():
        return []
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "configs" / "metadata.json").is_file())


def default_bundle(method: str, dataset: str | None = None) -> str:
    """The shipped bundle a learned method loads by default: ``<method>_<dataset>`` when
    shipped, else ``<method>_phantom`` when shipped, else the first shipped ``<method>_*``
    bundle (by name), else ``<method>_phantom`` (whose absence the loader reports). A
    method trained for any dataset ships one bundle named ``<method>`` (the generalist),
    taken after ``<method>_<dataset>``."""
    shipped = shipped_bundles()
    for name in (f"{method}_{dataset}", method, f"{method}_phantom"):
        if name in shipped:
            return name
    others = [b for b in shipped if b.startswith(f"{method}_")]
    return others[0] if others else f"{method}_phantom"


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


def _trained_on(meta: dict[str, Any], name: str) -> list[str]:
    """The datasets a bundle was trained on: the metadata's ``datasets`` (the generalist),
    else the ``<dataset>`` of its ``[<variant>_]<method>_<dataset>`` name."""
    if meta.get("datasets"):
        held_out = {str(h) for h in meta.get("held_out") or []}
        names = [Path(str(d)).name for d in meta["datasets"]]
        return [n for n in names if n not in held_out]
    marker = f"{meta.get('method')}_"
    return [name.split(marker, 1)[1]] if marker in name else []


def _validation_figure(meta: dict[str, Any]) -> str | None:
    """The validation Dice the metadata records, as one phrase (None when it has none)."""
    training = meta.get("training") or {}
    per_step = training.get("validation_dice_per_step")
    groups = (meta.get("validation") or {}).get("groups")
    if groups:
        seen = [g["dice_per_step"][-1] for k, g in groups.items() if not k.startswith("unseen")]
        unseen = [g["dice_per_step"][-1] for k, g in groups.items() if k.startswith("unseen")]
        text = f"val Dice {100 * sum(seen) / len(seen):.1f} % (mean of {len(seen)} datasets"
        if unseen:
            text += f"; held-out data {100 * sum(unseen) / len(unseen):.1f} %"
        return text + ", after box + 5 clicks)"
    if per_step and len(per_step) > 1:
        return f"val Dice {100 * per_step[-1]:.1f} % after step {len(per_step)}"
    if training.get("validation_dice") is not None:
        return f"val Dice {100 * float(training['validation_dice']):.1f} %"
    return None


def _test_figure(card: str, names: set[str]) -> str | None:
    """The model's test Dice from its card's first test section: after the last step in
    the table row named after the model (``names``) or marked "this model" on the test
    split, else the section's first "Dice x %" (else a pointer to the card)."""
    section = re.split(r"^## ", card, flags=re.M)
    for part in section[1:]:
        heading, _, body = part.partition("\n")
        if "test" not in heading.lower():
            continue
        rows = [
            [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
            for line in body.splitlines()
            if line.strip().startswith("|") and "---" not in line
        ]
        if len(rows) < 2:
            prose = re.search(r"(\d+\.\d+) ?% Dice|Dice (\d+\.\d+) ?%", body)
            if prose:
                return f"test Dice {prose.group(1) or prose.group(2)} % ({heading})"
            return f"test figures: see the model card ({heading})"
        steps = [i for i, h in enumerate(rows[0]) if h.lower().startswith("step")]
        for row in rows[1:]:
            ours = row[0] in names or ("this model" in row and "test" in row)
            if ours and steps and len(row) > steps[-1]:
                value = re.match(r"[\d.]+", row[steps[-1]])
                if value:
                    return f"test Dice {value.group()} % after {rows[0][steps[-1]]} ({heading})"
        return f"test figures: see the model card ({heading})"
    return None


def bundle_summary(folder: Path) -> dict[str, Any]:
    """What a user needs to pick a bundle: name, method (and ``variant``, the name without
    its dataset: a registered method of its own for the IteR-MRL variants), training data
    and target, the headline validation and test figures (from metadata and model card),
    the card's path, and ``error`` when the bundle is damaged (weights not matching their
    SHA-256)."""
    folder = Path(folder)
    summary: dict[str, Any] = {"name": folder.name, "card": str(folder / "docs" / "README.md")}
    try:
        meta = checked_metadata(folder)
    except InputError as err:
        return {**summary, "error": str(err)}
    method = str(meta.get("method") or "")
    config = meta.get("train_config") or {}
    labels = re.search(r"\blabels? \d+(?:\s*\+\s*\d+)*", str(meta.get("description", "")))
    card_path = folder / "docs" / "README.md"
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    datasets = _trained_on(meta, folder.name)
    variant = folder.name.removesuffix(f"_{datasets[0]}") if datasets else folder.name
    return {
        **summary,
        "method": method,
        "variant": variant,
        "datasets": datasets,
        "held_out": [str(h) for h in meta.get("held_out") or []],
        "split": config.get("train_split") or "train",
        "target": config.get("target") or ("every target" if meta.get("datasets") else "default"),
        "labels": labels.group() if labels else None,
        "validation": _validation_figure(meta),
        "test": _test_figure(card, {method, variant, folder.name}),
    }


def shipped_summaries() -> list[dict[str, Any]]:
    """:func:`bundle_summary` of every shipped bundle, by name."""
    return [bundle_summary(SHIPPED / name) for name in shipped_bundles()]
