"""Detection delay: how long after an action ends a live subscriber hears of it.

For a source with known actions (a synthetic camera, or a file with annotations) the
delay of one true action is the time between

- the capture of the action's last frame, and
- the publication of the first event that matches it: the same label and tIoU >= 0.5
  with the true segment.

Both are on the capture host's clock: an event carries ``start``/``end`` in stream
seconds and ``start_wall`` (the capture clock of its start), so the capture clock of
stream second ``t`` is ``t + (start_wall - start)``; ``t_published`` is the publication
clock. This is the figure a person watching a camera experiences; the compute latency
(newest snippet captured -> event published, an event's ``latency_s``) is another,
smaller figure. The delay only means something for live sources, whose stream time
runs with the wall clock.

Actions not matched by any event count as not reported. With ``horizon`` (capture
clock), actions that ended later than that are left out: the run stopped before their
event could come (censored), so they say nothing about the delay.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MATCH_TIOU = 0.5


def segment_tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class ActionDelay:
    """One true action and the first event that matched it (None: never reported)."""

    start: float  # stream seconds
    end: float
    label: str
    delay_s: float | None  # publication of the first matching event - capture of the action's last frame
    event: Mapping[str, Any] | None = None


@dataclass
class DelayReport:
    actions: list[ActionDelay] = field(default_factory=list)
    censored: int = 0  # actions that ended after the horizon (left out)

    @property
    def delays(self) -> list[float]:
        return [a.delay_s for a in self.actions if a.delay_s is not None]

    @property
    def reported(self) -> int:
        return len(self.delays)

    @property
    def share_reported(self) -> float:
        return self.reported / len(self.actions) if self.actions else math.nan

    def percentile(self, q: float) -> float:
        d = self.delays
        return float(np.percentile(d, q)) if d else math.nan

    def summary(self) -> dict[str, Any]:
        return {"actions": len(self.actions), "reported": self.reported,
                "share_reported": round(self.share_reported, 4) if self.actions else None,
                "delay_p50_s": _round(self.percentile(50)), "delay_p95_s": _round(self.percentile(95)),
                "delay_max_s": _round(max(self.delays)) if self.delays else None, "censored": self.censored}


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 3)


def detection_delays(truth: Iterable[tuple[float, float, str]], events: Sequence[Mapping[str, Any]],
                     horizon: float | None = None, min_tiou: float = MATCH_TIOU,
                     since: float | None = None) -> DelayReport:
    """The delay of every true action ``(start, end, label)`` (stream seconds) of ONE stream.

    ``events``: event headers of that stream as published (``start``, ``end``, ``label``,
    ``start_wall``, ``t_published``), in any order; the first published match counts.
    ``since`` (capture clock): actions that ended before it are left out (e.g. before a
    benchmark's measurement phase)."""
    ordered = sorted(events, key=lambda e: e["t_published"])
    report = DelayReport()
    for start, end, label in truth:
        first = next((e for e in ordered if e["label"] == label
                      and segment_tiou((e["start"], e["end"]), (start, end)) >= min_tiou), None)
        end_capture = None
        if first is not None:
            end_capture = end + (first["start_wall"] - first["start"])
        elif ordered:
            e0 = ordered[0]
            end_capture = end + (e0["start_wall"] - e0["start"])
        if since is not None and end_capture is not None and end_capture < since:
            continue
        if horizon is not None and end_capture is not None and end_capture > horizon and (
                first is None or first["t_published"] > horizon):
            report.censored += 1
            continue
        delay = None if first is None or end_capture is None else first["t_published"] - end_capture
        report.actions.append(ActionDelay(start, end, label, delay, first))
    return report


def merge_reports(reports: Iterable[DelayReport]) -> DelayReport:
    """Several streams' reports as one (p50/p95 over every action of every stream)."""
    out = DelayReport()
    for r in reports:
        out.actions += r.actions
        out.censored += r.censored
    return out
