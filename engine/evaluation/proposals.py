"""Proposal evaluation: AR@AN and AUC (``Evaluation/eval_proposal.py`` of activitynet/ActivityNet).

Mirrors ``average_recall_vs_avg_nr_proposals`` with ``max_avg_nr_proposals=100`` (the
default of ``get_proposal_performance.py``): each video keeps its best-scoring
``int(n_video * ratio)`` proposals, ``ratio = max_avg * n_gt_videos / n_proposals``
(all proposals in the file count, as in the toolkit); recall at 100 fractions of those
proposals; AR averages recall over tIoU thresholds; AUC is
``trapz(AR, AN) / AN[-1]`` (the toolkit prints it times 100; we report fractions).

Quirks kept: only videos with at least one ground-truth instance count; a zero-length
ground truth is never recalled (its tIoU is NaN and ``NaN >= thr`` is false); a video
without proposals is a single zero-tIoU proposal. Labels are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .activitynet import segment_iou_matrix, stable_descending
from .ground_truth import GroundTruth, align_predictions
from .results_format import EvaluationInputError, Predictions

DEFAULT_TIOU = np.linspace(0.5, 0.95, 10)
REPORTED_AN = (1, 5, 10, 20, 50, 100)


@dataclass
class ProposalResult:
    """Recall per threshold and AN, averaged recall, AN values and AUC (fractions)."""

    tiou: list[float]
    recall: np.ndarray  # (len(tiou), 100)
    avg_recall: np.ndarray  # (100,)
    proposals_per_video: np.ndarray  # (100,)
    auc: float
    ignored: dict[str, int]
    unknown_videos_policy: str
    counts: dict[str, int] = field(default_factory=dict)

    def ar_at(self, an: int) -> float:
        """AR at the ``an``-th point of the curve, i.e. AN = an when 100 proposals/video."""
        return float(self.avg_recall[an - 1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": "proposal",
            "tiou": [float(t) for t in self.tiou],
            "AR@AN": {str(an): self.ar_at(an) for an in REPORTED_AN},
            "AUC": float(self.auc),
            "AN": [float(x) for x in self.proposals_per_video],
            "AR": [float(x) for x in self.avg_recall],
            "ignored": dict(self.ignored),
            "unknown_videos_policy": self.unknown_videos_policy,
            "counts": dict(self.counts),
        }


def average_recall_vs_avg_nr_proposals(
    gt: GroundTruth, preds: Predictions, max_avg_nr_proposals: float | None = 100,
    tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Mirror of the toolkit function; returns ``recall, avg_recall, proposals_per_video``
    plus the number of evaluated videos and of retrieved proposals."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    video_lst = list(dict.fromkeys(gt.inst_videos.tolist()))  # pandas .unique(): first-appearance order
    n_videos = len(video_lst)
    n_props_all = len(preds)
    if n_videos == 0:
        raise EvaluationInputError(f"{gt.source}: proposal evaluation needs at least one ground-truth instance")
    if n_props_all == 0:
        zeros = np.zeros((len(thresholds), 100))
        return zeros, zeros[0], np.zeros(100), n_videos, 0
    if not max_avg_nr_proposals:
        max_avg_nr_proposals = float(n_props_all) / n_videos
    ratio = max_avg_nr_proposals * float(n_videos) / n_props_all

    vindex = {v: i for i, v in enumerate(video_lst)}
    g_vid = np.fromiter((vindex[v] for v in gt.inst_videos), np.int64, len(gt))
    p_vid = np.fromiter((vindex.get(v, -1) for v in preds.videos), np.int64, len(preds))
    g_seg = np.stack([gt.inst_starts, gt.inst_ends], axis=1)
    p_seg = np.stack([preds.starts, preds.ends], axis=1)

    g_order = np.argsort(g_vid, kind="stable")
    g_bounds = np.searchsorted(g_vid[g_order], np.arange(n_videos + 1))
    p_order = np.argsort(p_vid, kind="stable")  # file order kept within a video
    p_bounds = np.searchsorted(p_vid[p_order], np.arange(n_videos + 1))

    # first_hit[g, t]: rank of the first kept proposal with tIoU >= t (inf: none);
    # n_kept[v]: proposals kept in video v (1 for a video without proposals)
    first_hit = np.full((len(gt), len(thresholds)), np.inf)
    gt_video = np.empty(len(gt), dtype=np.int64)
    n_kept = np.zeros(n_videos, dtype=np.int64)
    total_nr_proposals = 0
    for v in range(n_videos):
        g = g_order[g_bounds[v]:g_bounds[v + 1]]
        gt_video[g] = v
        p = p_order[p_bounds[v]:p_bounds[v + 1]]
        if len(p) == 0:
            n_kept[v] = 1  # toolkit scores such a video as one proposal of tIoU 0
            first_hit[g] = np.where(thresholds <= 0, 0.0, np.inf)[None, :]
            continue
        p = p[stable_descending(preds.scores[p])]
        nr = min(int(len(p) * ratio), len(p))
        total_nr_proposals += nr
        n_kept[v] = nr
        if nr == 0:
            continue
        tiou = segment_iou_matrix(g_seg[g], p_seg[p[:nr]])  # (gt, proposals); NaN never passes >=
        with np.errstate(invalid="ignore"):
            hit = tiou[:, :, None] >= thresholds[None, None, :]
        any_hit = hit.any(axis=1)
        first_hit[g] = np.where(any_hit, hit.argmax(axis=1), np.inf)

    pcn_lst = np.arange(1, 101) / 100.0 * (max_avg_nr_proposals * float(n_videos) / total_nr_proposals) \
        if total_nr_proposals else np.arange(1, 101) / 100.0
    # pcn_proposals[v, j] = min(int(n_kept[v] * pcn_lst[j]), n_kept[v])
    cut = np.minimum((n_kept[:, None] * pcn_lst[None, :]).astype(int), n_kept[:, None])
    # a ground truth is recalled at cut-off j when its first hit ranks below the cut
    recalled = first_hit[:, :, None] < cut[gt_video][:, None, :]  # (gt, thr, 100)
    recall = recalled.sum(axis=0) / float(len(gt))
    avg_recall = recall.mean(axis=0)
    proposals_per_video = pcn_lst * (float(total_nr_proposals) / n_videos)
    return recall, avg_recall, proposals_per_video, n_videos, total_nr_proposals


def evaluate_proposals(
    gt: GroundTruth, preds: Predictions, tiou_thresholds: Sequence[float] = DEFAULT_TIOU,
    max_avg_nr_proposals: float | None = 100, unknown_videos: str = "false_positive",
) -> ProposalResult:
    """AR@AN and AUC of ``preds`` (labels ignored) against ``gt`` (``ANETproposal.evaluate``).

    Proposals on unknown videos only enlarge the toolkit's proposal count (``ratio``);
    ``unknown_videos="drop"`` removes them first.
    """
    aligned = align_predictions(gt, preds, use_labels=False, unknown_videos=unknown_videos)
    props = aligned.predictions
    recall, avg_recall, ppv, n_videos, n_retrieved = average_recall_vs_avg_nr_proposals(
        gt, props, max_avg_nr_proposals, tiou_thresholds,
    )
    auc = float(np.trapezoid(avg_recall, ppv) / ppv[-1]) if ppv[-1] > 0 else 0.0
    return ProposalResult(
        tiou=[float(t) for t in np.asarray(tiou_thresholds, dtype=np.float64)],
        recall=recall, avg_recall=avg_recall, proposals_per_video=ppv, auc=auc,
        ignored={k: v for k, v in aligned.ignored.items() if k != "unknown_classes"},
        unknown_videos_policy=aligned.unknown_videos_policy,
        counts={"proposals": len(props), "retrieved": n_retrieved, "ground_truth": len(gt), "videos": n_videos},
    )
