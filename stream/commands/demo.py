"""``menet demo``: the online pipeline on a synthetic live camera with the bundled checkpoint."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="run the whole online pipeline on a synthetic camera and report what it found",
        description="Starts `menet run` on a synthetic live camera (real-time paced, known actions) with the "
                    "bundled checkpoint trained on the synthetic benchmark, prints events as a subscriber "
                    "receives them, then compares them with the true actions: mAP, detection delay and compute latency p50/p95, "
                    "dropped snippets. No downloads; CPU only.")
    p.add_argument("--config", default="stream", help="config (default: stream, the tiny CPU network)")
    p.add_argument("--checkpoint", help="checkpoint (default: the bundled checkpoints/menet-tiny-synth.pt)")
    p.add_argument("--seconds", type=float, default=90.0, help="length of the synthetic stream (default 90)")
    p.add_argument("--hop", type=int, default=16,
                   help="snippets between two windows (default 16: a window, and events, every 5 s; "
                        "the config's hop is 64 = 20 s)")
    p.add_argument("--seed", type=int, default=7, help="scene and actions of the synthetic stream")
    p.add_argument("--show-min-score", type=float, default=0.02,
                   help="print events with at least this score (default 0.02); every event is scored")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError
    from engine.config import ConfigError
    from stream.demo import BUNDLED_CHECKPOINT, format_report, run_demo

    if args.hop < 1:
        print("menet demo: --hop must be >= 1", file=sys.stderr)
        return 2
    if not 5 <= args.seconds <= 3600:
        print("menet demo: --seconds must be in 5..3600", file=sys.stderr)
        return 2
    checkpoint = Path(args.checkpoint) if args.checkpoint else BUNDLED_CHECKPOINT
    try:
        report = run_demo(args.config, checkpoint, args.seconds, args.seed, out=lambda s: print(s, flush=True),
                          hop=args.hop, show_min_score=args.show_min_score)
    except (ConfigError, CheckpointError, FileNotFoundError, RuntimeError, TimeoutError) as exc:
        print(f"menet demo: {exc}", file=sys.stderr)
        return 1
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "true_actions": len(report.truth), "events": len(report.events),
            "mAP@0.5": report.mAP_at_05, "average_mAP": report.average_mAP,
            "first_published_mAP@0.5": report.first_mAP_at_05, "lifecycle_updates": report.updates,
            "detection_delay": report.delays.summary(),
            "compute_latency_p50_s": report.compute_latency(50), "compute_latency_p95_s": report.compute_latency(95),
            "dropped_snippets": report.dropped_snippets, "wall_seconds": report.wall_seconds,
            "lost_messages": report.lost_messages, "false_events": len(report.false_events),
            "false_events_above_0.5": len(report.confident_false_events()),
            "runtime": report.runtime}, indent=1))
    return 0
