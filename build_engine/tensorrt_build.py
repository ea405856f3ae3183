"""TensorRT plans from the exported ONNX graphs (TensorRT 10 Python API).

Per stage: parse the ONNX graph, one optimization profile over the batch axis
(min 1, opt and max from ``stream.engine.max_batch`` unless given), FP16 by default, INT8
with entropy calibration (``IInt8EntropyCalibrator2``) on real snippets of a given
video, a persistent timing cache shared by all builds in ``DIR/tensorrt/timing.cache``,
and a manifest next to each plan (TensorRT version, GPU name and compute capability,
precision, profiles, the ONNX graph's sha256).

TensorRT is an optional import: nothing here imports it at module load.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import MENetConfig
from engine.runtime.manifest import (GpuInfo, detect_gpu, manifest_path, onnx_dir, plan_dir, plan_name,
                                     read_manifest, sha256_file, tensorrt_root, tensorrt_version, write_manifest)
from engine.runtime.stages import STAGES, stage_spec
from engine.runtime.tensorrt_backend import import_tensorrt

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 4096


@dataclass(frozen=True)
class Profile:
    """Shapes of one input for an optimization profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


DEFAULT_MAX_BATCH = 8  # the engine worker's default batch (stream.engine.max_batch)


def profiles_for(cfg: MENetConfig, stage: str, max_batch: int | None = None,
                 opt_batch: int | None = None) -> list[Profile]:
    """Batch profile of a stage: min 1, opt = max = ``max_batch`` (default
    :data:`DEFAULT_MAX_BATCH`; `menet build-engine` passes the config's ``stream.engine.max_batch``).

    The engine worker batches snippets (MFE) and windows (MREM, dense) across streams up
    to ``stream.engine.max_batch``; opt at the maximum tunes kernels for a busy box, where
    latency matters most. Larger batches are split by the runtime.
    """
    mb = int(max_batch or DEFAULT_MAX_BATCH)
    ob = int(opt_batch or mb)
    if not 1 <= ob <= mb:
        raise ValueError(f"profile needs 1 <= opt ({ob}) <= max ({mb})")
    spec = stage_spec(cfg, stage)
    return [Profile(spec.input_name, spec.input_shape(1), spec.input_shape(ob), spec.input_shape(mb))]


def tensorrt_status() -> tuple[GpuInfo | None, str | None, str]:
    """(gpu, TensorRT version, why plans cannot be built here or '')."""
    ver = tensorrt_version()
    gpu = detect_gpu()
    if ver is None:
        return gpu, None, "TensorRT is not installed (on a GPU box: pip install '.[tensorrt]')"
    if gpu is None:
        return None, ver, "no CUDA GPU is visible (neither torch CUDA nor pycuda finds one)"
    return gpu, ver, ""


# ---------------------------------------------------------------- INT8 calibration


class _DeviceBuffer:
    """A device buffer for calibration batches: torch CUDA tensor, else pycuda allocation."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        try:
            import torch
            self.torch = torch if torch.cuda.is_available() else None
        except Exception:
            self.torch = None
        if self.torch is not None:
            self.tensor = self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")
            self.ptr = int(self.tensor.data_ptr())
        else:
            import pycuda.autoinit  # noqa: F401  # type: ignore[import-not-found]
            import pycuda.driver as cuda  # type: ignore[import-not-found]
            self.cuda = cuda
            self.mem = cuda.mem_alloc(nbytes)
            self.ptr = int(self.mem)

    def upload(self, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        if host.nbytes != self.nbytes:
            raise ValueError(f"calibration batch has {host.nbytes} bytes, buffer {self.nbytes}")
        if self.torch is not None:
            self.tensor.copy_(self.torch.from_numpy(host.view(np.uint8).reshape(-1)))
            self.torch.cuda.synchronize()
        else:
            self.cuda.memcpy_htod(self.mem, host)


def make_calibrator(trt: Any, batches: list[np.ndarray], cache_path: Path) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (same shape each) and caching its table."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
            self.index = 0
            self.buffer = _DeviceBuffer(self.batches[0].nbytes)

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            self.buffer.upload(self.batches[self.index])
            self.index += 1
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            cache_path.write_bytes(bytes(cache))

    return EntropyCalibrator()


# ---------------------------------------------------------------- build


@dataclass
class BuiltPlan:
    stage: str
    path: Path
    manifest: dict[str, Any]
    seconds: float


def build_plan(cfg: MENetConfig, stage: str, onnx_path: Path, out_path: Path, *, precision: str = "fp16",
               gpu: GpuInfo, timing_cache: Path, profiles: list[Profile],
               calibration: list[np.ndarray] | None = None, workspace_mb: int = DEFAULT_WORKSPACE_MB) -> BuiltPlan:
    """Build one serialized plan from ``onnx_path`` and write it with its manifest."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    trt = import_tensorrt()
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # true fp32, so parity with PyTorch is meaningful
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8: layers without int8 kernels fall back to fp16
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.input, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    if precision == "int8":
        if not calibration:
            raise ValueError(f"INT8 build of {stage} needs calibration batches (menet build-engine --calib-video)")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(trt, calibration, out_path.with_name(out_path.name + ".calib"))
        calib_profile = builder.create_optimization_profile()
        shape = tuple(calibration[0].shape)
        calib_profile.set_shape(profiles[0].input, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {stage} from {onnx_path} ({precision}); see the log above")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(out_path)
    new_cache = config.get_timing_cache()
    if new_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(new_cache.serialize()))

    onnx_manifest = read_manifest(onnx_path)
    manifest = dict(onnx_manifest)
    for key in ("sha256", "bytes", "exporter"):
        manifest.pop(key, None)
    manifest.update({
        "kind": "tensorrt",
        "artifact": out_path.name,
        "sha256": sha256_file(out_path),
        "bytes": out_path.stat().st_size,
        "onnx": {"path": str(onnx_path), "sha256": onnx_manifest["sha256"], "opset": onnx_manifest.get("opset")},
        "tensorrt": {
            "version": str(trt.__version__),
            "gpu": gpu.name,
            "compute_capability": gpu.compute_capability,
            "precision": precision,
            "profiles": [p.to_dict() for p in profiles],
            "workspace_mb": int(workspace_mb),
            "timing_cache": str(timing_cache),
            "int8_calibration": ({"batches": len(calibration), "batch_shape": list(calibration[0].shape),
                                  "algorithm": "entropy2"} if precision == "int8" and calibration else None),
        },
    })
    write_manifest(out_path, manifest)
    return BuiltPlan(stage, out_path, manifest, time.perf_counter() - t0)


def build_plans(cfg: MENetConfig, engine_dir: str | Path, *, precision: str = "fp16",
                calibration: dict[str, list[np.ndarray]] | None = None, max_batch: int | None = None,
                opt_batch: int | None = None, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                stages: tuple[str, ...] = STAGES) -> list[BuiltPlan]:
    """Plans for every stage from ``engine_dir/onnx`` into ``engine_dir/tensorrt/{gpu}-trt{ver}/``."""
    gpu, ver, why = tensorrt_status()
    if why:
        raise RuntimeError(why)
    assert gpu is not None and ver is not None
    directory = plan_dir(engine_dir, gpu, ver)
    cache = tensorrt_root(engine_dir) / "timing.cache"
    built = []
    for stage in stages:
        spec = stage_spec(cfg, stage)
        onnx_path = onnx_dir(engine_dir) / f"{spec.artifact}.onnx"
        if not manifest_path(onnx_path).is_file():
            raise RuntimeError(f"{onnx_path}: export the ONNX graphs first")
        out = directory / plan_name(spec.artifact, precision)
        built.append(build_plan(cfg, stage, onnx_path, out, precision=precision, gpu=gpu, timing_cache=cache,
                                profiles=profiles_for(cfg, stage, max_batch, opt_batch),
                                calibration=(calibration or {}).get(stage), workspace_mb=workspace_mb))
        log.info("built %s (%s) -> %s", stage, precision, out)
    return built
