"""Tests for engine.postprocess.soft_nms.

``soft_nms_reference`` below is the executable specification: plain Python loops,
one pair at a time. The vectorised implementation must reproduce it exactly (same
indices, scores within 1e-9) on random inputs for every method and mode.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.postprocess.soft_nms import SoftNMSResult, segment_iou, soft_nms

METHODS = ("gaussian", "linear", "hard", "bmn")


# ----------------------------------------------------------------------------- reference


def _iou_ref(a: Sequence[float], b: Sequence[float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def soft_nms_reference(
    segments: Sequence[Sequence[float]],
    scores: Sequence[float],
    labels: Optional[Sequence[int]] = None,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    low_threshold: float = 0.5,
    high_threshold: float = 0.9,
    duration: Optional[float] = None,
    class_agnostic: bool = True,
    top_k: Optional[int] = None,
    min_score: float = 0.0,
) -> tuple[list[int], list[float]]:
    """Pure-Python Soft-NMS with the documented semantics; returns (indices, scores)."""
    segs = [(float(s), float(e)) for s, e in segments]
    n = len(segs)
    dur = 1.0 if duration is None else float(duration)
    if class_agnostic:
        groups = [list(range(n))]
    else:
        assert labels is not None
        groups = [[i for i in range(n) if labels[i] == v] for v in sorted(set(labels))]
    picked: list[tuple[float, int]] = []
    for group in groups:
        cur = {i: float(scores[i]) for i in group}
        remaining = [i for i in group if cur[i] >= min_score]  # ascending index order
        n_picks = 0
        while remaining and (top_k is None or n_picks < top_k):
            best = remaining[0]
            for i in remaining[1:]:
                if cur[i] > cur[best]:  # strict: the earliest index wins ties
                    best = i
            picked.append((cur[best], best))
            n_picks += 1
            remaining.remove(best)
            survivors = []
            for i in remaining:
                iou = _iou_ref(segs[best], segs[i])
                if method == "gaussian":
                    cur[i] = cur[i] * math.exp(-(iou * iou) / sigma)
                elif method == "linear":
                    if iou > iou_threshold:
                        cur[i] = cur[i] * (1.0 - iou)
                elif method == "hard":
                    if iou > iou_threshold:
                        continue
                elif method == "bmn":
                    width = (segs[best][1] - segs[best][0]) / dur
                    if iou > low_threshold + (high_threshold - low_threshold) * width:
                        cur[i] = cur[i] * math.exp(-(iou * iou) / sigma)
                else:
                    raise AssertionError(method)
                if cur[i] >= min_score:
                    survivors.append(i)
            remaining = survivors
    picked.sort(key=lambda t: (-t[0], t[1]))
    if top_k is not None:
        picked = picked[:top_k]
    return [i for _, i in picked], [s for s, _ in picked]


def _assert_matches_reference(segs, scores, labels, **kw) -> None:
    got = soft_nms(np.asarray(segs, dtype=float).reshape(-1, 2), np.asarray(scores, dtype=float),
                   None if labels is None else np.asarray(labels, dtype=np.int64), **kw)
    ref_idx, ref_scores = soft_nms_reference(segs, scores, labels, **kw)
    assert got.indices.tolist() == ref_idx, (got.indices.tolist(), ref_idx, kw)
    np.testing.assert_allclose(got.scores, ref_scores, rtol=0, atol=1e-9)
    # Carried fields must be the input rows at the returned indices.
    np.testing.assert_array_equal(got.segments, np.asarray(segs, dtype=float).reshape(-1, 2)[ref_idx])
    if labels is not None:
        assert got.labels.tolist() == [labels[i] for i in ref_idx]
    else:
        assert got.labels is None


# ----------------------------------------------------------------------------- hand-computed


# A = [0, 2] picked first; B = [0, 1] has IoU exactly 0.5 with A.
SEG_AB = np.array([[0.0, 2.0], [0.0, 1.0]])
SC_AB = np.array([0.9, 0.8])


def test_iou_helper_values() -> None:
    ious = segment_iou(np.array([0.0, 2.0]), np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 4.0], [5.0, 5.0], [0.0, 2.0]]))
    np.testing.assert_allclose(ious, [0.5, 1 / 3, 0.0, 0.0, 1.0])


def test_gaussian_two_segments_iou_half() -> None:
    r = soft_nms(SEG_AB, SC_AB, method="gaussian", sigma=0.5)
    assert r.indices.tolist() == [0, 1]
    np.testing.assert_allclose(r.scores, [0.9, 0.8 * math.exp(-0.25 / 0.5)], rtol=0, atol=1e-15)


def test_gaussian_sigma_is_plain_denominator() -> None:
    r = soft_nms(SEG_AB, SC_AB, method="gaussian", sigma=0.1)
    np.testing.assert_allclose(r.scores[1], 0.8 * math.exp(-2.5), rtol=1e-14)


def test_linear_decays_above_threshold_only() -> None:
    r = soft_nms(SEG_AB, SC_AB, method="linear", iou_threshold=0.4)
    np.testing.assert_allclose(r.scores, [0.9, 0.4], rtol=1e-14)
    # The comparison is strict: IoU == threshold leaves the score alone.
    r = soft_nms(SEG_AB, SC_AB, method="linear", iou_threshold=0.5)
    np.testing.assert_allclose(r.scores, [0.9, 0.8], rtol=1e-14)


def test_hard_drops_above_threshold_only() -> None:
    r = soft_nms(SEG_AB, SC_AB, method="hard", iou_threshold=0.4)
    assert r.indices.tolist() == [0]
    r = soft_nms(SEG_AB, SC_AB, method="hard", iou_threshold=0.5)
    assert r.indices.tolist() == [0, 1]
    np.testing.assert_allclose(r.scores, [0.9, 0.8])


def test_hard_negative_threshold_drops_disjoint_segments_too() -> None:
    # IoU 0 > -0.1, so even far-apart segments are suppressed: only the best survives.
    segs = np.array([[0.0, 1.0], [50.0, 51.0], [100.0, 100.0]])
    r = soft_nms(segs, np.array([0.3, 0.9, 0.5]), method="hard", iou_threshold=-0.1)
    assert r.indices.tolist() == [1]


def test_linear_decay_can_reorder_output() -> None:
    # C overlaps nothing; B is pushed below it after A is picked.
    segs = np.array([[0.0, 2.0], [0.0, 1.0], [10.0, 11.0]])
    r = soft_nms(segs, np.array([0.9, 0.8, 0.5]), method="linear", iou_threshold=0.3)
    assert r.indices.tolist() == [0, 2, 1]
    np.testing.assert_allclose(r.scores, [0.9, 0.5, 0.4])
    np.testing.assert_array_equal(r.segments, segs[[0, 2, 1]])


def test_bmn_uses_width_relative_to_duration() -> None:
    segs = np.array([[0.0, 2.0], [0.5, 2.0]])  # IoU 1.5 / 2 = 0.75
    sc = np.array([0.9, 0.8])
    # width 2/10 -> threshold 0.5 + 0.4 * 0.2 = 0.58 < 0.75: decays.
    r = soft_nms(segs, sc, method="bmn", sigma=0.4, duration=10.0)
    np.testing.assert_allclose(r.scores, [0.9, 0.8 * math.exp(-0.5625 / 0.4)], rtol=1e-14)
    # width 2/2.2 -> threshold 0.5 + 0.4 * 0.909 = 0.864 > 0.75: untouched.
    r = soft_nms(segs, sc, method="bmn", sigma=0.4, duration=2.2)
    np.testing.assert_allclose(r.scores, [0.9, 0.8], rtol=1e-14)


def test_bmn_width_is_that_of_the_picked_segment() -> None:
    # Normalised coordinates (duration=None). IoU = 0.85 in both cases.
    long_, short = [0.0, 1.0], [0.0, 0.85]
    # Picked long (threshold 0.9): no decay, though the short one's width would give 0.84.
    r = soft_nms(np.array([long_, short]), np.array([0.9, 0.8]), method="bmn", sigma=0.4)
    np.testing.assert_allclose(r.scores, [0.9, 0.8], rtol=1e-14)
    # Picked short (threshold 0.84 < 0.85): decays.
    r = soft_nms(np.array([short, long_]), np.array([0.9, 0.8]), method="bmn", sigma=0.4)
    np.testing.assert_allclose(r.scores, [0.9, 0.8 * math.exp(-0.85**2 / 0.4)], rtol=1e-14)


def test_gaussian_decay_accumulates_over_picks() -> None:
    # C overlaps both A and B; it is decayed once per pick.
    segs = np.array([[0.0, 2.0], [3.0, 5.0], [1.0, 4.0]])
    r = soft_nms(segs, np.array([0.9, 0.8, 0.7]), method="gaussian", sigma=0.5)
    iou = 1.0 / 4.0  # C vs A: inter 1, union 4; C vs B: inter 1, union 4
    assert r.indices.tolist() == [0, 1, 2]
    np.testing.assert_allclose(r.scores[2], 0.7 * math.exp(-iou**2 / 0.5) ** 2, rtol=1e-14)


def test_min_score_drops_decayed_segments() -> None:
    r = soft_nms(SEG_AB, SC_AB, method="linear", iou_threshold=0.4, min_score=0.5)
    assert r.indices.tolist() == [0]
    r = soft_nms(SEG_AB, SC_AB, method="linear", iou_threshold=0.4, min_score=0.4)
    assert r.indices.tolist() == [0, 1]  # kept when score == min_score


def test_min_score_filters_inputs_and_dropped_items_do_not_suppress() -> None:
    # The 0.95 segment is below min_score so it must not decay B.
    segs = np.array([[0.0, 2.0], [0.0, 2.0]])
    r = soft_nms(segs, np.array([0.05, 0.8]), method="hard", iou_threshold=0.1, min_score=0.1)
    assert r.indices.tolist() == [1]


def test_top_k_class_agnostic_and_zero() -> None:
    segs = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    sc = np.array([0.2, 0.9, 0.5])
    assert soft_nms(segs, sc, top_k=2).indices.tolist() == [1, 2]
    assert len(soft_nms(segs, sc, top_k=0)) == 0


def test_per_class_keeps_overlapping_segments_of_other_labels() -> None:
    segs = np.array([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    sc = np.array([0.9, 0.8, 0.7])
    labels = np.array([3, 5, 3])
    agn = soft_nms(segs, sc, labels, method="hard", iou_threshold=0.5)
    assert agn.indices.tolist() == [0]
    per = soft_nms(segs, sc, labels, method="hard", iou_threshold=0.5, class_agnostic=False)
    assert per.indices.tolist() == [0, 1]
    assert per.labels.tolist() == [3, 5]


def test_per_class_top_k_is_global() -> None:
    segs = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]])
    sc = np.array([0.9, 0.8, 0.7, 0.95])
    labels = np.array([0, 0, 1, 1])
    r = soft_nms(segs, sc, labels, class_agnostic=False, top_k=3)
    assert r.indices.tolist() == [3, 0, 1]


def test_output_ties_ordered_by_input_index() -> None:
    segs = np.array([[4.0, 5.0], [0.0, 1.0], [2.0, 3.0]])
    r = soft_nms(segs, np.array([0.5, 0.5, 0.5]))
    assert r.indices.tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("method", METHODS)
def test_empty_input(method: str) -> None:
    r = soft_nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, dtype=int), method=method, class_agnostic=False)
    assert isinstance(r, SoftNMSResult)
    assert r.indices.shape == (0,) and r.indices.dtype == np.int64
    assert r.segments.shape == (0, 2)
    assert r.scores.shape == (0,)
    assert r.labels is not None and r.labels.shape == (0,)


def test_empty_list_input() -> None:
    r = soft_nms([], [])
    assert r.segments.shape == (0, 2) and len(r) == 0


@pytest.mark.parametrize("method", METHODS)
def test_single_segment(method: str) -> None:
    r = soft_nms(np.array([[1.0, 3.0]]), np.array([0.7]), method=method)
    assert r.indices.tolist() == [0]
    np.testing.assert_allclose(r.scores, [0.7])
    np.testing.assert_allclose(r.segments, [[1.0, 3.0]])


def test_identical_segments() -> None:
    segs = np.array([[1.0, 3.0]] * 3)
    sc = np.array([0.6, 0.9, 0.6])
    g = soft_nms(segs, sc, method="gaussian", sigma=0.5)
    f = math.exp(-1.0 / 0.5)
    assert g.indices.tolist() == [1, 0, 2]
    np.testing.assert_allclose(g.scores, [0.9, 0.6 * f, 0.6 * f * f], rtol=1e-14)
    lin = soft_nms(segs, sc, method="linear", iou_threshold=0.5)
    np.testing.assert_allclose(lin.scores, [0.9, 0.0, 0.0])
    assert lin.indices.tolist() == [1, 0, 2]
    assert soft_nms(segs, sc, method="hard").indices.tolist() == [1]


def test_zero_length_segments_never_suppress() -> None:
    # Two identical points have union 0 -> IoU defined as 0; a point inside a segment has no intersection.
    segs = np.array([[2.0, 2.0], [2.0, 2.0], [1.0, 3.0]])
    sc = np.array([0.9, 0.8, 0.7])
    for method in METHODS:
        r = soft_nms(segs, sc, method=method, iou_threshold=0.0, low_threshold=-1.0, high_threshold=-1.0)
        assert r.indices.tolist() == [0, 1, 2], method
        np.testing.assert_allclose(r.scores, sc, err_msg=method)


def test_nan_scores_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        soft_nms(SEG_AB, np.array([0.5, np.nan]))


@pytest.mark.parametrize(
    "segs,scores,labels,kw,match",
    [
        (np.zeros((3, 2)), np.zeros(2), None, {}, "disagree in length"),
        (np.zeros((3, 3)), np.zeros(3), None, {}, r"shape \[N, 2\]"),
        (np.zeros((3, 2)), np.zeros((3, 1)), None, {}, r"scores must have shape \[N\]"),
        (np.zeros((2, 2)), np.zeros(2), np.zeros(3, dtype=int), {}, "labels must have shape"),
        (np.zeros((2, 2)), np.zeros(2), np.zeros(2), {}, "labels must be integers"),
        (np.zeros((2, 2)), np.zeros(2), None, {"class_agnostic": False}, "needs labels"),
        (SEG_AB, np.array([0.5, np.inf]), None, {}, "infinite"),
        (SEG_AB, np.array([0.5, -0.1]), None, {}, "non-negative"),
        (np.array([[0.0, 1.0], [2.0, 1.0]]), SC_AB, None, {}, "start <= end"),
        (np.array([[0.0, np.nan], [0.0, 1.0]]), SC_AB, None, {}, "segments contain NaN"),
        (SEG_AB, SC_AB, None, {"method": "cubic"}, "unknown soft-NMS method"),
        (SEG_AB, SC_AB, None, {"sigma": 0.0}, "sigma"),
        (SEG_AB, SC_AB, None, {"method": "bmn", "duration": 0.0}, "duration"),
        (SEG_AB, SC_AB, None, {"top_k": -1}, "top_k"),
        (SEG_AB, SC_AB, None, {"min_score": float("nan")}, "min_score"),
    ],
)
def test_invalid_inputs_raise(segs, scores, labels, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        soft_nms(segs, scores, labels, **kw)


def test_inputs_not_modified() -> None:
    segs, sc = SEG_AB.copy(), SC_AB.copy()
    soft_nms(segs, sc, method="linear", iou_threshold=0.1)
    np.testing.assert_array_equal(segs, SEG_AB)
    np.testing.assert_array_equal(sc, SC_AB)


# ----------------------------------------------------------------------------- equivalence


# Coarse grids make exact overlaps, identical segments, zero lengths and score ties common.
_coord = st.one_of(st.integers(0, 12).map(float), st.floats(0.0, 12.0, allow_nan=False))
_score = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), st.floats(0.0, 1.0, allow_nan=False))


@st.composite
def _cases(draw):
    n = draw(st.integers(0, 14))
    segs = []
    for _ in range(n):
        a, b = draw(_coord), draw(_coord)
        segs.append([min(a, b), max(a, b)])
    scores = [draw(_score) for _ in range(n)]
    labels = [draw(st.integers(0, 2)) for _ in range(n)]
    kw = dict(
        sigma=draw(st.sampled_from([0.1, 0.5, 0.75, 2.0])),
        iou_threshold=draw(st.sampled_from([-0.1, 0.0, 0.3, 0.5, 0.7, 1 / 3])),
        low_threshold=draw(st.sampled_from([0.0, 0.5, 0.65])),
        high_threshold=draw(st.sampled_from([0.5, 0.9])),
        duration=draw(st.sampled_from([None, 12.0, 30.0])),
        top_k=draw(st.one_of(st.none(), st.integers(0, 6))),
        min_score=draw(st.sampled_from([0.0, 0.0, 0.1, 0.3])),
    )
    return segs, scores, labels, kw


@pytest.mark.parametrize("class_agnostic", [True, False])
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=60, deadline=None, derandomize=True, report_multiple_bugs=False)
@given(case=_cases())
def test_matches_reference_hypothesis(method: str, class_agnostic: bool, case) -> None:
    segs, scores, labels, kw = case
    _assert_matches_reference(segs, scores, labels, method=method, class_agnostic=class_agnostic, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_matches_reference_random_larger(method: str) -> None:
    # Bigger inputs than hypothesis draws, so the compaction path inside the loop is exercised.
    rng = np.random.default_rng(1234 + METHODS.index(method))
    for trial in range(40):
        n = int(rng.integers(20, 90))
        starts = rng.uniform(0, 60, n)
        lengths = rng.exponential(5.0, n) * (rng.random(n) > 0.05)  # ~5% zero length
        segs = np.stack([starts, starts + lengths], axis=1)
        dup = rng.random(n) < 0.1
        segs[dup] = segs[0]  # some exact duplicates
        scores = rng.random(n)
        labels = rng.integers(0, 4, n)
        kw = dict(
            sigma=float(rng.choice([0.3, 0.5, 0.9])),
            iou_threshold=float(rng.choice([0.1, 0.5, 0.7])),
            duration=float(rng.choice([70.0, 200.0])),
            top_k=None if trial % 3 else int(rng.integers(1, n)),
            min_score=float(rng.choice([0.0, 0.05, 0.2])),
            class_agnostic=bool(trial % 2),
        )
        _assert_matches_reference(segs.tolist(), scores.tolist(), labels.tolist(), method=method, **kw)


def _bmn_original_style(xmin: list[float], xmax: list[float], score: list[float], alpha: float,
                        low: float, high: float) -> list[tuple[float, float, float]]:
    """The loop of BMN's post_processing Soft_NMS, restated (normalised coordinates, no top-K cut)."""
    order = sorted(range(len(score)), key=lambda i: -score[i])
    ts, te, sc = [xmin[i] for i in order], [xmax[i] for i in order], [score[i] for i in order]
    out = []
    while sc:
        m = int(np.argmax(sc))
        w = te[m] - ts[m]
        for j in range(len(sc)):
            if j == m:
                continue
            iou = _iou_ref((ts[m], te[m]), (ts[j], te[j]))
            if iou > low + (high - low) * w:
                sc[j] *= math.exp(-(iou**2) / alpha)
        out.append((ts[m], te[m], sc[m]))
        del ts[m], te[m], sc[m]
    return out


def test_bmn_matches_original_bmn_loop() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        a, b = rng.random(n), rng.random(n)
        xmin, xmax = np.minimum(a, b), np.maximum(a, b)
        score = rng.random(n)  # continuous: no ties, so the original's ordering is unambiguous
        expected = _bmn_original_style(xmin.tolist(), xmax.tolist(), score.tolist(), 0.4, 0.5, 0.9)
        r = soft_nms(np.stack([xmin, xmax], 1), score, method="bmn", sigma=0.4,
                     low_threshold=0.5, high_threshold=0.9)
        np.testing.assert_allclose(r.segments, [[s, e] for s, e, _ in expected], rtol=0, atol=0)
        np.testing.assert_allclose(r.scores, [s for _, _, s in expected], rtol=0, atol=1e-12)
