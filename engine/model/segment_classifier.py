"""Segment classifier: a proposal's action label from features pooled over its segment.

Beyond the paper. MENet localises class-agnostically and labels proposals with an
external video-level classifier (sec. 4.1). A live stream has no such classifier, so
the detector needs its own labels. The first built-in labeller was a per-anchor
classifier in the head (:mod:`engine.model.head`): an MLP on the anchor's S SAlign
samples, trained on the same randomly sampled cells as the IoU maps, where background
cells outnumber action cells many times. On the synthetic benchmark only 49 % of its
detections that matched a true action carried the right label, which halved the mAP
(docs/results.md, "Labels").

This module labels a *segment* (the refined proposal, in window snippet units) the way
segment-level classifiers in TAD do, and as the paper's eq. 10 describes ("the action
classifier assigns every proposal a label and a classification score P_label"). For
each feature sequence it is given (the detector gives it the window's MREM output,
which carries the class far better than the SFPN levels: docs/results.md, "Labels"),
it pools the segment's inside (mean and max over ``samples`` interpolated points) and
its surroundings (mean over ``context`` of the segment length on each side,
at least ``min_context`` snippets), and an MLP maps [mean, max, mean - context mean]
to class logits. The inside-minus-surroundings term is what tells a movement from the
scene it happens in. It is trained after the detector, on the frozen detector's MREM
output, with ground-truth segments jittered like proposals
(:mod:`engine.training.segment_classifier`); it does not change localisation.

It runs wherever decoding runs (offline inference and the online detector worker), on
the MREM output the detector worker already receives: no extra transport, no second
network pass.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def interpolate_at(features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``features`` [C, L] at ``positions`` [N, P] (index space,
    clamped to the sequence) -> [N, C, P]."""
    length = features.shape[-1]
    pos = positions.clamp(0, length - 1)
    left = pos.floor()
    frac = (pos - left).unsqueeze(1)  # [N, 1, P]
    li = left.long()
    ri = (li + 1).clamp(max=length - 1)
    lv = features[:, li].permute(1, 0, 2)  # [N, C, P]
    rv = features[:, ri].permute(1, 0, 2)
    return lv + (rv - lv) * frac


class SegmentClassifier(nn.Module):
    """[mean, max, mean - context mean] per feature sequence -> MLP -> K class logits.

    Args:
        in_channels: channels of each feature sequence it pools (the detector: [MREM width]).
        num_classes: K action classes (no background: it labels proposals that decoding
            already scored as actions; the proposal score carries "is it an action").
        hidden: MLP width.
        samples: points sampled inside a segment (and half as many on each side).
        context: surroundings on each side, as a fraction of the segment length.
        min_context: surroundings are at least this many window snippets wide.
        window: W, the window length segments are expressed in.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, hidden: int = 128, samples: int = 8,
                 context: float = 0.5, min_context: float = 3.0, window: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.samples = samples
        self.context = context
        self.min_context = min_context
        self.window = window
        dim = 3 * sum(self.in_channels)
        # Normalising the pooled descriptor keeps one high-variance level from dominating.
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))

    def describe(self, features: Sequence[torch.Tensor], segments: torch.Tensor) -> torch.Tensor:
        """Pooled descriptor [N, 3 * sum(C)] of ``segments`` [N, 2] (window snippet units,
        [start, end)) over ``features``: one [C_i, L_i] sequence per entry, for ONE window."""
        if len(features) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature sequences, got {len(features)}")
        seg = segments.to(torch.float32).reshape(-1, 2)
        start, end = seg[:, 0:1], seg[:, 1:2]
        length = (end - start).clamp(min=1e-3)
        ctx = torch.maximum(length * self.context, torch.full_like(length, self.min_context))
        dev = seg.device
        inside_bins = (torch.arange(self.samples, device=dev, dtype=torch.float32) + 0.5) / self.samples
        half = max(1, self.samples // 2)
        side_bins = (torch.arange(half, device=dev, dtype=torch.float32) + 0.5) / half
        inside_t = start + inside_bins * length  # [N, S] window snippet times
        around_t = torch.cat([start - ctx + side_bins * ctx, end + side_bins * ctx], dim=1)
        parts = []
        for feat in features:
            scale = feat.shape[-1] / float(self.window)  # level snippets per window snippet
            # a time t sits between feature centres: index = t * scale - 0.5 (snippet i centred at i + 0.5)
            inside = interpolate_at(feat, inside_t * scale - 0.5)
            around = interpolate_at(feat, around_t * scale - 0.5)
            mean = inside.mean(dim=2)
            parts += [mean, inside.amax(dim=2), mean - around.mean(dim=2)]
        return torch.cat(parts, dim=1)

    def classify(self, descriptor: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(descriptor))

    def forward(self, features: Sequence[torch.Tensor], segments: torch.Tensor) -> torch.Tensor:
        """Class logits [N, K] of ``segments`` in one window."""
        return self.classify(self.describe(features, segments))
