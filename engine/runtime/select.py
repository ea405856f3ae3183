"""Which backend runs the stages: the ``auto`` rule (the caller passes backend, device, precision).

``auto``: TensorRT when ``engine_dir`` holds a complete set of plans made for this
GPU and the installed TensorRT; else ONNX Runtime (CPU) when it holds the ONNX
graphs for this config; else PyTorch on the device asked for. Artifacts that do not
apply to this machine (plans for another GPU, no TensorRT, no GPU) are skipped with
the reason recorded; artifacts that apply but are broken (corrupted, another config,
another checkpoint) raise :class:`~engine.runtime.manifest.EngineError`, because
silently running something else would hide the problem.

An explicit ``pytorch`` / ``onnxruntime`` / ``tensorrt`` uses that backend or fails
saying why and how to build what is missing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import Checkpoint, load_checkpoint
from ..config import MENetConfig
from .base import Backend, BackendError
from .stages import STAGES
from .manifest import EngineError, GpuInfo, detect_gpu, find_onnx, rebuild_command, sha256_file, tensorrt_version

log = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
_DETECT = object()


@dataclass
class Selection:
    backend: str  # pytorch | onnxruntime | tensorrt
    device: str
    precision: str
    reason: str
    skipped: list[str] = field(default_factory=list)  # why the preferred backends were not chosen

    def __str__(self) -> str:
        text = f"{self.backend} on {self.device} ({self.precision}): {self.reason}"
        if self.skipped:
            text += "; skipped: " + "; ".join(self.skipped)
        return text


def _torch_cuda_available() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def select_backend(cfg: MENetConfig, engine_dir: str | Path | None = None, *, backend: str = "auto",
                   device: str = "cpu", precision: str = "fp32", gpu: GpuInfo | None | object = _DETECT,
                   trt_version: str | None | object = _DETECT, cuda_available: bool | None = None,
                   stages: tuple[str, ...] = STAGES) -> Selection:
    """Decide the backend for ``stages`` without loading anything (``gpu``/``trt_version``/
    ``cuda_available`` default to this machine's; tests pass them to exercise the rule)."""
    from .tensorrt_backend import choose_plan_set
    if backend not in ("auto",) + BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if gpu is _DETECT:
        idx = int(device.partition(":")[2] or 0) if device.startswith("cuda") else 0
        gpu = detect_gpu(idx)
    if trt_version is _DETECT:
        trt_version = tensorrt_version()
    if cuda_available is None:
        cuda_available = _torch_cuda_available()
    skipped: list[str] = []

    if backend in ("auto", "tensorrt"):
        if engine_dir is None:
            why = "no engine directory given"
        else:
            plans, why = choose_plan_set(engine_dir, cfg, gpu, trt_version, precision)  # type: ignore[arg-type]
            if plans is not None:
                dev = device if device.startswith("cuda") else "cuda:0"
                note = "" if plans.precision == precision else f" (no {precision} plans; using {plans.precision})"
                return Selection("tensorrt", dev, plans.precision,
                                 f"plans for {gpu.name} / TensorRT {trt_version} in {plans.directory}{note}",  # type: ignore[union-attr]
                                 skipped)
        if backend == "tensorrt":
            raise EngineError(f"backend tensorrt: {why}. Build plans on this machine with "
                              f"`{rebuild_command(cfg, engine_dir or 'ENGINE_DIR', precision if precision != 'fp32' else 'fp16')}`")
        skipped.append(f"tensorrt: {why}")

    if backend in ("auto", "onnxruntime"):
        found = find_onnx(engine_dir, cfg) if engine_dir is not None else {}
        if set(stages) <= set(found):
            ort_device = "cpu" if backend == "auto" else device
            note = "" if precision == "fp32" else f" (graphs are fp32; {precision} needs TensorRT plans)"
            return Selection("onnxruntime", ort_device, "fp32",
                             f"ONNX graphs for {cfg.name!r} in {Path(engine_dir) / 'onnx'}{note}", skipped)  # type: ignore[arg-type]
        why = ("no engine directory given" if engine_dir is None else
               f"no ONNX graphs for config {cfg.name!r} in {Path(engine_dir) / 'onnx'}"
               + (f" (found only {sorted(found)})" if found else ""))
        if backend == "onnxruntime":
            raise EngineError(f"backend onnxruntime: {why}. Export them with "
                              f"`{rebuild_command(cfg, engine_dir or 'ENGINE_DIR')}`")
        skipped.append(f"onnxruntime: {why}")

    # pytorch
    dev, prec, notes = device, precision, []
    if dev.startswith("cuda") and not cuda_available:
        if backend == "pytorch":
            raise BackendError(f"backend pytorch on {dev}: this PyTorch has no CUDA; use device cpu")
        notes.append(f"{dev} unavailable in this PyTorch, using cpu")
        dev = "cpu"
    if prec == "int8":
        if backend == "pytorch":
            raise BackendError("backend pytorch runs fp32 or fp16; int8 needs TensorRT plans "
                               "(`menet build-engine --precision int8`)")
        notes.append("int8 needs TensorRT, using fp32")
        prec = "fp32"
    if prec == "fp16" and dev == "cpu" and backend == "auto":
        notes.append("fp16 on CPU is slow and inexact, using fp32")
        prec = "fp32"
    reason = "asked for" if backend == "pytorch" else "fallback"
    if notes:
        reason += " (" + "; ".join(notes) + ")"
    return Selection("pytorch", dev, prec, reason, skipped)


def _checkpoint(checkpoint: Checkpoint | str | Path | None, cfg: MENetConfig) -> tuple[Checkpoint | None, str | None]:
    if checkpoint is None:
        return None, None
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, expect=cfg)
    sha = sha256_file(checkpoint.path) if checkpoint.path and Path(checkpoint.path).is_file() else None
    return checkpoint, sha


def open_backend(cfg: MENetConfig, engine_dir: str | Path | None = None,
                 checkpoint: Checkpoint | str | Path | None = None, *, backend: str = "auto",
                 device: str = "cpu", precision: str = "fp32", stages: tuple[str, ...] = STAGES,
                 threads: int | None = None) -> Backend:
    """Open the backend :func:`select_backend` chooses, with ``stages`` only. With a checkpoint,
    engine artifacts must have been built from that very file (sha256); without one, the PyTorch
    backend uses random weights (with a warning). ``threads``: ONNX Runtime's CPU threads per
    session (None: its default); PyTorch's are per process (``torch.set_num_threads``)."""
    sel = select_backend(cfg, engine_dir, backend=backend, device=device, precision=precision, stages=stages)
    log.info("runtime backend: %s", sel)
    ckpt, sha = _checkpoint(checkpoint, cfg)
    if sel.backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(cfg, engine_dir, sel.device, sel.precision, checkpoint_sha=sha,  # type: ignore[arg-type]
                               strict_precision=backend == "tensorrt", stages=stages)
    if sel.backend == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(cfg, engine_dir, sel.device, "fp32", checkpoint_sha=sha,  # type: ignore[arg-type]
                                  stages=stages, threads=threads)
    from .torch_backend import TorchBackend, build_detector, build_model
    model = build_detector(cfg, ckpt) if "mfe" not in stages else build_model(cfg, ckpt)
    return TorchBackend(cfg, model, sel.device, sel.precision, stages=stages)
