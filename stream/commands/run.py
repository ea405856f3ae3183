"""``menet run``: the online pipeline (grabbers, engine worker, detector worker).

    menet run --source URI [--source URI ...] [--config stream] [--checkpoint PATH]
              [--event-endpoint E] [--snippet-endpoint E] [--window-endpoint E] [--control E]
              [--hop N] [--merge auto|exact|lag] [--metrics-port P] [--wait-subscribers N]

A source is ``[ID=]URI``: a video file, ``rtsp://...``, ``/dev/videoN`` or
``synthetic://NAME?...``; the id (default: derived from the URI) is the event
topic. Events are published on ``stream.transport.event_endpoint``; watch them with
``menet subscribe``. Sources can be added and removed while it runs with ``menet
sources`` (control endpoint: ``--control``, default ipc in the run's temp dir,
printed at start). Without ``--checkpoint`` the detector is random (a warning
says so). Exit status: 0 after a clean stop (files ended, or SIGINT/SIGTERM),
1 when a worker failed for good, 2 when the pipeline cannot start (a source does
not open, a checkpoint does not match the config, a bad config).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("run", help="run online detection on live sources or files",
                              description="Start the online pipeline and publish events over ZeroMQ.")
    p.add_argument("--source", action="append", required=True, metavar="[ID=]URI",
                   help="file, rtsp://..., /dev/videoN or synthetic://NAME?... (repeatable)")
    p.add_argument("--config", default="stream", help="config name or path (default: stream)")
    p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: random weights + warning)")
    p.add_argument("--event-endpoint", default=None, help="override stream.transport.event_endpoint")
    p.add_argument("--snippet-endpoint", default=None, help="override stream.transport.snippet_endpoint")
    p.add_argument("--window-endpoint", default=None, help="override stream.transport.window_endpoint")
    p.add_argument("--control", default=None, metavar="ENDPOINT",
                   help="override stream.transport.control_endpoint: where `menet sources` adds/removes sources "
                        "(ipc://PATH or loopback tcp://HOST:PORT; default: ipc in the run's temp dir)")
    p.add_argument("--engine-dir", default=None,
                   help="override stream.runtime.engine_dir: engines from `menet build-engine` (ONNX Runtime / "
                        "TensorRT), or 'auto': the checkpoint's ONNX graphs, built once into a cache (CPU)")
    p.add_argument("--backend", choices=("auto", "pytorch", "onnxruntime", "tensorrt"), default=None,
                   help="override stream.runtime.backend")
    p.add_argument("--hop", type=int, default=None, help="override data.hop (snippets between window starts)")
    p.add_argument("--merge", choices=("auto", "exact", "lag"), default=None, help="override stream.detector.merge")
    p.add_argument("--metrics-port", type=int, default=None, help="override stream.transport.metrics_port (0 = off)")
    p.add_argument("--wait-subscribers", type=int, default=None,
                   help="hold detection until this many subscribers are connected")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..sources import SourceError, assign_stream_ids
    from ..supervisor import StartError, run_pipeline

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"menet run: {exc}", file=sys.stderr)
        return 2
    s = cfg.stream
    if args.control is not None and not args.control.startswith(("ipc://", "tcp://")):
        print(f"menet run: --control must be an ipc:// or tcp:// endpoint, got {args.control!r}", file=sys.stderr)
        return 2
    for section, attr, value in (
            (s.transport, "event_endpoint", args.event_endpoint), (s.transport, "snippet_endpoint", args.snippet_endpoint),
            (s.transport, "window_endpoint", args.window_endpoint), (s.transport, "control_endpoint", args.control),
            (s.detector, "merge", args.merge), (s.transport, "metrics_port", args.metrics_port),
            (s.detector, "wait_subscribers", args.wait_subscribers), (s.runtime, "engine_dir", args.engine_dir),
            (s.runtime, "backend", args.backend)):
        if value is not None:
            setattr(section, attr, value)
    try:  # decide the runtime backend now, so a missing/foreign engine fails here with a clear message
        from engine.runtime.base import BackendError
        from engine.runtime.manifest import EngineError
        from engine.runtime.select import select_backend
        from ..engine_cache import EngineCacheError, resolve_engine_dir
        r = s.runtime
        asked_auto = r.engine_dir == "auto"
        r.engine_dir, note = resolve_engine_dir(cfg, r.engine_dir, args.checkpoint, backend=r.backend,
                                                device=r.device)
        if note:
            print(f"menet run: {note}", file=sys.stderr)
        selection = select_backend(cfg, r.engine_dir, backend=r.backend, device=r.device, precision=r.precision)
    except (BackendError, EngineError, EngineCacheError) as exc:
        print(f"menet run: {exc}", file=sys.stderr)
        return 2
    print(f"menet run: runtime backend {selection.backend} ({selection.reason})", file=sys.stderr)
    if selection.backend == "pytorch" and selection.device == "cpu" and r.backend == "auto" and not asked_auto:
        # the tiny MFE, the engine's whole load, runs ~2x faster in ONNX Runtime: 16 live cameras on two
        # cores against 14 (docs/benchmarks.md, "16 cameras")
        print("menet run: on CPU, ONNX Runtime runs the backbone about twice as fast (16 live cameras on two "
              "cores against 14): stream.runtime.engine_dir: auto (--engine-dir auto) exports its graphs once",
              file=sys.stderr)
    if args.hop is not None:
        if not 1 <= args.hop <= cfg.data.window:
            print(f"menet run: --hop must be in 1..{cfg.data.window}, got {args.hop}", file=sys.stderr)
            return 2
        cfg.data.hop = args.hop
    try:
        sources = assign_stream_ids(args.source)
        return run_pipeline(cfg, sources, args.checkpoint, logging.getLogger().getEffectiveLevel())
    except (StartError, SourceError) as exc:
        print(f"menet run: {exc}", file=sys.stderr)
        return 2
