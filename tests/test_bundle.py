"""The model store (mecca.bundle): shipped bundles load through the registry and step,
their model cards name their weights, unknown names list the shipped ones."""

import json

import numpy as np
import pytest

from mecca import methods
from mecca.bundle import resolve_bundle, shipped_bundles
from mecca.errors import ConfigError


def test_unknown_bundle_names_list_the_shipped_ones(tmp_path):
    with pytest.raises(ConfigError, match="no model bundle"):
        resolve_bundle(tmp_path / "nothing")


@pytest.mark.parametrize("name", shipped_bundles())
def test_every_shipped_bundle_loads_and_steps(name):
    from mecca.data.roi import Box, make_crop

    path = resolve_bundle(name)
    metadata = json.loads((path / "configs" / "metadata.json").read_text())
    assert metadata["sha256"] and (path / "docs" / "README.md").exists()
    assert (path / "models" / "model.pt").stat().st_size < 5_000_000
    method = methods.get(metadata["method"], model=name)  # the family's own loader
    image = np.random.default_rng(0).normal(size=(30, 30, 20))
    crop = make_crop(image, Box((0, 0, 0), image.shape), grid=method.grid)
    state = method.start(crop)
    _, result = method.step(state, [], rng=np.random.default_rng(0))
    assert result.prob.shape == method.grid


@pytest.mark.parametrize("name", shipped_bundles())
def test_every_shipped_model_card_names_its_weights(name):
    folder = resolve_bundle(name)
    sha = json.loads((folder / "configs" / "metadata.json").read_text())["sha256"]
    assert sha in (folder / "docs" / "README.md").read_text()
