"""The three deployable stages of MENet and their tensor contracts.

One definition shared by the ONNX exporter (``build_engine``), every backend and the
parity check, so a stage means the same graph everywhere:

============  ==========================  =============================================
stage         input                       outputs
============  ==========================  =============================================
``mfe``       ``clips`` [B, 3, T, H, W]   ``features`` [B, C_feat] (C_feat = 2C' with movement)
``mrem``      ``features`` [B, C_feat, W] ``relation`` [B, C, W]
``dense``     ``relation`` [B, C, W]      ``level{i}`` [B, C, L_i], ``bounds{i}`` [B, 2, L_i]
============  ==========================  =============================================

``dense`` is the detector's dense part: SFPN plus every level's Boundary Predictor
(row 0 start, row 1 end probabilities). The sparse anchor part (SAlign, IoU-ASP,
Offset-ASP, classifier on candidate pairs) stays in PyTorch: decoding asks for a
different, small set of pairs per window, and :func:`engine.postprocess.decode.decode_window`
calls :meth:`DetectorHead.anchors` on the level features the dense stage returns.

Only the batch axis B is dynamic; T, H, W come from the config (``data.clip_length``,
``data.crop``, ``data.window``). A config with another window length needs its own
MREM/dense graphs (their file names carry the window: ``mrem_w256.onnx``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import MENetConfig

STAGES = ("mfe", "mrem", "dense")


@dataclass(frozen=True)
class StageSpec:
    """Names and shapes of one stage; ``-1`` marks the dynamic batch axis."""

    stage: str
    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    artifact: str  # file stem: mfe, mrem_w128, dense_w128

    @property
    def input_name(self) -> str:
        return next(iter(self.inputs))

    def input_shape(self, batch: int) -> tuple[int, ...]:
        return (batch,) + self.inputs[self.input_name][1:]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch"} for name in list(self.inputs) + list(self.outputs)}

    def to_dict(self) -> dict:
        return {"stage": self.stage, "artifact": self.artifact,
                "inputs": {k: list(v) for k, v in self.inputs.items()},
                "outputs": {k: list(v) for k, v in self.outputs.items()},
                "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes().items()}}


def stage_spec(cfg: MENetConfig, stage: str) -> StageSpec:
    d, m = cfg.data, cfg.model
    if stage == "mfe":
        return StageSpec("mfe", {"clips": (-1, 3, d.clip_length, d.crop[0], d.crop[1])},
                         {"features": (-1, cfg.feature_channels)}, "mfe")
    if stage == "mrem":
        return StageSpec("mrem", {"features": (-1, cfg.feature_channels, d.window)},
                         {"relation": (-1, m.channels, d.window)}, f"mrem_w{d.window}")
    if stage == "dense":
        outs: dict[str, tuple[int, ...]] = {}
        for i, length in enumerate(cfg.level_lengths()):
            outs[f"level{i}"] = (-1, m.channels, length)
        for i, length in enumerate(cfg.level_lengths()):
            outs[f"bounds{i}"] = (-1, 2, length)
        return StageSpec("dense", {"relation": (-1, m.channels, d.window)}, outs, f"dense_w{d.window}")
    raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


def stage_specs(cfg: MENetConfig) -> dict[str, StageSpec]:
    return {s: stage_spec(cfg, s) for s in STAGES}


class MREMStage(nn.Module):
    def __init__(self, relation: nn.Module) -> None:
        super().__init__()
        self.relation = relation

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.relation(features)


class DenseStage(nn.Module):
    """SFPN + Boundary Predictors: [B, C, W] -> level features then boundary probabilities."""

    def __init__(self, sfpn: nn.Module, heads: nn.ModuleList) -> None:
        super().__init__()
        self.sfpn = sfpn
        self.heads = heads

    def forward(self, relation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = self.sfpn(relation)
        bounds = [head.boundaries(f) for head, f in zip(self.heads, levels)]
        return tuple(levels) + tuple(bounds)


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The stage modules of a :class:`engine.model.menet.MENet` (sharing its weights); of a
    :class:`engine.model.menet.TemporalDetector` alone, ``mrem`` and ``dense``."""
    det = getattr(model, "detector", model)
    out: dict[str, nn.Module] = {"mrem": MREMStage(det.relation), "dense": DenseStage(det.sfpn, det.heads)}
    if hasattr(model, "mfe"):
        out = {"mfe": model.mfe, **out}
    return out
