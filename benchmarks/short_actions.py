"""Where the short actions go: each ground-truth action shorter than ``--max-seconds`` sorted by
the best detection any system gave it.

Issue 12's remaining gap to the peer at tIoU 0.75 is short actions (docs/results.md). This tells
its kinds apart, for any number of prediction files scored against the same ground truth:

* ``found``: a detection of its label overlaps it at tIoU >= ``--tiou`` (0.75);
* ``imprecise``: the best detection of its label overlaps it at 0.5 <= tIoU < 0.75 (boundaries);
* ``wrong label``: no detection of its label reaches 0.5, one of another label does (labels);
* ``missed``: no detection of any label reaches tIoU 0.5 (the detector's recall).

Scores are ignored (recall at any score, like ablation_seeds.py's short column).

    .venv/bin/python benchmarks/short_actions.py --annotations runs/bundled/synth/annotations.json \\
        --subset validation --pred menet=runs/ship14/val.json --pred peer=runs/peer-new/predictions.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.evaluation.ground_truth import load_ground_truth  # noqa: E402
from engine.evaluation.results_format import read_predictions  # noqa: E402

KINDS = ("found", "imprecise", "wrong label", "missed")


def _best_tiou(preds: Any, mask: np.ndarray, start: float, end: float) -> float:
    s, e = preds.starts[mask], preds.ends[mask]
    if s.size == 0:
        return 0.0
    inter = np.clip(np.minimum(e, end) - np.maximum(s, start), 0, None)
    union = (e - s) + (end - start) - inter
    return float(np.max(inter / np.maximum(union, 1e-12)))


def short_action_outcomes(gt: Any, preds: Any, max_seconds: float = 3.0, tiou: float = 0.75) -> dict[str, int]:
    """Counts of ``KINDS`` over the ground-truth actions shorter than ``max_seconds``."""
    counts = dict.fromkeys(KINDS, 0)
    for i in np.nonzero(gt.inst_ends - gt.inst_starts < max_seconds)[0]:
        in_video = preds.videos == gt.inst_videos[i]
        start, end = float(gt.inst_starts[i]), float(gt.inst_ends[i])
        same = _best_tiou(preds, in_video & (preds.labels == gt.inst_labels[i]), start, end)
        other = _best_tiou(preds, in_video & (preds.labels != gt.inst_labels[i]), start, end)
        kind = ("found" if same >= tiou else "imprecise" if same >= 0.5 else
                "wrong label" if other >= 0.5 else "missed")
        counts[kind] += 1
    return counts


def systems_parser(doc: str) -> argparse.ArgumentParser:
    """The options every "several systems against one ground truth" study takes: --annotations,
    --subset, --pred NAME=FILE (repeatable), --json."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    p.add_argument("--annotations", required=True, help="ActivityNet-style ground truth")
    p.add_argument("--subset", default=None, help="only this subset (e.g. validation)")
    p.add_argument("--pred", action="append", required=True, metavar="NAME=FILE",
                   help="a prediction file (ActivityNet JSON or THUMOS txt); repeat for several")
    p.add_argument("--json", default=None, help="also write the counts here")
    return p


def load_systems(p: argparse.ArgumentParser, a: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(the ground truth of --subset, {NAME: predictions}) of :func:`systems_parser`'s options."""
    gt = load_ground_truth(a.annotations)
    gt = gt.select(a.subset) if a.subset else gt
    systems = {}
    for item in a.pred:
        name, sep, path = item.partition("=")
        if not sep:
            p.error(f"--pred {item!r}: expected NAME=FILE")
        systems[name] = read_predictions(path)
    return gt, systems


def main(argv: list[str] | None = None) -> int:
    p = systems_parser(__doc__)
    p.add_argument("--max-seconds", type=float, default=3.0, help="shorter than this is short (default 3)")
    p.add_argument("--tiou", type=float, default=0.75, help="'found' threshold (default 0.75)")
    a = p.parse_args(argv)
    gt, systems = load_systems(p, a)
    rows = {name: short_action_outcomes(gt, preds, a.max_seconds, a.tiou) for name, preds in systems.items()}
    total = sum(next(iter(rows.values())).values())
    print(f"{total} actions shorter than {a.max_seconds:g} s")
    print("| system | " + " | ".join(KINDS) + " |")
    print("| --- |" + " --- |" * len(KINDS))
    for name, counts in rows.items():
        print(f"| {name} | " + " | ".join(str(counts[k]) for k in KINDS) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"total": total, "max_seconds": a.max_seconds, "tiou": a.tiou,
                                            "systems": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
