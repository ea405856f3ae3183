"""benchmarks/ablation_seeds.py's report: mean ± std per variant, and reports written before a
figure was added (runs reused across sessions) still summarise, without that figure."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ablation_seeds import markdown_table, summarise  # noqa: E402


def _row(variant: str, seed: int, average: float, at_08: float | None) -> dict:
    val = {"average_mAP": average, "mAP@0.5": average + 10, "mAP@0.75": average + 4, "mAP@0.95": average - 30,
           "agnostic_average_mAP": average + 4, "label_accuracy": 90.0}
    if at_08 is not None:
        val["mAP@0.8"] = at_08
    return {"variant": variant, "seed": seed, "scores": {"validation": val}}


def test_table_gives_mean_and_std_per_variant_with_the_08_column() -> None:
    table = markdown_table([_row("full", 0, 64.0, 65.0), _row("full", 1, 66.0, 67.0), _row("ema", 0, 60.0, 61.0)])
    lines = table.splitlines()
    assert "| @0.8 |" in lines[0] and "long" not in lines[0]  # no long-video set in these rows
    full = next(ln for ln in lines if ln.startswith("| full |"))
    assert "| 0,1 | 65.0 ± 1.4 |" in full and "| 66.0 ± 1.4 |" in full
    assert next(ln for ln in lines if ln.startswith("| ema |")).startswith("| ema | 0 | 60.0 ± 0.0 |")


def test_an_older_report_without_a_figure_drops_only_that_column() -> None:
    rows = [_row("full", 0, 64.0, 65.0), _row("ema", 0, 60.0, None)]
    assert "@0.8" not in markdown_table(rows).splitlines()[0]
    summary = summarise(rows)
    assert summary["full"]["validation mAP@0.8"] == "65.0 +- 0.0 (n=1)"
    assert "validation mAP@0.8" not in summary["ema"]
    assert summary["ema"]["validation average_mAP"] == "60.0 +- 0.0 (n=1)"
