"""The voxel agents' bundles: export from a run, load back, refuse damage, and the
IteR-MRL variants that load only the bundles trained with their settings."""

import json

import pytest
import torch

from mecca.bundle import shipped_bundles
from mecca.data.phantoms import write_phantom_dataset
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import InteractionKind
from mecca.methods.agents.bundle import export_bundle, load_bundle
from mecca.methods.agents.config import TrainConfig
from mecca.methods.agents.train import train
from mecca.methods.agents.variants import ITERMRL_VARIANTS

TINY = TrainConfig(grid=(16, 16, 8), width=4, episodes=2, batch_size=1, steps=2,
                   checkpoint_every=2, val_every=2, val_cases=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("b")
    data = write_phantom_dataset(root / "ph", count=5, seed=4, shape=(28, 28, 16))
    return train(TINY, data, root / "run", device="cpu", progress=False)


def test_export_writes_the_bundle_layout_and_loads_back_identically(run, tmp_path):
    out = export_bundle(run, tmp_path / "mecca_tiny", description="tiny test model")
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["method"] == "mecca" and meta["training"]["episodes"] == 2
    assert len(meta["training"]["validation_dice_per_step"]) == 2
    assert meta["network_data_format"]["inputs"]["state"]["num_channels"] == 3
    card = (out / "docs" / "README.md").read_text()
    assert "SHA-256" in card and "split `val`, 1 case:" in card  # the count validated
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    bundle = load_bundle(out)
    for key, value in weights["net"].items():
        torch.testing.assert_close(bundle.net.state_dict()[key], value)
    assert bundle.confidence is not None and bundle.grid == (16, 16, 8)
    method = bundle.method()
    assert method.accepts == frozenset({InteractionKind.EDGE})


def test_a_damaged_bundle_is_refused(run, tmp_path):
    out = export_bundle(run, tmp_path / "b", checkpoint="last.pt")
    with (out / "models" / "model.pt").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(InputError, match="SHA-256"):
        load_bundle(out)


def test_export_never_overwrites_without_force(run, tmp_path):
    out = export_bundle(run, tmp_path / "b")
    before = (out / "configs" / "metadata.json").read_text()
    with pytest.raises(OverwriteError, match="--force"):
        export_bundle(run, out, checkpoint="last.pt")
    assert (out / "configs" / "metadata.json").read_text() == before
    (out / "docs" / "README.md").write_text("an old card naming the old weights")
    export_bundle(run, out, checkpoint="last.pt", force=True)
    sha = json.loads((out / "configs" / "metadata.json").read_text())["sha256"]
    assert sha in (out / "docs" / "README.md").read_text()  # the card follows the weights


def test_itermrl_variants_load_only_itermrl_bundles_trained_with_their_settings(
    run, tmp_path, monkeypatch
):
    from dataclasses import replace

    from mecca import bundle as bundle_module
    from mecca import methods

    shipped = [n for n in ITERMRL_VARIANTS if f"{n}_hippocampus" in shipped_bundles()]
    # the Fig. 9 ablation models and the same-hints comparison model
    assert set(shipped) == {"focal_itermrl", "err_itermrl", "edge_itermrl"}
    for name in shipped:
        assert methods.get(name).name == name
    monkeypatch.setattr(bundle_module, "shipped_bundles", lambda: ["mecca_phantom"])
    with pytest.raises(ConfigError, match="no focal_itermrl model is shipped"):
        methods.get("focal_itermrl")
    monkeypatch.undo()
    mecca_bundle = export_bundle(run, tmp_path / "mecca_tiny")
    with pytest.raises(ConfigError, match="trained with reward 'focal'"):
        methods.get("focal_itermrl", model=str(mecca_bundle))
    data = mecca_bundle.parent / "ph"
    write_phantom_dataset(data, count=5, seed=4, shape=(28, 28, 16))
    focal = replace(TINY, method="itermrl", reward="focal", episodes=1, val_every=1)
    focal_run = train(focal, data, tmp_path / "focal", device="cpu", progress=False)
    bundle = export_bundle(focal_run, tmp_path / "focal_itermrl_tiny", checkpoint="last.pt")
    method = methods.get("focal_itermrl", model=str(bundle))
    assert method.name == "focal_itermrl" and method.confidence is None
    with pytest.raises(ConfigError, match="reward 'err'"):
        methods.get("err_itermrl", model=str(bundle))
    with pytest.raises(ConfigError, match="holds itermrl with reward 'focal', user 'error_centre'"):
        methods.get("edge_itermrl", model=str(bundle))
    edge = replace(focal, reward="relative", user="edge", hints="gaussian")
    edge_run = train(edge, data, tmp_path / "edge", device="cpu", progress=False)
    bundle = export_bundle(edge_run, tmp_path / "edge_itermrl_tiny", checkpoint="last.pt")
    method = methods.get("edge_itermrl", model=str(bundle))
    assert method.name == "edge_itermrl" and method.accepts == frozenset({InteractionKind.EDGE})


