"""``menet infer``: offline detection on extracted features -> results file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "infer", help="detect actions in extracted features; write ActivityNet JSON or THUMOS text",
        description="Run a trained checkpoint over feature files (sliding windows in THUMOS mode, one "
                    "resized sequence in ActivityNet mode), decode, merge windows with Soft-NMS and write "
                    "the detections. The output format follows the extension: .json = ActivityNet results, "
                    ".txt = THUMOS submission lines `video start end class_id score`.")
    p.add_argument("--config", help="config file or shipped name (default: the checkpoint's own)")
    p.add_argument("--checkpoint", required=True, help="checkpoint from `menet train`")
    p.add_argument("--features", required=True, help="feature directory from `menet extract`")
    p.add_argument("--annotations", help="restrict to the videos of this annotation file / folder")
    p.add_argument("--subset", help="with --annotations: only this subset (e.g. validation)")
    p.add_argument("--out", required=True, help="output file: .json or .txt")
    p.add_argument("--labels", choices=["classifier", "external"], default="classifier",
                   help="labels from the built-in per-proposal classifier, or fused from external "
                        "video-level scores (--video-scores)")
    p.add_argument("--video-scores", help="external video-level scores: ActivityNet-style JSON, or a THUMOS "
                                          "score matrix (.npy/.txt) with --class-list and --video-list")
    p.add_argument("--class-list", help="THUMOS detclasslist.txt (class ids for .txt output / score matrix)")
    p.add_argument("--video-list", help="video names of the score matrix rows, one per line")
    p.add_argument("--top-k", type=int, help="classes fused per video (default inference.top_k_labels)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.config import ConfigError
    from stream.settings import load_config
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.evaluation.results_format import (EvaluationInputError, write_activitynet_results,
                                                  write_thumos_results)
    from engine.features import FeatureError, FeatureStore
    from engine.inference import detect_videos_fused, detect_videos, load_detector
    from engine.postprocess.label_fusion import (ScoreFileError, load_activitynet_scores, load_class_list,
                                                 load_thumos_scores)

    out = Path(args.out)
    if out.suffix not in (".json", ".txt"):
        print(f"menet infer: --out must end in .json or .txt, got {out.name}", file=sys.stderr)
        return 2
    try:
        expect = load_config(args.config) if args.config else None
        ckpt = load_checkpoint(args.checkpoint, expect=expect)
        cfg = expect or ckpt.config
        store = FeatureStore(args.features)
        videos = store.videos()
        if args.annotations:
            gt = load_ground_truth(args.annotations)
            if args.subset:
                gt = gt.select(args.subset)
            wanted = set(gt.videos)
            missing = sorted(wanted - set(videos))
            if missing:
                raise FeatureError(f"{args.features}: no features for {len(missing)} annotated videos, "
                                   f"e.g. {missing[:3]} (run `menet extract`)")
            videos = sorted(wanted)
        if not videos:
            raise FeatureError(f"{args.features}: no extracted videos")
        model = load_detector(ckpt, cfg)
        k = args.top_k or cfg.inference.top_k_labels
        if args.labels == "external":
            if not args.video_scores:
                print("menet infer: --labels external needs --video-scores", file=sys.stderr)
                return 2
            if args.video_scores.endswith(".json"):
                scores = load_activitynet_scores(args.video_scores)
            else:
                if not args.class_list:
                    print("menet infer: a THUMOS score matrix needs --class-list", file=sys.stderr)
                    return 2
                scores = load_thumos_scores(args.video_scores, args.class_list, args.video_list)
            results = detect_videos_fused(model, cfg, store, videos, scores, k)
        else:
            results = detect_videos(model, cfg, store, videos, ckpt.class_names)
        if out.suffix == ".json":
            write_activitynet_results(out, results)
        else:
            if args.class_list:
                class_ids = {name: cid for cid, name in load_class_list(args.class_list)}
            else:  # 1-based ids in the checkpoint's label order
                class_ids = {name: i + 1 for i, name in enumerate(ckpt.class_names)}
            write_thumos_results(out, results, class_ids)
    except (ConfigError, CheckpointError, FeatureError, EvaluationInputError, ScoreFileError,
            FileNotFoundError, KeyError) as exc:
        print(f"menet infer: {exc}", file=sys.stderr)
        return 2
    n = sum(len(v) for v in results.values())
    print(f"{n} detections in {len(results)} videos -> {out}")
    return 0
