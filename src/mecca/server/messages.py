"""Error words for the server's users: the library's hints are in Python terms
(``set_roi()``, ``pass channel=``); the page and 3D Slicer users need what to do in
their own interface (as :data:`mecca.cli.CLI_HINTS` does for the command line)."""

from __future__ import annotations

import re

from mecca.bundle import bundle_summary, resolve_bundle
from mecca.errors import MeccaError

SERVER_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        r"pass channel= a number from 0 to \d+(?: to choose one)?",
        "open a 3D image, or one channel of it saved as its own file",
        "load a 3D volume, or one channel of it as its own volume",
    ),
    (
        r"click inside the ROI, or set_roi\(\) a larger box \(this resets the session\)",
        "click inside the ROI box, or draw a larger ROI box (ROI mode, key r)",
        "place the point inside the image",
    ),
    (
        r"use box\.clip\(volume\.shape\)",
        "draw the ROI box on the image (ROI mode, key r)",
        "place the points inside the image",
    ),
    (
        r"add a click on the object, or pass roi= / call set_roi\(\)",
        "click on the object, or draw an ROI box (ROI mode, key r)",
        "add a foreground point on the object",
    ),
    (
        r"pass roi= or call set_roi\(\) first",
        "draw an ROI box first (ROI mode, key r)",
        "add a foreground point first",
    ),
    (
        r"voxel indices \(i, j, k\) run from 0 to shape - 1",
        "click on the image",
        "place the points inside the image",
    ),
    (r"run step\(\) or clear_pending\(\) first", "wait for the queued clicks to run", "try again"),
    (r"run step\(\) first", "click on the object first", "add a foreground point first"),
    (
        r"call propose\(\) and pick one of them|ask for proposals first \(propose\)",
        "press Propose, then pick one of the proposals",
        "this server's proposals are shown in its web page",
    ),
    (r"pass force=True(?: to replace it)?", "choose another name", "choose another name"),
    (r"\(use partial\)", "(choose partial in the Method list)", "(choose the partial model)"),
    (
        r"give model=<pnet / unet run folder, checkpoint or bundle> or torchscript=<file>",
        "the server has no model for this method: choose another method, or ask whoever runs "
        "the server to start it with --weights tta=MODEL",
        "the server has no model for this method: choose another model, or ask whoever runs "
        "the server to start it with --weights tta=MODEL",
    ),
    (
        r"pass model=RUN \(benchmark: --weights partial=RUN\)",
        "serve it with: mecca serve --weights partial=RUN",
        "serve it with: mecca serve --weights partial=RUN",
    ),
    (
        r"pass a registered name \(mecca\.methods\.available\(\)\) or an InteractiveMethod",
        "choose a method from the Method list",
        "choose a model from the MONAI Label module's list",
    ),
)
"""Library hints in Python terms, the page's words for them, and 3D Slicer's (the MONAI
Label routes): :func:`server_message` rewrites an error's text with them."""


def server_message(err: MeccaError, *, slicer: bool = False) -> str:
    """``err``'s text with its hints in the words of the page (or of 3D Slicer, for the
    MONAI Label routes: ``slicer``)."""
    text = str(err)
    for pattern, page, for_slicer in SERVER_HINTS:
        text = re.sub(pattern, for_slicer if slicer else page, text)
    return text


def in_server_words(err: MeccaError, *, slicer: bool = False) -> MeccaError:
    """``err`` with its message rewritten by :func:`server_message` (path and kind kept)."""
    err.args = (server_message(err, slicer=slicer),)
    return err


def label_map_warning(values: list[int]) -> str:
    """What the page says when the image it opened holds only the whole-number ``values``
    of a label map (:func:`mecca.io.label_map_values`)."""
    shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    return (
        f"this file looks like a label map, not an image (only the values {shown}): "
        "a segmentation drawn on it follows the labels, not the anatomy. Open the image "
        "it labels instead."
    )


DATASET_WORDS = {
    "hippocampus": "hippocampus MRI",
    "left_atrium": "left-atrium MRI",
    "phantom": "synthetic phantoms",
}
"""The shipped bundles' dataset names as the page shows them."""


def trained_on(model: str | None) -> tuple[str | None, bool]:
    """What ``model`` (a shipped bundle's name or a bundle folder; None: no model) was
    trained on, in a few words, and whether it was made for any target (the generalist;
    a method without a model takes any image too)."""
    if model is None:
        return None, True
    try:
        summary = bundle_summary(resolve_bundle(model))
    except (MeccaError, OSError):
        return "unknown data (not a model bundle)", False
    if "error" in summary:
        return "unknown data (the bundle is damaged)", False
    datasets = [DATASET_WORDS.get(d, d) for d in summary["datasets"]]
    if summary["target"] == "every target":
        return f"{len(datasets)} datasets, for any target", True
    return " and ".join(datasets) or "unknown data", False
