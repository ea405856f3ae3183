"""Movement Feature Extractor (paper sec. 3.2, Fig. 3).

A siamese pair with shared weights: the snippet path sees the clip, the frame
duplication path sees the clip's middle frame repeated to the clip length. Both
run in ONE batched forward (the two halves of one batch) so the backbone is
called once. F_movement = F_total - F_static, output [F_movement, F_total] (2C').
"""
from __future__ import annotations

import torch
from torch import nn

from .backbone import R2Plus1D


class MovementFeatureExtractor(nn.Module):
    """[B, 3, T, H, W] clips -> [B, 2C'] movement-enhanced features.

    ``movement=False`` is the paper's "Base" ablation input (Table 5): only
    F_total, [B, C'], and the duplication path is skipped.
    """

    def __init__(self, backbone: R2Plus1D, movement: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.movement = movement

    @property
    def out_channels(self) -> int:
        return self.backbone.out_channels * (2 if self.movement else 1)

    @staticmethod
    def static_clip(clips: torch.Tensor) -> torch.Tensor:
        """The frame duplication path: the middle frame repeated over time."""
        t = clips.shape[2]
        return clips[:, :, t // 2:t // 2 + 1].expand(-1, -1, t, -1, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if not self.movement:
            return self.backbone(clips)
        b = clips.shape[0]
        both = torch.cat([clips, self.static_clip(clips)], dim=0)
        features = self.backbone(both)
        total, static = features[:b], features[b:]
        return torch.cat([total - static, total], dim=1)
