"""The CVPR 2025 protocol as the organisers run it (mecca.bench.cvpr25)."""

import json
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from mecca import metrics
from mecca.bench import cvpr25
from mecca.bench.runner import BenchSettings, run_benchmark
from mecca.data.phantoms import write_phantom_dataset
from mecca.data.roi import resample_box
from mecca.errors import ConfigError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.interface import MethodState, StepResult

FG, BG, BOX, EDGE = (
    InteractionKind.FOREGROUND,
    InteractionKind.BACKGROUND,
    InteractionKind.BOX,
    InteractionKind.EDGE,
)


def test_the_click_is_in_the_largest_26_connected_error_component():
    gt = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(gt)
    gt[2:5, 2:5, 2:5] = True  # a 27-voxel miss
    pred[10:16, 10:16, 10:16] = True  # a 216-voxel false positive
    pos, fg = cvpr25.organisers_click(pred, gt)
    assert pred[pos] and not fg  # background click in the larger error
    # two single voxels touching only at a corner are one 26-connected component
    gt2 = np.zeros((9, 9, 9), bool)
    gt2[1, 1, 1] = gt2[2, 2, 2] = gt2[3, 3, 3] = True
    gt2[7, 7, 5:8] = True  # 3 voxels in a row: as large, but later in raster order
    comp = cvpr25.largest_error_component(np.zeros_like(gt2), gt2)
    assert comp.sum() == 3 and comp[1, 1, 1] and comp[3, 3, 3]
    assert cvpr25.organisers_click(gt, gt) is None  # no error: no click


def test_the_edt_is_taken_in_the_padded_box_so_the_array_edge_is_a_border():
    gt = np.zeros((30, 20, 20), bool)
    gt[0:10, 2:18, 2:18] = True  # touches the array edge at z = 0
    pos, fg = cvpr25.organisers_click(np.zeros_like(gt), gt)
    assert fg
    # the padding puts background beyond the array edge: the deepest voxels are mid-slab
    # (z = 4, 5), not at z = 0..2 as an EDT of the whole array would put them
    assert pos[0] in (4, 5), pos
    edt = cvpr25.padded_box_edt(gt)
    assert edt[0, 9, 9] == 1.0 and edt[~gt].max() == 0.0


def test_ties_are_broken_by_seed_42_over_argwhere_order():
    gt = np.zeros((8, 8, 8), bool)
    gt[2:4, 2:4, 2:4] = True  # 8 voxels, all at distance 1
    pos, _ = cvpr25.organisers_click(np.zeros_like(gt), gt)
    ties = np.argwhere(gt)
    expected = tuple(int(v) for v in ties[np.random.RandomState(42).choice(len(ties))])
    assert pos == expected and pos != tuple(ties[0])
    np.random.seed(0)  # the global generator does not matter: seed 42 at every click
    assert cvpr25.organisers_click(np.zeros_like(gt), gt)[0] == expected


def test_the_box_is_the_middle_slices_box_over_the_closed_z_range():
    m = np.zeros((10, 20, 30), bool)  # (z, y, x)
    m[1, 2:4, 3:5] = True
    m[4, 5:9, 6:12] = True
    m[7, 0:20, 0:30] = True  # z = 2, 3, 5, 6 are empty: distinct z are 1, 4, 7
    box = cvpr25.middle_slice_box(m)
    assert box == {
        "z_min": 1,
        "z_max": 7,
        "z_mid": 4,
        "z_mid_x_min": 6,
        "z_mid_y_min": 5,
        "z_mid_x_max": 11,
        "z_mid_y_max": 8,
    }
    roi = cvpr25.box_to_roi(box)  # on MECCA's (x, y, z) grid, half-open
    assert roi.start == (6, 5, 1) and roi.stop == (12, 9, 8)
    shifted = cvpr25.middle_slice_box(m, shift=5)  # int(5 * 30 / 256) = 0, int(5*20/256) = 0
    assert shifted == box
    big = np.zeros((3, 300, 600), bool)
    big[1, 100:110, 200:210] = True
    b = cvpr25.middle_slice_box(big, shift=5)  # 9 and 11 pixel shifts
    assert (b["z_mid_x_min"], b["z_mid_x_max"]) == (200 - 11, 209 + 11)
    assert (b["z_mid_y_min"], b["z_mid_y_max"]) == (100 - 5, 109 + 5)


@dataclass
class Painter:
    """A fake method on the native grid: the box step fills the whole crop (or the BOX
    clicks' box), each fg/bg click paints a 3x3x3 block."""

    kinds: frozenset = frozenset({FG, BG})
    name: str = "painter"
    grid: tuple = (0, 0, 0)

    @property
    def accepts(self):
        return self.kinds

    def start(self, crop, *, init_prob=None):
        self.seen = []
        fill = BOX not in self.kinds
        return MethodState(crop, prob=np.full(crop.grid, float(fill), np.float32))

    def step(self, state, new, *, rng):
        self.seen.append(list(new))
        prob = state.prob.copy()
        boxes = [c.position for c in new if c.kind is BOX]
        if boxes:
            prob[:] = 0
            (a, b) = boxes
            prob[a[0] : b[0] + 1, a[1] : b[1] + 1, a[2] : b[2] + 1] = 1
        for c in new:
            if c.kind in (FG, BG):
                i, j, k = c.position
                prob[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2, max(k - 1, 0) : k + 2] = (
                    c.kind is FG
                )
        return MethodState(state.crop, state.clicks + tuple(new), prob), StepResult(prob)


def _case():
    gt = np.zeros((24, 20, 16), bool)  # (x, y, z)
    gt[6:16, 5:14, 3:12] = True
    gt[10:13, 8:11, 12:14] = True
    image = gt.astype(np.float32) + 0.1
    return image, gt


def _native(method, image):
    method.grid = image.shape  # never resampled: crop grid == ROI shape
    return method


def test_box_first_then_one_organisers_click_per_step():
    image, gt = _case()
    method = Painter()
    method.grid = (16, 15, 16)  # the ROI's shape: box x 6..15, y 5..13, z 3..13 + 3 per side
    rec, mask = cvpr25.run_case(
        method, image, gt, (1.0, 1.0, 2.0), rng=np.random.default_rng(0), keep_mask=True
    )
    box = rec["cvpr25_box"]
    assert (box["z_min"], box["z_max"]) == (3, 13)
    inner = cvpr25.box_to_roi(box)
    first_roi = cvpr25.box_roi(inner, gt.shape)
    assert (first_roi.start, first_roi.stop) == ((3, 2, 0), (19, 17, 16))  # 25 %, ceil, clipped
    assert all(a <= b for a, b in zip(rec["box"][0], first_roi.start, strict=True))
    assert all(a >= b for a, b in zip(rec["box"][1], first_roi.stop, strict=True))
    bs = rec["box_step"]  # box-only prediction: the whole ROI
    filled = np.zeros_like(gt)
    filled[3:19, 2:17, 0:16] = True
    assert bs["dice"] == pytest.approx(100 * metrics.dice(filled, gt))
    assert len(rec["steps"]) == 5
    recropped = [i for i, step in enumerate(rec["steps"]) if step["recropped"]]
    assert len(method.seen) == 5 - (recropped[-1] if recropped else 0)  # restarts reset it
    # the first click is the organisers' on the box prediction (an over-segmentation)
    (z, y, x), fg = cvpr25.organisers_click(cvpr25.to_zyx(filled), cvpr25.to_zyx(gt))
    assert rec["clicks_given"][0] == {
        "kind": "foreground" if fg else "background",
        "position": [x, y, z],
    }
    s = rec["cvpr25"]
    assert len(s["DSC"]) == len(s["NSD"]) == len(s["seconds"]) == 6
    assert s["DSC"][0] == pytest.approx(bs["dice"] / 100)
    assert s["DSC_AUC"] == pytest.approx(metrics.auc_trapezoid(s["DSC"][1:]))
    assert s["NSD_AUC"] == pytest.approx(metrics.auc_trapezoid(s["NSD"][1:]))
    assert s["DSC_Final"] == pytest.approx(metrics.dice(mask.astype(bool), gt))
    d, n = metrics.dsc_nsd_cvpr25(mask, gt, (1.0, 1.0, 2.0))
    assert (s["DSC_Final"], s["NSD_Final"]) == pytest.approx((d, n))


def test_a_box_taking_method_gets_two_box_clicks_and_a_grown_roi():
    image, gt = _case()
    method = Painter(kinds=frozenset({FG, BG, BOX}))
    method.grid = (16, 15, 16)  # box 10 x 9 x 11 grown by 3, 3, 3 per side, clipped
    rec, _ = cvpr25.run_case(method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert rec["box"] == [[3, 2, 0], [19, 17, 16]]
    first = method.seen[0]
    assert [c.kind for c in first] == [BOX, BOX]
    assert [c.position for c in first] == [(3, 3, 3), (12, 11, 13)]  # box in the ROI
    assert len(method.seen) == 6  # the box step, then 5 click steps


@dataclass
class SliceTold(Painter):
    """A Painter that can be told its boxes are drawn on one slice (``for_slice_boxes``);
    ``log`` (shared by its copies) holds, per step, whether the stepping copy was told."""

    told: bool = False
    log: list = field(default_factory=list)

    def for_slice_boxes(self):
        return replace(self, told=True)

    def step(self, state, new, *, rng):
        self.log.append(self.told)
        return super().step(state, new, rng=rng)


def test_a_method_that_can_be_told_is_told_the_box_is_drawn_on_one_slice():
    image, gt = _case()
    method = SliceTold(kinds=frozenset({FG, BG, BOX}), grid=(16, 15, 16))
    told = cvpr25.drawn_on_one_slice(method)
    assert told.told and not method.told  # a copy
    painter = Painter()
    assert cvpr25.drawn_on_one_slice(painter) is painter  # nothing to tell
    cvpr25.run_case(method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert len(method.log) >= 6 and all(method.log)  # every step ran on the told copy


def test_a_click_outside_the_box_grows_the_roi_and_restarts_with_every_click():
    gt = np.zeros((30, 20, 16), bool)  # (x, y, z): the middle slice (z 7) holds x 6..9
    gt[6:10, 5:9, 0:16] = True
    gt[6:30, 0:20, 10:16] = True  # a thick limb on slices 10-15, mostly outside that box
    image = gt.astype(np.float32)
    method = Painter()
    method.grid = (6, 6, 16)  # the ROI: box x 6..9, y 5..8, z 0..15, grown by 1, 1, 4
    # the default re-crop rule (carry) restarts a method that does not carry its mask
    rec, _ = cvpr25.run_case(method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert rec["cvpr25_box"]["z_mid"] == 8  # z 0..15: body only, the limb starts at 10
    first = rec["clicks_given"][0]
    assert first["kind"] == "foreground" and first["position"][0] >= 10  # in the limb
    assert rec["steps"][0]["recropped"] and rec["steps"][0]["clicks"] == 1
    assert rec["box"][1][0] > 10  # the final ROI holds the clicks
    # Painter forgets its clicks at start: what it saw since the last restart is every
    # click up to that step in one step, then one click per step
    last = max(i for i, s in enumerate(rec["steps"]) if s["recropped"])
    clicks_so_far = [Click.from_dict(c) for c in rec["clicks_given"][: last + 1]]
    assert [c.kind for c in method.seen[0]] == [c.kind for c in clicks_so_far]
    assert all(len(seen) <= 1 for seen in method.seen[1:])
    assert len(method.seen) == len(rec["steps"]) - last


@dataclass
class Oracle(Painter):
    """The truth inside the crop, on the ROI's own grid: what a method that finds the
    object sees of it through its ROI."""

    truth: np.ndarray | None = None

    def grid_for(self, roi_shape, *, boxed=False):
        return tuple(int(n) for n in roi_shape)

    def start(self, crop, *, init_prob=None):
        self.seen = []
        return MethodState(crop, prob=self.truth[crop.box.slices].astype(np.float32))


def test_with_grow_roi_a_mask_that_reaches_the_roi_grows_it_and_the_step_reruns():
    gt = np.zeros((40, 20, 16), bool)  # a body on the middle slice, a limb beyond the box
    gt[6:10, 5:9, 0:16] = True
    gt[6:36, 5:9, 10:16] = True
    image = gt.astype(np.float32)
    rng = np.random.default_rng(0)
    fixed, _ = cvpr25.run_case(Oracle(truth=gt), image, gt, (1.0, 1.0, 1.0), rng=rng)
    grows, _ = cvpr25.run_case(Oracle(truth=gt), image, gt, (1.0, 1.0, 1.0), rng=rng, grow_roi=2)
    assert fixed["box_step"]["grown"] == 0 and fixed["box_step"]["dice"] < 60
    assert grows["box_step"]["grown"] == 2  # the limb reaches the ROI's side twice
    assert grows["box_step"]["dice"] > fixed["box_step"]["dice"] + 15
    assert grows["box"][1][0] > fixed["box"][1][0]  # grown along x, where the limb goes
    assert all(s["grown"] == 0 for s in fixed["steps"])
    assert grows["cvpr25"]["DSC_Final"] >= fixed["cvpr25"]["DSC_Final"]


def test_with_replay_a_recropped_method_gets_the_earlier_clicks_one_step_each():
    gt = np.zeros((30, 20, 16), bool)  # the limb case above: the first click re-crops
    gt[6:10, 5:9, 0:16] = True
    gt[6:30, 0:20, 10:16] = True
    method = Painter()
    method.grid = (6, 6, 16)
    rec, _ = cvpr25.run_case(
        method,
        gt.astype(np.float32),
        gt,
        (1.0, 1.0, 1.0),
        rng=np.random.default_rng(0),
        recrop="replay",
    )
    last = max(i for i, s in enumerate(rec["steps"]) if s["recropped"])
    assert last > 0  # a re-crop after earlier clicks, so there is history to replay
    given = [Click.from_dict(c) for c in rec["clicks_given"]]
    # since the last restart: every click so far, one a step, in order (on the crop's grid)
    assert [[c.kind for c in step] for step in method.seen] == [[c.kind] for c in given]


@dataclass
class Carrier(Painter):
    """A box-taking Painter that starts from ``init_prob`` and records its starts."""

    carries_mask: bool = True
    starts: list = field(default_factory=list)
    first_steps: list = field(default_factory=list)  # each start's first step's clicks

    def start(self, crop, *, init_prob=None):
        state = super().start(crop)
        self.starts.append((crop, None if init_prob is None else np.array(init_prob)))
        if init_prob is None:
            return state
        return MethodState(crop, prob=np.asarray(init_prob, np.float32))

    def step(self, state, new, *, rng):
        if not self.seen:
            self.first_steps.append(list(new))
        return super().step(state, new, rng=rng)


def test_by_default_a_recropped_method_starts_from_the_mask_so_far_with_box_and_clicks():
    gt = np.zeros((30, 20, 16), bool)  # the limb case: the first click leaves the box's ROI
    gt[6:10, 5:9, 0:16] = True
    gt[6:30, 0:20, 10:16] = True
    method = Carrier(kinds=frozenset({FG, BG, BOX}))
    method.grid = (6, 6, 16)  # the first ROI's own shape: the box step paints the box
    image = gt.astype(np.float32)
    rec, _ = cvpr25.run_case(method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
    assert rec["steps"][0]["recropped"]
    assert method.starts[0][1] is None  # the first start: nothing before it
    crop, carried = method.starts[1]
    box_mask = np.zeros(gt.shape, np.float32)  # the box step's mask: the box itself
    box_mask[cvpr25.box_to_roi(rec["cvpr25_box"]).slices] = 1.0
    assert carried is not None and carried.max() == 1.0
    np.testing.assert_array_equal(carried, resample_box(box_mask, crop.box, crop.grid))
    # no box step of its own: the box's corners come with every click so far, in one step
    assert [c.kind for c in method.first_steps[0]] == [BOX, BOX]  # the box step
    assert [c.kind for c in method.first_steps[1]] == [BOX, BOX, FG]
    restarted = Carrier(kinds=frozenset({FG, BG, BOX}))
    restarted.grid = (6, 6, 16)
    cvpr25.run_case(
        restarted, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0), recrop="restart"
    )
    assert all(init is None for _, init in restarted.starts)  # from nothing, box step first
    assert [c.kind for c in restarted.first_steps[1]] == [BOX, BOX]
    with pytest.raises(ConfigError, match="recrop"):
        cvpr25.run_case(
            method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0), recrop="x"
        )


def test_without_a_box_the_first_step_scores_zero_and_clicks_start_from_nothing():
    image, gt = _case()
    method = _native(Painter(), image)
    rec, _ = cvpr25.run_case(
        method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0), use_box=False
    )
    assert rec["cvpr25_box"] is None and rec["box"] == [[0, 0, 0], list(gt.shape)]
    assert rec["cvpr25"]["DSC"][0] == 0.0 and rec["cvpr25"]["seconds"][0] == 0.0
    assert rec["clicks_given"][0]["kind"] == "foreground"


def test_edge_only_methods_are_refused():
    with pytest.raises(ConfigError, match="edge points"):
        cvpr25.check_method("mecca", Painter(kinds=frozenset({EDGE})))
    cvpr25.check_method("painter", Painter())


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvpr25") / "ph"
    return write_phantom_dataset(root, count=2, seed=3, shape=(32, 32, 20))


def test_the_benchmark_refuses_edge_only_methods(phantoms, tmp_path):
    settings = BenchSettings(
        data=phantoms, methods=("edge_itermrl",), split="all", protocol="cvpr25", max_cases=1
    )
    with pytest.raises(ConfigError, match="edge points"):
        run_benchmark(settings, tmp_path / "x", progress=False)
    # so do the other protocols whose users give fg/bg clicks only
    with pytest.raises(ConfigError, match="the scribble protocol"):
        run_benchmark(replace(settings, protocol="scribble"), tmp_path / "y", progress=False)


def test_the_scores_reach_results_json_and_report_md(phantoms, tmp_path):
    settings = BenchSettings(
        data=phantoms, methods=("region_growing",), split="all", protocol="cvpr25", max_cases=2
    )
    report = run_benchmark(settings, tmp_path / "r", progress=False)
    stored = json.loads((tmp_path / "r" / "results.json").read_text())
    summary = stored["methods"]["region_growing"]["cvpr25"]
    assert set(cvpr25.SUMMARY_KEYS) <= set(summary)
    assert len(summary["DSC_per_step"]) == len(summary["NSD_per_step"]) == 6
    assert 0.0 <= summary["DSC_AUC"] <= 4.0 and 0.0 <= summary["NSD_AUC"] <= 4.0
    cases = report["methods"]["region_growing"]["cases"].values()
    assert summary["DSC_Final"] == pytest.approx(np.mean([c["cvpr25"]["DSC_Final"] for c in cases]))
    for c in cases:
        assert c["cvpr25"]["DSC_Final"] == pytest.approx(c["steps"][-1]["dice"] / 100)
        assert all("nsd" in s for s in c["steps"])
    text = (tmp_path / "r" / "report.md").read_text()
    assert "CVPR 2025 scores" in text and "NSD@2mm per step" in text
    nobox = run_benchmark(
        BenchSettings(**{**settings.__dict__, "box": False}), tmp_path / "n", progress=False
    )
    first = nobox["methods"]["region_growing"]["cvpr25"]["DSC_per_step"][0]
    assert first == 0.0


def test_mecca_evaluate_gives_the_challenge_dsc_and_nsd(tmp_path):
    import nibabel as nib

    from mecca.bench.evaluate import evaluate_files

    gt = np.zeros((24, 24, 16), np.uint8)
    gt[6:18, 6:18, 4:12] = 1
    pred = np.roll(gt, 2, axis=2)
    for name, a in (("gt", gt), ("pred", pred)):
        nib.save(nib.Nifti1Image(a, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / f"{name}.nii"))
    scores = evaluate_files(tmp_path / "pred.nii", tmp_path / "gt.nii")
    dsc, nsd = metrics.dsc_nsd_cvpr25(pred, gt, (1.0, 1.0, 2.0))
    assert scores["dsc_cvpr25"] == pytest.approx(dsc) and scores["nsd_cvpr25"] == pytest.approx(nsd)
    assert scores["dsc_cvpr25"] == pytest.approx(scores["dice"]) and 0.0 < nsd < 1.0


class Deaf(Painter):
    """Paints nothing: every click lands on an error that stays."""

    def step(self, state, new, *, rng):
        self.seen.append(list(new))
        return state, StepResult(prob=state.prob, seconds=0.0)


def test_each_click_step_reports_the_share_of_clicks_the_mask_honours():
    image, gt = _case()
    painter, deaf = Painter(), Deaf()
    painter.grid = deaf.grid = (16, 15, 16)
    honoured = {}
    for name, method in (("painter", painter), ("deaf", deaf)):
        rec, _ = cvpr25.run_case(method, image, gt, (1.0, 1.0, 1.0), rng=np.random.default_rng(0))
        honoured[name] = [s["honoured_clicks"] for s in rec["steps"] if s["clicks"]]
    assert honoured["painter"] and all(h == 100.0 for h in honoured["painter"])
    assert honoured["deaf"][0] == 0.0  # a click is taken where the mask is wrong


def test_the_methods_chosen_on_val_carry_their_mask_and_the_others_restart():
    from mecca import methods
    from mecca.interface import carries_mask

    carriers = {"generalist", "intercnn"}  # docs/cvpr25.md: chosen per method on val
    for name in ("generalist", "intercnn", "deepigeos", "itermrl", "random_walker", "unet"):
        assert carries_mask(methods.get(name)) == (name in carriers), name
