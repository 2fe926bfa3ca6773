"""Medical image volumes with their geometry, and reading/writing them.

Axis convention (the one place it is written down)
-------------------------------------------------
``Volume.array`` is indexed ``array[i, j, k]`` in the file's own voxel order, the order
NIfTI calls i, j, k (nibabel's ``get_fdata()`` order). Files read with SimpleITK (NRRD,
MHA/MHD, GIPL, DICOM) come as z, y, x arrays from ``sitk.GetArrayFromImage``; they are
transposed to x, y, z = i, j, k here, so every array in the package has the same order.

``Volume.affine`` maps a voxel index ``(i, j, k, 1)`` to world millimetres in RAS+
(x increases towards the subject's Right, y towards Anterior, z towards Superior), the
nibabel / NIfTI convention. ITK's LPS world is converted by negating x and y.

Clicks, boxes and every voxel coordinate in the package are ``(i, j, k)`` triples in this
order; boxes are half-open ``[start, stop)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image (or mask) together with the geometry of its voxel grid.

    Attributes:
        array: voxel values, shape (I, J, K), in the file's i, j, k order.
        affine: float64 (4, 4), voxel index (i, j, k, 1) -> RAS+ world millimetres.
        path: the file it was read from, if any.
        meta: format-specific header data needed to write a mask back with exactly the
            same geometry (for NIfTI: the nibabel header with its qform/sform codes).
    """

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape (I, J, K)."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (column norms of the affine)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(n) for n in norms)  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """(3, 3) unit column vectors of the i, j, k axes in RAS+ world space."""
        return self.affine[:3, :3] / np.asarray(self.spacing)[None, :]

    @property
    def origin(self) -> np.ndarray:
        """World position (RAS+ mm) of the centre of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel coordinates (N, 3) or (3,) to RAS+ millimetres."""
        pts = np.asarray(ijk, dtype=np.float64)
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_voxel(self, xyz: np.ndarray) -> np.ndarray:
        """Map RAS+ millimetres (N, 3) or (3,) to (fractional) voxel coordinates."""
        pts = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]
