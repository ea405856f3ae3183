"""``menet build-engine`` as a function: export, optional TensorRT plans, optional parity.

Builds what this machine supports: the ONNX graphs always; TensorRT plans when
TensorRT and a CUDA GPU are present. Returns (and records in ``DIR/manifest.json``)
what was built, what was skipped and why, and the parity figures with ``verify``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.checkpoint import Checkpoint
from engine.config import MENetConfig
from engine.runtime.manifest import DEFAULT_OPSET, sha256_file

from .export import checkpoint_info, export_onnx
from .manifest import write_index
from .tensorrt_build import DEFAULT_MAX_BATCH
from .parity import FP32_ATOL, ParityRow, check_parity, verify_onnx

log = logging.getLogger(__name__)

# TensorRT parity tolerance, as a fraction of max(1, |ref| max) of each output.
TRT_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.25}


@dataclass
class BuildReport:
    out_dir: Path
    built: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    parity: list[ParityRow] = field(default_factory=list)
    index: Path | None = None

    @property
    def parity_ok(self) -> bool:
        return all(r.ok for r in self.parity)


def build_engines(cfg: MENetConfig, model: Any, out_dir: str | Path, *, checkpoint: Checkpoint | None = None,
                  precision: str = "fp16", verify: bool = False, calib_video: str | Path | None = None,
                  calib_snippets: int = 256, opset: int = DEFAULT_OPSET, max_batch: int | None = None,
                  opt_batch: int | None = None, workspace_mb: int = 4096, tensorrt: bool = True,
                  verify_batch: int = 2, verify_mfe_batch: int | None = None) -> BuildReport:
    from .tensorrt_build import build_plans, tensorrt_status
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = BuildReport(out)
    ckpt_path = checkpoint.path if checkpoint is not None and checkpoint.path else None
    ckpt_sha = sha256_file(ckpt_path) if ckpt_path else None

    for g in export_onnx(cfg, model, out, checkpoint_path=ckpt_path, opset=opset):
        report.built.append({"kind": "onnx", "stage": g.stage, "path": str(g.path.relative_to(out)),
                             "opset": opset, "dynamic_axes": g.manifest["dynamic_axes"],
                             "bytes": g.manifest["bytes"], "seconds": round(g.seconds, 2)})
    if verify:
        report.parity.extend(verify_onnx(cfg, model, out, batch=verify_batch, checkpoint_sha=ckpt_sha,
                                         mfe_batch=verify_mfe_batch, atol=FP32_ATOL))

    if not tensorrt:
        report.skipped.append({"what": "tensorrt plans", "why": "--no-tensorrt given"})
    else:
        gpu, ver, why = tensorrt_status()
        if why:
            report.skipped.append({"what": f"tensorrt plans ({precision})", "why": why})
        elif precision == "int8" and calib_video is None:
            report.skipped.append({"what": "tensorrt plans (int8)", "why": "INT8 needs --calib-video VIDEO"})
        else:
            calibration = None
            if precision == "int8":
                from .calibration import calibration_batches
                import torch
                dev = "cuda" if torch.cuda.is_available() else "cpu"
                calibration = calibration_batches(cfg, model, calib_video, batch=opt_batch or max_batch
                                                  or DEFAULT_MAX_BATCH, max_snippets=calib_snippets, device=dev)
                model.cpu()
            for p in build_plans(cfg, out, precision=precision, calibration=calibration, max_batch=max_batch,
                                 opt_batch=opt_batch, workspace_mb=workspace_mb):
                t = p.manifest["tensorrt"]
                report.built.append({"kind": "tensorrt", "stage": p.stage, "path": str(p.path.relative_to(out)),
                                     "precision": precision, "gpu": t["gpu"], "tensorrt": t["version"],
                                     "profiles": t["profiles"], "bytes": p.manifest["bytes"],
                                     "seconds": round(p.seconds, 2)})
            if verify:
                from engine.runtime.tensorrt_backend import TensorRTBackend
                backend = TensorRTBackend(cfg, out, "cuda:0", precision, checkpoint_sha=ckpt_sha,
                                          strict_precision=True)
                try:
                    rows = check_parity(cfg, model, backend, batch=verify_batch, mfe_batch=verify_mfe_batch,
                                        atol=float("inf"))
                finally:
                    backend.close()
                for r in rows:
                    r.atol = TRT_TOLERANCE[precision] * max(1.0, r.ref_max)
                report.parity.extend(rows)
    report.index = write_index(out, cfg, report.built, report.skipped, [r.to_dict() for r in report.parity],
                               checkpoint_info(ckpt_path))
    return report
