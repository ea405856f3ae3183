"""Soft-NMS for 1-D temporal segments (vectorised with numpy).

Soft-NMS (Bodla et al., 2017) repeatedly picks the highest-scoring remaining
segment and *decays* the scores of the others according to their temporal IoU
with the pick, instead of deleting them outright. Four decay rules are offered:

``gaussian``  ``s_i <- s_i * exp(-iou^2 / sigma)`` for every remaining segment.
``linear``    ``s_i <- s_i * (1 - iou)`` when ``iou > iou_threshold``, else unchanged.
``hard``      the segment is discarded when ``iou > iou_threshold`` (classic greedy NMS).
``bmn``       the BSN/BMN post-processing variant:
              ``s_i <- s_i * exp(-iou^2 / sigma)`` only when
              ``iou > low_threshold + (high_threshold - low_threshold) * width``
              where ``width = (end_p - start_p) / duration`` is the length of the
              *picked* segment relative to the video (or window) duration. BMN
              (JJBOY/BMN-Boundary-Matching-Network, ``post_processing.Soft_NMS``)
              works on segments normalised to [0, 1], so there ``duration`` is 1;
              its ActivityNet settings are ``sigma`` (``soft_nms_alpha``) = 0.4,
              ``low_threshold`` = 0.5, ``high_threshold`` = 0.9. BSN hard-codes
              0.75 / 0.65 / 0.9. Long picks thus suppress only near-duplicates.

The temporal IoU of ``[s1, e1]`` and ``[s2, e2]`` is
``inter / union`` with ``inter = max(0, min(e1, e2) - max(s1, s2))`` and
``union = (e1 - s1) + (e2 - s2) - inter``; when ``union == 0`` (two zero-length
segments) the IoU is defined as 0 so that degenerate segments never suppress.

Selection order and tie-breaking: the pick is the remaining segment with the
largest current score; among equal scores the one with the smallest input index
wins. The output is ordered by descending final score, ties by ascending input
index. Because decay is multiplicative, scores must be finite and non-negative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np

__all__ = ["SoftNMSResult", "SoftNMSMethod", "soft_nms", "segment_iou"]

SoftNMSMethod = Literal["gaussian", "linear", "hard", "bmn"]
_METHODS = ("gaussian", "linear", "hard", "bmn")


@dataclass(frozen=True)
class SoftNMSResult:
    """Output of :func:`soft_nms`.

    Attributes:
        indices: ``[M]`` int64 positions into the input arrays, ordered by
            descending final score (ties: ascending input index).
        segments: ``[M, 2]`` float64, ``segments_in[indices]``.
        scores: ``[M]`` float64 decayed scores (the score each segment had when it
            was picked).
        labels: ``[M]`` int64 ``labels_in[indices]``, or ``None`` when no labels
            were given.
    """

    indices: np.ndarray
    segments: np.ndarray
    scores: np.ndarray
    labels: Optional[np.ndarray]

    def __len__(self) -> int:
        return int(self.indices.shape[0])


def segment_iou(segment: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Temporal IoU of one ``[2]`` segment against ``[N, 2]`` segments.

    A zero union (both segments of zero length, overlapping or not) gives IoU 0.
    """
    inter = np.maximum(
        np.minimum(segment[1], segments[:, 1]) - np.maximum(segment[0], segments[:, 0]), 0.0
    )
    union = (segment[1] - segment[0]) + (segments[:, 1] - segments[:, 0]) - inter
    out = np.zeros_like(inter)
    # Divide only where the union is positive: avoids 0/0 warnings and defines IoU=0 there.
    np.divide(inter, union, out=out, where=union > 0)
    return out


def _validate(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: Optional[np.ndarray],
    method: str,
    sigma: float,
    iou_threshold: float,
    low_threshold: float,
    high_threshold: float,
    duration: Optional[float],
    class_agnostic: bool,
    top_k: Optional[int],
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    seg = np.asarray(segments, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if seg.ndim != 2 or seg.shape[1] != 2:
        # An empty list is a common "no proposals" input; accept it as [0, 2].
        if seg.size == 0:
            seg = seg.reshape(0, 2)
        else:
            raise ValueError(f"segments must have shape [N, 2], got {seg.shape}")
    if sc.ndim != 1:
        raise ValueError(f"scores must have shape [N], got {sc.shape}")
    if sc.shape[0] != seg.shape[0]:
        raise ValueError(
            f"segments and scores disagree in length: {seg.shape[0]} segments, {sc.shape[0]} scores"
        )
    lab: Optional[np.ndarray] = None
    if labels is not None:
        lab_raw = np.asarray(labels)
        if lab_raw.ndim != 1 or lab_raw.shape[0] != seg.shape[0]:
            raise ValueError(f"labels must have shape [{seg.shape[0]}], got {lab_raw.shape}")
        if lab_raw.size and not np.issubdtype(lab_raw.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {lab_raw.dtype}")
        lab = lab_raw.astype(np.int64)
    if not class_agnostic and lab is None:
        raise ValueError("class_agnostic=False needs labels")
    if np.isnan(sc).any():
        bad = np.flatnonzero(np.isnan(sc))
        raise ValueError(f"scores contain NaN at indices {bad[:10].tolist()}")
    if not np.isfinite(sc).all():
        bad = np.flatnonzero(~np.isfinite(sc))
        raise ValueError(f"scores contain infinite values at indices {bad[:10].tolist()}")
    if (sc < 0).any():
        bad = np.flatnonzero(sc < 0)
        raise ValueError(
            f"scores must be non-negative (multiplicative decay), negative at indices {bad[:10].tolist()}"
        )
    if not np.isfinite(seg).all():
        bad = np.flatnonzero(~np.isfinite(seg).all(axis=1))
        raise ValueError(f"segments contain NaN or infinite values at indices {bad[:10].tolist()}")
    if (seg[:, 1] < seg[:, 0]).any():
        bad = np.flatnonzero(seg[:, 1] < seg[:, 0])
        raise ValueError(f"segments must satisfy start <= end, violated at indices {bad[:10].tolist()}")
    if method not in _METHODS:
        raise ValueError(f"unknown soft-NMS method {method!r}; expected one of {_METHODS}")
    if method in ("gaussian", "bmn") and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    if method in ("linear", "hard") and not np.isfinite(iou_threshold):
        raise ValueError(f"iou_threshold must be finite, got {iou_threshold!r}")
    if method == "bmn":
        if not (np.isfinite(low_threshold) and np.isfinite(high_threshold)):
            raise ValueError("low_threshold and high_threshold must be finite")
        if duration is not None and not (np.isfinite(duration) and duration > 0):
            raise ValueError(f"duration must be a positive finite number, got {duration!r}")
    if top_k is not None and (int(top_k) != top_k or top_k < 0):
        raise ValueError(f"top_k must be None or a non-negative integer, got {top_k!r}")
    if not np.isfinite(min_score):
        raise ValueError(f"min_score must be finite, got {min_score!r}")
    return seg, sc, lab


def _soft_nms_group(
    seg: np.ndarray,
    sc: np.ndarray,
    method: str,
    sigma: float,
    iou_threshold: float,
    low_threshold: float,
    high_threshold: float,
    duration: float,
    top_k: Optional[int],
    min_score: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Soft-NMS on one group; returns (positions into ``seg``, final scores) in pick order.

    Layout: ``cur`` holds the live scores in input order, with ``-inf`` marking
    picked/dropped slots, so selection is a single ``argmax`` (first maximum =
    lowest input index, the documented tie-break). A start-sorted permutation
    ``perm`` lets each pick touch only the slots whose start lies in
    ``[pick_start - max_len, pick_end]``: every other segment has IoU 0 with the
    pick, and IoU 0 leaves scores unchanged under all rules (``exp(0) = 1``,
    ``0 > thr`` is false for ``thr >= 0``); the one exception, ``hard`` with a
    negative threshold, is handled explicitly.
    """
    neg_inf = -np.inf
    idx = np.arange(seg.shape[0], dtype=np.int64)  # input position of each slot
    cur = sc.copy()
    # Items below min_score can never come back (decay only lowers scores), so drop them now.
    cur[~(cur >= min_score)] = neg_inf
    perm = np.argsort(seg[:, 0], kind="stable")
    s_starts = seg[perm, 0]
    s_ends = seg[perm, 1]
    n_alive = int(np.count_nonzero(cur > neg_inf))
    max_len = float((seg[:, 1] - seg[:, 0])[cur > neg_inf].max()) if n_alive else 0.0
    limit = n_alive if top_k is None else min(int(top_k), n_alive)
    check_min = method != "hard" and min_score > 0.0  # with min_score <= 0 no score can drop below it
    drop_all = method == "hard" and iou_threshold < 0.0  # IoU >= 0 > threshold for every segment
    picked_idx: list[int] = []
    picked_score: list[float] = []
    while n_alive > 0 and len(picked_idx) < limit:
        m = int(np.argmax(cur))
        best = float(cur[m])
        picked_idx.append(int(idx[m]))
        picked_score.append(best)
        cur[m] = neg_inf
        n_alive -= 1
        if drop_all or n_alive == 0:
            break
        p_start, p_end = float(seg[idx[m], 0]), float(seg[idx[m], 1])
        # Any segment with positive overlap starts after p_start - max_len (minus a rounding
        # margin) and no later than p_end; everything outside the slice has IoU 0.
        margin = 1e-9 * (abs(p_start) + max_len + 1.0)
        lo = int(np.searchsorted(s_starts, p_start - max_len - margin, side="left"))
        hi = int(np.searchsorted(s_starts, p_end, side="right"))
        w = perm[lo:hi]
        w_s, w_e = s_starts[lo:hi], s_ends[lo:hi]
        cw = cur[w]
        live = cw > neg_inf
        before = int(np.count_nonzero(live))
        if before == 0:
            continue
        inter = np.maximum(np.minimum(p_end, w_e) - np.maximum(p_start, w_s), 0.0)
        union = (p_end - p_start) + (w_e - w_s) - inter
        iou = np.zeros_like(inter)
        np.divide(inter, union, out=iou, where=union > 0)
        if method == "gaussian":
            factor = np.exp(-(iou * iou) / sigma)
        elif method == "linear":
            factor = np.where(iou > iou_threshold, 1.0 - iou, 1.0)
        elif method == "bmn":
            width = (p_end - p_start) / duration
            thr = low_threshold + (high_threshold - low_threshold) * width
            factor = np.where(iou > thr, np.exp(-(iou * iou) / sigma), 1.0)
        else:  # hard
            factor = None
            cw[iou > iou_threshold] = neg_inf
        if factor is not None:
            # Skip dead slots: -inf * 0 would turn them into NaN.
            np.multiply(cw, factor, out=cw, where=live)
        if check_min:
            cw[cw < min_score] = neg_inf
        cur[w] = cw
        n_alive -= before - int(np.count_nonzero(cw > neg_inf))
        # Compact once most slots are dead so later picks touch fewer elements.
        if n_alive and n_alive * 2 < idx.shape[0]:
            idx, cur, perm, s_starts, s_ends = _compact(idx, cur, perm, s_starts, s_ends)
            max_len = float((s_ends - s_starts).max())
    return np.asarray(picked_idx, dtype=np.int64), np.asarray(picked_score, dtype=np.float64)


def _compact(idx: np.ndarray, cur: np.ndarray, perm: np.ndarray, s_starts: np.ndarray,
             s_ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drop dead slots, keeping input order for ``cur``/``idx`` and start order for the rest."""
    keep = cur > -np.inf
    new_pos = np.cumsum(keep) - 1  # slot -> position after compaction
    keep_sorted = keep[perm]
    return idx[keep], cur[keep], new_pos[perm[keep_sorted]], s_starts[keep_sorted], s_ends[keep_sorted]


def soft_nms(
    segments: np.ndarray,
    scores: np.ndarray,
    labels: Optional[np.ndarray] = None,
    *,
    method: SoftNMSMethod = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    low_threshold: float = 0.5,
    high_threshold: float = 0.9,
    duration: Optional[float] = None,
    class_agnostic: bool = True,
    top_k: Optional[int] = None,
    min_score: float = 0.0,
) -> SoftNMSResult:
    """Soft-NMS over temporal segments; see the module docstring for the formulas.

    Args:
        segments: ``[N, 2]`` float ``(start, end)`` pairs with ``start <= end``
            (seconds, snippets or normalised units; only ratios matter except
            for ``bmn``, see ``duration``). Zero-length segments are allowed.
        scores: ``[N]`` finite, non-negative confidences. NaN/inf/negative raise
            ``ValueError``.
        labels: optional ``[N]`` integer class ids; carried to the output and
            required when ``class_agnostic=False``.
        method: ``"gaussian"`` (``s *= exp(-iou^2 / sigma)`` for all remaining),
            ``"linear"`` (``s *= 1 - iou`` when ``iou > iou_threshold``),
            ``"hard"`` (drop when ``iou > iou_threshold``) or ``"bmn"``
            (``s *= exp(-iou^2 / sigma)`` when
            ``iou > low_threshold + (high_threshold - low_threshold) * width``).
        sigma: Gaussian denominator for ``gaussian`` and ``bmn`` (BMN calls it
            ``soft_nms_alpha``; note it is divided by directly, not ``2 sigma^2``).
        iou_threshold: threshold for ``linear`` and ``hard``; a strict ``>``.
        low_threshold: BMN's ``soft_nms_low_thres`` (used only by ``bmn``).
        high_threshold: BMN's ``soft_nms_high_thres`` (used only by ``bmn``).
        duration: length of the video/window the segments live in, in the same
            unit as ``segments``; ``bmn`` uses ``width = (end - start) / duration``
            of the picked segment. ``None`` means the segments are already
            normalised to the video (``duration = 1``), as in BMN. Ignored by the
            other methods.
        class_agnostic: ``True`` suppresses across all segments regardless of
            label; ``False`` runs Soft-NMS independently for each label (segments
            of different labels never interact) and merges the results.
        top_k: keep at most this many segments in total (``None``: no limit). In
            class-agnostic mode the loop stops after ``top_k`` picks; in per-label
            mode each label yields at most ``top_k`` and the merged list is cut to
            ``top_k`` by final score.
        min_score: segments whose (decayed) score falls below this value are
            dropped and never picked; kept segments satisfy ``score >= min_score``.
            The default 0 keeps everything ``gaussian``/``linear`` produce.

    Returns:
        :class:`SoftNMSResult` ordered by descending final score, ties by input index.

    Raises:
        ValueError: on malformed shapes, NaN/inf/negative scores, non-finite or
            reversed segments, unknown ``method``, or invalid parameters.
    """
    seg, sc, lab = _validate(
        segments, scores, labels, method, sigma, iou_threshold, low_threshold,
        high_threshold, duration, class_agnostic, top_k, min_score,
    )
    dur = 1.0 if duration is None else float(duration)
    params = dict(
        method=method, sigma=float(sigma), iou_threshold=float(iou_threshold),
        low_threshold=float(low_threshold), high_threshold=float(high_threshold),
        duration=dur, top_k=top_k, min_score=float(min_score),
    )
    if class_agnostic or seg.shape[0] == 0:
        keep, final = _soft_nms_group(seg, sc, **params)
    else:
        assert lab is not None
        parts_idx: list[np.ndarray] = []
        parts_score: list[np.ndarray] = []
        for value in np.unique(lab):
            members = np.flatnonzero(lab == value)
            k, s = _soft_nms_group(seg[members], sc[members], **params)
            parts_idx.append(members[k])
            parts_score.append(s)
        keep = np.concatenate(parts_idx)
        final = np.concatenate(parts_score)
    # Descending score, then ascending index: lexsort uses the last key as primary.
    order = np.lexsort((keep, -final))
    if top_k is not None:
        order = order[: int(top_k)]
    keep = keep[order].astype(np.int64)
    final = final[order]
    return SoftNMSResult(
        indices=keep,
        segments=seg[keep].reshape(-1, 2),
        scores=final,
        labels=None if lab is None else lab[keep],
    )
