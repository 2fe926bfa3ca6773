"""Procedural 3D test volumes with known ground truth (for tests and the demo).

A phantom holds a lesion-like *target* (label 1): a randomly oriented ellipsoid whose radius
is modulated by up to +-25 % by a smooth random field, so its boundary is irregular, with a
smoothly inhomogeneous inside. Next to it lies a *distractor* (label 2, its voxels outside
the target): a smooth, possibly elongated ellipsoid of similar intensity placed so that the
two surfaces meet along a random direction with a gap drawn in [-1, 1] voxel; in 70-98 % of
phantoms the two labels are face-adjacent, otherwise within about a voxel. It is the classic
leak for region growing and thresholding. Around them: textured background tissue, partial
volume at every boundary (a one-voxel linear ramp of occupancy computed from an approximate
signed distance), and noise.

``kind='mr'``: arbitrary units (tissue ~100, target and distractor ~130-170), a smooth
multiplicative bias field (exp of a random quadratic per axis: typically within +-20 %, at
most 0.55-1.8x in a corner) and Rician noise (magnitude of a complex Gaussian, sigma 10-16).
``kind='ct'``: Hounsfield-like units: air -1000 outside an elliptic-cylinder body (axis k),
soft tissue ~40 HU, the target hyperdense (~80-100 HU) or hypodense (~-5-10 HU) at random,
Gaussian noise of ~12-20 HU and no bias field.

Object sizes are physical (millimetres, through ``spacing``): the target's mean radius is
12-20 % of the smallest field-of-view extent and it always lies inside the volume (and, for
CT, inside the body) with a margin of at least 2 voxels; volumes too small for that get a
smaller target (20 voxels per axis or more are sensible, under ~12 is refused). Everything
is drawn from the given ``rng``, so a seed fixes the phantom; a 64 x 64 x 40 phantom takes
about 4-7 ms on one CPU core.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mecca.data.datasets import write_msd_dataset
from mecca.errors import ConfigError
from mecca.io import Volume

log = logging.getLogger(__name__)

Int3 = tuple[int, int, int]
Float3 = tuple[float, float, float]
MARGIN_VOXELS = 2.0
BOUNDARY_AMPLITUDE = 0.25  # relative radius modulation of the target's boundary


def _int3(shape: Sequence[int]) -> Int3:
    return (int(shape[0]), int(shape[1]), int(shape[2]))


@dataclass(frozen=True, eq=False)
class Phantom:
    """A synthetic volume and its ground truth.

    Attributes:
        image: float32 (i, j, k) intensities (MR: arbitrary units; CT: Hounsfield-like).
        label: uint8 (i, j, k): 0 background, 1 target lesion, 2 touching distractor.
        spacing: voxel size in mm along (i, j, k).
        affine: float64 (4, 4) voxel -> world mm, ``diag(*spacing, 1)``.
        kind: 'mr' or 'ct'.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: Float3
    affine: np.ndarray
    kind: str


@dataclass(frozen=True)
class _Ellipsoid:
    """Centre (mm), rotation (rows = principal axes) and semi-axes (mm)."""

    centre: np.ndarray
    axes: np.ndarray
    radii: np.ndarray

    def support_radius(self, direction: np.ndarray) -> float:
        """Distance (mm) from the centre to the surface along a unit direction."""
        local = self.axes @ direction
        return float(1.0 / np.sqrt(np.sum((local / self.radii) ** 2)))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3x3 rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _rbf_weights(n: int, step_mm: float, feature_mm: float) -> np.ndarray:
    """(n, m) Gaussian interpolation weights from m coarse nodes to n voxels, rows of unit
    L2 norm, so that weighting unit-variance node noise gives unit variance everywhere."""
    m = int(np.ceil(n * step_mm / feature_mm)) + 3
    nodes = (np.arange(m) - 1.0) * feature_mm
    x = np.arange(n) * step_mm
    w = np.exp(-0.5 * ((x[:, None] - nodes[None, :]) / (0.7 * feature_mm)) ** 2)
    w[w < 1e-6] = 0.0  # far tails would be float32 subnormals, which make matmul ~100x slower
    return (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(
    shape: Int3, spacing: np.ndarray, feature_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Smooth zero-mean, unit-variance Gaussian random field, float32 ``shape``.

    Coarse node noise (one node per ``feature_mm``) interpolated with separable Gaussian
    weights: three small matrix products instead of a full-volume filter.
    """
    w = [_rbf_weights(n, float(s), feature_mm) for n, s in zip(shape, spacing, strict=True)]
    coarse = rng.standard_normal(tuple(a.shape[1] for a in w)).astype(np.float32)
    f = np.tensordot(w[0], coarse, axes=(1, 0))  # (I, b, c)
    f = np.tensordot(f, w[1], axes=(1, 1))  # (I, c, J)
    f = np.ascontiguousarray(f.transpose(0, 2, 1)).reshape(-1, coarse.shape[2]) @ w[2].T
    return f.reshape(shape)


def _gaussian_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard normal float32 noise; torch's sampler (seeded from ``rng``) is ~2x faster."""
    gen = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    return torch.randn(shape, generator=gen).numpy()


def _axis_coords(shape: Int3, spacing: np.ndarray, centre: np.ndarray) -> list[np.ndarray]:
    """Voxel-centre coordinates (mm) relative to ``centre``, one float32 vector per axis."""
    return [
        (np.arange(n) * s - c).astype(np.float32)
        for n, s, c in zip(shape, spacing, centre, strict=True)
    ]


Region = tuple[slice, slice, slice]


def _region(shape: Int3, spacing: np.ndarray, centre: np.ndarray, reach_mm: float) -> Region:
    """Voxel box within ``reach_mm`` of ``centre`` on every axis, clipped to the volume
    (possibly empty where the centre lies far outside)."""
    n = np.asarray(shape)
    lo = np.clip(np.floor((centre - reach_mm) / spacing), 0, n).astype(int)
    hi = np.clip(np.ceil((centre + reach_mm) / spacing) + 1, lo, n).astype(int)
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))


def _region_shape(region: Region) -> Int3:
    a, b, c = (int(r.stop - r.start) for r in region)
    return (a, b, c)


def _ellipsoid_radius(spacing: np.ndarray, e: _Ellipsoid, region: Region) -> np.ndarray:
    """Normalised ellipsoidal radius |A (x - c)| over ``region``, float32 of its shape:
    < 1 inside, 1 on the surface.

    The quadratic form is split into an (i, j) plane part, a part linear in k and a k part,
    so only a few operations run over the whole region.
    """
    q = ((e.axes.T / e.radii**2) @ e.axes).astype(np.float32)  # x^T Q x = |A x|^2
    x, y, z = (
        (np.arange(r.start, r.stop) * s - c).astype(np.float32)
        for r, s, c in zip(region, spacing, e.centre, strict=True)
    )
    x2, y2 = x[:, None], y[None, :]
    plane = q[0, 0] * x2**2 + q[1, 1] * y2**2 + 2 * q[0, 1] * x2 * y2
    lin = 2 * (q[0, 2] * x2 + q[1, 2] * y2)
    acc = plane[..., None] + lin[..., None] * z + q[2, 2] * z**2
    return np.sqrt(np.maximum(acc, 0.0))


def _occupancy(signed_mm: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Partial-volume fraction from an approximate signed distance (mm, < 0 inside)."""
    return np.clip(0.5 - signed_mm / np.float32(voxel_mm), 0.0, 1.0)


def _place_target(
    shape: Int3, spacing: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[_Ellipsoid, float]:
    """Target ellipsoid fully inside the volume (CT: inside the body); returns it and the
    bounding radius (mm) of its modulated surface plus margin. Small volumes get a smaller
    target; ConfigError when not even a ~1.5 voxel one fits."""
    extent = np.asarray(shape) * spacing
    margin = (MARGIN_VOXELS + 1) * float(spacing.max())
    room = float(((extent - spacing) / 2).min())
    if kind == "ct":
        room = min(room, float(0.47 * extent[:2].min()))
    largest = (room - margin) / (1.3 * (1 + BOUNDARY_AMPLITUDE))  # fitting mean radius
    mean_r = min(rng.uniform(0.12, 0.2) * float(extent.min()), largest)
    if mean_r < 1.5 * float(spacing.min()):
        raise ConfigError(
            f"volume {shape} with spacing {spacing.tolist()} is too small for a phantom",
            hint="use about 20 voxels per axis or more",
        )
    radii = mean_r * rng.uniform(0.75, 1.3, size=3)
    bound = float(radii.max() * (1 + BOUNDARY_AMPLITUDE)) + margin
    centre = rng.uniform(bound, extent - spacing - bound)
    if kind == "ct":  # inside the body ellipse in the (i, j) plane, whose semi-axes are 0.47
        semi = np.maximum(0.47 * extent[:2] - bound, 0.0)
        rho, theta = np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        offset = rho * semi * np.array([np.cos(theta), np.sin(theta)])
        centre[:2] = (extent[:2] - spacing[:2]) / 2 + offset
    return _Ellipsoid(centre, _rotation(rng), radii), bound


def _surface_distance(
    level: np.ndarray, spacing: np.ndarray, e: _Ellipsoid, direction: np.ndarray, limit: float
) -> float:
    """Distance (mm) from the target centre to its (modulated) surface along ``direction``,
    by marching along the ray through the level-set field (nearest voxel)."""
    ts = np.arange(0.0, limit, 0.25 * float(spacing.min()))
    idx = np.rint((e.centre + ts[:, None] * direction) / spacing).astype(int)
    idx = np.clip(idx, 0, np.asarray(level.shape) - 1)
    outside = level[idx[:, 0], idx[:, 1], idx[:, 2]] >= 1.0
    return float(ts[np.argmax(outside)]) if outside.any() else limit


def _place_distractor(
    level: np.ndarray,
    spacing: np.ndarray,
    target: _Ellipsoid,
    bound: float,
    rng: np.random.Generator,
) -> _Ellipsoid:
    """A smooth ellipsoid of comparable size whose surface meets the target's (gap in
    [-1, 1] voxel) along a random direction."""
    radii = float(target.radii.mean()) * rng.uniform(0.5, 1.0, size=3) * np.array([1, 1, 1.8])
    d = _Ellipsoid(np.zeros(3), _rotation(rng), rng.permutation(radii))
    u = _unit(rng)
    gap = rng.uniform(-1.0, 1.0) * float(spacing.mean())
    dist = _surface_distance(level, spacing, target, u, bound) + d.support_radius(-u) + gap
    return _Ellipsoid(target.centre + dist * u, d.axes, d.radii)


@dataclass(frozen=True, eq=False)
class _Layout:
    """Float32 partial-volume occupancies of target and distractor, the uint8 label, and
    the target's smooth internal texture (zero outside its box), all of the volume's shape."""

    occ_t: np.ndarray
    occ_d: np.ndarray
    label: np.ndarray
    lesion_tex: np.ndarray


def _target_level(
    shape: Int3,
    spacing: np.ndarray,
    target: _Ellipsoid,
    region: Region,
    rng: np.random.Generator,
) -> np.ndarray:
    """The target's level set (< 1 inside), float32 ``shape``: its ellipsoidal radius divided
    by 1 + 0.25 x a smooth random field in [-1, 1] (the irregular boundary); 10 outside
    ``region``."""
    local = _ellipsoid_radius(spacing, target, region)
    wobble = _smooth_field(local.shape, spacing, 0.5 * float(target.radii.mean()), rng)
    wobble /= max(float(np.abs(wobble).max()), 1e-6)
    level = np.full(shape, 10.0, np.float32)
    level[region] = local / (1 + BOUNDARY_AMPLITUDE * wobble)
    return level


def _geometry(shape: Int3, spacing: np.ndarray, kind: str, rng: np.random.Generator) -> _Layout:
    """Place target and distractor and render their occupancies and labels.

    Work is confined to each object's bounding box; for CT the distractor is cut to the
    body."""
    target, bound = _place_target(shape, spacing, kind, rng)
    voxel = float(np.cbrt(np.prod(spacing)))
    mean_r = float(target.radii.mean())
    region_t = _region(shape, spacing, target.centre, bound)
    level = _target_level(shape, spacing, target, region_t, rng)
    occ_t = np.zeros(shape, np.float32)
    occ_t[region_t] = _occupancy((level[region_t] - 1) * mean_r, voxel)
    lesion_tex = np.zeros(shape, np.float32)
    lesion_tex[region_t] = _smooth_field(_region_shape(region_t), spacing, 0.7 * mean_r, rng)
    distractor = _place_distractor(level, spacing, target, bound, rng)
    reach = float(distractor.radii.max()) + 2 * float(spacing.max())
    region_d = _region(shape, spacing, distractor.centre, reach)
    occ_d = np.zeros(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    if min(_region_shape(region_d)) > 0:
        d_level = _ellipsoid_radius(spacing, distractor, region_d)
        local = _occupancy((d_level - 1) * float(distractor.radii.mean()), voxel)
        local = np.minimum(local, 1 - occ_t[region_d])
        if kind == "ct":
            local *= _body_occupancy(shape, spacing)[region_d]
        occ_d[region_d] = local
        label[region_d][local > 0.5] = 2
    label[region_t][level[region_t] < 1] = 1
    return _Layout(occ_t=occ_t, occ_d=occ_d, label=label, lesion_tex=lesion_tex)


def _body_occupancy(shape: Int3, spacing: np.ndarray) -> np.ndarray:
    """CT body: elliptic cylinder along k with semi-axes 0.47 of the in-plane extent."""
    extent = np.asarray(shape) * spacing
    x, y, _ = _axis_coords(shape, spacing, (extent - spacing) / 2)
    r = np.sqrt((x[:, None] / (0.47 * extent[0])) ** 2 + (y[None, :] / (0.47 * extent[1])) ** 2)
    mean_semi = 0.47 * float(extent[:2].mean())
    body = _occupancy((r - 1) * mean_semi, float(spacing[:2].mean()))
    return np.broadcast_to(body.astype(np.float32)[..., None], shape)


def _bias_field(shape: Int3, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative MR bias, exp of a random quadratic per axis (about +-20 %).

    Separable, so built as an outer product of three small vectors (float32 ``shape``)."""
    factors = []
    for n in shape:
        x = np.linspace(-1, 1, n)
        a, b = rng.uniform(-0.1, 0.1, size=2)
        factors.append(np.exp(a * x + b * x**2).astype(np.float32))
    plane = factors[0][:, None] * factors[1][None, :]
    return plane[..., None] * factors[2]


def _mr_image(lay: _Layout, tex: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MR intensities: textured tissue/target/distractor mix, bias field, Rician noise."""
    shape = _int3(lay.label.shape)
    tissue = 100.0 * (1 + 0.1 * tex)
    mu = rng.uniform(130.0, 170.0)
    lesion = mu * (1 + 0.1 * lay.lesion_tex)
    distractor = mu * rng.uniform(0.92, 1.08) * (1 + 0.05 * tex)
    clean = tissue + lay.occ_t * (lesion - tissue) + lay.occ_d * (distractor - tissue)
    clean *= _bias_field(shape, rng)
    sigma = np.float32(rng.uniform(10.0, 16.0))
    real = clean + sigma * _gaussian_noise(shape, rng)
    imag = sigma * _gaussian_noise(shape, rng)
    return np.sqrt(real * real + imag * imag)


def _ct_image(
    lay: _Layout, tex: np.ndarray, spacing: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """CT intensities (HU): air outside the body, textured soft tissue, Gaussian noise."""
    shape = _int3(lay.label.shape)
    tissue = 40.0 + 10.0 * tex
    hyper = rng.uniform() < 0.5
    mu = rng.uniform(80.0, 100.0) if hyper else rng.uniform(-5.0, 10.0)
    lesion = mu + 8.0 * lay.lesion_tex
    distractor = mu + rng.uniform(-8.0, 8.0) + 4.0 * tex
    inside = tissue + lay.occ_t * (lesion - tissue) + lay.occ_d * (distractor - tissue)
    body = _body_occupancy(shape, spacing)
    clean = -1000.0 + body * (inside + 1000.0)
    sigma = np.float32(rng.uniform(12.0, 20.0))
    return clean + sigma * _gaussian_noise(shape, rng)


def make_phantom(
    shape: Sequence[int] = (64, 64, 40),
    *,
    rng: np.random.Generator,
    kind: Literal["mr", "ct"] = "mr",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Phantom:
    """A random lesion phantom of ``shape`` (i, j, k) voxels of ``spacing`` mm.

    The label is 1 on the target lesion and 2 on the touching distractor (see the module
    docstring). Deterministic for a given ``rng`` state; ConfigError when the volume is too
    small to hold the target with its margin.
    """
    if kind not in ("mr", "ct"):
        raise ConfigError(f"unknown phantom kind {kind!r}, use 'mr' or 'ct'")
    shp = tuple(int(n) for n in shape)
    sp = np.asarray(spacing, dtype=np.float64)
    if len(shp) != 3 or sp.shape != (3,) or min(shp) < 8 or np.any(sp <= 0):
        raise ConfigError(
            f"need a 3D shape of at least 8 voxels per axis and positive spacing, "
            f"got {shape}, {spacing}"
        )
    shp3: Int3 = (shp[0], shp[1], shp[2])
    lay = _geometry(shp3, sp, kind, rng)
    tex = _smooth_field(shp3, sp, 5.0 * float(sp.mean()), rng)  # background tissue texture
    image = _mr_image(lay, tex, rng) if kind == "mr" else _ct_image(lay, tex, sp, rng)
    affine = np.diag([*sp.tolist(), 1.0])
    spacing3: Float3 = (float(sp[0]), float(sp[1]), float(sp[2]))
    return Phantom(
        image=image.astype(np.float32, copy=False),
        label=lay.label,
        spacing=spacing3,
        affine=affine,
        kind=kind,
    )


def write_phantom_dataset(
    root: str | Path,
    *,
    count: int,
    seed: int = 0,
    kind: Literal["mr", "ct"] = "mr",
    shape: Sequence[int] = (64, 64, 40),
    force: bool = False,
) -> Path:
    """Write ``count`` phantoms as an MSD-layout dataset (NIfTI) with a 60/20/20 split.

    Case ``i`` is ``make_phantom(rng=default_rng([seed, i]))``, so one phantom can be
    regenerated alone. Target ``lesion`` = label 1 (default); ``distractor`` = label 2.
    """
    if count < 1:
        raise ConfigError(f"--n must be at least 1, got {count}")
    cases = []
    for i in range(count):
        ph = make_phantom(_int3(shape), rng=np.random.default_rng([seed, i]), kind=kind)
        cases.append((f"phantom_{i:03d}", Volume(ph.image, ph.affine), ph.label))
    ids = [c[0] for c in cases]
    n_test = max(1, count // 5) if count >= 3 else 0
    n_val = max(1, count // 5) if count >= 5 else 0
    splits = {
        "train": ids[: count - n_val - n_test],
        "val": ids[count - n_val - n_test : count - n_test],
        "test": ids[count - n_test :],
    }
    write_msd_dataset(
        root,
        cases,
        labels={0: "background", 1: "lesion", 2: "distractor"},
        targets={"lesion": (1,), "distractor": (2,)},
        default_target="lesion",
        splits=splits,
        force=force,
        info={"description": f"MECCA {kind.upper()} phantoms, seed {seed}", "modality": kind},
    )
    return Path(root)
