"""The partial-segmentation cVAE as an interactive method: propose, accept, correct."""

import numpy as np
import pytest

from conftest import sphere
from mecca.data.roi import Box, make_crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.partial import PartialConfig, PartialProposer, build_network
from mecca.methods.partial_method import PartialMethod, partial_factory

GRID = (16, 16, 8)


@pytest.fixture(scope="module")
def method() -> PartialMethod:
    cfg = PartialConfig(dims=3, grid=GRID, enc_widths=(4, 4), dec_width=4, latent_size=4)
    return PartialMethod(PartialProposer(build_network(cfg)), GRID, k=3, click_radius=1)


def _crop():
    gt = sphere(GRID, (8, 8, 4), 4)
    image = (gt * 2.0 + np.random.default_rng(0).normal(0, 0.3, GRID)).astype(np.float32)
    return make_crop(image, Box((0, 0, 0), GRID), grid=GRID), gt


def test_start_propose_accept_and_correct(method):
    crop, _ = _crop()
    rng = np.random.default_rng(0)
    state = method.start(crop)
    assert not state.extra["decided"].any() and float(state.prob.sum()) == 0.0
    proposals = method.propose(state, rng)
    assert len(proposals) == 3
    accepted, result = method.accept(state, proposals[0])
    np.testing.assert_array_equal(result.prob > 0.5, proposals[0].seg)
    assert not state.extra["decided"].any()  # the old state is untouched (undo)
    fg = Click(InteractionKind.FOREGROUND, (8, 8, 4))
    bg = Click(InteractionKind.BACKGROUND, (1, 1, 1))
    corrected, out = method.step(accepted, [fg, bg], rng=rng)
    assert out.prob[8, 8, 4] == 1.0 and out.prob[8, 9, 4] == 1.0  # a ball of radius 1
    assert out.prob[1, 1, 1] == 0.0 and corrected.extra["decided"][1, 1, 1]
    assert corrected.clicks == (fg, bg)
    # later proposals keep everything decided so far (the cVAE's guarantee)
    for p in method.propose(corrected, rng):
        assert p.mask[corrected.extra["decided"]].all()
        np.testing.assert_array_equal(
            p.seg[corrected.extra["decided"]], corrected.extra["seg"][corrected.extra["decided"]]
        )


def test_the_factory_needs_a_trained_model():
    with pytest.raises(ConfigError, match="needs a trained model"):
        partial_factory()


def test_a_session_proposes_accepts_undoes_and_corrects(method):
    from mecca.io import Volume
    from mecca.session import Session

    crop, gt = _crop()
    session = Session(Volume(crop.image, np.eye(4)), Box((0, 0, 0), GRID), method=method, rng=0)
    previews = session.propose()
    assert len(previews) == 3 and previews[0].mask.shape == GRID
    chosen = session.accept(1)
    np.testing.assert_array_equal(chosen.mask, previews[1].mask)
    assert session.n_steps == 1 and session.history == ((),)
    with pytest.raises(Exception, match="no proposal"):
        session.accept(0)  # proposals are used up by an accept
    session.propose()
    session.add_click("foreground", (8, 8, 4))
    assert session.step().mask[8, 8, 4] == 1
    assert session.proposals == ()  # made before the correction: gone with it
    session.undo()
    session.undo()
    assert session.result is None
    session.propose()
    session.reset()
    assert session.proposals == ()
    with pytest.raises(Exception, match="no proposal"):
        session.accept(0)
