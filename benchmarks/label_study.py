"""Where do the labels go wrong? The label study behind docs/results.md ("Labels").

On a trained checkpoint's own features (validation subset), it reports:

* the detector as it is (its own labeller), class-agnostic (every label one class) and
  oracle relabelling (each detection takes the true action it overlaps most): how much of
  the gap is labels and how much localisation;
* label accuracy on detections that match a true action at tIoU >= 0.5;
* segment classifiers trained on the frozen detector's features, one per input
  (``relation``: the MREM output, the shipped choice; ``mfe``: the raw snippet
  features; ``movement`` and ``total``: its two halves F_total - F_static and F_total;
  ``levels``: every SFPN level; ``level0``), each over ``--seeds``: accuracy
  on the validation ground-truth segments, and for ``relation`` and ``mfe`` the mAP and
  matched label accuracy after relabelling the detector's proposals with 1..3 labels.

    .venv/bin/python benchmarks/label_study.py --checkpoint checkpoints/menet-tiny-synth.pt \\
        --features runs/bundled/features --annotations runs/bundled/synth/annotations.json

Writes a JSON report (``--out``). CPU only; about 10 minutes on one core for 3 seeds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TIOU = np.linspace(0.5, 0.95, 10)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints/menet-tiny-synth.pt"))
    p.add_argument("--features", required=True, help="feature store of the checkpoint's backbone (menet extract)")
    p.add_argument("--annotations", required=True, help="ActivityNet-format JSON with training/validation subsets")
    p.add_argument("--eval-subset", default="validation")
    p.add_argument("--sources", default="relation,mfe,movement,total,levels,level0")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's train.segment_epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="label-study.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    torch.set_num_threads(a.threads)
    from engine.checkpoint import load_checkpoint
    from engine.config import config_from_dict
    from engine.evaluation.activitynet import evaluate_detection
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.evaluation.results_format import predictions_from_results
    from engine.features import FeatureStore
    from engine.inference import inference_windows, load_detector
    from engine.model.segment_classifier import SegmentClassifier
    from engine.postprocess.decode import decode_window, label_segments
    from engine.postprocess.windows import detections_to_results, merge_video
    from engine.training.dataset import WindowDataset
    from engine.training.segment_classifier import (accuracy, collect_windows, fit_classifier,
                                                    matched_label_accuracy)

    ckpt = load_checkpoint(a.checkpoint)
    cfg = ckpt.config
    # the study decodes with the heads' own labels first, whatever the checkpoint's labeller
    anchor_cfg = config_from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "labeller": "anchor"}})
    model = load_detector(ckpt, cfg)
    store = FeatureStore(a.features)
    gt_all = load_ground_truth(a.annotations)
    gt = gt_all.select(a.eval_subset)
    names = ckpt.class_names
    train_set = WindowDataset(cfg, store, gt_all, "training", training=True, class_names=names)
    val_set = WindowDataset(cfg, store, gt_all, a.eval_subset, training=False, class_names=names)
    epochs = a.epochs or cfg.train.segment_epochs
    report: dict[str, Any] = {"checkpoint": a.checkpoint, "features": a.features, "epochs": epochs,
                              "command": " ".join([sys.executable, *sys.argv])}
    t0 = time.time()

    def evaluate(results: dict[str, list[dict[str, Any]]], agnostic: bool = False) -> dict[str, Any]:
        g = gt
        if agnostic:
            results = {v: [{**r, "label": "action"} for r in rs] for v, rs in results.items()}
            g = dataclasses.replace(gt, inst_labels=np.array(["action"] * len(gt.inst_labels), dtype=object),
                                    classes=["action"])
        res = evaluate_detection(g, predictions_from_results(results, source="study"), TIOU)
        return {"average_mAP": round(100 * res.average_mAP, 2), "mAP@0.5": round(100 * float(res.mAP[0]), 2),
                "mAP@0.75": round(100 * float(res.mAP[5]), 2), "mAP@0.95": round(100 * float(res.mAP[9]), 2)}

    def gt_of(video: str) -> tuple[np.ndarray, np.ndarray]:
        m = gt.inst_videos == video
        return np.stack([gt.inst_starts[m], gt.inst_ends[m]], 1), gt.inst_labels[m]

    def label_accuracy(results: dict[str, list[dict[str, Any]]]) -> float:
        right = matched = 0
        for video, rows in results.items():
            segs = np.array([r["segment"] for r in rows]).reshape(-1, 2)
            labs = np.array([r["label"] for r in rows])
            gs, gl = gt_of(video)
            r, m = matched_label_accuracy(segs, labs, gs, gl)
            right, matched = right + r, matched + m
        return round(100 * right / max(matched, 1), 1)

    def detect(features_of: Callable[[torch.Tensor, torch.Tensor, list], list[torch.Tensor]] | None,
               labeller: SegmentClassifier | None, k: int) -> dict[str, list[dict[str, Any]]]:
        """Decode every evaluation video; relabel with ``labeller`` on ``features_of`` when given."""
        out = {}
        for video in val_set.videos:
            feats, meta = store.load(video, expected_dim=cfg.feature_channels)
            windows, sps = inference_windows(cfg, feats, meta.duration, meta.fps)
            x = torch.from_numpy(np.stack([w.features for w in windows]))
            with torch.no_grad():
                relation = model.relation(x)
                levels = model.from_relation(relation)
            per_window = []
            for b, win in enumerate(windows):
                start = win.start
                props = decode_window(levels, model.heads, anchor_cfg, batch_index=b,
                                      top_labels=1 if labeller else k, valid_length=win.valid)
                if labeller is not None:
                    props = label_segments(props, features_of(x[b], relation[b], [lv.feature[b] for lv in levels]),
                                           labeller, k)
                per_window.append((start, props))
            dets = merge_video(per_window, sps, meta.duration, cfg.inference)
            out[video] = detections_to_results(video, dets, names)
        return out

    # ---- the detector as it is, class-agnostic, oracle labels
    base = detect(None, None, 1)
    oracle = {}
    for video, rows in base.items():
        gs, gl = gt_of(video)
        fixed = []
        for r in rows:
            if len(gs):
                s, e = r["segment"]
                inter = np.clip(np.minimum(e, gs[:, 1]) - np.maximum(s, gs[:, 0]), 0, None)
                if inter.max() > 0:
                    r = {**r, "label": str(gl[int(inter.argmax())])}
            fixed.append(r)
        oracle[video] = fixed
    report["anchor_classifier"] = {
        "top1": {**evaluate(base), "matched_label_accuracy": label_accuracy(base)},
        **{f"top{k}": evaluate(detect(None, None, k)) for k in (2, 3)},
        "class_agnostic": evaluate(base, agnostic=True),
        "oracle_labels": evaluate(oracle),
    }
    print(json.dumps(report["anchor_classifier"], indent=1), flush=True)

    # ---- segment classifiers per input
    sources: dict[str, Callable[[torch.Tensor, torch.Tensor, list], list[torch.Tensor]]] = {
        "levels": lambda x, rel, lv: lv,
        "level0": lambda x, rel, lv: lv[:1],
        "relation": lambda x, rel, lv: [rel],
        "mfe": lambda x, rel, lv: [x],
        # the MFE's halves (paper Table 5's question): [F_total - F_static, F_total]
        "movement": lambda x, rel, lv: [x[: x.shape[0] // 2]],
        "total": lambda x, rel, lv: [x[x.shape[0] // 2:]],
    }

    def batch_features(name: str) -> Callable[[torch.Tensor], list[list[torch.Tensor]]]:
        def run(x: torch.Tensor) -> list[list[torch.Tensor]]:
            with torch.no_grad():
                rel = model.relation(x)
                levels = model.levels(rel)
            return [sources[name](x[b], rel[b], [lv[b] for lv in levels]) for b in range(x.shape[0])]
        return run

    m = cfg.model
    report["segment_classifier"] = {}
    for name in [s for s in a.sources.split(",") if s]:
        train = collect_windows(train_set, batch_features(name))
        val = collect_windows(val_set, batch_features(name))
        channels = [f.shape[0] for f in train.features[0]]
        rows = []
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            clf = SegmentClassifier(channels, cfg.data.num_classes, m.segment_hidden, m.segment_samples,
                                    m.segment_context, window=cfg.data.window)
            fit_classifier(clf, train, epochs=epochs, lr=cfg.train.segment_lr, jitter=cfg.train.segment_jitter,
                           seed=seed)
            row: dict[str, Any] = {"seed": seed, "val_gt_accuracy": round(100 * accuracy(clf, val), 1)}
            if name in ("relation", "mfe"):
                for k in (1, 2, 3):
                    res = detect(sources[name], clf, k)
                    row[f"top{k}"] = evaluate(res)
                    if k == 1:
                        row["matched_label_accuracy"] = label_accuracy(res)
                        row["class_agnostic"] = evaluate(res, agnostic=True)
            rows.append(row)
            print(name, json.dumps(row), flush=True)
        report["segment_classifier"][name] = {"runs": rows, "summary": _summary(rows)}
    report["minutes"] = round((time.time() - t0) / 60, 1)
    Path(a.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v["summary"] for k, v in report["segment_classifier"].items()}, indent=1))
    return 0


def _summary(rows: list[dict[str, Any]]) -> dict[str, str]:
    """mean ± std over seeds of every numeric figure."""
    out: dict[str, str] = {}
    flat = [_flatten(r) for r in rows]
    for key in flat[0]:
        if key == "seed":
            continue
        vals = np.array([f[key] for f in flat if f.get(key) is not None], np.float64)
        if len(vals):
            out[key] = f"{vals.mean():.1f} ± {vals.std():.1f}"
    return out


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


if __name__ == "__main__":
    sys.exit(main())
