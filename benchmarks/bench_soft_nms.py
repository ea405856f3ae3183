"""Time the vectorised Soft-NMS against the pure-Python reference.

Usage: ``python benchmarks/bench_soft_nms.py [--sizes 2000 10000] [--repeats 5]
[--reference-max 2000] [--quick]``. Prints the median of ``--repeats`` runs per (method, N).
The reference is O(N^2) Python, so it only runs for N <= ``--reference-max``.
Segments mimic one THUMOS video: N proposals over a 600 s video, lengths
log-uniform in [0.5, 60] s, scores uniform; ``top_k=None`` (worst case: every
segment is picked).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.postprocess.soft_nms import soft_nms  # noqa: E402
from tests.test_soft_nms import soft_nms_reference  # noqa: E402  (the executable spec)


def _make(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    length = np.exp(rng.uniform(np.log(0.5), np.log(60.0), n))
    start = rng.uniform(0.0, 600.0 - length)
    return np.stack([start, start + length], axis=1), rng.random(n)


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--reference-max", type=int, default=2000)
    ap.add_argument("--methods", nargs="+", default=["gaussian", "linear", "hard", "bmn"])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: N = 300 and 600 (reference up to 300), one repeat, every method")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.reference_max = [300, 600], 1, 300
    print(f"{'method':>9} {'N':>6} {'vectorised_s':>13} {'reference_s':>12} {'speedup':>8}")
    for n in args.sizes:
        segs, scores = _make(n)
        for method in args.methods:
            kw = dict(method=method, iou_threshold=0.5, sigma=0.5, duration=600.0)
            t_vec = _median_time(lambda: soft_nms(segs, scores, **kw), args.repeats)
            if n <= args.reference_max:
                seg_list, sc_list = segs.tolist(), scores.tolist()
                # The reference is slow; fewer repeats keep the run short.
                t_ref = _median_time(lambda: soft_nms_reference(seg_list, sc_list, **kw),
                                     max(1, min(3, args.repeats)))
                print(f"{method:>9} {n:>6} {t_vec:>13.4f} {t_ref:>12.3f} {t_ref / t_vec:>7.1f}x")
            else:
                print(f"{method:>9} {n:>6} {t_vec:>13.4f} {'-':>12} {'-':>8}")


if __name__ == "__main__":
    main()
