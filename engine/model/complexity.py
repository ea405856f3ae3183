"""Parameter and multiply-accumulate counts per MENet module (``menet model-info``).

MACs are counted with forward hooks on the layers that do the arithmetic
(convolutions, transposed convolutions, linear layers, LSTMs), the convention
behind torchvision's published figures (r2plus1d_18: 40.5 GMAC for a 16x112x112
clip). Normalisation and activations are not counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import MENetConfig
from .menet import MENet


def _layer_macs(module: nn.Module, inputs: tuple, output: torch.Tensor | tuple) -> int:
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        kernel = math.prod(module.kernel_size)
        return output.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        kernel = math.prod(module.kernel_size)
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, nn.LSTM):
        x = inputs[0]
        steps = x.shape[0] * x.shape[1]  # batch * time
        h, dirs = module.hidden_size, 2 if module.bidirectional else 1
        per_step, in_size = 0, module.input_size
        for _ in range(module.num_layers):
            per_step += 4 * h * (in_size + h) * dirs
            in_size = h * dirs
        return steps * per_step
    return 0


def count_macs(module: nn.Module, *inputs: torch.Tensor, method: str | None = None) -> int:
    """MACs of one call of ``module`` (or ``getattr(module, method)``) on ``inputs``."""
    total = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor | tuple) -> None:
        nonlocal total
        total += _layer_macs(mod, inp, out)

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
                                 nn.ConvTranspose3d, nn.Linear, nn.LSTM))]
    try:
        with torch.no_grad():
            (getattr(module, method) if method else module)(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def num_valid_cells(length: int, max_duration: int) -> int:
    """Cells (d, s) with s + d < length, d < max_duration."""
    return sum(length - d for d in range(min(max_duration, length)))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class ModuleCost:
    module: str
    params: int
    macs: int
    per: str  # what one count of ``macs`` covers


def model_costs(cfg: MENetConfig) -> list[ModuleCost]:
    """Parameters and MACs of every part for the configured input sizes."""
    # The meta device propagates shapes without arithmetic: the paper backbone's
    # 152 GMAC per snippet costs nothing to count.
    with torch.device("meta"):
        return _model_costs(cfg)


def _model_costs(cfg: MENetConfig) -> list[ModuleCost]:
    model = MENet(cfg, load_backbone_weights=False).eval()
    d, m = cfg.data, cfg.model
    clip = torch.zeros(1, 3, d.clip_length, *d.crop)
    window = torch.zeros(1, cfg.feature_channels, d.window)
    det = model.detector
    relation_out = det.relation(window)
    levels = det.sfpn(relation_out)
    size = f"{d.clip_length}x{d.crop[0]}x{d.crop[1]}"
    rows = [
        ModuleCost("backbone", count_params(model.mfe.backbone), count_macs(model.mfe.backbone, clip),
                   f"clip {size}"),
        ModuleCost("MFE", count_params(model.mfe), count_macs(model.mfe, clip),
                   f"snippet ({'2 paths' if m.movement else '1 path'} of {size})"),
        ModuleCost("MREM" if m.relation == "mrem" else "relation (conv)", count_params(det.relation),
                   count_macs(det.relation, window), f"window of {d.window} snippets"),
        ModuleCost("SFPN", count_params(det.sfpn), count_macs(det.sfpn, relation_out),
                   f"window, levels {cfg.level_lengths()}"),
    ]
    head_params = count_params(det.heads)
    boundary = sum(count_macs(h.boundary, f) for h, f in zip(det.heads, levels))
    rows.append(ModuleCost("heads: boundary predictors", sum(count_params(h.boundary) for h in det.heads),
                           boundary, "window, all levels"))
    per_anchor = 0
    dense = 0
    for head, feat, dur in zip(det.heads, levels, cfg.max_durations()):
        per_anchor_level = sum(count_macs(p, torch.zeros(1, feat.shape[1] * head.num_samples, 1))
                               for p in (head.iou_asp, head.offset_asp, head.classifier))
        per_anchor = max(per_anchor, per_anchor_level)
        dense += per_anchor_level * num_valid_cells(feat.shape[-1], dur)
    anchor_params = head_params - rows[-1].params
    rows.append(ModuleCost("heads: ASPs + classifier", anchor_params, per_anchor, "anchor"))
    rows.append(ModuleCost("heads: ASPs + classifier", anchor_params, dense, "window, every valid anchor (dense)"))
    return rows


def format_costs(cfg: MENetConfig, rows: list[ModuleCost]) -> str:
    lines = [f"config {cfg.name} ({cfg.source}): backbone {cfg.model.backbone}, "
             f"feature {cfg.feature_channels}-d, window {cfg.data.window}",
             f"{'module':<28} {'params':>12} {'MACs':>14}  per"]
    for r in rows:
        lines.append(f"{r.module:<28} {r.params:>12,} {_human(r.macs):>14}  {r.per}")
    with torch.device("meta"):
        total = count_params(MENet(cfg, load_backbone_weights=False))
    lines.append(f"{'total parameters':<28} {total:>12,}")
    return "\n".join(lines)


def _human(macs: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if macs >= scale:
            return f"{macs / scale:.3f} {unit}"
    return str(macs)
