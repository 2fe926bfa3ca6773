"""Procedural training volumes: random objects in random tissue, so the generalist learns
"the object the user means" beyond the anatomies of the labelled datasets.

A volume (:func:`make_synthetic`) holds 2-6 objects, each one label value, drawn from four
shapes: ellipsoids with a smoothly wobbling radius (organs, lesions), shells (an
ellipsoid minus a smaller one inside: myocardium-like rings), tubes along smooth random
curves (vessels, cords) and irregular blobs (a thresholded smooth field: tumours). Later
objects cover earlier ones, so objects touch and occlude each other. Every object and 2-4
background "tissues" (a partition by smooth fields) get a random mean intensity with a
smooth texture, so any object may be brighter or darker than its neighbours, with
weak or strong contrast. The piecewise image is blurred (partial volume, sigma 0.4-1.2
voxels), multiplied by a smooth bias field and given Gaussian or Rician noise.
Voxels are anisotropic at random (slice spacing 1-4x the in-plane one). A quarter of the
volumes are MECCA's lesion phantoms (:func:`mecca.data.phantoms.make_phantom`, a lesion
with a touching look-alike distractor), whose labels are kept (1 lesion, 2 distractor).

Large volumes (:func:`make_large_synthetic`) hold an organ-sized first object (label 1:
an ellipsoid or blob, often half the volume across or more) among smaller ones that may
cover parts of it, in a field of view of 80-220 mm: a crop around a click inside it (a
session's first ROI, 40 mm per side) lies wholly inside the object, as a click into a
liver does. Without them the largest objects
the network saw filled a third of a crop, and one click into an unseen large organ gave a
mask far too small (docs/defaults.md). With ``vessels`` the organ also holds 2-6 tubes of
another intensity (all brighter or all darker than it) and a stronger texture, which
stay part of it, as the vessels inside a liver are part of the liver in its masks (on
their own they did not make one click fill a liver; making that sample common in
training did: docs/training.md, the eighth and ninth schedules).

A volume takes about 0.05-0.15 s, a large one as much; training draws from a fixed pool
built once into the preprocessing cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from mecca.data.phantoms import make_phantom

MIN_OBJECT_VOXELS = 40
"""Objects smaller than this are dropped from the label map (too small to be a target)."""
OBJECT_SIZE = (0.08, 0.3)
"""An object's mean radius, as a fraction of the volume's smallest extent."""
ORGAN_SIZE = (0.35, 0.6)
"""The same for a large volume's first object (:func:`make_large_synthetic`)."""
ORGAN_VESSELS = (2, 7)
"""How many tubes an organ with ``vessels`` holds (numpy's [low, high) range)."""


@dataclass(frozen=True, eq=False)
class SyntheticVolume:
    """A procedural volume: float32 image, uint8 label map (0 = none, 1..n objects) and
    voxel spacing (mm)."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def smooth_field(shape: tuple[int, int, int], cells: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean smooth random field of about unit variance: Gaussian noise on a coarse grid
    of ``shape / cells`` nodes (at least 2 per axis), upsampled trilinearly."""
    coarse = tuple(max(2, int(np.ceil(n / cells)) + 1) for n in shape)
    noise = torch.from_numpy(rng.standard_normal(coarse).astype(np.float32))[None, None]
    up = F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()
    return (up / max(float(up.std()), 1e-6)).astype(np.float32)


def _coords(shape: tuple[int, int, int], spacing: np.ndarray) -> list[np.ndarray]:
    """Voxel-centre coordinates in mm, one broadcastable float32 array per axis."""
    out = []
    for axis, (n, s) in enumerate(zip(shape, spacing, strict=True)):
        view = [1, 1, 1]
        view[axis] = n
        out.append((np.arange(n, dtype=np.float32) * np.float32(s)).reshape(view))
    return out


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_level(
    xyz: list[np.ndarray], centre: np.ndarray, radii: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Normalised ellipsoid radius (< 1 inside) of a random orientation."""
    rot = _rotation(rng)
    d = [x - np.float32(c) for x, c in zip(xyz, centre, strict=True)]
    acc = np.zeros(np.broadcast_shapes(*(a.shape for a in d)), np.float32)
    for row, r in zip(rot, radii, strict=True):
        proj = d[0] * np.float32(row[0]) + d[1] * np.float32(row[1]) + d[2] * np.float32(row[2])
        acc += (proj / np.float32(r)) ** 2
    return np.sqrt(acc)


def _object(
    kind: str,
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    rng: np.random.Generator,
    size_range: tuple[float, float] = OBJECT_SIZE,
) -> np.ndarray:
    """Bool mask of one random object of ``kind`` (ellipsoid, shell, tube, blob), of a mean
    radius in ``size_range`` times the smallest extent (tubes: 1.5-5 mm)."""
    extent = np.asarray(shape) * spacing
    xyz = _coords(shape, spacing)
    centre = rng.uniform(0.2, 0.8, size=3) * extent
    size = rng.uniform(*size_range) * float(extent.min())
    if kind == "tube":
        return _tube(shape, spacing, rng)
    radii = size * rng.uniform(0.6, 1.5, size=3)
    level = _ellipsoid_level(xyz, centre, radii, rng)
    wobble = smooth_field(shape, rng.uniform(6, 20), rng)
    level = level / (1 + rng.uniform(0.05, 0.3) * np.clip(wobble, -2, 2))
    if kind == "ellipsoid":
        return level < 1
    if kind == "shell":
        return (level < 1) & (level > rng.uniform(0.55, 0.85))
    blob = smooth_field(shape, rng.uniform(4, 10), rng) + 2.5 * (1 - level)
    mask = blob > rng.uniform(1.0, 2.0)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def _tube(
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    rng: np.random.Generator,
    within: np.ndarray | None = None,
) -> np.ndarray:
    """A tube of radius 1.5-5 mm along a smooth curve through 3-5 random points (voxels of
    the bool mask ``within`` when given)."""
    extent = np.asarray(shape) * spacing
    n_nodes = int(rng.integers(3, 6))
    if within is None:
        nodes = rng.uniform(0.1, 0.9, size=(n_nodes, 3)) * extent
    else:
        inside = np.argwhere(within)
        nodes = inside[rng.integers(len(inside), size=n_nodes)] * spacing
    t = np.linspace(0, 1, len(nodes))
    fine = np.linspace(0, 1, 400)
    curve = np.stack([np.interp(fine, t, nodes[:, a]) for a in range(3)], axis=1)
    curve = ndimage.gaussian_filter1d(curve, 20, axis=0, mode="nearest")
    seeds = np.ones(shape, bool)
    idx = np.clip(np.rint(curve / spacing).astype(int), 0, np.asarray(shape) - 1)
    seeds[tuple(idx.T)] = False
    dist = ndimage.distance_transform_edt(seeds, sampling=spacing)
    radius = rng.uniform(1.5, 5.0) * (1 + 0.2 * smooth_field(shape, 12, rng))
    return np.asarray(dist < radius)


def _tissue(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Background intensities: 2-4 tissues from a partition by a smooth field, textured."""
    n = int(rng.integers(2, 5))
    field = smooth_field(shape, rng.uniform(8, 24), rng)
    edges = np.quantile(field, np.sort(rng.uniform(0.1, 0.9, size=n - 1)))
    classes = np.digitize(field, edges)
    means = rng.uniform(-1.0, 1.0, size=n).astype(np.float32)
    texture = smooth_field(shape, rng.uniform(2, 6), rng)
    return means[classes] + np.float32(rng.uniform(0.0, 0.15)) * texture


def _objects_image(
    shape: tuple[int, int, int],
    spacing: np.ndarray,
    rng: np.random.Generator,
    organ: bool = False,
    vessels: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Clean piecewise image and label map of 2-6 objects painted over textured tissue;
    with ``organ`` the first is an organ-sized ellipsoid or blob (:data:`ORGAN_SIZE`),
    with ``vessels`` also holding tubes of its own label (:func:`_add_vessels`)."""
    image = _tissue(shape, rng)
    label = np.zeros(shape, np.uint8)
    kinds = ("ellipsoid", "shell", "tube", "blob")
    for value in range(1, int(rng.integers(2, 7)) + 1):
        if organ and value == 1:
            kind, sizes = str(rng.choice(["ellipsoid", "blob"])), ORGAN_SIZE
        else:
            kind, sizes = str(rng.choice(kinds, p=[0.35, 0.15, 0.2, 0.3])), OBJECT_SIZE
        mask = _object(kind, shape, spacing, rng, sizes)
        if mask.sum() < MIN_OBJECT_VOXELS:
            continue
        mean = np.float32(rng.uniform(-1.5, 1.5))
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        around = float(image[ring].mean()) if ring.any() else 0.0
        if abs(mean - around) < 0.25 and rng.random() < 0.8:  # most objects are visible
            mean = np.float32(around + rng.choice([-1, 1]) * rng.uniform(0.25, 1.0))
        texture = smooth_field(shape, rng.uniform(2, 8), rng)
        organ_vessels = vessels and organ and value == 1
        strength = rng.uniform(0.1, 0.4) if organ_vessels else rng.uniform(0.0, 0.2)
        image[mask] = (mean + np.float32(strength) * texture)[mask]
        if organ_vessels:
            _add_vessels(image, mask, float(mean), spacing, rng)
        label[mask] = value
    return image, _drop_small(label)


def _add_vessels(
    image: np.ndarray,
    organ: np.ndarray,
    mean: float,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Paint tubes clipped to ``organ`` into ``image`` (in place), all brighter or all
    darker than the organ's ``mean`` by 0.4-1.5; their voxels keep the organ's label."""
    shape = (int(organ.shape[0]), int(organ.shape[1]), int(organ.shape[2]))
    sign = float(rng.choice([-1.0, 1.0]))
    for _ in range(int(rng.integers(*ORGAN_VESSELS))):
        tube = _tube(shape, spacing, rng, within=organ) & organ
        image[tube] = np.float32(mean + sign * rng.uniform(0.4, 1.5))


def _drop_small(label: np.ndarray) -> np.ndarray:
    """Label map with objects of fewer than MIN_OBJECT_VOXELS voxels (after occlusion)
    set to 0 and the rest renumbered 1..n."""
    counts = np.bincount(label.ravel(), minlength=256)
    keep = [v for v in range(1, 256) if counts[v] >= MIN_OBJECT_VOXELS]
    lut = np.zeros(256, np.uint8)
    lut[keep] = np.arange(1, len(keep) + 1)
    return lut[label]


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Partial-volume blur, multiplicative bias field and Gaussian or Rician noise."""
    out = ndimage.gaussian_filter(image, rng.uniform(0.4, 1.2))
    out = out - out.min() + np.float32(rng.uniform(0.2, 1.0))
    shape = (int(out.shape[0]), int(out.shape[1]), int(out.shape[2]))
    out *= np.exp(np.float32(rng.uniform(0.0, 0.25)) * smooth_field(shape, 32, rng))
    sigma = np.float32(rng.uniform(0.01, 0.15) * float(out.std() + 1e-6) * 4)
    noise = rng.standard_normal(out.shape).astype(np.float32) * sigma
    if rng.random() < 0.5:
        imag = rng.standard_normal(out.shape).astype(np.float32) * sigma
        return np.sqrt((out + noise) ** 2 + imag**2)
    return out + noise


def make_synthetic(rng: np.random.Generator) -> SyntheticVolume:
    """One procedural volume (module docstring); deterministic for a given ``rng`` state."""
    spacing = np.array([1.0, 1.0, float(rng.choice([1.0, 1.0, 1.5, 2.0, 3.0, 4.0]))])
    if rng.random() < 0.25:
        shape = (int(rng.integers(48, 80)), int(rng.integers(48, 80)), int(rng.integers(24, 48)))
        ph = make_phantom(shape, rng=rng, kind=str(rng.choice(["mr", "ct"])), spacing=spacing)  # type: ignore[arg-type]
        sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        return SyntheticVolume(ph.image.astype(np.float32), _drop_small(ph.label), sp)
    n_k = int(rng.integers(48, 80) / spacing[2]) + 8
    shape = (int(rng.integers(48, 80)), int(rng.integers(48, 80)), n_k)
    image, label = _objects_image(shape, spacing, rng)
    sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return SyntheticVolume(_degrade(image, rng).astype(np.float32), label, sp)


def make_large_synthetic(rng: np.random.Generator, *, vessels: bool = False) -> SyntheticVolume:
    """One large procedural volume with an organ-sized first object (module docstring):
    80-112 voxels in-plane at 1-2 mm, slices 1-4 times thicker; with ``vessels`` the organ
    holds tubes of its own label; deterministic for a given ``rng`` state."""
    step = float(rng.choice([1.0, 1.5, 2.0]))
    spacing = np.array([step, step, step * float(rng.choice([1.0, 2.0, 3.0, 4.0]))])
    n_i, n_j = int(rng.integers(80, 113)), int(rng.integers(80, 113))
    n_k = max(16, int(min(n_i, n_j) * step * rng.uniform(0.6, 1.0) / spacing[2]))
    shape = (n_i, n_j, n_k)
    image, label = _objects_image(shape, spacing, rng, organ=True, vessels=vessels)
    sp = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    return SyntheticVolume(_degrade(image, rng).astype(np.float32), label, sp)
