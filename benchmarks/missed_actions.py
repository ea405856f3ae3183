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
* the segment classifier on the true segment: whether the features name the action right;
* the features' contrast at the action: the distance between its mean feature and the mean of
  the ``CONTEXT`` snippets on each side, over the spread of those snippets (per half of
  movement+total features). A detector that localises by change cannot find what does not change.

With several ``--checkpoint``s each is counted and probed, then the actions every one of them
misses are compared with the rest: the same actions missed by every seed and recipe are a
property of the actions (their features), not of one training run.

    .venv/bin/python benchmarks/missed_actions.py --checkpoint checkpoints/menet-tiny-synth.pt \\
        --features runs/bundled/features --annotations runs/bundled/synth/annotations.json \\
        --subset training --subset validation
    .venv/bin/python benchmarks/missed_actions.py --checkpoint a.pt --checkpoint b.pt ... (same options)
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
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
CONTEXT = 10  # snippets on each side of an action that its feature contrast is measured against


def feature_contrast(feats: np.ndarray, start: float, end: float, halves: dict[str, slice]) -> dict[str, float]:
    """Per named channel range: ||mean(action) - mean(context)|| / ||std(context)||, snippet units
    ``start``, ``end``; the context is ``CONTEXT`` snippets on each side (nan without any)."""
    i0 = max(0, int(np.floor(start)))
    i1 = max(i0 + 1, int(np.ceil(end)))
    context = np.concatenate([feats[max(0, i0 - CONTEXT):i0], feats[i1:i1 + CONTEXT]])
    out = {}
    for name, cols in halves.items():
        if len(context) == 0:
            out[name] = float("nan")
            continue
        inside = feats[i0:i1, cols].mean(0)
        ctx = context[:, cols]
        out[name] = float(np.linalg.norm(inside - ctx.mean(0)) / (np.linalg.norm(ctx.std(0)) + 1e-6))
    return out


def feature_halves(store: FeatureStore, dim: int) -> dict[str, slice]:
    """``movement`` and ``total`` halves of MFE features, else the whole vector as ``features``."""
    if store.settings().feature_kind == "movement+total" and dim % 2 == 0:
        return {"movement contrast": slice(0, dim // 2), "total contrast": slice(dim // 2, dim)}
    return {"feature contrast": slice(0, dim)}


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
            raw_sps = cfg.data.sigma / meta.fps  # seconds per row of feats (ActivityNet windows are resized)
            span = cfg.data.window  # window snippets
            inside = [w for w in windows if w.start * sps <= segment[0] and segment[1] <= (w.start + span) * sps]
            # an action no window holds whole (longer than a window): the window nearest its centre
            win = inside[0] if inside else min(windows, key=lambda w: abs((w.start + span / 2) * sps - segment.mean()))
            x = torch.from_numpy(np.ascontiguousarray(win.features, dtype=np.float32))
            target = segment / sps - win.start
            row: dict[str, Any] = {"video": video, "segment": segment.round(2).tolist(), "label": str(sub.inst_labels[i]),
                                   "short": kind == "short", **best_anchor(model, cfg, x, target),
                                   **feature_contrast(feats, segment[0] / raw_sps, segment[1] / raw_sps,
                                                      feature_halves(store, feats.shape[1]))}
            if model.labeller is not None:
                with torch.no_grad():
                    relation = model.relation(x[None])
                    logits = model.labeller([model.labeller_input(x[None], relation)[0]],
                                            torch.tensor(target[None], dtype=torch.float32))
                row["segment label"] = names[int(logits.argmax())]
            report["probes"]["missed" if missed else "found"].append(row)
        report["subsets"][subset] = {k: {"missed": m, "of": t} for k, (m, t) in counts.items()}
    return report


def _contrast_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [k for k in (rows[0] if rows else {}) if k.endswith("contrast")]


def _medians(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    return [f"{float(np.nanmedian([r[k] for r in rows])):.3f}" for k in keys]


def summary(report: dict[str, Any]) -> str:
    lines = ["| subset | short actions missed | longer actions missed |", "| --- | --- | --- |"]
    for subset, c in report["subsets"].items():
        cells = [f"{c[k]['missed']} of {c[k]['of']} ({100 * c[k]['missed'] / max(c[k]['of'], 1):.1f} %)"
                 for k in ("short", "longer")]
        lines.append(f"| {subset} | " + " | ".join(cells) + " |")
    last = list(report["subsets"])[-1]
    rows_all = report["probes"]["missed"] + report["probes"]["found"]
    keys = list(PROBES) + _contrast_keys(rows_all)
    lines += ["", f"{last}: the best anchor of each action (median over the actions; any level, refined)", "",
              "| actions | n | " + " | ".join(keys) + " | true segment labelled right |",
              "| --- | --- |" + " --- |" * (len(keys) + 1)]
    for kind in ("missed", "found"):
        rows = report["probes"][kind]
        if not rows:
            lines.append(f"| {kind} | 0 |" + " |" * (len(keys) + 1))
            continue
        labelled = [r for r in rows if "segment label" in r]
        right = sum(r["segment label"] == r["label"] for r in labelled)
        label_cell = f"{right} of {len(labelled)}" if labelled else "(no segment classifier)"
        lines.append(f"| {kind} | {len(rows)} | " + " | ".join(_medians(rows, keys)) + f" | {label_cell} |")
    missed = report["probes"]["missed"]
    if missed:
        lines += ["", "missed, one by one:", ""]
        for r in missed:
            probes = ", ".join(f"{p} {r[p]:.3f}" for p in keys)
            seg_label = f"; true segment labelled {r['segment label']}" if "segment label" in r else ""
            lines.append(f"- {r['video']} {r['segment']} {r['label']}: {probes}{seg_label}")
    return "\n".join(lines)


def missed_by_all(reports: list[dict[str, Any]]) -> str:
    """The last subset's actions every report misses, against the rest (feature contrast, labels)."""
    def key(r: dict[str, Any]) -> tuple[str, float]:
        return r["video"], r["segment"][0]

    missed_sets = [{key(r) for r in rep["probes"]["missed"]} for rep in reports]
    every = set.intersection(*missed_sets)
    rows = reports[0]["probes"]["missed"] + reports[0]["probes"]["found"]
    counts = {k: sum(k in m for m in missed_sets) for k in {key(r) for r in rows}}
    exactly = ", ".join(f"by {n}: {sum(1 for c in counts.values() if c == n)}" for n in range(len(reports), 0, -1))
    lines = ["", f"missed by every one of the {len(reports)} checkpoints: {len(every)} actions "
             f"(actions missed by exactly n of them, {exactly})"]
    keys = _contrast_keys(rows)
    if keys and every:
        lines += ["", "| actions | n | " + " | ".join(keys) + " |", "| --- | --- |" + " --- |" * len(keys)]
        for name, group in (("missed by all", [r for r in rows if key(r) in every]),
                            ("the others", [r for r in rows if key(r) not in every])):
            lines.append(f"| {name} | {len(group)} | " + " | ".join(_medians(group, keys)) + " |")
    if every:
        labels = sorted(r["label"] for r in rows if key(r) in every)
        lines.append(f"their labels: {', '.join(f'{n} {lab}' for lab, n in sorted(Counter(labels).items()))}")
    return "\n".join(lines)


def _quick_inputs(root: Path, seed: int = 0) -> tuple[Checkpoint, Path, Path]:
    """benchmarks/ablation_seeds.py's 16 random videos and a random-weight tiny checkpoint."""
    from ablation_seeds import quick_dataset  # type: ignore[import-not-found]

    from engine.model.menet import MENet
    from stream.settings import load_config

    features, ann = quick_dataset(root)
    cfg = load_config("tiny")
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random backbone weights: the features are given
        model = MENet(cfg)
    return (Checkpoint(cfg, list(cfg.data.class_names), model.detector.state_dict(), None, epoch=0),
            features, ann)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", action="append", default=None,
                   help="MENet checkpoint (menet train); repeat to compare several (seeds, recipes)")
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
        first, features, ann = _quick_inputs(Path(tempfile.mkdtemp(prefix="missed-quick-")), seed=0)
        second, _, _ = _quick_inputs(Path(tempfile.mkdtemp(prefix="missed-quick-")), seed=1)
        checkpoints = {"random-0": first, "random-1": second}
        subsets = a.subset or ["training", "validation"]
    else:
        missing = [k for k in ("checkpoint", "features", "annotations") if getattr(a, k) is None]
        if missing:
            p.error(f"missing {', '.join('--' + k for k in missing)} (or --quick)")
        checkpoints = {path: load_checkpoint(path) for path in a.checkpoint}
        features, ann = Path(a.features), Path(a.annotations)
    store, gt = FeatureStore(features), load_ground_truth(ann)
    reports = {}
    for name, ckpt in checkpoints.items():
        if len(checkpoints) > 1:
            print(f"\n## {name}\n")
        reports[name] = probe(ckpt, store, gt, subsets, a.max_seconds, a.tiou, a.threads)
        print(summary(reports[name]))
    if len(reports) > 1:
        print(missed_by_all(list(reports.values())))
    if a.json:
        Path(a.json).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
