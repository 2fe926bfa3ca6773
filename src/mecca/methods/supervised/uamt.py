"""UA-MT, the uncertainty-aware mean teacher (L. Yu, S. Wang, X. Li, C.-W. Fu and P.-A.
Heng, "Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium
segmentation", MICCAI 2019): the semi-supervised, non-interactive baseline of the MECCA
paper's labeled-fraction table (SPEC Sec. 6). :mod:`mecca.methods.supervised.train` trains it
(``method: uamt``); at inference it is an ordinary segmenter (the student network).

One training step, on ``B`` labeled and ``B`` unlabeled crops:

* the student sees both halves (no noise); its supervised loss on the labeled half is the
  other baselines' soft Dice + BCE (:func:`mecca.methods.supervised.train.seg_loss`);
* the teacher (weights = exponential moving average of the student's) sees the unlabeled
  half with Gaussian input noise (std ``noise``, clipped at 2 std) once for its target,
  and ``passes`` more times for the uncertainty: the binary entropy of the mean
  foreground probability over those passes;
* consistency = mean squared difference of the student's and the teacher's foreground
  probabilities over the unlabeled voxels whose uncertainty is below
  ``(0.75 + 0.25 r) ln 2``, weighted by ``consistency * r``, with
  ``r = exp(-5 (1 - t)^2)`` the sigmoid ramp-up over the run (``t`` = share of the steps
  done; as in the authors' code, both ramps span the whole run).
* after the Adam step the teacher moves toward the student with decay
  ``min(1 - 1 / (step + 1), ema_decay)``.

Where we differ from the paper, and why: the networks are this project's P-Net or U-Net
(the backbone of the other rows of the table, not the paper's V-Net), which have no
dropout, so the teacher's passes differ by their input noise only; the teacher runs in
eval mode with batch-norm running statistics that are averaged like its weights (the
authors' teacher normalised each batch of two crops by its own statistics); the noise is
drawn from the run's numpy generator, so a resumed run continues exactly. With one
foreground logit, the authors' two-class softmax MSE (summed over both channels, divided
by twice the mask size) equals the mean squared difference of foreground probabilities
used here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = [
    "ema_update",
    "perturb",
    "sigmoid_rampup",
    "teacher_targets",
    "uncertain_mse",
    "uncertainty_threshold",
]

LN2 = math.log(2.0)


def sigmoid_rampup(progress: float) -> float:
    """``exp(-5 (1 - t)^2)`` for ``t = progress`` clipped to [0, 1]: 0.0067 at the start,
    1 at the end."""
    t = min(max(float(progress), 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def uncertainty_threshold(progress: float) -> float:
    """Entropy below which a voxel counts in the consistency loss: 0.75 ln 2 rising to ln 2."""
    return (0.75 + 0.25 * sigmoid_rampup(progress)) * LN2


def perturb(images: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``images`` plus Gaussian noise of std ``noise`` clipped to +-2 std (float32)."""
    eps = np.clip(rng.normal(0.0, noise, images.shape), -2 * noise, 2 * noise)
    return (images + eps).astype(np.float32)


def teacher_targets(
    teacher: nn.Module,
    images: np.ndarray,
    *,
    passes: int,
    noise: float,
    rng: np.random.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's foreground probability on one noisy copy of ``images`` (B, I, J, K)
    and the binary entropy of its mean probability over ``passes`` further noisy copies;
    both (B, 1, I, J, K), without gradient."""
    with torch.no_grad():
        noisy = np.stack([perturb(images, noise, rng) for _ in range(passes + 1)])
        x = torch.from_numpy(noisy.reshape(-1, 1, *images.shape[1:])).to(device)
        prob = torch.sigmoid(teacher(x)).reshape(passes + 1, len(images), 1, *images.shape[1:])
        mean = prob[1:].mean(0)
        tiny = 1e-6
        entropy = -(mean * torch.log(mean + tiny) + (1 - mean) * torch.log(1 - mean + tiny))
    return prob[0], entropy


def uncertain_mse(
    student_prob: torch.Tensor, target: torch.Tensor, entropy: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, float]:
    """Mean squared difference over the voxels with ``entropy < threshold`` (0 when there
    are none) and the share of voxels kept."""
    keep = (entropy < threshold).float()
    kept = keep.sum()
    loss = (keep * (student_prob - target) ** 2).sum() / (kept + 1e-16)
    return loss, float(kept.item()) / keep.numel()


def ema_update(teacher: nn.Module, student: nn.Module, decay: float, step: int) -> None:
    """Move the teacher's weights and batch-norm running statistics toward the student's:
    ``w_t <- a w_t + (1 - a) w_s`` with ``a = min(1 - 1 / (step + 1), decay)`` (so the
    teacher copies the student at step 0); integer buffers are copied."""
    a = min(1.0 - 1.0 / (step + 1), decay)
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.mul_(a).add_(s, alpha=1.0 - a)
        for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
            if tb.dtype.is_floating_point:
                tb.mul_(a).add_(sb, alpha=1.0 - a)
            else:
                tb.copy_(sb)
