"""Decoding ablations: the same trained detectors decoded with one inference setting changed.

Issue 12's "decoding (candidate rule, the 2048-pair cap)" and the offline output choices
(labels per proposal, the score floor, Soft-NMS), each measured on every given checkpoint
(detector seeds) and reported as mean +- std over them, with the figures of
``benchmarks/ablation_seeds.py``'s ``score`` (labelled and class-agnostic average mAP,
mAP per tIoU, label accuracy of found actions) on the validation subset and, when given, on
longer unseen videos and any further ``--set``. Nothing is retrained; each row changes only
``inference`` keys, or, in the hop rows, how videos longer than a window are cut (``data.hop``).

    .venv/bin/python benchmarks/decoding_study.py --checkpoint 0=runs/bundled/run/best.pt \\
        --checkpoint 1=runs/bb-seeds/full-s1/best.pt --features runs/bundled/features \\
        --annotations runs/bundled/synth/annotations.json \\
        --long-features runs/long_feats --long-annotations runs/long/annotations.json \\
        --out runs/decoding-study.json

About 20 s per checkpoint and variant on one thread here (80 + 12 videos).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ablation_seeds import markdown_table, quick_dataset, score  # noqa: E402  (one scoring and table for both studies)
from engine.checkpoint import load_checkpoint  # noqa: E402

# name -> config overrides by section; the first row is the checkpoint's own settings (the paper's
# rule, its 50 % window overlap). The window layout rows change only how videos longer than a
# window are cut at inference (the detector was trained on hop = window / 2); online the hop is
# also how often a window, and its events, comes (docs/benchmarks.md).
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "as trained (paper rule, cap 2048, 1 label, floor 0.001)": {},
    "boundary edges only when they peak": {"inference": {"boundary_edges": "peak"}},
    "peak_ratio 0.3 (more threshold candidates)": {"inference": {"peak_ratio": 0.3}},
    "peak_ratio 0.8 (fewer threshold candidates)": {"inference": {"peak_ratio": 0.8}},
    "no pair cap (every candidate pair, as the paper)": {"inference": {"max_pairs": 0}},
    "pair cap 256": {"inference": {"max_pairs": 256}},
    "2 labels per proposal": {"inference": {"labels_per_proposal": 2}},
    "score floor 0 (min_score)": {"inference": {"min_score": 0.0}},
    "score floor 0 + 2 labels per proposal": {"inference": {"min_score": 0.0, "labels_per_proposal": 2}},
    "class-agnostic Soft-NMS": {"inference": {"soft_nms": {"class_agnostic": True}}},
    "hop = window / 4 (75 % overlap)": {"data": {"hop": "window/4"}},
    "hop = window / 8 (87.5 % overlap)": {"data": {"hop": "window/8"}},
    "hop = window (no overlap)": {"data": {"hop": "window"}},
}


def resolve_overrides(overrides: dict[str, dict[str, Any]], window: int) -> dict[str, dict[str, Any]]:
    """A hop written as ``"window/N"`` or ``"window"`` becomes snippets of the checkpoint's window."""
    data = dict(overrides.get("data", {}))
    hop = data.get("hop")
    if isinstance(hop, str):
        data["hop"] = window if hop == "window" else max(1, window // int(hop.split("/")[1]))
    return {**overrides, "data": data} if data else dict(overrides)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", action="append", default=[], metavar="SEED=CKPT",
                   help="a trained checkpoint, named by its detector seed; repeat for error bars")
    p.add_argument("--features", default=None)
    p.add_argument("--annotations", default=None, help="ActivityNet-format JSON with a validation subset")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the bundled checkpoint on 16 random feature files, three variants (one a window layout)")
    p.add_argument("--subset", default="validation")
    p.add_argument("--long-features", default=None, help="optional second set: longer unseen videos")
    p.add_argument("--long-annotations", default=None)
    p.add_argument("--set", nargs=3, action="append", default=[], metavar=("NAME", "FEATURES", "ANNOTATIONS"),
                   help="a further set scored on all its videos (repeatable), e.g. idle scenes")
    p.add_argument("--variants", default=None, help="comma list of variant numbers (0-based) to run; default all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="report JSON")
    a = p.parse_args(argv)
    if not a.quick and not (a.checkpoint and a.features and a.annotations):
        p.error("--checkpoint, --features and --annotations are required (or --quick)")
    if (a.long_features is None) != (a.long_annotations is None):
        p.error("--long-features and --long-annotations go together")
    return a


def _checkpoints(items: list[str]) -> list[tuple[str, Path]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--checkpoint {item!r}: expected SEED=CHECKPOINT with an existing file")
        out.append((name, Path(path)))
    return out


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.quick:
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="decoding-quick-"))
        try:
            features, ann = quick_dataset(tmp)
            a.checkpoint = [f"0={REPO / 'checkpoints' / 'menet-tiny-synth.pt'}"]
            a.features, a.annotations = str(features), str(ann)
            a.long_features, a.long_annotations, a.variants = str(features), str(ann), "0,4,10"
            return run_study(a)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return run_study(a)


def run_study(a: argparse.Namespace) -> int:
    torch.set_num_threads(a.threads)
    ckpts = _checkpoints(a.checkpoint)
    names = list(VARIANTS)
    if a.variants:
        try:
            names = [names[int(i)] for i in a.variants.split(",")]
        except (ValueError, IndexError):
            raise SystemExit(f"--variants {a.variants!r}: comma list of numbers 0..{len(VARIANTS) - 1}")
    rows: list[dict[str, Any]] = []
    for variant in names:
        for seed, path in ckpts:
            t0 = time.perf_counter()
            overrides = resolve_overrides(VARIANTS[variant], load_checkpoint(path).config.data.window)
            scores = {"validation": score(path, a.features, a.annotations, a.subset, overrides)}
            if a.long_features:
                scores["long"] = score(path, a.long_features, a.long_annotations, None, overrides)
            for name, features, annotations in a.set:
                scores[name] = score(path, features, annotations, None, overrides)
            rows.append({"variant": variant, "overrides": overrides, "seed": seed,
                         "checkpoint": str(path), "scores": scores})
            v = scores["validation"]
            print(f"{variant} | seed {seed}: average mAP {v['average_mAP']:.1f}, @0.75 {v['mAP@0.75']:.1f}, "
                  f"labels {v['label_accuracy']:.1f} % ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = markdown_table(rows)
    print(table)
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "markdown": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
