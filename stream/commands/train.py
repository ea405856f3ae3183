"""``menet train``: train MENet on pre-extracted features."""
from __future__ import annotations

import argparse
import sys

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train MENet on extracted features (two-stage anchor sampling)",
        description="Train the detector (MREM, SFPN, heads) on features from `menet extract`. Writes "
                    "OUT/last.pt after every epoch (a rerun resumes from it), OUT/best.pt and OUT/history.json. "
                    "best.pt never looks at the validation subset: with train.selection 'last' (default) it is "
                    "the last epoch; with 'holdout' the epoch with the best average mAP on train.holdout_fraction "
                    "of the training videos, held out from training (listed in OUT/holdout.json). Videos whose "
                    "annotations run past the decoded video are skipped and counted. Under torchrun with "
                    "several GPUs it uses DistributedDataParallel.")
    p.add_argument("--config", required=True, help="config file or shipped name")
    p.add_argument("--features", required=True, help="feature directory from `menet extract`")
    p.add_argument("--annotations", required=True, nargs="+", metavar="FILE",
                   help="ActivityNet-format JSON or THUMOS annotation folder; several are trained on as one "
                        "(e.g. a benchmark and extra videos extracted into the same --features; video names "
                        "must differ)")
    p.add_argument("--out", required=True, help="output directory for checkpoints and history")
    p.add_argument("--train-subset", default="training", help="subset to train on (default training)")
    p.add_argument("--val-subset", default="validation", help="subset to validate on ('' for none)")
    p.add_argument("--schedule", default="two-stage",
                   choices=["two-stage", "generalization", "specialization", "bias"],
                   help="anchor sampling schedule (paper Table 8 ablations)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUT/last.pt exists")
    p.add_argument("--no-val-map", action="store_true",
                   help="validation loss only (faster); the holdout mAP of train.selection 'holdout' is still computed")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError
    from engine.evaluation.results_format import EvaluationInputError
    from engine.features import FeatureError
    from engine.training.dataset import AnnotationError
    from engine.training.trainer import TrainingDataError, train
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"menet train: {exc}", file=sys.stderr)
        return 2
    if args.epochs is not None:
        if args.epochs < 1:
            print("menet train: --epochs must be >= 1", file=sys.stderr)
            return 2
        cfg.train.epochs = args.epochs
        cfg.train.generalization_epochs = min(cfg.train.generalization_epochs, args.epochs)
        cfg.train.lr_decay_epoch = min(cfg.train.lr_decay_epoch, args.epochs)
    try:
        result = train(cfg, args.features, args.annotations, args.out, train_subset=args.train_subset,
                       val_subset=args.val_subset or None, schedule=args.schedule, resume=not args.no_resume,
                       device=args.device, progress=not args.no_progress, validate_map=not args.no_val_map,
                       num_threads=args.threads, report=lambda note: print(note, flush=True))
    except (FeatureError, AnnotationError, CheckpointError, EvaluationInputError, FileNotFoundError,
            TrainingDataError) as exc:
        print(f"menet train: {exc}", file=sys.stderr)
        return 2
    print(f"checkpoints: {result.last_path} (last), {result.best_path} (best: epoch "
          f"{'?' if result.best_epoch is None else result.best_epoch + 1}, train.selection {cfg.train.selection})")
    return 0
