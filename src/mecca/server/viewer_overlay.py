"""The page's overlay as one small label box: probability bins, mask outline, advice outlines.

Why: re-loading full-size NIfTI overlays into NiiVue makes it rebuild every layer's
texture (seconds per click with software WebGL). The page instead keeps one NiiVue
drawing layer (a uint8 label volume on the image grid, uploaded as one texture) and
writes into it only the ROI box this module encodes, with the colours of :data:`LEGEND`.

Labels (later ones drawn over earlier ones):

* 1 .. ``PROB_BINS``: probability bins over [``PROB_FLOOR``, 1] (dark red to orange,
  more opaque as p rises); with ``prob=False`` only the mask (p > 0.5), in the top bin;
* ``MASK_OUTLINE``: the mask's surface (mask voxels with a background 6-neighbour, the
  box's own faces excluded), so the decision boundary shows on every plane;
* ``ADVICE_OUTLINE``: surfaces of the advice regions (MECCA's least-confident supervoxels);
* ``OTHER_OUTLINE``: the mask surface of another label on the same image (not the one
  being edited), drawn under the edited label's overlay.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PROB_FLOOR = 0.25
PROB_BINS = 9
MASK_OUTLINE = PROB_BINS + 1
ADVICE_OUTLINE = PROB_BINS + 2
OTHER_OUTLINE = PROB_BINS + 3


def _legend() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [{"label": 0, "rgba": [0, 0, 0, 0], "name": "none"}]
    for b in range(PROB_BINS):
        t = b / (PROB_BINS - 1)
        low = PROB_FLOOR + (1 - PROB_FLOOR) * b / PROB_BINS
        rgba = [int(160 + 95 * t), int(150 * t), 0, int(60 + 100 * t)]
        rows.append({"label": b + 1, "rgba": rgba, "name": f"p >= {low:.2f}"})
    rows.append({"label": MASK_OUTLINE, "rgba": [255, 255, 0, 255], "name": "mask outline"})
    rows.append({"label": ADVICE_OUTLINE, "rgba": [0, 230, 0, 255], "name": "advice region"})
    rows.append({"label": OTHER_OUTLINE, "rgba": [0, 170, 255, 255], "name": "other label"})
    return rows


LEGEND = _legend()
"""Colour (RGBA, 0-255) of each label, sent to the page with every overlay."""


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it; the array's faces do not count."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def overlay_labels(
    prob_box: np.ndarray, advice_box: np.ndarray | None, *, prob: bool = True, advice: bool = True
) -> np.ndarray:
    """uint8 labels (box shape) of the overlay, as described in the module docstring.

    Args:
        prob_box: float (I, J, K) foreground probability inside the ROI box.
        advice_box: int (I, J, K) advice-region labels (0 = none), or None.
        prob: show probability bins (else the mask filled in the top bin).
        advice: draw the advice regions' outlines.
    """
    p = np.asarray(prob_box, np.float32)
    mask = p > 0.5
    if prob:
        scaled = (p - PROB_FLOOR) / (1 - PROB_FLOOR) * PROB_BINS
        labels = np.where(p >= PROB_FLOOR, np.clip(scaled.astype(np.int32) + 1, 1, PROB_BINS), 0)
    else:
        labels = np.where(mask, PROB_BINS, 0)
    labels[surface(mask)] = MASK_OUTLINE
    if advice and advice_box is not None:
        regions = np.asarray(advice_box)
        for r in np.unique(regions[regions > 0]):
            labels[surface(regions == r)] = ADVICE_OUTLINE
    return labels.astype(np.uint8)


def other_label_outline(prob_box: np.ndarray) -> np.ndarray:
    """uint8 labels (box shape): ``OTHER_OUTLINE`` on the surface of the mask p > 0.5."""
    return np.where(surface(np.asarray(prob_box) > 0.5), OTHER_OUTLINE, 0).astype(np.uint8)
