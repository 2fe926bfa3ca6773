"""Datasets in the Medical Segmentation Decathlon (MSD) folder layout.

A dataset folder holds ``imagesTr/<case>.<ext>``, ``labelsTr/<case>.<ext>`` (label maps on
the image's grid), ``dataset.json`` and optionally ``splits.json``. ``dataset.json`` gives
``labels`` ({value: name}), named binary ``targets`` ({name: [label values]}) and a
``default_target``; a dataset of unrelated single cases may instead give per-case labels
under ``cases`` ({case id: {"labels": {value: name}, ...}}). ``splits.json`` maps split
names (train / val / test) to lists of case ids.

A *target* is the set of label values whose union is the binary mask to segment, e.g. a
whole tumour made of labels 1 + 2 + 3 + 4.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mecca.errors import DatasetError, InputError, OverwriteError
from mecca.io import (
    FORMATS,
    Volume,
    atomic_write,
    file_extension,
    load,
    load_label,
    save_mask,
    save_volume,
)

logger = logging.getLogger(__name__)

LAYOUT = (
    "expected dataset.json, imagesTr/<case>.<ext> and labelsTr/<case>.<ext>"
    " (optional splits.json) in the dataset folder"
)
_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Case:
    """One case of a dataset: its id and files (label_path None when it has no label)."""

    case_id: str
    image_path: Path
    label_path: Path | None


# ----------------------------------------------------------------------------- parsing


def _read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file; DatasetError when missing or malformed."""
    if not path.is_file():
        raise DatasetError(f"no {what}", path=path, hint=LAYOUT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{what} cannot be read ({exc})", path=path, hint="fix it") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{what} must hold a JSON object", path=path)
    return data


def _parse_labels(raw: Any, path: Path, where: str = "labels") -> dict[int, str]:
    """{value: name} from a JSON {"value": name} object."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DatasetError(f"{where} must be an object {{value: name}}", path=path)
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where} keys must be integer label values", path=path) from exc


def _parse_values(raw: Any, name: str, path: Path) -> tuple[int, ...]:
    """Sorted unique label values of one target."""
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise DatasetError(f"target {name!r} must be a non-empty list of label values", path=path)
    try:
        return tuple(sorted({int(v) for v in raw}))
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"target {name!r} holds a non-integer label value", path=path) from exc


def _parse_targets(raw: Any, labels: Mapping[int, str], path: Path) -> dict[str, tuple[int, ...]]:
    """{name: label values}, each value checked against the dataset's labels when known."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DatasetError("targets must be an object {name: [label values]}", path=path)
    targets = {str(name): _parse_values(values, str(name), path) for name, values in raw.items()}
    for name, values in targets.items():
        unknown = [v for v in values if labels and v not in labels]
        if unknown:
            raise DatasetError(
                f"target {name!r} uses label value(s) {unknown} missing from labels",
                path=path,
                hint=f"labels are {_listing(labels)}",
            )
    return targets


def _parse_case_labels(raw: Any, path: Path) -> dict[str, dict[int, str]]:
    """Per-case {case id: {value: name}} from dataset.json's ``cases`` object."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise DatasetError("cases must be an object {case id: {labels: ...}}", path=path)
    out = {}
    for case_id, entry in raw.items():
        labels = entry.get("labels") if isinstance(entry, Mapping) else None
        out[str(case_id)] = _parse_labels(labels, path, where=f"cases.{case_id}.labels")
    return out


def _parse_splits(
    raw: Mapping[str, Any], known: Mapping[str, Case], path: Path
) -> dict[str, tuple[str, ...]]:
    """{split: case ids}, every id checked against the cases found on disk."""
    splits: dict[str, tuple[str, ...]] = {}
    for name, ids in raw.items():
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DatasetError(f"split {name!r} must be a list of case ids", path=path)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DatasetError(
                f"split {name!r} names {len(unknown)} case(s) not in imagesTr: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}",
                path=path,
                hint="every case id in splits.json needs imagesTr/<case id>.<ext>",
            )
        splits[str(name)] = tuple(ids)
    return splits


def _listing(labels: Mapping[int, str]) -> str:
    """'1 (liver), 2 (spleen)' for messages."""
    return ", ".join(f"{v} ({n})" for v, n in sorted(labels.items()) if v != 0) or "(none)"


# ----------------------------------------------------------------------------- files


def _case_id(path: Path) -> str | None:
    """Case id of an image file or DICOM folder in imagesTr, None for other entries."""
    if path.name.startswith("."):
        return None
    if path.is_dir():
        return path.name
    ext = file_extension(path)
    return path.name[: -len(ext)] if ext in FORMATS else None


def _entries(folder: Path) -> dict[str, Path]:
    """{case id: path} of the images (or labels) in a folder."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        case_id = _case_id(path)
        if case_id is None:
            continue
        if case_id in found:
            raise DatasetError(
                f"case {case_id!r} has two files: {found[case_id].name} and {path.name}",
                path=folder,
                hint="keep one file per case",
            )
        found[case_id] = path
    return found


def _find_cases(root: Path) -> dict[str, Case]:
    """Cases of imagesTr with their labelsTr file when there is one, sorted by id."""
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        raise DatasetError("no imagesTr folder", path=root, hint=LAYOUT)
    images = _entries(images_dir)
    if not images:
        raise DatasetError("imagesTr holds no image files", path=images_dir, hint=LAYOUT)
    labels = _entries(root / "labelsTr")
    return {cid: Case(cid, images[cid], labels.get(cid)) for cid in sorted(images)}


# ----------------------------------------------------------------------------- dataset


class Dataset:
    """An MSD-layout dataset folder: its cases, splits, labels and named targets.

    Use :func:`open_dataset` to make one.
    """

    def __init__(
        self,
        root: Path,
        info: Mapping[str, Any],
        cases: Mapping[str, Case],
        splits: Mapping[str, tuple[str, ...]],
    ) -> None:
        path = root / "dataset.json"
        self.root = root
        self.info = dict(info)
        self.name = str(info.get("name", root.name))
        self._cases = dict(cases)
        self._splits = dict(splits)
        self._labels = _parse_labels(info.get("labels"), path)
        self._case_labels = _parse_case_labels(info.get("cases"), path)
        self._targets = _parse_targets(info.get("targets"), self._labels, path)
        default = info.get("default_target")
        if default is not None and str(default) not in self._targets:
            raise DatasetError(
                f"default_target {default!r} is not one of the targets",
                path=path,
                hint=f"targets: {', '.join(self._targets) or '(none)'}",
            )
        self._default = None if default is None else str(default)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self._cases)} cases, root={str(self.root)!r})"

    def __len__(self) -> int:
        return len(self._cases)

    @property
    def targets(self) -> dict[str, tuple[int, ...]]:
        """Named targets: {name: label values whose union is the binary mask}."""
        return dict(self._targets)

    @property
    def default_target(self) -> str | None:
        """Name of the target used when none is asked for (None if dataset.json has none)."""
        return self._default

    @property
    def labels(self) -> dict[int, str]:
        """Dataset-wide {label value: name} (empty when labels are given per case)."""
        return dict(self._labels)

    @property
    def splits(self) -> dict[str, tuple[str, ...]]:
        """{split name: case ids} from splits.json (empty when there is none)."""
        return dict(self._splits)

    def case(self, case_id: str) -> Case:
        """The case with this id; DatasetError listing some ids when unknown."""
        if case_id not in self._cases:
            ids = list(self._cases)
            more = " ..." if len(ids) > 10 else ""
            raise DatasetError(
                f"no case {case_id!r} (it has {len(ids)}: {', '.join(ids[:10])}{more})",
                path=self.root,
            )
        return self._cases[case_id]

    def cases(self, split: str | None = None) -> list[Case]:
        """All cases sorted by id, or those of one split in the split file's order."""
        if split is None:
            return list(self._cases.values())
        if split not in self._splits:
            listing = ", ".join(self._splits) if self._splits else "none: there is no splits.json"
            raise DatasetError(
                f"no split {split!r} (splits: {listing})",
                path=self.root / "splits.json",
                hint="pass one of the splits, or no split for all cases",
            )
        return [self._cases[cid] for cid in self._splits[split]]

    def labels_of(self, case: Case | str) -> dict[int, str]:
        """{label value: name} valid for one case (per-case labels when the dataset has them)."""
        case_id = case.case_id if isinstance(case, Case) else case
        return dict(self._case_labels.get(case_id, self._labels))

    def _valid_labels(self, case: Case | str | None) -> dict[int, str]:
        """Labels a target may use: the case's, or every label the dataset names."""
        if case is not None:
            return self.labels_of(case)
        merged = dict(self._labels)
        for labels in self._case_labels.values():
            merged.update(labels)
        return merged

    def _check_values(self, values: Sequence[int], valid: Mapping[int, str]) -> tuple[int, ...]:
        """Sorted unique values, refusing background (0) and values the dataset lacks."""
        out = tuple(sorted({int(v) for v in values}))
        if not out or 0 in out:
            raise DatasetError(
                f"label values {list(values)} must be non-empty and exclude 0 (background)",
                path=self.root,
                hint=f"valid label values: {_listing(valid)}",
            )
        unknown = [v for v in out if valid and v not in valid]
        if unknown:
            raise DatasetError(
                f"unknown label value(s) {unknown}",
                path=self.root / "dataset.json",
                hint=f"valid label values: {_listing(valid)}",
            )
        return out

    def _named_target(self, target: str, valid: Mapping[int, str]) -> tuple[int, ...]:
        """Values of a named target, or of a label called ``target``."""
        if target in self._targets:
            return self._targets[target]
        by_name = {name: value for value, name in valid.items() if value != 0}
        if target in by_name:
            return (by_name[target],)
        raise DatasetError(
            f"unknown target {target!r}",
            path=self.root / "dataset.json",
            hint=f"targets: {', '.join(self._targets) or '(none)'}; label names: "
            f"{', '.join(by_name) or '(none)'}",
        )

    def resolve_target(
        self,
        target: str | None = None,
        labels: Sequence[int] | None = None,
        *,
        case: Case | str | None = None,
    ) -> tuple[int, ...]:
        """Label values of a target: a name, explicit values, or the default target.

        Args:
            target: a target name from dataset.json, or a label name (a one-label target).
            labels: label values given explicitly (instead of target).
            case: check against this case's labels (datasets with per-case labels).

        Returns:
            Sorted unique label values (never 0) whose union is the binary mask.

        Raises:
            DatasetError: unknown name or value (listing the valid ones), both or neither
                given when the dataset has no default target.
        """
        valid = self._valid_labels(case)
        if target is not None and labels is not None:
            raise DatasetError("give a target name or label values, not both", path=self.root)
        if labels is not None:
            return self._check_values(labels, valid)
        if target is not None:
            return self._named_target(target, valid)
        if self._default is None:
            raise DatasetError(
                "dataset.json names no default target",
                path=self.root / "dataset.json",
                hint=f"pass a target (targets: {', '.join(self._targets) or '(none)'}) or label"
                f" values (labels: {_listing(valid)})",
            )
        return self._targets[self._default]

    def load_image(self, case: Case | str) -> Volume:
        """The case's image as a float32 Volume."""
        found = case if isinstance(case, Case) else self.case(case)
        return load(found.image_path)

    def load_case(
        self, case: Case | str, target: str | Sequence[int] | None = None
    ) -> tuple[Volume, np.ndarray]:
        """A case's image and its binary target mask on the image grid.

        Args:
            case: a Case or case id.
            target: target name, explicit label values, or None for the default target.

        Returns:
            (image Volume (float32, (I, J, K)), bool mask (I, J, K) = label in target values).

        Raises:
            DatasetError: the case has no label file, or the target is unknown.
            InputError: the target is empty in this case (or the files are unusable).
        """
        found = case if isinstance(case, Case) else self.case(case)
        if target is None or isinstance(target, str):
            values = self.resolve_target(target, case=found)
        else:
            values = self.resolve_target(labels=target, case=found)
        if found.label_path is None:
            raise DatasetError(
                f"case {found.case_id!r} has no label file",
                path=self.root / "labelsTr",
                hint=f"add labelsTr/{found.case_id}<ext> or pick a case with a label",
            )
        image = load(found.image_path)
        label = load_label(found.label_path, like=image)
        mask = np.isin(label.array, values)
        if not mask.any():
            raise InputError(
                f"case {found.case_id!r} has no voxel with label value(s) {list(values)}",
                path=found.label_path,
                hint="choose another target or case",
            )
        return image, mask


def open_dataset(root: str | Path) -> Dataset:
    """Open an MSD-layout dataset folder (see the module docstring).

    Raises:
        DatasetError: missing dataset.json or imagesTr, malformed JSON, splits naming
            unknown cases, targets naming unknown labels.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError("dataset folder not found", path=root, hint=LAYOUT)
    info = _read_json(root / "dataset.json", "dataset.json")
    cases = _find_cases(root)
    splits_path = root / "splits.json"
    splits = {}
    if splits_path.exists():
        splits = _parse_splits(_read_json(splits_path, "splits.json"), cases, splits_path)
    dataset = Dataset(root, info, cases, splits)
    logger.debug("opened %r", dataset)
    return dataset


# ----------------------------------------------------------------------------- writing


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write a JSON file atomically."""
    text = json.dumps(data, indent=1) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _check_case(case_id: str, volume: Volume, label: np.ndarray, labels: Mapping[int, str]) -> None:
    """DatasetError for a bad case id, or a label map off the grid or with unknown values."""
    if not _CASE_ID.fullmatch(case_id) or file_extension(case_id) in FORMATS:
        raise DatasetError(
            f"case id {case_id!r} is not a usable file name",
            hint="use letters, digits, '_', '-' and '.', without an image file ending",
        )
    if np.shape(label) != volume.shape:
        raise DatasetError(f"case {case_id!r}: label shape {np.shape(label)} != {volume.shape}")
    unknown = sorted(set(np.unique(np.asarray(label)).tolist()) - set(labels) - {0})
    if unknown:
        raise DatasetError(
            f"case {case_id!r} uses label value(s) {unknown} missing from labels",
            hint=f"labels are {_listing(labels)}",
        )


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete image and label files of cases not in ``keep`` (replacing a dataset)."""
    for sub in ("imagesTr", "labelsTr"):
        for case_id, path in _entries(root / sub).items():
            if case_id not in keep and path.is_file():
                logger.info("removing %s (not in the new dataset)", path)
                path.unlink()


def _dataset_info(
    root: Path,
    labels: Mapping[int, str],
    targets: Mapping[str, Sequence[int]],
    default_target: str,
    count: int,
    info: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """dataset.json content, checked by parsing it the way open_dataset does."""
    labels = {0: "background", **{int(k): str(v) for k, v in labels.items()}}
    data = {"name": root.name, **(info or {})}
    data.update(
        labels={str(k): v for k, v in sorted(labels.items())},
        targets={str(k): [int(v) for v in values] for k, values in targets.items()},
        default_target=default_target,
        numCases=count,
    )
    parsed = _parse_targets(data["targets"], labels, root / "dataset.json")
    if default_target not in parsed:
        raise DatasetError(
            f"default_target {default_target!r} is not one of the targets",
            hint=f"targets: {', '.join(parsed) or '(none)'}",
        )
    return data


def write_msd_dataset(
    root: str | Path,
    cases: Iterable[tuple[str, Volume, np.ndarray]],
    *,
    labels: Mapping[int, str],
    targets: Mapping[str, Sequence[int]],
    default_target: str,
    splits: Mapping[str, Sequence[str]] | None = None,
    force: bool = False,
    info: Mapping[str, Any] | None = None,
    extension: str = ".nii.gz",
) -> Dataset:
    """Write cases as an MSD-layout dataset and open it.

    Args:
        root: dataset folder (created when missing).
        cases: (case id, image Volume, integer label map (I, J, K) on the image grid).
        labels: {label value: name}; 0 is added as background.
        targets: {name: label values} of the binary targets.
        default_target: one of the targets.
        splits: optional {split name: case ids}, written as splits.json.
        force: replace an existing dataset (its files of cases not written are removed).
        info: extra dataset.json entries (name, description, licence ...).
        extension: image file ending, e.g. '.nii.gz' or '.nrrd'.

    Returns:
        The written dataset, opened with :func:`open_dataset`.
    """
    root = Path(root).expanduser()
    if (root / "dataset.json").exists() and not force:
        raise OverwriteError("already holds a dataset", path=root, hint="pass force=True")
    labels = {int(k): str(v) for k, v in labels.items()}
    data = _dataset_info(root, labels, targets, default_target, 0, info)
    written: list[str] = []
    for case_id, volume, label in cases:
        if case_id in written:
            raise DatasetError(f"case id {case_id!r} given twice", path=root)
        _check_case(case_id, volume, label, labels)
        save_volume(volume, root / "imagesTr" / f"{case_id}{extension}", force=force)
        save_mask(label, volume, root / "labelsTr" / f"{case_id}{extension}", force=force)
        written.append(case_id)
    _remove_stale(root, set(written))
    data["numCases"] = len(written)
    if splits is not None:
        unknown = sorted({c for ids in splits.values() for c in ids} - set(written))
        if unknown:
            raise DatasetError(f"splits name unwritten case(s): {unknown[:5]}", path=root)
        _write_json(root / "splits.json", {k: list(v) for k, v in splits.items()})
    elif (root / "splits.json").exists():
        (root / "splits.json").unlink()
    _write_json(root / "dataset.json", data)
    return open_dataset(root)
