"""Layer data <-> voxel indices, without napari: a point's data row is its voxel (i, j, k)."""

import subprocess
import sys

import numpy as np
import pytest

from mecca.errors import InputError
from mecca.napari_plugin import geometry


def test_a_points_row_is_the_voxel_index_rounded_to_the_nearest_centre():
    assert geometry.voxel_of([24.0, 22.0, 12.0]) == (24, 22, 12)
    # napari puts voxel centres at whole numbers: voxel i spans [i - 0.5, i + 0.5)
    assert geometry.voxel_of([23.5, 22.49, 11.51]) == (24, 22, 12)
    assert geometry.voxel_of([-0.4, 0.2, 0.0]) == (0, 0, 0)


def test_points_become_clicks_in_row_order_and_only_new_ones_are_sent():
    data = np.array([[24.2, 21.8, 12.0], [24.0, 40.0, 12.0], [24.0, 22.0, 12.0]])
    clicks = geometry.points_to_clicks(data, ["foreground", "background", "foreground"])
    assert clicks == [
        ("foreground", (24, 22, 12)),
        ("background", (24, 40, 12)),
        ("foreground", (24, 22, 12)),
    ]
    assert geometry.new_clicks(clicks, [("foreground", (24, 22, 12))]) == [
        ("background", (24, 40, 12))
    ]
    with pytest.raises(InputError):
        geometry.points_to_clicks(data, ["foreground"])


def test_a_rectangle_on_one_slice_becomes_a_box_as_deep_as_it_is_wide():
    # drawn on slice i = 24 around voxels j 10..29, k 4..19 (edges half a voxel out)
    rect = np.array([[24, 9.5, 3.5], [24, 9.5, 19.5], [24, 29.5, 19.5], [24, 29.5, 3.5]])
    start, stop = geometry.rectangle_to_box(rect, (48, 44, 24))
    assert (start[1:], stop[1:]) == ((10, 4), (30, 20))
    assert stop[0] - start[0] == 18 and start[0] <= 24 < stop[0]  # mean of 20 and 16
    # clipped to the image
    start, stop = geometry.rectangle_to_box(rect * [1, 2, 2], (48, 44, 24))
    assert stop[1] == 44 and stop[2] == 24
    with pytest.raises(InputError, match="rectangle on one slice"):
        geometry.rectangle_to_box(np.array([[0, 0, 0], [5, 5, 5]]), (48, 44, 24))


def test_the_box_is_shown_as_a_frame_on_each_slice_along_the_view_axis():
    box = ((20, 10, 4), (28, 30, 20))
    rects = geometry.box_rectangles(box, axis=0)
    assert len(rects) == 8 and {r[0, 0] for r in rects} == set(range(20, 28))
    assert rects[0][:, 1].min() == 9.5 and rects[0][:, 1].max() == 29.5
    assert rects[0][:, 2].min() == 3.5 and rects[0][:, 2].max() == 19.5
    # a rectangle read back gives the box's extent on its two axes
    start, stop = geometry.rectangle_to_box(rects[3], (48, 44, 24))
    assert (start[1:], stop[1:]) == ((10, 4), (30, 20))


def test_paint_writes_the_value_over_the_base_and_keeps_other_labels():
    base = np.zeros((4, 4, 4), np.uint16)
    base[0, 0, 0] = 7
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    out = geometry.paint(base, mask, 3)
    assert out[0, 0, 0] == 7 and (out[1:3, 1:3, 1:3] == 3).all() and (out > 0).sum() == 9
    assert (geometry.paint(base, None, 3) == base).all() and base.sum() == 7


def test_the_core_and_the_remote_backend_import_no_napari_and_no_torch():
    code = (
        "import sys, mecca, mecca.client, mecca.napari_plugin.backend; "
        "print('napari' in sys.modules, 'qtpy' in sys.modules, 'torch' in sys.modules); "
        "import mecca.session, mecca.cli; print('napari' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "False", "False"]


def test_the_reader_opens_an_image_as_its_ijk_array_with_the_voxel_size(tmp_path):
    import nibabel as nib

    from mecca.napari_plugin.reader import get_reader

    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([0.8, 1.2, 2.5, 1.0])
    nib.save(nib.Nifti1Image(array, affine), tmp_path / "case.nii.gz")
    reader = get_reader(str(tmp_path / "case.nii.gz"))
    assert reader is not None
    [(data, meta, kind)] = reader(str(tmp_path / "case.nii.gz"))
    assert kind == "image" and meta["name"] == "case"
    assert np.array_equal(data, array) and np.allclose(meta["scale"], (0.8, 1.2, 2.5))
    assert get_reader(str(tmp_path / "notes.txt")) is None
    assert get_reader([str(tmp_path / "case.nii.gz")] * 2) is None
