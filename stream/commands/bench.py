"""``menet bench``: model and pipeline benchmarks, a JSON report and PNG plots.

    menet bench [--config stream] [--checkpoint PATH] [--only model|pipeline] [--out DIR]
                [--batches 1 2 4 8] [--repeats 20] [--threads N] [--engine-dir DIR] [--backends NAME ...]
                [--streams auto|1,2,4] [--max-streams 16] [--duration 30] [--fps 25] [--hop 16]
                [--resolution 320x240]
    menet bench --compare A.json B.json

Model: per-stage latency (MFE per snippet, MREM per window, detector dense part and
sparse decoding per window) and throughput vs batch size, for every backend this
machine can run (PyTorch CPU fp32; ONNX Runtime; PyTorch CUDA fp32/fp16 and TensorRT
on a GPU). Pipeline: N live ``synthetic://`` streams at real-time pace through the
``menet run`` processes; per-event latency p50/p95/p99, realtime factor, dropped
snippets, CPU, RSS, GPU memory; N = 1, 2, 4, ... until a run drops snippets or falls
behind, then bisection: the largest N sustained. Writes ``OUT/bench.json`` and
``OUT/bench-*.png``. Without ``--checkpoint`` the weights are random (a warning says
so): latencies are representative, events are not. See docs/benchmarks.md.
Exit status: 0, 1 when a pipeline run failed, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark the model stages and live streams through the pipeline",
                              description=__doc__.split("\n\n", 2)[2] if __doc__ else None,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="stream", help="config name or path (default: stream, the tiny network)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: random weights + warning)")
    p.add_argument("--only", choices=("model", "pipeline"), default=None, help="run one part only")
    p.add_argument("--out", default="bench-out", help="folder for bench.json and the plots (default: bench-out)")
    p.add_argument("--json", default=None, help="report path (default: OUT/bench.json)")
    p.add_argument("--plots", default=None, help="plot folder (default: OUT); 'none' = no plots")
    p.add_argument("--plot-prefix", default="bench", help="plot file prefix (default: bench -> bench-latency.png)")
    g = p.add_argument_group("model")
    g.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes (default: 1 2 4 8)")
    g.add_argument("--repeats", type=int, default=20, help="timed runs per cell (median; default 20)")
    g.add_argument("--max-cell-s", type=float, default=20.0, help="time budget per cell: fewer repeats (>= 3) beyond")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: stream.runtime.threads, as the workers)")
    g.add_argument("--engine-dir", default=None,
                   help="engines from `menet build-engine` (ONNX graphs, TensorRT plans); default: ONNX exported "
                        "to a temp dir; also passed to the pipeline runs ('auto': the model part exports to a temp "
                        "dir, the pipeline runs use the cached graphs of --checkpoint, stream.runtime.engine_dir auto)")
    g.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                   help="only these backends (prefixes: pytorch-cpu, onnxruntime, pytorch-cuda, tensorrt)")
    g = p.add_argument_group("pipeline")
    g.add_argument("--streams", default="auto", help="'auto' (search the largest N) or counts, e.g. 1,2,4")
    g.add_argument("--max-streams", type=int, default=16, help="search bound (default 16)")
    g.add_argument("--max-runs", type=int, default=6, help="pipeline runs in the search (default 6)")
    g.add_argument("--duration", type=float, default=30.0,
                   help="measured seconds per N, after the first window is filled (default 30)")
    g.add_argument("--fps", type=float, default=25.0, help="stream frame rate (default 25)")
    g.add_argument("--hop", type=int, default=16,
                   help="data.hop for the runs (default 16: a window every 16 snippets, so a short run has "
                        "events; 0 = the config's)")
    g.add_argument("--resolution", default="320x240", help="synthetic frame size WxH (default 320x240)")
    g.add_argument("--pipeline-backend", choices=("auto", "pytorch", "onnxruntime", "tensorrt"), default=None,
                   help="stream.runtime.backend of the runs (default: the config's)")
    g.add_argument("--logs", default=None, help="keep each run's `menet run` log here (default: OUT/logs)")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), default=None,
                   help="print the key figures of two reports side by side (and B / A), then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import (FORMAT, bench_model, bench_pipeline, compare_reports, format_report, load_report,
                         machine_info, write_plots, write_report)
    from ..bench.pipeline import stream_counts

    if args.compare:
        try:
            a, b = (load_report(p) for p in args.compare)
        except (OSError, ValueError) as exc:
            print(f"menet bench: {exc}", file=sys.stderr)
            return 2
        print(compare_reports(a, b, args.compare[0], args.compare[1]))
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"menet bench: {exc}", file=sys.stderr)
        return 2
    try:
        size = tuple(int(v) for v in args.resolution.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
        counts = stream_counts(args.streams, args.max_streams)
    except (ValueError, AssertionError):
        print(f"menet bench: bad --resolution {args.resolution!r} or --streams {args.streams!r}", file=sys.stderr)
        return 2
    if args.hop and not 1 <= args.hop <= cfg.data.window:
        print(f"menet bench: --hop must be in 1..{cfg.data.window}", file=sys.stderr)
        return 2
    if args.checkpoint is None:
        print("menet bench: no --checkpoint: random weights (latency figures hold, events are meaningless; "
              "decoding an untrained detector is a worst case)", file=sys.stderr)
    out = Path(args.out)
    report: dict[str, Any] = {
        "format": FORMAT, "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["menet"] + sys.argv[1:]),
        "machine": machine_info(),
        "config": {"name": cfg.name, "source": str(cfg.source), "window": cfg.data.window, "sigma": cfg.data.sigma,
                   "clip_length": cfg.data.clip_length, "crop": list(cfg.data.crop), "backbone": cfg.model.backbone,
                   "channels": cfg.model.channels, "max_batch": cfg.stream.engine.max_batch,
                   "max_wait_ms": cfg.stream.engine.max_wait_ms, "threads": cfg.stream.runtime.threads,
                   "backend": cfg.stream.runtime.backend, "device": cfg.stream.runtime.device},
        "checkpoint": args.checkpoint,
    }
    status = 0
    say = (lambda s: print(s, flush=True))
    if args.only in (None, "model"):
        say(f"model bench: config {cfg.name}, batches {args.batches}, {args.repeats} repeats")
        report["model"] = bench_model(cfg, args.checkpoint, batches=tuple(args.batches), repeats=args.repeats,
                                      threads=args.threads, backends=args.backends,
                                      engine_dir=None if args.engine_dir == "auto" else args.engine_dir,
                                      max_cell_s=args.max_cell_s, progress=say)
        for s in report["model"]["skipped"]:
            say(f"  skipped {s['backend']}: {s['why']}")
    if args.only in (None, "pipeline"):
        say(f"pipeline bench: live synthetic {args.fps:g} fps {size[0]}x{size[1]} streams, "
            f"{args.duration:g} s measured per N, hop {args.hop or 'config'}")
        report["pipeline"] = bench_pipeline(
            args.config, streams=counts, max_streams=args.max_streams, max_runs=args.max_runs, progress=say,
            duration=args.duration, fps=args.fps, hop=args.hop or None, size=size, checkpoint=args.checkpoint,
            engine_dir=args.engine_dir, backend=args.pipeline_backend, log_dir=args.logs or out / "logs")
        if any(not r.get("ok") for r in report["pipeline"]["runs"]):
            status = 1
    report["machine"]["load_avg_end"] = list(__import__("os").getloadavg())
    path = write_report(report, args.json or out / "bench.json")
    print()
    print(format_report(report))
    print(f"\nreport: {path}")
    if args.plots != "none":
        for f in write_plots(report, args.plots or out, args.plot_prefix):
            print(f"plot: {f}")
    return status
