"""``generalist_mecca``: MECCA starting from the generalist's box result."""

import numpy as np
import pytest

from conftest import sphere
from mecca import methods
from mecca.data.roi import Box, make_crop
from mecca.interaction.clicks import InteractionKind
from mecca.interaction.users import EdgeUser
from mecca.methods.refine import GeneralistMecca, resize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mecca_starts_from_the_generalists_probability():
    m = methods.build("generalist_mecca")
    assert isinstance(m, GeneralistMecca) and m.accepts == frozenset({InteractionKind.EDGE})
    assert m.grid == m.mecca.grid and m.gives_confidence
    assert m.generalist.roi_as_box and methods.model_for("generalist_mecca") == "mecca_phantom"
    rng = np.random.default_rng(0)
    gt = sphere((48, 48, 30), (24, 24, 15), 8)
    image = (gt * 2.0 + rng.normal(0, 0.2, gt.shape)).astype(np.float32)
    crop = make_crop(image, Box((12, 12, 5), (37, 37, 26)), m.grid)
    expected = m.generalist_prob(crop)
    state = m.start(crop)
    np.testing.assert_allclose(state.prob, expected)
    assert 0.0 <= expected.min() and expected.max() <= 1.0 and expected.std() > 0
    given = np.full(m.grid, 0.3, np.float32)
    np.testing.assert_allclose(m.start(crop, init_prob=given).prob, given)
    clicks = EdgeUser()(np.zeros(gt.shape, bool), gt, step=1, rng=rng)
    from mecca.episode import clicks_to_grid

    _, result = m.step(state, clicks_to_grid(crop, clicks), rng=rng)
    assert result.prob.shape == m.grid and result.confidence is not None


def test_resize_keeps_values_and_gives_the_shape():
    a = np.ones((4, 5, 6), np.float32)
    b = resize(a, (8, 3, 7))
    assert b.shape == (8, 3, 7) and np.allclose(b, 1.0)
    assert resize(a, (4, 5, 6)) is not None
