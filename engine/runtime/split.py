"""The network split as the online pipeline runs it: one object per process.

``EngineStages`` (the engine process): uint8 clips -> MFE snippet features; windows of
snippet features -> MREM output. It holds the backbone.

``DetectorStages`` (the detector process): MREM output -> SFPN + boundary predictors
(the ``dense`` stage), plus the sparse anchor heads and the segment labeller that
decoding calls. It loads the checkpoint's detector weights only: no backbone, so on a
GPU box the paper's R(2+1)D-34 sits in memory once.

The dense stages run on the backend :func:`engine.runtime.select.select_backend`
picks for the :class:`RuntimeChoice` (TensorRT plans for this GPU, ONNX Runtime or
PyTorch). The sparse heads stay in PyTorch (fp32), on the backend's device when that
is a PyTorch device (a CUDA GPU included), else on the CPU.

With the PyTorch backend the path stays in torch on its device: uint8 clips are
uploaded as they are (4x fewer bytes than float32) and normalised there, and dense
outputs stay on the device for decoding. On a GPU this takes the per-batch host work
(normalising 32 clips on one CPU thread cost ~4x the fp16 MFE itself on an H200,
docs/benchmarks.md) off the critical path; on a CPU it saves a numpy round trip.
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import MENetConfig
from ..model.menet import LevelOutput
from ..model.preprocess import to_clip_tensor
from .base import Backend, dense_to_levels
from .select import open_backend, select_backend
from .torch_backend import TorchBackend, build_detector, build_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeChoice:
    """Where and how the stages run (the caller's settings, e.g. a stream config's)."""

    backend: str = "auto"  # auto | pytorch | onnxruntime | tensorrt
    device: str = "cpu"
    precision: str = "fp32"
    engine_dir: str | None = None  # output of `menet build-engine`; needed for onnxruntime/tensorrt
    # CPU threads of an ONNX Runtime session (None: ONNX Runtime's default, one per core). PyTorch's
    # are set per process (stream.worker.WorkerShell); without this an ORT engine worker ran two
    # threads on a two-core box full of grabbers, against the config's one (docs/benchmarks.md)
    threads: int | None = None


def _checkpoint(cfg: MENetConfig, checkpoint: str | Path | Checkpoint | None) -> Checkpoint | None:
    if checkpoint is None or isinstance(checkpoint, Checkpoint):
        return checkpoint
    return load_checkpoint(checkpoint, expect=cfg)


def class_names_of(cfg: MENetConfig, ckpt: Checkpoint | None) -> list[str]:
    """The checkpoint's class names, else the config's, else the class ids."""
    names = list(ckpt.class_names) if ckpt is not None else []
    return names or list(cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)])


def _open(cfg: MENetConfig, ckpt: Checkpoint | None, checkpoint: str | Path | Checkpoint | None,
          choice: RuntimeChoice, stages: tuple[str, ...]) -> Backend:
    selection = select_backend(cfg, choice.engine_dir, backend=choice.backend, device=choice.device,
                               precision=choice.precision, stages=stages)
    if selection.backend == "pytorch":
        # without a checkpoint every process seeds the same random network (its halves match)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if ckpt is None else "default")
            model = build_model(cfg, ckpt) if "mfe" in stages else build_detector(cfg, ckpt)
        backend: Backend = TorchBackend(cfg, model, selection.device, selection.precision, stages=stages)
    else:
        backend = open_backend(cfg, choice.engine_dir, ckpt if ckpt is not None else checkpoint,
                               backend=choice.backend, device=choice.device, precision=choice.precision,
                               stages=stages, threads=choice.threads)
    log.info("%s on %s (%s)", "+".join(stages), backend.describe(), selection.reason)
    return backend


class EngineStages:
    """``mfe``: uint8 clips [B, T, H, W, 3] -> snippet features [B, C_feat];
    ``mrem``: windows [B, C_feat, W] -> [B, C, W]."""

    def __init__(self, cfg: MENetConfig, checkpoint: str | Path | Checkpoint | None = None,
                 choice: RuntimeChoice = RuntimeChoice()) -> None:
        self.cfg = cfg
        ckpt = _checkpoint(cfg, checkpoint)
        self.class_names = class_names_of(cfg, ckpt)
        self.feature_channels = cfg.feature_channels
        d = cfg.data
        self.clip_shape = [d.clip_length, d.crop[0], d.crop[1], 3]
        self.backend = _open(cfg, ckpt, checkpoint, choice, ("mfe", "mrem"))
        self.torch_backend = self.backend if isinstance(self.backend, TorchBackend) else None

    def mfe(self, clips: np.ndarray) -> np.ndarray:
        tb = self.torch_backend
        if tb is None:
            return self.backend.mfe(to_clip_tensor(torch.from_numpy(clips)).numpy())
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(tb.torch_device)
        (feat,) = tb.run_torch("mfe", to_clip_tensor(x))
        return feat.float().cpu().numpy()

    def mrem(self, windows: np.ndarray) -> np.ndarray:
        return self.backend.mrem(np.ascontiguousarray(windows, np.float32))


class DetectorStages:
    """``detect``: MREM output [B, C, W] -> per-level boundary outputs (SFPN + heads);
    ``heads`` and ``labeller`` for decoding; ``class_names``."""

    def __init__(self, cfg: MENetConfig, checkpoint: str | Path | Checkpoint | None = None,
                 choice: RuntimeChoice = RuntimeChoice()) -> None:
        self.cfg = cfg
        ckpt = _checkpoint(cfg, checkpoint)
        self.class_names = class_names_of(cfg, ckpt)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if ckpt is None else "default")
            detector = build_detector(cfg, ckpt)
        self.heads = copy.deepcopy(detector.heads).float().eval()
        # the segment classifier (model.labeller: segment) labels decoded proposals next to the heads
        self.labeller = None if detector.labeller is None else copy.deepcopy(detector.labeller).float().eval()
        self.backend = _open(cfg, ckpt, checkpoint, choice, ("dense",))
        self.torch_backend = self.backend if isinstance(self.backend, TorchBackend) else None
        if self.torch_backend is not None:
            self.heads = self.heads.to(self.torch_backend.torch_device)
            if self.labeller is not None:
                self.labeller = self.labeller.to(self.torch_backend.torch_device)

    def detect(self, relation: np.ndarray) -> list[LevelOutput]:
        tb = self.torch_backend
        if tb is None:
            return self.backend.levels(np.ascontiguousarray(relation, np.float32))
        x = torch.from_numpy(np.ascontiguousarray(relation, np.float32)).to(tb.torch_device)
        outs = tb.run_torch("dense", x)
        # float32 on the device: decoding's heads are fp32 there
        return dense_to_levels({n: o.float() for n, o in zip(tb.specs["dense"].outputs, outs)})
