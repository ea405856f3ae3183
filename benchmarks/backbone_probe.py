"""How well do a backbone's features separate the classes, snippet by snippet? A linear probe.

For each ``--features NAME=DIR`` (one ``menet extract`` folder per backbone, for example one per
draw of ``menet pretrain-backbone``), every snippet of the training videos is labelled as
``menet pretrain-backbone`` labels its clips (the action class covering the snippet's centre, or
background). A linear softmax classifier (L2-regularised, full-batch L-BFGS on standardised
features) is fitted on the snippets of all but ``--held-out`` training videos and scored on the
held-out ones; the evaluation subset is not read unless ``--also-subset`` names it. Reported:

* ``balanced``: mean per-class recall over the action classes and background (chance is
  1 / (classes + 1)), the figure less swayed by how much background a video has;
* ``action_found``: the share of action snippets called some action (not background);
* ``action_class``: of the action snippets, the share given their own class.

With ``--context K`` the probe also sees the K snippets on each side (concatenated), as the
detector sees temporal context. The backbone's pretraining saw the training videos, so a held-out
figure says how well the features separate videos of the kind it was pretrained on; it never
touches the evaluation subset, so it may be used to choose among backbones (docs/results.md
measures whether it orders them as the detector's validation mAP does).

    .venv/bin/python benchmarks/backbone_probe.py --annotations runs/bundled/synth/annotations.json \\
        --features s0=runs/bundled/features --features s1=runs/bbdraw/s1/features
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.evaluation.ground_truth import GroundTruth, load_ground_truth  # noqa: E402
from engine.features import FeatureStore  # noqa: E402


@dataclass
class SnippetSet:
    features: np.ndarray  # [N, D] float32
    labels: np.ndarray  # [N] int64; num_classes = background


def snippet_labels(gt: GroundTruth, video: str, num_snippets: int, sigma: int, fps: float,
                   class_index: dict[str, int]) -> np.ndarray:
    """The class covering each snippet's centre, as engine/training/pretrain.py labels clips."""
    centres = (np.arange(num_snippets) + 0.5) * sigma / fps
    labels = np.full(num_snippets, len(class_index), dtype=np.int64)
    mask = gt.inst_videos == video
    for s, e, lab in zip(gt.inst_starts[mask], gt.inst_ends[mask], gt.inst_labels[mask]):
        labels[(centres >= s) & (centres < e)] = class_index[lab]
    return labels


def with_context(feats: np.ndarray, k: int) -> np.ndarray:
    """Each row followed by its k neighbours on each side (edges repeat the first / last row)."""
    if k == 0:
        return feats
    padded = np.concatenate([np.repeat(feats[:1], k, 0), feats, np.repeat(feats[-1:], k, 0)])
    return np.concatenate([padded[i:i + len(feats)] for i in range(2 * k + 1)], axis=1)


def collect(store: FeatureStore, gt: GroundTruth, videos: list[str], class_index: dict[str, int],
            context: int) -> SnippetSet:
    sigma = store.settings().sigma
    feats, labels = [], []
    for v in videos:
        x, meta = store.load(v)
        feats.append(with_context(x.astype(np.float32), context))
        labels.append(snippet_labels(gt, v, len(x), sigma, meta.fps, class_index))
    return SnippetSet(np.concatenate(feats), np.concatenate(labels))


def fit_probe(train: SnippetSet, num_labels: int, weight_decay: float = 1e-3,
              iterations: int = 200) -> tuple[torch.nn.Linear, np.ndarray, np.ndarray]:
    """A linear softmax classifier; classes weighted inversely to their frequency (background
    dominates), so the probe is not rewarded for calling everything background."""
    mean, std = train.features.mean(0), train.features.std(0) + 1e-6
    x = torch.from_numpy((train.features - mean) / std)
    y = torch.from_numpy(train.labels)
    counts = np.bincount(train.labels, minlength=num_labels).astype(np.float64)
    weights = torch.tensor(np.where(counts > 0, len(train.labels) / (num_labels * np.maximum(counts, 1)), 0.0),
                           dtype=torch.float32)
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], num_labels)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y, weight=weights)
        loss = loss + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe, mean, std


def score_probe(probe: torch.nn.Linear, mean: np.ndarray, std: np.ndarray, data: SnippetSet,
                num_labels: int) -> dict[str, float]:
    with torch.no_grad():
        pred = probe(torch.from_numpy((data.features - mean) / std)).argmax(1).numpy()
    bg = num_labels - 1
    recalls = [float((pred[data.labels == c] == c).mean()) for c in range(num_labels) if (data.labels == c).any()]
    action = data.labels != bg
    return {"balanced": 100 * float(np.mean(recalls)),
            "action_found": 100 * float((pred[action] != bg).mean()) if action.any() else float("nan"),
            "action_class": 100 * float((pred[action] == data.labels[action]).mean()) if action.any() else float("nan"),
            "snippets": int(len(data.labels))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--features", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--annotations", required=True, help="ActivityNet-format JSON with a training subset")
    p.add_argument("--held-out", type=int, default=60, help="training videos held out for scoring")
    p.add_argument("--split-seed", type=int, default=123)
    p.add_argument("--context", type=int, default=0, help="neighbouring snippets on each side the probe sees")
    p.add_argument("--also-subset", default=None,
                   help="also score on this subset (a diagnostic; choosing by it would be choosing on it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    gt = load_ground_truth(a.annotations)
    classes = sorted(set(gt.inst_labels.tolist()))
    class_index = {c: i for i, c in enumerate(classes)}
    num_labels = len(classes) + 1
    training = gt.select("training")
    report: dict[str, dict[str, dict[str, float]]] = {}
    for spec in a.features:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            p.error(f"--features {spec!r}: expected NAME=DIR")
        store = FeatureStore(folder)
        videos = sorted(v for v in training.videos if store.has(v))
        if a.held_out >= len(videos):
            p.error(f"--features {spec}: --held-out {a.held_out} but only {len(videos)} training videos have "
                    f"features in {folder}")
        order = np.random.default_rng(a.split_seed).permutation(len(videos))
        held = [videos[i] for i in order[:a.held_out]]
        fitted = [videos[i] for i in order[a.held_out:]]
        probe, mean, std = fit_probe(collect(store, training, fitted, class_index, a.context), num_labels)
        report[name] = {"held_out_training": score_probe(probe, mean, std,
                                                         collect(store, training, held, class_index, a.context),
                                                         num_labels)}
        if a.also_subset:
            other = gt.select(a.also_subset)
            vids = sorted(v for v in other.videos if store.has(v))
            report[name][a.also_subset] = score_probe(probe, mean, std,
                                                      collect(store, other, vids, class_index, a.context),
                                                      num_labels)
    print(f"linear probe, context {a.context}; {a.held_out} held-out training videos (split seed {a.split_seed})")
    print("| features | set | balanced | action found | action class | snippets |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, sets in report.items():
        for set_name, r in sets.items():
            print(f"| {name} | {set_name} | {r['balanced']:.1f} | {r['action_found']:.1f} | "
                  f"{r['action_class']:.1f} | {r['snippets']} |")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
