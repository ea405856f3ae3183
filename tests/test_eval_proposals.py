"""Proposal evaluation (AR@AN, AUC): a literal port of average_recall_vs_avg_nr_proposals,
hand-computed cases and the real ActivityNet-1.3 validation ground truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation import proposals
from engine.evaluation.ground_truth import ground_truth_from_annotations, load_ground_truth
from engine.evaluation.results_format import predictions_from_results


def _props(rows):
    out: dict[str, list[dict]] = {}
    for video, start, end, score in rows:
        out.setdefault(video, []).append({"label": "", "score": score, "segment": [start, end]})
    return predictions_from_results(out)


def _reference(gt, props, max_avg, thresholds):
    """Port of the toolkit function (pandas groupby replaced by list filters)."""
    thresholds = np.asarray(thresholds)
    video_lst = list(dict.fromkeys(g[0] for g in gt))
    if not max_avg:
        max_avg = float(len(props)) / len(video_lst)
    ratio = max_avg * float(len(video_lst)) / len(props)
    score_lst = []
    total = 0
    for v in video_lst:
        this_gt = np.array([[g[1], g[2]] for g in gt if g[0] == v])
        mine = [p for p in props if p[0] == v]
        if not mine:
            score_lst.append(np.zeros((len(this_gt), 1)))
            continue
        order = np.argsort([p[3] for p in mine], kind="stable")[::-1]
        this_props = np.array([[mine[i][1], mine[i][2]] for i in order])
        nr = min(int(this_props.shape[0] * ratio), this_props.shape[0])
        total += nr
        this_props = this_props[:nr]
        tiou = np.empty((len(this_gt), nr))
        for i in range(nr):  # wrapper_segment_iou
            tt1 = np.maximum(this_props[i, 0], this_gt[:, 0])
            tt2 = np.minimum(this_props[i, 1], this_gt[:, 1])
            inter = (tt2 - tt1).clip(0)
            union = (this_gt[:, 1] - this_gt[:, 0]) + (this_props[i, 1] - this_props[i, 0]) - inter
            with np.errstate(invalid="ignore", divide="ignore"):
                tiou[:, i] = inter / union
        score_lst.append(tiou)
    if total == 0:
        return None  # the toolkit divides by zero here
    pcn_lst = np.arange(1, 101) / 100.0 * (max_avg * float(len(video_lst)) / total)
    matches = np.empty((len(video_lst), 100))
    positives = np.empty(len(video_lst))
    recall = np.empty((len(thresholds), 100))
    for ridx, t in enumerate(thresholds):
        for i, score in enumerate(score_lst):
            positives[i] = score.shape[0]
            with np.errstate(invalid="ignore"):
                tp = score >= t
            pcn = np.minimum((score.shape[1] * pcn_lst).astype(int), score.shape[1])
            for j, n in enumerate(pcn):
                matches[i, j] = np.count_nonzero(tp[:, :n].sum(axis=1))
        recall[ridx] = matches.sum(axis=0) / positives.sum()
    avg = recall.mean(axis=0)
    ppv = pcn_lst * (float(total) / len(video_lst))
    return recall, avg, ppv, float(np.trapezoid(avg, ppv) / ppv[-1])


_seg = st.tuples(st.integers(0, 12), st.integers(0, 6)).map(lambda t: (float(t[0]), float(t[0] + t[1])))


@settings(max_examples=80, deadline=None)
@given(
    gt=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), _seg), min_size=1, max_size=8),
    props=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v4"]), _seg, st.integers(0, 4)), min_size=1,
                   max_size=30),
    max_avg=st.sampled_from([None, 1, 3, 100]),
)
def test_matches_literal_toolkit_port(gt, props, max_avg):
    gt_rows = [(v, s, e, "a") for v, (s, e) in gt]
    prop_rows = sorted([(v, s, e, float(c)) for v, (s, e), c in props], key=lambda p: p[0])
    thresholds = [0.1, 0.5, 0.9]
    want = _reference(gt_rows, prop_rows, max_avg, thresholds)
    r = proposals.evaluate_proposals(ground_truth_from_annotations(gt_rows), _props(prop_rows), thresholds, max_avg)
    if want is None:  # no proposal kept: the toolkit crashes, we report zero recall
        assert r.avg_recall.max() == 0.0 and r.auc == 0.0
        return
    r = proposals.evaluate_proposals(ground_truth_from_annotations(gt_rows), _props(prop_rows), thresholds, max_avg)
    np.testing.assert_allclose(r.recall, want[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.avg_recall, want[1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.proposals_per_video, want[2], rtol=0, atol=1e-12)
    assert r.auc == pytest.approx(want[3], abs=1e-12)


def test_hand_computed_recall_curve():
    # one video, 2 GT, 2 proposals, max 2 per video: the best-scoring proposal finds g2,
    # the second finds g1. AN = 0.02, 0.04, ..., 2: recall 0 until AN 1, 1/2 until AN 2, then 1
    gt = ground_truth_from_annotations([("v", 0, 10, "a"), ("v", 20, 30, "a")])
    r = proposals.evaluate_proposals(gt, _props([("v", 0, 10, 0.1), ("v", 20, 30, 0.9)]), [0.5], 2)
    assert r.proposals_per_video[49] == pytest.approx(1.0) and r.proposals_per_video[-1] == pytest.approx(2.0)
    assert r.avg_recall[48] == 0.0 and r.avg_recall[49] == 0.5 and r.avg_recall[98] == 0.5
    assert r.avg_recall[99] == 1.0
    # trapezoids: ramp 0 -> 0.5 over AN 0.98..1, flat 0.5 over 1..1.98, ramp 0.5 -> 1; over AN[-1] = 2
    assert r.auc == pytest.approx((0.5 * 0.98 + 0.25 * 0.02 + 0.75 * 0.02) / 2.0)


def test_proposals_on_unknown_videos_count_in_the_ratio():
    gt = ground_truth_from_annotations([("v", 0, 10, "a")])
    props = _props([("v", 0, 10, 0.5), ("ghost", 0, 10, 0.9)])
    kit = proposals.evaluate_proposals(gt, props, [0.5], 1)
    assert kit.ignored["unknown_videos"] == 1
    # ratio = 1 * 1 / 2 -> int(1 * 0.5) = 0 proposals kept for "v": nothing recalled
    assert kit.avg_recall.max() == 0.0
    dropped = proposals.evaluate_proposals(gt, props, [0.5], 1, unknown_videos="drop")
    assert dropped.avg_recall[-1] == 1.0


def test_anet13_ground_truth_as_proposals(shared_data):
    """Recall is 1 except for the 3 zero-length segments, whose tIoU is NaN (never >= thr)."""
    path = shared_data / "anet13" / "val_gt.json"
    gt = load_ground_truth(path, "validation")
    db = json.loads(path.read_text())["database"]
    results = {v: [{"score": 1.0, "segment": a["segment"]} for a in info["annotations"]] for v, info in db.items()}
    r = proposals.evaluate_proposals(gt, predictions_from_results(results))
    out = r.to_dict()
    assert set(out["AR@AN"]) >= {"1", "5", "10", "100"}
    assert out["AR@AN"]["100"] == pytest.approx(7651 / 7654, abs=1e-12)
    assert r.counts["retrieved"] == 7654  # fewer than 100 per video: all kept
    assert 0.0 < out["AUC"] < 1.0
