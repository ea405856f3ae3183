"""Anchor Feature Align (SAlign, paper sec. 3.3, after G-TAD [29]).

Samples S points uniformly over each anchor, optionally widened by context, and
linearly interpolates the level's feature sequence there, giving F_A in
R^{C x S x N}. Written with ``gather`` and arithmetic only, so it exports to ONNX
with a dynamic anchor count.

Time convention (shared with labels and decoding): snippet i covers
[i, i+1) in snippet units and its feature sits at the centre i + 0.5. An
anchor (start_idx, end_idx), end_idx >= start_idx, covers
[start_idx, end_idx + 1); it is cell (d, s) = (end_idx - start_idx, start_idx) of
the [D, L] maps.

Context (``model.salign_context``): G-TAD samples 32 points over the anchor
widened by half its length on each side (its GraphAlign: ``resolution = 32``,
``expand_ratio = 0.5``). The paper names G-TAD's
SAlign but gives neither S nor the ratio, so both are config values; 0 samples the
anchor itself (the original behaviour, bit for bit).
"""
from __future__ import annotations

import torch


def sample_positions(anchors: torch.Tensor, num_samples: int, context: float = 0.0) -> torch.Tensor:
    """[..., N, 2] (start_idx, end_idx) -> [..., N, S] feature coordinates (index space).

    The span [start, end + 1) is widened by ``context * length`` on each side, then
    the S samples sit at the centres of S equal bins of the widened span.
    """
    start = anchors[..., 0:1].to(torch.float32)
    length = (anchors[..., 1:2] - anchors[..., 0:1]).to(torch.float32) + 1.0
    bins = (torch.arange(num_samples, dtype=torch.float32, device=anchors.device) + 0.5) / num_samples
    if context:
        # Python-float branch (traced as a constant): context 0 keeps the exact old arithmetic.
        start = start - context * length
        length = length * (1.0 + 2.0 * context)
    # centre of each of S equal bins, minus 0.5 to go from time to feature index
    return start + bins * length - 0.5


def salign(features: torch.Tensor, anchors: torch.Tensor, num_samples: int,
           context: float = 0.0) -> torch.Tensor:
    """Interpolate ``features`` [B, C, L] at S points per anchor.

    ``anchors``: [N, 2] shared by the batch or [B, N, 2] per sample, integer
    (start_idx, end_idx). ``context``: fraction of the anchor length added on each
    side before sampling. Returns [B, C * S, N] (channel-major, sample-minor), the
    layout the 1x1-conv score predictors consume.

    Sequence ends: a sample inside the sequence's time span [0, L) but beyond the
    first/last feature centre takes the edge feature (clamped, as without context).
    A sample outside [0, L) (only possible with context) is zero. Why zero and not
    clamped: replicating the edge feature would tell the predictors that the content
    at the window edge continues past it, blurring exactly the "does the action end
    here" evidence context is there to add; zero says "no feature here". G-TAD's
    Align1D kernel also returns 0 off the map (for t < -1 or t > L in its index
    units, one cell past the edge features); we cut at the sequence's own ends, half
    a cell past them, which for context 0 changes nothing. THUMOS windows are cut
    from a longer video, so past the edge is unknown, not background.
    """
    b, c, length = features.shape
    if anchors.dim() == 2:
        anchors = anchors.unsqueeze(0).expand(b, -1, -1)
    n = anchors.shape[1]
    raw = sample_positions(anchors, num_samples, context)  # [B, N, S]
    pos = raw.clamp(0, length - 1)
    left = pos.floor()
    frac = (pos - left).unsqueeze(1)  # [B, 1, N, S]
    left_i = left.long()
    right_i = (left_i + 1).clamp(max=length - 1)
    flat_l = left_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    flat_r = right_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    lv = features.gather(2, flat_l).reshape(b, c, n, num_samples)
    rv = features.gather(2, flat_r).reshape(b, c, n, num_samples)
    sampled = lv + (rv - lv) * frac  # [B, C, N, S]
    if context:
        # index -0.5 and L - 0.5 are times 0 and L, the sequence's ends
        inside = ((raw >= -0.5) & (raw <= length - 0.5)).to(features.dtype).unsqueeze(1)
        sampled = sampled * inside
    return sampled.permute(0, 1, 3, 2).reshape(b, c * num_samples, n)
