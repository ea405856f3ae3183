"""Memory: a short accelerated soak (benchmarks/soak.py, ~75 s): no process's RSS keeps growing."""
from __future__ import annotations

import sys

import pytest

from hardening_results import REPO, record

pytestmark = pytest.mark.slow


def test_short_soak_rss_slope_is_flat() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from soak import soak

    rep = soak(minutes=1.25, streams=2, interval=1.0, config=None, warmup=0.4)
    assert rep["exit"] == 0, rep["log_tail"]
    assert rep["snippets"] > 200 and rep["events"] > 0, rep["log_tail"]
    worst = rep["worst_slope_mb_per_min"]
    record("soak", "short soak (test, 75 s)", duration_s=rep["duration_s"], streams=2, snippets=rep["snippets"],
           slope_mb_per_min=worst, peak_rss_mb=rep["peak_total_mb"],
           notes="synthetic rate=max; slope fitted after a 40 % warm-up")
    # a leak of one snippet clip per snippet would be >> 1 MB/min here; allocator noise stays well below
    assert worst < 8.0, rep["processes"]
