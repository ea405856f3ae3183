"""Detector head of one SFPN level (paper sec. 3.3).

Boundary Predictor (start/end probabilities per snippet), Anchor Feature Align,
IoU-ASP (cls, reg), Offset-ASP (centre, duration) and, beyond the paper, a
per-anchor action classifier (num_classes + background, background LAST) so a
live stream gets labels without an external video-level classifier.

The score predictors act on each anchor independently (1x1 convs over the
anchor axis). That is what lets one code path serve both modes and agree
exactly: ``cells`` (training: sampled cells of the [D, L] map) and ``pairs``
(inference: only candidate (start, end) pairs, sparse).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .salign import salign


def _predictor(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, hidden, 1), nn.ReLU(inplace=True),
        nn.Conv1d(hidden, hidden, 1), nn.ReLU(inplace=True),
        nn.Conv1d(hidden, cout, 1))


@dataclass
class AnchorOutputs:
    """Per-anchor outputs, each [B, N] (``class_logits`` [B, N, K+1])."""

    cls: torch.Tensor
    reg: torch.Tensor
    cent: torch.Tensor
    dura: torch.Tensor
    class_logits: torch.Tensor


def cells_to_pairs(cells: torch.Tensor) -> torch.Tensor:
    """Map cells (d, s) -> anchors (start_idx, end_idx) = (s, s + d)."""
    return torch.stack([cells[..., 1], cells[..., 1] + cells[..., 0]], dim=-1)


def valid_cells(length: int, max_duration: int, device: torch.device | None = None) -> torch.Tensor:
    """All cells (d, s) of a [D, L] map whose anchor lies inside the sequence."""
    d, s = torch.meshgrid(torch.arange(max_duration, device=device), torch.arange(length, device=device),
                          indexing="ij")
    keep = s + d < length
    return torch.stack([d[keep], s[keep]], dim=-1)


class DetectorHead(nn.Module):
    def __init__(self, channels: int, num_samples: int, hidden: int, num_classes: int,
                 context: float = 0.0) -> None:
        super().__init__()
        self.num_samples = num_samples
        # SAlign context ratio (model.salign_context). A plain float, not a buffer: it is part
        # of the config the checkpoint binds, and a constant keeps the exported graph static.
        self.context = float(context)
        self.num_classes = num_classes
        self.boundary = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv1d(channels, 2, 1))
        aligned = channels * num_samples
        self.iou_asp = _predictor(aligned, hidden, 2)
        self.offset_asp = _predictor(aligned, hidden, 2)
        self.classifier = _predictor(aligned, hidden, num_classes + 1)

    def boundaries(self, feature: torch.Tensor) -> torch.Tensor:
        """[B, C, L] -> [B, 2, L] start (row 0) and end (row 1) probabilities."""
        return torch.sigmoid(self.boundary(feature))

    def anchors(self, feature: torch.Tensor, pairs: torch.Tensor) -> AnchorOutputs:
        """Sparse mode: outputs for given (start_idx, end_idx) pairs, [N, 2] or [B, N, 2]."""
        aligned = salign(feature, pairs, self.num_samples, self.context)
        iou = torch.sigmoid(self.iou_asp(aligned))
        offset = self.offset_asp(aligned)
        logits = self.classifier(aligned).transpose(1, 2)
        return AnchorOutputs(iou[:, 0], iou[:, 1], offset[:, 0], offset[:, 1], logits)

    def cells(self, feature: torch.Tensor, cells: torch.Tensor) -> AnchorOutputs:
        """Sampled mode (training): outputs for map cells (d, s)."""
        return self.anchors(feature, cells_to_pairs(cells))

    def dense_maps(self, feature: torch.Tensor, max_duration: int, chunk: int = 4096) -> dict[str, torch.Tensor]:
        """Dense [B, D, L] maps (invalid cells are 0). Costly: tests and analysis only."""
        b, _, length = feature.shape
        cells = valid_cells(length, max_duration, feature.device)
        names = ("cls", "reg", "cent", "dura")
        maps = {k: feature.new_zeros(b, max_duration, length) for k in names}
        for i in range(0, cells.shape[0], chunk):
            part = cells[i:i + chunk]
            out = self.cells(feature, part)
            for k in names:
                maps[k][:, part[:, 0], part[:, 1]] = getattr(out, k)
        return maps
