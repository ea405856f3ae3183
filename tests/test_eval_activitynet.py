"""ActivityNet detection protocol: hand-computed cases, a literal port of the toolkit loop,
and the real ActivityNet-1.3 validation ground truth scored against itself."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation import activitynet
from engine.evaluation.ground_truth import ground_truth_from_annotations, load_ground_truth
from engine.evaluation.results_format import predictions_from_results


def _preds(rows):
    out: dict[str, list[dict]] = {}
    for video, start, end, label, score in rows:
        out.setdefault(video, []).append({"label": label, "score": score, "segment": [start, end]})
    return predictions_from_results(out)


def _ap(gt_rows, pred_rows, tiou=(0.5,)):
    gt = ground_truth_from_annotations(gt_rows)
    return activitynet.evaluate_detection(gt, _preds(pred_rows), tiou)


# --------------------------------------------------------------------------- reference port


def _reference_ap(gt, preds, thresholds):
    """Line-by-line port of ``compute_average_precision_detection`` + ``interpolated_prec_rec``
    (pandas replaced by lists; argsort()[::-1] replaced by the stable reversed sort)."""
    thresholds = np.asarray(thresholds)
    ap = np.zeros(len(thresholds))
    if not preds:
        return ap
    npos = float(len(gt))
    lock_gt = np.ones((len(thresholds), len(gt))) * -1
    scores = np.array([p[3] for p in preds])
    sort_idx = np.argsort(scores, kind="stable")[::-1]
    preds = [preds[i] for i in sort_idx]
    tp = np.zeros((len(thresholds), len(preds)))
    fp = np.zeros((len(thresholds), len(preds)))
    for idx, (vid, s, e, _) in enumerate(preds):
        this_gt = [(j, g) for j, g in enumerate(gt) if g[0] == vid]
        if not this_gt:
            fp[:, idx] = 1
            continue
        segs = np.array([[g[1], g[2]] for _, g in this_gt], dtype=float)
        tt1 = np.maximum(s, segs[:, 0])
        tt2 = np.minimum(e, segs[:, 1])
        inter = (tt2 - tt1).clip(0)
        union = (segs[:, 1] - segs[:, 0]) + (e - s) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            tiou_arr = inter.astype(float) / union
        tiou_sorted_idx = np.argsort(tiou_arr, kind="stable")[::-1]
        for tidx, thr in enumerate(thresholds):
            for jdx in tiou_sorted_idx:
                if tiou_arr[jdx] < thr:
                    fp[tidx, idx] = 1
                    break
                if lock_gt[tidx, this_gt[jdx][0]] >= 0:
                    continue
                tp[tidx, idx] = 1
                lock_gt[tidx, this_gt[jdx][0]] = idx
                break
            if fp[tidx, idx] == 0 and tp[tidx, idx] == 0:
                fp[tidx, idx] = 1
    tp_c = np.cumsum(tp, axis=1)
    fp_c = np.cumsum(fp, axis=1)
    rec = tp_c / npos
    prec = tp_c / (tp_c + fp_c)
    for t in range(len(thresholds)):
        mprec = np.hstack([[0], prec[t], [0]])
        mrec = np.hstack([[0], rec[t], [1]])
        for i in range(len(mprec) - 1)[::-1]:
            mprec[i] = max(mprec[i], mprec[i + 1])
        idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
        ap[t] = np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx])
    return ap


_seg = st.tuples(st.integers(0, 12), st.integers(0, 6)).map(lambda t: (float(t[0]), float(t[0] + t[1])))


@settings(max_examples=120, deadline=None)
@given(
    gt=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), _seg), min_size=1, max_size=8),
    preds=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v4"]), _seg, st.integers(0, 4)), max_size=25),
)
def test_matches_literal_toolkit_port(gt, preds):
    # coarse integer segments and scores make tIoU ties, score ties and 0/0 tIoUs common
    gt_rows = [(v, s, e, "a") for v, (s, e) in gt]
    pred_rows = [(v, s, e, "a", float(sc)) for v, (s, e), sc in preds]
    # a results JSON groups predictions by video; the toolkit sees them in that order
    pred_rows.sort(key=lambda r: r[0])
    thresholds = [0.1, 0.3, 0.5, 0.7, 0.95]
    got = _ap(gt_rows, pred_rows, thresholds).ap[:, 0]
    want = _reference_ap([(v, s, e) for v, s, e, _ in gt_rows], [(v, s, e, sc) for v, s, e, _, sc in pred_rows],
                         thresholds)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- hand-computed cases


def test_single_hit_and_false_positive():
    # ranks: FP(0.9), TP(0.8) -> precision 1/2 at recall 1 -> AP 0.5
    r = _ap([("v", 0, 10, "a")], [("v", 20, 30, "a", 0.9), ("v", 0, 10, "a", 0.8)])
    assert r.ap[0, 0] == pytest.approx(0.5)


def test_score_ties_put_the_later_prediction_first():
    # equal scores: the toolkit's argsort()[::-1] visits the later one first
    gt = [("v", 0, 10, "a")]
    hit, miss = ("v", 0, 10, "a", 0.5), ("v", 50, 60, "a", 0.5)
    assert _ap(gt, [hit, miss]).ap[0, 0] == pytest.approx(0.5)  # miss ranked first
    assert _ap(gt, [miss, hit]).ap[0, 0] == pytest.approx(1.0)  # hit ranked first


def test_tiou_ties_take_the_later_ground_truth():
    # p1 overlaps g1 and g2 equally (5/15); it takes g2, so p2 (only g2) is a FP: AP 0.5
    gt = [("v", 0, 10, "a"), ("v", 10, 20, "a")]
    preds = [("v", 5, 15, "a", 0.9), ("v", 10, 20, "a", 0.8)]
    assert _ap(gt, preds, (0.3,)).ap[0, 0] == pytest.approx(0.5)


def test_threshold_is_inclusive():
    # tIoU exactly 0.5 passes ">= 0.5" (the THUMOS kit's ">" would not)
    assert _ap([("v", 0, 10, "a")], [("v", 0, 5, "a", 1.0)], (0.5, 0.51)).ap[:, 0].tolist() == [1.0, 0.0]


def test_zero_length_nan_quirk():
    # two zero-length segments: tIoU 0/0 = NaN, which the toolkit's "< thr" lets through
    r = _ap([("v", 5, 5, "a")], [("v", 7, 7, "a", 1.0)], (0.5, 0.95))
    assert r.ap[:, 0].tolist() == [1.0, 1.0]


def test_interpolation_uses_precision_envelope():
    # ranks TP, FP, TP over 2 GT: precisions 1, 1/2, 2/3 -> AP = 0.5*1 + 0.5*2/3
    gt = [("v", 0, 10, "a"), ("v", 20, 30, "a")]
    preds = [("v", 0, 10, "a", 0.9), ("v", 40, 50, "a", 0.8), ("v", 20, 30, "a", 0.7)]
    assert _ap(gt, preds).ap[0, 0] == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_classes_without_predictions_count_as_zero_and_unknown_labels_are_counted():
    gt = [("v", 0, 10, "a"), ("v", 0, 10, "b")]
    r = _ap(gt, [("v", 0, 10, "a", 1.0), ("v", 0, 10, "zzz", 1.0)])
    assert r.classes == ["a", "b"]
    assert r.ap[0].tolist() == [1.0, 0.0]
    assert r.mAP[0] == pytest.approx(0.5)
    assert r.ignored["unknown_classes"] == 1


def test_unknown_videos_are_false_positives_by_default_and_counted():
    gt = ground_truth_from_annotations([("v", 0, 10, "a")])
    preds = _preds([("ghost", 0, 10, "a", 0.9), ("v", 0, 10, "a", 0.8)])
    scored = activitynet.evaluate_detection(gt, preds, (0.5,))
    dropped = activitynet.evaluate_detection(gt, preds, (0.5,), unknown_videos="drop")
    assert scored.ignored["unknown_videos"] == dropped.ignored["unknown_videos"] == 1
    assert scored.ap[0, 0] == pytest.approx(0.5)
    assert dropped.ap[0, 0] == pytest.approx(1.0)


def test_subset_selection_counts_other_subset_predictions():
    gt = ground_truth_from_annotations(
        [("v", 0, 10, "a"), ("t", 0, 10, "a"), ("t", 0, 10, "b")], subsets={"v": "validation", "t": "training"},
    ).select("validation")
    assert gt.classes == ["a"] and list(gt.videos) == ["v"]
    r = activitynet.evaluate_detection(gt, _preds([("t", 0, 10, "a", 0.9), ("v", 0, 10, "a", 0.1)]), (0.5,))
    assert r.ignored["other_subset_videos"] == 1
    assert r.ap[0, 0] == pytest.approx(0.5)


# --------------------------------------------------------------------------- real data


def _gt_as_results(path):
    db = json.loads(path.read_text())["database"]
    results = {
        v: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in info["annotations"]]
        for v, info in db.items()
    }
    return predictions_from_results(results)


def test_anet13_val_ground_truth_scores_one(shared_data):
    path = shared_data / "anet13" / "val_gt.json"
    gt = load_ground_truth(path, "validation")
    assert len(gt.classes) == 200 and len(gt) == 7654
    r = activitynet.evaluate_detection(gt, _gt_as_results(path))
    assert r.ap.shape == (10, 200)
    # exactly 1 up to the float sum of recall steps (3 zero-length GT match through the NaN quirk)
    np.testing.assert_allclose(r.ap, 1.0, rtol=0, atol=1e-12)
    assert r.average_mAP == pytest.approx(1.0, abs=1e-12)
    assert r.ignored == {"unknown_classes": 0, "unknown_videos": 0, "other_subset_videos": 0}


def test_anet13_shifted_predictions_match_reference(shared_data):
    # a realistic mix (jittered GT, duplicates, false alarms) on 40 videos, against the port
    rng = np.random.default_rng(0)
    path = shared_data / "anet13" / "val_gt.json"
    db = json.loads(path.read_text())["database"]
    videos = list(db)[:40]
    all_rows = [(v, *a["segment"], a["label"]) for v in videos for a in db[v]["annotations"]]
    label = all_rows[0][3]
    gt_rows = [r for r in all_rows if r[3] == label]
    all_rows.sort(key=lambda r: r[0])  # grouped by video, as a results JSON is
    pred_rows = []  # jittered copies of every segment, all claiming `label`: TPs, FPs, ties
    for v, s, e, _ in all_rows:
        for _ in range(5):
            d = (e - s) * rng.uniform(-0.3, 0.3, 2)
            pred_rows.append((v, s + d[0], max(s + d[0], e + d[1]), label, float(rng.integers(0, 6))))
    thresholds = activitynet.DEFAULT_TIOU
    got = _ap(gt_rows, pred_rows, thresholds).ap[:, 0]
    want = _reference_ap([r[:3] for r in gt_rows], [(v, s, e, sc) for v, s, e, _, sc in pred_rows], thresholds)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0 < got[0] < 1
