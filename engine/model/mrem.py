"""Multi-Relation Enhance Module (paper sec. 3.2, Fig. 2).

1D conv fuses the 2C' channels ("semantic dimension"), then three paths:
local (1D conv, kernel k), forward LSTM, backward LSTM over the flipped sequence.

Integration (the paper only says "the three paths are integrated"): we
concatenate the three path outputs with the fused input and mix them with a
1x1 conv. Why: a sum would force the three relations to share one scale and
would let one path drown the others; concatenation + 1x1 conv lets the network
weigh local vs. temporal relations per channel, and keeping the fused input in
the concatenation is a residual-like shortcut so the module starts no worse
than the 1D conv of the Base model. Each LSTM has hidden size C so all paths
carry C channels.
"""
from __future__ import annotations

import torch
from torch import nn


class MultiRelationEnhance(nn.Module):
    """[B, C_in, L] -> [B, C, L]."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"MREM kernel_size must be odd to keep the length, got {kernel_size}")
        self.fuse = nn.Sequential(nn.Conv1d(in_channels, channels, 1), nn.ReLU(inplace=True))
        self.local = nn.Sequential(nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2),
                                   nn.ReLU(inplace=True))
        self.forward_lstm = nn.LSTM(channels, channels, batch_first=True)
        self.backward_lstm = nn.LSTM(channels, channels, batch_first=True)
        self.integrate = nn.Sequential(nn.Conv1d(4 * channels, channels, 1), nn.ReLU(inplace=True))
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.fuse(x)
        local = self.local(fused)
        seq = fused.transpose(1, 2)  # [B, L, C] for batch_first LSTMs
        fwd, _ = self.forward_lstm(seq)
        bwd, _ = self.backward_lstm(torch.flip(seq, dims=[1]))
        bwd = torch.flip(bwd, dims=[1])  # back to the original time order
        paths = torch.cat([fused, local, fwd.transpose(1, 2), bwd.transpose(1, 2)], dim=1)
        return self.integrate(paths)


class ConvRelation(nn.Module):
    """The Base ablation's replacement for MREM (paper Table 5): temporal 1D convs."""

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, channels, 1), nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True))
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
