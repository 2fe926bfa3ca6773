"""Several labels in one volume: one session each, merged into one label map."""

import numpy as np
import pytest

from conftest import sphere
from mecca.data.roi import Box
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import InteractionKind
from mecca.io import Volume, load
from mecca.session.labels import LabelSession

FG, BG = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND
SHAPE = (48, 40, 20)
LEFT, RIGHT = (14, 20, 10), (34, 20, 10)
AFFINE = np.array([[-0.8, 0, 0, 30.0], [0, -1.2, 0, -12.0], [0, 0, 2.5, 7.0], [0, 0, 0, 1]])


def _two_balls() -> tuple[Volume, np.ndarray, np.ndarray]:
    left, right = sphere(SHAPE, LEFT, 6), sphere(SHAPE, RIGHT, 6)
    noise = np.random.default_rng(0).normal(0, 0.2, SHAPE)
    image = (left * 2.0 + right * 4.0 + noise).astype(np.float32)
    return Volume(image, AFFINE), left, right


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _labels() -> tuple[LabelSession, np.ndarray, np.ndarray]:
    volume, left, right = _two_balls()
    return LabelSession(volume, "random_walker", grid=(24, 24, 16)), left, right


def _segment(session, centre, roi):
    session.set_roi(roi)
    session.add_click(FG, centre)
    session.add_click(BG, (roi.start[0] + 1, roi.start[1] + 1, centre[2]))
    return session.step()


def test_two_labels_segment_on_their_own_and_merge_into_one_map(tmp_path):
    labels, left, right = _labels()
    _segment(labels.add_label("left"), LEFT, Box((4, 10, 2), (25, 31, 19)))
    assert labels.labels == {"left": 1}
    first = labels.label_map()
    assert set(np.unique(first)) == {0, 1} and _dice(first == 1, left) > 0.85
    # a structure the first prediction missed: a new label, clicked on its own
    _segment(labels.add_label("right", 5), RIGHT, Box((24, 10, 2), (45, 31, 19)))
    merged = labels.label_map()
    assert merged.dtype == np.uint16 and set(np.unique(merged)) == {0, 1, 5}
    assert _dice(merged == 1, left) > 0.85 and _dice(merged == 5, right) > 0.85
    np.testing.assert_array_equal(merged == 1, first == 1)  # the first label is untouched
    path = labels.export(tmp_path / "labels.nii.gz")
    back = load(path)
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(back.array, merged)
    with pytest.raises(OverwriteError):
        labels.export(path)
    labels["right"].undo()  # undo in one label only
    np.testing.assert_array_equal(labels.label_map(), first)


def test_a_voxel_claimed_by_two_labels_goes_to_the_more_probable_one():
    labels, left, _ = _labels()
    box = Box((4, 10, 2), (25, 31, 19))
    a = _segment(labels.add_label("a"), LEFT, box)
    b = _segment(labels.add_label("b"), LEFT, box)  # the same structure twice
    merged = labels.label_map()
    both = a.mask.astype(bool) & b.mask.astype(bool)
    assert both.any()
    expected = np.where(b.prob > a.prob, 2, 1)[both]  # ties go to the label added first
    np.testing.assert_array_equal(merged[both], expected)
    labels.remove_label("a")
    assert labels.labels == {"b": 2} and "a" not in labels and len(labels) == 1
    np.testing.assert_array_equal(labels.label_map() == 2, b.mask.astype(bool))


def test_bad_labels_get_clear_errors_and_change_nothing(tmp_path):
    labels, _, _ = _labels()
    with pytest.raises(InputError, match="nothing to export"):
        labels.export(tmp_path / "x.nii.gz")
    labels.add_label("left")
    with pytest.raises(InputError, match="nothing to export"):
        labels.export(tmp_path / "x.nii.gz")  # a label with no step yet
    for name, value, match in [
        ("left", None, "exists"),
        ("", None, "non-empty name"),
        ("other", 0, r"1\.\.65535"),
        ("other", 70000, r"1\.\.65535"),
        ("other", 1, "taken by 'left'"),
        ("other", 2.5, "must be an int"),
        ("other", True, "must be an int"),
    ]:
        with pytest.raises(ConfigError, match=match):
            labels.add_label(name, value)
    with pytest.raises(InputError, match="no label 'nope'"):
        labels["nope"]
    with pytest.raises(InputError, match="no label 'nope'"):
        labels.remove_label("nope")
    with pytest.raises(ConfigError, match="unknown method"):
        labels.add_label("other", method="no_such_method")
    assert labels.labels == {"left": 1}
    assert not (tmp_path / "x.nii.gz").exists()
