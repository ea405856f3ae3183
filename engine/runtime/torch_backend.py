"""PyTorch backend: the stages as the eager modules, on CPU or CUDA, fp32 or fp16."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..config import MENetConfig
from ..model.menet import MENet, TemporalDetector
from .base import ArrayLike, Backend, BackendError
from .stages import STAGES, stage_modules

log = logging.getLogger(__name__)


def build_model(cfg: MENetConfig, checkpoint: Checkpoint | None = None, seed: int | None = None) -> MENet:
    """MENet in eval mode with the checkpoint's weights, or random weights (seeded) without one.

    The backbone comes from the checkpoint when it holds one, else from
    ``cfg.model.backbone_weights`` (random, with a warning, when that is null too). Without
    a checkpoint the detector part equals :func:`build_detector`'s with the same seed, so a
    process holding only the detector still runs the other half of the same network.
    """
    seed = cfg.train.seed if seed is None else seed
    torch.manual_seed(seed)
    own_backbone = checkpoint is not None and checkpoint.backbone is not None
    model = MENet(cfg, load_backbone_weights=not own_backbone)
    if own_backbone:
        model.mfe.backbone.load_state_dict(checkpoint.backbone)  # type: ignore[union-attr]
    model.detector.load_state_dict(build_detector(cfg, checkpoint, seed, warn=False).state_dict())
    if checkpoint is None:
        warnings.warn("no checkpoint given: the detector has random weights (fine for trying the engine "
                      "build and for latency, meaningless for detections)", stacklevel=2)
    return model.eval()


def build_detector(cfg: MENetConfig, checkpoint: Checkpoint | None = None, seed: int | None = None,
                   warn: bool = True) -> TemporalDetector:
    """MREM + SFPN + heads (+ labeller) only, no backbone: what the detector process runs.

    Random weights without a checkpoint are seeded on their own, independent of the backbone."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    detector = TemporalDetector(cfg, cfg.feature_channels)
    if checkpoint is not None:
        detector.load_state_dict(checkpoint.detector)
    elif warn:
        warnings.warn("no checkpoint given: the detector has random weights (fine for trying the engine "
                      "build and for latency, meaningless for detections)", stacklevel=2)
    return detector.eval()


class TorchBackend(Backend):
    name = "pytorch"

    def __init__(self, cfg: MENetConfig, model: MENet | TemporalDetector, device: str = "cpu",
                 precision: str = "fp32", stages: tuple[str, ...] = STAGES) -> None:
        if isinstance(model, TemporalDetector) and "mfe" in stages:
            raise BackendError("the mfe stage needs the whole MENet (a TemporalDetector has no backbone)")
        super().__init__(cfg, device, precision, stages)
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"the PyTorch backend runs fp32 or fp16, not {precision!r} "
                               f"(INT8 needs TensorRT: `menet build-engine --precision int8`)")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} asked for, but this PyTorch has no CUDA "
                               f"(torch {torch.__version__}); use device cpu")
        self.torch_device = dev
        if dev.type == "cuda":
            # fixed shapes per batch size: let cuDNN pick the fastest 3-D conv algorithms once
            torch.backends.cudnn.benchmark = True
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        model = model.eval().to(dev)
        if precision == "fp16":
            model = model.half()
        self.model = model
        self.modules = {k: v for k, v in stage_modules(model).items() if k in self.specs}

    @torch.inference_mode()
    def _run(self, stage: str, x: ArrayLike) -> dict[str, np.ndarray]:
        t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
        t = t.to(self.torch_device, self.dtype, non_blocking=True)
        out = self.modules[stage](t)
        outs = out if isinstance(out, tuple) else (out,)
        names = list(self.specs[stage].outputs)
        return {n: o.float().cpu().numpy() for n, o in zip(names, outs)}

    def run_torch(self, stage: str, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Stage outputs as device tensors (no host copy), for callers that stay on the GPU."""
        with torch.inference_mode():
            out = self.modules[stage](x.to(self.torch_device, self.dtype))
        return out if isinstance(out, tuple) else (out,)
