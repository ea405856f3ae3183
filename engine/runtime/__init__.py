"""Runtime: one interface (:class:`Backend`) for the deployable stages, three backends
(PyTorch, ONNX Runtime, TensorRT), the ``auto`` selection rule, and the network split
per online process (:mod:`engine.runtime.split`)."""
from .base import Backend, BackendError, dense_to_levels
from .manifest import EngineError, GpuInfo
from .select import Selection, open_backend, select_backend
from .stages import STAGES, StageSpec, stage_spec, stage_specs

__all__ = ["Backend", "BackendError", "EngineError", "GpuInfo", "STAGES", "Selection", "StageSpec",
           "dense_to_levels", "open_backend", "select_backend", "stage_spec", "stage_specs"]
