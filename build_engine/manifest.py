"""Manifest helpers for the build side. The schema and the load-time checks live in
:mod:`engine.runtime.manifest` (the runtime must check what it loads without importing
the builder); this module re-exports them and writes the engine directory's index."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from engine.config import MENetConfig
from engine.runtime.manifest import (DEFAULT_OPSET, FORMAT, EngineError, GpuInfo, check_onnx, check_plan,
                                     config_hash, library_versions, manifest_path, read_manifest, rebuild_command,
                                     sha256_file, write_json, write_manifest)

__all__ = ["DEFAULT_OPSET", "FORMAT", "EngineError", "GpuInfo", "check_onnx", "check_plan", "config_hash",
           "library_versions", "manifest_path", "read_manifest", "rebuild_command", "sha256_file", "write_index",
           "write_manifest"]

INDEX = "manifest.json"


def write_index(out_dir: str | Path, cfg: MENetConfig, built: list[dict[str, Any]], skipped: list[dict[str, str]],
                parity: list[dict[str, Any]] | None = None, checkpoint: dict[str, Any] | None = None) -> Path:
    """``DIR/manifest.json``: what one ``menet build-engine`` run built and skipped (and parity)."""
    path = Path(out_dir) / INDEX
    write_json(path, {
        "format": FORMAT,
        "kind": "index",
        "config": {"name": cfg.name, "source": cfg.source, "hash": config_hash(cfg)},
        "checkpoint": checkpoint,
        "opset": DEFAULT_OPSET,
        "built": built,
        "skipped": skipped,
        "parity": parity,
        "versions": library_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return path
