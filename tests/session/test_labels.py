"""Several labels in one volume: one session each, merged into one label map."""

import numpy as np
import pytest

from conftest import sphere
from mecca.data.roi import Box
from mecca.errors import ConfigError, InputError, OverwriteError
from mecca.interaction.clicks import InteractionKind
from mecca.io import Volume, load
from mecca.session.labels import LabelSession, merge_labels
from mecca.session.session import MAX_EVIDENCE_POINTS, SessionResult

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


def _result(prob: np.ndarray) -> SessionResult:
    box = Box((0, 0, 0), prob.shape)
    return SessionResult(prob_box=prob.astype(np.float32), confidence_box=None, advice_box=None,
                         seconds=0.0, total_seconds=0.0, step=1, box=box, shape=prob.shape)


def test_overlap_rules_rank_lock_over_overwrite_over_keep_then_probability():
    shape = (4, 1, 1)
    high = _result(np.array([0.9, 0.9, 0.0, 0.0]).reshape(shape))  # value 1
    low = _result(np.array([0.0, 0.6, 0.6, 0.0]).reshape(shape))  # value 2, overlaps at 1
    pairs = [(1, high), (2, low)]
    at = lambda m: m.ravel().tolist()  # noqa: E731
    assert at(merge_labels(shape, pairs)) == [1, 1, 2, 0]  # default: the more probable
    assert at(merge_labels(shape, pairs, {2: "lock"})) == [1, 2, 2, 0]
    assert at(merge_labels(shape, pairs, {1: "keep"})) == [1, 2, 2, 0]  # keeps only its own
    assert at(merge_labels(shape, pairs, {1: "keep", 2: "keep"})) == [1, 1, 2, 0]
    assert at(merge_labels(shape, pairs, {1: "lock", 2: "lock"})) == [1, 1, 2, 0]
    with pytest.raises(ConfigError, match="unknown overlap rule 'mine'"):
        merge_labels(shape, pairs, {1: "mine"})


def _touching() -> tuple[LabelSession, np.ndarray, np.ndarray]:
    # two balls of the same brightness that touch: a click in one spills into the other
    shape = (40, 30, 20)
    left, right = sphere(shape, (13, 15, 10), 7), sphere(shape, (26, 15, 10), 7)
    image = ((left | right) * 3.0 + np.random.default_rng(1).normal(0, 0.2, shape))
    volume = Volume(image.astype(np.float32), AFFINE)
    return LabelSession(volume, "random_walker", grid=(24, 24, 16)), left, right


def test_a_locked_label_is_background_evidence_for_the_others_and_undo_is_exact():
    labels, left, right = _touching()
    box = Box((2, 4, 2), (38, 27, 19))
    first = labels.add_label("left", roi=box, overlap="lock")
    first.add_click(FG, (13, 15, 10))
    first.add_click(BG, (26, 15, 10))  # not the other ball
    first.step()
    locked = first.result.mask.astype(bool)
    assert _dice(locked, left) > 0.7

    def second_label(name):
        session = labels.add_label(name, roi=box)
        session.add_click(FG, (27, 15, 10))
        session.add_click(BG, (37, 26, 18))
        return session.step().mask.astype(bool)

    spilled = second_label("right")
    labels.set_overlap("left", "overwrite")
    labels.remove_label("right")
    free = second_label("right_free")  # the same clicks, nothing locked
    assert (free & locked).sum() > 0  # without the lock the second label spills over
    labels.set_overlap("left", "lock")
    assert labels.overlap("left") == "lock" and labels.locked_except("left") is None
    assert not (spilled & locked).any()  # the lock: none of the locked voxels
    merged = labels.label_map()
    np.testing.assert_array_equal(merged == 1, locked)  # lock wins every overlap
    # undo then redo gives the same mask, bit for bit
    session = labels["right_free"]
    session.add_click(BG, (20, 15, 10))
    stepped = session.step().mask.copy()
    session.undo()
    np.testing.assert_array_equal(session.redo().mask, stepped)


def test_background_evidence_reaches_a_method_that_takes_background_clicks():
    labels, left, _ = _touching()
    session = labels.add_label("x", roi=Box((2, 4, 2), (38, 27, 19)))
    session.set_background(left)
    grid_clicks = session._grid_clicks  # the clicks a step gives the method
    session.add_click(FG, (27, 15, 10))
    session.step()
    given = grid_clicks(session.predictor.crop, [])
    assert 0 < len(given) <= MAX_EVIDENCE_POINTS and {c.kind for c in given} == {BG}
    assert not (session.result.mask.astype(bool) & left).any()
    with pytest.raises(InputError, match="not on the image grid"):
        session.set_background(np.zeros((3, 3, 3), bool))
    with pytest.raises(ConfigError, match="unknown overlap rule"):
        labels.add_label("y", overlap="sometimes")
    assert "y" not in labels


def test_the_label_map_exports_as_a_dicom_seg_of_one_segment_per_label(tmp_path):
    pytest.importorskip("highdicom")
    from mecca.dicom_seg import read_dicom_seg
    from test_cli_dicom import block_series

    folder = block_series(tmp_path / "series")
    volume = load(folder)
    labels = LabelSession(volume, "growcut")
    full = Box((0, 0, 0), volume.shape)
    block = labels.add_label("block", roi=full)
    block.add_clicks([(FG, (3, 3, 2)), (BG, (0, 0, 0))])
    block.step()
    corner = labels.add_label("corner", 4, roi=full)
    corner.add_clicks([(FG, (0, 0, 0)), (BG, (3, 3, 2))])
    corner.step()
    written = labels.export(tmp_path / "labels.dcm")
    back, names = read_dicom_seg(written, folder)  # segments 1..N in increasing value
    segments = np.array([0, 1, 0, 0, 2])[labels.label_map()]
    np.testing.assert_array_equal(back, segments)
    assert names == {1: "block", 2: "corner"} and set(np.unique(back)) == {0, 1, 2}
    nifti = LabelSession(Volume(volume.array, AFFINE), "growcut")  # not from a series
    other = nifti.add_label("x", roi=full)
    other.add_clicks([(FG, (3, 3, 2))])
    other.step()
    with pytest.raises(InputError):
        nifti.export(tmp_path / "x.dcm")
    assert not (tmp_path / "x.dcm").exists()
