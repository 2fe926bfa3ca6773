"""The generalist in the registry: spec, shipped bundle, export-model from a run folder."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mecca import methods
from mecca.checkpoint import checkpoint_method, load_checkpoint
from mecca.cli import main
from mecca.methods.generalist import GeneralistMethod
from mecca.methods.generalist.train import GeneralistConfig, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_spec_is_learned_served_first_as_the_default_and_exports():
    s = methods.spec("generalist")
    assert s.learned and s.served and s.export is not None and s.config is GeneralistConfig
    assert methods.served()[0] == methods.registry.DEFAULT_METHOD == "generalist"
    assert methods.default_model("generalist") == "generalist"
    assert methods.default_model("generalist", "hippocampus") == "generalist"
    assert methods.model_for("generalist") == "generalist"
    assert methods.model_for("generalist", "my_bundle") == "my_bundle"
    assert methods.model_for("random_walker") is None


def test_the_shipped_bundle_loads_through_the_registry():
    m = methods.build("generalist")
    assert isinstance(m, GeneralistMethod) and m.model == "generalist"
    assert m.grid == (48, 48, 32)


def test_export_model_exports_a_run_folder(phantoms, tmp_path):
    cfg = GeneralistConfig(
        datasets=(str(phantoms),),
        held_out=("*:distractor",),
        val_cases=1,
        val_steps=1,
        grid=(16, 16, 8),
        widths=(8, 16),
        blocks=(1, 1),
        fine=4,
        synthetic_volumes=2,
        batch_size=2,
        iterations=2,
        warmup=1,
        checkpoint_every=2,
        val_every=2,
        log_every=2,
        cache_dir=str(tmp_path / "cache"),
    )
    run = train(cfg, tmp_path / "run")
    assert checkpoint_method(load_checkpoint(run / "last.pt")) == "generalist"
    # checkpoints of the first runs name their kind only
    old = dict(torch.load(run / "last.pt", weights_only=True))
    del old["method"]
    assert checkpoint_method(old) == "generalist"
    out = tmp_path / "bundle"
    result = CliRunner().invoke(
        main, ["export-model", str(run), "--out", str(out), "--description", "Still training."]
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["method"] == "generalist" and meta["description"] == "Still training."
    card = (out / "docs" / "README.md").read_text()
    assert "Still training." in card and "mecca export-model RUN --out OUT" in card
    m = methods.build("generalist", str(out))
    assert m.model == "bundle" and m.grid == (16, 16, 8)
    from mecca.data.roi import Box, make_crop
    from mecca.interaction.clicks import Click, InteractionKind

    crop = make_crop(
        np.random.default_rng(0).random((20, 20, 10)), Box((0, 0, 0), (20, 20, 10)), (16, 16, 8)
    )
    _, result_ = m.step(
        m.start(crop), [Click(InteractionKind.FOREGROUND, (8, 8, 4))], rng=np.random.default_rng(0)
    )
    assert result_.prob.shape == (16, 16, 8)
