"""The benchmark's figures: Dice against clicks, and an overlay montage of one case.

* ``dice_vs_clicks.png``: one line per method, mean Dice (%) after each step against the
  mean number of clicks given so far, with a +- 1 std band when there are at most
  ``BAND_LIMIT`` methods (more bands hide the lines); the x position of a step is the mean
  over cases, as the protocol may give fewer clicks where nothing is wrong. Colours and
  markers differ per method (tab20 beyond 10 methods); the legend sits outside the axes.
* ``montage.png``: one panel per method on the same case and slice (the axial slice
  through the ground truth's centre), zoomed on the target's box: the final mask tinted
  red, the ground truth's outline green (:func:`mecca.bench.overlay.overlay_rgb`).

Matplotlib with the non-interactive Agg backend; files are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from mecca.bench.overlay import centre_slice, overlay_rgb
from mecca.io import atomic_write


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` as a PNG atomically, then close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return atomic_write(Path(path), lambda tmp: tmp.write_bytes(buffer.getvalue()))


def mean_clicks_per_step(result: dict[str, Any]) -> list[float]:
    """Mean cumulative clicks after each step, over the cases of one method's result."""
    counts = np.array([[s["clicks"] for s in c["steps"]] for c in result["cases"].values()])
    return [float(x) for x in np.cumsum(counts, axis=1).mean(axis=0)]


BAND_LIMIT = 4
"""Std bands are drawn only for this many methods or fewer."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
"""Markers cycled per method, so lines stay apart where colours are close."""


def plot_dice_vs_clicks(report: dict[str, Any], path: Path) -> Path:
    """Write the Dice-vs-clicks figure of a benchmark report (see the module docstring)."""
    plt = pyplot()
    methods = report["methods"]
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    colours = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    bands = len(methods) <= BAND_LIMIT  # many overlapping std bands hide the lines
    for i, (name, result) in enumerate(methods.items()):
        x = mean_clicks_per_step(result)
        mean = np.array(result["per_step"]["dice_mean"], dtype=np.float64)
        std = np.array(result["per_step"]["dice_std"], dtype=np.float64)
        colour = colours(i % colours.N)
        ax.plot(x, mean, marker=MARKERS[i % len(MARKERS)], color=colour, label=name)
        if bands:
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15)
    ax.set_xlabel("clicks given (mean over cases)")
    ax.set_ylabel("Dice (%, mean" + (" ± std)" if bands else ")"))
    ax.set_title(
        f"{Path(report['dataset']).name} ({report['split']}), protocol {report['protocol']}"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def _zoom_box(gt: np.ndarray, margin: int = 8) -> tuple[slice, slice]:
    """In-plane slices of the target's box plus ``margin`` voxels (whole plane if empty)."""
    if not gt.any():
        return slice(None), slice(None)
    idx = np.argwhere(gt)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, gt.shape)
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def plot_montage(
    image: np.ndarray,
    gt: np.ndarray,
    masks: dict[str, np.ndarray],
    dice: dict[str, float],
    path: Path,
    *,
    title: str = "",
) -> Path:
    """One panel per method: its final mask on the same slice of the same case.

    Args:
        image: float (I, J, K) volume.
        gt: bool (I, J, K) ground truth.
        masks: method name -> final (I, J, K) mask.
        dice: method name -> its final Dice (%) on this case, printed under the panel.
        path: PNG to write.
        title: figure title (the case).
    """
    plt = pyplot()
    k = centre_slice(gt)
    rows, cols = _zoom_box(gt)
    n = len(masks)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0), squeeze=False)
    for ax, (name, mask) in zip(axes[0], masks.items(), strict=True):
        rgb = overlay_rgb(image, mask, gt, k, zoom=1)[rows, cols]
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"Dice {dice[name]:.1f} %", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} slice k={k}: prediction red, ground truth green", fontsize=9)
    return save_png(fig, path)
