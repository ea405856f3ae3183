"""R(2+1)D backbones with torchvision ``VideoResNet`` parameter names.

The module tree (``stem``, ``layer1..4``, ``blockN.conv1.0.0`` ...) mirrors
``torchvision.models.video.resnet`` exactly, so a torchvision ``r2plus1d_18``
state dict and an IG65M ``r2plus1d_34`` one (moabitcoin/ig65m-pytorch) load with
``strict=True``. torchvision itself is not a dependency: its PyPI wheel does not
import beside the pinned CPU torch, and we only need the layer layout.

Three sizes:

* ``r2plus1d_34`` -- layers 3-4-6-3, the paper's backbone (sec. 3.2, 4.1). IG65M
  models were converted from Caffe2 (VMZ), where the *second* (2+1)D conv of the
  first block of layers 2-4 uses the mid-plane count of a planes->planes conv
  (288/576/1152) while torchvision reuses the in->out count (230/460/921).
  Caffe2 BatchNorm also uses eps=1e-3.
* ``r2plus1d_18`` -- torchvision's layers 2-2-2-2.
* ``tiny`` -- same topology, layers 1-1-1-1 and narrow widths, for CPU tests
  and the demo.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["BackboneSpec", "BACKBONES", "R2Plus1D", "build_backbone"]


def _midplanes(in_planes: int, out_planes: int) -> int:
    # Keeps the (2+1)D factorisation's parameter count equal to a full 3x3x3 conv
    # (Tran et al. 2018, sec. 3.5); torchvision's formula.
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class Conv2Plus1D(nn.Sequential):
    """Spatial 1x3x3 conv, BN, ReLU, temporal 3x1x1 conv (torchvision layout)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1,
                 bn_eps: float = 1e-5) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(midplanes, eps=bn_eps),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, conv2_midplanes: int | None,
                 bn_eps: float) -> None:
        super().__init__()
        mid = _midplanes(in_planes, planes)
        self.conv1 = nn.Sequential(
            Conv2Plus1D(in_planes, planes, mid, stride, bn_eps), nn.BatchNorm3d(planes, eps=bn_eps),
            nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(
            Conv2Plus1D(planes, planes, conv2_midplanes or mid, 1, bn_eps),
            nn.BatchNorm3d(planes, eps=bn_eps))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes, eps=bn_eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


@dataclass(frozen=True)
class BackboneSpec:
    layers: tuple[int, int, int, int]
    widths: tuple[int, int, int, int]
    stem_mid: int
    caffe2_midplanes: bool  # IG65M / VMZ conv2 mid-planes in the first block of layers 2-4
    bn_eps: float

    @property
    def out_channels(self) -> int:
        return self.widths[-1]


BACKBONES: dict[str, BackboneSpec] = {
    "r2plus1d_34": BackboneSpec((3, 4, 6, 3), (64, 128, 256, 512), 45, True, 1e-3),
    "r2plus1d_18": BackboneSpec((2, 2, 2, 2), (64, 128, 256, 512), 45, False, 1e-5),
    "tiny": BackboneSpec((1, 1, 1, 1), (16, 24, 32, 64), 12, False, 1e-5),
}


class R2Plus1D(nn.Module):
    """VideoResNet without its classifier: [B, 3, T, H, W] -> [B, C'] pooled features.

    ``fc`` is deliberately absent: MENet uses the pooled feature, and the weight
    loader drops ``fc.*`` from checkpoints.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.spec = spec
        eps = spec.bn_eps
        w0 = spec.widths[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, spec.stem_mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                      bias=False),
            nn.BatchNorm3d(spec.stem_mid, eps=eps),
            nn.ReLU(inplace=True),
            nn.Conv3d(spec.stem_mid, w0, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0),
                      bias=False),
            nn.BatchNorm3d(w0, eps=eps),
            nn.ReLU(inplace=True),
        )
        in_planes = w0
        for index, (blocks, planes) in enumerate(zip(spec.layers, spec.widths)):
            stride = 1 if index == 0 else 2
            layer = []
            for b in range(blocks):
                conv2_mid = None
                if b == 0 and index > 0 and spec.caffe2_midplanes:
                    conv2_mid = _midplanes(planes, planes)
                layer.append(BasicBlock(in_planes, planes, stride if b == 0 else 1, conv2_mid, eps))
                in_planes = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self._init_weights()

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels

    def _init_weights(self) -> None:
        # Same scheme as torchvision's VideoResNet.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


def build_backbone(name: str) -> R2Plus1D:
    try:
        spec = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None
    return R2Plus1D(spec)
