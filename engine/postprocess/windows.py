"""Long videos: sliding-window layout, seconds, and merging windows into detections.

THUMOS mode (paper sec. 4.1: windows with 50 % overlap) cuts a video's snippet
sequence into windows of ``data.window`` snippets; ActivityNet mode resizes every
video to one window of T snippets. Each window is decoded on its own
(:mod:`engine.postprocess.decode`); this module lays the windows out, maps their
proposals to seconds and merges them with Soft-NMS (sec. 3.5, [32]).

:func:`window_starts` is THE window layout: the dataset code and the offline
evaluation use it, so training windows and inference windows agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import DataConfig, InferenceConfig
from .decode import Proposals
from .soft_nms import segment_iou, soft_nms

__all__ = [
    "Detections",
    "StreamMerger",
    "detections_to_results",
    "merge_video",
    "seconds_per_snippet",
    "to_seconds",
    "window_pad",
    "window_starts",
    "window_valid_length",
]


# ---------------------------------------------------------------- layout


def window_starts(num_snippets: int, window: int, overlap: float = 0.5) -> list[int]:
    """First snippet of each sliding window over a video of ``num_snippets``.

    Windows hold ``window`` snippets and advance by ``stride = round(window * (1 -
    overlap))`` (at least 1). Choice (the paper does not say): the last window is
    *aligned to the video end* (start ``num_snippets - window``) instead of padded,
    so every window but one of a short video holds only real snippets; it overlaps
    its predecessor by more than ``overlap`` when the length is not a multiple of the
    stride. A video shorter than one window gets a single window at 0, padded at the
    end by :func:`window_pad` snippets. An empty video has no windows.

    Examples (window 256, overlap 0.5): 100 -> [0] (156 padded); 256 -> [0];
    512 -> [0, 128, 256]; 300 -> [0, 44].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if num_snippets < 0:
        raise ValueError(f"num_snippets must be >= 0, got {num_snippets}")
    if num_snippets == 0:
        return []
    stride = max(1, int(round(window * (1.0 - overlap))))
    starts = [0]
    while starts[-1] + window < num_snippets:
        nxt = starts[-1] + stride
        if nxt + window >= num_snippets:
            nxt = num_snippets - window  # align the last window to the end
        starts.append(nxt)
    return starts


def window_valid_length(num_snippets: int, start: int, window: int) -> int:
    """Real (unpadded) snippets in the window starting at ``start``."""
    return max(0, min(window, num_snippets - start))


def window_pad(num_snippets: int, window: int) -> int:
    """Padding snippets appended to the (single) window of a video shorter than a window."""
    return max(0, window - num_snippets) if num_snippets > 0 else 0


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


def _nms(segments: np.ndarray, scores: np.ndarray, labels: np.ndarray, cfg: InferenceConfig,
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


def _window_candidates(window_start: float, proposals: Proposals, sps: float,
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


def _window_nms(d: Detections, proposals: Proposals, sps: float, cfg: InferenceConfig,
                proposals_only: bool) -> Detections:
    """Per-window Soft-NMS of one window's candidates ``d`` (from ``proposals``)."""
    # bmn's width is relative to the window here (BMN normalises by its window too).
    width = proposals.window * sps if proposals.window else None
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    # top_k = max_detections: a window contributes at most what the whole video keeps.
    return _nms(d.segments, d.scores, d.labels, cfg, width, agnostic, cfg.max_detections)


def _window_detections(window_start: float, proposals: Proposals, sps: float,
                       video_duration: float | None, cfg: InferenceConfig,
                       proposals_only: bool) -> Detections:
    """One window: :func:`_window_candidates`, then per-window Soft-NMS."""
    d = _window_candidates(window_start, proposals, sps, video_duration, proposals_only)
    return _window_nms(d, proposals, sps, cfg, proposals_only)


def _single_window_detections(window_start: float, proposals: Proposals, sps: float,
                              video_duration: float | None, cfg: InferenceConfig,
                              proposals_only: bool) -> Detections:
    """A video (merge segment) of exactly one window: the video-level Soft-NMS is its only pass.

    Running the per-window pass and then the video-level pass over the same set decays
    every near-duplicate twice (measured: 0.0927 -> 0.0107 on the second pass). The paper
    (sec. 3.5) applies Soft-NMS once to a video's proposals; the per-window pass exists only
    to bound what a window hands to the cross-window merge, which here there is none of.
    """
    d = _window_candidates(window_start, proposals, sps, video_duration, proposals_only)
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    duration = None if video_duration is None else float(video_duration)
    return _nms(d.segments, d.scores, d.labels, cfg, duration, agnostic, cfg.max_detections)


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
    parts = [_window_detections(start, props, seconds_per_snippet, video_duration, cfg, proposals_only)
             for start, props in windows]
    allw = Detections.concatenate(parts)
    agnostic = proposals_only or cfg.soft_nms.class_agnostic
    return _nms(allw.segments, allw.scores, allw.labels, cfg, float(video_duration), agnostic,
                cfg.max_detections)


class StreamMerger:
    """Incremental :func:`merge_video` for the online detector.

    Feed windows in order of non-decreasing start with :meth:`push`; it returns the
    detections that can no longer change. After :meth:`flush`, :meth:`result` equals
    :func:`merge_video` on the same windows (same scores; tie order aside).

    Why this is exact: every segment of a later window starts at or after that
    window's start ``t`` (decoded segments are clipped to their window). Soft-NMS
    only decays a segment through positive overlap (IoU 0 leaves scores unchanged
    under every rule with non-negative thresholds). So pending segments split at a
    cut time ``c <= t`` that no pending segment strictly straddles form two sets
    with no overlap between them, and the set ending at or before ``c`` will never
    meet anything new: its Soft-NMS result is final and equals its part of the
    whole-video result. Emitted detections skip the global ``max_detections`` cut
    (a stream has no end); :meth:`result` applies it.

    One window: :func:`merge_video` gives a single-window video one Soft-NMS pass. The
    merger cannot know at :meth:`push` time whether more windows follow, so it keeps the
    first window's pre-NMS candidates aside; :meth:`flush` after exactly one push with
    nothing emitted yet (the whole merge segment was that window) releases one
    video-level pass over them instead of the pending, already window-NMS'd set. A
    second push, or any emission after the first, drops them: more windows, the usual
    two-stage merge.

    Latency: overlapping proposals can chain across windows (a long proposal
    straddles the next window's start, which a proposal of the previous window
    overlaps, ...), and then the exact cut never moves until :meth:`flush`. With
    ``max_lag`` (seconds) set, when the exact cut lags the horizon by more than
    ``max_lag`` the merger *commits* at ``horizon - max_lag``: Soft-NMS runs on the
    segments ending there plus those straddling it; the former are emitted as
    picked, the straddlers stay pending, decayed by the emitted picks that came
    before them (dropped if that run dropped them). This is Soft-NMS with the
    straddlers' future decays ignored for the committed picks: an approximation,
    so ``max_lag=None`` (exact, default) is the offline setting.

    Args:
        seconds_per_snippet: as for :func:`merge_video`.
        cfg: ``InferenceConfig``.
        video_duration: clip bound in seconds, or ``None`` (live stream: clip at 0
            only). ``bmn`` Soft-NMS needs it for the video-level pass.
        max_lag: bound on how far (seconds) final detections may trail the
            horizon; ``None``: exact only.
        keep_history: keep every emitted detection for :meth:`result`. The
            online detector passes False: a stream runs for months, and the
            history would grow by every event (measured: +0.7 MB/min in a soak).
    """

    def __init__(self, seconds_per_snippet: float, cfg: InferenceConfig,
                 video_duration: float | None = None, *, proposals_only: bool = False,
                 max_lag: float | None = None, keep_history: bool = True) -> None:
        s = cfg.soft_nms
        if s.method in ("linear", "hard") and s.iou_threshold < 0:
            raise ValueError("StreamMerger needs iou_threshold >= 0 (IoU 0 must not suppress)")
        if s.method == "bmn":
            if video_duration is None:
                raise ValueError("soft_nms method 'bmn' needs video_duration")
            if min(s.bmn_low, s.bmn_high) < 0:
                raise ValueError("StreamMerger needs bmn thresholds >= 0 (IoU 0 must not suppress)")
        self.sps = float(seconds_per_snippet)
        self.cfg = cfg
        self.video_duration = video_duration
        self.proposals_only = proposals_only
        if max_lag is not None and max_lag < 0:
            raise ValueError(f"max_lag must be >= 0 seconds, got {max_lag}")
        self.max_lag = max_lag
        self._pending = Detections.empty()
        self.keep_history = keep_history
        self._emitted: list[Detections] = []
        self._last_start = -math.inf
        self._pushes = 0
        # the first window's candidates before Soft-NMS while it may stay the only one
        self._single: Detections | None = None

    def push(self, window_start: float, proposals: Proposals,
             next_start: float | None = None) -> Detections:
        """Add one window; return the newly final detections (descending score).

        ``next_start``: start (snippets) of the next window if known (live stream:
        ``window_start + hop``); it lets the cut move up to there. ``None`` uses
        ``window_start``, which is safe whenever starts never decrease.
        """
        if window_start < self._last_start:
            raise ValueError(f"windows must come in order: start {window_start} after {self._last_start}")
        if next_start is not None and next_start < window_start:
            raise ValueError(f"next_start {next_start} is before window_start {window_start}")
        self._last_start = float(window_start)
        self._pushes += 1
        cand = _window_candidates(window_start, proposals, self.sps, self.video_duration,
                                  self.proposals_only)
        self._single = cand if self._pushes == 1 else None
        part = _window_nms(cand, proposals, self.sps, self.cfg, self.proposals_only)
        self._pending = Detections.concatenate([self._pending, part])
        horizon = (window_start if next_start is None else next_start) * self.sps
        out = self._release(horizon)
        if len(out):
            self._single = None  # part of the first window is final: it was not the whole segment
        return out

    def flush(self) -> Detections:
        """End of the video: everything pending becomes final.

        After exactly one window with nothing emitted, that window was the whole video:
        one video-level Soft-NMS pass over its candidates, as :func:`merge_video` does.
        """
        if self._single is not None:
            self._pending, self._single = self._single, None
        return self._release(math.inf)

    def emit_floor(self) -> float:
        """Seconds: every detection this merger can still emit ends at or after this.

        Those are the pending segments and the segments of later windows, which start at or
        after the last window's start (segments are clipped to their window). The online
        detector forgets the ids of events that ended before it (see
        ``stream.detector_worker.RecentIds``). ``-inf`` before the first window."""
        floor = self._last_start * self.sps
        for held in (self._pending, self._single):
            if held is not None and len(held):
                floor = min(floor, float(held.segments[:, 1].min()))
        return floor

    def result(self) -> Detections:
        """All final detections so far: top ``max_detections`` by score (``merge_video``'s cut)."""
        if not self.keep_history:
            raise RuntimeError("StreamMerger(keep_history=False) keeps no history: result() is unavailable")
        allw = Detections.concatenate(self._emitted)
        order = np.argsort(-allw.scores, kind="stable")[: self.cfg.max_detections]
        return Detections(allw.segments[order], allw.scores[order], allw.labels[order])

    def _release(self, horizon: float) -> Detections:
        pend = self._pending
        if len(pend) == 0:
            return Detections.empty()
        s, e = pend.segments[:, 0], pend.segments[:, 1]
        cut = horizon
        while True:  # lower the cut below every segment that straddles it
            straddle = (s < cut) & (e > cut)
            if not straddle.any():
                break
            cut = float(s[straddle].min())
        if self.max_lag is not None and math.isfinite(horizon) and cut < horizon - self.max_lag:
            return self._commit(horizon - self.max_lag)
        done = e <= cut
        if not done.any():
            return Detections.empty()
        self._pending = Detections(pend.segments[~done], pend.scores[~done], pend.labels[~done])
        out = _nms(pend.segments[done], pend.scores[done], pend.labels[done], self.cfg, self._duration(),
                   self._agnostic(), self.cfg.max_detections)
        if self.keep_history:
            self._emitted.append(out)
        return out

    def _agnostic(self) -> bool:
        return self.proposals_only or self.cfg.soft_nms.class_agnostic

    def _duration(self) -> float | None:
        return None if self.video_duration is None else float(self.video_duration)

    def _commit(self, cut: float) -> Detections:
        """Approximate release at ``cut`` (see the class docstring, ``max_lag``)."""
        pend = self._pending
        s, e = pend.segments[:, 0], pend.segments[:, 1]
        done = e <= cut
        strad = (s < cut) & (e > cut)
        rest = ~(done | strad)
        idx = np.flatnonzero(done | strad)
        seg, sc, lab = pend.segments[idx], pend.scores[idx], pend.labels[idx]
        res = soft_nms(seg, sc, lab, **self._nms_kwargs(), top_k=None)
        is_done = done[idx]
        picked_done = [int(k) for k in res.indices if is_done[k]]
        out = Detections(seg[picked_done], res.scores[is_done[res.indices]], lab[picked_done])
        # straddlers: keep those the run kept, decayed by the emitted picks before them
        order = {int(k): r for r, k in enumerate(res.indices)}
        keep_seg, keep_sc, keep_lab = [], [], []
        for k in np.flatnonzero(~is_done):
            if int(k) not in order:
                continue  # suppressed or below min_score in this run
            score = float(sc[k])
            for j in res.indices[: order[int(k)]]:
                if is_done[j] and (self._agnostic() or lab[j] == lab[k]):
                    score *= self._factor(seg[j], seg[k])
            if score >= self.cfg.min_score and score > 0:
                keep_seg.append(seg[k])
                keep_sc.append(score)
                keep_lab.append(lab[k])
        straddlers = Detections(np.asarray(keep_seg, np.float64).reshape(-1, 2),
                                np.asarray(keep_sc, np.float64), np.asarray(keep_lab, np.int64))
        later = Detections(pend.segments[rest], pend.scores[rest], pend.labels[rest])
        self._pending = Detections.concatenate([straddlers, later])
        if self.keep_history:
            self._emitted.append(out)
        return out

    def _nms_kwargs(self) -> dict[str, Any]:
        c = self.cfg.soft_nms
        return dict(method=c.method, sigma=c.sigma, iou_threshold=c.iou_threshold, low_threshold=c.bmn_low,
                    high_threshold=c.bmn_high, duration=self._duration(), class_agnostic=self._agnostic(),
                    min_score=self.cfg.min_score)

    def _factor(self, pick: np.ndarray, other: np.ndarray) -> float:
        """Soft-NMS decay of ``other`` by ``pick`` (the rules of engine.postprocess.soft_nms)."""
        c = self.cfg.soft_nms
        iou = float(segment_iou(pick, other[None, :])[0])
        if c.method == "gaussian":
            return math.exp(-iou * iou / c.sigma)
        if c.method == "linear":
            return 1.0 - iou if iou > c.iou_threshold else 1.0
        if c.method == "hard":
            return 0.0 if iou > c.iou_threshold else 1.0
        width = (pick[1] - pick[0]) / float(self.video_duration)  # bmn
        thr = c.bmn_low + (c.bmn_high - c.bmn_low) * width
        return math.exp(-iou * iou / c.sigma) if iou > thr else 1.0


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
