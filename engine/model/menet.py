"""MENet assembled from its parts (paper Fig. 2), as plain composition.

``MENet.mfe`` turns clips into snippet features (online: the engine worker, per
snippet). ``MENet.detector`` turns a window of snippet features into per-level
boundary probabilities and anchor scores (online: MREM in the engine worker,
SFPN + heads in the detector worker).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import MENetConfig
from .backbone import build_backbone
from .head import AnchorOutputs, DetectorHead
from .mfe import MovementFeatureExtractor
from .mrem import ConvRelation, MultiRelationEnhance
from .segment_classifier import SegmentClassifier
from .sfpn import ScaleFPN
from .weights import init_backbone


@dataclass
class LevelOutput:
    """One SFPN level: boundary probabilities [B, L_i] and the requested anchors."""

    feature: torch.Tensor  # [B, C, L_i], kept so decoding can ask for more anchors
    start: torch.Tensor
    end: torch.Tensor
    anchors: AnchorOutputs | None


class TemporalDetector(nn.Module):
    """MREM + SFPN + one head per level: [B, C_feat, L] -> per-level outputs."""

    def __init__(self, cfg: MENetConfig, in_channels: int) -> None:
        super().__init__()
        m = cfg.model
        relation = MultiRelationEnhance if m.relation == "mrem" else ConvRelation
        self.relation = relation(in_channels, m.channels, m.relation_kernel)
        self.sfpn = ScaleFPN(m.channels, m.channels, m.levels)
        # model.dropout: identity in eval mode, so inference, export and the online path are unchanged
        self.dropout = nn.Dropout(m.dropout)
        self.heads = nn.ModuleList(
            [DetectorHead(m.channels, m.head_samples, m.head_hidden, cfg.data.num_classes, m.salign_context)
             for _ in range(m.levels)])
        self.window = cfg.data.window
        # the segment classifier reads the MREM output or the MFE window (model.segment_input;
        # measured: the SFPN levels carry far less class information, docs/results.md "Labels");
        # trained after the detector by engine.training.segment_classifier; absent for "anchor"
        self.labeller: SegmentClassifier | None = None
        self.segment_input = m.segment_input
        if m.labeller == "segment":
            width = in_channels if m.segment_input == "mfe" else m.channels
            self.labeller = SegmentClassifier([width], cfg.data.num_classes, m.segment_hidden,
                                              m.segment_samples, m.segment_context, window=cfg.data.window)

    def labeller_input(self, features: torch.Tensor, relation: torch.Tensor) -> torch.Tensor:
        """What the segment classifier reads of a window (or a batch): the MFE ``features``
        [.., C_feat, W] or their MREM output ``relation`` [.., C, W] (model.segment_input)."""
        return features if self.segment_input == "mfe" else relation

    def levels(self, relation_features: torch.Tensor) -> list[torch.Tensor]:
        """SFPN over MREM output: the detector worker's dense part starts here."""
        return self.sfpn(self.dropout(relation_features))

    def forward(self, features: torch.Tensor,
                anchors: list[torch.Tensor | None] | None = None,
                anchors_are_cells: bool = True) -> list[LevelOutput]:
        """``anchors[i]``: cells (d, s) (training) or pairs (start, end) for level i."""
        if features.shape[-1] != self.window:
            raise ValueError(f"detector expects windows of {self.window} snippets, got {features.shape[-1]}")
        return self.from_relation(self.relation(features), anchors, anchors_are_cells)

    def from_relation(self, relation: torch.Tensor, anchors: list[torch.Tensor | None] | None = None,
                      anchors_are_cells: bool = True) -> list[LevelOutput]:
        """SFPN + heads on MREM output [B, C, W] (what the online detector worker receives)."""
        outputs = []
        for i, (head, feat) in enumerate(zip(self.heads, self.levels(relation))):
            bounds = head.boundaries(feat)
            req = anchors[i] if anchors is not None else None
            anchor_out = None
            if req is not None:
                anchor_out = head.cells(feat, req) if anchors_are_cells else head.anchors(feat, req)
            outputs.append(LevelOutput(feat, bounds[:, 0], bounds[:, 1], anchor_out))
        return outputs


class MENet(nn.Module):
    def __init__(self, cfg: MENetConfig, load_backbone_weights: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = build_backbone(cfg.model.backbone)
        if load_backbone_weights:
            init_backbone(backbone, cfg.model.backbone_weights)
        self.mfe = MovementFeatureExtractor(backbone, cfg.model.movement)
        self.detector = TemporalDetector(cfg, self.mfe.out_channels)

    def snippet_features(self, clips: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, H, W] normalised clips -> [N, C_feat]."""
        return self.mfe(clips)

    def forward(self, clips: torch.Tensor, anchors: list[torch.Tensor | None] | None = None) -> list[LevelOutput]:
        """[B, L, 3, T, H, W] windows of clips -> per-level outputs (tests and tiny configs)."""
        b, length = clips.shape[:2]
        feats = self.mfe(clips.flatten(0, 1)).reshape(b, length, -1).transpose(1, 2)
        return self.detector(feats, anchors)
