"""Label assignment for one window (paper sec. 3.5, eq. 1-2).

Time convention (shared with ``engine.model.salign`` and decoding): snippet j
covers [j, j+1) in snippet units of its level; cell (d, s) of a [D, L] map is
the anchor (start_idx, end_idx) = (s, s + d), i.e. the segment [s, s + d + 1).
Valid cells: s + d < L (and d < D by shape).

Per SFPN level i (length L_i = W / 2^i) ground truths given in snippet units of
the full-resolution window [0, W] are scaled by L_i / W, then:

* ``start`` / ``end`` (G_s, G_e, [L_i]): for each snippet period [j, j+1) the
  overlap |[j, j+1) ∩ R| / 1 with the region R = [t - 1.5, t + 1.5] around the
  boundary t (the paper's 1.5 * T_v / L_i is 1.5 snippets of the level), max
  over ground truths.
* ``iou`` (G_IoU, [D_i, L_i]): max tIoU of the cell's segment with any ground
  truth; 0 on invalid cells.
* ``cent`` / ``dura`` (G_cent, G_dura): eq. 1-2 against the best-tIoU ground
  truth (ties: the first one), with c, d the centre and length of the cell's
  segment, i.e. c = s + (d + 1) / 2 and length d + 1. Decoding (eq. 9) must
  invert with the same c and length. Filled for every valid cell when there is
  a ground truth; only ``offset_mask`` cells (tIoU > positive_iou) are trained.
* ``matched`` ([D_i, L_i], bool; ``best_match``, off by default): for each ground
  truth that no cell of the level reaches at tIoU > ``positive_iou``, its best
  cells (tIoU within 1e-9 of its maximum, if that maximum is >= ``MATCH_MIN_IOU``)
  are positives too (``offset_mask`` includes them; the loss adds them to eq. 4's
  positives). Why: anchors are whole snippets, so an action of l snippets whose
  ends fall between snippet edges is reached at best at about l / (l + 1) tIoU;
  with the paper's 0.9 an action under ~9 snippets (3 s here) often has no
  positive anchor at all and IoU-ASP learns to score every anchor on it low
  (28 % of the synthetic benchmark's training actions). The paper is silent on
  ground truths its threshold never reaches; this is the "each ground truth's
  best anchor is positive" rule of Faster R-CNN's RPN and SSD. Positives the
  paper defines are unchanged.
* ``classes`` ([D_i, L_i], long): class of the best ground truth where
  tIoU >= ``class_iou`` (choice: 0.5, the usual "this anchor is that action"
  threshold of two-stage detectors; the paper uses an external classifier and
  gives none), else ``num_classes`` (background, the LAST logit). Invalid cells
  are background.

Ground truths are clipped to [0, W]; those left with length <= 0 are dropped
(they have no tIoU with anything and their "boundaries" would be the window's
edge). A clipped end is labelled as a boundary like a true one (as BMN/G-TAD do).
All maps are computed on the valid cells (a loop over ground truths) in float64 (exact
comparisons against thresholds such as 0.9) and returned as float32: a
256-long level with a few ground truths takes ~3-10 ms on one thread (run
dataset workers with torch.set_num_threads(1); intra-op threads only add
overhead at this size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["LevelTargets", "assign_level", "assign_window", "BOUNDARY_RADIUS", "CLASS_IOU", "MATCH_MIN_IOU"]

BOUNDARY_RADIUS = 1.5  # half-width of R_s / R_e in snippets of the level (paper sec. 3.5)
CLASS_IOU = 0.5  # choice: min tIoU for a cell to carry its ground truth's class
# best_match: a ground truth's best cells become positives only if they overlap it at least this
# much (the class threshold): on a coarse level a short action's best cell can be mostly background.
MATCH_MIN_IOU = CLASS_IOU


@dataclass
class LevelTargets:
    """Training targets of one window on one SFPN level (paper sec. 3.5)."""

    start: torch.Tensor  # G_s [L] float32
    end: torch.Tensor  # G_e [L] float32
    iou: torch.Tensor  # G_IoU [D, L] float32, 0 on invalid cells
    cent: torch.Tensor  # G_cent [D, L] float32 (eq. 2, Δc)
    dura: torch.Tensor  # G_dura [D, L] float32 (eq. 2, Δd)
    offset_mask: torch.Tensor  # [D, L] bool: tIoU > positive_iou or matched, where Offset-ASP is trained
    classes: torch.Tensor  # [D, L] long: class id, num_classes = background
    matched: torch.Tensor  # [D, L] bool: best cells of ground truths no cell reaches (best_match)

    @property
    def length(self) -> int:
        return int(self.start.shape[0])

    @property
    def max_duration(self) -> int:
        return int(self.iou.shape[0])

    def to(self, device: torch.device | str) -> "LevelTargets":
        return LevelTargets(*(getattr(self, f).to(device) for f in
                              ("start", "end", "iou", "cent", "dura", "offset_mask", "classes", "matched")))


def _as_segments(gt_segments: object) -> torch.Tensor:
    seg = torch.as_tensor(np.asarray(gt_segments, dtype=np.float64)).reshape(-1, 2)
    if not torch.isfinite(seg).all():
        raise ValueError("ground-truth segments must be finite")
    return seg


def _as_labels(gt_labels: object | None, count: int, num_classes: int) -> torch.Tensor:
    if gt_labels is None:
        return torch.zeros(count, dtype=torch.long)  # single-class / class-agnostic data
    lab = torch.as_tensor(np.asarray(gt_labels, dtype=np.int64)).reshape(-1)
    if lab.shape[0] != count:
        raise ValueError(f"{lab.shape[0]} labels for {count} ground-truth segments")
    if count and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f"class ids must be in 0..{num_classes - 1}, got {lab.tolist()}")
    return lab


def _boundary_labels(points: torch.Tensor, length: int, radius: float) -> torch.Tensor:
    """Overlap of each period [j, j+1) with [t - radius, t + radius], max over t: [L]."""
    if points.numel() == 0:
        return torch.zeros(length, dtype=torch.float32)
    j = torch.arange(length, dtype=torch.float64).unsqueeze(1)  # [L, 1]
    lo, hi = points - radius, points + radius  # [G]
    overlap = (torch.minimum(j + 1, hi) - torch.maximum(j, lo)).clamp(min=0)  # [L, G]; / 1 snippet
    return overlap.max(dim=1).values.to(torch.float32)


def assign_level(gt_segments: object, gt_labels: object | None, window: int, length: int,
                 max_duration: int | None = None, num_classes: int = 1, positive_iou: float = 0.9,
                 class_iou: float = CLASS_IOU, boundary_radius: float = BOUNDARY_RADIUS,
                 best_match: bool = False) -> LevelTargets:
    """Targets of one level (paper sec. 3.5; offsets eq. 1-2).

    ``gt_segments``: [G, 2] (start, end) in snippet units of the full window
    [0, ``window``]; ``gt_labels``: [G] class ids or None (all class 0).
    ``length``: L_i of the level; ``max_duration``: D_i (default L_i).
    """
    dmax = length if max_duration is None else max_duration
    if not (1 <= dmax <= length):
        raise ValueError(f"max_duration must be in 1..{length}, got {dmax}")
    seg = _as_segments(gt_segments)
    lab = _as_labels(gt_labels, seg.shape[0], num_classes)
    seg = seg.clamp(0, window)  # robustness: the dataset should already have clipped
    keep = seg[:, 1] > seg[:, 0]  # degenerate after clipping: no extent, no boundaries
    seg, lab = seg[keep] * (length / window), lab[keep]
    a, b = seg[:, 0], seg[:, 1]  # [G] in level snippet units

    start = _boundary_labels(a, length, boundary_radius)
    end = _boundary_labels(b, length, boundary_radius)

    # Work on the valid cells only (about half the [D, L] grid), then scatter.
    dd, ss = torch.meshgrid(torch.arange(dmax), torch.arange(length), indexing="ij")
    valid = (ss + dd) < length  # [D, L]
    d, s = dd[valid].to(torch.float64), ss[valid].to(torch.float64)  # [N]
    background = torch.full((dmax, length), num_classes, dtype=torch.long)
    if seg.shape[0] == 0:
        zeros = torch.zeros(dmax, length, dtype=torch.float32)
        return LevelTargets(start, end, zeros, zeros.clone(), zeros.clone(),
                            torch.zeros(dmax, length, dtype=torch.bool), background,
                            torch.zeros(dmax, length, dtype=torch.bool))

    cell_len = d + 1
    seg_e = s + cell_len  # cell (d, s) covers [s, s + d + 1)
    # Running max over ground truths: memory stays O(cells) and it is faster
    # than one [N, G] broadcast for 256-long windows.
    best = torch.zeros_like(s)
    arg = torch.zeros(s.shape, dtype=torch.long)
    matched = torch.zeros(s.shape, dtype=torch.bool)
    for g, (ag, bg) in enumerate(zip(a.tolist(), b.tolist())):
        inter = (seg_e.clamp(max=bg) - s.clamp(min=ag)).clamp_(min=0)
        tiou = inter / (cell_len + (bg - ag) - inter)  # union >= cell length >= 1, never 0
        better = tiou > best  # strict: ties keep the first ground truth
        best = torch.where(better, tiou, best)
        arg.masked_fill_(better, g)
        if best_match and tiou.numel():
            top = float(tiou.max())
            if MATCH_MIN_IOU <= top <= positive_iou:  # unreached by the paper's rule
                matched |= tiou >= top - 1e-9
    # A matched cell's offsets are against its best ground truth, which is the one it was
    # matched to: tIoU >= 0.5 with one of two disjoint segments leaves < 0.5 for the other.

    # eq. 1-2 against the best ground truth; its length > 0 so log is finite
    cent = (((a + b) / 2)[arg] - (s + cell_len / 2)) / cell_len
    dura = torch.log((b - a)[arg] / cell_len)

    def scatter(values: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
        out = torch.full((dmax, length), fill, dtype=values.dtype)
        out[valid] = values
        return out

    iou_map = scatter(best.to(torch.float32))
    mask = scatter((best > positive_iou) | matched, False)
    classes = scatter(torch.where(best >= class_iou, lab[arg], num_classes), num_classes)
    return LevelTargets(start, end, iou_map, scatter(cent.to(torch.float32)),
                        scatter(dura.to(torch.float32)), mask, classes, scatter(matched, False))


def assign_window(gt_segments: object, gt_labels: object | None, level_lengths: Sequence[int],
                  max_durations: Sequence[int] | None = None, num_classes: int = 1,
                  positive_iou: float = 0.9, class_iou: float = CLASS_IOU,
                  window: int | None = None, best_match: bool = False) -> list[LevelTargets]:
    """Targets of one window on every level (sec. 3.5).

    ``window`` (full-resolution length W, the unit of ``gt_segments``) defaults
    to ``level_lengths[0]`` (level 1 has the window's resolution).
    """
    w = level_lengths[0] if window is None else window
    durs = list(level_lengths) if max_durations is None else list(max_durations)
    if len(durs) != len(level_lengths):
        raise ValueError(f"{len(durs)} max_durations for {len(level_lengths)} levels")
    return [assign_level(gt_segments, gt_labels, w, length, dur, num_classes, positive_iou, class_iou,
                         best_match=best_match)
            for length, dur in zip(level_lengths, durs)]
