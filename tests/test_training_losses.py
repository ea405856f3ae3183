"""Losses eq. 3-8 on hand-computed cases, degenerate cases, and a tiny end-to-end fit."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from stream.settings import load_config
from engine.model.head import AnchorOutputs
from engine.model.menet import LevelOutput, TemporalDetector
from engine.training.labels import assign_level, assign_window
from engine.training.losses import (balanced_l2, boundary_loss, class_loss, gather_cells, iou_loss, menet_loss,
                                    offset_loss, reweighted_bce)
from engine.training.sampler import AnchorSampler

T = torch.tensor


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and much faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reweighted_bce_by_hand() -> None:
    # positives (g > 0.5): p = .8, .4; negatives: p = .1, .5 (g = 0.5 is not > 0.5)
    # -(log .8 + log .4) / 2 - (log .9 + log .5) / 2
    loss = reweighted_bce(T([0.8, 0.4, 0.1, 0.5]), T([1.0, 0.6, 0.0, 0.5]), 0.5)
    assert loss.item() == pytest.approx(0.9689709897030682, rel=1e-6)


def test_reweighted_bce_is_eq_3_literally() -> None:
    p, g = torch.rand(20) * 0.98 + 0.01, torch.rand(20)
    pos = (g > 0.5).float()
    n, tp, tn = 20, pos.sum(), (1 - pos).sum()
    eq3 = -(1 / n) * (n / tp * pos * p.log() + n / tn * (1 - pos) * (1 - p).log()).sum()
    assert reweighted_bce(p, g, 0.5).item() == pytest.approx(eq3.item(), rel=1e-5)


def test_reweighted_bce_without_positives_or_negatives_is_finite() -> None:
    # no positive: only the negatives' mean, -(log .8 + log .5) / 2
    assert reweighted_bce(T([0.2, 0.5]), T([0.0, 0.0]), 0.5).item() == pytest.approx(0.4581453659370775, rel=1e-6)
    # only positives: -(log .5 + log .25) / 2
    assert reweighted_bce(T([0.5, 0.25]), T([1.0, 1.0]), 0.5).item() == pytest.approx(1.0397207708399179, rel=1e-6)
    # p = 0 on a positive: log clamped at 1e-6
    p = T([0.0], requires_grad=True)
    loss = reweighted_bce(p, T([1.0]), 0.5)
    assert loss.item() == pytest.approx(13.815510557964274, rel=1e-5)
    loss.backward()
    assert torch.isfinite(p.grad).all()
    assert reweighted_bce(T([]), T([]), 0.5).item() == 0.0


def test_boundary_loss_sums_start_and_end() -> None:
    p, g = T([0.8, 0.4, 0.1, 0.5]), T([1.0, 0.6, 0.0, 0.5])
    assert boundary_loss(p, p, g, g).item() == pytest.approx(2 * 0.9689709897030682, rel=1e-6)


def test_iou_loss_by_hand() -> None:
    # positives (g > .9): idx 0 -> -log .95; negatives p = .5, .2 -> -(log .5 + log .8) / 2
    asp, l2 = iou_loss(T([0.95, 0.5, 0.2]), T([0.9, 0.4, 0.1]), T([0.95, 0.6, 0.0]), 0.9)
    assert asp.item() == pytest.approx(0.509438660324628, rel=1e-6)
    assert l2.item() == pytest.approx((0.05 ** 2 + 0.2 ** 2 + 0.1 ** 2) / 3, rel=1e-5)  # 0.0175


def test_balanced_l2_by_hand() -> None:
    # high (> .7): g .8, .9 vs .6, .9 -> SE .04, 0: mean .02
    # mid (.3, .7]: g .7, .5 vs .7, 0 -> SE 0, .25: mean .125   (.7 itself is mid)
    # low (<= .3): g 0, .1, .3 vs .1, .1, .5 -> SE .01, 0, .04: mean .05/3   (.3 itself is low)
    g = T([0.8, 0.9, 0.7, 0.5, 0.0, 0.1, 0.3])
    reg = T([0.6, 0.9, 0.7, 0.0, 0.1, 0.1, 0.5])
    expected = (0.02 + 0.125 + 0.05 / 3) / 3  # 0.0538889
    assert balanced_l2(reg, g).item() == pytest.approx(expected, rel=1e-5)
    _, l2 = iou_loss(torch.full((7,), 0.5), reg, g, 0.9, reg_loss="balanced")
    assert l2.item() == pytest.approx(expected, rel=1e-5)
    _, plain = iou_loss(torch.full((7,), 0.5), reg, g, 0.9)  # the paper's L2: mean over all 7
    assert plain.item() == pytest.approx(0.34 / 7, rel=1e-5)
    with pytest.raises(ValueError, match="'paper' or 'balanced'"):
        iou_loss(reg, reg, g, 0.9, reg_loss="huber")  # type: ignore[arg-type]


def test_balanced_l2_weighs_each_group_equally() -> None:
    # 1 high, 3 mid, 12 low anchors, every one off by .1: each group's share of the loss and of
    # the gradient is the same (1/3), whatever its size; the plain L2 gives low 12/16 of the gradient
    g = torch.cat([T([0.9]), torch.full((3,), 0.5), torch.full((12,), 0.1)])
    groups = [slice(0, 1), slice(1, 4), slice(4, 16)]
    reg = (g + 0.1).requires_grad_(True)
    loss = balanced_l2(reg, g)
    assert loss.item() == pytest.approx(0.01, rel=1e-5)
    loss.backward()
    shares = [reg.grad[s].sum().item() for s in groups]
    assert shares == pytest.approx([2 * 0.1 / 3] * 3, rel=1e-5)
    # more low anchors change nothing: the low group is one third however large
    more = torch.cat([g, torch.zeros(50)])
    assert balanced_l2(more + 0.1, more).item() == pytest.approx(0.01, rel=1e-5)
    reg2 = (g + 0.1).requires_grad_(True)
    torch.nn.functional.mse_loss(reg2, g).backward()
    assert reg2.grad[groups[2]].sum().item() == pytest.approx(12 * reg2.grad[groups[0]].sum().item(), rel=1e-5)


def test_balanced_l2_empty_groups_and_no_anchors() -> None:
    # only low anchors: the one non-empty group is the whole loss (= the plain mean)
    g, reg = T([0.0, 0.2]), T([0.3, 0.0])
    assert balanced_l2(reg, g).item() == pytest.approx((0.09 + 0.04) / 2, rel=1e-5)
    # no high anchor (BMN would give 0/0): mid and low share the weight
    assert balanced_l2(T([0.5, 0.0]), T([0.6, 0.0])).item() == pytest.approx(0.01 / 2, rel=1e-5)
    empty = torch.zeros(0, requires_grad=True)
    loss = balanced_l2(empty, torch.zeros(0))
    assert loss.item() == 0.0
    loss.backward()
    # batched [B, N]: the groups are counted over the whole batch
    assert balanced_l2(T([[0.9], [0.1]]), T([[0.8], [0.0]])).item() == pytest.approx(0.01, rel=1e-5)


def test_offset_loss_by_hand() -> None:
    mask = T([True, True, False])
    # Smooth L1 (beta 1): cent |.5| -> .125, |2| -> 1.5: mean .8125; dura |.2| -> .02, |1.5| -> 1.0: mean .51
    loss = offset_loss(T([0.5, 2.0, 9.0]), T([-0.2, 1.5, 9.0]), torch.zeros(3), torch.zeros(3), mask)
    assert loss.item() == pytest.approx(1.3225, rel=1e-6)


def test_offset_loss_without_positives_is_zero_and_differentiable() -> None:
    cent = torch.randn(5, requires_grad=True)
    loss = offset_loss(cent, cent * 2, torch.zeros(5), torch.zeros(5), torch.zeros(5, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(cent.grad, torch.zeros(5))


def test_class_loss_by_hand() -> None:
    assert class_loss(torch.zeros(2, 4, 3), torch.zeros(2, 4, dtype=torch.long)).item() == pytest.approx(math.log(3))
    assert class_loss(torch.zeros(1, 0, 3), torch.zeros(1, 0, dtype=torch.long)).item() == 0.0


def test_gather_cells_shared_and_per_item() -> None:
    maps = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    cells = T([[0, 1], [2, 0]])
    assert gather_cells(maps, cells).tolist() == [[1, 8], [13, 20]]
    per_item = T([[[0, 1]], [[1, 2]]])
    assert gather_cells(maps, per_item).tolist() == [[1], [18]]


def _hand_level(start: torch.Tensor, end: torch.Tensor, anchors: AnchorOutputs) -> LevelOutput:
    return LevelOutput(torch.zeros(1, 1, start.shape[-1]), start, end, anchors)


def test_menet_loss_by_hand() -> None:
    # GT [1, 3) on a length-4 window: G_s = [1, 1, .5, 0], G_e = [0, .5, 1, 1]
    tg = assign_level([[1, 3]], [0], window=4, length=4, num_classes=1)
    assert tg.start.tolist() == [1, 1, 0.5, 0] and tg.end.tolist() == [0, 0.5, 1, 1]
    cells = T([[1, 1], [0, 0], [2, 0]])  # [1,3) tIoU 1; [0,1) 0; [0,3) 2/3 (class 0, >= .5)
    half = torch.full((1, 4), 0.5)
    anchors = AnchorOutputs(cls=torch.full((1, 3), 0.5), reg=torch.full((1, 3), 0.5),
                            cent=T([[0.5, 0.0, 0.0]]), dura=T([[-2.0, 0.0, 0.0]]),
                            class_logits=torch.zeros(1, 3, 2))
    out = menet_loss([_hand_level(half, half, anchors)], [[tg]], [cells], lambda1=5, lambda2=10)
    # bound: 2 * (-log .5 - log .5); asp: -log .5 - log .5; reg: (.25 + .25 + (2/3 - .5)^2) / 3
    # offset (cell (1,1) only): .5 * .5^2 + (2 - .5) = 1.625; cls: log 2
    assert out["bound"].item() == pytest.approx(4 * math.log(2), rel=1e-6)
    assert out["asp"].item() == pytest.approx(2 * math.log(2), rel=1e-6)
    assert out["reg"].item() == pytest.approx((0.5 + (2 / 3 - 0.5) ** 2) / 3, rel=1e-5)
    assert out["offset"].item() == pytest.approx(1.625, rel=1e-6)
    assert out["cls"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert out["total"].item() == pytest.approx(21.981659893549246, rel=1e-6)
    assert set(out) == {"bound", "asp", "reg", "offset", "cls", "total"}
    # cls_weight scales only the class term
    out0 = menet_loss([_hand_level(half, half, anchors)], [[tg]], [cells], cls_weight=0.0)
    assert out0["total"].item() == pytest.approx(21.981659893549246 - math.log(2), rel=1e-6)


def test_menet_loss_balanced_reg_by_hand() -> None:
    tg = assign_level([[1, 3]], [0], window=4, length=4, num_classes=1)
    cells = T([[1, 1], [0, 0], [0, 3], [2, 0]])  # tIoU 1 (high), 0, 0 (low), 2/3 (mid)
    half = torch.full((1, 4), 0.5)
    anchors = AnchorOutputs(cls=torch.full((1, 4), 0.5), reg=torch.full((1, 4), 0.5), cent=torch.zeros(1, 4),
                            dura=torch.zeros(1, 4), class_logits=torch.zeros(1, 4, 2))
    paper = menet_loss([_hand_level(half, half, anchors)], [[tg]], [cells], lambda1=5, lambda2=10)
    balanced = menet_loss([_hand_level(half, half, anchors)], [[tg]], [cells], lambda1=5, lambda2=10,
                          reg_loss="balanced")
    mid = (2 / 3 - 0.5) ** 2
    assert paper["reg"].item() == pytest.approx((3 * 0.25 + mid) / 4, rel=1e-5)
    assert balanced["reg"].item() == pytest.approx((0.25 + mid + 0.25) / 3, rel=1e-5)  # low: (.25 + .25) / 2
    # only lambda1 * reg differs between the two totals
    assert balanced["total"].item() - paper["total"].item() == pytest.approx(
        5 * (balanced["reg"].item() - paper["reg"].item()), rel=1e-4)


def test_menet_loss_rejects_invalid_cells() -> None:
    tg = assign_level([[1, 3]], [0], window=4, length=4)
    anchors = AnchorOutputs(*(torch.zeros(1, 1) for _ in range(4)), torch.zeros(1, 1, 2))
    half = torch.full((1, 4), 0.5)
    with pytest.raises(ValueError, match="valid region"):
        menet_loss([_hand_level(half, half, anchors)], [[tg]], [T([[2, 2]])])


def _tiny_detector() -> tuple[TemporalDetector, object]:
    cfg = load_config("tiny")
    cfg.data.window = 32
    cfg.model.level_lengths = [32, 16, 8]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TemporalDetector(cfg, 16), cfg


@pytest.mark.parametrize("case", ["no-gt", "only-positive-anchors"])
def test_menet_loss_finite_without_positives_or_negatives(case: str) -> None:
    det, cfg = _tiny_detector()
    lengths = cfg.level_lengths()
    if case == "no-gt":  # no positive anywhere: T+ = N+ = 0, no offset anchors
        gts = []
        cells = AnchorSampler.from_config(cfg).sample_levels("specialization", epoch=0, step=0)
    else:  # the whole window is the action and the only anchor is it: N- = 0
        gts = [[0, 32]]
        cells = [T([[n - 1, 0]]) for n in lengths]
    targets = [assign_window(gts, [0] * len(gts), lengths, None, cfg.data.num_classes)] * 2
    if case != "no-gt":
        assert all(bool(t.offset_mask[n - 1, 0]) for t, n in zip(targets[0], lengths))
    out = menet_loss(det(torch.randn(2, 16, 32), cells), targets, cells)
    assert all(torch.isfinite(v) for v in out.values())
    if case == "no-gt":
        assert out["offset"].item() == 0.0
    out["total"].backward()
    assert all(torch.isfinite(p.grad).all() for p in det.parameters() if p.grad is not None)


def test_menet_loss_boundary_only_levels() -> None:
    det, cfg = _tiny_detector()
    targets = [assign_window([[4, 12]], [1], cfg.level_lengths(), None, cfg.data.num_classes)]
    out = menet_loss(det(torch.randn(1, 16, 32)), targets, [None, None, None])
    assert out["asp"].item() == 0.0 and out["total"].item() == pytest.approx(out["bound"].item())


def test_training_steps_reduce_the_loss() -> None:
    det, cfg = _tiny_detector()
    lengths = cfg.level_lengths()
    torch.manual_seed(1)
    feats = torch.randn(2, 16, 32)
    targets = [assign_window([[4, 12]], [1], lengths, None, cfg.data.num_classes),
               assign_window([[10, 26], [2, 5]], [0, 3], lengths, None, cfg.data.num_classes)]
    cells = AnchorSampler.from_config(cfg).sample_levels("generalization", epoch=0, step=0)
    opt = torch.optim.Adam(det.parameters(), lr=1e-3)
    kw = dict(lambda1=cfg.train.lambda1, lambda2=cfg.train.lambda2, positive_iou=cfg.train.positive_iou)
    history = []
    for _ in range(30):
        out = menet_loss(det(feats, cells), targets, cells, **kw)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        history.append({k: v.item() for k, v in out.items()})
    with torch.no_grad():
        final = menet_loss(det(feats, cells), targets, cells, **kw)
    assert history[1]["total"] < history[0]["total"]  # the first step already helps
    assert final["total"].item() < 0.7 * history[0]["total"]
    assert final["bound"].item() < history[0]["bound"] and final["cls"].item() < history[0]["cls"]
