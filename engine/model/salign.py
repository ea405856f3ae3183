"""Anchor Feature Align (SAlign, paper sec. 3.3, after G-TAD [29]).

Samples S points uniformly inside each anchor and linearly interpolates the
level's feature sequence there, giving F_A in R^{C x S x N}. Written with
``gather`` and arithmetic only, so it exports to ONNX with a dynamic anchor count.

Time convention (shared with labels and decoding): snippet i covers
[i, i+1) in snippet units and its feature sits at the centre i + 0.5. An
anchor (start_idx, end_idx), end_idx >= start_idx, covers
[start_idx, end_idx + 1); it is cell (d, s) = (end_idx - start_idx, start_idx) of
the [D, L] maps. G-TAD also widens anchors by context; the paper does not say
MENet does, so we sample the anchor itself.
"""
from __future__ import annotations

import torch


def sample_positions(anchors: torch.Tensor, num_samples: int) -> torch.Tensor:
    """[..., N, 2] (start_idx, end_idx) -> [..., N, S] feature coordinates (index space)."""
    start = anchors[..., 0:1].to(torch.float32)
    length = (anchors[..., 1:2] - anchors[..., 0:1]).to(torch.float32) + 1.0
    bins = (torch.arange(num_samples, dtype=torch.float32, device=anchors.device) + 0.5) / num_samples
    # centre of each of S equal bins, minus 0.5 to go from time to feature index
    return start + bins * length - 0.5


def salign(features: torch.Tensor, anchors: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Interpolate ``features`` [B, C, L] at S points per anchor.

    ``anchors``: [N, 2] shared by the batch or [B, N, 2] per sample, integer
    (start_idx, end_idx). Returns [B, C * S, N] (channel-major, sample-minor),
    the layout the 1x1-conv score predictors consume.
    """
    b, c, length = features.shape
    if anchors.dim() == 2:
        anchors = anchors.unsqueeze(0).expand(b, -1, -1)
    n = anchors.shape[1]
    pos = sample_positions(anchors, num_samples).clamp(0, length - 1)  # [B, N, S]
    left = pos.floor()
    frac = (pos - left).unsqueeze(1)  # [B, 1, N, S]
    left_i = left.long()
    right_i = (left_i + 1).clamp(max=length - 1)
    flat_l = left_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    flat_r = right_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    lv = features.gather(2, flat_l).reshape(b, c, n, num_samples)
    rv = features.gather(2, flat_r).reshape(b, c, n, num_samples)
    sampled = lv + (rv - lv) * frac  # [B, C, N, S]
    return sampled.permute(0, 1, 3, 2).reshape(b, c * num_samples, n)
