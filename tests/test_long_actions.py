"""Actions longer than a window become one detection and one event (engine/online/joiner.py).

Windows see a long action as pieces cut by their edges. These tests play an ideal window model
(each window proposes the part of every true action it sees, clipped to its edges, plus faint
noise) over actions spanning 2 to 10 windows, offline (``merge_video``) and online
(``StreamMerger`` with the event lifecycle), and check what a user gets.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.config import ChainConfig, InferenceConfig, JoinConfig
from engine.online.events import EventIdentity
from engine.online.layout import window_starts
from engine.online.lifecycle import FINAL, OPEN, PROVISIONAL, RETRACTED, EventLifecycle
from engine.online.merger import StreamMerger
from engine.postprocess.decode import Proposals
from engine.postprocess.windows import Detections, merge_video

SPS = 0.32  # seconds per snippet (tiny: 8 frames at 25 fps)
WINDOW = 128


def proposals(rows: list[tuple[float, float, float, int]], window: int = WINDOW, num_classes: int = 5) -> Proposals:
    n = len(rows)
    seg = np.array([[r[0], r[1]] for r in rows], np.float64).reshape(-1, 2)
    scores = np.array([r[2] for r in rows], np.float64)
    return Proposals(segments=seg, scores=scores, labels=np.array([r[3] for r in rows], np.int64),
                     proposal_scores=scores, level=np.zeros(n, np.int64), anchors=np.zeros((n, 2), np.int64),
                     label_rank=np.zeros(n, np.int64),
                     class_probs=np.full((n, num_classes + 1), 1.0 / (num_classes + 1)), window=window)


def ideal_windows(actions: list[tuple[float, float, int]], num_snippets: int, hop: int, seed: int = 0,
                  jitter: float = 1.0) -> list[tuple[int, Proposals]]:
    """Per window: each true action it overlaps, clipped to the window (snippets, window units),
    boundaries it sees jittered by up to ``jitter`` snippets, score 0.5-0.9; plus two faint
    random segments (noise a real model gives too)."""
    rng = np.random.default_rng(seed)
    out = []
    for start in window_starts(num_snippets, WINDOW, hop):
        rows = []
        for s, e, label in actions:
            a, b = max(s, start), min(e, start + WINDOW)
            if b - a < 1:
                continue
            a = a - start + (rng.uniform(-jitter, jitter) if a > start else 0.0)
            b = b - start + (rng.uniform(-jitter, jitter) if b < start + WINDOW else 0.0)
            rows.append((max(a, 0.0), min(b, float(WINDOW)), float(rng.uniform(0.5, 0.9)), label))
        for _ in range(2):
            a = float(rng.uniform(0, WINDOW - 4))
            rows.append((a, a + float(rng.uniform(2, 20)), float(rng.uniform(0.001, 0.02)), int(rng.integers(5))))
        out.append((start, proposals(rows)))
    return out


def tiou(a: np.ndarray, b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def best_match(dets: Detections, s: float, e: float, label: int, min_score: float = 0.3) -> tuple[float, float]:
    """(tIoU, score) of the detection of ``label`` scoring at least ``min_score`` that covers
    [s, e] (seconds) best: what a user thresholding at ``min_score`` sees of the action."""
    hits = [(tiou(seg, (s, e)), float(sc)) for seg, sc, lab in zip(dets.segments, dets.scores, dets.labels)
            if int(lab) == label and sc >= min_score]
    return max(hits) if hits else (0.0, 0.0)


@pytest.mark.parametrize("hop", [64, 16])
@pytest.mark.parametrize("spans", [2, 3, 5, 10])
def test_an_action_spanning_n_windows_is_one_detection_offline(spans: int, hop: int) -> None:
    length = spans * WINDOW  # snippets: at least `spans` windows long
    s, e = 40.0, 40.0 + length
    total = int(e) + 90
    dets = merge_video(ideal_windows([(s, e, 2)], total, hop, seed=spans), SPS, total * SPS, InferenceConfig())
    iou, score = best_match(dets, s * SPS, e * SPS, 2)
    assert iou >= 0.95, f"the {spans}-window action came out as pieces (best tIoU {iou:.2f})"
    assert score >= 0.5  # the top detection of its class, not a faint leftover
    top = dets.scores.argmax()
    assert int(dets.labels[top]) == 2 and tiou(dets.segments[top], (s * SPS, e * SPS)) >= 0.95
    # without joining (and chaining, the other rule), no single detection covers it: what users had before
    off = dataclasses.replace(InferenceConfig(), join=JoinConfig(enabled=False), chain=ChainConfig(enabled=False))
    raw = merge_video(ideal_windows([(s, e, 2)], total, hop, seed=spans), SPS, total * SPS, off)
    assert best_match(raw, s * SPS, e * SPS, 2)[0] < 0.6


def test_short_actions_and_neighbours_are_not_joined() -> None:
    # two same-label actions 10 snippets apart, a different-label action touching the second,
    # all shorter than a window: each stays its own detection; joining changes nothing
    actions = [(30.0, 100.0, 1), (110.0, 190.0, 1), (190.0, 230.0, 3)]
    wins = ideal_windows(actions, 320, 64, seed=3)
    no_chain = dataclasses.replace(InferenceConfig(), chain=ChainConfig(enabled=False))  # the joiner alone
    on = merge_video(wins, SPS, 320 * SPS, no_chain)
    off = merge_video(wins, SPS, 320 * SPS, dataclasses.replace(no_chain, join=JoinConfig(enabled=False)))
    for s, e, label in actions:
        assert best_match(on, s * SPS, e * SPS, label)[0] >= 0.9
    assert not any(seg[1] - seg[0] > 130 * SPS for seg in on.segments)  # nothing spans two of them
    np.testing.assert_allclose(np.sort(on.scores)[-3:], np.sort(off.scores)[-3:])


def test_two_long_actions_of_one_label_stay_two() -> None:
    actions = [(20.0, 300.0, 0), (330.0, 600.0, 0)]
    # the joiner alone: chaining (test_fragment_chains.py) adds a hull over both at half score
    cfg = dataclasses.replace(InferenceConfig(), chain=ChainConfig(enabled=False))
    dets = merge_video(ideal_windows(actions, 700, 64, seed=5), SPS, 700 * SPS, cfg)
    for s, e, label in actions:
        assert best_match(dets, s * SPS, e * SPS, label)[0] >= 0.9
    assert not any(seg[1] - seg[0] > 400 * SPS for seg in dets.segments)


def test_a_group_longer_than_max_span_is_closed_where_it_stands() -> None:
    cfg = dataclasses.replace(InferenceConfig(), join=JoinConfig(max_span_s=100.0), chain=ChainConfig(enabled=False))
    dets = merge_video(ideal_windows([(10.0, 1500.0, 4)], 1600, 64), SPS, 1600 * SPS, cfg)
    long = dets.segments[dets.labels == 4]
    assert (long[:, 1] - long[:, 0]).max() <= 100.0 + WINDOW * SPS  # one window may overshoot the cap
    assert len(long) >= 4  # ~480 s of action in groups of at most ~140 s


@pytest.mark.parametrize("spans", [2, 4, 10])
def test_online_a_long_action_is_one_open_event_then_final_with_the_same_id(spans: int) -> None:
    """The live detector's path: windows every 16 snippets, the merger with its joiner, the lifecycle."""
    hop = 16
    s, e = 50.0, 50.0 + spans * WINDOW
    total = int(e) + 200
    wins = ideal_windows([(s, e, 1)], total, hop, seed=11 + spans)
    merger = StreamMerger(SPS, InferenceConfig(), None, max_lag=10.0, keep_history=True)
    life = EventLifecycle(EventIdentity("cam", "1"), guard_s=1.0, min_score=0.05)
    seen: dict[str, list[tuple[str, float, float, float]]] = {}
    first_open_at = None
    for i, (start, p) in enumerate(wins):
        nxt = wins[i + 1][0] if i + 1 < len(wins) else None
        final = merger.push(start, p, next_start=nxt)
        edge = (start + WINDOW) * SPS
        updates = life.final(final) + life.window(merger.pending, edge, merger.emit_floor())
        for u in updates:
            seen.setdefault(u.event_id, []).append((u.state, u.start, u.end, edge))
            if u.label == 1 and u.state == OPEN and first_open_at is None and u.start < s * SPS + 2:
                first_open_at = edge
    for u in life.final(merger.flush()) + life.flush():
        seen.setdefault(u.event_id, []).append((u.state, u.start, u.end, np.inf))
    # the events of the action: those whose messages overlap it
    ours = {eid: msgs for eid, msgs in seen.items()
            if any(st != RETRACTED and tiou(np.array([a, b]), (s * SPS, e * SPS)) >= 0.5 for st, a, b, _ in msgs)}
    finals = [eid for eid, msgs in ours.items() if msgs[-1][0] == FINAL]
    assert len(finals) == 1, f"the action ended as {len(finals)} final events"
    msgs = ours[finals[0]]
    assert tiou(np.array(msgs[-1][1:3]), (s * SPS, e * SPS)) >= 0.95
    states = [m[0] for m in msgs]
    assert OPEN in states and states.index(OPEN) < len(states) - 1  # announced open, then closed under one id
    # heard of while going on: the open event came within two windows of the action's start
    assert first_open_at is not None and first_open_at <= s * SPS + WINDOW * SPS + 2 * hop * SPS
    # its end was announced (provisional or final) soon after it ended, not a window later
    end_heard = min(m[3] for m in msgs if m[0] in (PROVISIONAL, FINAL) and abs(m[2] - e * SPS) < 2)
    assert end_heard - e * SPS <= 2 * hop * SPS + 1.0
