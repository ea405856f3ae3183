"""MENet training losses (paper sec. 3.5, eq. 3-8) plus the project's class loss.

Per level i (eq. 5-8):

    L_bound = L_B(P_s, G_s) + L_B(P_e, G_e)                          (5)
    L_IoU   = L_asp(M_cls, G_IoU) + lambda1 * L_2(M_reg, G_IoU)       (6)
    L_off   = L_1(M_cent, G_cent) + L_1(M_dura, G_dura)               (7)
    L_total = sum_i (L_bound + L_IoU + lambda2 * L_off [+ w_cls * L_cls])   (8)

with lambda1 = 5, lambda2 = 10 (cfg.train.lambda1 / lambda2). Anchor terms use
only the sampled cells (``engine.training.sampler``).

Choices where the paper is silent:

* Re-weighted BCE (eq. 3, 4): T+ / T- (N+ / N-) are counted over the whole
  batch of a level (as BMN / G-TAD implement it), so the loss is
  mean_{positives}(-log p) + mean_{negatives}(-log(1 - p)) over the batch; for
  one window this is eq. 3 / 4 exactly. If a set is empty its weight L/T would
  be infinite: the empty term contributes 0 and the other stays its plain mean,
  so the loss stays finite. log inputs are clamped to >= 1e-6.
* L_2 (eq. 6): mean squared error over all sampled anchors of the batch
  (``train.reg_loss: paper``, the default). Random anchors are mostly low-tIoU,
  so this pulls M_reg toward 0; ``train.reg_loss: balanced`` is BMN/G-TAD's
  balance instead (:func:`balanced_l2`, not in the paper).
* L_1 (eq. 7): Smooth L1 with beta = 1 (PyTorch's default), averaged over the
  sampled anchors with tIoU > positive_iou (plus, with ``train.best_match``, the
  best anchors of ground truths no anchor reaches that far: eq. 4 positives too); 0 (finite, with a zero gradient)
  when there are none.
* Class loss (beyond the paper, which uses an external classifier): cross-
  entropy over num_classes + 1 logits (background last) on all sampled
  anchors against the class map of ``engine.training.labels``; weight
  ``cls_weight`` (default 1.0), added to each level's loss.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from ..model.menet import LevelOutput
from .labels import LevelTargets

__all__ = ["EPS", "LOSS_TERMS", "REG_HIGH", "REG_LOW", "reweighted_bce", "boundary_loss", "balanced_l2",
           "iou_loss", "offset_loss", "class_loss", "gather_cells", "menet_loss"]

EPS = 1e-6
LOSS_TERMS = ("bound", "asp", "reg", "offset", "cls", "total")
# tIoU groups of the balanced M_reg loss (BMN's pem_reg_loss_func): high > 0.7, 0.3 < mid <= 0.7, low <= 0.3.
REG_HIGH = 0.7
REG_LOW = 0.3
RegLoss = Literal["paper", "balanced"]


def reweighted_bce(prob: torch.Tensor, target: torch.Tensor, threshold: float, eps: float = EPS,
                   extra_positives: torch.Tensor | None = None) -> torch.Tensor:
    """Re-weighted binary cross-entropy, eq. 3 (threshold 0.5) and eq. 4 (threshold 0.9).

    -(1/L) sum(L/T+ * pos * log p + L/T- * neg * log(1-p)) over all elements,
    positives ``target > threshold`` (or ``extra_positives``, e.g. best-matched anchors of
    ``train.best_match``). = mean over positives of -log p + mean over
    negatives of -log(1 - p). An empty set (T+ = 0 or T- = 0) contributes 0
    instead of an infinite weight, leaving the other term's plain mean.
    """
    pos = target > threshold
    if extra_positives is not None:
        pos = pos | extra_positives
    neg = ~pos
    log_p = torch.log(prob.clamp(min=eps))
    log_q = torch.log((1 - prob).clamp(min=eps))
    n_pos = pos.sum().clamp(min=1)  # clamp: empty set -> its (zero) sum / 1 = 0
    n_neg = neg.sum().clamp(min=1)
    return -(torch.where(pos, log_p, 0.0).sum() / n_pos + torch.where(neg, log_q, 0.0).sum() / n_neg)


def boundary_loss(p_start: torch.Tensor, p_end: torch.Tensor, g_start: torch.Tensor, g_end: torch.Tensor,
                  eps: float = EPS) -> torch.Tensor:
    """L_bound, eq. 5: L_B(P_s, G_s) + L_B(P_e, G_e), positives g > 0.5."""
    return reweighted_bce(p_start, g_start, 0.5, eps) + reweighted_bce(p_end, g_end, 0.5, eps)


def balanced_l2(reg: torch.Tensor, g_iou: torch.Tensor, high: float = REG_HIGH,
                low: float = REG_LOW) -> torch.Tensor:
    """M_reg L2 balanced over tIoU groups (``train.reg_loss: balanced``; BMN / G-TAD, not the paper).

    Anchors split into high (tIoU > ``high``), mid (``low`` < tIoU <= ``high``) and
    low (tIoU <= ``low``); the loss is the mean, over the non-empty groups, of each
    group's mean squared error, so every group weighs the same whatever its size.
    BMN subsamples mid and low to the high count at random; that has this
    expectation when the high group is the smallest (the usual case) and no draw
    noise. Where BMN differs: a mid/low group smaller than the high one is fully
    kept there and so weighs less, and BMN's low group excludes tIoU = 0 (there an
    artefact of zeroing the invalid cells; our sampled cells are all valid). With
    no high anchor BMN's loss is 0/0; here the other groups share the weight.
    """
    if reg.numel() == 0:
        return reg.sum() * 0.0  # no anchors: 0, not NaN
    sq = (reg - g_iou) ** 2
    groups = (g_iou > high, (g_iou > low) & (g_iou <= high), g_iou <= low)
    means = [torch.where(m, sq, 0.0).sum() / m.sum() for m in groups if bool(m.any())]
    return torch.stack(means).mean()


def iou_loss(cls: torch.Tensor, reg: torch.Tensor, g_iou: torch.Tensor, positive_iou: float = 0.9,
             eps: float = EPS, reg_loss: RegLoss = "paper",
             matched: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of L_IoU, eq. 6: (L_asp of eq. 4 on cls, L_2 on reg); caller applies lambda1.

    ``reg_loss``: "paper" = MSE over all given anchors; "balanced" = :func:`balanced_l2`.
    ``matched``: anchors that are eq. 4 positives below ``positive_iou`` (``train.best_match``);
    M_reg still regresses their true tIoU.
    """
    asp = reweighted_bce(cls, g_iou, positive_iou, eps, matched)
    if reg_loss == "balanced":
        l2 = balanced_l2(reg, g_iou)
    elif reg_loss == "paper":
        l2 = F.mse_loss(reg, g_iou) if reg.numel() else reg.sum() * 0.0  # no anchors: 0, not NaN
    else:
        raise ValueError(f"reg_loss must be 'paper' or 'balanced', got {reg_loss!r}")
    return asp, l2


def offset_loss(cent: torch.Tensor, dura: torch.Tensor, g_cent: torch.Tensor, g_dura: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """L_off, eq. 7: Smooth L1 on centre and duration offsets over ``mask`` anchors.

    Each term is the mean over masked anchors (tIoU > 0.9); with none masked the
    result is 0 and still part of the graph (zero gradient).
    """
    n = mask.sum().clamp(min=1)
    lc = F.smooth_l1_loss(cent, g_cent, reduction="none")
    ld = F.smooth_l1_loss(dura, g_dura, reduction="none")
    return torch.where(mask, lc, 0.0).sum() / n + torch.where(mask, ld, 0.0).sum() / n


def class_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over K+1 logits [..., K+1] vs class ids [...] (background = K). Not in the paper."""
    if classes.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1))


def gather_cells(maps: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Values of batched maps [B, D, L] at cells (d, s): [N, 2] shared -> [B, N]; [B, N, 2] -> [B, N]."""
    b = maps.shape[0]
    if cells.dim() == 2:
        return maps[:, cells[:, 0], cells[:, 1]]
    rows = torch.arange(b, device=maps.device).unsqueeze(1)
    return maps[rows, cells[..., 0], cells[..., 1]]


def _check_cells(cells: torch.Tensor, length: int, max_duration: int, level: int) -> None:
    if cells.numel() and (bool((cells[..., 0] >= max_duration).any()) or bool((cells.sum(-1) >= length).any())
                          or bool((cells < 0).any())):
        raise ValueError(f"level {level}: cells outside the valid region (s + d < {length}, d < {max_duration})")


def menet_loss(level_outputs: Sequence[LevelOutput], targets: Sequence[Sequence[LevelTargets]],
               cells: Sequence[torch.Tensor | None], lambda1: float = 5.0, lambda2: float = 10.0,
               positive_iou: float = 0.9, cls_weight: float = 1.0, eps: float = EPS,
               reg_loss: RegLoss = "paper") -> dict[str, torch.Tensor]:
    """Total loss, eq. 8, over all levels, and its named terms.

    ``level_outputs[i]``: the detector's output for level i, whose ``anchors``
    were computed for ``cells[i]`` ([N_i, 2] shared by the batch or [B, N_i, 2];
    None or ``anchors is None``: boundary loss only on that level).
    ``targets[b][i]``: ``LevelTargets`` of batch item b on level i.
    ``reg_loss`` picks the M_reg loss (``train.reg_loss``, see :func:`iou_loss`).
    Returns {"bound", "asp", "reg", "offset", "cls", "total"}: each term summed
    over levels, unweighted ("reg" is L_2, "offset" is L_off), and
    total = sum_i(bound + asp + lambda1 * reg + lambda2 * offset + cls_weight * cls).
    """
    if len(targets) != level_outputs[0].start.shape[0]:
        raise ValueError(f"{len(targets)} target lists for a batch of {level_outputs[0].start.shape[0]}")
    device = level_outputs[0].start.device
    zero = level_outputs[0].start.sum() * 0.0  # keeps dtype/device and the graph
    terms = {k: zero for k in LOSS_TERMS}
    for i, out in enumerate(level_outputs):
        tg = [t[i] for t in targets]
        g_start = torch.stack([t.start for t in tg]).to(device)
        g_end = torch.stack([t.end for t in tg]).to(device)
        bound = boundary_loss(out.start, out.end, g_start, g_end, eps)
        level_total = bound
        terms["bound"] = terms["bound"] + bound
        level_cells = cells[i] if i < len(cells) else None
        if out.anchors is not None and level_cells is not None:
            level_cells = level_cells.to(device)
            _check_cells(level_cells, tg[0].length, tg[0].max_duration, i)
            a = out.anchors
            g_iou = gather_cells(torch.stack([t.iou for t in tg]).to(device), level_cells)
            g_cent = gather_cells(torch.stack([t.cent for t in tg]).to(device), level_cells)
            g_dura = gather_cells(torch.stack([t.dura for t in tg]).to(device), level_cells)
            # Offsets are trained where tIoU > positive_iou (sec. 3.5), recomputed from
            # G_IoU so the loss's positive_iou is the one that counts, and on the best-matched
            # anchors of ground truths that threshold never reaches (train.best_match).
            matched = gather_cells(torch.stack([t.matched for t in tg]).to(device), level_cells)
            mask = (g_iou > positive_iou) | matched
            g_cls = gather_cells(torch.stack([t.classes for t in tg]).to(device), level_cells)
            asp, reg = iou_loss(a.cls, a.reg, g_iou, positive_iou, eps, reg_loss, matched)
            off = offset_loss(a.cent, a.dura, g_cent, g_dura, mask)
            cls = class_loss(a.class_logits, g_cls)
            level_total = level_total + asp + lambda1 * reg + lambda2 * off + cls_weight * cls
            terms["asp"] = terms["asp"] + asp
            terms["reg"] = terms["reg"] + reg
            terms["offset"] = terms["offset"] + off
            terms["cls"] = terms["cls"] + cls
        terms["total"] = terms["total"] + level_total
    return terms
