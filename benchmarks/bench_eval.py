"""Benchmark the evaluators on THUMOS-14-sized and full-ActivityNet-val-sized inputs.

    .venv/bin/python benchmarks/bench_eval.py [--data ../shared/data] [--repeats 3]

Synthetic predictions are generated (seeded) from the real ground truth: jittered
copies of the annotations plus random false alarms, written to a temporary file in
the submission format, then read and evaluated. Prints the median seconds of the
repeats for reading and for evaluating. Targets: THUMOS (16k detections, 5 tIoUs)
< 5 s; ActivityNet val (100 predictions per video, 10 tIoUs) < 30 s.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation import activitynet, proposals, thumos  # noqa: E402
from engine.evaluation.ground_truth import GroundTruth, load_ground_truth  # noqa: E402
from engine.evaluation.results_format import (  # noqa: E402
    read_predictions,
    write_activitynet_results,
    write_thumos_results,
)


def synthetic_results(gt: GroundTruth, per_video: int, seed: int) -> dict[str, list[dict]]:
    """``per_video`` predictions for every GT video: jittered GT segments and false alarms."""
    rng = np.random.default_rng(seed)
    by_video: dict[str, list[tuple[float, float, str]]] = {v: [] for v in gt.videos}
    for v, s, e, lab in zip(gt.inst_videos, gt.inst_starts, gt.inst_ends, gt.inst_labels):
        by_video[v].append((float(s), float(e), str(lab)))
    out: dict[str, list[dict]] = {}
    for video, anns in by_video.items():
        if not anns:
            continue
        horizon = max(e for _, e, _ in anns) * 1.3 + 1.0
        labels = [lab for _, _, lab in anns]
        n_true = per_video // 2
        entries = []
        for i in range(per_video):
            if i < n_true:  # a jittered copy of an annotation
                s, e, lab = anns[i % len(anns)]
                d = (e - s + 0.1) * rng.normal(0.0, 0.15, 2)
                start = max(0.0, s + d[0])
                end = max(start, e + d[1])
            else:  # a false alarm anywhere in the video, label of the video or any class
                start = float(rng.uniform(0, horizon))
                end = start + float(rng.uniform(0.5, max(1.0, horizon / 3)))
                lab = labels[0] if rng.random() < 0.7 else gt.classes[int(rng.integers(len(gt.classes)))]
            entries.append({"label": lab, "score": float(rng.random()), "segment": [start, end]})
        out[video] = entries
    return out


def median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=here.parent / "shared" / "data")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # THUMOS-14 test: 213 videos x 78 ~= 16.6k detections (the size of the TURN file)
        gt = load_ground_truth(args.data / "thumos14" / "annotations_test", "test")
        results = synthetic_results(gt, per_video=78, seed=0)
        path = Path(tmp) / "thumos.txt"
        write_thumos_results(path, results, {name: cid for cid, name in gt.class_ids.items()})
        t_read, preds = median_time(lambda: read_predictions(path), args.repeats)
        t_eval, res = median_time(lambda: thumos.evaluate_detection(gt, preds), args.repeats)
        print(f"THUMOS-14 detection: {len(preds)} detections, 5 tIoUs: read {t_read:.2f} s, "
              f"evaluate {t_eval:.2f} s, total {t_read + t_eval:.2f} s (mAP@0.5 {res.mAP[2]:.4f})")

        # ActivityNet-1.3 val: 4926 videos x 100 = 492.6k predictions
        gt = load_ground_truth(args.data / "anet13" / "val_gt.json", "validation")
        results = synthetic_results(gt, per_video=100, seed=1)
        path = Path(tmp) / "anet.json"
        write_activitynet_results(path, results)
        t_read, preds = median_time(lambda: read_predictions(path), args.repeats)
        t_eval, res = median_time(lambda: activitynet.evaluate_detection(gt, preds), args.repeats)
        print(f"ActivityNet detection: {len(preds)} predictions, 10 tIoUs: read {t_read:.2f} s, "
              f"evaluate {t_eval:.2f} s, total {t_read + t_eval:.2f} s (average mAP {res.average_mAP:.4f})")
        t_prop, pres = median_time(lambda: proposals.evaluate_proposals(gt, preds), args.repeats)
        print(f"ActivityNet proposals: {len(preds)} proposals, AR@AN 1..100: evaluate {t_prop:.2f} s "
              f"(AR@100 {pres.ar_at(100):.4f}, AUC {pres.auc:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
