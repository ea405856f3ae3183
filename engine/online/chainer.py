"""Actions longer than a window, second rule: same-label fragments chained into one extra detection.

The joiner (:mod:`engine.online.joiner`) needs the detector to propose the pieces that
window edges cut from a long action. The shipped detector, trained on actions shorter
than a window, does not: inside a long periodic action its boundary heads fire on the
motion's cycles and it proposes short fragments of the right class, spread over the whole
action (measured in docs/results.md, "Long actions"). This module turns such a run of
fragments into one detection, in the spirit of the temporal actionness grouping of
SSN/TAG (grouping what is above threshold and tolerating short gaps). The paper is silent
on actions longer than its windows; the rule and its numbers are ours:

- Only **final** detections are chained (what the merger released), so offline and
  online chain the same set: exact, like the merge itself.
- Two detections of the same label scoring at least ``min_score`` are linked when the gap
  between them is at most ``max_gap_s``; a **chain** is a connected set of links.
- A closed chain longer than ``min_span_windows`` windows and holding at least two
  detections adds ONE detection: its hull (earliest start, latest end), scored by the mean
  of its members' scores times ``score_factor`` (0.5: a guess from fragments ranks below
  what the detector proposed itself). The members stay: an action shorter than a window (the only
  kind the detector was trained on) is reported exactly as before, and a false hull costs
  one false positive at a moderate score.
- A chain is **closed** once no later final detection can link to it: every detection the
  merger can still release starts after the chain's end plus ``max_gap_s``. An open chain is
  four numbers (start, end, score sum, count), whatever it spans, so a camera that never
  stops "acting" costs no memory; there is no span cut, which keeps online equal to offline.

Online, :meth:`FragmentChainer.preview` gives the hulls the open chains would form with the
merger's pending (not yet final) detections: the event lifecycle announces them as
provisional/open events seconds after the fragments are seen, and the final hull takes
that event's id when it matches.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ChainConfig
from ..postprocess.windows import Detections


@dataclass
class _Chain:
    label: int
    start: float
    end: float
    score_sum: float
    members: int

    def absorb(self, start: float, end: float, score: float) -> None:
        self.start, self.end = min(self.start, start), max(self.end, end)
        self.score_sum += score
        self.members += 1

    def merge(self, other: "_Chain") -> None:
        self.start, self.end = min(self.start, other.start), max(self.end, other.end)
        self.score_sum += other.score_sum
        self.members += other.members


def _link(chains: list[_Chain], label: int, start: float, end: float, score: float, gap: float) -> _Chain:
    """Add one detection to ``chains`` (in place): it joins, and bridges, every chain of its label
    within ``gap``; returns the chain it is now part of."""
    near = [c for c in chains if c.label == label and start <= c.end + gap and c.start <= end + gap]
    if not near:
        chain = _Chain(label, start, end, score, 1)
        chains.append(chain)
        return chain
    head = near[0]
    head.absorb(start, end, score)
    for other in near[1:]:
        head.merge(other)
        chains.remove(other)
    return head


def _rows(dets: Detections) -> list[tuple[float, float, float, int]]:
    return [(float(s), float(e), float(sc), int(lab)) for (s, e), sc, lab in zip(dets.segments, dets.scores, dets.labels)]


def _as_detections(rows: list[tuple[float, float, float, int]]) -> Detections:
    if not rows:
        return Detections.empty()
    rows = sorted(rows, key=lambda r: -r[2])
    return Detections(np.array([[r[0], r[1]] for r in rows], np.float64).reshape(-1, 2),
                      np.array([r[2] for r in rows], np.float64), np.array([r[3] for r in rows], np.int64))


class FragmentChainer:
    """Chains of same-label final detections of one stream (module docstring).

    Online: :meth:`add` every batch of final detections, then :meth:`close` with the start
    floor of everything still to come; it returns the hulls of the chains that closed.
    :meth:`flush` at the end of the stream. Offline: :func:`chain_hulls` over all finals.
    """

    def __init__(self, cfg: ChainConfig, window_s: float | None = None) -> None:
        self.cfg = cfg
        self.window_s = window_s
        self._chains: list[_Chain] = []

    def set_window(self, window_s: float) -> None:
        """The window length in seconds (the merger learns it from its first window)."""
        self.window_s = float(window_s)

    def add(self, dets: Detections) -> None:
        if not self.cfg.enabled:
            return
        for s, e, score, label in _rows(dets):
            if score >= self.cfg.min_score:
                _link(self._chains, label, s, e, score, self.cfg.max_gap_s)

    def close(self, start_floor: float) -> Detections:
        """Every final detection still to come starts at or after ``start_floor`` (seconds):
        close the chains none of them can reach; their hulls."""
        done = [c for c in self._chains if c.end + self.cfg.max_gap_s < start_floor]
        for c in done:
            self._chains.remove(c)
        return _as_detections([r for c in done if (r := self._hull(c)) is not None])

    def flush(self) -> Detections:
        return self.close(math.inf)

    def preview(self, pending: Detections) -> Detections:
        """Hulls that the open chains and ``pending`` (detections that may still become final)
        would form now: what the lifecycle announces before the chain is final."""
        if not self.cfg.enabled:
            return Detections.empty()
        chains = [_Chain(c.label, c.start, c.end, c.score_sum, c.members) for c in self._chains]
        for s, e, score, label in _rows(pending):
            if score >= self.cfg.min_score:
                _link(chains, label, s, e, score, self.cfg.max_gap_s)
        return _as_detections([r for c in chains if (r := self._hull(c)) is not None])

    def end_floor(self) -> float:
        """Seconds: every hull still to come ends at or after this (``inf`` when no chain is open)."""
        return min((c.end for c in self._chains), default=math.inf)

    def _hull(self, chain: _Chain) -> tuple[float, float, float, int] | None:
        if chain.members < 2 or self.window_s is None:
            return None
        if chain.end - chain.start <= self.cfg.min_span_windows * self.window_s:
            return None  # a chain a window could hold: its members already say what there is
        return chain.start, chain.end, self.cfg.score_factor * chain.score_sum / chain.members, chain.label


def chain_hulls(finals: Detections, cfg: ChainConfig, window_s: float | None) -> Detections:
    """Batch reference: the hulls :class:`FragmentChainer` adds for these final detections."""
    chainer = FragmentChainer(cfg, window_s)
    chainer.add(finals)
    return chainer.flush()
