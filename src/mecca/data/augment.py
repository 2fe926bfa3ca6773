"""Random flips and small rotations of a network-grid crop, replayable from their parameters.

Applied to the (55, 55, 30)-style crop after resampling: the image is interpolated linearly,
the binary label linearly as a float and thresholded at 0.5, so it stays binary and aligned
with the image. Rotations are in the in-plane (i, j) plane by default, because the slice
axis k is usually coarser and anatomy is not isotropic across it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from mecca.errors import ConfigError, InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentParams:
    """The random choices of one augmentation, enough to replay it exactly.

    Attributes:
        flips: spatial axes (0 = i, 1 = j, 2 = k) that were flipped, applied first.
        degrees: rotation angle in degrees, applied after the flips (0 = none).
        rotate_axes: the two spatial axes spanning the rotation plane.
    """

    flips: tuple[int, ...] = ()
    degrees: float = 0.0
    rotate_axes: tuple[int, int] = (0, 1)


def _spatial_offset(image: np.ndarray) -> int:
    """Images are (i, j, k) or (C, i, j, k); returns the index of axis i."""
    if image.ndim not in (3, 4):
        raise InputError(f"image must be (i, j, k) or (C, i, j, k), got shape {image.shape}")
    return image.ndim - 3


def _check_axes(axes: Sequence[int], name: str) -> tuple[int, ...]:
    out = tuple(int(a) for a in axes)
    if any(a not in (0, 1, 2) for a in out) or len(set(out)) != len(out):
        raise ConfigError(f"{name} must be distinct spatial axes among 0, 1, 2, got {axes}")
    return out


def _flip(array: np.ndarray, axes: tuple[int, ...], offset: int) -> np.ndarray:
    if not axes:
        return array
    return np.flip(array, axis=tuple(a + offset for a in axes))


def _rotate(array: np.ndarray, degrees: float, axes: tuple[int, int], offset: int) -> np.ndarray:
    plane = (axes[0] + offset, axes[1] + offset)
    return ndi.rotate(array, degrees, axes=plane, reshape=False, order=1, mode="nearest")


def apply_augment(
    image: np.ndarray, label: np.ndarray | None, params: AugmentParams
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply recorded flips then rotation to an image and (optionally) its binary label.

    ``image`` is float (i, j, k) or (C, i, j, k) (returned float32); ``label`` is (i, j, k),
    any non-zero = target, returned with its own dtype and values in {0, 1}.
    """
    offset = _spatial_offset(image)
    if label is not None and label.shape != image.shape[offset:]:
        raise InputError(f"label shape {label.shape} differs from image shape {image.shape}")
    axes = _check_axes(params.rotate_axes, "rotate_axes")
    if len(axes) != 2:
        raise ConfigError(f"rotate_axes needs two axes, got {params.rotate_axes}")
    flips = _check_axes(params.flips, "flips")
    img = _flip(np.asarray(image, dtype=np.float32), flips, offset)
    lab = None if label is None else _flip(label != 0, flips, 0).astype(np.float32)
    if params.degrees != 0.0:
        img = _rotate(img, params.degrees, (axes[0], axes[1]), offset)
        if lab is not None:
            lab = _rotate(lab, params.degrees, (axes[0], axes[1]), 0)
    out_label = None if lab is None or label is None else (lab >= 0.5).astype(label.dtype)
    return np.ascontiguousarray(img), out_label


def random_flip_rotate(
    image: np.ndarray,
    label: np.ndarray | None,
    rng: np.random.Generator,
    *,
    flip_axes: Sequence[int] = (0, 1, 2),
    p_flip: float = 0.5,
    max_degrees: float = 10.0,
    rotate_axes: tuple[int, int] = (0, 1),
) -> tuple[np.ndarray, np.ndarray | None, AugmentParams]:
    """Flip each of ``flip_axes`` with probability ``p_flip``, then rotate by an angle drawn
    uniformly in [-max_degrees, max_degrees] in the ``rotate_axes`` plane.

    Returns the augmented image (float32), label (binary, input dtype) and the
    :class:`AugmentParams` drawn, which :func:`apply_augment` replays.
    """
    if not 0.0 <= p_flip <= 1.0:
        raise ConfigError(f"p_flip must be in [0, 1], got {p_flip}")
    if max_degrees < 0:
        raise ConfigError(f"max_degrees must be >= 0, got {max_degrees}")
    axes = _check_axes(flip_axes, "flip_axes")
    draws = rng.random(len(axes))
    flips = tuple(a for a, u in zip(axes, draws, strict=True) if u < p_flip)
    degrees = float(rng.uniform(-max_degrees, max_degrees)) if max_degrees > 0 else 0.0
    params = AugmentParams(flips=flips, degrees=degrees, rotate_axes=rotate_axes)
    img, lab = apply_augment(image, label, params)
    return img, lab, params
