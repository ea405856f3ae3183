"""``menet eval``: score a prediction file against a ground truth.

    menet eval --gt PATH --pred PATH --protocol thumos|activitynet
               [--task detection|proposal] [--tiou 0.3,0.4,...] [--subset NAME] [--json]

Exit status 0 on success, 2 on bad input (message on stderr naming file and place).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from engine.evaluation import activitynet, proposals, thumos
from engine.evaluation.labels import label_accuracy
from engine.evaluation.ground_truth import load_ground_truth
from engine.evaluation.results_format import EvaluationInputError, read_predictions

DEFAULT_TIOU = {"thumos": thumos.DEFAULT_TIOU, "activitynet": activitynet.DEFAULT_TIOU}
PROTOCOL_TITLE = {"thumos": "THUMOS-14 (TH14evalDet)", "activitynet": "ActivityNet (eval_detection)"}


def add_parser(subparsers: Any) -> None:
    """Register the ``eval`` subcommand on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate detections or proposals (THUMOS-14 / ActivityNet protocols)",
        description="Official-kit conformant temporal action detection (mAP) and proposal (AR@AN, AUC) "
        "evaluation. Ground truth: an ActivityNet database JSON or a THUMOS-14 annotation folder. "
        "Predictions: ActivityNet results .json or THUMOS submission .txt.",
    )
    p.add_argument("--gt", required=True, help="ground truth: ActivityNet JSON or THUMOS annotation folder")
    p.add_argument("--pred", required=True, help="predictions: results .json or THUMOS submission .txt")
    p.add_argument("--protocol", required=True, choices=("thumos", "activitynet"), help="evaluation protocol")
    p.add_argument("--task", default="detection", choices=("detection", "proposal"), help="default: detection")
    p.add_argument(
        "--tiou", default=None,
        help="tIoU thresholds, comma list (0.3,0.5) or range start:step:stop (0.5:0.05:0.95); "
        "default thumos 0.3:0.1:0.7, activitynet and proposals 0.5:0.05:0.95",
    )
    p.add_argument("--subset", default=None, help="evaluate only this subset (e.g. validation, test)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--classlist", default=None,
                   help="detclasslist.txt mapping THUMOS class ids to names (default: the GT's own, "
                        "or sorted label names numbered from 1 for a JSON ground truth)")
    p.add_argument("--max-proposals", type=float, default=100,
                   help="proposal task: maximum average number of proposals per video (default 100)")
    p.add_argument("--drop-unknown-videos", action="store_true",
                   help="drop predictions on videos outside the ground truth/subset instead of scoring them "
                        "as false positives (the official kits score them)")
    p.set_defaults(func=run)


def parse_tiou(text: str) -> np.ndarray:
    """``0.3,0.5`` or ``0.5:0.05:0.95`` (inclusive, as np.linspace) to an array."""
    try:
        if ":" in text:
            start, step, stop = (float(x) for x in text.split(":"))
            count = int(round((stop - start) / step)) + 1
            if step <= 0 or count < 1:
                raise ValueError
            values = np.linspace(start, stop, count)
        else:
            values = np.array([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise EvaluationInputError(f"--tiou: cannot parse {text!r}") from None
    if values.size == 0 or not np.all((values >= 0) & (values <= 1)):
        raise EvaluationInputError(f"--tiou: thresholds must lie in [0, 1], got {text!r}")
    return values


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation described by parsed ``args``; returns the JSON-ready result."""
    task = getattr(args, "task", "detection") or "detection"
    if args.tiou:
        tiou = parse_tiou(args.tiou)
    else:
        tiou = proposals.DEFAULT_TIOU if task == "proposal" else DEFAULT_TIOU[args.protocol]
    policy = "drop" if getattr(args, "drop_unknown_videos", False) else "false_positive"

    gt = load_ground_truth(args.gt, args.subset)
    if getattr(args, "classlist", None):
        gt = gt.with_class_list(args.classlist)
    preds = read_predictions(args.pred, require_label=(task == "detection"))

    if task == "proposal":
        max_props = getattr(args, "max_proposals", 100)
        out = proposals.evaluate_proposals(gt, preds, tiou, max_props, policy).to_dict()
        out["protocol"] = args.protocol
    else:
        module = thumos if args.protocol == "thumos" else activitynet
        out = module.evaluate_detection(gt, preds, tiou, policy).to_dict()
        out["labels"] = label_accuracy(gt, preds).to_dict()
    out["subset"] = gt.subset
    return out


def _fmt_row(name: str, values: list[float], width: int) -> str:
    return f"{name:<{width}}" + "".join(f"{100 * v:>8.2f}" for v in values)


def format_table(result: dict[str, Any], gt: str, pred: str) -> str:
    """Human-readable report (percentages)."""
    lines = [f"gt: {gt}", f"pred: {pred}", f"subset: {result.get('subset') or 'all'}"]
    ignored = result.get("ignored", {})
    if result["task"] == "proposal":
        lines.insert(0, f"Proposal evaluation (ActivityNet eval_proposal), tIoU {_span(result['tiou'])}")
        lines.append("")
        lines.append(f"{'AN':<10}" + "".join(f"{an:>8}" for an in result["AR@AN"]))
        lines.append(_fmt_row("AR (%)", list(result["AR@AN"].values()), 10))
        lines.append(f"AUC (%): {100 * result['AUC']:.2f}")
    else:
        lines.insert(0, f"{PROTOCOL_TITLE[result['protocol']]} detection")
        width = max([len(c) for c in result["per_class"]] + [12]) + 2
        lines.append("")
        lines.append(f"{'tIoU':<{width}}" + "".join(f"{t:>8.2f}" for t in result["tiou"]))
        lines.append("-" * (width + 8 * len(result["tiou"])))
        for cls, aps in result["per_class"].items():
            lines.append(_fmt_row(cls, aps, width))
        lines.append("-" * (width + 8 * len(result["tiou"])))
        lines.append(_fmt_row("mAP (%)", result["mAP"], width))
        lines.append(f"average mAP (%): {100 * result['average_mAP']:.2f}")
        labels = result.get("labels")
        if labels:
            lines.append(f"labels: {labels['right']} of {labels['found']} found actions named right "
                         f"({100 * labels['accuracy']:.1f} %; found = a detection of any label at tIoU >= "
                         f"{labels['tiou']:g}, {labels['found']} of {labels['actions']} actions; "
                         f"the best-scoring such detection's label counts)")
    if any(ignored.values()):
        how = "scored as false positives" if result.get("unknown_videos_policy") == "false_positive" else "dropped"
        parts = [f"{k}={v}" for k, v in ignored.items()]
        lines.append(f"predictions not matching the ground truth: {', '.join(parts)} "
                     f"(unknown classes dropped; unknown/other-subset videos {how})")
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    return ", ".join(f"{v:g}" for v in values) if len(values) <= 3 else f"{values[0]:g}..{values[-1]:g} ({len(values)})"


def run(args: argparse.Namespace) -> int:
    """Entry point of ``menet eval``; returns the process exit status."""
    try:
        result = evaluate(args)
    except (EvaluationInputError, OSError, UnicodeDecodeError) as exc:
        print(f"menet eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result, args.gt, args.pred))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone use: ``python -m stream.commands.eval --gt ... --pred ...``."""
    parser = argparse.ArgumentParser(prog="menet")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(["eval", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
