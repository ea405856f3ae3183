"""Why a checkpoint misses the actions it misses: which part of the detector does not see them.

An action is *missed* when none of the checkpoint's detections (``menet infer``'s, any label,
any score) overlaps it at tIoU >= ``--tiou`` (0.5). For each subset given this counts the
missed actions, short (under ``--max-seconds``) and longer apart: a detector that misses
none of its training actions and a tenth of its validation ones does not generalise, one that
misses both cannot fit them. Then, for the missed actions of the last subset against those it
found, it probes the network on the action's window:

* the best anchor of every level (all anchors, not only decoding's candidate pairs), refined by
  eq. 9, by tIoU with the action: its P_s at the start and P_e at the end, IoU-ASP's cls and reg;
  near 0 everywhere means the detector is sure nothing is there (its score, eq. 10, is their
  product), not that decoding dropped it;
* the segment classifier on the true segment: whether the features name the action right.

    .venv/bin/python benchmarks/missed_actions.py --checkpoint checkpoints/menet-tiny-synth.pt \\
        --features runs/bundled/features --annotations runs/bundled/synth/annotations.json \\
        --subset training --subset validation
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.checkpoint import Checkpoint, load_checkpoint  # noqa: E402
from engine.evaluation.ground_truth import GroundTruth, load_ground_truth  # noqa: E402
from engine.features import FeatureStore  # noqa: E402
from engine.inference import detect_video, inference_windows, load_detector  # noqa: E402
from engine.model.menet import TemporalDetector  # noqa: E402
from engine.postprocess.decode import refine_segments  # noqa: E402

PROBES = ("anchor tIoU", "P_s", "P_e", "cls", "reg")


def tiou(segments: np.ndarray, target: np.ndarray) -> np.ndarray:
    """tIoU of each [start, end] row of ``segments`` with ``target``."""
    if segments.size == 0:
        return np.zeros(0)
    inter = np.clip(np.minimum(segments[:, 1], target[1]) - np.maximum(segments[:, 0], target[0]), 0, None)
    union = (segments[:, 1] - segments[:, 0]) + (target[1] - target[0]) - inter
    return inter / np.maximum(union, 1e-12)


def best_anchor(model: TemporalDetector, cfg: Any, window: torch.Tensor, target: np.ndarray) -> dict[str, float]:
    """``PROBES`` of the anchor (any level, any (start, end) the head's map holds) whose refined
    segment overlaps ``target`` (window snippet units) most."""
    best: dict[str, float] = dict.fromkeys(PROBES, 0.0)
    with torch.no_grad():
        levels = model.from_relation(model.relation(window[None]))
        for li, (level, head) in enumerate(zip(levels, model.heads)):
            length = level.start.shape[1]
            ratio = cfg.data.window / length
            s, e = torch.meshgrid(torch.arange(length), torch.arange(length), indexing="ij")
            ok = (e >= s) & (e - s + 1 <= cfg.max_durations()[li])
            pairs = torch.stack([s[ok], e[ok]], dim=1)
            out = head.anchors(level.feature[:1], pairs)
            overlap = tiou(refine_segments(pairs, out.cent[0], out.dura[0], length).numpy() * ratio, target)
            j = int(np.argmax(overlap))
            if overlap[j] > best["anchor tIoU"]:
                best = {"anchor tIoU": float(overlap[j]), "P_s": float(level.start[0, pairs[j, 0]]),
                        "P_e": float(level.end[0, pairs[j, 1]]), "cls": float(out.cls[0, j]),
                        "reg": float(out.reg[0, j])}
    return best


def probe(ckpt: Checkpoint, store: FeatureStore, gt: GroundTruth, subsets: list[str], max_seconds: float = 3.0,
          iou: float = 0.5, threads: int = 1) -> dict[str, Any]:
    """Missed counts per subset; probes of the last subset's actions (missed and found)."""
    torch.set_num_threads(threads)
    cfg = ckpt.config
    model = load_detector(ckpt)
    names = list(ckpt.class_names)
    report: dict[str, Any] = {"subsets": {}, "probes": {"missed": [], "found": []}}
    for n, subset in enumerate(subsets):
        sub = gt.select(subset)
        if len(sub) == 0:
            raise SystemExit(f"{gt.source}: no actions in subset {subset!r}")
        counts = {"short": [0, 0], "longer": [0, 0]}
        detections: dict[str, Any] = {}
        for i in range(len(sub)):
            video = str(sub.inst_videos[i])
            feats, meta = store.load(video, expected_dim=cfg.feature_channels)
            if video not in detections:
                detections[video] = detect_video(model, cfg, feats, meta.duration, meta.fps)
            segment = np.array([sub.inst_starts[i], sub.inst_ends[i]], dtype=np.float64)
            overlap = tiou(detections[video].segments, segment)
            missed = not (overlap.size and overlap.max() >= iou)
            kind = "short" if segment[1] - segment[0] < max_seconds else "longer"
            counts[kind][0] += missed
            counts[kind][1] += 1
            if n < len(subsets) - 1:
                continue
            windows, sps = inference_windows(cfg, feats, meta.duration, meta.fps)
            span = cfg.data.window  # window snippets
            inside = [w for w in windows if w.start * sps <= segment[0] and segment[1] <= (w.start + span) * sps]
            # an action no window holds whole (longer than a window): the window nearest its centre
            win = inside[0] if inside else min(windows, key=lambda w: abs((w.start + span / 2) * sps - segment.mean()))
            x = torch.from_numpy(np.ascontiguousarray(win.features, dtype=np.float32))
            target = segment / sps - win.start
            row: dict[str, Any] = {"video": video, "segment": segment.round(2).tolist(), "label": str(sub.inst_labels[i]),
                                   "short": kind == "short", **best_anchor(model, cfg, x, target)}
            if model.labeller is not None:
                with torch.no_grad():
                    relation = model.relation(x[None])
                    logits = model.labeller([model.labeller_input(x[None], relation)[0]],
                                            torch.tensor(target[None], dtype=torch.float32))
                row["segment label"] = names[int(logits.argmax())]
            report["probes"]["missed" if missed else "found"].append(row)
        report["subsets"][subset] = {k: {"missed": m, "of": t} for k, (m, t) in counts.items()}
    return report


def summary(report: dict[str, Any]) -> str:
    lines = ["| subset | short actions missed | longer actions missed |", "| --- | --- | --- |"]
    for subset, c in report["subsets"].items():
        cells = [f"{c[k]['missed']} of {c[k]['of']} ({100 * c[k]['missed'] / max(c[k]['of'], 1):.1f} %)"
                 for k in ("short", "longer")]
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    last = list(report["subsets"])[-1]
    lines += ["", f"{last}: the best anchor of each action (median over the actions; any level, refined)", "",
              "| actions | n | " + " | ".join(PROBES) + " | true segment labelled right |",
              "| --- | --- |" + " --- |" * (len(PROBES) + 1)]
    for kind in ("missed", "found"):
        rows = report["probes"][kind]
        if not rows:
            lines.append(f"| {kind} | 0 |" + " |" * (len(PROBES) + 1))
            continue
        medians = [f"{statistics.median(r[p] for r in rows):.3f}" for p in PROBES]
        labelled = [r for r in rows if "segment label" in r]
        right = sum(r["segment label"] == r["label"] for r in labelled)
        label_cell = f"{right} of {len(labelled)}" if labelled else "(no segment classifier)"
        lines.append(f"| {kind} | {len(rows)} | " + " | ".join(medians) + f" | {label_cell} |")
    missed = report["probes"]["missed"]
    if missed:
        lines += ["", "missed, one by one:", ""]
        for r in missed:
            probes = ", ".join(f"{p} {r[p]:.3f}" for p in PROBES)
            seg_label = f"; true segment labelled {r['segment label']}" if "segment label" in r else ""
            lines.append(f"- {r['video']} {r['segment']} {r['label']}: {probes}{seg_label}")
    return "\n".join(lines)


def _quick_inputs(root: Path) -> tuple[Checkpoint, Path, Path]:
    """benchmarks/ablation_seeds.py's 16 random videos and a random-weight tiny checkpoint."""
    from ablation_seeds import quick_dataset  # type: ignore[import-not-found]

    from engine.model.menet import MENet
    from stream.settings import load_config

    features, ann = quick_dataset(root)
    cfg = load_config("tiny")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random backbone weights: the features are given
        model = MENet(cfg)
    return (Checkpoint(cfg, list(cfg.data.class_names), model.detector.state_dict(), None, epoch=0),
            features, ann)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", help="MENet checkpoint (menet train)")
    p.add_argument("--features", help="its feature directory (menet extract)")
    p.add_argument("--annotations", help="ActivityNet-style ground truth")
    p.add_argument("--subset", action="append", default=None,
                   help="count the misses of this subset; repeat; the last one is probed (default validation)")
    p.add_argument("--max-seconds", type=float, default=3.0, help="shorter than this is short (default 3)")
    p.add_argument("--tiou", type=float, default=0.5, help="missed: no detection at this tIoU (default 0.5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, help="also write the report here")
    p.add_argument("--quick", action="store_true", help="smoke run: random weights on 16 random videos")
    a = p.parse_args(argv)
    subsets = a.subset or ["validation"]
    if a.quick:
        ckpt, features, ann = _quick_inputs(Path(tempfile.mkdtemp(prefix="missed-quick-")))
        subsets = a.subset or ["training", "validation"]
    else:
        missing = [k for k in ("checkpoint", "features", "annotations") if getattr(a, k) is None]
        if missing:
            p.error(f"missing {', '.join('--' + k for k in missing)} (or --quick)")
        ckpt, features, ann = load_checkpoint(a.checkpoint), Path(a.features), Path(a.annotations)
    report = probe(ckpt, FeatureStore(features), load_ground_truth(ann), subsets, a.max_seconds, a.tiou, a.threads)
    print(summary(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
