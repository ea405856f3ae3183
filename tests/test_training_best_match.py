"""train.best_match: ground truths no whole-snippet anchor reaches at tIoU > 0.9 get their best anchors
as positives (engine/training/labels.py), and the loss trains them as eq. 4 / eq. 7 positives."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import load_config
from engine.training.labels import assign_level, assign_window
from engine.training.losses import reweighted_bce

# 1.6 snippets between snippet edges: the best anchor is [2, 4) at tIoU 1.5 / 2.1
SHORT = [2.5, 4.1]


def test_a_short_action_has_no_positive_under_the_paper_rule_alone() -> None:
    t = assign_level([SHORT], [1], window=16, length=16, num_classes=3)
    assert float(t.iou.max()) == pytest.approx(1.5 / 2.1)
    assert not bool(t.offset_mask.any())
    assert not bool(t.matched.any())


def test_best_match_makes_its_best_anchor_a_positive_with_its_offsets() -> None:
    t = assign_level([SHORT], [1], window=16, length=16, num_classes=3, best_match=True)
    assert t.matched.nonzero().tolist() == [[1, 2]]  # cell (d=1, s=2) = [2, 4)
    assert torch.equal(t.offset_mask, t.matched)
    # eq. 1-2 against the action: centre 3.3 vs the anchor's 3.0, over its length 2
    assert float(t.cent[1, 2]) == pytest.approx((3.3 - 3.0) / 2)
    assert float(t.dura[1, 2]) == pytest.approx(math.log(1.6 / 2))
    assert int(t.classes[1, 2]) == 1


def test_a_reached_action_adds_no_match() -> None:
    reached = assign_level([[2.0, 7.0]], [0], window=16, length=16, num_classes=3, best_match=True)
    assert not bool(reached.matched.any())
    assert reached.offset_mask.nonzero().tolist() == [[4, 2]]  # only the exact anchor, tIoU 1 > 0.9
    # next to an unreached one, only the unreached one is matched
    both = assign_level([[2.0, 7.0], [9.5, 11.1]], [0, 2], window=16, length=16, num_classes=3, best_match=True)
    assert both.matched.nonzero().tolist() == [[1, 9]]
    assert both.offset_mask.nonzero().tolist() == [[1, 9], [4, 2]]


def test_no_match_where_the_best_anchor_is_mostly_background() -> None:
    # level of 4 cells for a 16-snippet window: the action is [0.625, 1.025) there, 0.4 of a cell;
    # its best cell [0, 1) reaches 0.375 / 1.025 < 0.5
    t = assign_level([SHORT], [1], window=16, length=4, num_classes=3, best_match=True)
    assert float(t.iou.max()) == pytest.approx(0.375 / 1.025)
    assert not bool(t.matched.any())


def test_the_match_floor_is_inclusive_and_the_enclosing_anchor_wins() -> None:
    # 1 snippet centred on a snippet edge: [2, 3) and [3, 4) reach 0.5 / 1.5 each, [2, 4) 1 / 2,
    # exactly MATCH_MIN_IOU: matched
    t = assign_level([[2.5, 3.5]], [0], window=8, length=8, num_classes=1, best_match=True)
    assert t.matched.nonzero().tolist() == [[1, 2]]
    assert float(t.iou[1, 2]) == pytest.approx(0.5)


def test_every_level_gets_its_own_match() -> None:
    levels = assign_window([SHORT], [1], [16, 8, 4], num_classes=3, best_match=True)
    assert [int(t.matched.sum()) for t in levels] == [1, 1, 0]
    assert [int(t.matched.sum()) for t in assign_window([SHORT], [1], [16, 8, 4], num_classes=3)] == [0, 0, 0]


def test_the_loss_counts_matched_anchors_as_positives() -> None:
    prob = torch.tensor([0.9, 0.2, 0.1])
    target = torch.tensor([0.72, 0.3, 0.0])  # no tIoU above 0.9
    matched = torch.tensor([True, False, False])
    paper = reweighted_bce(prob, target, 0.9)
    with_match = reweighted_bce(prob, target, 0.9, extra_positives=matched)
    assert float(paper) == pytest.approx(-(math.log(0.1) + math.log(0.8) + math.log(0.9)) / 3)
    assert float(with_match) == pytest.approx(-math.log(0.9) - (math.log(0.8) + math.log(0.9)) / 2)


def test_the_config_key_reaches_the_targets(tmp_path) -> None:
    assert load_config("configs/tiny.yaml").train.best_match is False  # the paper's rule alone by default
    path = tmp_path / "bm.yaml"
    path.write_text("extends: " + str((__import__("pathlib").Path("configs/tiny.yaml")).resolve())
                    + "\ntrain: {best_match: true}\n")
    assert load_config(str(path)).train.best_match is True
