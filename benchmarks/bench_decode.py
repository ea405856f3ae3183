"""Time proposal decoding (engine.postprocess.decode.decode_window) per window.

Usage: ``python benchmarks/bench_decode.py [--configs tiny thumos14] [--repeats 5]
[--threads 1] [--quick]``. For each config: a randomly initialised TemporalDetector runs once
on random snippet features (not timed); then ``decode_window`` on its levels is
timed (median of ``--repeats``), with the default pair cap and without it. Random
weights give flat boundary curves, so almost every snippet is a candidate: the
worst case for the pair count, which the cap bounds.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.config import load_config  # noqa: E402
from engine.model.menet import TemporalDetector  # noqa: E402
from engine.postprocess.decode import DEFAULT_MAX_PAIRS, decode_window  # noqa: E402


def bench(name: str, repeats: int, max_pairs: int | None) -> tuple[float, int]:
    cfg = load_config(name)
    torch.manual_seed(0)
    det = TemporalDetector(cfg, cfg.feature_channels).eval()
    with torch.no_grad():
        levels = det(torch.randn(1, cfg.feature_channels, cfg.data.window))
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = decode_window(levels, det.heads, cfg, max_pairs=max_pairs)
        times.append(time.perf_counter() - t0)
        n = len(out)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "thumos14"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: tiny config, one repeat (both pair caps still run)")
    args = ap.parse_args()
    if args.quick:
        args.configs, args.repeats = ["tiny"], 1
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    for name in args.configs:
        for cap in (DEFAULT_MAX_PAIRS, None):
            sec, n = bench(name, args.repeats, cap)
            print(f"{name:10s} max_pairs={str(cap):5s} proposals={n:6d} decode/window={sec * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
