"""One runtime interface for the three deployable stages, whatever executes them.

A :class:`Backend` runs a stage (``mfe``, ``mrem``, ``dense``; contracts in
:mod:`engine.runtime.stages`) on numpy arrays or torch tensors and returns float32
numpy arrays by output name. Implementations: :class:`~engine.runtime.torch_backend.TorchBackend`
(CPU or CUDA, fp32/fp16), :class:`~engine.runtime.onnxruntime_backend.OnnxRuntimeBackend`
(ONNX graphs from ``menet build-engine``) and
:class:`~engine.runtime.tensorrt_backend.TensorRTBackend` (serialized plans). Choose one
with :func:`engine.runtime.select.open_backend`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Union

import numpy as np
import torch

from ..config import MENetConfig
from .stages import STAGES, StageSpec, stage_specs

ArrayLike = Union[np.ndarray, torch.Tensor]


class BackendError(RuntimeError):
    """A backend cannot be used as asked (device, precision, missing library)."""


class Backend(ABC):
    name: str = "?"

    def __init__(self, cfg: MENetConfig, device: str, precision: str, stages: tuple[str, ...] = STAGES) -> None:
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        self.cfg = cfg
        self.device = device
        self.precision = precision
        # a process opens only the stages it runs (the detector: dense only, no backbone)
        self.specs: dict[str, StageSpec] = {s: spec for s, spec in stage_specs(cfg).items() if s in stages}

    # -- the interface

    def run(self, stage: str, inputs: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
        """Run ``stage`` on ``{input_name: array}``; returns ``{output_name: float32 array}``."""
        spec = self._spec(stage)
        if set(inputs) != set(spec.inputs):
            raise ValueError(f"stage {stage!r} takes inputs {list(spec.inputs)}, got {list(inputs)}")
        x = inputs[spec.input_name]
        want = spec.inputs[spec.input_name]
        shape = tuple(x.shape)
        if len(shape) != len(want) or shape[1:] != want[1:]:
            raise ValueError(f"stage {stage!r} input {spec.input_name!r} must be "
                             f"[B, {', '.join(map(str, want[1:]))}] for config {self.cfg.name!r}, got {list(shape)}")
        if shape[0] == 0:
            return {name: np.zeros((0,) + s[1:], np.float32) for name, s in spec.outputs.items()}
        return self._run(stage, x)

    @abstractmethod
    def _run(self, stage: str, x: ArrayLike) -> dict[str, np.ndarray]:
        """Run on a validated, non-empty input."""

    def close(self) -> None:
        """Release sessions and device memory."""

    def describe(self) -> str:
        return f"{self.name} ({self.device}, {self.precision})"

    # -- conveniences

    def mfe(self, clips: ArrayLike) -> np.ndarray:
        """[B, 3, T, H, W] normalised clips -> [B, C_feat] snippet features."""
        return self.run("mfe", {"clips": clips})["features"]

    def mrem(self, features: ArrayLike) -> np.ndarray:
        """[B, C_feat, W] window of snippet features -> [B, C, W]."""
        return self.run("mrem", {"features": features})["relation"]

    def dense(self, relation: ArrayLike) -> dict[str, np.ndarray]:
        """[B, C, W] MREM output -> ``level{i}`` [B, C, L_i] and ``bounds{i}`` [B, 2, L_i]."""
        return self.run("dense", {"relation": relation})

    def levels(self, relation: ArrayLike):
        """Dense stage as :class:`~engine.model.menet.LevelOutput` s (torch, CPU), ready for
        :func:`engine.postprocess.decode.decode_window` with the PyTorch heads."""
        return dense_to_levels(self.dense(relation))

    def _spec(self, stage: str) -> StageSpec:
        try:
            return self.specs[stage]
        except KeyError:
            if stage in STAGES:
                raise ValueError(f"stage {stage!r} was not opened in this backend (opened: "
                                 f"{', '.join(self.specs)})") from None
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}") from None

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def dense_to_levels(out: Mapping[str, np.ndarray | torch.Tensor]):
    """``level{i}``/``bounds{i}`` outputs (numpy, or torch tensors left on their device) as
    :class:`~engine.model.menet.LevelOutput` s."""
    from ..model.menet import LevelOutput
    levels = []
    i = 0
    while f"level{i}" in out:
        bounds = _as_tensor(out[f"bounds{i}"])
        levels.append(LevelOutput(_as_tensor(out[f"level{i}"]), bounds[:, 0], bounds[:, 1], None))
        i += 1
    return levels


def as_numpy(x: ArrayLike, dtype: np.dtype = np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=dtype)
