"""Model bench: per-stage latency and throughput vs batch size, per backend and precision.

Stages (docs/engines.md): ``mfe`` (per snippet), ``mrem`` (per window), ``dense``
(SFPN + boundary predictors, per window), plus ``decode`` (the detector's sparse
anchor part, PyTorch whatever the backend, per window). Backends: PyTorch CPU fp32
always; ONNX Runtime CPU (graphs from ``--engine-dir`` or exported into a temporary
directory from the same weights); PyTorch CUDA fp32 and fp16 when this torch has
CUDA; TensorRT when ``--engine-dir`` holds plans for this GPU. What cannot run here
is listed under ``skipped`` with the reason.

Each cell: one warm-up run, then ``repeats`` timed runs (fewer when one run takes
longer than ``max_cell_s / repeats``, at least 3); the median is reported, per batch
and per item, with throughput = batch / median.
"""
from __future__ import annotations

import copy
import logging
import statistics
import tempfile
import time
import warnings
from typing import Any, Callable

import numpy as np
import torch

from engine.config import MENetConfig

log = logging.getLogger(__name__)

UNIT = {"mfe": "snippet", "mrem": "window", "dense": "window", "decode": "window"}
LABEL = {"mfe": "MFE", "mrem": "MREM", "dense": "SFPN + boundaries", "decode": "decode (sparse heads, PyTorch)"}


def time_stage(backend: Any, stage: str, x: np.ndarray, repeats: int, warmup: int) -> list[float]:
    """Seconds per ``backend.run(stage, x)`` call, ``repeats`` times after ``warmup`` calls.

    Backends return host arrays, so CUDA work has finished when a call returns."""
    name = backend.specs[stage].input_name
    for _ in range(warmup):
        backend.run(stage, {name: x})
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.run(stage, {name: x})
        out.append(time.perf_counter() - t0)
    return out


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1, max_s: float | None = None) -> list[float]:
    """Seconds per ``fn()`` call; with ``max_s`` the repeats shrink (to at least 3) to fit that budget."""
    first = None
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    if max_s is not None and first:
        repeats = max(3, min(repeats, int(max_s / max(first, 1e-9))))
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def percentile(values: list[float], q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q / 100.0
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return float(v[lo] + (v[hi] - v[lo]) * (k - lo))


def open_backends(cfg: MENetConfig, model: Any, checkpoint: str | None, engine_dir: str | None, tmp: str,
                  threads: int, only: list[str] | None = None) -> tuple[list[tuple[str, Any]], list[dict[str, str]]]:
    """``[(name, backend)]`` for every backend this machine can run, and ``[{backend, why}]`` skipped."""
    from engine.runtime.manifest import sha256_file
    from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend, providers_for
    from engine.runtime.torch_backend import TorchBackend

    want = (lambda n: True) if not only else (lambda n: any(n.startswith(o) for o in only))
    out: list[tuple[str, Any]] = []
    skipped: list[dict[str, str]] = []
    cuda = torch.cuda.is_available()
    if want("pytorch-cpu-fp32"):
        out.append(("pytorch-cpu-fp32", TorchBackend(cfg, model, "cpu", "fp32")))
    if want("onnxruntime"):
        try:
            import onnxruntime as ort
            sha = sha256_file(checkpoint) if checkpoint else None
            if engine_dir is not None:
                src = engine_dir
            else:
                from build_engine.export import export_onnx
                export_onnx(cfg, copy.deepcopy(model), tmp, checkpoint_path=checkpoint)
                src = tmp
            out.append(("onnxruntime-cpu-fp32", OnnxRuntimeBackend(cfg, src, "cpu", checkpoint_sha=sha,
                                                                   threads=threads)))
            if cuda and providers_for("cuda", ort.get_available_providers()) != ["CPUExecutionProvider"]:
                out.append(("onnxruntime-cuda-fp32", OnnxRuntimeBackend(cfg, src, "cuda", checkpoint_sha=sha)))
            elif cuda:
                skipped.append({"backend": "onnxruntime-cuda", "why": "this onnxruntime has no CUDA provider"})
        except Exception as exc:  # noqa: BLE001 - report and carry on with the other backends
            skipped.append({"backend": "onnxruntime", "why": str(exc)})
    for prec in ("fp32", "fp16"):
        name = f"pytorch-cuda-{prec}"
        if not want(name):
            continue
        if not cuda:
            skipped.append({"backend": name, "why": f"no CUDA in this PyTorch ({torch.__version__})"})
            continue
        out.append((name, TorchBackend(cfg, copy.deepcopy(model), "cuda", prec)))
    if want("tensorrt"):
        if not cuda:
            skipped.append({"backend": "tensorrt", "why": "no CUDA GPU"})
        elif engine_dir is None:
            skipped.append({"backend": "tensorrt", "why": "no --engine-dir with plans (menet build-engine)"})
        else:
            try:
                from engine.runtime.select import open_backend
                b = open_backend(cfg, engine_dir, checkpoint, backend="tensorrt", device="cuda")
                out.append((f"tensorrt-cuda-{b.precision}", b))
            except Exception as exc:  # noqa: BLE001
                skipped.append({"backend": "tensorrt", "why": str(exc)})
    return out, skipped


def bench_model(cfg: MENetConfig, checkpoint: str | None = None, *, batches: tuple[int, ...] = (1, 2, 4, 8),
                repeats: int = 20, threads: int | None = None, engine_dir: str | None = None,
                backends: list[str] | None = None, max_cell_s: float = 20.0, decode: bool = True,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time every stage x batch x backend; returns ``{"rows": [...], "backends": [...], "skipped": [...]}``."""
    from build_engine.parity import stage_inputs
    from engine.postprocess.decode import decode_window
    from engine.runtime.base import dense_to_levels
    from engine.runtime.stages import STAGES

    from engine.checkpoint import load_checkpoint
    from engine.runtime.torch_backend import build_model

    say = progress or (lambda s: None)
    threads = threads if threads is not None else (cfg.stream.runtime.threads or torch.get_num_threads())
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(cfg, load_checkpoint(checkpoint, expect=cfg) if checkpoint else None)
        heads = copy.deepcopy(model.detector.heads).float().eval()
        rows: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="menet-bench-") as tmp:
            opened, skipped = open_backends(cfg, model, checkpoint, engine_dir, tmp, threads, backends)
            for bname, backend in opened:
                for stage in STAGES:
                    for b in batches:
                        x = stage_inputs(cfg, b)[stage]
                        name = backend.specs[stage].input_name
                        ts = time_call(lambda: backend.run(stage, {name: x}), repeats, 1, max_cell_s)
                        rows.append(_row(bname, backend, stage, b, ts))
                        say(_line(rows[-1]))
            if decode:
                # the sparse part of the detector: PyTorch fp32 heads on the dense outputs, one
                # window, on the device the online detector worker would use for that backend
                rel = stage_inputs(cfg, 1)["dense"]
                for ref_name in ("pytorch-cpu-fp32", "pytorch-cuda-fp32"):
                    ref = next((b for n, b in opened if n == ref_name), None)
                    if ref is None:
                        continue
                    dev = ref.torch_device
                    dev_heads = copy.deepcopy(heads).to(dev)
                    outs = ref.run_torch("dense", torch.from_numpy(rel).to(dev))
                    levels = dense_to_levels({n: o.float() for n, o in zip(ref.specs["dense"].outputs, outs)})
                    ts = time_call(lambda: decode_window(levels, dev_heads, cfg, valid_length=cfg.data.window),
                                   repeats, 1, max_cell_s)
                    rows.append(_row(ref_name, ref, "decode", 1, ts))
                    say(_line(rows[-1]))
            described = [{"name": n, "describe": b.describe(), "device": b.device, "precision": b.precision}
                         for n, b in opened]
            for _, b in opened:
                b.close()
    finally:
        torch.set_num_threads(prev_threads)
    return {"threads": threads, "batches": list(batches), "repeats": repeats, "checkpoint": checkpoint,
            "random_weights": checkpoint is None, "backends": described, "skipped": skipped, "rows": rows}


def _row(bname: str, backend: Any, stage: str, batch: int, ts: list[float]) -> dict[str, Any]:
    med = statistics.median(ts)
    return {"backend": bname, "device": backend.device, "precision": backend.precision, "stage": stage,
            "unit": UNIT[stage], "batch": batch, "repeats": len(ts), "median_ms": med * 1e3,
            "p10_ms": percentile(ts, 10) * 1e3, "p90_ms": percentile(ts, 90) * 1e3,
            "per_item_ms": med * 1e3 / batch, "throughput_per_s": batch / med if med > 0 else float("inf")}


def _line(r: dict[str, Any]) -> str:
    return (f"  {r['backend']:<22} {r['stage']:<6} batch {r['batch']:<3} {r['median_ms']:9.2f} ms "
            f"({r['per_item_ms']:.2f} ms/{r['unit']}, {r['throughput_per_s']:.1f} {r['unit']}s/s, n={r['repeats']})")


def format_model_table(model: dict[str, Any]) -> str:
    """Markdown: one row per stage x batch, per backend ms per item and items per second."""
    rows = model["rows"]
    names = [b["name"] for b in model["backends"]]
    head = "| stage | batch | " + " | ".join(f"{n} ms/item (items/s)" for n in names) + " |"
    lines = [head, "|" + " --- |" * (2 + len(names))]
    keys: list[tuple[str, int]] = []
    for r in rows:
        if (r["stage"], r["batch"]) not in keys:
            keys.append((r["stage"], r["batch"]))
    for stage, b in keys:
        cells = []
        for n in names:
            r = next((r for r in rows if r["backend"] == n and r["stage"] == stage and r["batch"] == b), None)
            cells.append("-" if r is None else f"{r['per_item_ms']:.2f} ({r['throughput_per_s']:.0f})")
        lines.append(f"| {LABEL[stage]} (per {UNIT[stage]}) | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
