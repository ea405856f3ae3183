"""What the THUMOS window ground-truth rules keep and drop (``data.window_gt``).

    python benchmarks/window_gt_rules.py
    python benchmarks/window_gt_rules.py --annotations ../shared/data/thumos14/annotations_test \\
        --config thumos14 --fps 30 --coverage 0.5 0.75 1.0 --json out.json

Lays the config's sliding windows (``data.sigma``, ``data.window``,
``data.hop``; :func:`engine.online.layout.window_starts`, the
layout training uses) over every annotated video of a THUMOS annotation folder
and applies each rule with the training code's own
:func:`engine.training.dataset.window_ground_truth`:

* ``coverage-C``: a ground truth is kept in a window, clipped, when at least C of
  its length lies inside (the default rule, C = ``data.window_gt_coverage``);
* ``clip``: any overlap is kept, clipped to the window (G-TAD).

Reported: (window, instance) pairs that overlap, split into kept whole / kept
clipped / dropped; instances kept whole in some window, kept only clipped
(never whole anywhere: cut in every window), or dropped from every window (never
trained on); windows with at least one kept instance (= training windows) and,
among those, windows where an overlapping instance was dropped (its snippets are
then taught as background) or clipped (a window edge is then taught as a
boundary).

Assumptions (the annotation folder gives neither): every video runs at ``--fps``
(THUMOS-14 videos are 30 fps with few exceptions), and a video's length is its last
annotation end plus one window (the annotations do not give it; real videos run
on past their last action, and the estimate only matters for the end-aligned last
window). Ambiguous segments are not instances.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.evaluation.ground_truth import load_ground_truth  # noqa: E402
from engine.online.layout import window_starts  # noqa: E402
from engine.training.dataset import window_ground_truth  # noqa: E402

# the shared data beside the repository, or where MENET_SHARED_DATA points (as the tests look for it)
DEFAULT_ANNOTATIONS = (Path(os.environ.get("MENET_SHARED_DATA") or ROOT.parent / "shared" / "data")
                       / "thumos14" / "annotations_test")


@dataclass
class RuleCounts:
    rule: str
    pairs_whole: int = 0  # overlapping (window, instance) pairs kept, instance entirely inside
    pairs_clipped: int = 0  # kept, cut at a window edge
    pairs_dropped: int = 0  # overlap, but the rule drops it
    instances_whole: int = 0  # kept whole in at least one window
    instances_only_clipped: int = 0  # kept, but cut in every window that keeps it
    instances_dropped: int = 0  # kept in no window: never trained on
    training_windows: int = 0  # windows with at least one kept instance
    windows_with_dropped: int = 0  # training windows where an overlapping instance is dropped (= background)
    windows_with_clipped: int = 0  # training windows holding a cut instance (edge taught as a boundary)


@dataclass
class Measurement:
    annotations: str
    fps: float
    sigma: int
    window: int
    hop: int
    videos: int = 0
    instances: int = 0
    windows: int = 0
    pairs: int = 0  # (window, instance) pairs with a positive overlap
    # pairs cut by the window, by the share of the instance inside: (0, .25], (.25, .5], (.5, .75), [.75, 1)
    partial_by_share: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    longest_instance_s: float = 0.0
    rules: list[RuleCounts] = field(default_factory=list)


def measure(annotations: str | Path, sigma: int, window: int, hop: int, fps: float,
            rules: list[tuple[str, float]]) -> Measurement:
    """Counts for each (rule, coverage) over all annotated videos of ``annotations``."""
    gt = load_ground_truth(annotations)
    sps = sigma / fps  # seconds per snippet
    m = Measurement(str(annotations), fps, sigma, window, hop)
    counts = [RuleCounts(f"coverage-{c:g}" if r == "coverage" else r) for r, c in rules]
    for video in sorted(set(gt.inst_videos.tolist())):
        sel = gt.inst_videos == video
        segs = np.stack([gt.inst_starts[sel], gt.inst_ends[sel]], axis=1) / sps
        segs = segs[segs[:, 1] > segs[:, 0]]  # a zero-length instance overlaps nothing
        # length unknown from annotations: last end + one window (see the module docstring)
        length = int(math.ceil(segs[:, 1].max())) + window
        starts = window_starts(length, window, hop)
        m.videos += 1
        m.instances += len(segs)
        m.windows += len(starts)
        m.longest_instance_s = max(m.longest_instance_s, float((segs[:, 1] - segs[:, 0]).max() * sps))
        for start in starts:
            inside = np.clip(segs[:, 1] - start, 0, window) - np.clip(segs[:, 0] - start, 0, window)
            cut = (inside > 0) & ((segs[:, 0] < start) | (segs[:, 1] > start + window))
            share = inside[cut] / (segs[cut, 1] - segs[cut, 0])
            bins = (share <= .25, (share > .25) & (share <= .5), (share > .5) & (share < .75), share >= .75)
            for i, in_bin in enumerate(bins):
                m.partial_by_share[i] += int(in_bin.sum())
        for rc, (rule, cov) in zip(counts, rules):
            ever_whole = np.zeros(len(segs), bool)
            ever_kept = np.zeros(len(segs), bool)
            for start in starts:
                clipped, keep = window_ground_truth(segs, start, window, rule, cov)  # type: ignore[arg-type]
                overlapping = clipped[:, 1] > clipped[:, 0]
                whole = (segs[:, 0] >= start) & (segs[:, 1] <= start + window)
                rc.pairs_whole += int((keep & whole).sum())
                rc.pairs_clipped += int((keep & ~whole).sum())
                rc.pairs_dropped += int((overlapping & ~keep).sum())
                ever_whole |= keep & whole
                ever_kept |= keep
                if keep.any():
                    rc.training_windows += 1
                    rc.windows_with_dropped += int((overlapping & ~keep).any())
                    rc.windows_with_clipped += int((keep & ~whole).any())
            rc.instances_whole += int(ever_whole.sum())
            rc.instances_only_clipped += int((ever_kept & ~ever_whole).sum())
            rc.instances_dropped += int((~ever_kept).sum())
    m.pairs = counts[0].pairs_whole + counts[0].pairs_clipped + counts[0].pairs_dropped if counts else 0
    m.rules = counts
    return m


def _pct(n: int, d: int) -> str:
    return f"{n} ({100.0 * n / d:.1f} %)" if d else str(n)


def table(m: Measurement) -> str:
    """A Markdown table, one row per rule."""
    head = ("| rule | pairs kept whole | pairs kept clipped | pairs dropped | instances kept whole somewhere "
            "| instances only clipped | instances never kept | training windows | ... with a dropped instance "
            "| ... with a clipped instance |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in m.rules:
        lines.append(f"| {r.rule} | {_pct(r.pairs_whole, m.pairs)} | {_pct(r.pairs_clipped, m.pairs)} "
                     f"| {_pct(r.pairs_dropped, m.pairs)} | {_pct(r.instances_whole, m.instances)} "
                     f"| {_pct(r.instances_only_clipped, m.instances)} | {_pct(r.instances_dropped, m.instances)} "
                     f"| {_pct(r.training_windows, m.windows)} | {_pct(r.windows_with_dropped, r.training_windows)} "
                     f"| {_pct(r.windows_with_clipped, r.training_windows)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--annotations", type=Path, default=DEFAULT_ANNOTATIONS,
                    help=f"THUMOS annotation folder (default {DEFAULT_ANNOTATIONS})")
    ap.add_argument("--config", default="thumos14", help="config giving sigma, window, hop (default thumos14)")
    ap.add_argument("--fps", type=float, default=30.0, help="assumed frame rate of every video (default 30)")
    ap.add_argument("--coverage", type=float, nargs="+",
                    help="coverage fractions to measure (default: the config's data.window_gt_coverage)")
    ap.add_argument("--json", type=Path, help="also write the counts here")
    args = ap.parse_args(argv)
    if not args.annotations.is_dir():
        print(f"window_gt_rules: annotation folder {args.annotations} is absent: nothing to measure",
              file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    d = cfg.data
    if args.fps <= 0:
        ap.error("--fps must be > 0")
    coverages = args.coverage or [d.window_gt_coverage]
    if any(not 0 < c <= 1 for c in coverages):
        ap.error("--coverage values must be in (0, 1]")
    rules = [("coverage", c) for c in coverages] + [("clip", 1.0)]
    m = measure(args.annotations, d.sigma, d.window, d.hop, args.fps, rules)
    sps = d.sigma / args.fps
    print(f"{m.annotations}: {m.videos} videos, {m.instances} instances (Ambiguous excluded)")
    print(f"windows: {d.window} snippets x {sps:.4f} s = {d.window * sps:.1f} s (sigma {d.sigma} at an assumed "
          f"{args.fps:g} fps), hop {d.hop}; video length estimated as last annotation end + "
          f"one window -> {m.windows} windows, {m.pairs} overlapping (window, instance) pairs")
    print(f"pairs cut by the window, by the share of the instance inside: (0, .25] {m.partial_by_share[0]}, "
          f"(.25, .5] {m.partial_by_share[1]}, (.5, .75) {m.partial_by_share[2]}, [.75, 1) {m.partial_by_share[3]}; "
          f"longest instance {m.longest_instance_s:.1f} s")
    print()
    print(table(m))
    if args.json:
        args.json.write_text(json.dumps(asdict(m), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
