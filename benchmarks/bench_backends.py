"""Latency of the deployable stages per backend: PyTorch vs ONNX Runtime on CPU (and PyTorch
CUDA fp32/fp16 when this torch has CUDA).

    python benchmarks/bench_backends.py --json bench_backends.json
    python benchmarks/bench_backends.py --configs tiny --batches 1 8 --repeats 20
    python benchmarks/bench_backends.py --quick   # smoke test, seconds

Per config (random weights, same for both backends), per stage and batch: medians of
``--repeats`` timed runs after one warm-up run. Reported per item: MFE per snippet
(batch time / batch), MREM and detector dense part (SFPN + boundary predictors) per
window. The paper MFE (R(2+1)D-34, 2 x 76 GMAC per snippet) is slow on a CPU: it uses
``--slow-repeats`` (default 3) and its batch-8 run has no separate warm-up (the
batch-1 runs warmed the backend up).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from build_engine.export import export_onnx  # noqa: E402
from build_engine.parity import stage_inputs  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend  # noqa: E402
from engine.runtime.stages import STAGES  # noqa: E402
from engine.runtime.torch_backend import TorchBackend, build_model  # noqa: E402
from stream.bench.model import time_stage  # noqa: E402  (shared with `menet bench`)

UNIT = {"mfe": "snippet", "mrem": "window", "dense": "window"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "thumos14"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--slow-repeats", type=int, default=3, help="repeats for the paper-size MFE")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(),
                    help="CPU threads for both backends (default: torch's)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: tiny config, batches 1 and 2, one repeat (ONNX export and both backends run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.configs, args.batches, args.repeats, args.slow_repeats = ["tiny"], [1, 2], 1, 1
    torch.set_num_threads(args.threads)
    results = []
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {args.threads} CPU threads; "
          + (f"CUDA device {torch.cuda.get_device_name(0)}" if cuda
             else "CUDA not available: PyTorch CUDA fp32/fp16 rows skipped"))
    for name in args.configs:
        cfg = load_config(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_model(cfg)
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(cfg, model, tmp)
            backends = [("pytorch-cpu-fp32", TorchBackend(cfg, model)),
                        ("onnxruntime-cpu-fp32", OnnxRuntimeBackend(cfg, tmp, "cpu", threads=args.threads))]
            if cuda:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    backends.append(("pytorch-cuda-fp32", TorchBackend(cfg, build_model(cfg), "cuda", "fp32")))
                    backends.append(("pytorch-cuda-fp16", TorchBackend(cfg, build_model(cfg), "cuda", "fp16")))
            for stage in STAGES:
                for batch in args.batches:
                    x = stage_inputs(cfg, batch)[stage]
                    slow = stage == "mfe" and cfg.model.backbone != "tiny"
                    row = {"config": name, "stage": stage, "batch": batch, "unit": UNIT[stage]}
                    for bname, backend in backends:
                        on_cpu = backend.device == "cpu"
                        reps = args.slow_repeats if slow and on_cpu else args.repeats
                        warm = 0 if slow and on_cpu and batch > 1 else 1
                        times = time_stage(backend, stage, x, reps, warm)
                        med = statistics.median(times)
                        row[bname] = {"median_ms": med * 1e3, "per_item_ms": med * 1e3 / batch,
                                      "repeats": reps, "warmup": warm}
                    base = row["pytorch-cpu-fp32"]["per_item_ms"]
                    row["ratio_pytorch_over_ort"] = base / row["onnxruntime-cpu-fp32"]["per_item_ms"]
                    results.append(row)
                    line = f"{name:9} {stage:5} b{batch:<2} " + "  ".join(
                        f"{b}: {row[b]['per_item_ms']:9.2f} ms/{UNIT[stage]}" for b, _ in backends)
                    print(line + f"  pytorch/ort {row['ratio_pytorch_over_ort']:.2f}", flush=True)
            for _, b in backends:
                b.close()
    print()
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                                               "cuda": torch.cuda.get_device_name(0) if cuda else None,
                                               "results": results}, indent=1))
    return 0


def format_table(results: list[dict]) -> str:
    lines = ["| config | stage | batch | PyTorch CPU (ms per item) | ONNX Runtime CPU (ms per item) | PyTorch / ORT |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        label = {"mfe": "MFE (per snippet)", "mrem": "MREM (per window)", "dense": "SFPN + boundaries (per window)"}
        lines.append(f"| {r['config']} | {label[r['stage']]} | {r['batch']} | "
                     f"{r['pytorch-cpu-fp32']['per_item_ms']:.2f} | {r['onnxruntime-cpu-fp32']['per_item_ms']:.2f} | "
                     f"{r['ratio_pytorch_over_ort']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
