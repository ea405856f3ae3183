"""Manifests of deployment artifacts (ONNX graphs, TensorRT plans) and their checks.

Every artifact ``X`` (``mfe.onnx``, ``mfe.fp16.plan``, ...) has a JSON manifest
``X.json`` next to it saying what it is and what it was made from: stage, opset,
input/output names, shapes and dynamic axes, the config (name and a hash of its
graph-binding part), the checkpoint's sha256, the artifact's own sha256 and the
library versions; a TensorRT plan adds the TensorRT version, GPU name, compute
capability, precision and optimization profiles.

Loaders call :func:`check_onnx` / :func:`check_plan` before touching a file: a
corrupted file (sha256 differs), a manifest for another config or checkpoint, or a
plan made for another GPU or TensorRT version raises :class:`EngineError` saying
what differs and the ``menet build-engine`` command that rebuilds it.

Engine directory layout (``menet build-engine --out DIR``)::

    DIR/manifest.json                      index: what was built and skipped, and why
    DIR/onnx/mfe.onnx (+ .json)            dynamic batch
    DIR/onnx/mrem_w{W}.onnx (+ .json)      one per window length W
    DIR/onnx/dense_w{W}.onnx (+ .json)
    DIR/tensorrt/timing.cache              persistent TensorRT timing cache
    DIR/tensorrt/{gpu}-sm{cc}-trt{ver}/{artifact}.{precision}.plan (+ .json)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import MENetConfig

FORMAT = "menet-engine-1"
DEFAULT_OPSET = 17
# Keys of the binding sections that do not change the exported graphs.
_FREE_KEYS = {("model", "backbone_weights"), ("data", "hop"), ("data", "class_names"),
              ("model", "scale_ranges"), ("data", "resize_short"), ("data", "sigma"), ("data", "mode")}


class EngineError(RuntimeError):
    """An engine artifact cannot be used; the message says why and how to rebuild."""


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"

    @property
    def slug(self) -> str:
        name = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")
        return f"{name}-sm{self.compute_capability.replace('.', '')}"


# ---------------------------------------------------------------- hashing


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def graph_config(cfg: MENetConfig) -> dict[str, Any]:
    """The part of the config that determines the exported graphs' structure and shapes."""
    d = cfg.to_dict()
    out = {}
    for section in ("data", "model"):
        out[section] = {k: v for k, v in d[section].items() if (section, k) not in _FREE_KEYS}
    return out


def config_hash(cfg: MENetConfig) -> str:
    text = json.dumps(graph_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for name in ("menet-stream", "torch", "onnx", "onnxruntime", "tensorrt"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------- rebuild hints


def rebuild_command(cfg: MENetConfig | str, engine_dir: str | Path, precision: str | None = None,
                    checkpoint: str | None = None) -> str:
    name = cfg if isinstance(cfg, str) else (cfg.source if cfg.source not in ("<memory>", "") else cfg.name)
    cmd = f"menet build-engine --config {name}"
    cmd += f" --checkpoint {checkpoint}" if checkpoint else " --checkpoint CHECKPOINT"
    cmd += f" --out {engine_dir}"
    if precision:
        cmd += f" --precision {precision}"
    return cmd


# ---------------------------------------------------------------- files


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_manifest(artifact: str | Path, manifest: dict[str, Any]) -> Path:
    path = manifest_path(artifact)
    write_json(path, manifest)
    return path


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    artifact = Path(artifact)
    path = manifest_path(artifact)
    if not path.is_file():
        raise EngineError(f"{artifact}: its manifest {path.name} is missing; an engine file without a manifest "
                          f"is not loaded (rebuild with `menet build-engine`)")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: unreadable manifest ({exc}); rebuild with `menet build-engine`") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise EngineError(f"{path}: not a MENet engine manifest (format {obj.get('format') if isinstance(obj, dict) else None!r}, "
                          f"expected {FORMAT!r}); rebuild with `menet build-engine`")
    return obj


def onnx_dir(root: str | Path) -> Path:
    return Path(root) / "onnx"


def tensorrt_root(root: str | Path) -> Path:
    return Path(root) / "tensorrt"


def plan_dir(root: str | Path, gpu: GpuInfo, trt_version: str) -> Path:
    return tensorrt_root(root) / f"{gpu.slug}-trt{trt_version}"


def plan_name(artifact: str, precision: str) -> str:
    return f"{artifact}.{precision}.plan"


# ---------------------------------------------------------------- checks


def _check_common(artifact: Path, manifest: dict[str, Any], cfg: MENetConfig, engine_dir: Path,
                  checkpoint_sha: str | None, precision: str | None) -> None:
    hint = rebuild_command(cfg, engine_dir, precision)
    if not artifact.is_file():
        raise EngineError(f"{artifact}: file missing (its manifest is there); rebuild with `{hint}`")
    want_cfg = manifest.get("config", {})
    if want_cfg.get("hash") != config_hash(cfg):
        raise EngineError(
            f"{artifact} was built for config {want_cfg.get('name')!r} (graph hash {want_cfg.get('hash')}), "
            f"not for {cfg.name!r} (hash {config_hash(cfg)}): shapes or layers differ. Rebuild with `{hint}`")
    if checkpoint_sha is not None:
        built = (manifest.get("checkpoint") or {}).get("sha256")
        if built != checkpoint_sha:
            what = "random weights" if built is None else f"checkpoint sha256 {built[:12]}..."
            raise EngineError(f"{artifact} was built from {what}, not from the given checkpoint "
                              f"(sha256 {checkpoint_sha[:12]}...). Rebuild with `{hint}`")


def check_onnx(artifact: str | Path, cfg: MENetConfig, checkpoint_sha: str | None = None,
               engine_dir: str | Path | None = None) -> dict[str, Any]:
    """Manifest of an ONNX graph after checking it fits ``cfg`` and is intact."""
    artifact = Path(artifact)
    engine_dir = Path(engine_dir) if engine_dir is not None else artifact.parent.parent
    manifest = read_manifest(artifact)
    if manifest.get("kind") != "onnx":
        raise EngineError(f"{artifact}: manifest kind is {manifest.get('kind')!r}, expected 'onnx'")
    _check_common(artifact, manifest, cfg, engine_dir, checkpoint_sha, None)
    actual = sha256_file(artifact)
    if actual != manifest.get("sha256"):
        raise EngineError(f"{artifact} is corrupted or was changed after it was built: sha256 {actual[:12]}... "
                          f"but its manifest says {str(manifest.get('sha256'))[:12]}.... "
                          f"Rebuild with `{rebuild_command(cfg, engine_dir)}`")
    return manifest


def plan_mismatch(manifest: dict[str, Any], gpu: GpuInfo | None, trt_version: str | None) -> str | None:
    """Why a plan cannot run on this machine (another GPU / TensorRT version), or None."""
    t = manifest.get("tensorrt") or {}
    if trt_version is None:
        return "TensorRT is not installed"
    if gpu is None:
        return "no CUDA GPU is visible"
    if t.get("version") != trt_version:
        return (f"it was built with TensorRT {t.get('version')} but TensorRT {trt_version} is installed "
                f"(plans are tied to the exact TensorRT version)")
    if t.get("gpu") != gpu.name or str(t.get("compute_capability")) != gpu.compute_capability:
        return (f"it was built for GPU {t.get('gpu')!r} (compute capability {t.get('compute_capability')}) but this "
                f"machine has {gpu.name!r} (compute capability {gpu.compute_capability}); plans are tied to the GPU model")
    return None


def check_plan(artifact: str | Path, cfg: MENetConfig, gpu: GpuInfo | None, trt_version: str | None,
               checkpoint_sha: str | None = None, engine_dir: str | Path | None = None) -> dict[str, Any]:
    """Manifest of a TensorRT plan after checking it fits ``cfg``, this GPU and TensorRT, and is intact."""
    artifact = Path(artifact)
    engine_dir = Path(engine_dir) if engine_dir is not None else artifact.parent.parent.parent
    manifest = read_manifest(artifact)
    if manifest.get("kind") != "tensorrt":
        raise EngineError(f"{artifact}: manifest kind is {manifest.get('kind')!r}, expected 'tensorrt'")
    precision = (manifest.get("tensorrt") or {}).get("precision")
    why = plan_mismatch(manifest, gpu, trt_version)
    if why:
        raise EngineError(f"{artifact} cannot be loaded here: {why}. Rebuild it on this machine with "
                          f"`{rebuild_command(cfg, engine_dir, precision)}`")
    _check_common(artifact, manifest, cfg, engine_dir, checkpoint_sha, precision)
    actual = sha256_file(artifact)
    if actual != manifest.get("sha256"):
        raise EngineError(f"{artifact} is corrupted or was changed after it was built: sha256 {actual[:12]}... "
                          f"but its manifest says {str(manifest.get('sha256'))[:12]}.... "
                          f"Rebuild with `{rebuild_command(cfg, engine_dir, precision)}`")
    return manifest


# ---------------------------------------------------------------- discovery


def find_onnx(engine_dir: str | Path, cfg: MENetConfig) -> dict[str, Path]:
    """stage -> ONNX file for ``cfg`` that exists in ``engine_dir`` (no checks yet)."""
    from .stages import stage_specs
    out = {}
    for stage, spec in stage_specs(cfg).items():
        path = onnx_dir(engine_dir) / f"{spec.artifact}.onnx"
        if path.is_file() or manifest_path(path).is_file():
            out[stage] = path
    return out


@dataclass
class PlanSet:
    directory: Path
    precision: str
    plans: dict[str, Path]  # stage -> plan
    manifests: dict[str, dict[str, Any]]


def find_plan_sets(engine_dir: str | Path, cfg: MENetConfig) -> list[PlanSet]:
    """Every complete set of plans (one per stage, one precision) under ``engine_dir/tensorrt``."""
    from .stages import stage_specs
    root = tensorrt_root(engine_dir)
    if not root.is_dir():
        return []
    specs = stage_specs(cfg)
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for precision in ("fp16", "int8", "fp32"):
            plans, manifests = {}, {}
            for stage, spec in specs.items():
                path = sub / plan_name(spec.artifact, precision)
                if manifest_path(path).is_file():
                    plans[stage] = path
                    try:
                        manifests[stage] = read_manifest(path)
                    except EngineError:
                        manifests[stage] = {}
            if len(plans) == len(specs):
                out.append(PlanSet(sub, precision, plans, manifests))
    return out


# ---------------------------------------------------------------- this machine


def tensorrt_version() -> str | None:
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except Exception:  # ImportError, or a broken install that fails to load its libraries
        return None
    return str(trt.__version__)


def detect_gpu(index: int = 0) -> GpuInfo | None:
    """Name and compute capability of CUDA device ``index`` (torch CUDA, else pycuda), or None."""
    try:
        import torch
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return GpuInfo(torch.cuda.get_device_name(index), f"{major}.{minor}")
    except Exception:
        pass
    try:
        import pycuda.driver as cuda  # type: ignore[import-not-found]
        cuda.init()
        if index < cuda.Device.count():
            dev = cuda.Device(index)
            major, minor = dev.compute_capability()
            return GpuInfo(dev.name(), f"{major}.{minor}")
    except Exception:
        pass
    return None
