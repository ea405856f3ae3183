"""``menet extract``: videos -> MFE snippet features for training and offline inference."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract", help="extract MFE snippet features from videos (resumable)",
        description="Decode videos, group frames into snippets (data.sigma) and clips (data.clip_length), "
                    "run the Movement Feature Extractor in batches and write one .npy per video plus "
                    "metadata. Videos already extracted are skipped; files are written atomically.")
    p.add_argument("--config", required=True, help="config file or shipped name")
    p.add_argument("--videos", required=True, help="a folder of videos, a .txt list of paths, or one video")
    p.add_argument("--out", required=True, help="feature directory")
    p.add_argument("--batch-size", type=int, default=16, help="clips per MFE forward (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.features import FeatureError
    from engine.training.extract import extract_videos, list_videos
    try:
        cfg = load_config(args.config)
        videos = list_videos(args.videos)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"menet extract: {exc}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("menet extract: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        summary = extract_videos(videos, cfg, Path(args.out), args.batch_size, args.device,
                                 progress=not args.no_progress)
    except FeatureError as exc:
        print(f"menet extract: {exc}", file=sys.stderr)
        return 2
    print(f"extracted {len(summary.done)}, already present {len(summary.skipped)}, failed {len(summary.failed)}"
          f" -> {args.out}")
    for name, why in summary.failed.items():
        print(f"  failed {name}: {why}", file=sys.stderr)
    return 1 if summary.failed else 0
