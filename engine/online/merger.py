"""The incremental merge of a stream's windows: what the online detector and offline
inference run (:func:`engine.postprocess.windows.merge_video` is its batch reference)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..config import InferenceConfig
from ..postprocess.decode import Proposals
from ..postprocess.soft_nms import segment_iou, soft_nms
from ..postprocess.windows import Detections, nms_detections, window_candidates, window_nms
from .chainer import FragmentChainer
from .joiner import WindowJoiner


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

    Long actions: each window's detections pass through a
    :class:`~engine.online.joiner.WindowJoiner` (``cfg.join``) before they are pending; the
    pieces of an action longer than a window are held there and come out as one detection
    when no later window can continue them. The cut never passes the joiner's
    ``hold_from``, so a joined detection never overlaps one already released (exact mode;
    with ``max_lag`` the lag bound wins, see below). Then the released detections pass a
    :class:`~engine.online.chainer.FragmentChainer` (``cfg.chain``): a run of same-label
    fragments longer than a window adds its hull as one more final detection once no later
    release can extend it.

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
        self.joiner = WindowJoiner(cfg.join, seconds_per_snippet)
        self.chainer = FragmentChainer(cfg.chain)

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
        if self.chainer.window_s is None and proposals.window:
            self.chainer.set_window(proposals.window * self.sps)
        cand = window_candidates(window_start, proposals, self.sps, self.video_duration,
                                  self.proposals_only)
        self._single = cand if self._pushes == 1 else None
        part = window_nms(cand, proposals, self.sps, self.cfg, self.proposals_only)
        horizon = (window_start if next_start is None else next_start) * self.sps
        part = self.joiner.push(window_start * self.sps, (window_start + proposals.window) * self.sps, part,
                                horizon, self.video_duration)
        self._pending = Detections.concatenate([self._pending, part])
        out = self._release(horizon)
        if len(out):
            self._single = None  # part of the first window is final: it was not the whole segment
        return self._chain(out, self._start_floor())

    def flush(self) -> Detections:
        """End of the video: everything pending becomes final.

        After exactly one window with nothing emitted, that window was the whole video:
        one video-level Soft-NMS pass over its candidates, as :func:`merge_video` does.
        """
        if self._single is not None:
            self._pending, self._single = self._single, None
            self.joiner.flush()  # the one window's candidates stand for everything it held
        else:
            self._pending = Detections.concatenate([self._pending, self.joiner.flush()])
        return self._chain(self._release(math.inf), math.inf)

    def _chain(self, released: Detections, start_floor: float) -> Detections:
        """``released`` plus the hulls of the chains that closed (descending score)."""
        self.chainer.add(released)
        hulls = self.chainer.close(start_floor)
        if not len(hulls):
            return released
        if self.keep_history:
            self._emitted.append(hulls)
        both = Detections.concatenate([released, hulls])
        order = np.argsort(-both.scores, kind="stable")
        return Detections(both.segments[order], both.scores[order], both.labels[order])

    def _start_floor(self) -> float:
        """Seconds: every detection this merger can still release starts at or after this (later
        windows start at or after the last one; pending and held pieces as they stand)."""
        floor = min(self._last_start * self.sps, self.joiner.hold_from)
        for held in (self._pending, self._single):
            if held is not None and len(held):
                floor = min(floor, float(held.segments[:, 0].min()))
        return floor

    @property
    def pending(self) -> Detections:
        """What the merger holds and may still release (each window's detections after its own
        Soft-NMS, in seconds, the long actions the joiner holds, one detection each, and the hulls
        the chainer's open chains would form with them): the event lifecycle's provisional and
        open events come from here."""
        held = self.joiner.held
        pending = Detections.concatenate([self._pending, held]) if len(held) else self._pending
        hulls = self.chainer.preview(pending)
        return Detections.concatenate([pending, hulls]) if len(hulls) else pending

    def look(self, window_start: float, proposals: Proposals) -> Detections:
        """An early (partial) window's view: :attr:`pending` plus this window's detections (after its
        own Soft-NMS, in seconds) and the chain hulls they make, without taking the window into the
        merge: what the merger releases stays what it would have released without it."""
        cand = window_candidates(window_start, proposals, self.sps, self.video_duration, self.proposals_only)
        part = window_nms(cand, proposals, self.sps, self.cfg, self.proposals_only)
        held = self.joiner.held
        base = Detections.concatenate([self._pending, held, part])
        hulls = self.chainer.preview(base)
        return Detections.concatenate([base, hulls]) if len(hulls) else base

    def emit_floor(self) -> float:
        """Seconds: every detection this merger can still emit ends at or after this.

        Those are the pending segments and the segments of later windows, which start at or
        after the last window's start (segments are clipped to their window). The online
        detector forgets the ids of events that ended before it (see
        ``engine.online.events.RecentIds``). ``-inf`` before the first window."""
        floor = min(self._last_start * self.sps, self.joiner.held_end_floor(), self.chainer.end_floor())
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
        cut = min(horizon, self.joiner.hold_from)  # held pieces may still become a longer detection
        while True:  # lower the cut below every segment that straddles it
            straddle = (s < cut) & (e > cut)
            if not straddle.any():
                break
            cut = float(s[straddle].min())
        if self.max_lag is not None and math.isfinite(horizon) and cut < horizon - self.max_lag:
            # live: the lag bound wins over the joiner's hold (what it holds is not pending here, and
            # a long action joined later may overlap what this commits: part of the approximation)
            return self._commit(horizon - self.max_lag)
        done = e <= cut
        if not done.any():
            return Detections.empty()
        self._pending = Detections(pend.segments[~done], pend.scores[~done], pend.labels[~done])
        out = nms_detections(pend.segments[done], pend.scores[done], pend.labels[done], self.cfg, self._duration(),
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
