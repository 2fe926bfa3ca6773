"""The challenge's container contract: mecca export-npz and mecca predict-npz."""

import numpy as np
import pytest
from click.testing import CliRunner

from mecca.bench import challenge_npz, cvpr25
from mecca.cli import main
from mecca.data.datasets import open_dataset
from mecca.data.phantoms import write_phantom_dataset
from mecca.interaction.clicks import InteractionKind
from mecca.interface import MethodState, StepResult


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("npz") / "ph"
    return write_phantom_dataset(root, count=2, seed=5, shape=(30, 26, 14))


def _load(path):
    with np.load(path, allow_pickle=True) as f:
        return dict(f)


def test_export_writes_challenge_cases_in_z_y_x(phantoms, tmp_path):
    out = tmp_path / "ch"
    result = CliRunner().invoke(main, ["export-npz", str(phantoms), str(out), "--split", "all"])
    assert result.exit_code == 0, result.output
    ds = open_dataset(phantoms)
    case = ds.cases()[0]
    img = _load(out / "imgs" / f"{case.case_id}.npz")
    gts = _load(out / "gts" / f"{case.case_id}.npz")["gts"]
    volume = ds.load_image(case)
    assert img["imgs"].dtype == np.uint8 and img["imgs"].shape == (14, 26, 30)
    assert img["imgs"].max() == 255 and "gts" not in img
    assert list(img["spacing"]) == list(reversed(volume.spacing))
    labels = [int(v) for v in np.unique(gts) if v]
    assert labels == list(range(1, len(labels) + 1)) and gts.shape == (14, 26, 30)
    boxes = list(img["boxes"])
    assert len(boxes) == len(labels)
    assert boxes[0] == cvpr25.middle_slice_box(gts == 1)
    scaled = challenge_npz.to_uint8(np.array([0.0, 1.0, 2.0, 3.0, 1000.0]))
    assert scaled[0] == 0 and scaled[-1] == 255  # 0 stays 0; the top is clipped to 99.5 %


class Recorder:
    """Fake method on the native grid: fills the crop, records the clicks it gets."""

    name = "recorder"
    accepts = frozenset({InteractionKind.FOREGROUND, InteractionKind.BACKGROUND})

    def __init__(self, grid):
        self.grid, self.seen = grid, []

    def start(self, crop, *, init_prob=None):
        return MethodState(crop, prob=np.ones(crop.grid, np.float32))

    def step(self, state, new, *, rng):
        self.seen.append(list(new))
        prob = state.prob.copy()
        for c in new:
            prob[c.position] = float(c.kind is InteractionKind.FOREGROUND)
        return MethodState(state.crop, prob=prob), StepResult(prob)


def _challenge_case(path, boxes=True):
    """A case as the organisers' script saves it before a click step."""
    imgs = np.zeros((8, 12, 10), np.uint8)
    box = {"z_min": 2, "z_max": 5, "z_mid": 3, "z_mid_x_min": 1, "z_mid_y_min": 4}
    box.update(z_mid_x_max=6, z_mid_y_max=9)
    clicks = [{"fg": [[3, 2, 8]], "bg": [[4, 5, 3]]}]  # [z, y, x]
    extra = {"boxes": [box]} if boxes else {}
    np.savez_compressed(
        path,
        imgs=imgs,
        spacing=np.array([2.0, 1.0, 1.0]),
        clicks=clicks,
        clicks_order=[["bg", "fg"]],
        prev_pred=np.zeros_like(imgs),
        **extra,
    )
    return box


def test_predict_case_crops_the_box_and_clicks_and_gives_the_clicks_in_order(tmp_path):
    box = _challenge_case(tmp_path / "c.npz")
    assert (box["z_min"], box["z_max"]) == (2, 5)  # box: z 2..5, y 4..9, x 1..6 (closed)
    # the fg click (z 3, y 2, x 8) lies outside the box: the ROI grows to x 1..8, y 2..9,
    # z 2..5, then by 25 % (ceil) per side, clipped: x 0..9, y 0..11, z 1..6
    method = Recorder(grid=(10, 12, 6))  # that ROI's shape in (x, y, z): never resampled
    segs = challenge_npz.predict_case(method, challenge_npz._load(tmp_path / "c.npz"))
    assert segs.shape == (8, 12, 10) and segs.dtype == np.uint8
    # one step with both clicks, in clicks_order: bg (z 4, y 5, x 3) first, then fg
    assert len(method.seen) == 1
    kinds = [c.kind for c in method.seen[0]]
    assert kinds == [InteractionKind.BACKGROUND, InteractionKind.FOREGROUND]
    assert [c.position for c in method.seen[0]] == [(3 - 0, 5 - 0, 4 - 1), (8 - 0, 2, 3 - 1)]
    expected = np.zeros_like(segs, bool)
    expected[1:7, 0:12, 0:10] = True
    expected[4, 5, 3] = False
    assert np.array_equal(segs == 1, expected)


class SliceTold(Recorder):
    """A Recorder that can be told its boxes are drawn on one slice."""

    told = False

    def for_slice_boxes(self):
        copy = SliceTold(self.grid)
        copy.told, copy.seen = True, self.seen
        return copy

    def step(self, state, new, *, rng):
        self.seen.append(self.told)
        return super().step(state, new, rng=rng)


def test_predict_case_tells_a_method_the_challenges_box_is_drawn_on_one_slice(tmp_path):
    _challenge_case(tmp_path / "c.npz")
    method = SliceTold(grid=(10, 12, 6))
    challenge_npz.predict_case(method, challenge_npz._load(tmp_path / "c.npz"))
    told = [s for s in method.seen if isinstance(s, bool)]
    assert told == [True] and not method.told


def test_predict_npz_command_writes_segs_under_the_same_name(tmp_path):
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    _challenge_case(inputs / "case1.npz")
    _challenge_case(inputs / "case2.npz", boxes=False)
    args = ["predict-npz", str(inputs), str(outputs), "--method", "region_growing"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("case1.npz", "case2.npz"):
        segs = _load(outputs / name)["segs"]
        assert segs.shape == (8, 12, 10) and segs.dtype == np.uint8
    refused = CliRunner().invoke(
        main, ["predict-npz", str(inputs), str(outputs), "--method", "mecca"]
    )
    assert refused.exit_code != 0 and "edge points" in refused.output
