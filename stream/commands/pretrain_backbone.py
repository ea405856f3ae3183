"""``menet pretrain-backbone``: snippet-classification pretraining for backbones without published weights."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrain-backbone", help="pretrain the backbone by snippet classification (for `tiny`)",
        description="Train the config's backbone to classify each snippet clip as its action class or "
                    "background, on annotated videos, and save the backbone weights (tensors only). Set "
                    "model.backbone_weights to the file before `menet extract`. This stands in for the "
                    "Kinetics-400 pretraining of the paper's R(2+1)D-34.")
    p.add_argument("--config", required=True, help="config file or shipped name")
    p.add_argument("--videos", required=True, help="a folder of videos, a .txt list, or one video")
    p.add_argument("--annotations", required=True, help="ActivityNet-format JSON or THUMOS folder")
    p.add_argument("--subset", default="training", help="annotation subset to use (default training)")
    p.add_argument("--out", required=True, help="output .pt file for the backbone state dict")
    p.add_argument("--steps", type=int, default=600, help="optimisation steps (default 600)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per step (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant",
                   help="learning-rate schedule: constant (default, the bundled backbone's recipe) or cosine "
                        "decay to 0 over --steps")
    p.add_argument("--held-out-videos", type=int, default=0, metavar="N",
                   help="leave N of the videos out of the pretraining and print how well their snippets are "
                        "classified at the end: a figure for videos the backbone never saw, to compare draws or "
                        "recipes without reading the evaluation subset (default 0: all videos pretrain)")
    p.add_argument("--augment", action="store_true",
                   help="shift clips in time by up to half a snippet, mirror them and vary their brightness and "
                        "contrast (not the bundled backbone's recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.config import ConfigError
    from stream.settings import load_config
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.evaluation.results_format import EvaluationInputError
    from engine.training.dataset import AnnotationError, class_names_for
    from engine.training.extract import VideoReadError, list_videos
    from engine.training.pretrain import pretrain_backbone
    try:
        cfg = load_config(args.config)
        gt = load_ground_truth(args.annotations)
        names = class_names_for(cfg, gt)
        gt = gt.select(args.subset) if args.subset else gt
        videos = [v for v in list_videos(args.videos) if v.stem in gt.videos]
        if not videos:
            raise FileNotFoundError(f"{args.videos}: none of the videos is in subset {args.subset!r} "
                                    f"of {args.annotations}")
        if args.steps < 1 or args.batch_size < 1:
            raise ValueError("--steps and --batch-size must be >= 1")
        stats = pretrain_backbone(cfg, videos, gt, names, Path(args.out), args.steps, args.batch_size, args.lr,
                                  args.seed, progress=not args.no_progress,
                                  schedule=args.schedule, held_out_videos=args.held_out_videos,
                                  augment=args.augment)
    except (ConfigError, EvaluationInputError, AnnotationError, VideoReadError, FileNotFoundError,
            ValueError) as exc:
        print(f"menet pretrain-backbone: {exc}", file=sys.stderr)
        return 2
    print(f"backbone saved to {args.out}: loss {stats['loss']:.3f}, "
          f"accuracy over the last 100 steps {stats['train_accuracy_last_100_steps']:.3f}")
    if "held_out_videos" in stats:
        print(f"held-out videos ({int(stats['held_out_videos'])}, never pretrained on): snippet accuracy "
              f"{stats['held_out_accuracy']:.3f}, balanced over classes and background "
              f"{stats['held_out_balanced']:.3f}, action snippets given their class {stats['held_out_action_class']:.3f}")
    return 0
