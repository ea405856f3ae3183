"""THUMOS-14 detection protocol, as ``TH14evalDet.m`` / ``TH14eventdetpr`` (evalkit 2015-09-30).

Per class and per video (videos in sorted name order), detections sorted by
confidence (stable). The matching is driven by the *ground truth*: each ground-truth
segment, in annotation order, takes the still-free detection with the highest
overlap (first one on ties), if that overlap is strictly greater than the threshold.
Overlap is ``intervalsingleoverlapvalseconds``: intersection over the hull, 0 unless
the intersection is positive. A detection left unmatched is a false positive unless
it intersects (positive intersection) any ``Ambiguous`` segment of its video, in
which case it is dropped from the list. All kept detections of the class are then
sorted by confidence (stable: ties keep video-name order, then within-video order),
and AP is the kit's ``prap``: the sum of the precision at every true positive divided
by the number of ground-truth segments (no interpolation).

Detections on videos without ground truth are false positives, as in the kit.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .activitynet import DetectionResult
from .ground_truth import AlignedPredictions, GroundTruth, align_predictions
from .results_format import Predictions

DEFAULT_TIOU = np.array([0.3, 0.4, 0.5, 0.6, 0.7])


def interval_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap of every row of ``a`` with every row of ``b`` (``intervaloverlapvalseconds``).

    Intersection over the hull when the intersection is positive, else 0.
    """
    lo = np.maximum(a[:, None, 0], b[None, :, 0])
    hi = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = hi - lo
    hull = np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 0], b[None, :, 0])
    out = np.zeros(inter.shape)
    pos = inter > 0
    out[pos] = inter[pos] / hull[pos]
    return out


def prap(is_tp: np.ndarray, npos: int) -> float:
    """AP as the kit's ``prap``: sum of precision at each true positive over ``npos``."""
    tp = np.cumsum(is_tp)
    prec = tp / np.arange(1, len(is_tp) + 1)
    return float(prec[is_tp].sum() / npos)


def _match_video(gt_seg: np.ndarray, det_seg: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """True-positive mask ``(len(thresholds), n_det)`` for one class in one video.

    ``det_seg`` is in confidence order. Mirrors the ``for k=1:size(ov,1)`` loop of
    ``TH14eventdetpr``, for all thresholds at once.
    """
    n_thr, n_det = len(thresholds), len(det_seg)
    taken = np.zeros((n_thr, n_det), dtype=bool)
    if len(gt_seg) == 0 or n_det == 0:
        return taken
    ov = interval_overlap(gt_seg, det_seg)
    rows = np.arange(n_thr)
    for k in range(len(gt_seg)):
        vals = np.where(taken, -np.inf, ov[k][None, :])
        best = np.argmax(vals, axis=1)  # first maximum, as MATLAB's max
        hit = vals[rows, best] > thresholds
        taken[rows[hit], best[hit]] = True
    return taken


def evaluate_aligned(
    gt: GroundTruth, aligned: AlignedPredictions, tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
) -> DetectionResult:
    """THUMOS-14 mAP for predictions already aligned to ``gt`` (``TH14evalDet``)."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    n_thr = len(thresholds)
    preds = aligned.predictions
    n_classes = len(gt.classes)
    ap = np.zeros((n_thr, n_classes))

    # the kit walks unique(gt videos, det videos): sorted names
    names = sorted(set(gt.inst_videos.tolist()) | set(gt.amb_videos.tolist()) | set(preds.videos.tolist()))
    rank = {v: i for i, v in enumerate(names)}
    det_vid = np.fromiter((rank[v] for v in preds.videos), np.int64, len(preds))
    gt_vid = np.fromiter((rank[v] for v in gt.inst_videos), np.int64, len(gt))
    amb_vid = np.fromiter((rank[v] for v in gt.amb_videos), np.int64, len(gt.amb_videos))
    class_lookup = {c: i for i, c in enumerate(gt.classes)}
    gt_class = np.fromiter((class_lookup[c] for c in gt.inst_labels), np.int64, len(gt))
    det_seg = np.stack([preds.starts, preds.ends], axis=1)
    gt_seg = np.stack([gt.inst_starts, gt.inst_ends], axis=1)
    amb_seg = np.stack([gt.amb_starts, gt.amb_ends], axis=1)
    file_idx = np.arange(len(preds))

    # kit's final order: confidence desc, then video name, then within-video order
    # (confidence desc, file order); equivalent to one lexsort
    order = np.lexsort((file_idx, det_vid, -preds.scores))

    for c in range(n_classes):
        d = order[aligned.class_index[order] == c]  # this class, in final order
        npos = int((gt_class == c).sum())
        if len(d) == 0:
            continue
        flags_tp = np.zeros((n_thr, len(d)), dtype=bool)
        is_amb = np.zeros(len(d), dtype=bool)
        # per video: detections of the video in confidence order = their order in d
        by_vid = np.argsort(det_vid[d], kind="stable")
        vids, starts, counts = np.unique(det_vid[d][by_vid], return_index=True, return_counts=True)
        g_c = np.flatnonzero(gt_class == c)
        for v, s, n in zip(vids.tolist(), starts.tolist(), counts.tolist()):
            pos = by_vid[s:s + n]  # positions in d, confidence order
            g = g_c[gt_vid[g_c] == v]  # annotation order
            if len(g):
                flags_tp[:, pos] = _match_video(gt_seg[g], det_seg[d[pos]], thresholds)
            a = amb_vid == v
            if a.any():
                is_amb[pos] = (interval_overlap(amb_seg[a], det_seg[d[pos]]) > 0).any(axis=0)
        for t in range(n_thr):
            kept = flags_tp[t] | ~is_amb  # unmatched detections on Ambiguous are dropped
            ap[t, c] = prap(flags_tp[t][kept], npos)

    return DetectionResult(
        protocol="thumos",
        tiou=[float(t) for t in thresholds],
        classes=list(gt.classes),
        ap=ap,
        ignored=dict(aligned.ignored),
        unknown_videos_policy=aligned.unknown_videos_policy,
        counts={"predictions": len(preds), "ground_truth": len(gt), "videos": len(gt.videos)},
    )


def strip_mpeg(preds: Predictions) -> Predictions:
    """The kit removes ``.mpeg`` from detection video names (``regexprep``)."""
    videos = np.empty(len(preds), dtype=object)
    videos[:] = [v.replace(".mpeg", "") for v in preds.videos]
    return Predictions(preds.source, videos, preds.starts, preds.ends, preds.scores,
                       preds.labels, preds.labels_are_ids, preds.lines)


def evaluate_detection(
    gt: GroundTruth, preds: Predictions, tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
    unknown_videos: str = "false_positive",
) -> DetectionResult:
    """Full THUMOS-14 detection evaluation of ``preds`` against ``gt`` (already subset-selected)."""
    aligned = align_predictions(gt, strip_mpeg(preds), use_labels=True, unknown_videos=unknown_videos)
    return evaluate_aligned(gt, aligned, tiou_thresholds)
