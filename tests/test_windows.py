"""Window layout (engine/online/layout.py), the windower, seconds and merging (engine/postprocess/windows.py,
engine/online/merger.py)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import DataConfig, InferenceConfig, JoinConfig, SoftNMSConfig
from engine.evaluation.results_format import read_activitynet_results, write_activitynet_results
from engine.postprocess.decode import Proposals
from engine.postprocess.soft_nms import soft_nms
from engine.online import StreamMerger, StreamWindower, WindowLayout, video_windows
from engine.online.layout import window_pad, window_starts, window_valid_length
from engine.postprocess.windows import (Detections, detections_to_results, merge_video, seconds_per_snippet,
                                        to_seconds)

# ---------------------------------------------------------------- layout


def test_window_layout_cases() -> None:
    assert window_starts(100, 256) == [0]  # short: one window, padded
    assert window_pad(100, 256) == 156 and window_valid_length(100, 0, 256) == 100
    assert window_starts(256, 256) == [0] and window_pad(256, 256) == 0
    assert window_starts(512, 256) == [0, 128, 256]  # exact multiple of the stride
    assert window_starts(300, 256) == [0, 44]  # remainder: last window aligned to the end
    assert window_starts(700, 256) == [0, 128, 256, 384, 444]
    assert window_starts(512, 256, hop=256) == [0, 256]
    assert window_starts(257, 256) == [0, 1]
    assert window_starts(0, 256) == [] and window_pad(0, 256) == 0
    assert all(window_valid_length(700, s, 256) == 256 for s in window_starts(700, 256))
    with pytest.raises(ValueError):
        window_starts(10, 0)
    with pytest.raises(ValueError):
        window_starts(10, 8, hop=0)
    with pytest.raises(ValueError):
        window_starts(10, 8, hop=9)


@given(st.integers(1, 3000), st.integers(1, 300), st.sampled_from([1.0, 0.75, 0.5, 0.25]))
@settings(max_examples=200, deadline=None)
def test_window_layout_properties(n: int, window: int, hop_share: float) -> None:
    stride = max(1, round(window * hop_share))
    starts = window_starts(n, window, stride)
    assert starts[0] == 0
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))  # never less overlap than asked
    if n <= window:
        assert starts == [0] and window_pad(n, window) == window - n
    else:
        assert starts[-1] == n - window  # every window inside the video, last one at the end
        assert all(window_valid_length(n, s, window) == window for s in starts)
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all()


@given(st.integers(0, 700), st.sampled_from([(32, 16), (32, 8), (32, 32), (32, 5), (8, 3)]),
       st.lists(st.integers(0, 699), max_size=4))
@settings(max_examples=150, deadline=None)
def test_windower_gives_the_layout_snippet_by_snippet(n: int, wh: tuple[int, int], batches: list[int]) -> None:
    """Fed one snippet at a time, with features arriving in batches (the engine's MFE), the
    windower emits exactly the layout's windows, each holding its snippets' features."""
    window, hop = wh
    layout = WindowLayout(window, hop)
    feats = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 1.0
    w = StreamWindower(layout, 2)
    got = []
    pending: list[int] = []
    cuts = set(batches)
    for i in range(n):
        w.reserve(i, stamp=i)
        pending.append(i)
        if i in cuts or i == n - 1:
            for j in pending:
                w.put(j, feats[j])
            pending = []
            got += w.ready()
    got += w.end(n)
    assert [g.start for g in got] == window_starts(n, window, hop)
    assert [g.index for g in got] == list(range(len(got)))
    assert not any(g.final for g in got[:-1])  # only the last can close the segment (else the end does)
    for g in got:
        assert g.valid == window_valid_length(n, g.start, window)
        np.testing.assert_array_equal(g.features[:, :g.valid], feats[g.start:g.start + g.valid].T)
        assert not g.features[:, g.valid:].any()
        assert g.stamp == g.start + g.valid - 1
    assert [g.start for g in video_windows(feats, layout)] == [g.start for g in got]


def test_windower_gaps_fill_short_and_restart_long() -> None:
    layout = WindowLayout(8, 4)
    w = StreamWindower(layout, 1, gap_fill=3)
    for i in range(6):
        w.reserve(i)
        w.put(i, np.ones(1, np.float32))
    ready, restarted = w.gap(9, 0.5)  # 3 missing: zero-filled, window 0 (0..7) is complete
    assert not restarted and [r.start for r in ready] == [0]
    assert ready[0].features[0].tolist() == [1] * 6 + [0, 0]
    ready, restarted = w.gap(30, 0.5)  # 21 missing: the segment ends, a new one starts at 30
    assert restarted and [(r.start, r.valid, r.final, r.duration) for r in ready] == [(1, 8, True, 4.5)]
    assert w.base == 30 and w.expected == 30 and w.window_index == 2  # the counter runs on
    w.reserve(30)
    assert [(r.start, r.index) for r in w.end(31)] == [(30, 2)]


def test_seconds() -> None:
    seg = np.array([[0.0, 4.0], [10.5, 12.0]])
    np.testing.assert_allclose(to_seconds(seg, 128, 0.2), [[25.6, 26.4], [27.7, 28.0]])
    thumos = DataConfig(mode="thumos", sigma=5, clip_length=16, resize_short=128, crop=[112, 112], window=256)
    assert seconds_per_snippet(thumos, fps=30.0) == pytest.approx(5 / 30)
    anet = DataConfig(mode="activitynet", sigma=16, clip_length=16, resize_short=128, crop=[112, 112],
                      window=200)
    assert seconds_per_snippet(anet, duration=100.0) == pytest.approx(0.5)
    # ActivityNet: window start 0, the whole window is the whole video
    np.testing.assert_allclose(to_seconds(np.array([[0.0, 200.0]]), 0, 0.5), [[0.0, 100.0]])
    with pytest.raises(ValueError):
        seconds_per_snippet(thumos)
    with pytest.raises(ValueError):
        seconds_per_snippet(anet)


# ---------------------------------------------------------------- merging


def props(segments: list[list[float]], scores: list[float], labels: list[int], window: int = 8,
          num_classes: int = 3) -> Proposals:
    n = len(scores)
    probs = np.full((n, num_classes + 1), 1.0 / (num_classes + 1))
    return Proposals(
        segments=np.asarray(segments, np.float64).reshape(-1, 2), scores=np.asarray(scores, np.float64),
        labels=np.asarray(labels, np.int64), proposal_scores=np.asarray(scores, np.float64) * 2,
        level=np.zeros(n, np.int64), anchors=np.zeros((n, 2), np.int64),
        label_rank=np.zeros(n, np.int64), class_probs=probs, window=window)


NO_JOIN = JoinConfig(enabled=False)


def inference(method: str = "gaussian", agnostic: bool = False, **kw: object) -> InferenceConfig:
    nms = SoftNMSConfig(method=method, class_agnostic=agnostic)  # type: ignore[arg-type]
    cfg = InferenceConfig(soft_nms=nms)
    return dataclasses.replace(cfg, **kw)  # type: ignore[arg-type]


def two_windows(label_b: int = 1) -> list[tuple[int, Proposals]]:
    # window 8 snippets, starts 0 and 4; sps 0.5 s: the same action at 2.5-3.5 s seen twice.
    # (At 8 snippets a window's 2-snippet edge is a quarter of it, so the joiner of long actions
    # would take both sightings for the pieces of one; these tests are about Soft-NMS: they pass
    # join=NO_JOIN.)
    return [(0, props([[5.0, 7.0], [0.5, 1.5]], [0.9, 0.3], [1, 0])),
            (4, props([[1.0, 3.0]], [0.8], [label_b]))]


def test_merge_duplicates_suppressed_hard() -> None:
    det = merge_video(two_windows(), 0.5, 10.0, inference("hard", join=NO_JOIN))
    assert len(det) == 2
    np.testing.assert_allclose(det.segments, [[2.5, 3.5], [0.25, 0.75]])
    np.testing.assert_allclose(det.scores, [0.9, 0.3])
    np.testing.assert_array_equal(det.labels, [1, 0])


def test_merge_duplicates_decayed_gaussian() -> None:
    det = merge_video(two_windows(), 0.5, 10.0, inference("gaussian", join=NO_JOIN))
    np.testing.assert_allclose(det.scores, [0.9, 0.3, 0.8 * math.exp(-1.0 / 0.5)])
    # another class is not suppressed by per-class Soft-NMS ...
    det2 = merge_video(two_windows(label_b=2), 0.5, 10.0, inference("gaussian", join=NO_JOIN))
    np.testing.assert_allclose(det2.scores, [0.9, 0.8, 0.3])
    # ... but is with class_agnostic
    det3 = merge_video(two_windows(label_b=2), 0.5, 10.0, inference("gaussian", agnostic=True, join=NO_JOIN))
    np.testing.assert_allclose(det3.scores, [0.9, 0.3, 0.8 * math.exp(-1.0 / 0.5)])


def test_merge_clips_and_drops_padding() -> None:
    # video 3 s = 6 snippets, one window of 8 padded by 2: the second proposal lies in the padding
    win = [(0, props([[4.0, 7.5], [6.5, 8.0]], [0.9, 0.8], [0, 0]))]
    det = merge_video(win, 0.5, 3.0, inference("gaussian"))
    np.testing.assert_allclose(det.segments, [[2.0, 3.0]])
    np.testing.assert_allclose(det.scores, [0.9])


def test_merge_max_detections_and_min_score() -> None:
    segs = [[float(i), i + 0.5] for i in range(8)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.0005, 0.4, 0.3]
    win = [(0, props(segs, scores, [0] * 8))]
    det = merge_video(win, 1.0, 100.0, inference("gaussian", max_detections=4))
    np.testing.assert_allclose(det.scores, [0.9, 0.8, 0.7, 0.6])
    det = merge_video(win, 1.0, 100.0, inference("gaussian", min_score=0.001))
    assert len(det) == 7 and det.scores.min() >= 0.001


def test_merge_proposals_only() -> None:
    det = merge_video(two_windows(label_b=2), 0.5, 10.0, inference("hard", join=NO_JOIN), proposals_only=True)
    # class-agnostic, proposal scores (2x the labelled ones in `props`)
    np.testing.assert_allclose(det.scores, [1.8, 0.6])


def test_merge_bmn_uses_durations() -> None:
    det = merge_video(two_windows(), 0.5, 10.0, inference("bmn", join=NO_JOIN))
    # IoU 1 > 0.65 + 0.25 * (1 s / 4 s window): decayed by exp(-1 / 0.5)
    np.testing.assert_allclose(det.scores, [0.9, 0.3, 0.8 * math.exp(-1.0 / 0.5)])


def test_merge_empty() -> None:
    det = merge_video([], 0.5, 10.0, inference())
    assert len(det) == 0 and det.segments.shape == (0, 2)
    det = merge_video([(0, props([], [], []))], 0.5, 10.0, inference())
    assert len(det) == 0


def near_duplicates(window: int = 8) -> Proposals:
    # same class, IoU 2 / 2.2 between the first two; the third overlaps neither
    return props([[1.0, 3.0], [1.0, 3.2], [5.0, 6.0]], [0.9, 0.8, 0.5], [1, 1, 1], window)


def one_pass(p: Proposals, sps: float, duration: float, cfg: InferenceConfig) -> np.ndarray:
    """Scores of ONE Soft-NMS pass (cfg.soft_nms, video duration) over a window at 0."""
    c = cfg.soft_nms
    res = soft_nms(p.segments * sps, p.scores, p.labels, method=c.method, sigma=c.sigma,
                   iou_threshold=c.iou_threshold, low_threshold=c.bmn_low, high_threshold=c.bmn_high,
                   duration=duration, class_agnostic=c.class_agnostic, top_k=cfg.max_detections,
                   min_score=cfg.min_score)
    return res.scores


def test_single_window_video_gets_one_soft_nms_pass() -> None:
    det = merge_video([(0, near_duplicates())], 0.5, 10.0, inference("gaussian"))
    decay = math.exp(-(2.0 / 2.2) ** 2 / 0.5)
    # decayed once by its neighbour (0.8 -> 0.2125), not twice (-> 0.0564) as with a
    # per-window pass followed by the video-level pass over the same set
    np.testing.assert_allclose(det.scores, [0.9, 0.5, 0.8 * decay], rtol=1e-12)
    np.testing.assert_allclose(det.segments, [[0.5, 1.5], [2.5, 3.0], [0.5, 1.6]])


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard", "bmn"])
@pytest.mark.parametrize("agnostic", [False, True])
def test_single_window_equals_one_pass_over_its_proposals(method: str, agnostic: bool) -> None:
    # ActivityNet mode: the one window is the whole video (window 200 = duration 50 s)
    cfg = inference(method, agnostic, max_detections=30)
    (_, p), = random_windows(7, n_snippets=200, window=200, max_len=40.0)
    assert len(p) > 10
    det = merge_video([(0, p)], 0.25, 50.0, cfg)
    np.testing.assert_allclose(det.scores, one_pass(p, 0.25, 50.0, cfg), rtol=1e-12)


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard", "bmn"])
@pytest.mark.parametrize("proposals_only", [False, True])
def test_stream_merger_single_window_flush_equals_merge_video(method: str, proposals_only: bool) -> None:
    # THUMOS mode, a video shorter than one window: one window at 0, padded (segments past
    # 4 s are clipped or dropped)
    cfg = inference(method, max_detections=15)
    wins = random_windows(0, n_snippets=20, window=32, max_len=40.0)
    assert len(wins) == 1 and len(wins[0][1]) > 15
    sps, duration = 0.2, 20 * 0.2
    ref = merge_video(wins, sps, duration, cfg, proposals_only=proposals_only)
    merger = StreamMerger(sps, cfg, duration, proposals_only=proposals_only)
    assert len(merger.push(*wins[0])) == 0  # nothing can be final before the end
    merger.flush()
    res = merger.result()
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-12)
    np.testing.assert_allclose(res.segments, ref.segments)
    np.testing.assert_array_equal(res.labels, ref.labels)
    if method != "bmn":
        # the online detector's merger (no duration, no history) flushes the same single pass
        m = StreamMerger(sps, cfg, None, proposals_only=proposals_only, keep_history=False)
        m.push(*wins[0])
        unclipped = merge_video(wins, sps, 1e9, cfg, proposals_only=proposals_only)
        np.testing.assert_allclose(m.flush().scores, unclipped.scores, rtol=1e-12)


def test_multi_window_merge_keeps_two_stage_soft_nms() -> None:
    # an empty second window makes the video two windows: the first window's near-duplicates
    # go through its per-window pass and then the video-level pass, as before
    sps, duration, cfg = 0.5, 10.0, inference("gaussian")
    wins = [(0, near_duplicates()), (4, props([], [], []))]
    det = merge_video(wins, sps, duration, cfg)
    decay = math.exp(-(2.0 / 2.2) ** 2 / 0.5)
    np.testing.assert_allclose(det.scores, [0.9, 0.5, 0.8 * decay * decay], rtol=1e-12)
    merger = StreamMerger(sps, cfg, duration)
    for start, p in wins:
        merger.push(start, p)
    merger.flush()
    np.testing.assert_allclose(merger.result().scores, det.scores, rtol=1e-12)
    # a first window that already emitted detections was not the whole segment either:
    # its flush is the usual release of the (window-NMS'd) pending set
    early = StreamMerger(sps, cfg, duration)
    first = early.push(0, near_duplicates(), next_start=4)  # the duplicates end by 2 s: final
    np.testing.assert_allclose(first.scores, [0.9, 0.8 * decay * decay], rtol=1e-12)
    np.testing.assert_allclose(early.flush().scores, [0.5])


# ---------------------------------------------------------------- streaming


def random_windows(seed: int, n_snippets: int = 200, window: int = 32,
                   max_len: float = 3.0) -> list[tuple[int, Proposals]]:
    """Windows of random proposals; short ones (``max_len``) leave gaps, so exact
    release happens before the end; long ones chain across windows."""
    rng = np.random.default_rng(seed)
    out = []
    for start in window_starts(n_snippets, window, window // 2):
        n = int(rng.integers(0, 25))
        a = rng.uniform(0, window, n)
        seg = np.stack([a, a + rng.uniform(0.01, max_len, n)], 1)
        seg = np.clip(seg, 0, window)  # decoded segments never leave their window
        scores = np.round(rng.random(n), 3)
        out.append((start, props(seg.tolist(), scores.tolist(), rng.integers(0, 3, n).tolist(), window)))
    return out


@pytest.mark.parametrize("method", ["gaussian", "linear", "hard", "bmn"])
@pytest.mark.parametrize("agnostic", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_stream_merger_equals_merge_video(method: str, agnostic: bool, seed: int) -> None:
    cfg = inference(method, agnostic, max_detections=60)
    wins = random_windows(seed)
    sps, duration = 0.2, 200 * 0.2 - 0.1
    ref = merge_video(wins, sps, duration, cfg)
    merger = StreamMerger(sps, cfg, duration)
    early = 0
    for i, (start, p) in enumerate(wins):
        nxt = wins[i + 1][0] if i + 1 < len(wins) else None
        got = merger.push(start, p, next_start=nxt)
        if len(got):
            # final detections never reach past the next window's start
            assert nxt is None or got.segments[:, 1].max() <= nxt * sps + 1e-12
        early += len(got)
    merger.flush()
    assert early > 0  # something was emitted before the end
    res = merger.result()
    assert len(res) == len(ref)
    key = lambda d: np.lexsort((d.labels, d.segments[:, 1], d.segments[:, 0], -np.round(d.scores, 12)))
    a, b = key(ref), key(res)
    np.testing.assert_allclose(res.scores[b], ref.scores[a], rtol=1e-12)
    np.testing.assert_allclose(res.segments[b], ref.segments[a])
    np.testing.assert_array_equal(res.labels[b], ref.labels[a])


def test_stream_merger_without_hint_and_order() -> None:
    cfg = inference("gaussian")
    wins = random_windows(5)
    ref = merge_video(wins, 0.2, 1e9, cfg)
    merger = StreamMerger(0.2, cfg)  # live: no known duration, conservative cut
    for start, p in wins:
        merger.push(start, p)
    merger.flush()
    np.testing.assert_allclose(np.sort(merger.result().scores), np.sort(ref.scores), rtol=1e-12)
    with pytest.raises(ValueError):
        merger.push(0, wins[0][1])
    with pytest.raises(ValueError):
        StreamMerger(0.2, inference("bmn"))  # bmn needs the duration


@pytest.mark.parametrize("method", ["gaussian", "hard", "bmn"])
def test_stream_merger_max_lag_bounds_latency(method: str) -> None:
    cfg = inference(method, max_detections=1000)
    wins = random_windows(3, max_len=40.0)  # long proposals chain across all windows
    sps, duration = 0.2, 40.0
    exact = StreamMerger(sps, cfg, duration)
    lagged = StreamMerger(sps, cfg, duration, max_lag=2.0)
    for i, (start, p) in enumerate(wins):
        nxt = wins[i + 1][0] if i + 1 < len(wins) else None
        assert len(exact.push(start, p, next_start=nxt)) == 0  # the chain blocks exact release
        lagged.push(start, p, next_start=nxt)
        if nxt is not None:
            # everything ending before horizon - max_lag is final by now
            pend = lagged._pending
            assert len(pend) == 0 or pend.segments[:, 1].min() > nxt * sps - 2.0 - 1e-9
    exact.flush()
    lagged.flush()
    ref = merge_video(wins, sps, duration, cfg)
    np.testing.assert_allclose(np.sort(exact.result().scores), np.sort(ref.scores), rtol=1e-12)
    got = lagged.result()
    assert len(got) > 0 and np.isfinite(got.scores).all()
    assert (got.scores >= cfg.min_score).all()
    # an approximation of the same detections: the best ones agree
    assert got.scores.max() == pytest.approx(ref.scores.max())


def test_stream_merger_max_lag_duplicates() -> None:
    # the two-window duplicate: with max_lag 0 the commit happens at each horizon
    for method in ("hard", "gaussian"):
        cfg = inference(method)
        m = StreamMerger(0.5, cfg, 10.0, max_lag=0.0)
        (s0, p0), (s1, p1) = two_windows()
        m.push(s0, p0, next_start=s1)
        m.push(s1, p1, next_start=8)
        m.flush()
        ref = merge_video(two_windows(), 0.5, 10.0, cfg)
        np.testing.assert_allclose(np.sort(m.result().scores), np.sort(ref.scores), rtol=1e-12)


@pytest.mark.parametrize("max_lag", [None, 2.0])
@pytest.mark.parametrize("seed", [0, 3])
def test_stream_merger_emit_floor_bounds_later_detections(max_lag: float | None, seed: int) -> None:
    """emit_floor(): nothing emitted later ends before it (the detector forgets older event ids)."""
    cfg = inference("gaussian", max_detections=1000)
    wins = random_windows(seed, max_len=40.0 if seed == 3 else 3.0)
    merger = StreamMerger(0.2, cfg, None, max_lag=max_lag, keep_history=False)
    assert merger.emit_floor() == -math.inf
    floors: list[float] = []
    checked = 0
    for start, p in wins + [(None, None)]:
        got = merger.flush() if start is None else merger.push(start, p)
        for f in floors:
            assert (got.segments[:, 1] >= f).all()
            checked += len(got)
        if start is not None:
            floors.append(merger.emit_floor())
    assert checked > 0
    assert floors == sorted(floors)


# ---------------------------------------------------------------- results


def test_detections_to_results_roundtrip(tmp_path) -> None:
    det = Detections(np.array([[1.0, 2.5], [3.0, 4.0]]), np.array([0.9, 0.4]), np.array([2, 0]))
    entries = detections_to_results("video_a", det, ["Run", "Jump", "Swim"])
    assert entries[0] == {"label": "Swim", "score": 0.9, "segment": [1.0, 2.5]}
    assert all(type(v) is float for e in entries for v in [e["score"], *e["segment"]])
    path = tmp_path / "res.json"
    write_activitynet_results(path, {"video_a": entries})
    back = read_activitynet_results(path)
    assert list(back.labels) == ["Swim", "Run"]
    np.testing.assert_allclose(back.starts, [1.0, 3.0])
    assert detections_to_results("v", det, None)[0]["label"] == "2"
    with pytest.raises(ValueError):
        detections_to_results("v", det, ["Run"])


def test_stream_merger_without_history_holds_only_pending_detections() -> None:
    """The online detector's merger: final detections leave it, nothing accumulates per event."""
    cfg = InferenceConfig()
    merger = StreamMerger(0.2, cfg, None, max_lag=2.0, keep_history=False)
    rng = np.random.default_rng(0)
    released = 0
    for w in range(200):
        start = w * 8
        segs = np.sort(rng.uniform(0, 16, (6, 2)), axis=1)
        props = Proposals(segments=segs, scores=rng.uniform(0.1, 1, 6), labels=np.zeros(6, np.int64),
                          proposal_scores=np.ones(6), level=np.zeros(6, np.int64),
                          anchors=np.zeros((6, 2), np.int64), label_rank=np.zeros(6, np.int64),
                          class_probs=np.zeros((6, 2)), window=16)
        released += len(merger.push(start, props))
    assert released > 500  # events did flow out
    assert merger._emitted == [] and len(merger._pending) < 60  # bounded state
    with pytest.raises(RuntimeError, match="keep_history"):
        merger.result()


def test_early_windows_look_at_a_live_segment_before_its_first_full_window() -> None:
    layout = WindowLayout(window=32, hop=8)
    feats = np.random.default_rng(0).standard_normal((100, 3)).astype(np.float32)

    def feed(early: bool, gap_at: int | None = None) -> list:
        w = StreamWindower(layout, 3, gap_fill=4, early=early)
        out, i = [], 0
        while i < len(feats):
            if i == gap_at:  # a long gap: a new segment after it
                got, restarted = w.gap(i + 10, 0.5)
                assert restarted
                out += got
                i += 10
                continue
            w.reserve(i)
            w.put(i, feats[i])
            out += w.ready()
            i += 1
        return out + w.end(len(feats))

    plain, early = feed(False), feed(True)
    looks = [x for x in early if x.early]
    # a partial window every hop until the first full one: 8, 16, 24 snippets of the segment's start
    assert [(x.start, x.valid) for x in looks] == [(0, 8), (0, 16), (0, 24)]
    np.testing.assert_array_equal(looks[1].features[:, :16], feats[:16].T)
    assert not looks[1].features[:, 16:].any()  # the rest is padding
    # the regular windows are the same, in the same order, with the same indices
    regular = [x for x in early if not x.early]
    assert [(x.start, x.valid, x.index) for x in regular] == [(x.start, x.valid, x.index) for x in plain]
    for a, b in zip(regular, plain):
        np.testing.assert_array_equal(a.features, b.features)
    # after a long gap the new segment starts with early windows again
    looks = [x for x in feed(True, gap_at=50) if x.early]
    assert [(x.start, x.valid) for x in looks] == [(0, 8), (0, 16), (0, 24), (60, 8), (60, 16), (60, 24)]


def test_merger_look_leaves_the_merge_unchanged() -> None:
    wins = random_windows(3)
    cfg = inference("gaussian")
    plain, looked = StreamMerger(0.5, cfg, 100.0), StreamMerger(0.5, cfg, 100.0)
    out_plain, out_looked = [], []
    for i, (start, p) in enumerate(wins):
        if i < 3:  # early looks: the first window's start, partial proposals
            view = looked.look(wins[0][0], p)
            assert len(view) >= len(looked.pending)  # what it saw is shown beside what is pending
        out_plain.append(plain.push(start, p))
        out_looked.append(looked.push(start, p))
    out_plain.append(plain.flush())
    out_looked.append(looked.flush())
    for a, b in zip(out_plain, out_looked):
        np.testing.assert_array_equal(a.segments, b.segments)
        np.testing.assert_array_equal(a.scores, b.scores)
