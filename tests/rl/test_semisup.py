"""Simulated labels, confidence masks, the delta schedule and Algorithm 1's order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mecca.errors import ConfigError, InputError
from mecca.rl.semisup import (
    DeltaSchedule,
    HeldLabels,
    alternate,
    confidence_mask,
    labeled_subset,
    simulated_labels,
)


def test_simulated_labels_by_hand():
    a = torch.tensor([0.2, 0.2, -0.4, -0.4, 0.1, 0.0])
    c = torch.tensor([0.9, 0.1, 0.9, 0.1, 0.5, 0.99])
    labels, mask_fn = simulated_labels(a, c)
    # trusted up -> 1; distrusted up -> 0; trusted down -> 0; distrusted down -> 1;
    # c = 0.5 is not trusted (strict >) -> flipped; zero action -> 0 and masked out
    assert labels.tolist() == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    assert labels.dtype == torch.float32
    assert mask_fn(0.85).tolist() == [True, True, True, True, False, False]
    assert mask_fn(0.95).tolist() == [False] * 6
    with pytest.raises(InputError, match="shape"):
        simulated_labels(a, c[:3])


def test_held_labels_keep_the_first_confident_guess_for_the_episode():
    held = HeldLabels()
    # step 1: voxels 0, 1 confident (up, down); voxel 2 unsure; voxel 3 unsure
    labels, mask = held.update(simulated_labels(torch.tensor([0.2, -0.2, 0.1, 0.1]),
                                                torch.tensor([0.95, 0.95, 0.6, 0.6])), 0.85)
    assert labels.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert mask.tolist() == [True, True, False, False]
    # step 2: voxel 0 reversed confidently (keeps 1), voxel 2 now confident down (label 0),
    # voxel 3 still unsure
    labels, mask = held.update(simulated_labels(torch.tensor([-0.4, -0.2, -0.1, 0.1]),
                                                torch.tensor([0.95, 0.95, 0.9, 0.6])), 0.85)
    assert labels.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert mask.tolist() == [True, True, True, False]


def test_simulated_labels_volume_shape():
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([-0.4, -0.2, -0.1, 0.1, 0.2, 0.4])[torch.randint(0, 6, (2, 4, 4, 3),
                                                                        generator=g)]
    c = torch.rand(2, 4, 4, 3, generator=g)
    labels, mask_fn = simulated_labels(a, c)
    assert labels.shape == a.shape and mask_fn(0.9).shape == a.shape
    agree = (labels == 1) == (a > 0)  # label follows the action exactly where trusted
    assert torch.equal(agree, c > 0.5)


def test_confidence_mask():
    c = torch.tensor([0.0, 0.1, 0.14, 0.5, 0.86, 0.9, 1.0])
    assert confidence_mask(c, 0.85).tolist() == [True, True, True, False, True, True, True]
    assert confidence_mask(c, 0.9).tolist() == [True, False, False, False, False, False, True]


def test_delta_schedule():
    s = DeltaSchedule()
    assert s.value(0) == pytest.approx(0.85)
    assert s.value(100) == pytest.approx(0.875)
    assert s.value(560) == pytest.approx(0.99)
    assert s.value(10_000) == 0.99
    with pytest.raises(ConfigError):
        DeltaSchedule(start=0.9, end=0.8)
    with pytest.raises(InputError):
        s.value(-1)


@pytest.mark.parametrize(
    ("fraction", "n_labeled"), [(0.125, 2), (0.25, 4), (1 / 3, 5), (0.5, 8), (1.0, 16)]
)
def test_labeled_subset_fractions(fraction, n_labeled):
    cases = [f"case{i:02d}" for i in range(16)]
    labeled, unlabeled = labeled_subset(cases, fraction, 3)
    assert len(labeled) == n_labeled and len(unlabeled) == 16 - n_labeled
    assert sorted(labeled + unlabeled) == cases
    assert labeled == sorted(labeled)  # input order kept
    assert labeled_subset(cases, fraction, np.random.default_rng(3)) == (labeled, unlabeled)


def test_labeled_subset_seed_and_minimum():
    cases = list(range(20))
    assert labeled_subset(cases, 0.25, 1) != labeled_subset(cases, 0.25, 2)
    labeled, unlabeled = labeled_subset([1, 2, 3], 0.125, 0)
    assert len(labeled) == 1 and len(unlabeled) == 2
    with pytest.raises(ConfigError, match="0.125"):
        labeled_subset(cases, 12.5, 0)
    with pytest.raises(InputError):
        labeled_subset([], 0.5, 0)


def test_alternate_orders():
    assert alternate(["a", "b"], ["x", "y"]) == [
        ("a", True), ("x", False), ("b", True), ("y", False)
    ]
    # fewer labeled: labeled cycled, every unlabeled seen once
    assert alternate(["a"], ["x", "y", "z"]) == [
        ("a", True), ("x", False), ("a", True), ("y", False), ("a", True), ("z", False)
    ]
    # fewer unlabeled: unlabeled cycled
    assert alternate(["a", "b", "c"], ["x"]) == [
        ("a", True), ("x", False), ("b", True), ("x", False), ("c", True), ("x", False)
    ]
    assert alternate(["a", "b"], []) == [("a", True), ("b", True)]
    with pytest.raises(InputError, match="labeled"):
        alternate([], ["x"])
