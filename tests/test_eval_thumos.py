"""THUMOS-14 protocol: conformance with the official MATLAB kit's figures, hand-computed
cases, and a literal port of TH14eventdetpr on random inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.evaluation import thumos
from engine.evaluation.ground_truth import ground_truth_from_annotations, load_ground_truth
from engine.evaluation.results_format import Predictions, predictions_from_results, read_predictions

# EXPECTED.md: official TH14evalDet.m results for the TURN/S-CNN runs, subset test
EXPECTED = [
    ("iou0.3.txt", 0.3, 0.441267),
    ("iou0.5.txt", 0.3, 0.380954),
    ("iou0.5.txt", 0.5, 0.255563),
    ("iou0.5.txt", 0.7, 0.065463),
]


@pytest.fixture(scope="module")
def thumos_gt(shared_data):
    return load_ground_truth(shared_data / "thumos14" / "annotations_test", "test")


@pytest.mark.parametrize("name,tiou,expected", EXPECTED)
def test_reproduces_official_matlab_figures(shared_data, thumos_gt, name, tiou, expected):
    preds = read_predictions(shared_data / "thumos14" / "turn_flow16_scnn" / name)
    r = thumos.evaluate_detection(thumos_gt, preds, [tiou])
    assert r.mAP[0] == pytest.approx(expected, abs=1e-4)
    assert r.ignored == {"unknown_classes": 0, "unknown_videos": 0, "other_subset_videos": 0}


def test_real_ground_truth_shape(thumos_gt):
    assert len(thumos_gt.classes) == 20
    assert len(thumos_gt) == 3358  # 3457 annotation lines minus 99 Ambiguous
    assert len(thumos_gt.amb_starts) == 99
    assert "video_test_0001292" in thumos_gt.videos  # only Ambiguous segments: known, no class GT
    assert thumos_gt.class_ids[7] == "BaseballPitch" and thumos_gt.class_ids[97] == "VolleyballSpiking"


# --------------------------------------------------------------------------- hand-computed cases


def _result(gt_rows, pred_rows, tiou=(0.5,), **kw):
    gt = ground_truth_from_annotations(gt_rows)
    out: dict[str, list[dict]] = {}
    for video, start, end, label, score in pred_rows:
        out.setdefault(video, []).append({"label": label, "score": score, "segment": [start, end]})
    return thumos.evaluate_detection(gt, predictions_from_results(out), tiou, **kw)


def test_ap_is_sum_of_precision_at_true_positives():
    # ranks TP, FP, TP over 3 GT: (1 + 2/3) / 3, no interpolation
    gt = [("v", 0, 10, "a"), ("v", 20, 30, "a"), ("v", 40, 50, "a")]
    preds = [("v", 0, 10, "a", 0.9), ("v", 60, 70, "a", 0.8), ("v", 20, 30, "a", 0.7)]
    assert _result(gt, preds).ap[0, 0] == pytest.approx((1 + 2 / 3) / 3)


def test_matching_is_driven_by_ground_truth():
    # the GT takes the free detection it overlaps most (d2, 1.0) although d1 (0.6) scores
    # higher; d1 becomes a FP ranked first: AP = (1/2) / 1. Detection-driven greedy gives 1.
    gt = [("v", 0, 10, "a")]
    preds = [("v", 0, 6, "a", 0.9), ("v", 0, 10, "a", 0.5)]
    assert _result(gt, preds).ap[0, 0] == pytest.approx(0.5)


def test_threshold_is_strict():
    # overlap exactly 0.5 is not "> 0.5"
    r = _result([("v", 0, 10, "a")], [("v", 0, 5, "a", 1.0)], (0.49, 0.5))
    assert r.ap[:, 0].tolist() == [1.0, 0.0]


def test_ambiguous_segments_forgive_false_positives():
    gt = [("v", 0, 10, "a"), ("v", 60, 70, "a"), ("v", 20, 30, "Ambiguous")]
    preds = [
        ("v", 0, 10, "a", 0.9),  # TP
        ("v", 25, 35, "a", 0.8),  # unmatched, intersects Ambiguous: dropped
        ("v", 40, 50, "a", 0.7),  # FP
        ("v", 30, 40, "a", 0.65),  # only touches Ambiguous (zero intersection): FP
        ("v", 60, 70, "a", 0.6),  # TP
    ]
    # kept ranks TP, FP, FP, TP -> (1 + 2/4) / 2
    assert _result(gt, preds).ap[0, 0] == pytest.approx(0.75)


def test_ties_follow_video_name_then_file_order():
    gt = [("v1", 0, 10, "a")]
    hit, miss_same, miss_other = ("v1", 0, 10, "a", 0.5), ("v1", 50, 60, "a", 0.5), ("v0", 0, 10, "a", 0.5)
    # same video: file order decides (MATLAB's stable sort)
    assert _result(gt, [hit, miss_same]).ap[0, 0] == pytest.approx(1.0)
    assert _result(gt, [miss_same, hit]).ap[0, 0] == pytest.approx(0.5)
    # different videos: sorted video names decide ("v0" < "v1"), whatever the file order
    assert _result(gt, [hit, miss_other]).ap[0, 0] == pytest.approx(0.5)
    assert _result(gt, [miss_other, hit]).ap[0, 0] == pytest.approx(0.5)


def test_unknown_videos_score_as_false_positives_unless_dropped():
    gt = [("v", 0, 10, "a")]
    preds = [("ghost", 0, 10, "a", 0.9), ("v", 0, 10, "a", 0.5)]
    kit = _result(gt, preds)
    assert kit.ignored["unknown_videos"] == 1 and kit.ap[0, 0] == pytest.approx(0.5)
    assert _result(gt, preds, unknown_videos="drop").ap[0, 0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- reference port


def _reference_eventdetpr(gt, amb, dets, thr):
    """Literal port of TH14eventdetpr + prap (2015-09-30). gt/amb: (video, s, e);
    dets: (video, s, e, conf), all of one class."""
    def ov(a, b):
        bu = max(a[1], b[1]) - min(a[0], b[0])
        iw = min(a[1], b[1]) - max(a[0], b[0])
        return iw / bu if iw > 0 else 0.0

    npos = len(gt)
    videonames = sorted({g[0] for g in gt} | {a[0] for a in amb} | {d[0] for d in dets})
    unsort_conf, unsort_flag = [], []
    for v in videonames:
        g = [x for x in gt if x[0] == v]
        a = [x for x in amb if x[0] == v]
        det = [x for x in dets if x[0] == v]
        if not det:
            continue
        det = [det[i] for i in np.argsort([-d[3] for d in det], kind="stable")]
        indfree = np.ones(len(det))
        indamb = np.zeros(len(det))
        for gk in g:
            ind = np.flatnonzero(indfree)
            if len(ind) == 0:
                continue
            vals = [ov(gk[1:3], det[i][1:3]) for i in ind]
            im = int(np.argmax(vals))
            if vals[im] > thr:
                indfree[ind[im]] = 0
        if a:
            indamb = np.array([sum(ov(x[1:3], d[1:3]) for x in a) for d in det])
        for i in range(len(det)):
            if indfree[i] == 0:
                unsort_conf.append(det[i][3]); unsort_flag.append(1)
            elif indamb[i] == 0:
                unsort_conf.append(det[i][3]); unsort_flag.append(2)
    if not unsort_conf:
        return 0.0
    order = np.argsort(-np.array(unsort_conf), kind="stable")
    flags = np.array(unsort_flag)[order]
    tp = np.cumsum(flags == 1)
    fp = np.cumsum(flags == 2)
    prec = tp / (tp + fp)
    return float(sum(prec[i] for i in range(len(prec)) if flags[i] == 1) / npos)


_seg = st.tuples(st.integers(0, 12), st.integers(0, 6)).map(lambda t: (float(t[0]), float(t[0] + t[1])))


@settings(max_examples=120, deadline=None)
@given(
    gt=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v3"]), _seg), min_size=1, max_size=8),
    amb=st.lists(st.tuples(st.sampled_from(["v1", "v2"]), _seg), max_size=2),
    dets=st.lists(st.tuples(st.sampled_from(["v1", "v2", "v4"]), _seg, st.integers(0, 4)), max_size=25),
)
def test_matches_literal_kit_port(gt, amb, dets):
    gt_rows = [(v, s, e, "a") for v, (s, e) in gt] + [(v, s, e, "Ambiguous") for v, (s, e) in amb]
    dets = sorted(dets, key=lambda d: d[0])  # file order = grouped by video, as the JSON is
    pred_rows = [(v, s, e, "a", float(c)) for v, (s, e), c in dets]
    thresholds = [0.1, 0.3, 0.5, 0.7]
    got = _result(gt_rows, pred_rows, thresholds).ap[:, 0]
    want = [
        _reference_eventdetpr([(v, s, e) for v, (s, e) in gt], [(v, s, e) for v, (s, e) in amb],
                              [(v, s, e, float(c)) for v, (s, e), c in dets], thr)
        for thr in thresholds
    ]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_real_files_match_literal_port_per_class(shared_data, thumos_gt):
    preds = read_predictions(shared_data / "thumos14" / "turn_flow16_scnn" / "iou0.5.txt")
    r = thumos.evaluate_detection(thumos_gt, preds, [0.5])
    names = [thumos_gt.class_ids[int(i)] for i in preds.labels]
    amb = list(zip(thumos_gt.amb_videos, thumos_gt.amb_starts, thumos_gt.amb_ends))
    for c in ("BaseballPitch", "Billiards", "SoccerPenalty"):  # a few classes keep the port quick
        gt = [(v, s, e) for v, s, e, lab in zip(thumos_gt.inst_videos, thumos_gt.inst_starts,
                                                 thumos_gt.inst_ends, thumos_gt.inst_labels) if lab == c]
        dets = [(v, s, e, sc) for v, s, e, sc, n in zip(preds.videos, preds.starts, preds.ends,
                                                         preds.scores, names) if n == c]
        assert r.ap[0, thumos_gt.classes.index(c)] == pytest.approx(_reference_eventdetpr(gt, amb, dets, 0.5),
                                                                     abs=1e-12)


# --------------------------------------------------------------------------- ActivityNet GT


def test_anet13_ground_truth_against_itself(shared_data):
    """With the THUMOS protocol every class scores 1 except those holding a zero-length
    segment: the kit's overlap is 0 unless the intersection is positive, so such a GT can
    never be matched and its copy is a false positive."""
    path = shared_data / "anet13" / "val_gt.json"
    gt = load_ground_truth(path)
    db = json.loads(path.read_text())["database"]
    results = {v: [{"label": a["label"], "score": 1.0, "segment": a["segment"]} for a in info["annotations"]]
               for v, info in db.items()}
    r = thumos.evaluate_detection(gt, predictions_from_results(results), [0.3, 0.5, 0.7])
    zero_len = {a["label"] for info in db.values() for a in info["annotations"]
                if a["segment"][0] == a["segment"][1]}
    assert len(zero_len) == 3
    for i, c in enumerate(r.classes):
        if c in zero_len:
            assert np.all(r.ap[:, i] < 1.0)
        else:
            np.testing.assert_allclose(r.ap[:, i], 1.0, rtol=0, atol=1e-12)


def test_thumos_text_predictions_on_json_gt_use_sorted_label_ids(tmp_path):
    gt = ground_truth_from_annotations([("v", 0, 10, "b"), ("v", 20, 30, "a")])
    assert gt.class_ids == {1: "a", 2: "b"}
    path = tmp_path / "p.txt"
    path.write_text("v 0 10 2 0.9\nv 20 30 1 0.8\n")
    r = thumos.evaluate_detection(gt, read_predictions(path), [0.5])
    assert r.ap[0].tolist() == [1.0, 1.0]


def test_mpeg_suffix_is_stripped_like_the_kit(tmp_path):
    gt = ground_truth_from_annotations([("video_test_1", 0, 10, "a")])
    path = tmp_path / "p.txt"
    path.write_text("video_test_1.mpeg 0 10 1 0.9\n")
    preds = read_predictions(path)
    assert isinstance(preds, Predictions)
    r = thumos.evaluate_detection(gt, preds, [0.5])
    assert r.ap[0, 0] == 1.0 and r.ignored["unknown_videos"] == 0
