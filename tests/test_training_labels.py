"""Label assignment (paper sec. 3.5, eq. 1-2) on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.training.labels import LevelTargets, assign_level, assign_window


def test_boundary_labels_of_gt_2_5_on_length_8() -> None:
    t = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5)
    # R_s = [0.5, 3.5]: periods [0,1) .. [3,4) overlap 0.5, 1, 1, 0.5
    assert t.start.tolist() == [0.5, 1.0, 1.0, 0.5, 0, 0, 0, 0]
    # R_e = [3.5, 6.5]
    assert t.end.tolist() == [0, 0, 0, 0.5, 1.0, 1.0, 0.5, 0]
    assert t.start.dtype == torch.float32 and t.start.shape == (8,)


def test_tiou_map_cells_of_gt_2_5() -> None:
    t = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5)
    assert t.iou.shape == (8, 8)
    assert t.iou[2, 2].item() == 1.0  # cell (d=2, s=2) = [2, 5)
    assert t.iou[3, 2].item() == pytest.approx(3 / 4)  # [2, 6)
    assert t.iou[1, 3].item() == pytest.approx(2 / 3)  # [3, 5)
    assert t.iou[2, 3].item() == pytest.approx(2 / 4)  # [3, 6)
    assert t.iou[7, 0].item() == pytest.approx(3 / 8)  # [0, 8), the whole window
    assert t.iou[0, 0].item() == 0.0  # [0, 1): no overlap
    assert t.iou[1, 7].item() == 0.0  # invalid: s + d = 8
    assert (t.iou[torch.arange(8).unsqueeze(1) + torch.arange(8) >= 8] == 0).all()


def test_offsets_eq_1_2_and_mask() -> None:
    t = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5)
    # cell (3, 2) = [2, 6): c = 4, d = 4; GT c* = 3.5, d* = 3
    assert t.cent[3, 2].item() == pytest.approx((3.5 - 4) / 4)
    assert t.dura[3, 2].item() == pytest.approx(math.log(3 / 4))
    # cell (1, 3) = [3, 5): c = 4, d = 2
    assert t.cent[1, 3].item() == pytest.approx(-0.25)
    assert t.dura[1, 3].item() == pytest.approx(math.log(1.5))
    assert t.cent[2, 2].item() == 0 and t.dura[2, 2].item() == 0
    assert t.offset_mask.nonzero().tolist() == [[2, 2]]  # only tIoU 1 > 0.9


def test_positive_threshold_is_strict() -> None:
    t = assign_level([[2, 12]], None, window=16, length=16)
    assert t.iou[10, 2].item() == pytest.approx(10 / 11)  # [2, 13)
    assert bool(t.offset_mask[10, 2])
    assert t.iou[8, 3].item() == pytest.approx(0.9)  # [3, 12): 9 / 10, not > 0.9
    assert not bool(t.offset_mask[8, 3])
    assert t.offset_mask.sum().item() == 3  # [2,12) exact, [2,13), [1,12)


def test_class_map_threshold_and_background() -> None:
    t = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5)
    assert t.classes.dtype == torch.long
    assert t.classes[2, 2].item() == 3
    assert t.classes[2, 3].item() == 3  # tIoU exactly 0.5 >= 0.5
    assert t.classes[3, 0].item() == 5  # [0, 4): 2 / 5 = 0.4 -> background
    assert t.classes[1, 7].item() == 5  # invalid cell -> background
    t2 = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5, class_iou=0.7)
    assert t2.classes[2, 3].item() == 5


def test_best_gt_decides_offsets_and_class() -> None:
    t = assign_level([[0, 4], [4, 6]], [1, 2], window=8, length=8, num_classes=3)
    assert t.iou[3, 0].item() == 1.0 and t.classes[3, 0].item() == 1
    assert t.iou[1, 4].item() == 1.0 and t.classes[1, 4].item() == 2
    # cell (2, 3) = [3, 6): tIoU 1/6 with GT0, 2/3 with GT1 -> GT1 (c* = 5, d* = 2; c = 4.5, d = 3)
    assert t.iou[2, 3].item() == pytest.approx(2 / 3)
    assert t.cent[2, 3].item() == pytest.approx(0.5 / 3)
    assert t.dura[2, 3].item() == pytest.approx(math.log(2 / 3))
    assert t.start[4].item() == 1.0 and t.end[3].item() == 1.0  # both GTs' regions, max


def test_levels_scale_by_length_over_window() -> None:
    levels = assign_window([[4, 10]], [0], [16, 8, 4], None, num_classes=1)
    assert [lv.iou.shape for lv in levels] == [(16, 16), (8, 8), (4, 4)]
    ref = assign_level([[2, 5]], [0], window=8, length=8)
    for f in ("start", "end", "iou", "cent", "dura", "offset_mask", "classes"):
        assert torch.equal(getattr(levels[1], f), getattr(ref, f)), f
    # level 2: [1, 2.5); R_s = [-0.5, 2.5]
    assert levels[2].start.tolist() == [1.0, 1.0, 0.5, 0.0]


def test_max_duration_crops_the_map() -> None:
    full = assign_level([[2, 5]], [3], window=8, length=8, num_classes=5)
    crop = assign_level([[2, 5]], [3], window=8, length=8, max_duration=4, num_classes=5)
    assert crop.iou.shape == (4, 8) and crop.max_duration == 4 and crop.length == 8
    assert torch.equal(crop.iou, full.iou[:4]) and torch.equal(crop.classes, full.classes[:4])


def test_zero_ground_truths() -> None:
    for gts in ([], np.zeros((0, 2)), [[9, 12]], [[3, 3]]):  # none, outside, degenerate
        t = assign_level(gts, None, window=8, length=8, num_classes=4)
        assert t.start.abs().sum() == 0 and t.end.abs().sum() == 0
        assert t.iou.abs().sum() == 0 and t.cent.abs().sum() == 0 and t.dura.abs().sum() == 0
        assert not t.offset_mask.any()
        assert (t.classes == 4).all()


def test_segments_are_clipped_to_the_window() -> None:
    clipped = assign_level([[-3, 4], [6, 11]], [0, 1], window=8, length=8, num_classes=2)
    ref = assign_level([[0, 4], [6, 8]], [0, 1], window=8, length=8, num_classes=2)
    for f in ("start", "end", "iou", "cent", "dura", "offset_mask", "classes"):
        assert torch.equal(getattr(clipped, f), getattr(ref, f)), f


def test_bad_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="class ids"):
        assign_level([[1, 2]], [4], window=8, length=8, num_classes=4)
    with pytest.raises(ValueError, match="labels for"):
        assign_level([[1, 2]], [0, 1], window=8, length=8, num_classes=4)


def test_to_device_roundtrip() -> None:
    t = assign_level([[1, 3]], None, window=8, length=8)
    t2 = t.to("cpu")
    assert isinstance(t2, LevelTargets) and torch.equal(t2.iou, t.iou)


def _brute(gts: list[tuple[float, float]], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    iou = np.zeros((length, length))
    cent = np.zeros((length, length))
    dura = np.zeros((length, length))
    start = np.zeros(length)
    for a, b in gts:
        for j in range(length):
            start[j] = max(start[j], max(0.0, min(j + 1, a + 1.5) - max(j, a - 1.5)))
    for d in range(length):
        for s in range(length - d):
            e = s + d + 1
            best, arg = 0.0, 0
            for g, (a, b) in enumerate(gts):
                inter = max(0.0, min(e, b) - max(s, a))
                v = inter / ((e - s) + (b - a) - inter)
                if v > best:
                    best, arg = v, g
            iou[d, s] = best
            a, b = gts[arg]
            cent[d, s] = ((a + b) / 2 - (s + e) / 2) / (d + 1)
            dura[d, s] = math.log((b - a) / (d + 1))
    return start, iou, cent, dura


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.lists(st.tuples(st.floats(0, 10), st.floats(0.25, 6)), min_size=1, max_size=3))
def test_matches_a_brute_force_reference(length: int, raw: list[tuple[float, float]]) -> None:
    gts = [(min(a, length - 0.25), min(a, length - 0.25) + w) for a, w in raw]
    gts = [(a, min(b, float(length))) for a, b in gts]
    t = assign_level(gts, None, window=length, length=length)
    start, iou, cent, dura = _brute(gts, length)
    np.testing.assert_allclose(t.start.numpy(), start, atol=1e-6)
    np.testing.assert_allclose(t.iou.numpy(), iou, atol=1e-6)
    np.testing.assert_allclose(t.cent.numpy(), cent, atol=1e-5)
    np.testing.assert_allclose(t.dura.numpy(), dura, atol=1e-5)
    assert ((t.start >= 0) & (t.start <= 1)).all() and ((t.iou >= 0) & (t.iou <= 1)).all()
