"""The generalist behind ``InteractiveMethod``: one click-conditioned network, any target.

Each step runs the network once on ``[image, previous probability, foreground map,
background map, box map]`` (:mod:`.prompts`) over the crop's grid and returns its
probability. The state keeps the accumulated click maps, the box map and the last
probability; nothing is mutated, so undo is "keep the old state".

How prompts arrive (all on the network grid, as a session or :mod:`mecca.episode` maps
them):

* FOREGROUND / BACKGROUND clicks: a point each; a scribble is the set of its voxels.
* BOX: two BOX clicks at opposite corners of the box, in one step
  (:func:`mecca.interaction.clicks.box_prompt` makes them and the ROI to crop from a box
  on the original grid: the box plus a quarter of its size per side). A new pair replaces the box.
* With ``roi_as_box=True`` the crop itself counts as the box from the first step (the
  benchmark's ROI, a ground-truth box plus 1-11 voxels, is such a box), unless BOX
  clicks say otherwise.
* EDGE points are not taken: callers turn them into the foreground/background pair across
  the boundary (:func:`mecca.interaction.clicks.edge_click_to_fg_bg`), as for every
  method without edge points.

Two weight sets (since 2026-12-07, evening): the same network with other weights
(``box_net``) runs every input whose box channel is set, the first weights every
points-only input. Since the ninth schedule, every schedule that trained the box task
further lost the points user's skills (one click into a large organ above all), and the
reverse; with two weight sets neither costs the other. The box weights are the mean of
the first weights and those fine-tuned on box prompts alone (WiSE-FT); on val, box then
5 clicks 80.21 against 78.66, the points user unchanged by construction (docs/defaults.md).
A third set (``slice_box_net``, since 2026-12-08) runs a box drawn on one slice (the CVPR
2025 box: the middle slice's 2D box over the object's slice range), encoded as drawn
(``slice_boxes``, :func:`.prompts.slice_box_map`); it was trained with that encoding, and
on val it was worse than ``box_net`` on a tight 3D box (docs/training.md, the twenty-fifth
schedule), so it runs only where the caller says the box is drawn on one slice
(:meth:`GeneralistMethod.for_slice_boxes`: the CVPR 2025 protocol, ``mecca predict-npz``).

The grid may follow the ROI (:meth:`GeneralistMethod.grid_for`): a ROI at least 1.5 times
the base grid along some axis runs on a finer grid (64 x 64 x 48 for 48 x 48 x 32), so that
a large object is not downsampled as much, without flipped copies (``fine_flips``) so
that the step costs less than on the base grid. On by default for a box prompt
(``box_fine``, since 2026-12-07, late: on val, box then 5 clicks 80.9 against 80.2);
off for points-only inputs, where it lost one click into the liver (val, 26 against 55).
``max_grid`` turns it on for every input (docs/defaults.md).

With ``local=True`` (off by default since the flips) a correction click's change stays
near it once a box is given (:func:`keep_local_changes`, as FocalClick's local
refinement): the voxels whose side of 0.5 changed form connected pieces, and only the
pieces that touch a new click's 3 x 3 x 3 neighbourhood take the new probability; the
rest keep the last one. A click then cannot undo a correct part of the mask far from
it. The box step, the first step and every step without a box are global: without a box
the first points still tell the object's extent, and a new inside point may rightly grow
the mask anywhere. On val it
lowered the falls of the mean Dice from click to click with a single pass; with the flips
the global step was better (box + 5 clicks 78.1 against 77.6) and fell no more
(docs/defaults.md), so it is off.

With ``flips`` set (test-time augmentation) each step also runs the network on the input
flipped along those grid axes, in one batch, and averages the probabilities after flipping
them back: the training drew every flip, so each is an equally good guess, and their mean
is a smoother one; the step costs one more forward per flip. The first step of a
points-only prompt (no box, nothing before) runs once: how far one click reaches is the
network's call of scale, and the flipped copies disagree on it (on val, averaging them
took one click into the CHAOS liver from Dice 0.55 to 0.17).

``start`` gives probability 0.5 everywhere (an empty mask) or ``init_prob``; the network's
previous-probability channel starts at 0 (nothing predicted yet) or at ``init_prob``. A
step without new clicks keeps the last result (the network is not re-run on its own
output); the first step needs a click or a box. Steps are deterministic: the network runs
in inference mode and ``rng`` is not used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from mecca.data.roi import Crop
from mecca.errors import InputError
from mecca.interaction.clicks import STRUCTURE_26, Click, InteractionKind
from mecca.methods.base import MethodState, StepResult
from mecca.methods.generalist.net import GeneralistNet
from mecca.methods.generalist.prompts import (
    add_points,
    box_map,
    drawn_slab,
    network_input,
    normalise_image,
    slice_box_map,
    split_clicks,
)

FINE_FROM = 1.5
"""A ROI this many times the base grid along some axis gets ``max_grid``."""

FLIPS: tuple[tuple[int, ...], ...] = ((0,), (1,), (0, 1))
"""The default test-time flips: i, j and both, 4 forwards in one batch (on val, box + 5
clicks' mean final DSC 77.6 against 76.2 with none, both with the local update on, and
78.1 with it off as now; the points user's 66.8 against 65.8; docs/defaults.md)."""

FINE_FLIPS: tuple[tuple[int, ...], ...] = ()
"""The test-time flips on a grid finer than the base one: none, one forward, which on the
finer grid (2.7 times the voxels) costs less than the 4 of :data:`FLIPS` on the base grid
(42 against 89 ms on 2 threads). On val, a box prompt's large ROI on the finer grid: box
then 5 clicks 80.90 with one forward, 81.04 with flip i (2 forwards, 73 ms; the page's
click-to-overlay then at its 300 ms bar), 80.21 on the base grid (docs/defaults.md)."""

ACCEPTS = frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX})


@dataclass
class GeneralistMethod:
    """The generalist as an :class:`~mecca.methods.base.InteractiveMethod`.

    Attributes:
        net: the trained :class:`~.net.GeneralistNet`.
        grid: the network grid it was trained on, the smallest it runs on.
        max_grid: the grid :meth:`grid_for` gives a large ROI (e.g. one network factor
            finer per axis: :meth:`finer_grid`); None (the default): ``grid``, but for a
            box prompt's ROI when ``box_fine``.
        box_fine: a large ROI around a box prompt (``grid_for(..., boxed=True)``, or any
            ROI with ``roi_as_box``) runs on :meth:`finer_grid` (True, the default).
        roi_as_box: treat the whole crop as the box when no BOX clicks were given.
        local: keep a correction click's change near it once a box is given (module
            docstring; off by default).
        flips: test-time flips (module docstring), e.g. ``((0,), (1,))``: grid axes to
            flip, one tuple an extra forward (default :data:`FLIPS`); empty: the network once.
        fine_flips: the flips on a grid finer than ``grid`` (default :data:`FINE_FLIPS`).
        logit_offset: added to the logit of the probability a step returns (the network's
            previous-probability channel keeps its own output), i.e. a decision threshold
            of ``sigmoid(-logit_offset)``; 0 (the default): 0.5. Thresholds 0.4 and 0.3 were
            measured on val and not adopted (docs/defaults.md).
        slice_boxes: a box prompt was drawn on its middle k slice (the CVPR 2025 box) and
            is encoded so (:func:`.prompts.slice_box_map`), and runs ``slice_box_net`` when
            there is one; False (the default): a 3D box.
        box_logit_offset: the same for a step whose prompt is a box and no click yet (the
            mask a user sees right after drawing a box), in place of ``logit_offset``.
        name: ``generalist``.
        carries_mask: started again on a new crop, it continues from the mask so far
            (:class:`mecca.interface.MaskCarrier`; on val 78.7 against 78.1 restarting,
            docs/cvpr25.md).
        device: where the network runs.
        model: the model it runs (a bundle's folder name, else the path it was loaded
            from), which the tools name to the user.
        box_net: the network for inputs whose box channel is set (a box prompt, or
            ``roi_as_box``); None: ``net`` for every input. The shipped bundle has one
            (module docstring, "Two weight sets").
        slice_box_net: the network for a box prompt encoded as drawn on one slice
            (``slice_boxes``); None: ``box_net`` (else ``net``) runs it.
    """

    net: GeneralistNet
    grid: tuple[int, int, int] = (48, 48, 32)
    roi_as_box: bool = False
    max_grid: tuple[int, int, int] | None = None
    box_fine: bool = True
    local: bool = False
    flips: tuple[tuple[int, ...], ...] = FLIPS
    fine_flips: tuple[tuple[int, ...], ...] = FINE_FLIPS
    logit_offset: float = 0.0
    box_logit_offset: float = 0.0
    slice_boxes: bool = False
    name: str = "generalist"
    carries_mask: bool = True
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    model: str = ""
    box_net: GeneralistNet | None = None
    slice_box_net: GeneralistNet | None = None

    def __post_init__(self) -> None:
        self.net.eval().to(self.device)
        for extra in (self.box_net, self.slice_box_net):
            if extra is not None:
                extra.eval().to(self.device)

    def for_slice_boxes(self) -> GeneralistMethod:
        """This method for a caller whose every box is drawn on one slice (the CVPR 2025
        protocol): a copy with ``slice_boxes`` on when it has weights for such boxes
        (``slice_box_net``), else itself (its box weights were trained on 3D boxes)."""
        if self.slice_box_net is None:
            return self
        return replace(self, slice_boxes=True)

    @property
    def accepts(self) -> frozenset[InteractionKind]:
        """Foreground, background and box clicks (module docstring)."""
        return ACCEPTS

    def grid_for(self, roi_shape: Sequence[int], *, boxed: bool = False) -> tuple[int, int, int]:
        """The grid for a ROI of ``roi_shape`` voxels: the finer grid (``max_grid``, else,
        for a box prompt's ROI (``boxed`` or ``roi_as_box``) with ``box_fine``,
        :meth:`finer_grid`) when the ROI is at least ``FINE_FROM`` times the base grid
        along some axis (a large object, else downsampled a lot), else the base ``grid``."""
        fine = self.max_grid
        if fine is None and self.box_fine and (boxed or self.roi_as_box):
            fine = self.finer_grid()
        if fine is None:
            return self.grid
        ratio = max(int(n) / g for n, g in zip(roi_shape, self.grid, strict=True))
        return fine if ratio >= FINE_FROM else self.grid

    def finer_grid(self) -> tuple[int, int, int]:
        """The base grid plus one network factor per axis (64 x 64 x 48 for 48 x 48 x 32),
        the finer grid the second training schedule also trained on."""
        f = self.net.config.factor
        return (self.grid[0] + f, self.grid[1] + f, self.grid[2] + f)

    def _check_grid(self, grid: Sequence[int]) -> None:
        fine = self.max_grid or (self.finer_grid() if self.box_fine else None)
        if tuple(grid) not in (self.grid, self.max_grid, fine):
            raise InputError(
                f"the crop grid {tuple(grid)} is not one the model runs on "
                f"({self.grid}, or {fine} for a large ROI)",
                hint="crop with grid_of(method, roi_shape) (Session does when grid is not given)",
            )

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device = "cpu", roi_as_box: bool = False
    ) -> GeneralistMethod:
        """Load from a bundle folder (with its box and slice-box weights, when it has them),
        a run folder (best.pt, else last.pt) or a checkpoint."""
        from mecca.methods.generalist.bundle import load_box_weights, load_weights

        net, grid = load_weights(path)
        folder = Path(path)
        label = folder.name if (folder / "configs" / "metadata.json").is_file() else str(path)
        return cls(
            net,
            grid,
            roi_as_box,
            device=torch.device(device),
            model=label,
            box_net=load_box_weights(path, grid),
            slice_box_net=load_box_weights(path, grid, "slice_box"),
        )

    def start(self, crop: Crop, *, init_prob: np.ndarray | None = None) -> MethodState:
        """Begin on a crop: normalised image, empty click maps, box map per ``roi_as_box``."""
        self._check_grid(crop.grid)
        zeros = np.zeros(crop.grid, np.float32)
        if init_prob is None:
            prob, prev = np.full(crop.grid, 0.5, np.float32), zeros
        else:
            prob = np.asarray(init_prob, np.float32)
            if prob.shape != crop.grid:
                raise InputError(f"init_prob {prob.shape} is not on the crop grid {crop.grid}")
            prev = prob
        box = np.ones(crop.grid, np.float32) if self.roi_as_box else zeros
        extra = {
            "image": normalise_image(crop.image),
            "prev": prev,
            "fg": zeros,
            "bg": zeros,
            "box": box,
            "prompted": self.roi_as_box,
            "ran": False,
            "slice_box": False,
        }
        return MethodState(crop, prob=prob, extra=extra)

    def step(
        self, state: MethodState, new: Sequence[Click], *, rng: np.random.Generator
    ) -> tuple[MethodState, StepResult]:
        """Add the new clicks to the maps and run the network (module docstring)."""
        assert state.prob is not None
        fg_clicks, bg_clicks, box_clicks = split_clicks(new)
        ex = state.extra
        if not new and (ex["ran"] or not ex["prompted"]):
            return state, StepResult(state.prob)
        t0 = time.perf_counter()
        fg, bg, box, drawn = ex["fg"], ex["bg"], ex["box"], ex["slice_box"]
        if fg_clicks:
            fg = fg.copy()
            add_points(fg, [c.position for c in fg_clicks])
        if bg_clicks:
            bg = bg.copy()
            add_points(bg, [c.position for c in bg_clicks])
        if box_clicks:
            a, b, grid = box_clicks[0].position, box_clicks[1].position, state.crop.grid
            drawn = self.slice_boxes
            if drawn:
                slab = drawn_slab(grid[2], state.crop.box.shape[2])
                box = slice_box_map(grid, a, b, slab)
            else:
                box = box_map(grid, a, b)
        flip = ex["ran"] or bool(box.any())  # not a points-only first step (module docstring)
        channels = network_input(ex["image"], ex["prev"], fg, bg, box)
        raw = self.predict(channels, flip=flip, slice_box=drawn)
        if self.local and ex["ran"] and not box_clicks and box.any():
            points = [c.position for c in (*fg_clicks, *bg_clicks)]
            raw = keep_local_changes(ex["prev"], raw, points)
        box_only = bool(box.any()) and not fg.any() and not bg.any()
        prob = shift_logits(raw, self.box_logit_offset if box_only else self.logit_offset)
        extra = {
            **ex,
            "prev": raw,
            "fg": fg,
            "bg": bg,
            "box": box,
            "slice_box": drawn,
            "prompted": True,
            "ran": True,
        }
        new_state = MethodState(state.crop, state.clicks + tuple(new), prob, extra)
        return new_state, StepResult(prob, seconds=time.perf_counter() - t0)

    def network_for(self, channels: np.ndarray, *, slice_box: bool = False) -> GeneralistNet:
        """For an input whose box channel (4) is set: ``slice_box_net`` when ``slice_box``
        (the box was drawn on one slice) and it exists, else ``box_net`` when it exists;
        ``net`` for every other input."""
        if not bool(np.asarray(channels[4]).any()):
            return self.net
        if slice_box and self.slice_box_net is not None:
            return self.slice_box_net
        return self.box_net if self.box_net is not None else self.net

    def predict(
        self, channels: np.ndarray, *, flip: bool = True, slice_box: bool = False
    ) -> np.ndarray:
        """Float32 probability (I, J, K) for the (5, I, J, K) input channels (averaged over
        ``flips``, or ``fine_flips`` on a grid finer than the base one, unless ``flip`` is
        False), from :meth:`network_for` the input (``slice_box``: its box was drawn on
        one slice)."""
        base = tuple(channels.shape[1:]) == tuple(self.grid)
        flips = (self.flips if base else self.fine_flips) if flip else ()
        net = self.network_for(channels, slice_box=slice_box)
        x = torch.from_numpy(np.ascontiguousarray(channels))[None].to(self.device)
        if flips:  # the copies on the batch axis; spatial axes are 2, 3, 4 there
            x = torch.cat([x, *(torch.flip(x, [a + 2 for a in axes]) for axes in flips)])
        with torch.inference_mode():
            prob = torch.sigmoid(net(x))[:, 0]
        if flips:  # each copy flipped back onto the grid, then their mean
            copies = [torch.flip(p, list(axes)) for p, axes in zip(prob[1:], flips, strict=True)]
            prob = torch.stack([prob[0], *copies]).mean(0, keepdim=True)
        return prob[0].float().cpu().numpy()


def shift_logits(prob: np.ndarray, offset: float) -> np.ndarray:
    """``sigmoid(logit(prob) + offset)``: the mask ``> 0.5`` of the result is ``prob >
    sigmoid(-offset)`` (a lower decision threshold for a positive offset)."""
    if offset == 0.0:
        return prob
    p = np.clip(prob.astype(np.float64), 1e-7, 1 - 1e-7)
    return (1.0 / (1.0 + np.exp(-(np.log(p / (1 - p)) + offset)))).astype(np.float32)


def keep_local_changes(
    old: np.ndarray, new: np.ndarray, points: Sequence[Sequence[int]]
) -> np.ndarray:
    """``new`` where the mask's change touches a point's 3 x 3 x 3 neighbourhood, else ``old``.

    The change is the set of voxels on the other side of 0.5 than before, split into
    26-connected pieces; a piece with a voxel within one voxel (Chebyshev) of a point is
    kept, every other piece reverts to ``old``. Voxels whose side did not change take
    ``new``.
    """
    changed = (old > 0.5) != (new > 0.5)
    if not changed.any():
        return new
    labels, _ = ndimage.label(changed, structure=STRUCTURE_26)
    near = np.zeros(changed.shape, bool)
    for point in points:
        lo = [max(int(p) - 1, 0) for p in point]
        near[lo[0] : int(point[0]) + 2, lo[1] : int(point[1]) + 2, lo[2] : int(point[2]) + 2] = True
    kept = np.unique(labels[near & changed])
    revert = changed & ~np.isin(labels, kept)
    return np.where(revert, old, new).astype(np.float32)


def generalist_factory(
    model: str | Path | None = None, device: str = "cpu", roi_as_box: bool = False
) -> GeneralistMethod:
    """The registry's factory: the generalist from a shipped bundle's name (``generalist``),
    a bundle folder, a run folder or a checkpoint file."""
    from mecca.bundle import resolve_bundle

    path = Path(model if model is not None else "generalist")
    if not path.exists():
        path = resolve_bundle(str(path))
    return GeneralistMethod.load(path, device=device, roi_as_box=roi_as_box)


def describe(method: GeneralistMethod) -> dict[str, Any]:
    """A short description for logs and model cards."""
    return {
        "name": method.name,
        "grid": list(method.grid),
        "roi_as_box": method.roi_as_box,
        "accepts": sorted(k.value for k in method.accepts),
    }
