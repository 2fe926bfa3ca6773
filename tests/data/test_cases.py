import numpy as np

from mecca.data.cases import load_cases, sample_crops
from mecca.data.phantoms import write_phantom_dataset


def test_crops_from_a_phantom_dataset_are_seeded(tmp_path):
    root = write_phantom_dataset(tmp_path / "ph", count=5, seed=1, shape=(32, 32, 20))
    cases = load_cases(root, "train", None)
    assert len(cases) == 3 and all(c.mask.any() for c in cases)
    a = sample_crops(cases, 2, np.random.default_rng(0), grid=(16, 16, 8))
    b = sample_crops(cases, 2, np.random.default_rng(0), grid=(16, 16, 8))
    assert a.images.shape == (2, 16, 16, 8) and a.labels.dtype == bool
    np.testing.assert_array_equal(a.images, b.images)
    assert a.case_ids == b.case_ids and a.labels.any()
