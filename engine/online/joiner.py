"""Actions longer than a window: pieces cut by window edges joined into one detection.

A window sees at most ``data.window`` snippets, and decoding clips every segment to its
window. An action longer than that is seen as pieces: the window holding its start
proposes ``[start, right edge]``, windows wholly inside it propose ``[left edge, right
edge]`` and the window holding its end proposes ``[left edge, end]``. Without joining,
each piece is a detection of its own and none matches the action (the paper's windows
are long enough for THUMOS; it does not say what happens to longer actions, so this is
our choice, documented in docs/architecture.md, "Long actions").

The rule (``inference.join``):

- A piece is **right-open** when it ends within ``edge_snippets`` of its window's right
  edge and a later window continues past that edge (the stream goes on); **left-open**
  when it starts within ``edge_snippets`` of its window's left edge and that edge is not
  the stream's start.
- A group starts at a right-open piece (an action cut by the window's right edge). A
  left-open piece of a later window **continues** it when it has the same label and its
  window's left edge lies inside the group (after its start, before its latest end minus
  ``edge_snippets``): the action went on across that edge. A piece open on both sides continues a group and
  keeps it open; so an action spanning N windows is one group, whatever the hop.
- A group with more than one piece becomes ONE detection: its start is the
  score-weighted mean of the starts its pieces saw (those not left-open; the earliest
  start if none did), its end likewise from the ends they saw (not right-open; the
  latest end if none did), its score the best of its pieces' (a window that saw the
  action whole scores it as any detection). A group of one piece is that piece.
- Only pieces scoring at least ``min_score`` are joined.
- Pieces that are neither left- nor right-open, and those below ``min_score``, pass
  through at once: with joining on, everything an action shorter than a window gives is
  what it gave before.

A group is **closed** when no later window can continue it: the next window starts at or
after its latest end (minus ``edge_snippets``). Until then its pieces are
held here, and :attr:`WindowJoiner.hold_from` (the earliest start held) bounds what the
merger may make final, so a joined detection never overlaps one already final: the
incremental merge stays equal to the batch one. A group spanning more than
``max_span_s`` is closed where it stands (bounded memory and finality on a camera that
never stops "acting"); the next pieces start a new group.

Offline (:func:`engine.postprocess.windows.merge_video`) and online
(:class:`engine.online.merger.StreamMerger`) run this same class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import JoinConfig
from ..postprocess.windows import Detections


@dataclass
class _Piece:
    start: float
    end: float
    score: float
    label: int
    window: int  # push index of its window
    window_start: float  # seconds
    left_open: bool
    right_open: bool


@dataclass
class _Group:
    label: int
    pieces: list[_Piece] = field(default_factory=list)

    @property
    def first(self) -> float:
        return min(p.start for p in self.pieces)

    @property
    def last(self) -> float:
        return max(p.end for p in self.pieces)

    def detection(self) -> tuple[float, float, float]:
        """(start, end, score) of the group as one detection (module docstring)."""
        if len(self.pieces) == 1:
            p = self.pieces[0]
            return p.start, p.end, p.score
        seen_starts = [p for p in self.pieces if not p.left_open]
        seen_ends = [p for p in self.pieces if not p.right_open]
        start = (_weighted(seen_starts, "start") if seen_starts else self.first)
        end = (_weighted(seen_ends, "end") if seen_ends else self.last)
        if end <= start:  # estimates crossed (pieces disagree wildly): the pieces' hull
            start, end = self.first, self.last
        return start, end, max(p.score for p in self.pieces)


def _weighted(pieces: list[_Piece], attr: str) -> float:
    w = np.array([max(p.score, 1e-12) for p in pieces])
    return float(np.dot(w, [getattr(p, attr) for p in pieces]) / w.sum())


def _as_detections(rows: list[tuple[float, float, float, int]]) -> Detections:
    if not rows:
        return Detections.empty()
    rows = sorted(rows, key=lambda r: -r[2])
    return Detections(np.array([[r[0], r[1]] for r in rows], np.float64), np.array([r[2] for r in rows], np.float64),
                      np.array([r[3] for r in rows], np.int64))


class WindowJoiner:
    """Joins the pieces of actions longer than a window (module docstring), one stream.

    Feed each window's detections (seconds, after the window's own Soft-NMS) in order with
    :meth:`push`; it returns what the merger may take now: the pieces that pass through
    and the groups that closed. :meth:`flush` at the end of the stream closes the rest.
    """

    def __init__(self, cfg: JoinConfig, seconds_per_snippet: float) -> None:
        self.cfg = cfg
        self.edge_s = cfg.edge_snippets * float(seconds_per_snippet)
        self._groups: list[_Group] = []
        self._pushes = 0
        self._last_window: tuple[float, float] | None = None  # (start, end) seconds of the last window

    @property
    def hold_from(self) -> float:
        """Seconds: the earliest start of a held piece (``inf`` when nothing is held)."""
        return min((g.first for g in self._groups), default=math.inf)

    @property
    def held(self) -> Detections:
        """The open groups as they stand (one detection each): what the lifecycle announces."""
        return _as_detections([(*g.detection(), g.label) for g in self._groups])

    def held_end_floor(self) -> float:
        """Seconds: the earliest end among held groups (``inf`` when none)."""
        return min((g.detection()[1] for g in self._groups), default=math.inf)

    def push(self, window_start_s: float, window_end_s: float, dets: Detections,
             next_start_s: float | None = None, video_duration: float | None = None) -> Detections:
        """One window ``[window_start_s, window_end_s)`` and its detections; returns what passes
        through or closed. ``next_start_s``: where the next window starts if known (groups that
        cannot reach it close now); ``video_duration``: a right edge at or past it is the end."""
        if not self.cfg.enabled:
            return dets
        index = self._pushes
        self._pushes += 1
        out: list[tuple[float, float, float, int]] = []
        # the previous window's pieces were right-open only if this window goes past their edge
        if self._last_window is not None and window_end_s <= self._last_window[1] + 1e-9:
            self._settle_right_edges(index - 1)
        self._last_window = (window_start_s, window_end_s)
        at_end = video_duration is not None and window_end_s >= video_duration - 1e-9
        for (s, e), score, label in zip(dets.segments, dets.scores, dets.labels):
            s, e, score, label = float(s), float(e), float(score), int(label)
            left = window_start_s > 1e-9 and s <= window_start_s + self.edge_s
            right = not at_end and e >= window_end_s - self.edge_s
            if score < self.cfg.min_score or not (left or right):
                out.append((s, e, score, label))
                continue
            piece = _Piece(s, e, score, label, index, window_start_s, left, right)
            # a left-open piece continues every open group of its label its window starts inside
            linked = [g for g in self._groups if left and g.label == label
                      and g.first < window_start_s < g.last - self.edge_s
                      and min(p.window for p in g.pieces) < index]
            if linked:
                group = linked[0]
                for other in linked[1:]:  # the piece bridges groups: one action
                    group.pieces.extend(other.pieces)
                    self._groups.remove(other)
                group.pieces.append(piece)
            elif right:
                self._groups.append(_Group(label, [piece]))
            else:
                out.append((s, e, score, label))  # left-open with nothing to continue: as it is
        horizon = window_start_s if next_start_s is None else next_start_s
        for g in list(self._groups):
            # closed once no later window can start inside it; a group of one piece that no later
            # window continued is that piece (an action that happened to end at the edge)
            if g.last - self.edge_s <= horizon or g.last - g.first > self.cfg.max_span_s:
                self._groups.remove(g)
                out.append((*g.detection(), g.label))
        return _as_detections(out)

    def flush(self) -> Detections:
        """End of the stream: the last window's pieces were not cut by it; every group closes."""
        self._settle_right_edges(self._pushes - 1)
        out = [(*g.detection(), g.label) for g in self._groups]
        self._groups.clear()
        self._last_window = None
        return _as_detections(out)

    def _settle_right_edges(self, window: int) -> None:
        """No window goes past window ``window``'s right edge: its pieces were not cut there."""
        for g in self._groups:
            for p in g.pieces:
                if p.window == window:
                    p.right_open = False
