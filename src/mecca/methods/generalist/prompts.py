"""Prompts of the generalist: clicks and boxes as image channels, and simulated users.

Everything here lives on the network grid, positions are integer ``(i, j, k)``.

Encoding (the network's channels 2-4):

* **Clicks**: a foreground map and a background map, each the element-wise maximum of
  Gaussian bumps ``exp(-d^2 / (2 sigma^2))`` (``sigma`` = :data:`CLICK_SIGMA` = 1.5 grid
  voxels, cut at :data:`CLICK_RADIUS` = 3 voxels), so a click is a ball of about two voxels
  and many adjacent clicks (a scribble, given as a set of voxels) make a tube. The maximum
  keeps the maps in [0, 1] and makes adding clicks order-free.
* **Box**: 1 inside the user's box, 0 outside, all 0 when there is none. A box drawn on
  one slice (the CVPR 2025 challenge's: the middle slice's 2D box over the object's k
  range, which need not bound the object on the other slices) may be encoded as what it
  is (:func:`slice_box_map`): 1 on its rectangle on the middle k slice (one image slice
  thick, :func:`drawn_slab` grid slices), ``SLICE_BOX_REST`` on the rest of its cuboid.
  A box reaches the
  method as two :attr:`~mecca.interaction.clicks.InteractionKind.BOX` clicks at opposite
  corners (inclusive voxels, any order) in one step;
  :func:`mecca.interaction.clicks.box_prompt` turns a box on the original grid into the
  ROI a session should crop (the box plus a margin of ``BOX_MARGIN`` of its size per side,
  so the network sees context) and the two clicks.
* **Edge points** are not taken: in simulation they become the foreground/background
  pair across the boundary that the project already makes
  (:func:`mecca.interaction.clicks.edge_click_to_fg_bg`).

Simulated users for training (:func:`error_clicks`): clicks from the current errors, as the
CVPR 2025 user does (the interior-most voxel of the largest error component: foreground
where the truth is 1, background where it is 0), with some randomness so the network sees
more than one user: a random offset that stays in the component, another error component,
a random voxel of the error, or a short straight scribble through the component. And the
points user (:func:`turn_click`), who decides first whether the next click is inside or
outside (3 inside, then 3 outside), so that a background click next to a mask that
misses much is seen too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from mecca.data.roi import NormaliseConfig, normalise
from mecca.errors import InputError
from mecca.interaction.clicks import STRUCTURE_26, Click, InteractionKind, component_centres

CLICK_SIGMA = 1.5
"""Width of a click's Gaussian bump, grid voxels."""
CLICK_RADIUS = 3
"""The bump is evaluated within this many voxels of the click (0.135 at the cut)."""

FG, BG, BOX = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX
SLICE_BOX_REST = 0.5
"""The box channel of a slice box off its drawn slice: the k range, not a bound in-plane."""
ROBUST = NormaliseConfig(mode="zscore", percentiles=(0.5, 99.5))
"""The image channel's normalisation: clip to the crop's 0.5 / 99.5 percentiles, z-score."""


def normalise_image(image: np.ndarray) -> np.ndarray:
    """The image channel: the crop clipped to its 0.5 / 99.5 percentiles and z-scored.

    Invariant to any increasing affine change of intensities, so a session crop that was
    already z-scored (or not) gives the same channel.
    """
    return normalise(image, ROBUST)


def network_input(
    image: np.ndarray, prev: np.ndarray, fg: np.ndarray, bg: np.ndarray, box: np.ndarray
) -> np.ndarray:
    """Float32 (5, I, J, K): the network's channels in their fixed order."""
    return np.stack([image, prev, fg, bg, box]).astype(np.float32, copy=False)


_R = np.arange(-CLICK_RADIUS, CLICK_RADIUS + 1, dtype=np.float32)
_BUMP = np.exp(
    -(_R[:, None, None] ** 2 + _R[None, :, None] ** 2 + _R[None, None, :] ** 2)
    / (2 * CLICK_SIGMA**2)
).astype(np.float32)


def add_points(target: np.ndarray, points: np.ndarray | Sequence[Sequence[int]]) -> None:
    """Max a Gaussian bump into ``target`` (float32 (I, J, K), in place) at each point."""
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    shape = np.asarray(target.shape)
    for p in pts:
        if np.any(p < 0) or np.any(p >= shape):
            raise InputError(f"click {tuple(int(v) for v in p)} is outside the grid {target.shape}")
        lo = np.maximum(p - CLICK_RADIUS, 0)
        hi = np.minimum(p + CLICK_RADIUS + 1, shape)
        blo = lo - (p - CLICK_RADIUS)
        bhi = blo + (hi - lo)
        view = target[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        np.maximum(view, _BUMP[blo[0] : bhi[0], blo[1] : bhi[1], blo[2] : bhi[2]], out=view)


def box_map(shape: Sequence[int], corner_a: Sequence[int], corner_b: Sequence[int]) -> np.ndarray:
    """Float32 ``shape``: 1 inside the box spanned by two inclusive corners, 0 outside."""
    a, b = np.asarray(corner_a, dtype=np.int64), np.asarray(corner_b, dtype=np.int64)
    lo = np.clip(np.minimum(a, b), 0, np.asarray(shape) - 1)
    hi = np.clip(np.maximum(a, b), 0, np.asarray(shape) - 1) + 1
    out = np.zeros(tuple(int(n) for n in shape), np.float32)
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1.0
    return out


def slice_box_map(
    shape: Sequence[int], corner_a: Sequence[int], corner_b: Sequence[int], slab: int = 1
) -> np.ndarray:
    """Float32 ``shape``: a box drawn on its middle k slice (the CVPR 2025 box): 1 on the
    rectangle of that slice (``k_lo + (k_hi - k_lo + 1) // 2``, the challenge's ``z_mid``
    for an object on consecutive slices), ``slab`` grid slices thick about it (one slice
    of the image where the grid is finer along k), :data:`SLICE_BOX_REST` on the rest of
    the box, 0 outside."""
    out = box_map(shape, corner_a, corner_b)
    ks = np.flatnonzero(out.any(axis=(0, 1)))
    mid = int(ks[0]) + len(ks) // 2
    lo = max(int(ks[0]), mid - (int(slab) - 1) // 2)
    hi = min(int(ks[-1]) + 1, lo + max(int(slab), 1))
    drawn = out[:, :, lo:hi].copy()
    out *= SLICE_BOX_REST
    out[:, :, lo:hi] = drawn
    return out


def drawn_slab(grid_k: int, roi_k: int) -> int:
    """Grid slices per image slice along k (at least 1): how thick the drawn slice of a
    slice box is on a grid ``grid_k`` slices deep over ``roi_k`` image slices."""
    return max(1, round(int(grid_k) / max(int(roi_k), 1)))


def split_clicks(clicks: Sequence[Click]) -> tuple[list[Click], list[Click], list[Click]]:
    """Foreground, background and box clicks; InputError for other kinds."""
    fg, bg, box = [], [], []
    for c in clicks:
        if c.kind is FG:
            fg.append(c)
        elif c.kind is BG:
            bg.append(c)
        elif c.kind is BOX:
            box.append(c)
        else:
            raise InputError(
                f"the generalist takes foreground, background and box clicks, not {c.kind.value}",
                hint="give an edge as a foreground and a background click on either side",
            )
    if len(box) not in (0, 2):
        raise InputError(
            f"a box is two BOX clicks at opposite corners, got {len(box)} in one step",
            hint="send both corners in the same step",
        )
    return fg, bg, box


def middle_slice_box(mask: np.ndarray) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
    """The CVPR 2025 challenge's box of a bool (I, J, K) mask as inclusive corners: the k
    range of the mask, and the (i, j) box of its middle slice (``ks[len(ks) // 2]`` of
    the distinct slices that hold it); None for an empty mask. A person draws it on one
    slice, so it need not bound the object on the others."""
    ks = np.flatnonzero(mask.any(axis=(0, 1)))
    if len(ks) == 0:
        return None
    ii, jj = np.nonzero(mask[:, :, ks[len(ks) // 2]])
    first = (int(ii.min()), int(jj.min()), int(ks[0]))
    return first, (int(ii.max()), int(jj.max()), int(ks[-1]))


# --------------------------------------------------------------------------- simulated users


def _components(err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected labels of a bool error mask and the size of each component (1..n)."""
    labels, n = ndimage.label(err, structure=STRUCTURE_26)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    return labels, sizes


def _pick_component(
    fn: tuple[np.ndarray, np.ndarray],
    fp: tuple[np.ndarray, np.ndarray],
    other: bool,
    rng: np.random.Generator,
) -> tuple[InteractionKind, np.ndarray, int] | None:
    """(kind, labels, label) of the largest error component, or of a random one (by size)
    when ``other``; None when there is no error."""
    cands = [(FG, fn[0], i + 1, int(s)) for i, s in enumerate(fn[1])]
    cands += [(BG, fp[0], i + 1, int(s)) for i, s in enumerate(fp[1])]
    if not cands:
        return None
    sizes = np.asarray([c[3] for c in cands], dtype=np.float64)
    idx = int(rng.choice(len(cands), p=sizes / sizes.sum())) if other else int(np.argmax(sizes))
    kind, labels, label, _ = cands[idx]
    return kind, labels, label


def _scribble(inside: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Voxels of a straight in-plane (i, j) stroke through ``centre`` kept inside the mask."""
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    half = int(rng.integers(2, 9))
    ts = np.arange(-half, half + 0.5, 0.5)
    pts = np.rint(centre + ts[:, None] * direction).astype(np.int64)
    pts = np.clip(pts, 0, np.asarray(inside.shape) - 1)
    keep = inside[tuple(pts.T)]
    return np.unique(pts[keep], axis=0) if keep.any() else centre[None].astype(np.int64)


def error_clicks(
    pred: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    *,
    p_exact: float = 0.6,
    p_other: float = 0.15,
    p_scribble: float = 0.1,
) -> list[Click]:
    """This round's clicks of the training user, from bool prediction and truth.

    With probability ``p_exact`` the CVPR 2025 click (interior-most voxel of the largest
    error component); else, in turn, another component drawn by size (``p_other``), a
    scribble through the component's centre (``p_scribble``) or the centre moved by up to
    3 voxels within the component. Empty when the prediction is perfect.
    """
    pick = _pick_component(
        _components(gt & ~pred), _components(pred & ~gt), rng.random() < p_other, rng
    )
    if pick is None:
        return []
    kind, labels, label = pick
    centre = component_centres(labels, [label])[0]
    u = rng.random()
    if u < p_exact:
        points = centre[None]
    elif u < p_exact + p_scribble:
        points = _scribble(labels == label, centre, rng)
    else:
        cand = centre + rng.integers(-3, 4, size=(10, 3))
        cand = np.clip(cand, 0, np.asarray(labels.shape) - 1)
        ok = labels[tuple(cand.T)] == label
        points = cand[ok][:1] if ok.any() else centre[None]
    return [Click(kind, (int(p[0]), int(p[1]), int(p[2]))) for p in points]


def turn_click(pred: np.ndarray, gt: np.ndarray, kind: InteractionKind) -> Click | None:
    """A click of the kind the user chose, whatever the largest error is (the points user
    of :mod:`mecca.bench.points` and 3D Slicer's "3 inside, then 3 outside"): the
    interior-most voxel of the largest missed part (FOREGROUND) or wrongly added part
    (BACKGROUND); a background click with nothing added wrongly goes to the 3-voxel ring
    just outside the object. None for a foreground click with nothing missed."""
    err = gt & ~pred if kind is FG else pred & ~gt
    if kind is BG and not err.any():
        err = ndimage.binary_dilation(gt, iterations=3) & ~gt
    point = deepest_click(err)
    return None if point is None else Click(kind, point)


def deepest_click(mask: np.ndarray) -> tuple[int, int, int] | None:
    """The interior-most voxel of the largest 26-connected component of a bool mask."""
    labels, sizes = _components(mask)
    if sizes.size == 0:
        return None
    c = component_centres(labels, [int(np.argmax(sizes)) + 1])[0]
    return (int(c[0]), int(c[1]), int(c[2]))


def distance_click(pred: np.ndarray, gt: np.ndarray) -> Click | None:
    """The CVPR 2025 user's click: the interior-most voxel of the largest error component
    (26-connected; foreground for a false negative, background for a false positive, a
    tie goes to the false negative); None when the prediction is perfect."""
    fn, fp = _components(gt & ~pred), _components(pred & ~gt)
    size_fn = int(fn[1].max()) if fn[1].size else 0
    size_fp = int(fp[1].max()) if fp[1].size else 0
    if size_fn == 0 and size_fp == 0:
        return None
    kind, (labels, sizes) = (FG, fn) if size_fn >= size_fp else (BG, fp)
    c = component_centres(labels, [int(np.argmax(sizes)) + 1])[0]
    return Click(kind, (int(c[0]), int(c[1]), int(c[2])))


def initial_points(gt: np.ndarray, rng: np.random.Generator, n_fg: int, n_bg: int) -> list[Click]:
    """First clicks of a points-only prompt: ``n_fg`` foreground clicks (the first at the
    object's interior-most voxel, the others at random object voxels at least two voxels
    deep when there are such) and ``n_bg`` background clicks near the object."""
    clicks: list[Click] = []
    first = deepest_click(gt)
    if first is None:
        return clicks
    clicks.append(Click(FG, first))
    depth = ndimage.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1, 1:-1]
    inner = np.argwhere(depth >= min(2.0, float(depth.max())))
    for p in inner[rng.integers(len(inner), size=max(n_fg - 1, 0))]:
        clicks.append(Click(FG, (int(p[0]), int(p[1]), int(p[2]))))
    if n_bg > 0:
        ring = ndimage.binary_dilation(gt, iterations=4) & ~ndimage.binary_dilation(gt)
        outside = np.argwhere(ring) if ring.any() else np.argwhere(~gt)
        if len(outside):
            for p in outside[rng.integers(len(outside), size=n_bg)]:
                clicks.append(Click(BG, (int(p[0]), int(p[1]), int(p[2]))))
    return clicks
