"""Detection delay (engine/evaluation/delay.py): action end captured -> first matching event published."""
from __future__ import annotations

import math

import pytest

from engine.evaluation.delay import detection_delays, merge_reports

OFFSET = 1_700_000_000.0  # capture clock of stream second 0


def event(label: str, start: float, end: float, published_at_stream_s: float) -> dict:
    return {"label": label, "start": start, "end": end, "start_wall": OFFSET + start,
            "t_published": OFFSET + published_at_stream_s, "score": 0.5}


def test_delay_is_first_matching_publication_after_the_action_end() -> None:
    truth = [(10.0, 20.0, "sway"), (40.0, 50.0, "spin")]
    events = [
        event("sway", 10.5, 19.0, 70.0),  # a later, also matching event: not the first
        event("sway", 11.0, 20.5, 27.0),  # first matching publication: 7 s after the end
        event("spin", 10.0, 20.0, 21.0),  # right segment, wrong label: no match for sway
        event("spin", 40.0, 41.0, 45.0),  # right label, tIoU 0.1: not a match
        event("spin", 39.0, 50.0, 62.5),  # 12.5 s after the end
    ]
    r = detection_delays(truth, events)
    assert [a.delay_s for a in r.actions] == pytest.approx([7.0, 12.5])
    assert r.reported == 2 and r.share_reported == 1.0
    assert r.percentile(50) == pytest.approx(9.75)


def test_unreported_and_censored_actions() -> None:
    truth = [(10.0, 20.0, "sway"), (30.0, 35.0, "orbit"), (90.0, 95.0, "sway")]
    events = [event("sway", 10.0, 20.0, 25.0)]
    r = detection_delays(truth, events, horizon=OFFSET + 60.0)  # the run stopped at stream second 60
    assert [(a.label, a.delay_s) for a in r.actions] == [("sway", pytest.approx(5.0)), ("orbit", None)]
    assert r.censored == 1 and r.share_reported == 0.5
    s = r.summary()
    assert s["actions"] == 2 and s["reported"] == 1 and s["delay_p50_s"] == 5.0
    empty = detection_delays(truth, [])
    assert empty.reported == 0 and math.isnan(empty.percentile(50)) and empty.summary()["delay_p50_s"] is None


def test_merged_streams() -> None:
    a = detection_delays([(0.0, 10.0, "x")], [event("x", 0.0, 10.0, 14.0)])
    b = detection_delays([(0.0, 10.0, "y"), (20.0, 30.0, "y")], [event("y", 20.0, 30.0, 50.0)])
    m = merge_reports([a, b])
    assert m.reported == 2 and len(m.actions) == 3 and m.percentile(50) == pytest.approx(12.0)
