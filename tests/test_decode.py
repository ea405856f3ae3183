"""Proposal decoding (paper sec. 3.5, eqs. 9-10): engine/postprocess/decode.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from stream.settings import load_config
from engine.model.head import DetectorHead
from engine.model.menet import LevelOutput, TemporalDetector
from engine.postprocess.decode import (Proposals, candidate_boundaries, candidate_pairs, decode_level,
                                       decode_window, refine_segments)

# ---------------------------------------------------------------- candidates


def bmn_reference(p: np.ndarray, ratio: float) -> list[int]:
    """BSN/BMN's loop: ends always in; interior = strict peak or > ratio * max."""
    n = len(p)
    keep = [False] * n
    keep[0] = keep[-1] = True
    top = p.max()
    for i in range(1, n - 1):
        if (p[i] > p[i - 1] and p[i] > p[i + 1]) or p[i] > ratio * top:
            keep[i] = True
    return [i for i in range(n) if keep[i]]


def test_candidates_peaks_threshold_edges() -> None:
    p = torch.tensor([0.1, 0.3, 0.2, 0.2, 0.9, 0.1, 0.05, 0.4, 0.1, 0.1])
    # peaks 1, 4, 7; above 0.45: 4; edges always in (BMN)
    assert candidate_boundaries(p, 0.5).tolist() == [0, 1, 4, 7, 9]
    # out-of-range neighbours = -inf: 0 (0.1 < 0.3) and 9 (0.1 == 0.1) are not peaks
    assert candidate_boundaries(p, 0.5, edges="peak").tolist() == [1, 4, 7]


def test_candidates_edge_peaks_with_minus_inf_neighbours() -> None:
    p = torch.tensor([0.8, 0.2, 0.1, 0.3])
    assert candidate_boundaries(p, 0.9, edges="peak").tolist() == [0, 3]
    assert candidate_boundaries(torch.tensor([0.7]), 0.5, edges="peak").tolist() == [0]
    assert candidate_boundaries(torch.tensor([0.7]), 0.5).tolist() == [0]
    assert candidate_boundaries(torch.zeros(0), 0.5).tolist() == []


def test_candidates_plateau_and_strict_threshold() -> None:
    p = torch.tensor([0.1, 0.3, 0.3, 0.1, 1.0, 0.1])
    # a plateau is no peak and 0.3 < 0.5 * 1.0
    assert candidate_boundaries(p, 0.5, edges="peak").tolist() == [4]
    assert candidate_boundaries(p, 0.5).tolist() == [0, 4, 5]
    # the threshold is strict: 0.5 is not > 0.5 * 1.0, and not a peak
    q = torch.tensor([0.0, 0.5, 1.0, 0.5, 0.6, 0.0])
    assert candidate_boundaries(q, 0.5, edges="peak").tolist() == [2, 4]
    with pytest.raises(ValueError):
        candidate_boundaries(p, 0.5, edges="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(20))
def test_candidates_match_bmn_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random(int(rng.integers(3, 60))).astype(np.float32)
    if seed % 3 == 0:
        p = np.round(p, 1)  # ties and plateaus
    ratio = float(rng.uniform(0.2, 0.9))
    assert candidate_boundaries(torch.from_numpy(p), ratio).tolist() == bmn_reference(p, ratio)


def test_candidate_pairs_brute_force() -> None:
    starts = torch.tensor([0, 2, 5, 9, 15])
    ends = torch.tensor([0, 1, 4, 6, 12, 15])
    length, rng, dmax = 16, (0.1, 0.5), 7
    got = {tuple(x) for x in candidate_pairs(starts, ends, length, rng, dmax).tolist()}
    want = {(s, e) for s in starts.tolist() for e in ends.tolist()
            if s <= e and e - s + 1 <= dmax and rng[0] <= (e - s + 1) / length <= rng[1]}
    assert got == want
    # inclusive bounds: scale exactly 1/16 and 16/16
    all_idx = torch.arange(16)
    one = candidate_pairs(all_idx, all_idx, 16, (1 / 16, 1 / 16), 16)
    assert one.tolist() == [[i, i] for i in range(16)]
    full = candidate_pairs(all_idx, all_idx, 16, (1.0, 1.0), 16)
    assert full.tolist() == [[0, 15]]


# ---------------------------------------------------------------- decode_level


L, C, K, W = 16, 8, 3, 64


@pytest.fixture()
def head() -> DetectorHead:
    torch.manual_seed(0)
    return DetectorHead(channels=C, num_samples=4, hidden=16, num_classes=K).eval()


def make_level(seed: int = 1, batch: int = 2) -> LevelOutput:
    g = torch.Generator().manual_seed(seed)
    feature = torch.randn(batch, C, L, generator=g)
    start = torch.full((batch, L), 0.05)
    end = torch.full((batch, L), 0.05)
    # item 0: starts peak at 2 and 9, ends at 5 and 13 (plus the BMN edges 0 and 15)
    start[0, 2], start[0, 9] = 0.9, 0.6
    end[0, 5], end[0, 13] = 0.8, 0.7
    start[1, 4], end[1, 11] = 0.9, 0.9
    return LevelOutput(feature, start, end, None)


def test_decode_level_pairs_respect_ranges(head: DetectorHead) -> None:
    level = make_level()
    rng, dmax = (0.1, 0.6), 10
    out = decode_level(level, head, rng, dmax, 0.5, window=W, level_index=1)
    sdx, edx = out.anchors[:, 0], out.anchors[:, 1]
    assert (sdx <= edx).all()
    dur = edx - sdx + 1
    assert (dur <= dmax).all()
    assert ((dur / L >= rng[0]) & (dur / L <= rng[1])).all()
    starts = {0, 2, 9, 15}
    ends = {0, 5, 13, 15}
    want = {(s, e) for s in starts for e in ends
            if s <= e and e - s + 1 <= dmax and rng[0] <= (e - s + 1) / L <= rng[1]}
    assert {tuple(a) for a in out.anchors.tolist()} == want
    assert (out.level == 1).all() and out.window == W
    assert (out.segments >= 0).all() and (out.segments <= W).all()
    assert (out.labels >= 0).all() and (out.labels < K).all()  # never background


def test_decode_level_scores_are_eq10(head: DetectorHead) -> None:
    level = make_level()
    out = decode_level(level, head, (0.0, 1.0), L, 0.5, window=W)
    pairs = torch.tensor([[2, 5], [9, 13]])
    with torch.no_grad():
        ref = head.anchors(level.feature[0:1], pairs)
    probs = torch.softmax(ref.class_logits[0].double(), dim=-1)
    for j, (s, e) in enumerate(pairs.tolist()):
        row = int(np.flatnonzero((out.anchors[:, 0] == s) & (out.anchors[:, 1] == e))[0])
        p_iou = float(ref.cls[0, j]) * float(ref.reg[0, j])
        prop = float(level.start[0, s]) * float(level.end[0, e]) * p_iou
        best = int(torch.argmax(probs[j, :K]))
        assert out.proposal_scores[row] == pytest.approx(prop, rel=1e-5)
        assert out.labels[row] == best
        assert out.scores[row] == pytest.approx(prop * float(probs[j, best]), rel=1e-5)
        np.testing.assert_allclose(out.class_probs[row], probs[j].numpy(), rtol=1e-6)


def test_decode_level_top_labels(head: DetectorHead) -> None:
    level = make_level()
    one = decode_level(level, head, (0.0, 1.0), L, 0.5, top_labels=1, window=W)
    two = decode_level(level, head, (0.0, 1.0), L, 0.5, top_labels=2, window=W)
    assert len(two) == 2 * len(one)
    np.testing.assert_array_equal(two.anchors[0::2], one.anchors)
    np.testing.assert_array_equal(two.labels[0::2], one.labels)
    np.testing.assert_array_equal(two.label_rank, np.tile([0, 1], len(one)))
    assert (two.labels[0::2] != two.labels[1::2]).all()
    p = two.class_probs
    picked = p[np.arange(len(two)), two.labels]
    np.testing.assert_allclose(two.scores, two.proposal_scores * picked, rtol=1e-12)
    assert (picked[0::2] >= picked[1::2]).all()
    with pytest.raises(ValueError):
        decode_level(level, head, (0.0, 1.0), L, 0.5, top_labels=K + 1)


def test_sparse_equals_dense_maps(head: DetectorHead) -> None:
    level = make_level()
    dmax = 12
    out = decode_level(level, head, (0.0, 1.0), dmax, 0.5, batch_index=0)  # window None: W = L
    with torch.no_grad():
        maps = head.dense_maps(level.feature[0:1], dmax)
    s, e = torch.from_numpy(out.anchors[:, 0]), torch.from_numpy(out.anchors[:, 1])
    d = e - s
    cls, reg = maps["cls"][0, d, s].double(), maps["reg"][0, d, s].double()
    want = level.start[0, s].double() * level.end[0, e].double() * cls * reg
    np.testing.assert_allclose(out.proposal_scores, want.numpy(), rtol=1e-5, atol=1e-9)
    seg = refine_segments(torch.from_numpy(out.anchors), maps["cent"][0, d, s], maps["dura"][0, d, s], L)
    np.testing.assert_allclose(out.segments, seg.numpy(), rtol=1e-5, atol=1e-6)


class ConstantOffsets(nn.Module):
    """Stands in for Offset-ASP: (cent, dura) = constants for every anchor."""

    def __init__(self, cent: float, dura: float) -> None:
        super().__init__()
        self.value = torch.tensor([cent, dura])

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        b, _, n = aligned.shape
        return self.value.view(1, 2, 1).expand(b, 2, n)


def test_refinement_eq9_hand_numbers(head: DetectorHead) -> None:
    # a controlled Offset-ASP output (the fixture builds a fresh head per test)
    head.offset_asp = ConstantOffsets(0.1, math.log(2.0))
    level = make_level()
    out = decode_level(level, head, (0.0, 1.0), L, 0.5, window=W)  # W / L = 4
    seg = {tuple(a): s for a, s in zip(out.anchors.tolist(), out.segments)}
    # (2, 5): c = 4, d = 4 -> c' = 4.4, d' = 8 -> [0.4, 8.4] level units -> x4
    np.testing.assert_allclose(seg[(2, 5)], [1.6, 33.6], rtol=1e-6)
    # (0, 0): c = 0.5, d = 1 -> c' = 0.6, d' = 2 -> [-0.4, 1.6] -> clipped [0, 1.6] -> x4
    np.testing.assert_allclose(seg[(0, 0)], [0.0, 6.4], rtol=1e-6)
    # (9, 15): c = 12.5, d = 7 -> c' = 13.2, d' = 14 -> [6.2, 20.2] -> clipped [6.2, 16] -> x4
    np.testing.assert_allclose(seg[(9, 15)], [24.8, 64.0], rtol=1e-6)
    # zero offsets give back the anchor segment [sdx, edx + 1)
    head.offset_asp = ConstantOffsets(0.0, 0.0)
    out0 = decode_level(level, head, (0.0, 1.0), L, 0.5)
    np.testing.assert_allclose(out0.segments, out0.anchors + np.array([0, 1]), atol=1e-9)


def test_refine_extreme_offsets_finite() -> None:
    seg = refine_segments(torch.tensor([[3, 4]]), torch.tensor([0.0]), torch.tensor([1e4]), 16.0)
    assert torch.isfinite(seg).all() and seg.tolist() == [[0.0, 16.0]]


def test_batch_index_selects_item(head: DetectorHead) -> None:
    level = make_level()
    out = decode_level(level, head, (0.0, 1.0), L, 0.5, batch_index=1)
    # starts {0, 4, 15}, ends {0, 11, 15} (edges always in)
    assert {tuple(a) for a in out.anchors.tolist()} == {(0, 0), (0, 11), (0, 15), (4, 11), (4, 15), (15, 15)}
    single = LevelOutput(level.feature[1:2], level.start[1:2], level.end[1:2], None)
    ref = decode_level(single, head, (0.0, 1.0), L, 0.5)
    np.testing.assert_allclose(out.scores, ref.scores, rtol=1e-6)


def test_max_pairs_keeps_best_bound(head: DetectorHead) -> None:
    g = torch.Generator().manual_seed(3)
    level = LevelOutput(torch.randn(1, C, L, generator=g), torch.rand(1, L, generator=g) * 0.2 + 0.5,
                        torch.rand(1, L, generator=g) * 0.2 + 0.5, None)  # everything passes 0.5 * max
    full = decode_level(level, head, (0.0, 1.0), L, 0.5, max_pairs=None)
    assert len(full) == L * (L + 1) // 2
    capped = decode_level(level, head, (0.0, 1.0), L, 0.5, max_pairs=20)
    assert len(capped) == 20
    ps, pe = level.start[0].double().numpy(), level.end[0].double().numpy()
    b_full = ps[full.anchors[:, 0]] * pe[full.anchors[:, 1]]
    b_cap = ps[capped.anchors[:, 0]] * pe[capped.anchors[:, 1]]
    np.testing.assert_allclose(np.sort(b_cap)[::-1], np.sort(b_full)[::-1][:20])
    # the kept rows score exactly as without the cap
    key = {tuple(a): s for a, s in zip(full.anchors.tolist(), full.scores)}
    np.testing.assert_allclose(capped.scores, [key[tuple(a)] for a in capped.anchors.tolist()], rtol=1e-6)


def test_valid_length_ignores_padding(head: DetectorHead) -> None:
    level = make_level()
    level.start[0, 12], level.end[0, 14] = 0.99, 0.99  # strong boundaries inside the padding
    # W = 64 -> 4 window snippets per level snippet; 40 real snippets = level snippets 0..9
    out = decode_level(level, head, (0.0, 1.0), L, 0.5, window=W, valid_length=40)
    assert out.anchors.max() <= 9
    assert (out.segments <= 40 + 1e-9).all()
    assert {9} <= set(out.anchors[:, 1].tolist())  # the real end is an edge candidate
    none = decode_level(level, head, (0.0, 1.0), L, 0.5, window=W, valid_length=0)
    assert len(none) == 0 and none.class_probs.shape == (0, K + 1)


def test_empty_when_no_pair_fits(head: DetectorHead) -> None:
    level = make_level()
    out = decode_level(level, head, (0.99, 1.0), 4, 0.5)  # scale >= 0.99 needs 16 snippets > D = 4
    assert len(out) == 0 and out.segments.shape == (0, 2)


# ---------------------------------------------------------------- decode_window


def test_decode_window_tiny_config() -> None:
    cfg = load_config("tiny")
    torch.manual_seed(0)
    det = TemporalDetector(cfg, in_channels=32).eval()
    with torch.no_grad():
        levels = det(torch.randn(2, 32, cfg.data.window))
    out = decode_window(levels, det.heads, cfg, batch_index=1, top_labels=2)
    assert isinstance(out, Proposals) and len(out) > 0 and out.window == cfg.data.window
    assert set(out.level.tolist()) <= {0, 1, 2}
    lengths = cfg.level_lengths()
    for i, (lo, hi) in enumerate(cfg.model.scale_ranges):
        a = out.anchors[out.level == i]
        scale = (a[:, 1] - a[:, 0] + 1) / lengths[i]
        assert ((scale >= lo) & (scale <= hi)).all()
        assert (a[:, 1] - a[:, 0] + 1 <= cfg.max_durations()[i]).all()
    assert (out.segments >= 0).all() and (out.segments <= cfg.data.window).all()
    assert np.isfinite(out.scores).all() and (out.scores >= 0).all() and (out.scores <= 1).all()
    # merged = concatenation of the per-level decodes
    lv1 = decode_level(levels[1], det.heads[1], cfg.model.scale_ranges[1], cfg.max_durations()[1],
                       cfg.inference.peak_ratio, 2, batch_index=1, window=cfg.data.window, level_index=1)
    np.testing.assert_allclose(out.scores[out.level == 1], lv1.scores)
    np.testing.assert_allclose(out.segments[out.level == 1], lv1.segments)


def test_decode_window_takes_pair_cap_and_edge_rule_from_the_config() -> None:
    cfg = load_config("tiny")
    torch.manual_seed(0)
    det = TemporalDetector(cfg, in_channels=32).eval()
    with torch.no_grad():
        levels = det(torch.randn(1, 32, cfg.data.window))
    for lv in levels:  # flat boundary curves: every snippet is a candidate, far more pairs than any cap
        lv.start.fill_(0.6)
        lv.end.fill_(0.6)
    uncapped = decode_window(levels, det.heads, cfg, max_pairs=None)
    assert len(uncapped) > 3 * 64
    cfg.inference.max_pairs = 64
    capped = decode_window(levels, det.heads, cfg)
    assert len(capped) <= 64 * len(levels) and np.bincount(capped.level).max() == 64
    cfg.inference.max_pairs = 0  # 0: every pair, as the paper
    assert len(decode_window(levels, det.heads, cfg)) == len(uncapped)
    # a rising curve: every snippet but the first passes 0.5 * max; the first is a candidate only by the edge rule
    for lv in levels:
        n = lv.start.shape[-1]
        lv.start.copy_(torch.linspace(0.01, 0.02, n).expand_as(lv.start))
    always = decode_window(levels, det.heads, cfg)
    cfg.inference.boundary_edges = "peak"
    peak = decode_window(levels, det.heads, cfg)
    assert (always.anchors[:, 0] == 0).any() and not (peak.anchors[:, 0] == 0).any()
