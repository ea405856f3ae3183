"""Actions longer than a window seen only as fragments inside them (engine/online/chainer.py).

The shipped detector, trained on actions shorter than a window, does not propose the pieces
that window edges cut from a long action; inside a long periodic action it proposes short
fragments of the right class. These tests play that window model (each window proposes short
same-label fragments inside every long action it sees, never touching its edges) and check
what a user gets, offline (``merge_video``) and online (``StreamMerger`` + lifecycle).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.config import ChainConfig, InferenceConfig
from engine.online.chainer import FragmentChainer, chain_hulls
from engine.online.events import EventIdentity
from engine.online.layout import window_starts
from engine.online.lifecycle import FINAL, RETRACTED, EventLifecycle
from engine.online.merger import StreamMerger
from engine.postprocess.windows import Detections, merge_video
from test_long_actions import SPS, WINDOW, best_match, proposals, tiou

NO_CHAIN = dataclasses.replace(InferenceConfig(), chain=ChainConfig(enabled=False))


def fragment_windows(actions: list[tuple[float, float, int]], num_snippets: int, hop: int,
                     seed: int = 0) -> list[tuple[int, list]]:
    """Per window: fragments of 4-12 snippets at fixed places inside each action (every ~14
    snippets, ~4.5 s, as a periodic motion's cycles), those it sees whole and away from its edges,
    score 0.3-0.6; plus two faint random segments."""
    rng = np.random.default_rng(seed)
    frags = {}
    for k, (s, e, label) in enumerate(actions):
        t, rows = s, []
        while t + 4 < e:
            length = float(rng.uniform(4, 12))
            rows.append((t, min(t + length, e), float(rng.uniform(0.3, 0.6)), label))
            t += length + float(rng.uniform(2, 8))
        frags[k] = rows
    out = []
    for start in window_starts(num_snippets, WINDOW, hop):
        rows = [(a - start, b - start, sc, lab) for k in frags for a, b, sc, lab in frags[k]
                if a >= start + 3 and b <= start + WINDOW - 3]
        for _ in range(2):
            a = float(rng.uniform(0, WINDOW - 4))
            rows.append((a, a + float(rng.uniform(2, 20)), float(rng.uniform(0.001, 0.02)), int(rng.integers(5))))
        out.append((start, proposals(rows)))
    return out


@pytest.mark.parametrize("spans", [1.5, 3, 6])
def test_fragments_of_a_long_action_are_reported_as_one_detection(spans: float) -> None:
    s, e = 40.0, 40.0 + spans * WINDOW
    total = int(e) + 100
    wins = fragment_windows([(s, e, 3)], total, 64, seed=int(spans * 10))
    dets = merge_video(wins, SPS, total * SPS, InferenceConfig())
    iou, score = best_match(dets, s * SPS, e * SPS, 3, min_score=0.1)
    assert iou >= 0.9, f"the {spans}-window action was not reported whole (best tIoU {iou:.2f})"
    assert 0.15 <= score <= 0.3  # half the fragments' mean score: below what the detector proposed
    # without chaining the user only ever sees fragments
    raw = merge_video(wins, SPS, total * SPS, NO_CHAIN)
    assert best_match(raw, s * SPS, e * SPS, 3, min_score=0.1)[0] < 0.3


def test_a_run_a_window_could_hold_adds_nothing() -> None:
    # fragments of an action shorter than a window: the detections are the fragments, unchanged
    wins = fragment_windows([(30.0, 130.0, 2)], 400, 64, seed=4)
    on = merge_video(wins, SPS, 400 * SPS, InferenceConfig())
    off = merge_video(wins, SPS, 400 * SPS, NO_CHAIN)
    np.testing.assert_allclose(np.sort(on.scores), np.sort(off.scores))


def test_labels_and_gaps_break_chains() -> None:
    # two long actions of one label 40 snippets (12.8 s > max_gap 10 s) apart, and a long action of
    # another label right after: three hulls, none spanning two actions
    actions = [(20.0, 300.0, 0), (340.0, 600.0, 0), (602.0, 900.0, 4)]
    dets = merge_video(fragment_windows(actions, 1000, 64, seed=8), SPS, 1000 * SPS, InferenceConfig())
    for s, e, label in actions:
        assert best_match(dets, s * SPS, e * SPS, label, min_score=0.1)[0] >= 0.9
    assert not any(seg[1] - seg[0] > 320 * SPS for seg in dets.segments)


def test_chainer_closes_only_what_nothing_can_reach() -> None:
    cfg = ChainConfig(max_gap_s=10.0, min_score=0.1, min_span_windows=1.0, score_factor=0.5)
    chainer = FragmentChainer(cfg, window_s=40.0)
    chainer.add(Detections(np.array([[0.0, 5.0], [12.0, 20.0], [28.0, 45.0]]), np.array([0.4, 0.6, 0.5]),
                           np.array([1, 1, 1])))
    assert len(chainer.close(start_floor=50.0)) == 0  # a detection starting at 50 could still link (45 + 10)
    assert chainer.end_floor() == 45.0
    hull = chainer.close(start_floor=55.1)
    assert hull.segments.tolist() == [[0.0, 45.0]] and hull.labels.tolist() == [1]
    assert hull.scores[0] == pytest.approx(0.25)
    assert chainer.end_floor() == np.inf
    # faint detections are not linked; a gap over max_gap_s is not bridged
    assert len(chain_hulls(Detections(np.array([[0.0, 30.0], [35.0, 60.0]]), np.array([0.05, 0.5]),
                                      np.array([1, 1])), cfg, 40.0)) == 0
    assert len(chain_hulls(Detections(np.array([[0.0, 30.0], [40.5, 60.0]]), np.array([0.5, 0.5]),
                                      np.array([1, 1])), cfg, 40.0)) == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_online_equals_offline_with_chains(seed: int) -> None:
    rng = np.random.default_rng(seed)
    actions, t = [], 10.0
    for k in range(4):  # a long action, then long or short ones, random labels and gaps
        length = 300.0 if k == 0 else float(rng.choice([40.0, 90.0, 200.0, 400.0]))
        actions.append((t, t + length, int(rng.integers(3))))
        t += length + float(rng.uniform(5, 60))
    total = int(t) + 50
    wins = fragment_windows(actions, total, 32, seed=seed)
    offline = merge_video(wins, SPS, total * SPS, InferenceConfig())
    merger = StreamMerger(SPS, InferenceConfig(), total * SPS)
    for i, (start, p) in enumerate(wins):
        merger.push(start, p, next_start=wins[i + 1][0] if i + 1 < len(wins) else None)
    merger.flush()
    online = merger.result()
    key = lambda d: sorted(zip(np.round(d.segments[:, 0], 6), np.round(d.segments[:, 1], 6), d.labels.tolist(),
                               np.round(d.scores, 9)))  # noqa: E731
    assert key(online) == key(offline)
    assert any(seg[1] - seg[0] > WINDOW * SPS for seg in offline.segments)  # hulls were made


def test_online_the_long_action_is_announced_soon_after_it_ends_and_finalised_under_that_id() -> None:
    hop = 16
    s, e = 50.0, 50.0 + 4 * WINDOW
    total = int(e) + 300
    wins = fragment_windows([(s, e, 1)], total, hop, seed=21)
    merger = StreamMerger(SPS, InferenceConfig(), None, max_lag=10.0, keep_history=True)
    life = EventLifecycle(EventIdentity("cam", "1"), guard_s=1.0, min_score=0.05)
    first_heard: dict[str, float] = {}
    last: dict[str, tuple[str, float, float]] = {}
    for i, (start, p) in enumerate(wins):
        final = merger.push(start, p, next_start=wins[i + 1][0] if i + 1 < len(wins) else None)
        edge = (start + WINDOW) * SPS
        for u in life.final(final) + life.window(merger.pending, edge, merger.emit_floor()):
            if u.state != RETRACTED and u.label == 1 and tiou(np.array([u.start, u.end]), (s * SPS, e * SPS)) >= 0.5:
                first_heard.setdefault(u.event_id, edge)
            last[u.event_id] = (u.state, u.start, u.end)
    for u in life.final(merger.flush()) + life.flush():
        last[u.event_id] = (u.state, u.start, u.end)
    assert first_heard, "the long action was never reported"
    # a user hears of it (a matching message) within a few hops of its end, not a window later
    assert min(first_heard.values()) - e * SPS <= 4 * hop * SPS + 1.0
    # and one of those events ends final, matching the action
    finals = [eid for eid in first_heard if last[eid][0] == FINAL
              and tiou(np.array(last[eid][1:]), (s * SPS, e * SPS)) >= 0.5]
    assert len(finals) == 1
