"""Proposal decoding of one window (paper sec. 3.5, "Inference"; eqs. 9 and 10).

Per SFPN level i (length L_i, window of W full-resolution snippets):

1. **Candidate boundaries** (:func:`candidate_boundaries`): a snippet is a
   candidate start (end) if it is a local peak of P_s (P_e) or its probability
   exceeds ``peak_ratio * max`` (paper: 0.5, "following [14, 12, 15]" = BSN,
   BMN, ...).
2. **Pairs**: every candidate start ``sdx`` with every candidate end ``edx >= sdx``
   whose duration ``edx - sdx + 1`` fits the head's map (``<= D_i``) and whose scale
   ``(edx - sdx + 1) / L_i`` lies in the level's ``[S_min, S_max]`` (inclusive).
3. **Sparse scoring**: SAlign + IoU-ASP + Offset-ASP + classifier run on those
   pairs only (:meth:`DetectorHead.anchors`), never on the dense [D, L] map.
4. **Score** (eq. 10): ``p_s[sdx] * p_e[edx] * cls * reg * p_label``.
5. **Refinement** (eq. 9) of the anchor's segment, clipped to the window, then
   rescaled by ``W / L_i`` so all levels share window snippet units.

Conventions (docs/architecture.md): snippet i covers [i, i+1); anchor
(sdx, edx) covers [sdx, edx + 1) and is map cell (edx - sdx, sdx). The paper
writes the anchor centre-to-centre (c = (sdx + edx) / 2, d = edx - sdx); our
training targets (eqs. 1-2) are computed on [sdx, edx + 1), so decoding uses the
same segment: c = (sdx + edx + 1) / 2, d = edx + 1 - sdx. Durations edx - sdx + 1
>= 1 are exactly the paper's centre-to-centre durations edx - sdx >= 1 shifted
by one snippet, so the pair set ``sdx <= edx`` matches the paper's ``sdx < edx``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from ..config import InferenceConfig, MENetConfig
from ..model.head import DetectorHead
from ..model.menet import LevelOutput
from ..model.segment_classifier import SegmentClassifier

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "Proposals",
    "candidate_boundaries",
    "candidate_pairs",
    "refine_segments",
    "decode_level",
    "decode_window",
    "label_segments",
]

# Cap on scored (start, end) pairs per level and window. The paper scores every
# pair; an untrained or flat boundary curve makes (almost) every snippet a
# candidate (L^2 / 2 = 33k pairs on THUMOS level 0), and each pair costs ~6.5 MMAC
# in the thumos14 head (C*S = 8192 inputs with S = 32), i.e. seconds per window on a CPU. We
# keep the pairs with the largest p_s * p_e: that product is an upper bound of the
# eq. 10 score (every other factor is <= 1), so the cap drops the pairs that could
# score least. 2048 covers all sdx <= edx pairs of 64 starts x 64 ends, well above
# the peaks a trained model has in a 256-snippet window; worst case (random weights)
# thumos14 decoded a window in ~1 s on one CPU thread with S = 16 (benchmarks/bench_decode.py).
DEFAULT_MAX_PAIRS: int = InferenceConfig.max_pairs  # 2048; the config key inference.max_pairs

# Pairs scored per head call: bounds SAlign's [1, C * S, N] buffer (C=256, S=32:
# 32 MiB per 1024 pairs).
_CHUNK = 2048

# exp(dura) is clamped so a wild offset gives a long (then clipped) segment, not inf/nan.
_MAX_LOG_SCALE = 20.0


@dataclass
class Proposals:
    """Decoded proposals of one window; all arrays share the first dimension N.

    ``segments`` are [start, end] in *window* snippet units (full resolution,
    0 = window start). With ``top_labels = k`` each anchor appears k times, once per
    class (``label_rank`` 0..k-1, best first); ``proposal_scores`` and
    ``class_probs`` repeat with it.
    """

    segments: np.ndarray  # [N, 2] float64, window snippet units
    scores: np.ndarray  # [N] float64, eq. 10 with p_label
    labels: np.ndarray  # [N] int64, class id in 0..K-1 (never background)
    proposal_scores: np.ndarray  # [N] float64, eq. 10 without p_label (class-agnostic)
    level: np.ndarray  # [N] int64, SFPN level that produced the proposal
    anchors: np.ndarray  # [N, 2] int64, (sdx, edx) on that level's grid
    label_rank: np.ndarray  # [N] int64, 0 = the proposal's best class
    class_probs: np.ndarray  # [N, K+1] float64, softmax of the classifier, background last
    window: int = 0  # W: the window length the segments are expressed in

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(num_classes: int, window: int = 0) -> "Proposals":
        return Proposals(
            segments=np.zeros((0, 2)), scores=np.zeros(0), labels=np.zeros(0, np.int64),
            proposal_scores=np.zeros(0), level=np.zeros(0, np.int64),
            anchors=np.zeros((0, 2), np.int64), label_rank=np.zeros(0, np.int64),
            class_probs=np.zeros((0, num_classes + 1)), window=window)

    @staticmethod
    def concatenate(parts: Sequence["Proposals"], num_classes: int | None = None,
                    window: int | None = None) -> "Proposals":
        """Stack proposals (e.g. of several levels) in the given order."""
        if not parts:
            if num_classes is None:
                raise ValueError("concatenating no proposals needs num_classes")
            return Proposals.empty(num_classes, window or 0)
        return Proposals(
            segments=np.concatenate([p.segments for p in parts]).reshape(-1, 2),
            scores=np.concatenate([p.scores for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            proposal_scores=np.concatenate([p.proposal_scores for p in parts]),
            level=np.concatenate([p.level for p in parts]),
            anchors=np.concatenate([p.anchors for p in parts]).reshape(-1, 2),
            label_rank=np.concatenate([p.label_rank for p in parts]),
            class_probs=np.concatenate([p.class_probs for p in parts]),
            window=parts[0].window if window is None else window)

    def subset(self, index: np.ndarray) -> "Proposals":
        """Rows ``index`` (boolean mask or positions), order as given."""
        return Proposals(self.segments[index].reshape(-1, 2), self.scores[index], self.labels[index],
                         self.proposal_scores[index], self.level[index],
                         self.anchors[index].reshape(-1, 2), self.label_rank[index],
                         self.class_probs[index], self.window)


# ---------------------------------------------------------------- step 1: candidates


def candidate_boundaries(p: torch.Tensor, peak_ratio: float = 0.5,
                         edges: Literal["always", "peak"] = "always") -> torch.Tensor:
    """Candidate boundary snippets of one probability curve (paper sec. 3.5).

    Snippet i is a candidate if it is a strict local peak
    (``p[i] > p[i-1] and p[i] > p[i+1]``) or ``p[i] > peak_ratio * max(p)`` (strict).

    The paper is silent on the first and last snippet. ``edges="always"``
    (default) follows BSN/BMN's post-processing (``start_bins[[0, -1]] = 1``): both
    end snippets are always candidates, because an action cut by the window (or
    video) edge has its boundary there with no rising flank to peak on; its
    eq. 10 score still carries p[0], so a quiet edge scores low.
    ``edges="peak"`` instead treats out-of-range neighbours as -inf, so an edge is a
    candidate only if it beats its one neighbour (or passes the threshold).

    Plateaus (equal neighbours) are not peaks, as in BMN; the threshold still
    catches high plateaus.

    Args:
        p: [L] probabilities.
    Returns:
        LongTensor of candidate indices, ascending.
    """
    if p.dim() != 1:
        raise ValueError(f"expected a [L] curve, got shape {tuple(p.shape)}")
    n = p.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=p.device)
    neg = torch.full((1,), -math.inf, dtype=p.dtype, device=p.device)
    padded = torch.cat([neg, p, neg])
    peak = (p > padded[:-2]) & (p > padded[2:])
    keep = peak | (p > peak_ratio * p.max())
    if edges == "always":
        keep[0] = True
        keep[-1] = True
    elif edges != "peak":
        raise ValueError(f"edges must be 'always' or 'peak', got {edges!r}")
    return torch.nonzero(keep).flatten()


# ---------------------------------------------------------------- step 2: pairs


def candidate_pairs(starts: torch.Tensor, ends: torch.Tensor, length: int,
                    scale_range: Sequence[float], max_duration: int) -> torch.Tensor:
    """All (sdx, edx) of candidate starts x ends that this level is responsible for.

    Keeps ``sdx <= edx``, ``edx - sdx + 1 <= max_duration`` (the head's map has D
    rows) and ``S_min <= (edx - sdx + 1) / length <= S_max`` (sec. 3.5, inclusive
    at both ends: the paper's closed interval). Returns [N, 2] long, ordered by
    start then end.
    """
    s_min, s_max = float(scale_range[0]), float(scale_range[1])
    s = starts.view(-1, 1)
    e = ends.view(1, -1)
    dur = e - s + 1  # [S, E] durations in level snippets
    scale = dur.to(torch.float64) / length
    ok = (dur >= 1) & (dur <= max_duration) & (scale >= s_min) & (scale <= s_max)
    si, ei = torch.nonzero(ok, as_tuple=True)
    return torch.stack([starts[si], ends[ei]], dim=1)


# ---------------------------------------------------------------- step 5: eq. 9


def refine_segments(pairs: torch.Tensor, cent: torch.Tensor, dura: torch.Tensor,
                    upper: float) -> torch.Tensor:
    """Eq. 9 on anchors (sdx, edx), in the level's snippet units.

    ``c = (sdx + edx + 1) / 2``, ``d = edx + 1 - sdx`` (the anchor segment
    [sdx, edx + 1), the one the eq. 1-2 training targets use);
    ``c' = c + d * cent``, ``d' = d * exp(dura)``; result ``[c' - d'/2, c' + d'/2]``
    clipped to ``[0, upper]``. ``dura`` is clamped to +-20 so exp stays finite.
    """
    sdx = pairs[:, 0].to(torch.float64)
    edx = pairs[:, 1].to(torch.float64)
    c = (sdx + edx + 1.0) / 2.0
    d = edx + 1.0 - sdx
    c2 = c + d * cent.to(torch.float64)
    d2 = d * torch.exp(dura.to(torch.float64).clamp(-_MAX_LOG_SCALE, _MAX_LOG_SCALE))
    seg = torch.stack([c2 - d2 / 2.0, c2 + d2 / 2.0], dim=1)
    return seg.clamp(0.0, float(upper))


# ---------------------------------------------------------------- per level


def decode_level(level: LevelOutput, head: DetectorHead, scale_range: Sequence[float],
                 max_duration: int, peak_ratio: float = 0.5, top_labels: int = 1, *,
                 batch_index: int = 0, window: int | None = None, level_index: int = 0,
                 valid_length: float | None = None, max_pairs: int | None = DEFAULT_MAX_PAIRS,
                 edges: Literal["always", "peak"] = "always") -> Proposals:
    """Decode one SFPN level of batch item ``batch_index`` (sec. 3.5, eqs. 9-10).

    Args:
        level: the level's output; only ``feature``, ``start`` and ``end`` are read
            (``level.anchors`` is ignored: the candidate pairs are asked for here).
        head: that level's :class:`DetectorHead` (eval mode is the caller's job).
        scale_range: ``[S_min, S_max]`` of the level (``cfg.model.scale_ranges[i]``).
        max_duration: D_i, the head's map height: anchors last at most D_i snippets.
        peak_ratio: threshold ratio of :func:`candidate_boundaries`.
        top_labels: emit each anchor k times with its k best non-background classes.
        window: W, the full-resolution window length; segments are scaled by
            ``W / L_i``. ``None``: W = L_i (no rescaling).
        level_index: stored in ``Proposals.level``.
        valid_length: real (unpadded) snippets of the window, in window units; a
            window padded at the video end only proposes inside the real part:
            candidates are taken from the level snippets that start before it,
            the edge rule applies at the real end, and segments are clipped to it.
        max_pairs: keep at most this many pairs, those with the largest
            ``p_s * p_e`` (ties: lower start, then lower end). ``None``: no cap.
        edges: boundary rule at the ends, see :func:`candidate_boundaries`.

    Returns:
        :class:`Proposals` ordered by pair (start, end) then label rank.
    """
    if top_labels < 1:
        raise ValueError(f"top_labels must be >= 1, got {top_labels}")
    feature = level.feature[batch_index:batch_index + 1]
    p_s = level.start[batch_index].detach()
    p_e = level.end[batch_index].detach()
    length = int(p_s.shape[0])
    num_classes = head.num_classes
    if top_labels > num_classes:
        raise ValueError(f"top_labels={top_labels} exceeds the {num_classes} classes")
    w = length if window is None else int(window)
    ratio = w / length  # window snippets per level snippet
    upper = float(length)
    n_valid = length
    if valid_length is not None:
        upper = min(float(length), float(valid_length) / ratio)
        # level snippet j starts at j * ratio (window units); it is real if that is < valid_length
        n_valid = min(length, max(0, math.ceil(float(valid_length) / ratio - 1e-9)))
    empty = Proposals.empty(num_classes, w)
    if n_valid == 0:
        return empty
    starts = candidate_boundaries(p_s[:n_valid], peak_ratio, edges)
    ends = candidate_boundaries(p_e[:n_valid], peak_ratio, edges)
    pairs = candidate_pairs(starts, ends, length, scale_range, max_duration)
    if pairs.shape[0] == 0:
        return empty
    bound = (p_s[pairs[:, 0]] * p_e[pairs[:, 1]]).to(torch.float64)
    if max_pairs is not None and pairs.shape[0] > max_pairs:
        # stable sort: ties keep the (start, end) order of candidate_pairs
        order = torch.sort(-bound, stable=True).indices[:max_pairs]
        order = torch.sort(order).values  # back to (start, end) order
        pairs, bound = pairs[order], bound[order]

    with torch.no_grad():
        outs = [head.anchors(feature, pairs[i:i + _CHUNK]) for i in range(0, pairs.shape[0], _CHUNK)]
    cls = torch.cat([o.cls[0] for o in outs]).to(torch.float64)
    reg = torch.cat([o.reg[0] for o in outs]).to(torch.float64)
    cent = torch.cat([o.cent[0] for o in outs])
    dura = torch.cat([o.dura[0] for o in outs])
    logits = torch.cat([o.class_logits[0] for o in outs]).to(torch.float64)

    proposal_score = bound * cls * reg  # eq. 10 without p_label
    probs = torch.softmax(logits, dim=-1)  # [N, K+1], background last
    # top-k over the foreground columns; stable sort so ties pick the lower class id
    top = torch.sort(-probs[:, :num_classes], dim=1, stable=True).indices[:, :top_labels]  # [N, k]
    p_label = probs.gather(1, top)
    segments = refine_segments(pairs, cent, dura, upper) * ratio

    n, k = pairs.shape[0], top_labels
    # results leave the device once, as float64/int64 numpy (decoding may run on a GPU)
    pairs_c, top_c = pairs.cpu(), top.cpu()
    probs_c, prop_c = probs.cpu(), proposal_score.cpu()
    rep = torch.arange(n).repeat_interleave(k)  # proposal-major, label rank minor
    return Proposals(
        segments=segments.cpu()[rep].numpy(),
        scores=(prop_c.unsqueeze(1) * p_label.cpu()).reshape(-1).numpy(),
        labels=top_c.reshape(-1).numpy().astype(np.int64),
        proposal_scores=prop_c[rep].numpy(),
        level=np.full(n * k, level_index, dtype=np.int64),
        anchors=pairs_c[rep].numpy().astype(np.int64),
        label_rank=np.tile(np.arange(k, dtype=np.int64), n),
        class_probs=probs_c[rep].numpy(),
        window=w,
    )


# ---------------------------------------------------------------- whole window


def label_segments(proposals: Proposals, features: Sequence[torch.Tensor], labeller: SegmentClassifier,
                   top_labels: int = 1) -> Proposals:
    """Relabel one window's proposals with the segment classifier.

    ``proposals`` hold one row per anchor (decoded with ``top_labels=1``); the result has
    each anchor ``top_labels`` times, once for each of its best classes, with score =
    ``proposal_score * p(class)`` (eq. 10 with the segment classifier's p_label). The
    classifier reads the refined segment on ``features``: the sequences it was built for,
    [C_i, L_i] each, of this window (the MREM output or the MFE window: model.segment_input).
    ``class_probs`` holds its probabilities, with a zero background column.
    """
    n = len(proposals)
    num_classes = labeller.num_classes
    if top_labels > num_classes:
        raise ValueError(f"top_labels={top_labels} exceeds the {num_classes} classes")
    if n == 0:
        return Proposals.empty(num_classes, proposals.window)
    segs = torch.from_numpy(np.ascontiguousarray(proposals.segments, dtype=np.float32)).to(features[0].device)
    with torch.no_grad():
        probs = torch.softmax(labeller(features, segs).to(torch.float64), dim=-1).cpu()  # [N, K]
    top = torch.sort(-probs, dim=1, stable=True).indices[:, :top_labels]  # ties: lower class id
    p_label = probs.gather(1, top).numpy()
    rep = np.repeat(np.arange(n), top_labels)
    class_probs = np.concatenate([probs.numpy(), np.zeros((n, 1))], axis=1)[rep]
    return Proposals(
        segments=proposals.segments[rep], scores=(proposals.proposal_scores[:, None] * p_label).reshape(-1),
        labels=top.numpy().reshape(-1).astype(np.int64), proposal_scores=proposals.proposal_scores[rep],
        level=proposals.level[rep], anchors=proposals.anchors[rep],
        label_rank=np.tile(np.arange(top_labels, dtype=np.int64), n), class_probs=class_probs,
        window=proposals.window)


def decode_window(levels: Sequence[LevelOutput], heads: Sequence[DetectorHead], cfg: MENetConfig,
                  batch_index: int = 0, *, top_labels: int | None = None, valid_length: float | None = None,
                  max_pairs: int | None | Literal["config"] = "config",
                  edges: Literal["always", "peak", "config"] = "config",
                  labeller: SegmentClassifier | None = None,
                  labeller_input: torch.Tensor | None = None) -> Proposals:
    """Decode every level of one window and merge them (sec. 3.5: "proposals
    generated by each layer are merged together"; Soft-NMS comes later, in
    :mod:`engine.postprocess.windows`).

    Uses ``cfg.inference.peak_ratio``, ``cfg.model.scale_ranges``,
    ``cfg.max_durations()`` and W = ``cfg.data.window``. Segments are in window
    snippet units; ``valid_length`` as in :func:`decode_level`. ``top_labels``
    (default ``cfg.inference.labels_per_proposal``): rows per anchor, one per best class.
    With a ``labeller`` (the detector's segment classifier, ``model.labeller: segment``)
    the labels come from it (:func:`label_segments`) reading ``labeller_input``, this window's
    MREM output [C, W] or MFE features [C_feat, W] (``model.segment_input``); else from the
    heads' classifiers. ``max_pairs`` and ``edges`` default
    to ``cfg.inference.max_pairs`` (0: no cap) and ``cfg.inference.boundary_edges``.
    """
    if max_pairs == "config":
        max_pairs = cfg.inference.max_pairs or None
    if edges == "config":
        edges = cfg.inference.boundary_edges
    if len(levels) != len(heads):
        raise ValueError(f"{len(levels)} levels but {len(heads)} heads")
    if labeller is not None and labeller_input is None:
        raise ValueError("the segment classifier needs the window's features it reads (labeller_input: "
                         f"{cfg.model.segment_input})")
    k = cfg.inference.labels_per_proposal if top_labels is None else top_labels
    ranges = cfg.model.scale_ranges
    durations = cfg.max_durations()
    parts = [
        decode_level(lv, head, ranges[i], durations[i], cfg.inference.peak_ratio, 1 if labeller else k,
                     batch_index=batch_index, window=cfg.data.window, level_index=i,
                     valid_length=valid_length, max_pairs=max_pairs, edges=edges)
        for i, (lv, head) in enumerate(zip(levels, heads))
    ]
    merged = Proposals.concatenate(parts, cfg.data.num_classes, cfg.data.window)
    if labeller is not None:
        merged = label_segments(merged, [labeller_input], labeller, k)
    return merged
