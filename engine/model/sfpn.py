"""Scale Feature Pyramid Network, U-shape module (paper sec. 3.3, Fig. 2).

Top-down: temporal conv then AvgPool(2) per level. Bottom-up: ConvTranspose1d
(stride 2) restores the resolution and is concatenated with the same-resolution
feature of the down path, then fused by a conv (U-Net style, [20]). Level i has
length L / 2^i; the first (longest) level handles the small actions.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class ScaleFPN(nn.Module):
    """[B, C_in, L] -> list of [B, C, L / 2^i] for i in range(levels)."""

    def __init__(self, in_channels: int, channels: int, levels: int = 3) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"SFPN needs at least one level, got {levels}")
        self.levels = levels
        self.down = nn.ModuleList(
            [_conv(in_channels if i == 0 else channels, channels) for i in range(levels)])
        self.pool = nn.AvgPool1d(2)
        self.up = nn.ModuleList(
            [nn.ConvTranspose1d(channels, channels, kernel_size=2, stride=2) for _ in range(levels - 1)])
        self.merge = nn.ModuleList([_conv(2 * channels, channels) for _ in range(levels - 1)])
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] % (2 ** (self.levels - 1)):
            raise ValueError(f"SFPN input length {x.shape[-1]} is not divisible by 2^{self.levels - 1}")
        skips: list[torch.Tensor] = []
        for i, conv in enumerate(self.down):
            x = conv(x if i == 0 else self.pool(x))
            skips.append(x)
        outputs = [skips[-1]]
        for i in range(self.levels - 2, -1, -1):
            up = torch.relu(self.up[i](outputs[0]))
            outputs.insert(0, self.merge[i](torch.cat([up, skips[i]], dim=1)))
        return outputs
