"""Score prediction files side by side: the figures docs/results.md reports for each system.

For each ``--pred NAME=FILE`` (ActivityNet JSON or THUMOS txt, any system's: MENet's
``menet infer`` output or the peer's ``predictions.json`` from benchmarks/peer_actionformer.py),
against one ground truth and subset:

* labelled average mAP (tIoU 0.5:0.05:0.95) and mAP at 0.5, 0.75, 0.8, 0.95, the same
  evaluation as ``menet eval --protocol activitynet``;
* class-agnostic average mAP: every prediction's and every true action's label set to one
  class (the file's own rows relabelled, so a system that lists one segment under several
  classes keeps all its copies; benchmarks/ablation_seeds.py scores MENet's proposals without
  p_label instead, which it can because it runs the detector);
* labels right: of the true actions some prediction overlaps at tIoU >= 0.5, the share whose
  best-scoring such prediction carries the right label.

    .venv/bin/python benchmarks/score_predictions.py --annotations runs/combo-annotations.json \\
        --subset validation --pred peer=runs/peer-combo/predictions.json
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine.evaluation.activitynet import evaluate_detection  # noqa: E402
from engine.evaluation.labels import label_accuracy  # noqa: E402
from short_actions import load_systems, systems_parser  # noqa: E402

TIOU = np.linspace(0.5, 0.95, 10)
COLUMNS = ("average_mAP", "mAP@0.5", "mAP@0.75", "mAP@0.8", "mAP@0.95", "agnostic_average_mAP", "labels_right_pct")


def score_one(gt: Any, preds: Any) -> dict[str, Any]:
    """The figures of the module docstring for one prediction set (percentages)."""
    res = evaluate_detection(gt, preds, TIOU)
    acc = label_accuracy(gt, preds)
    one_gt = dataclasses.replace(gt, inst_labels=np.full(len(gt.inst_labels), "action", dtype=object),
                                 classes=["action"])
    one_preds = dataclasses.replace(preds, labels=np.full(len(preds), "action", dtype=object), labels_are_ids=False)
    agnostic = evaluate_detection(one_gt, one_preds, TIOU)
    found = int(acc.found)
    return {
        "average_mAP": 100 * res.average_mAP, "mAP@0.5": 100 * float(res.mAP[0]),
        "mAP@0.75": 100 * float(res.mAP[5]), "mAP@0.8": 100 * float(res.mAP[6]),
        "mAP@0.95": 100 * float(res.mAP[9]), "agnostic_average_mAP": 100 * agnostic.average_mAP,
        "labels_right_pct": 100 * int(acc.right) / found if found else float("nan"),
        "labels_right": int(acc.right), "labels_found": found, "actions": len(gt.inst_labels),
    }


def main(argv: list[str] | None = None) -> int:
    p = systems_parser(__doc__)
    a = p.parse_args(argv)
    gt, systems = load_systems(p, a)
    rows = {name: score_one(gt, preds) for name, preds in systems.items()}
    print("| system | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --- |" * len(COLUMNS))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in COLUMNS)
              + f" |  ({row['labels_right']} of {row['labels_found']} found, {row['actions']} actions)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
