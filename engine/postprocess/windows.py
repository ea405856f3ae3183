"""Windows to detections: seconds, per-window and per-video Soft-NMS (sec. 3.5, [32]).

THUMOS mode (paper sec. 4.1: windows with 50 % overlap) cuts a video's snippet
sequence into windows of ``data.window`` snippets (the layout:
:mod:`engine.online.layout`); ActivityNet mode resizes every video to one window of T
snippets. Each window is decoded on its own (:mod:`engine.postprocess.decode`); this
module maps their proposals to seconds and merges them with Soft-NMS.

:func:`merge_video` is the reference batch merge of a whole video; the incremental
:class:`engine.online.merger.StreamMerger`, which offline inference and the online
detector run, equals it after its last window (tests/test_windows.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import DataConfig, InferenceConfig
from .decode import Proposals
from .soft_nms import soft_nms

__all__ = [
    "Detections",
    "detections_to_results",
    "merge_video",
    "nms_detections",
    "seconds_per_snippet",
    "to_seconds",
    "window_candidates",
    "window_nms",
]


# ---------------------------------------------------------------- units


def seconds_per_snippet(data: DataConfig, fps: float | None = None,
                        duration: float | None = None) -> float:
    """Seconds per snippet: THUMOS ``sigma / fps``; ActivityNet ``duration / T``
    (every video resized to ``T = data.window`` snippets)."""
    if data.mode == "thumos":
        if fps is None or not fps > 0:
            raise ValueError(f"THUMOS mode needs fps > 0, got {fps}")
        return data.sigma / float(fps)
    if duration is None or not duration > 0:
        raise ValueError(f"ActivityNet mode needs the video duration > 0, got {duration}")
    return float(duration) / data.window


def to_seconds(segments_snippets: np.ndarray, window_start_snippet: float,
               seconds_per_snippet: float) -> np.ndarray:
    """Window snippet units -> seconds: ``(segment + window_start) * seconds_per_snippet``.

    Snippet i covers [i, i+1) snippets = [i * sps, (i+1) * sps) seconds, so a
    THUMOS snippet of sigma frames at ``fps`` has ``sps = sigma / fps``; ActivityNet
    mode passes ``window_start = 0`` and ``sps = duration / T``.
    """
    seg = np.asarray(segments_snippets, dtype=np.float64).reshape(-1, 2)
    return (seg + float(window_start_snippet)) * float(seconds_per_snippet)


# ---------------------------------------------------------------- merging


@dataclass
class Detections:
    """Detections of one video in seconds, by descending score."""

    segments: np.ndarray  # [N, 2] float64 seconds
    scores: np.ndarray  # [N] float64
    labels: np.ndarray  # [N] int64 class ids (0..K-1)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))

    @staticmethod
    def concatenate(parts: Sequence["Detections"]) -> "Detections":
        if not parts:
            return Detections.empty()
        return Detections(np.concatenate([p.segments for p in parts]).reshape(-1, 2),
                          np.concatenate([p.scores for p in parts]),
                          np.concatenate([p.labels for p in parts]))


def nms_detections(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, cfg: InferenceConfig,
         duration: float | None, class_agnostic: bool, top_k: int | None) -> Detections:
    s = cfg.soft_nms
    if s.method == "bmn" and duration is None:
        raise ValueError("soft_nms method 'bmn' needs the video duration (width = length / duration)")
    res = soft_nms(segments, scores, labels, method=s.method, sigma=s.sigma,
                   iou_threshold=s.iou_threshold, low_threshold=s.bmn_low, high_threshold=s.bmn_high,
                   duration=duration, class_agnostic=class_agnostic, top_k=top_k,
                   min_score=cfg.min_score)
    assert res.labels is not None
    return Detections(res.segments, res.scores, res.labels)


def window_candidates(window_start: float, proposals: Proposals, sps: float,
                       video_duration: float | None, proposals_only: bool) -> Detections:
    """One window before any Soft-NMS: to seconds, clip, drop empty segments."""
    p = proposals
    if proposals_only:
        # class-agnostic proposals: one row per anchor (its best class), eq. 10 without p_label
        keep = p.label_rank == 0
        seg, sc, lab = p.segments[keep], p.proposal_scores[keep], p.labels[keep]
    else:
        seg, sc, lab = p.segments, p.scores, p.labels
    seg = to_seconds(seg, window_start, sps)
    hi = np.inf if video_duration is None else float(video_duration)
    seg = np.clip(seg, 0.0, hi)
    # A segment clipped to nothing lay wholly past the video end (padding): no detection.
    keep = seg[:, 1] > seg[:, 0]
    return Detections(seg[keep], np.asarray(sc, np.float64)[keep], np.asarray(lab, np.int64)[keep])


def window_nms(d: Detections, proposals: Proposals, sps: float, cfg: InferenceConfig,
                proposals_only: bool) -> Detections:
    """Per-window Soft-NMS of one window's candidates ``d`` (from ``proposals``)."""
    # bmn's width is relative to the window here (BMN normalises by its window too).
    width = proposals.window * sps if proposals.window else None
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    # top_k = max_detections: a window contributes at most what the whole video keeps.
    return nms_detections(d.segments, d.scores, d.labels, cfg, width, agnostic, cfg.max_detections)


def _window_detections(window_start: float, proposals: Proposals, sps: float,
                       video_duration: float | None, cfg: InferenceConfig,
                       proposals_only: bool) -> Detections:
    """One window: :func:`window_candidates`, then per-window Soft-NMS."""
    d = window_candidates(window_start, proposals, sps, video_duration, proposals_only)
    return window_nms(d, proposals, sps, cfg, proposals_only)


def _single_window_detections(window_start: float, proposals: Proposals, sps: float,
                              video_duration: float | None, cfg: InferenceConfig,
                              proposals_only: bool) -> Detections:
    """A video (merge segment) of exactly one window: the video-level Soft-NMS is its only pass.

    Running the per-window pass and then the video-level pass over the same set decays
    every near-duplicate twice (measured: 0.0927 -> 0.0107 on the second pass). The paper
    (sec. 3.5) applies Soft-NMS once to a video's proposals; the per-window pass exists only
    to bound what a window hands to the cross-window merge, which here there is none of.
    """
    d = window_candidates(window_start, proposals, sps, video_duration, proposals_only)
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    duration = None if video_duration is None else float(video_duration)
    return nms_detections(d.segments, d.scores, d.labels, cfg, duration, agnostic, cfg.max_detections)


def merge_video(per_window: Iterable[tuple[float, Proposals]], seconds_per_snippet: float,
                video_duration: float, cfg: InferenceConfig, *,
                proposals_only: bool = False) -> Detections:
    """Merge the decoded windows of one video into its detections (seconds).

    Per window: map to seconds (:func:`to_seconds`), clip to ``[0, video_duration]``
    and drop segments clipped to zero length (they lay in end padding), then
    Soft-NMS within the window (``cfg.soft_nms``; top ``cfg.max_detections``). Then
    Soft-NMS over all windows of the video, keeping the top ``cfg.max_detections``
    with score ``>= cfg.min_score``. A video of ONE window (ActivityNet mode always,
    THUMOS mode below a window's length) skips the per-window pass: its proposals get
    the video-level pass only, so no score is decayed twice by the same neighbour.

    Between the two passes, the pieces of actions longer than a window are joined
    (:class:`engine.online.joiner.WindowJoiner`, ``cfg.join``); after the second, runs of
    same-label fragments longer than a window add their hulls
    (:func:`engine.online.chainer.chain_hulls`, ``cfg.chain``).

    Clipping before the per-window Soft-NMS (rather than after) keeps padding
    garbage from decaying real proposals; Soft-NMS is invariant to the affine map
    to seconds (``bmn`` gets the window's length in seconds as its duration).

    Args:
        per_window: ``(window_start, proposals)`` with the start in snippets.
        proposals_only: class-agnostic proposals (AR@AN evaluation): one row per
            anchor (``label_rank == 0``), score = ``proposal_scores``, class-agnostic
            Soft-NMS; labels are the best class, for information.
    """
    windows = list(per_window)
    if len(windows) == 1:
        start, props = windows[0]
        return _single_window_detections(start, props, seconds_per_snippet, video_duration, cfg,
                                         proposals_only)
    # the online core's rules, imported late (they import this module)
    from ..online.chainer import chain_hulls
    from ..online.joiner import WindowJoiner

    joiner = WindowJoiner(cfg.join, seconds_per_snippet)
    parts = []
    for i, (start, props) in enumerate(windows):
        part = _window_detections(start, props, seconds_per_snippet, video_duration, cfg, proposals_only)
        parts.append(joiner.push(start * seconds_per_snippet, (start + props.window) * seconds_per_snippet, part,
                                 start * seconds_per_snippet, float(video_duration)))
    parts.append(joiner.flush())
    allw = Detections.concatenate(parts)
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    # every final detection first (the chains read them all, as online), then the top max_detections
    finals = nms_detections(allw.segments, allw.scores, allw.labels, cfg, float(video_duration), agnostic, None)
    window_s = (windows[0][1].window * seconds_per_snippet or None) if windows else None  # None: no hulls
    both = Detections.concatenate([finals, chain_hulls(finals, cfg.chain, window_s)])
    order = np.argsort(-both.scores, kind="stable")[: cfg.max_detections]
    return Detections(both.segments[order], both.scores[order], both.labels[order])


# ---------------------------------------------------------------- results


def detections_to_results(video: str, detections: Detections,
                          class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """ActivityNet result entries ``{"label", "score", "segment": [s, e]}`` of one
    video, as :func:`engine.evaluation.results_format.write_activitynet_results`
    takes them (``{video: entries}``). Without ``class_names`` the label is the
    class id as a string."""
    out: list[dict[str, Any]] = []
    n_names = None if class_names is None else len(class_names)
    for (start, end), score, label in zip(detections.segments, detections.scores, detections.labels):
        lab = int(label)
        if n_names is not None and not 0 <= lab < n_names:
            raise ValueError(f"{video}: label id {lab} outside the {n_names} class names")
        name = str(lab) if class_names is None else str(class_names[lab])
        out.append({"label": name, "score": float(score), "segment": [float(start), float(end)]})
    return out
