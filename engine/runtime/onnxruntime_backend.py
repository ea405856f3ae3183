"""ONNX Runtime backend: the ONNX graphs written by ``menet build-engine``.

Execution providers: the CPU provider always; with ``device`` ``cuda[:N]`` the
TensorRT and CUDA providers are put in front when this onnxruntime build has them
(``onnxruntime-gpu``), in that order. The graphs are fp32; ``precision`` other than
fp32 is reported and ignored here (fp16/int8 are TensorRT's job).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..config import MENetConfig
from .base import ArrayLike, Backend, BackendError, as_numpy
from .stages import STAGES
from .manifest import EngineError, check_onnx, onnx_dir, rebuild_command

log = logging.getLogger(__name__)


def providers_for(device: str, available: list[str] | None = None) -> list[str]:
    """Execution providers to ask for on ``device``, most preferred first."""
    if available is None:
        import onnxruntime as ort
        available = ort.get_available_providers()
    wanted = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider"] + wanted
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, cfg: MENetConfig, engine_dir: str | Path, device: str = "cpu", precision: str = "fp32",
                 checkpoint_sha: str | None = None, threads: int | None = None,
                 stages: tuple[str, ...] = STAGES) -> None:
        if precision != "fp32":
            log.warning("onnxruntime runs the fp32 graphs; precision %s applies to TensorRT plans only", precision)
        super().__init__(cfg, device, "fp32", stages)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a dependency of the project
            raise BackendError("onnxruntime is not installed (pip install onnxruntime)") from exc
        self.engine_dir = Path(engine_dir)
        providers = providers_for(device, ort.get_available_providers())
        if device.startswith("cuda") and providers == ["CPUExecutionProvider"]:
            log.warning("device %s asked for, but this onnxruntime has no CUDA/TensorRT provider: running on CPU",
                        device)
            self.device = "cpu"
        self.providers = providers
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.sessions = {}
        self.manifests = {}
        for stage, spec in self.specs.items():
            path = onnx_dir(self.engine_dir) / f"{spec.artifact}.onnx"
            if not path.is_file() and not path.with_name(path.name + ".json").is_file():
                raise EngineError(f"{path}: no ONNX graph for stage {stage!r} of config {cfg.name!r}; build it with "
                                  f"`{rebuild_command(cfg, self.engine_dir)}`")
            self.manifests[stage] = check_onnx(path, cfg, checkpoint_sha, self.engine_dir)
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
                raise EngineError(f"{path}: onnxruntime cannot load it ({exc}); rebuild with "
                                  f"`{rebuild_command(cfg, self.engine_dir)}`") from exc
            names = [o.name for o in sess.get_outputs()]
            if names != list(spec.outputs):
                raise EngineError(f"{path}: outputs {names} differ from stage {stage!r}'s {list(spec.outputs)}; "
                                  f"rebuild with `{rebuild_command(cfg, self.engine_dir)}`")
            self.sessions[stage] = sess

    def _run(self, stage: str, x: ArrayLike) -> dict[str, np.ndarray]:
        spec = self.specs[stage]
        outs = self.sessions[stage].run(None, {spec.input_name: as_numpy(x)})
        return {n: np.asarray(o, dtype=np.float32) for n, o in zip(spec.outputs, outs)}

    def close(self) -> None:
        self.sessions.clear()

    def describe(self) -> str:
        return f"onnxruntime ({', '.join(self.providers)}, fp32) from {onnx_dir(self.engine_dir)}"
