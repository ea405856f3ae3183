"""``stream.runtime.engine_dir: auto``: the ONNX graphs of a checkpoint, built once and cached.

On a CPU the tiny network's backbone runs about twice as fast in ONNX Runtime as in eager
PyTorch: 16 live cameras on two cores against 14 (docs/benchmarks.md, "16 cameras"). With
``auto`` the process that starts the pipeline (``menet run``, ``menet engine``, ``menet
detector``) exports the graphs of its (config, checkpoint) with ``menet build-engine``'s code
into a cache folder, checks them against PyTorch, and passes the folder on as the engine
directory; the next start finds them there. A new checkpoint (another sha256) or a changed
network (another config hash) gets its own folder, so a retrained checkpoint never meets the
graphs of the old one.

What ``auto`` does not do: TensorRT plans (a GPU build takes minutes and belongs to ``menet
build-engine`` on the target box), and anything on ``device: cuda`` (PyTorch on the GPU is the
faster path there than ONNX Runtime on the CPU). Without a checkpoint (random weights) there is
nothing worth caching: PyTorch. Nor does it stop a run: when the cache folder cannot be written or
the exported graphs do not match PyTorch, the run goes on with PyTorch and says why; only a
checkpoint it cannot read is an error (the run could not load it either).

Cache folder: ``$MENET_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/menet/engines``, else
``~/.cache/menet/engines``; one subfolder ``<config name>-<config hash>-<checkpoint sha256[:16]>``.
A build goes to a temporary sibling first and is renamed into place when complete, so an
interrupted build or two processes building at once never leave a half folder behind.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from engine.config import MENetConfig

log = logging.getLogger(__name__)

AUTO = "auto"
COMPLETE = "manifest.json"  # written last by build_engines


class EngineCacheError(RuntimeError):
    """``engine_dir: auto`` was given a checkpoint it cannot read."""


class _NoGraphs(RuntimeError):
    """The graphs could not be built or did not match PyTorch: run on PyTorch, saying why."""


def cache_root() -> Path:
    env = os.environ.get("MENET_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "menet" / "engines"


def cache_dir_for(cfg: MENetConfig, checkpoint: str | Path) -> Path:
    from engine.runtime.manifest import config_hash, sha256_file

    return cache_root() / f"{cfg.name}-{config_hash(cfg)}-{sha256_file(checkpoint)[:16]}"


def resolve_engine_dir(cfg: MENetConfig, engine_dir: str | None, checkpoint: str | Path | None, *,
                       backend: str = "auto", device: str = "cpu") -> tuple[str | None, str]:
    """The engine directory to use for ``engine_dir`` (a path or None: unchanged; ``auto``: the
    cached graphs of ``checkpoint``, built now when missing), and a line saying what was done."""
    if engine_dir != AUTO:
        return engine_dir, ""
    if backend not in ("auto", "onnxruntime"):
        return None, f"engine_dir auto: backend {backend} asked for, no ONNX graphs used"
    if not device.startswith("cpu"):
        return None, f"engine_dir auto: device {device}: PyTorch on the GPU (auto builds ONNX graphs for the CPU only)"
    if checkpoint is None:
        return None, "engine_dir auto: no checkpoint (random weights): nothing to build, PyTorch"
    if not Path(checkpoint).is_file():
        raise EngineCacheError(f"engine_dir auto: checkpoint {checkpoint} is not a file")
    target = cache_dir_for(cfg, checkpoint)
    if (target / COMPLETE).is_file():
        return str(target), f"engine_dir auto: ONNX graphs from the cache, {target}"
    try:
        _build(cfg, Path(checkpoint), target)
    except (_NoGraphs, OSError) as exc:  # e.g. a read-only home: slower, but the pipeline runs
        return None, f"engine_dir auto: no ONNX graphs ({exc}); running PyTorch"
    return str(target), f"engine_dir auto: ONNX graphs built for {checkpoint} into {target}"


def _build(cfg: MENetConfig, checkpoint: Path, target: Path) -> None:
    from build_engine.build import build_engines
    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.runtime.torch_backend import build_model

    try:
        ckpt = load_checkpoint(checkpoint, expect=cfg)
    except CheckpointError as exc:
        raise EngineCacheError(f"engine_dir auto: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".build-", dir=target.parent))
    log.info("engine_dir auto: exporting the ONNX graphs of %s (once per checkpoint) ...", checkpoint)
    try:
        try:
            report = build_engines(cfg, build_model(cfg, ckpt), tmp, checkpoint=ckpt, precision="fp32",
                                   verify=True, tensorrt=False)
        except Exception as exc:  # an export torch.onnx cannot do: PyTorch runs the network as it is
            raise _NoGraphs(f"export failed: {exc}") from exc
        if not report.parity_ok:
            bad = [f"{r.stage}/{r.output} max abs {r.max_abs:.2g}" for r in report.parity if not r.ok]
            raise _NoGraphs(f"the exported graphs differ from PyTorch beyond their tolerance ({', '.join(bad)}); "
                            f"`menet build-engine --verify` shows every output")
        try:
            tmp.rename(target)
        except OSError:  # another process finished the same build first: use its folder
            if not (target / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
