"""``menet train-labeller``: fit the segment classifier of a trained checkpoint."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-labeller", help="fit the segment classifier (proposal labels) of a trained checkpoint",
        description="Train the segment classifier (model.labeller: segment) on the frozen detector of CHECKPOINT: "
                    "ground-truth segments of the training subset, jittered like proposals. Localisation is "
                    "unchanged. A checkpoint whose labeller is 'anchor' is converted (its heads' classifiers stay, "
                    "unused). `menet train` runs this stage itself when the config says model.labeller: segment. "
                    "Prints the label accuracy on the validation subset's ground-truth segments.")
    p.add_argument("--checkpoint", required=True, help="trained checkpoint (menet train)")
    p.add_argument("--features", required=True, help="feature directory from `menet extract`")
    p.add_argument("--annotations", required=True, help="ActivityNet-format JSON or THUMOS annotation folder")
    p.add_argument("--out", required=True, help="checkpoint to write (may equal --checkpoint)")
    p.add_argument("--config", help="take model.segment_* and train.segment_* from this config (default: the "
                                    "checkpoint's, or the defaults)")
    p.add_argument("--train-subset", default="training")
    p.add_argument("--val-subset", default="validation", help="subset to report accuracy on ('' for none)")
    p.add_argument("--input", choices=("relation", "mfe"), dest="segment_input",
                   help="override model.segment_input: what the classifier reads (the MREM output or the MFE "
                        "features; mfe makes the engine worker send each window's features to the detector too)")
    p.add_argument("--epochs", type=int, help="override train.segment_epochs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.config import config_from_dict
    from stream.settings import load_config
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.evaluation.results_format import EvaluationInputError
    from engine.features import FeatureError, FeatureStore
    from engine.training.dataset import AnnotationError, WindowDataset
    from engine.training.trainer import fit_segment_labeller

    torch.set_num_threads(max(1, args.threads))
    try:
        ckpt = load_checkpoint(args.checkpoint)
        settings = load_config(args.config) if args.config else None
        stored = ckpt.config.to_dict()
        model_cfg = {**stored["model"], "labeller": "segment"}
        train_cfg = dict(stored["train"])
        if settings is not None:
            new = settings.to_dict()
            model_cfg.update({k: v for k, v in new["model"].items() if k.startswith("segment_")})
            train_cfg.update({k: v for k, v in new["train"].items() if k.startswith("segment_")})
        if args.segment_input is not None:
            model_cfg["segment_input"] = args.segment_input
        if args.epochs is not None:
            if args.epochs < 1:
                print("menet train-labeller: --epochs must be >= 1", file=sys.stderr)
                return 2
            train_cfg["segment_epochs"] = args.epochs
        cfg = config_from_dict({**stored, "model": model_cfg, "train": train_cfg}, source=ckpt.config.source)
        store = FeatureStore(args.features)
        gt = load_ground_truth(args.annotations)
        names = ckpt.class_names
        train_set = WindowDataset(cfg, store, gt, args.train_subset, training=True, class_names=names)
        val_set = (WindowDataset(cfg, store, gt, args.val_subset, training=False, class_names=names)
                   if args.val_subset else None)
    except (ConfigError, CheckpointError, FeatureError, AnnotationError, EvaluationInputError,
            FileNotFoundError) as exc:
        print(f"menet train-labeller: {exc}", file=sys.stderr)
        return 2

    def progress(epoch: int, row: dict[str, float]) -> None:
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.train.segment_epochs:
            extra = f", validation accuracy {row['val_accuracy']:.3f}" if "val_accuracy" in row else ""
            print(f"epoch {epoch + 1}: loss {row['loss']:.4f}, training accuracy {row['train_accuracy']:.3f}{extra}",
                  flush=True)

    added = fit_segment_labeller(Path(args.checkpoint), cfg, train_set, val_set, out=Path(args.out),
                                 progress=progress)
    line = f"{args.out}: segment classifier trained on {args.train_subset!r}"
    if "val_map_labelled" in added:
        line += f"; {args.val_subset!r} average mAP with its labels {added['val_map_labelled']['average_mAP']:.4f}"
    print(line)
    return 0
