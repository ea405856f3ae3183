"""ActivityNet detection protocol (``Evaluation/eval_detection.py`` of activitynet/ActivityNet).

Per class: predictions sorted by score (descending); per tIoU threshold each
prediction, in that order, takes the first still-unmatched ground truth of its video
when the ground truths are visited by decreasing tIoU, provided tIoU >= threshold;
otherwise it is a false positive. AP is the VOC-2011 interpolated area
(``interpolated_prec_rec``); mAP averages the classes present in the ground truth.

Vectorised: the greedy assignment only interacts within one (class, video) pair, so
it is solved per pair; a pair with one ground truth is solved for all pairs at once.

Toolkit quirks kept on purpose (they change published numbers):

* tIoU of two zero-length segments is 0/0 = NaN, and NaN passes the toolkit's
  ``tiou < thr`` test, so such a pair matches at every threshold; NaN also sorts
  first among the ground truths a prediction visits.
* Predictions on videos without ground truth of the class are false positives.

Ties: the toolkit sorts with ``argsort()[::-1]`` (numpy's default, unstable sort,
reversed). We use a stable sort reversed - among equal scores (and equal tIoUs) the
later entry comes first - which is what the toolkit gets whenever its sort happens to
be stable (e.g. numpy < 1.25 on fewer than 17 items), and is deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .ground_truth import AlignedPredictions, GroundTruth, align_predictions
from .results_format import Predictions

DEFAULT_TIOU = np.linspace(0.5, 0.95, 10)


@dataclass
class DetectionResult:
    """Per-class AP at each tIoU threshold, plus the bookkeeping a report needs."""

    protocol: str
    tiou: list[float]
    classes: list[str]
    ap: np.ndarray  # (len(tiou), len(classes))
    ignored: dict[str, int]
    unknown_videos_policy: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def mAP(self) -> np.ndarray:
        if not self.classes:
            return np.zeros(len(self.tiou))
        return self.ap.mean(axis=1)

    @property
    def average_mAP(self) -> float:
        return float(self.mAP.mean()) if len(self.tiou) else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "task": "detection",
            "tiou": [float(t) for t in self.tiou],
            "mAP": [float(m) for m in self.mAP],
            "average_mAP": self.average_mAP,
            "per_class": {c: [float(a) for a in self.ap[:, i]] for i, c in enumerate(self.classes)},
            "ignored": dict(self.ignored),
            "unknown_videos_policy": self.unknown_videos_policy,
            "counts": dict(self.counts),
        }


def stable_descending(values: np.ndarray) -> np.ndarray:
    """Indices sorting ``values`` descending; ties keep the later item first.

    Stable replacement for the toolkit's ``values.argsort()[::-1]``; NaN, which
    ``argsort`` puts last, comes first.
    """
    return np.argsort(values, kind="stable")[::-1]


def segment_iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """tIoU of every prediction (rows) with every ground truth (columns).

    Mirrors ``utils.segment_iou`` including 0/0 = NaN for two zero-length segments.
    """
    tt1 = np.maximum(pred[:, None, 0], gt[None, :, 0])
    tt2 = np.minimum(pred[:, None, 1], gt[None, :, 1])
    inter = (tt2 - tt1).clip(0)
    union = (pred[:, None, 1] - pred[:, None, 0]) + (gt[None, :, 1] - gt[None, :, 0]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def interpolated_prec_rec(prec: np.ndarray, rec: np.ndarray) -> float:
    """Interpolated AP, VOCdevkit 2011 (mirrors ``utils.interpolated_prec_rec``)."""
    mprec = np.hstack([[0], prec, [0]])
    mrec = np.hstack([[0], rec, [1]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]  # monotone precision envelope
    idx = np.where(mrec[1::] != mrec[0:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _match_pair(iou: np.ndarray, thresholds: np.ndarray, tp: np.ndarray, rows: np.ndarray) -> None:
    """Greedy matching inside one (class, video) pair with several ground truths.

    ``iou`` rows are the pair's predictions in global score order. For each threshold
    the next prediction that has any free eligible ground truth takes the eligible one
    it prefers (highest tIoU, NaN first, later index on ties); all others are false
    positives. At most one step per ground truth, so the loop is short.
    """
    n_pred, n_gt = iou.shape
    nan = np.isnan(iou)
    # preference key: NaN first, then tIoU, then the later ground truth (reversed stable sort)
    key = np.where(nan, np.inf, iou)
    for t, thr in enumerate(thresholds):
        eligible = nan | (iou >= thr)
        free = np.ones(n_gt, dtype=bool)
        start = 0
        while start < n_pred:
            hit = np.flatnonzero(eligible[start:, free].any(axis=1))
            if hit.size == 0:
                break
            p = start + int(hit[0])
            cand = np.where(eligible[p] & free, key[p], -np.inf)
            j = n_gt - 1 - int(np.argmax(cand[::-1]))  # max key, later index wins ties
            free[j] = False
            tp[t, rows[p]] = True
            if not free.any():
                break
            start = p + 1


def compute_average_precision_detection(
    gt_segments: np.ndarray, gt_videos: np.ndarray,
    pred_segments: np.ndarray, pred_videos: np.ndarray, pred_scores: np.ndarray,
    tiou_thresholds: np.ndarray = DEFAULT_TIOU,
) -> np.ndarray:
    """AP of one class at each threshold (mirrors ``compute_average_precision_detection``).

    ``*_videos`` are integer video ids; segments are ``(n, 2)`` arrays. Returns an
    array of ``len(tiou_thresholds)`` APs.
    """
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    n_thr = len(thresholds)
    ap = np.zeros(n_thr)
    if len(pred_scores) == 0:
        return ap
    npos = float(len(gt_segments))

    order = stable_descending(pred_scores)
    seg = pred_segments[order]
    vid = pred_videos[order]
    n_pred = len(order)
    tp = np.zeros((n_thr, n_pred), dtype=bool)

    # group predictions (rank order kept) and ground truths (file order kept) by video
    p_order = np.argsort(vid, kind="stable")
    p_vid = vid[p_order]
    g_order = np.argsort(gt_videos, kind="stable")
    g_vid = gt_videos[g_order]
    u_gt, g_start, g_count = np.unique(g_vid, return_index=True, return_counts=True)
    has_gt = np.isin(p_vid, u_gt)
    p_order, p_vid = p_order[has_gt], p_vid[has_gt]
    if len(p_order):
        u_p, p_start, p_count = np.unique(p_vid, return_index=True, return_counts=True)
        gpos = np.searchsorted(u_gt, u_p)
        n_g = g_count[gpos]

        # pairs with exactly one ground truth: first eligible prediction takes it
        single = np.repeat(n_g == 1, p_count)
        if single.any():
            rows = p_order[single]
            pair = np.repeat(np.arange(len(u_p)), p_count)[single]
            gidx = g_order[g_start[gpos[pair]]]
            iou = _paired_iou(seg[rows], gt_segments[gidx])  # each row against its pair's only GT
            eligible = np.isnan(iou)[None, :] | (iou[None, :] >= thresholds[:, None])
            for t in range(n_thr):
                cand = pair[eligible[t]]
                _, first = np.unique(cand, return_index=True)
                tp[t, rows[eligible[t]][first]] = True

        # pairs with several ground truths: short greedy loop per pair
        for k in np.flatnonzero(n_g > 1):
            rows = p_order[p_start[k]:p_start[k] + p_count[k]]
            gidx = g_order[g_start[gpos[k]]:g_start[gpos[k]] + n_g[k]]
            _match_pair(segment_iou_matrix(seg[rows], gt_segments[gidx]), thresholds, tp, rows)

    tp_cumsum = np.cumsum(tp, axis=1).astype(np.float64)
    fp_cumsum = np.cumsum(~tp, axis=1).astype(np.float64)
    recall = tp_cumsum / npos
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    for t in range(n_thr):
        ap[t] = interpolated_prec_rec(precision[t], recall[t])
    return ap


def _paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise tIoU of ``a[i]`` with ``b[i]``, same NaN rule as ``segment_iou``."""
    inter = (np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0])).clip(0)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / union


def _video_ids(gt: GroundTruth, preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids for the videos of ground truth and predictions (shared space)."""
    index: dict[str, int] = {}
    gt_ids = np.fromiter((index.setdefault(v, len(index)) for v in gt.inst_videos), np.int64, len(gt.inst_videos))
    pred_ids = np.fromiter((index.setdefault(v, len(index)) for v in preds.videos), np.int64, len(preds))
    return gt_ids, pred_ids


def evaluate_aligned(
    gt: GroundTruth, aligned: AlignedPredictions, tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
) -> DetectionResult:
    """ActivityNet mAP for predictions already aligned to ``gt`` (``ANETdetection.evaluate``)."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    preds = aligned.predictions
    gt_vid, pred_vid = _video_ids(gt, preds)
    gt_seg = np.stack([gt.inst_starts, gt.inst_ends], axis=1)
    pred_seg = np.stack([preds.starts, preds.ends], axis=1)
    class_lookup = {c: i for i, c in enumerate(gt.classes)}
    gt_class = np.fromiter((class_lookup[c] for c in gt.inst_labels), np.int64, len(gt))

    ap = np.zeros((len(thresholds), len(gt.classes)))
    gt_by_class = np.argsort(gt_class, kind="stable")
    gt_bounds = np.searchsorted(gt_class[gt_by_class], np.arange(len(gt.classes) + 1))
    pr_by_class = np.argsort(aligned.class_index, kind="stable")  # stable: file order within class
    pr_bounds = np.searchsorted(aligned.class_index[pr_by_class], np.arange(len(gt.classes) + 1))
    for c in range(len(gt.classes)):
        g = gt_by_class[gt_bounds[c]:gt_bounds[c + 1]]
        p = pr_by_class[pr_bounds[c]:pr_bounds[c + 1]]
        ap[:, c] = compute_average_precision_detection(
            gt_seg[g], gt_vid[g], pred_seg[p], pred_vid[p], preds.scores[p], thresholds,
        )
    return DetectionResult(
        protocol="activitynet",
        tiou=[float(t) for t in thresholds],
        classes=list(gt.classes),
        ap=ap,
        ignored=dict(aligned.ignored),
        unknown_videos_policy=aligned.unknown_videos_policy,
        counts={"predictions": len(preds), "ground_truth": len(gt), "videos": len(gt.videos)},
    )


def evaluate_detection(
    gt: GroundTruth, preds: Predictions, tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
    unknown_videos: str = "false_positive",
) -> DetectionResult:
    """Full ActivityNet detection evaluation of ``preds`` against ``gt`` (already subset-selected)."""
    aligned = align_predictions(gt, preds, use_labels=True, unknown_videos=unknown_videos)
    return evaluate_aligned(gt, aligned, tiou_thresholds)
