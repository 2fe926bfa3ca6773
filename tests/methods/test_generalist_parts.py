"""The generalist's network, prompt channels, simulated users and procedural volumes."""

import numpy as np
import pytest
import torch

from conftest import sphere
from mecca.errors import ConfigError, InputError
from mecca.interaction.clicks import Click, InteractionKind
from mecca.methods.generalist.net import (
    Conv3d,
    GeneralistNet,
    GeneralistNetConfig,
    InstanceNorm,
    Up2,
)
from mecca.methods.generalist.prompts import (
    CLICK_RADIUS,
    add_points,
    box_map,
    distance_click,
    drawn_slab,
    error_clicks,
    initial_points,
    normalise_image,
    slice_box_map,
    split_clicks,
    turn_click,
)
from mecca.methods.generalist.synth import (
    MIN_OBJECT_VOXELS,
    _add_vessels,
    make_large_synthetic,
    make_synthetic,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FG, BG, BOX = InteractionKind.FOREGROUND, InteractionKind.BACKGROUND, InteractionKind.BOX
TINY = GeneralistNetConfig(widths=(8, 16), blocks=(1, 1), fine=4)


# ----------------------------------------------------------------------------- network


def test_net_keeps_the_grid_and_checks_its_input():
    net = GeneralistNet(TINY).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 5, 16, 12, 8))
    assert out.shape == (2, 1, 16, 12, 8) and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="divisible"):
        net(torch.randn(1, 5, 16, 12, 6))
    with pytest.raises(ConfigError, match="input must be"):
        net(torch.randn(1, 4, 16, 16, 8))


def test_config_round_trips_and_refuses_bad_values():
    assert GeneralistNetConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ConfigError):
        GeneralistNetConfig(widths=(8, 16), blocks=(1,))
    with pytest.raises(ConfigError):
        GeneralistNetConfig(norm="group")
    with pytest.raises(ConfigError, match="unknown"):
        GeneralistNetConfig.from_dict({"width": 3})


def test_onednn_conv_equals_the_reference_forward_and_backward():
    torch.manual_seed(0)
    ours = Conv3d(4, 6, 3, 2, 1)
    ref = torch.nn.Conv3d(4, 6, 3, 2, 1)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 4, 9, 8, 7, requires_grad=True)
    y_ours, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y_ours, y_ref, atol=1e-5, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(y_ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-4, rtol=1e-4)


def test_up2_is_a_stride_two_transposed_convolution():
    torch.manual_seed(0)
    up = Up2(3, 2)
    ref = torch.nn.ConvTranspose3d(3, 2, 2, 2)
    w = up.conv.weight.detach()[:, :, 0, 0, 0].view(2, 2, 2, 2, 3)  # (out, di, dj, dk, in)
    with torch.no_grad():
        ref.weight.copy_(w.permute(4, 0, 1, 2, 3))
        ref.bias.copy_(up.conv.bias.view(2, 8)[:, 0])
        up.conv.bias.copy_(ref.bias.repeat_interleave(8))
    x = torch.randn(2, 3, 4, 5, 3)
    torch.testing.assert_close(up(x), ref(x), atol=1e-5, rtol=1e-5)


def test_instance_norm_matches_torch_in_channels_last():
    x = torch.randn(2, 8, 6, 5, 4).to(memory_format=torch.channels_last_3d) * 3 + 1
    ours = InstanceNorm(8)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 2)
        ours.bias.uniform_(-1, 1)
    ref = torch.nn.InstanceNorm3d(8, affine=True)
    with torch.no_grad():
        ref.weight.copy_(ours.weight.view(-1))
        ref.bias.copy_(ours.bias.view(-1))
    torch.testing.assert_close(ours(x), ref(x), atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- channels


def test_click_bumps_are_balls_that_combine_by_maximum():
    m = np.zeros((12, 12, 12), np.float32)
    add_points(m, [(6, 6, 6), (6, 6, 7), (0, 0, 0)])
    assert m[6, 6, 6] == 1.0 and m[6, 6, 7] == 1.0 and m[0, 0, 0] == 1.0
    assert 0.5 < m[6, 6, 8] < 1.0 and m[6, 6, 6 + CLICK_RADIUS + 2] == 0.0
    assert m.max() == 1.0 and m.min() == 0.0
    with pytest.raises(InputError, match="outside"):
        add_points(m, [(12, 0, 0)])


def test_box_map_takes_inclusive_corners_in_any_order():
    a = box_map((8, 8, 8), (5, 6, 2), (1, 2, 3))
    assert a.sum() == 5 * 5 * 2 and a[1, 2, 2] == 1 and a[5, 6, 3] == 1 and a[0, 2, 2] == 0


def test_slice_box_map_marks_the_drawn_middle_slice_and_halves_the_rest():
    m = slice_box_map((10, 10, 10), (6, 7, 1), (2, 3, 6))  # k 1..6: the middle slice is 4
    assert set(np.unique(m)) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(np.flatnonzero((m == 1.0).any(axis=(0, 1))), [4])
    np.testing.assert_array_equal(m > 0, box_map((10, 10, 10), (6, 7, 1), (2, 3, 6)) > 0)
    assert m[2, 3, 1] == 0.5 and m[6, 7, 4] == 1.0 and m[7, 7, 4] == 0.0
    thick = slice_box_map((10, 10, 10), (6, 7, 1), (2, 3, 6), slab=3)  # slices 3, 4, 5
    np.testing.assert_array_equal(np.flatnonzero((thick == 1.0).any(axis=(0, 1))), [3, 4, 5])
    edge = slice_box_map((10, 10, 10), (6, 7, 4), (2, 3, 5), slab=8)  # kept inside the box
    np.testing.assert_array_equal(np.flatnonzero((edge == 1.0).any(axis=(0, 1))), [4, 5])
    assert drawn_slab(32, 8) == 4 and drawn_slab(32, 36) == 1 and drawn_slab(32, 0) == 32


def test_split_clicks_refuses_edges_and_half_boxes():
    fg, bg, box = split_clicks([Click(FG, (1, 1, 1)), Click(BG, (2, 2, 2))])
    assert len(fg) == 1 and len(bg) == 1 and box == []
    with pytest.raises(InputError, match="edge as a foreground"):
        split_clicks([Click(InteractionKind.EDGE, (1, 1, 1))])
    with pytest.raises(InputError, match="two BOX clicks"):
        split_clicks([Click(BOX, (1, 1, 1))])


def test_normalise_image_is_invariant_to_affine_intensity_changes():
    x = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(normalise_image(x), normalise_image(3 * x + 100), atol=1e-4)


# ----------------------------------------------------------------------------- simulated users


def test_distance_click_is_the_cvpr25_user():
    gt = sphere((20, 20, 20), (10, 10, 10), 6)
    assert distance_click(gt, gt) is None
    c = distance_click(np.zeros_like(gt), gt)
    assert c == Click(FG, (10, 10, 10))
    pred = gt | sphere((20, 20, 20), (3, 3, 3), 2)
    assert distance_click(pred, gt) == Click(BG, (3, 3, 3))


def test_error_clicks_label_errors_by_the_truth():
    rng = np.random.default_rng(0)
    gt = sphere((20, 20, 20), (10, 10, 10), 6)
    assert error_clicks(gt, gt, rng) == []
    for _ in range(20):
        clicks = error_clicks(np.zeros_like(gt), gt, rng)
        assert clicks and all(c.kind is FG and gt[c.position] for c in clicks)
        clicks = error_clicks(np.ones_like(gt), gt, rng)
        assert clicks and all(c.kind is BG and not gt[c.position] for c in clicks)


def test_turn_clicks_take_the_kind_the_user_chose():
    gt = sphere((20, 20, 20), (10, 10, 10), 6)
    small = sphere((20, 20, 20), (10, 10, 10), 3)  # misses much, adds nothing
    inside = turn_click(small, gt, FG)
    assert inside.kind is FG and gt[inside.position] and not small[inside.position]
    outside = turn_click(small, gt, BG)  # nothing added wrongly: the ring outside
    assert outside.kind is BG and not gt[outside.position]
    ring = np.argwhere(gt)
    assert 0 < min(np.abs(np.asarray(outside.position) - r).sum() for r in ring) <= 3
    spill = gt | sphere((20, 20, 20), (3, 3, 3), 2)
    assert turn_click(spill, gt, BG) == Click(BG, (3, 3, 3))
    assert turn_click(gt, gt, FG) is None


def test_initial_points_lie_on_the_right_side():
    rng = np.random.default_rng(1)
    gt = sphere((24, 24, 16), (12, 12, 8), 5)
    clicks = initial_points(gt, rng, 3, 2)
    assert clicks[0] == Click(FG, (12, 12, 8))
    assert [c.kind for c in clicks] == [FG, FG, FG, BG, BG]
    assert all(gt[c.position] == (c.kind is FG) for c in clicks)


# ----------------------------------------------------------------------------- synthetic


def test_large_synthetic_volumes_hold_an_organ_sized_object():
    a = make_large_synthetic(np.random.default_rng([3, 0]))
    b = make_large_synthetic(np.random.default_rng([3, 0]))
    np.testing.assert_array_equal(a.label, b.label)
    assert a.image.dtype == np.float32 and np.isfinite(a.image).all()
    for i in range(4):
        vol = make_large_synthetic(np.random.default_rng([3, i]))
        organ = np.argwhere(vol.label == 1)
        span = (organ.max(0) - organ.min(0) + 1) / np.array(vol.label.shape)
        assert span.min() > 0.8 and (vol.label == 1).mean() > 0.05, (i, span)
        small = make_synthetic(np.random.default_rng([3, i]))
        largest = max(np.bincount(small.label.ravel())[1:]) / small.label.size
        assert largest < (vol.label == 1).mean()  # larger than any ordinary volume's object


def test_organ_vessels_change_the_organ_only_and_keep_its_label():
    organ = sphere((40, 40, 20), (20, 20, 10), 12)
    image = np.zeros(organ.shape, np.float32)
    _add_vessels(image, organ, 0.0, np.array([1.0, 1.0, 2.0]), np.random.default_rng(4))
    changed = image != 0
    assert changed.any() and not (changed & ~organ).any()
    values = image[changed]
    assert (np.abs(values) >= 0.4).all() and (np.all(values > 0) or np.all(values < 0))
    a = make_large_synthetic(np.random.default_rng([3, 0]), vessels=True)
    b = make_large_synthetic(np.random.default_rng([3, 0]), vessels=True)
    np.testing.assert_array_equal(a.image, b.image)
    organ_span = np.argwhere(a.label == 1)
    span = (organ_span.max(0) - organ_span.min(0) + 1) / np.array(a.label.shape)
    assert span.min() > 0.8  # still organ-sized: the tubes are part of it


def test_synthetic_volumes_are_seeded_and_labelled():
    a = make_synthetic(np.random.default_rng([3, 1]))
    b = make_synthetic(np.random.default_rng([3, 1]))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    assert a.image.dtype == np.float32 and np.isfinite(a.image).all()
    counts = np.bincount(a.label.ravel())[1:]
    assert len(counts) >= 1 and counts.min() >= MIN_OBJECT_VOXELS
