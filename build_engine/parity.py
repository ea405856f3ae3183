"""Parity of exported graphs against PyTorch: same inputs, max abs / rel error per output.

Relative error is ``max |got - ref| / max(|ref|, 1e-3 * max|ref|)`` over the elements
(the floor keeps near-zero reference values from dominating). The check passes when
the absolute error is within ``atol`` (1e-4 for fp32 graphs).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import MENetConfig
from engine.runtime.base import Backend
from engine.runtime.stages import STAGES, stage_modules, stage_specs

FP32_ATOL = 1e-4


@dataclass
class ParityRow:
    stage: str
    output: str
    backend: str
    batch: int
    shape: list[int]
    max_abs: float
    max_rel: float
    ref_max: float
    atol: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.atol

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def errors(got: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf"), float("inf"), float(np.abs(ref).max(initial=0.0))
    diff = np.abs(got - ref)
    ref_max = float(np.abs(ref).max(initial=0.0))
    floor = max(1e-3 * ref_max, 1e-12)
    rel = float((diff / np.maximum(np.abs(ref), floor)).max(initial=0.0))
    return float(diff.max(initial=0.0)), rel, ref_max


def stage_inputs(cfg: MENetConfig, batch: int, seed: int = 0, model: nn.Module | None = None) -> dict[str, np.ndarray]:
    """Seeded random inputs of realistic scale, one per stage: clips ~ N(0, 1) (normalised
    pixels), features ~ N(0, 1), relation (a ReLU output) ~ |N(0, 0.5)|. Each stage is
    checked on its own input: feeding MREM from the paper MFE would cost a backbone pass
    per snippet of the window."""
    g = torch.Generator().manual_seed(seed)
    specs = stage_specs(cfg)
    return {
        "mfe": torch.randn(specs["mfe"].input_shape(batch), generator=g).numpy(),
        "mrem": torch.randn(specs["mrem"].input_shape(batch), generator=g).numpy(),
        "dense": (torch.randn(specs["dense"].input_shape(batch), generator=g).abs() * 0.5).numpy(),
    }


@torch.no_grad()
def check_parity(cfg: MENetConfig, model: nn.Module, backend: Backend, *, batch: int = 2, seed: int = 0,
                 atol: float = FP32_ATOL, stages: tuple[str, ...] = STAGES,
                 mfe_batch: int | None = None) -> list[ParityRow]:
    """Run every stage in ``backend`` and in the PyTorch ``model`` (fp32, CPU) on the same inputs."""
    modules = stage_modules(model.eval().float().cpu())
    specs = stage_specs(cfg)
    rows = []
    for stage in stages:
        b = mfe_batch if (stage == "mfe" and mfe_batch) else batch
        x = stage_inputs(cfg, b, seed)[stage]
        got = backend.run(stage, {specs[stage].input_name: x})
        ref = modules[stage](torch.from_numpy(x))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for name, r in zip(specs[stage].outputs, ref):
            max_abs, max_rel, ref_max = errors(got[name], r.numpy())
            rows.append(ParityRow(stage, name, backend.name, b, list(r.shape), max_abs, max_rel, ref_max, atol))
    return rows


def format_parity(rows: list[ParityRow]) -> str:
    lines = [f"{'stage':6} {'output':9} {'backend':12} {'shape':18} {'max abs':>10} {'max rel':>10} {'|ref| max':>10}  ok"]
    for r in rows:
        lines.append(f"{r.stage:6} {r.output:9} {r.backend:12} {str(r.shape):18} {r.max_abs:10.2e} {r.max_rel:10.2e} "
                     f"{r.ref_max:10.3g}  {'yes' if r.ok else 'NO (> %.0e)' % r.atol}")
    return "\n".join(lines)


def verify_onnx(cfg: MENetConfig, model: nn.Module, engine_dir: str | Path, *, batch: int = 2, seed: int = 0,
                atol: float = FP32_ATOL, checkpoint_sha: str | None = None,
                mfe_batch: int | None = None) -> list[ParityRow]:
    """ONNX Runtime (CPU) on the exported graphs vs PyTorch."""
    from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend
    backend = OnnxRuntimeBackend(cfg, engine_dir, "cpu", checkpoint_sha=checkpoint_sha)
    try:
        return check_parity(cfg, model, backend, batch=batch, seed=seed, atol=atol, mfe_batch=mfe_batch)
    finally:
        backend.close()
