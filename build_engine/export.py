"""ONNX export of the deployable stages (MFE, MREM, detector dense part).

TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset 17 by
default, dynamic batch axis on every input and output; window length, clip size and
channels are fixed by the config (one MREM/dense graph per window length). Each
graph gets a manifest next to it (:mod:`engine.runtime.manifest`).

The sparse anchor part (SAlign + ASPs + classifier on candidate pairs) is not
exported: it stays in PyTorch, where decoding evaluates it on the few candidate pairs
of each window (see docs/engines.md).
"""
from __future__ import annotations

import datetime as _dt
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.config import MENetConfig
from engine.runtime.manifest import (DEFAULT_OPSET, FORMAT, config_hash, library_versions, onnx_dir, sha256_file,
                                     write_manifest)
from engine.runtime.stages import STAGES, StageSpec, stage_modules, stage_specs

log = logging.getLogger(__name__)


@dataclass
class ExportedGraph:
    stage: str
    path: Path
    manifest: dict[str, Any]
    seconds: float


def checkpoint_info(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {"path": None, "sha256": None, "note": "random weights"}
    return {"path": str(path), "sha256": sha256_file(path)}


def base_manifest(cfg: MENetConfig, spec: StageSpec, kind: str, checkpoint: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "kind": kind,
        **spec.to_dict(),
        "config": {"name": cfg.name, "source": cfg.source, "hash": config_hash(cfg),
                   "window": cfg.data.window, "clip": [cfg.data.clip_length, *cfg.data.crop],
                   "feature_channels": cfg.feature_channels, "channels": cfg.model.channels,
                   "level_lengths": cfg.level_lengths()},
        "checkpoint": checkpoint,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export_stage(module: nn.Module, spec: StageSpec, path: Path, opset: int = DEFAULT_OPSET,
                 example_batch: int = 1) -> None:
    """Export one stage module to ``path`` (written atomically)."""
    x = torch.randn(spec.input_shape(example_batch), generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter warns about dynamic-batch LSTMs and traced shapes; both are intended
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (x,), buf, dynamo=False, opset_version=opset,
                          input_names=list(spec.inputs), output_names=list(spec.outputs),
                          dynamic_axes=spec.dynamic_axes(), do_constant_folding=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def export_onnx(cfg: MENetConfig, model: nn.Module, out_dir: str | Path, *, checkpoint_path: str | Path | None = None,
                opset: int = DEFAULT_OPSET, stages: tuple[str, ...] = STAGES) -> list[ExportedGraph]:
    """Export ``stages`` of ``model`` (a :class:`engine.model.menet.MENet`) to ``out_dir/onnx``."""
    import time
    import onnx
    directory = onnx_dir(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    modules = stage_modules(model.eval())
    specs = stage_specs(cfg)
    ckpt = checkpoint_info(checkpoint_path)
    done = []
    for stage in stages:
        spec = specs[stage]
        path = directory / f"{spec.artifact}.onnx"
        t0 = time.perf_counter()
        export_stage(modules[stage], spec, path, opset)
        onnx.checker.check_model(str(path))
        manifest = base_manifest(cfg, spec, "onnx", ckpt)
        manifest.update({"artifact": path.name, "opset": opset, "exporter": "torch.onnx (TorchScript, dynamo=False)",
                         "sha256": sha256_file(path), "bytes": path.stat().st_size})
        write_manifest(path, manifest)
        done.append(ExportedGraph(stage, path, manifest, time.perf_counter() - t0))
        log.info("exported %s -> %s", stage, path)
    return done
