"""The event lifecycle of one stream: provisional -> (updates) -> final, or retracted; open.

The merger (:class:`engine.online.merger.StreamMerger`) makes a detection final only
when no later window can change it, about a window length after the action ended. A
person watching a camera wants to hear of the action seconds after it ends, so after
every window this tracker also reports what the merger still holds (``pending``):

- **provisional**: a pending detection that ends at least ``guard_s`` before the
  window's right edge (the window saw it complete). It is published at once with an
  ``event_id``; later windows update the same id (segment, score, label) as evidence
  accrues.
- **open**: a pending detection that reaches into the last ``guard_s`` of the window:
  its start is known, its end is "now". Later windows extend it (a new extent matches an
  open event when it covers at least ``match_tiou`` of it, not only by tIoU, since it
  grows); it becomes provisional when a window sees it end, or final. An action longer
  than a window stays one event: the merger's joiner
  (:class:`engine.online.joiner.WindowJoiner`) holds its pieces as one detection.
- **final**: what the merger releases, unchanged (offline equals online for files). A
  final detection takes the id of the provisional/open event it matches (same label,
  tIoU >= ``match_tiou``), else a new one.
- **retracted**: a provisional/open event that no final detection took once the
  merger can no longer release one that could (its end is before the merger's floor).

Within one window the pending detections are grouped greedily by score: a detection
matching (same label, tIoU >= ``match_tiou``) a tracked event, or a higher-scoring
detection of this window, updates or joins that event instead of starting one, so
overlapping windows' versions of one action are one event. Only detections scoring at
least ``min_score`` are announced before they are final (the merger keeps many faint
ones; every final detection is announced, as before).

Ids: :class:`engine.online.events.EventIdentity` (a hash of stream, instance, label and
the first segment announced), so a replayed file gets the same ids.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..postprocess.windows import Detections
from .events import EventIdentity

PROVISIONAL, OPEN, FINAL, RETRACTED = "provisional", "open", "final", "retracted"
STATES = (PROVISIONAL, OPEN, FINAL, RETRACTED)


@dataclass
class EventUpdate:
    """One lifecycle message: the event's state and its current segment, score and label."""

    state: str
    event_id: str
    label: int
    start: float
    end: float
    score: float


@dataclass
class _Tracked:
    event_id: str
    label: int
    start: float
    end: float
    score: float
    state: str


def _tiou(a0: float, a1: float, b0: float, b1: float) -> float:
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = (a1 - a0) + (b1 - b0) - inter
    return inter / union if union > 0 else 0.0


class EventLifecycle:
    """Provisional, open, final and retracted events of one stream (see the module docstring)."""

    def __init__(self, identity: EventIdentity, guard_s: float = 0.0, min_score: float = 0.0,
                 match_tiou: float = 0.5, change_eps: float = 1e-3) -> None:
        self.identity = identity
        self.guard_s = guard_s
        self.min_score = min_score
        self.match_tiou = match_tiou
        self.change_eps = change_eps
        self.tracked: dict[str, _Tracked] = {}

    def _match(self, label: int, s: float, e: float, among: dict[str, _Tracked]) -> str | None:
        best, best_iou = None, self.match_tiou
        for eid, t in among.items():
            if t.label != label:
                continue
            iou = _tiou(s, e, t.start, t.end)
            if t.state == OPEN and t.end > t.start:
                # an open event grows by a hop per window: while short, its next extent can be more
                # than twice as long (tIoU < 0.5) yet it is the same action if it covers the old one
                iou = max(iou, max(0.0, min(e, t.end) - max(s, t.start)) / (t.end - t.start))
            if iou >= best_iou:
                best, best_iou = eid, iou
        return best

    def final(self, dets: Detections) -> list[EventUpdate]:
        """The merger released ``dets``: each is final, under the id of the event it matches."""
        out = []
        for (s, e), score, lab in zip(dets.segments, dets.scores, dets.labels):
            s, e, score, lab = float(s), float(e), float(score), int(lab)
            eid = self._match(lab, s, e, self.tracked)
            if eid is not None:
                del self.tracked[eid]
            else:
                eid = self.identity.assign(lab, s, e)
            out.append(EventUpdate(FINAL, eid, lab, s, e, score))
        return out

    def window(self, pending: Detections, edge_s: float, floor_s: float) -> list[EventUpdate]:
        """After a window whose right edge is ``edge_s`` (stream seconds): announce or update what
        the merger holds, and retract what it can no longer release (ends before ``floor_s``)."""
        out = []
        order = np.argsort(-pending.scores, kind="stable")
        claimed: dict[str, _Tracked] = {}  # events this window has spoken for
        for i in order:
            score = float(pending.scores[i])
            if score < self.min_score:
                break
            s, e = (float(x) for x in pending.segments[i])
            lab = int(pending.labels[i])
            if self._match(lab, s, e, claimed) is not None:
                continue  # a lower-scoring version of an action this window already reported
            state = OPEN if e > edge_s - self.guard_s else PROVISIONAL
            eid = self._match(lab, s, e, {k: v for k, v in self.tracked.items() if k not in claimed})
            if eid is None:
                eid = self.identity.assign(lab, s, e)
                t = self.tracked[eid] = _Tracked(eid, lab, s, e, score, state)
                out.append(EventUpdate(state, eid, lab, s, e, score))
            else:
                t = self.tracked[eid]
                if (t.state != state or abs(t.start - s) > self.change_eps or abs(t.end - e) > self.change_eps
                        or abs(t.score - score) > self.change_eps):
                    t.start, t.end, t.score, t.state = s, e, score, state
                    out.append(EventUpdate(state, eid, lab, s, e, score))
            claimed[eid] = t
        for eid in [k for k, t in self.tracked.items() if t.end < floor_s]:
            t = self.tracked.pop(eid)
            out.append(EventUpdate(RETRACTED, eid, t.label, t.start, t.end, t.score))
        return out

    def flush(self) -> list[EventUpdate]:
        """End of stream, after the merger's flush was passed to :meth:`final`: what no final took."""
        out = [EventUpdate(RETRACTED, eid, t.label, t.start, t.end, t.score) for eid, t in self.tracked.items()]
        self.tracked.clear()
        return out
