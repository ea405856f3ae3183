"""How well does each detector's segment classifier label actions of videos it was not fitted on,
measured on training videos only (the evaluation subset is never read)?

For each checkpoint, the labeller is fitted afresh (the config's settings, two labeller seeds)
on the frozen detector's MREM output of all but ``--held-out`` training videos, then scored on
the ground-truth segments of the held-out ones, as annotated and with each boundary moved by up
to 10 % of the length (as proposals are imprecise). Used in docs/results.md to tell a
labeller-fit problem (low here) from a detector whose features carry a class worse on unseen
videos (high here, low on validation).

    .venv/bin/python benchmarks/labeller_holdout.py --features runs/bundled/features \\
        --annotations runs/bundled/synth/annotations.json \\
        --checkpoint full-s0=runs/abl12/ema-0.995-s0/best.pt --checkpoint bm-s0=runs/abl14/best-match-s0/best.pt
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--annotations", required=True, help="ActivityNet-format JSON with a training subset")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--held-out", type=int, default=60, help="training videos held out for scoring")
    p.add_argument("--split-seed", type=int, default=123)
    p.add_argument("--seeds", default="0,1", help="labeller seeds (accuracy is their mean)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="labeller-holdout.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from engine.checkpoint import load_checkpoint
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.features import FeatureStore
    from engine.model.segment_classifier import SegmentClassifier
    from engine.training.dataset import WindowDataset
    from engine.training.segment_classifier import (LabelledWindows, accuracy, attach_labeller, collect_windows,
                                                     fit_classifier, jittered, labeller_features)

    store = FeatureStore(a.features)
    gt = load_ground_truth(a.annotations)
    videos = sorted(v for v in gt.select("training").videos if store.has(v))
    if a.held_out >= len(videos):
        p.error(f"--held-out {a.held_out}: only {len(videos)} training videos have features")
    order = np.random.default_rng(a.split_seed).permutation(len(videos))
    held = [videos[i] for i in order[:a.held_out]]
    fitted = [videos[i] for i in order[a.held_out:]]
    report: dict[str, dict[str, float]] = {}
    for spec in a.checkpoint:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"--checkpoint {spec!r}: expected NAME=PATH")
        t0 = time.time()
        ckpt = load_checkpoint(path)
        cfg = ckpt.config
        if cfg.model.labeller != "segment":
            p.error(f"{path}: model.labeller is {cfg.model.labeller!r}, not segment")
        model = attach_labeller(ckpt, cfg)
        features_of = lambda x: labeller_features(model, x)  # noqa: E731
        sets = [WindowDataset(cfg, store, gt, "training", training=False, class_names=ckpt.class_names, videos=v)
                for v in (fitted, held)]
        train, test = (collect_windows(s, features_of) for s in sets)
        rng = np.random.default_rng(7)
        moved = LabelledWindows(test.features, [jittered(s, v, 0.1, 1, rng)[len(s):]
                                                for s, v in zip(test.segments, test.valid)], test.labels, test.valid)
        m, t = cfg.model, cfg.train
        scores = []
        for seed in (int(x) for x in a.seeds.split(",")):
            torch.manual_seed(seed)
            clf = SegmentClassifier([m.channels], cfg.data.num_classes, m.segment_hidden, m.segment_samples,
                                    m.segment_context, window=cfg.data.window)
            fit_classifier(clf, train, epochs=t.segment_epochs, lr=t.segment_lr, jitter=t.segment_jitter, seed=seed)
            scores.append((accuracy(clf, test), accuracy(clf, moved)))
        exact, jitter = np.mean(scores, 0) * 100
        report[name] = {"checkpoint": path, "segments": len(test), "as_annotated": float(exact),
                        "boundaries_moved": float(jitter)}
        print(f"{name}: {len(test)} held-out segments, {exact:.1f} % right as annotated, {jitter:.1f} % with "
              f"boundaries moved ({time.time() - t0:.0f} s)", flush=True)
        Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
