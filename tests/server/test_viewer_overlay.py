"""The page's overlay labels: probability bins, mask outline, advice outlines."""

import numpy as np

from conftest import sphere
from mecca.server.viewer_overlay import (
    ADVICE_OUTLINE,
    LEGEND,
    MASK_OUTLINE,
    OTHER_OUTLINE,
    PROB_BINS,
    other_label_outline,
    overlay_labels,
    surface,
)


def test_surface_is_the_inner_boundary_and_ignores_the_array_faces():
    ball = sphere((15, 15, 15), (7, 7, 7), 5)
    s = surface(ball)
    assert s[7, 7, 2] and not s[7, 7, 7] and not s[0, 0, 0]
    full = np.ones((4, 4, 4), bool)  # touches every face: no surface at all
    assert not surface(full).any()


def test_labels_bin_the_probability_and_outline_mask_and_advice():
    p = np.zeros((15, 15, 15), np.float32)
    ball = sphere(p.shape, (7, 7, 7), 5)
    p[ball] = 0.95
    p[0, 0, 0] = 0.3
    advice = np.zeros(p.shape, np.int32)
    advice[1:4, 1:4, 1:4] = 1
    labels = overlay_labels(p, advice)
    assert labels.dtype == np.uint8 and labels.shape == p.shape
    assert labels[7, 7, 7] == PROB_BINS  # inside the mask, top bin
    assert labels[7, 7, 2] == MASK_OUTLINE
    assert labels[1, 1, 1] == ADVICE_OUTLINE and labels[2, 2, 2] == 0
    assert labels[0, 0, 0] == 1 and labels[14, 14, 14] == 0  # p 0.3: lowest bin; p 0: none
    mask_only = overlay_labels(p, advice, prob=False, advice=False)
    assert mask_only[0, 0, 0] == 0 and mask_only[1, 1, 1] == 0
    assert set(np.unique(mask_only)) == {0, PROB_BINS, MASK_OUTLINE}
    assert [row["label"] for row in LEGEND] == list(range(OTHER_OUTLINE + 1))


def test_another_label_shows_as_its_mask_outline_only():
    p = np.zeros((15, 15, 15), np.float32)
    p[sphere(p.shape, (7, 7, 7), 5)] = 0.8
    p[0, 0, 0] = 0.4  # below 0.5: not in the mask, not drawn
    labels = other_label_outline(p)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, OTHER_OUTLINE}
    assert labels[7, 7, 2] == OTHER_OUTLINE and labels[7, 7, 7] == 0 and labels[0, 0, 0] == 0
