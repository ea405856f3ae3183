"""False detections a subscriber would act on, per hour of video: on idle time and on actions.

A camera spends most of its time idle, and every confident detection there is a false alarm
someone acts on. This counts, for any number of prediction files scored against the same
ground truth, the detections scoring at least ``--min-score`` (0.5, the demo's threshold for a
false event a subscriber would act on) that match no true action (same label, tIoU >= 0.5:
the demo's definition), split into

* ``idle``: less than a quarter of the detection lies inside any true action (it fires on a
  scene where nothing happens), counted per hour of idle time (video time outside every action);
* ``on an action``: the rest (a wrong label or a wrong extent on an action), per hour of video.

Video lengths come from the annotation file's ``duration`` fields (ActivityNet JSON).

    .venv/bin/python benchmarks/false_detections.py --annotations runs/long/annotations.json \\
        --pred shipped=runs/s16/ship-long.json --pred idle=runs/s17/idle-long.json
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from short_actions import load_systems, systems_parser  # noqa: E402  (the same options)

IDLE_INSIDE_FRACTION = 0.25  # a detection with less of itself inside true actions fired on idle time


@dataclass
class FalseDetections:
    videos: int
    video_hours: float
    idle_hours: float
    detections: int  # at or above the score threshold
    false_idle: int
    false_on_action: int
    highest_idle: float  # highest score of a false idle detection (0 when none)

    @property
    def idle_per_idle_hour(self) -> float:
        return self.false_idle / self.idle_hours if self.idle_hours > 0 else 0.0

    @property
    def on_action_per_hour(self) -> float:
        return self.false_on_action / self.video_hours if self.video_hours > 0 else 0.0


def video_durations(annotations: str | Path, videos: set[str]) -> dict[str, float]:
    """``duration`` (seconds) of each of ``videos`` from an ActivityNet-format file."""
    database = json.loads(Path(annotations).read_text())["database"]
    missing = sorted(v for v in videos if "duration" not in database.get(v, {}))
    if missing:
        raise SystemExit(f"{annotations}: no 'duration' for video(s) {', '.join(missing[:5])}")
    return {v: float(database[v]["duration"]) for v in videos}


def _covered_seconds(segments: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of [start, end] inside the union of ``segments``."""
    covered, cursor = 0.0, start
    for s, e in sorted(segments):
        s, e = max(s, cursor), min(e, end)
        if e > s:
            covered += e - s
            cursor = e
    return covered


def count_false(gt: Any, preds: Any, durations: dict[str, float], min_score: float = 0.5) -> FalseDetections:
    by_video: dict[str, list[tuple[float, float, str]]] = {v: [] for v in durations}
    for v, s, e, lab in zip(gt.inst_videos, gt.inst_starts, gt.inst_ends, gt.inst_labels):
        by_video.setdefault(str(v), []).append((float(s), float(e), str(lab)))
    idle_s = sum(d - _covered_seconds([(s, e) for s, e, _ in by_video[v]], 0.0, d) for v, d in durations.items())
    detections = idle = on_action = 0
    highest = 0.0
    for v, s, e, score, lab in zip(preds.videos, preds.starts, preds.ends, preds.scores, preds.labels):
        if str(v) not in durations or score < min_score:
            continue
        detections += 1
        truth = by_video[str(v)]
        same = [(ts, te) for ts, te, tl in truth if tl == str(lab)]
        if any(_tiou((s, e), t) >= 0.5 for t in same):
            continue
        inside = _covered_seconds([(ts, te) for ts, te, _ in truth], float(s), float(e))
        if inside < IDLE_INSIDE_FRACTION * max(float(e - s), 1e-9):
            idle += 1
            highest = max(highest, float(score))
        else:
            on_action += 1
    return FalseDetections(len(durations), sum(durations.values()) / 3600, idle_s / 3600, detections,
                           idle, on_action, highest)


def _tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = systems_parser(__doc__)
    p.add_argument("--min-score", type=float, default=0.5, help="count detections scoring at least this (0.5)")
    a = p.parse_args(argv)
    gt, systems = load_systems(p, a)
    durations = video_durations(a.annotations, set(gt.videos))
    rows = {name: count_false(gt, preds, durations, a.min_score) for name, preds in systems.items()}
    first = next(iter(rows.values()))
    print(f"{first.videos} videos, {first.video_hours * 60:.1f} min, {first.idle_hours * 60:.1f} min of it idle; "
          f"detections scoring >= {a.min_score:g} that match no true action (label, tIoU 0.5)")
    print("| system | detections >= score | false on idle time | per idle hour | highest idle score "
          "| false on an action | per hour |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r.detections} | {r.false_idle} | {r.idle_per_idle_hour:.1f} | {r.highest_idle:.2f} "
              f"| {r.false_on_action} | {r.on_action_per_hour:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({name: dict(asdict(r), idle_per_idle_hour=r.idle_per_idle_hour,
                                                       on_action_per_hour=r.on_action_per_hour)
                                            for name, r in rows.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
