"""Interactive graph cut (Boykov-Jolly) from fg/bg clicks, through PyMaxflow.

Y. Boykov and M.-P. Jolly, "Interactive graph cuts for optimal boundary & region
segmentation of objects in N-D images", ICCV 2001. The segmentation is the minimum cut of

    E(L) = sum_p D_p(L_p) + lambda * sum_{p~q, L_p != L_q} exp(-(I_p - I_q)^2 / (2 sigma^2))

on the 6-neighbourhood of the crop grid, solved exactly by the Boykov-Kolmogorov max-flow
of PyMaxflow (``maxflow``). Choices made here:

* **Seeds**: every fg/bg click so far as a cube (:func:`mecca.methods.classical.seeded.seed_labels`,
  radius ``seed_radius``) and, by default, the crop border as background. Seeds are hard
  constraints: a t-link of capacity ``K = 1 + 6 * lambda`` (Boykov-Jolly's ``K``, more
  than all the n-links of a voxel together), so a seed never changes side.
* **Region term** ``D_p``: negative log-likelihood of ``I_p`` under one Gaussian per class
  fitted to the seed intensities (border seeds count as background). Boykov and Jolly used
  histograms; one click gives a 27-voxel cube, too few samples for a histogram, so a
  Gaussian (standard deviation at least ``min_std``) is used instead. Without any
  background seed (``border_background=False`` and no bg click) the background Gaussian
  is fitted to every voxel that is not a foreground seed, and there is no hard
  background constraint.
* **Boundary term**: contrast-sensitive weight above; ``sigma=None`` estimates it as the
  root-mean-square intensity difference of all 6-neighbour pairs (as GrabCut's beta), so
  that the weight adapts to the crop's noise and contrast. Edges are added per axis with
  ``add_grid_edges`` and a one-neighbour structure (vectorised, no voxel loop).

Graph cut gives a labelling, not probabilities: ``StepResult.prob`` is the binary mask as
float32 0/1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import maxflow
import numpy as np

from mecca.data.roi import Crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import InteractionKind
from mecca.interface import FG_BG
from mecca.methods.classical.seeded import Extra, SeededMethod


def _gaussian_nll(values: np.ndarray, samples: np.ndarray, min_std: float) -> np.ndarray:
    """Negative log-likelihood (up to a constant) of ``values`` under a Gaussian of ``samples``."""
    mean = float(samples.mean())
    std = max(float(samples.std()), min_std)
    return 0.5 * ((values - mean) / std) ** 2 + math.log(std)


def contrast_sigma(image: np.ndarray) -> float:
    """RMS intensity difference over all 6-neighbour pairs (1.0 for a constant image)."""
    total, count = 0.0, 0
    for axis in range(image.ndim):
        diff = np.diff(image, axis=axis)
        total += float(np.square(diff).sum())
        count += diff.size
    sigma = math.sqrt(total / count) if count else 0.0
    return sigma if sigma > 0 else 1.0


@dataclass
class GraphCutMethod(SeededMethod):
    """Boykov-Jolly graph cut on the crop from fg/bg clicks; binary 0/1 output.

    Attributes:
        lam: weight ``lambda`` of the boundary term against the region term (>= 0; 0 means
            pure intensity classification with hard seeds). Default 5.0.
        sigma: intensity scale of the boundary term in crop units (z-scored intensities);
            None (default) estimates it from the crop, see the module docstring.
        min_std: smallest standard deviation of the class Gaussians (z-score units, > 0),
            so that a uniform seed patch does not give an infinitely sharp model.
        seed_radius: each click seeds a cube of side ``2 * seed_radius + 1``.
        border_background: treat the crop border as background seeds.
    """

    lam: float = 5.0
    sigma: float | None = None
    min_std: float = 0.05
    seed_radius: int = 1
    border_background: bool = True
    name: str = "graphcut"
    accepts: frozenset[InteractionKind] = FG_BG

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"graphcut lam must be a finite number >= 0, got {self.lam}")
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ConfigError(f"graphcut sigma must be > 0 or None (estimate), got {self.sigma}")
        if not (math.isfinite(self.min_std) and self.min_std > 0):
            raise ConfigError(f"graphcut min_std must be > 0, got {self.min_std}")
        self.check_seed_radius()

    def from_seeds(self, crop: Crop, seeds: np.ndarray, extra: Extra) -> tuple[np.ndarray, Extra]:
        if not (seeds == 1).any():
            return np.zeros(crop.grid, np.float32), extra
        return self.segment(crop.image, seeds), extra

    def segment(self, image: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Bool foreground mask of the minimum cut for a seed map (1 fg, 2 bg, 0 free).

        Needs at least one foreground seed.
        """
        img = np.asarray(image, dtype=np.float64)
        fg, bg = seeds == 1, seeds == 2
        bg_samples = img[bg] if bg.any() else img[~fg]
        if bg_samples.size == 0:  # every voxel is a foreground seed
            return fg
        cost_fg = _gaussian_nll(img, img[fg], self.min_std)
        cost_bg = _gaussian_nll(img, bg_samples, self.min_std)
        low = np.minimum(cost_fg, cost_bg)
        cost_fg -= low  # capacities must be >= 0; only the difference matters
        cost_bg -= low
        hard = 1.0 + 6.0 * self.lam
        cost_fg[fg], cost_bg[fg] = 0.0, hard
        cost_fg[bg], cost_bg[bg] = hard, 0.0

        graph = maxflow.Graph[float]()
        nodes = graph.add_grid_nodes(img.shape)
        if self.lam > 0:
            sigma = self.sigma if self.sigma is not None else contrast_sigma(img)
            for axis in range(img.ndim):
                # weights[p] is the edge p -> p + e_axis; the last slice has no such edge
                # (PyMaxflow skips neighbours outside the grid).
                diff = np.diff(img, axis=axis)
                weights = np.zeros(img.shape)
                head = tuple(slice(0, -1) if a == axis else slice(None) for a in range(img.ndim))
                weights[head] = self.lam * np.exp(-(diff**2) / (2.0 * sigma**2))
                structure = np.zeros((3,) * img.ndim)
                structure[tuple(2 if a == axis else 1 for a in range(img.ndim))] = 1.0
                graph.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
        # Source side = foreground: cutting a voxel's source link (it ends up background)
        # costs cost_bg, cutting its sink link costs cost_fg.
        graph.add_grid_tedges(nodes, cost_bg, cost_fg)
        graph.maxflow()
        return ~np.asarray(graph.get_grid_segments(nodes), dtype=bool)
