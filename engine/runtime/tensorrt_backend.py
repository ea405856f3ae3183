"""TensorRT backend: serialized plans from ``menet build-engine`` (TensorRT 10 Python API).

Each stage is one plan (``DIR/tensorrt/{gpu}-sm{cc}-trt{ver}/{artifact}.{precision}.plan``)
whose manifest is checked first (:func:`engine.runtime.manifest.check_plan`): a plan
for another GPU or TensorRT version, for another config or checkpoint, or one whose
bytes changed, is refused with a message saying what differs and how to rebuild.

Device buffers come from torch CUDA tensors when this torch has CUDA (zero-copy for
callers that hold CUDA tensors), else from pycuda (as on typical Jetson / edge boxes).
Inference is ``IExecutionContext.execute_async_v3`` on one CUDA stream, with the
input shape set per call (dynamic batch within the plan's optimization profile;
larger batches are split into chunks of the profile's maximum).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MENetConfig
from .base import ArrayLike, Backend, BackendError, as_numpy
from .stages import STAGES
from .manifest import (EngineError, GpuInfo, PlanSet, check_plan, detect_gpu, find_plan_sets, plan_dir,
                       plan_mismatch, rebuild_command, tensorrt_version)

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception as exc:
        raise BackendError("TensorRT is not installed (on a GPU box: pip install '.[tensorrt]'); "
                           f"import failed: {exc}") from exc
    return trt


def device_index(device: str) -> int:
    if not device.startswith("cuda"):
        raise BackendError(f"TensorRT runs on a CUDA device, not {device!r}; set stream.runtime.device to cuda (or cuda:N)")
    _, _, idx = device.partition(":")
    return int(idx) if idx else 0


def _torch_cuda_ok() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:
        return False


class _PlanRunner:
    """One deserialized plan with its execution context and device buffers."""

    def __init__(self, trt: Any, logger: Any, path: Path, spec_inputs: list[str], spec_outputs: list[str],
                 gpu_index: int, buffers: str, hint: str) -> None:
        self.trt, self.path, self.buffers, self.gpu_index = trt, path, buffers, gpu_index
        self._cu_ctx = None
        if buffers == "pycuda":
            import pycuda.driver as cuda  # type: ignore[import-not-found]
            cuda.init()
            self.cuda = cuda
            self._cu_ctx = cuda.Device(gpu_index).retain_primary_context()
        self._push()
        try:
            runtime = trt.Runtime(logger)
            self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise EngineError(f"{path}: TensorRT could not deserialize this plan (corrupted, or made by another "
                                  f"TensorRT version or for another GPU); rebuild with `{hint}`")
            self.context = self.engine.create_execution_context()
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            if self.inputs != spec_inputs or sorted(self.outputs) != sorted(spec_outputs):
                raise EngineError(f"{path}: plan tensors {self.inputs} -> {self.outputs} differ from the stage's "
                                  f"{spec_inputs} -> {spec_outputs}; rebuild with `{hint}`")
            self.outputs = list(spec_outputs)
            self.input_name = self.inputs[0]
            lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(lo[0]), int(hi[0])
            self.np_dtype = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
            if buffers == "pycuda":
                self._alloc_pycuda(tuple(int(v) for v in hi))
            else:
                import torch
                self.torch = torch
                self.torch_device = torch.device("cuda", gpu_index)
                self.stream = torch.cuda.Stream(self.torch_device)
        finally:
            self._pop()

    # -- pycuda context handling (torch manages its own)

    def _push(self) -> None:
        if self._cu_ctx is not None:
            self._cu_ctx.push()

    def _pop(self) -> None:
        if self._cu_ctx is not None:
            self.cuda.Context.pop()

    def _alloc_pycuda(self, max_in_shape: tuple[int, ...]) -> None:
        cuda = self.cuda
        self.context.set_input_shape(self.input_name, max_in_shape)
        self.d_in = cuda.mem_alloc(int(np.prod(max_in_shape)) * self.np_dtype[self.input_name].itemsize)
        self.d_out, self.h_out = {}, {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            size = int(np.prod(shape))
            self.d_out[name] = cuda.mem_alloc(size * self.np_dtype[name].itemsize)
            self.h_out[name] = cuda.pagelocked_empty(size, self.np_dtype[name])
        self.stream = cuda.Stream()

    # -- inference

    def run(self, x: ArrayLike) -> dict[str, np.ndarray]:
        n = int(x.shape[0])
        parts = [self._run_chunk(x[i:i + self.max_batch]) for i in range(0, n, self.max_batch)]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in self.outputs}

    def _run_chunk(self, x: ArrayLike) -> dict[str, np.ndarray]:
        if self.buffers == "torch":
            return self._run_torch(x)
        return self._run_pycuda(x)

    def _run_torch(self, x: ArrayLike) -> dict[str, np.ndarray]:
        torch = self.torch
        tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16,
                  np.dtype(np.int32): torch.int32, np.dtype(np.int8): torch.int8}
        with torch.cuda.device(self.torch_device), torch.cuda.stream(self.stream):
            inp = torch.as_tensor(x).to(self.torch_device, tdtype[self.np_dtype[self.input_name]],
                                        non_blocking=True).contiguous()
            self.context.set_input_shape(self.input_name, tuple(inp.shape))
            self.context.set_tensor_address(self.input_name, inp.data_ptr())
            outs = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                outs[name] = torch.empty(shape, dtype=tdtype[self.np_dtype[name]], device=self.torch_device)
                self.context.set_tensor_address(name, outs[name].data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.path}: execute_async_v3 failed")
            result = {k: v.float().cpu().numpy() for k, v in outs.items()}  # .cpu() waits for the stream
        return result

    def _run_pycuda(self, x: ArrayLike) -> dict[str, np.ndarray]:
        cuda = self.cuda
        host = as_numpy(x, self.np_dtype[self.input_name])
        self._push()
        try:
            cuda.memcpy_htod_async(self.d_in, host, self.stream)
            self.context.set_input_shape(self.input_name, host.shape)
            self.context.set_tensor_address(self.input_name, int(self.d_in))
            shapes = {}
            for name in self.outputs:
                shapes[name] = tuple(self.context.get_tensor_shape(name))
                self.context.set_tensor_address(name, int(self.d_out[name]))
            if not self.context.execute_async_v3(self.stream.handle):
                raise RuntimeError(f"{self.path}: execute_async_v3 failed")
            views = {}
            for name in self.outputs:
                view = self.h_out[name][:int(np.prod(shapes[name]))]
                cuda.memcpy_dtoh_async(view, self.d_out[name], self.stream)
                views[name] = view
            self.stream.synchronize()
        finally:
            self._pop()
        return {k: v.reshape(shapes[k]).astype(np.float32) for k, v in views.items()}

    def close(self) -> None:
        self._push()
        try:
            for attr in ("d_in",):
                if hasattr(self, attr):
                    getattr(self, attr).free()
            for d in getattr(self, "d_out", {}).values():
                d.free()
            self.context = None
            self.engine = None
        finally:
            self._pop()
        if self._cu_ctx is not None:
            self._cu_ctx.detach()
            self._cu_ctx = None


def choose_plan_set(engine_dir: str | Path, cfg: MENetConfig, gpu: GpuInfo | None, trt_ver: str | None,
                    precision: str | None) -> tuple[PlanSet | None, str]:
    """The plan set for this GPU and TensorRT version (``precision`` first if given), and why not if none."""
    sets = find_plan_sets(engine_dir, cfg)
    if not sets:
        return None, f"no TensorRT plans for config {cfg.name!r} under {Path(engine_dir) / 'tensorrt'}"
    if trt_ver is None:
        return None, "TensorRT is not installed"
    if gpu is None:
        return None, "no CUDA GPU is visible"
    fitting = [s for s in sets if all(plan_mismatch(m, gpu, trt_ver) is None for m in s.manifests.values())]
    if not fitting:
        why = plan_mismatch(next(iter(sets[0].manifests.values())), gpu, trt_ver) or "manifest unreadable"
        return None, f"the plans under {Path(engine_dir) / 'tensorrt'} are not for this machine: {why}"
    order = ["fp16", "fp32", "int8"]
    if precision in order:
        order.remove(precision)
        order.insert(0, precision)
    fitting.sort(key=lambda s: order.index(s.precision))
    return fitting[0], ""


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, cfg: MENetConfig, engine_dir: str | Path, device: str = "cuda", precision: str | None = None,
                 checkpoint_sha: str | None = None, buffers: str | None = None, strict_precision: bool = False,
                 stages: tuple[str, ...] = STAGES) -> None:
        trt = import_tensorrt()
        idx = device_index(device)
        gpu = detect_gpu(idx)
        trt_ver = str(trt.__version__)
        self.engine_dir = Path(engine_dir)
        plan_set, why = choose_plan_set(self.engine_dir, cfg, gpu, trt_ver, precision)
        if plan_set is None:
            where = plan_dir(self.engine_dir, gpu, trt_ver) if gpu else self.engine_dir / "tensorrt"
            raise EngineError(f"no usable TensorRT plans: {why}. Build them on this machine (into {where}) with "
                              f"`{rebuild_command(cfg, self.engine_dir, precision or 'fp16')}`")
        if strict_precision and precision and plan_set.precision != precision:
            raise EngineError(f"no {precision} TensorRT plans for this GPU under {self.engine_dir} (found "
                              f"{plan_set.precision}); build them with "
                              f"`{rebuild_command(cfg, self.engine_dir, precision)}`")
        if precision and plan_set.precision != precision:
            log.warning("no %s plans for this GPU: using the %s plans in %s", precision, plan_set.precision,
                        plan_set.directory)
        super().__init__(cfg, f"cuda:{idx}", plan_set.precision, stages)
        if buffers is None:
            buffers = "torch" if _torch_cuda_ok() else "pycuda"
        if buffers == "pycuda":
            try:
                import pycuda.driver  # noqa: F401  # type: ignore[import-not-found]
            except Exception as exc:
                raise BackendError("the TensorRT backend needs device buffers: install pycuda "
                                   "(pip install '.[tensorrt]') or use a CUDA build of torch") from exc
        self.buffers = buffers
        self.plan_set = plan_set
        self.logger = trt.Logger(trt.Logger.WARNING)
        hint = rebuild_command(cfg, self.engine_dir, plan_set.precision)
        self.runners: dict[str, _PlanRunner] = {}
        self.manifests = {}
        for stage, spec in self.specs.items():
            path = plan_set.plans[stage]
            self.manifests[stage] = check_plan(path, cfg, gpu, trt_ver, checkpoint_sha, self.engine_dir)
            self.runners[stage] = _PlanRunner(trt, self.logger, path, list(spec.inputs), list(spec.outputs),
                                              idx, buffers, hint)

    def _run(self, stage: str, x: ArrayLike) -> dict[str, np.ndarray]:
        return self.runners[stage].run(x)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
        self.runners.clear()

    def describe(self) -> str:
        return f"tensorrt ({self.device}, {self.precision}, {self.buffers} buffers) from {self.plan_set.directory}"


__all__ = ["TensorRTBackend", "choose_plan_set", "import_tensorrt", "tensorrt_version"]
