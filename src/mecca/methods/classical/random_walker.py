"""The random walker: L. Grady, "Random walks for image segmentation", IEEE TPAMI 2006,
seeded by the clicks (:mod:`mecca.methods.classical.seeded`).

Two solvers of the same linear system (scikit-image's edge weights, Jacobi-preconditioned
conjugate gradients to the same relative tolerance):

* ``"fast"`` (default), for interactive use: the crop's graph Laplacian is built once per
  crop and kept in the state's ``extra``; with two labels only the foreground system is
  solved (the background probability is its complement, as the exact solutions sum to
  1); and each step starts from the previous step's probability (a warm start: one new
  click changes the solution locally, so far fewer iterations reach the tolerance).
* ``"skimage"``: ``skimage.segmentation.random_walker(mode="cg_j")`` from scratch at every
  step, as before 2026-12-06 (both labels, graph rebuilt); kept as the reference.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import cg
from skimage.segmentation import random_walker

from mecca.data.roi import Crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import InteractionKind
from mecca.interface import FG_BG
from mecca.methods.classical.seeded import Extra, SeededMethod, trivial_prob


def walker_data(image: np.ndarray, beta: float) -> tuple[np.ndarray, float]:
    """(data, beta) for ``random_walker`` with finite edge weights on any image.

    scikit-image scales beta by the image's standard deviation, so a flat image (a
    background ROI) gives 0/0 = NaN weights and a solver that never converges. With no
    contrast every edge weighs the same, which a non-flat stand-in with beta = 0 gives.
    """
    if float(np.std(image)) > 1e-6:
        return image, beta
    return np.arange(image.size, dtype=np.float64).reshape(image.shape), 0.0


SOLVERS = ("fast", "skimage")
"""The random walker's solvers (module docstring)."""


def walker_laplacian(data: np.ndarray, beta: float) -> sparse.csr_array:
    """Graph Laplacian of the 6-neighbour grid of ``data`` (3D) with scikit-image's edge
    weights: ``exp(-beta * diff**2 / (10 * std(data))) + 1e-10`` (unit spacing), so that
    the fast solver solves the system ``skimage.segmentation.random_walker`` solves."""
    index = np.arange(data.size).reshape(data.shape)
    scale = beta / (10 * float(np.std(data))) if beta else 0.0
    rows, cols, weights = [], [], []
    for axis in range(data.ndim):
        lo = tuple(slice(None, -1) if a == axis else slice(None) for a in range(data.ndim))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(data.ndim))
        rows.append(index[lo].ravel())
        cols.append(index[hi].ravel())
        diff = (data[hi] - data[lo]).ravel().astype(np.float64)
        weights.append(np.exp(-scale * diff**2) + 1e-10)
    i, j, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    adjacency = sparse.coo_array(
        (np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
        shape=(data.size, data.size),
    ).tocsr()
    degree = sparse.dia_array((adjacency.sum(axis=1), 0), shape=adjacency.shape)
    return (degree - adjacency).tocsr()


def solve_foreground(
    laplacian: sparse.csr_array, seeds: np.ndarray, tol: float, x0: np.ndarray | None = None
) -> np.ndarray:
    """Probability that a walker from each voxel reaches a foreground seed (1) before a
    background seed (2): Grady's system ``L_UU x = -L_UF 1`` on the unseeded voxels,
    conjugate gradients with a Jacobi preconditioner to relative residual ``tol``, started
    from ``x0`` (a probability map of the seeds' shape) when given."""
    flat = seeds.ravel()
    free = flat == 0
    rows = laplacian[free]
    system = rows[:, free].tocsr()
    rhs = -(rows @ (flat == 1).astype(np.float64))
    start = None if x0 is None else np.asarray(x0, np.float64).ravel()[free]
    jacobi = sparse.dia_array((1.0 / system.diagonal(), 0), shape=system.shape)
    x, _ = cg(system, rhs, x0=start, rtol=tol, atol=0.0, M=jacobi)
    prob = (flat == 1).astype(np.float64)
    prob[free] = x
    return prob.reshape(seeds.shape)


@dataclass
class RandomWalkerMethod(SeededMethod):
    """Random walker on the crop from fg/bg clicks (scikit-image's edge weights),
    probability output.

    Attributes:
        beta: edge-weight sharpness (scikit-image's ``beta``).
        seed_radius: each click seeds a cube of side ``2 * seed_radius + 1``.
        border_background: treat the crop border as background seeds.
        solver: ``"fast"`` (cached graph, foreground system only, warm start) or
            ``"skimage"`` (scikit-image from scratch, the settings before 2026-12-06).
        tol: relative residual at which conjugate gradients stop (scikit-image's default).
    """

    beta: float = 130.0
    seed_radius: int = 1
    border_background: bool = True
    solver: str = "fast"
    tol: float = 1e-3
    name: str = "random_walker"
    accepts: frozenset[InteractionKind] = FG_BG

    def __post_init__(self) -> None:
        self.check_seed_radius()
        if self.solver not in SOLVERS:
            raise ConfigError(
                f"unknown random walker solver {self.solver!r}", hint=f"one of {SOLVERS}"
            )

    def from_seeds(self, crop: Crop, seeds: np.ndarray, extra: Extra) -> tuple[np.ndarray, Extra]:
        prob = trivial_prob(seeds)
        if prob is not None:
            return prob, extra
        if self.solver == "skimage":
            with warnings.catch_warnings():
                # cg_j stops at a tolerance, so probabilities may overshoot [0, 1] by ~1e-5;
                # they are clipped below, so scikit-image's warning about it is noise here.
                warnings.filterwarnings("ignore", "The probability range", UserWarning)
                data, beta = walker_data(crop.image, self.beta)
                full = random_walker(
                    data, seeds, beta=beta, mode="cg_j", tol=self.tol, return_full_prob=True
                )
            return np.clip(full[0], 0.0, 1.0).astype(np.float32), extra
        cached, warm = extra.get("walker_graph"), extra.get("walker_prob")
        if cached is None or cached[0] is not crop.image or cached[1] != self.beta:
            data, beta = walker_data(crop.image, self.beta)
            cached, warm = (crop.image, self.beta, walker_laplacian(data, beta)), None
        x = solve_foreground(cached[2], seeds, self.tol, x0=warm)
        prob = np.clip(x, 0.0, 1.0).astype(np.float32)
        # the previous probability is the next step's warm start: the same array as the
        # state's prob, so keeping it costs no memory.
        return prob, {**extra, "walker_graph": cached, "walker_prob": prob}
