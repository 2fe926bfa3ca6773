"""The partial-segmentation cVAE as an interactive method: propose, accept, correct."""

import numpy as np
import pytest

from conftest import sphere
from mecca.data.roi import Box, make_crop
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.partial.method import PartialMethod, partial_factory
from mecca.methods.partial.model import PartialConfig, PartialProposer, build_network

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


def test_the_factory_needs_a_trained_model(tmp_path, monkeypatch):
    import mecca.bundle

    monkeypatch.setattr(mecca.bundle, "SHIPPED", tmp_path)  # a package with no partial bundle
    with pytest.raises(ConfigError, match="needs a trained model"):
        partial_factory()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from mecca.methods.partial.train import train_partial

    cfg = PartialConfig(
        dims=3, grid=GRID, enc_widths=(4, 4), dec_width=4, latent_size=4, batch_size=2,
        steps=2, log_every=1, checkpoint_every=1,
    )  # fmt: skip
    images, labels = [], []
    for i in range(2):
        gt = sphere(GRID, (8, 8, 4), 3 + i)
        images.append(gt * 2.0 + np.random.default_rng(i).normal(0, 0.3, GRID))
        labels.append(gt)
    return train_partial(cfg, images, labels, tmp_path_factory.mktemp("partial") / "run")


def test_export_model_writes_a_partial_bundle_that_proposes_like_the_run(tiny_run, tmp_path):
    import json

    from click.testing import CliRunner

    from mecca.cli import main

    bundle = tmp_path / "partial_tiny"
    result = CliRunner().invoke(main, ["export-model", str(tiny_run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output  # no best.pt: last.pt is taken
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["method"] == "partial" and meta["checkpoint"] == "last.pt"
    assert meta["training"]["steps"] == 2 and "SHA-256" in (bundle / "docs/README.md").read_text()
    crop, _ = _crop()
    from_run, from_bundle = partial_factory(model=str(tiny_run)), partial_factory(model=str(bundle))
    assert from_bundle.grid == GRID
    a = from_run.propose(from_run.start(crop), np.random.default_rng(3))
    b = from_bundle.propose(from_bundle.start(crop), np.random.default_rng(3))
    from mecca.methods.agents.bundle import load_bundle

    with pytest.raises(ConfigError, match="holds a partial model.*use --method partial"):
        load_bundle(bundle)  # the RL loader says which method to use
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.mask, y.mask)
        np.testing.assert_array_equal(x.seg, y.seg)


def test_a_damaged_partial_bundle_is_refused(tiny_run, tmp_path):
    from mecca.errors import InputError
    from mecca.methods.partial.bundle import export_partial

    bundle = export_partial(tiny_run, tmp_path / "b")
    weights = bundle / "models" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="SHA-256"):
        partial_factory(model=str(bundle))
    with pytest.raises(InputError, match="no partial-segmentation model"):
        partial_factory(model=str(tmp_path / "nowhere"))


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
