"""benchmarks/ablation_seeds.py's report: mean ± std per variant, and reports written before a
figure was added (runs reused across sessions) still summarise, without that figure."""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ablation_seeds import markdown_table, short_actions_found, summarise, window_actions_found  # noqa: E402
from engine.evaluation.ground_truth import load_ground_truth  # noqa: E402
from engine.evaluation.results_format import predictions_from_results  # noqa: E402


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


def test_short_actions_count_only_right_label_at_the_tiou(tmp_path: Path) -> None:
    import json

    ann = {"database": {"v": {"subset": "validation", "duration": 60.0, "annotations": [
        {"segment": [1.0, 3.0], "label": "a"},     # short, found: same label, tIoU 1.6/2.0 = 0.8
        {"segment": [10.0, 12.0], "label": "a"},   # short, only a wrong label covers it exactly
        {"segment": [20.0, 22.5], "label": "b"},   # short, right label but tIoU 1.5/2.5 = 0.6
        {"segment": [30.0, 40.0], "label": "a"},   # long: not counted at all
    ]}}}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ann))
    gt = load_ground_truth(str(path))
    preds = predictions_from_results({"v": [
        {"segment": [1.2, 2.8], "label": "a", "score": 0.01},
        {"segment": [10.0, 12.0], "label": "b", "score": 0.9},
        {"segment": [20.0, 21.5], "label": "b", "score": 0.9},
        {"segment": [30.0, 40.0], "label": "a", "score": 0.9},
    ]}, source="test")
    assert short_actions_found(gt, preds) == (1, 3)
    assert short_actions_found(gt, preds, tiou=0.5) == (2, 3)
    assert short_actions_found(gt, preds, max_seconds=20.0) == (2, 4)


def test_false_detections_split_idle_time_from_actions(tmp_path: Path, capsys) -> None:
    # benchmarks/false_detections.py: what a subscriber would act on that is not there
    import json

    from false_detections import count_false, main

    ann = {"database": {"v": {"subset": "validation", "duration": 3600.0, "annotations": [
        {"segment": [100.0, 110.0], "label": "a"},
        {"segment": [200.0, 300.0], "label": "b"},
    ]}}}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ann))
    gt = load_ground_truth(str(path))
    results = {"v": [
        {"segment": [100.0, 110.0], "label": "a", "score": 0.9},   # true: not false
        {"segment": [1000.0, 1010.0], "label": "a", "score": 0.8},  # idle time, counted
        {"segment": [1500.0, 1510.0], "label": "b", "score": 0.3},  # idle time but under 0.5: not acted on
        {"segment": [200.0, 300.0], "label": "a", "score": 0.7},   # on an action, wrong label
        {"segment": [295.0, 325.0], "label": "b", "score": 0.6},   # 5 of 30 s inside: idle (< a quarter)
    ]}
    counts = count_false(gt, predictions_from_results(results, source="test"), {"v": 3600.0})
    assert (counts.detections, counts.false_idle, counts.false_on_action) == (4, 2, 1)
    assert counts.highest_idle == 0.8
    assert abs(counts.idle_hours - (3600 - 110) / 3600) < 1e-9  # idle time: outside every action
    assert abs(counts.idle_per_idle_hour - 2 / counts.idle_hours) < 1e-9
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": results}))
    assert main(["--annotations", str(path), "--pred", f"x={pred}", "--min-score", "0.2",
                 "--json", str(tmp_path / "out.json")]) == 0
    assert "| x | 5 | 3 |" in capsys.readouterr().out  # at 0.2 the 0.3 one counts too
    assert json.loads((tmp_path / "out.json").read_text())["x"]["false_idle"] == 3


def test_every_variant_writes_a_config_that_loads(tmp_path: Path) -> None:
    """A variant whose overlay names a wrong key or value (e.g. window_gt: "clipped") would only
    fail an hour into an ablation; each one's run config must load as written."""
    from ablation_seeds import VARIANTS, write_run_config
    from engine.config import load_config

    for variant in VARIANTS:
        path, schedule = write_run_config(tmp_path, REPO / "configs" / "tiny.yaml", variant, 3)
        cfg = load_config(path)
        assert cfg.train.seed == 3, variant
        assert schedule in ("two-stage", "generalization", "specialization", "bias"), (variant, schedule)  # menet train --schedule
    clip = load_config(write_run_config(tmp_path, REPO / "configs" / "tiny.yaml", "best-match-mfe-clip", 0)[0])
    assert clip.data.window_gt == "clip" and clip.train.best_match and clip.model.segment_input == "mfe"


def test_actions_longer_than_a_window_count_per_video_window(tmp_path: Path) -> None:
    """Only actions longer than their own video's window count; found = the same label at tIoU >= 0.5."""
    import json

    ann = {"database": {
        "v": {"subset": "validation", "duration": 300.0, "annotations": [
            {"segment": [10.0, 110.0], "label": "a"},   # long, found whole: tIoU 90/100
            {"segment": [150.0, 250.0], "label": "a"},  # long, only fragments: best tIoU 40/100
            {"segment": [260.0, 290.0], "label": "b"},  # 30 s: shorter than v's 41-s window
        ]},
        "w": {"subset": "validation", "duration": 300.0, "annotations": [
            {"segment": [0.0, 30.0], "label": "b"},     # longer than w's 20-s window, wrong label only
        ]}}}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(ann))
    gt = load_ground_truth(str(path))
    preds = predictions_from_results({
        "v": [{"segment": [15.0, 105.0], "label": "a", "score": 0.01},
              {"segment": [150.0, 190.0], "label": "a", "score": 0.9},
              {"segment": [200.0, 240.0], "label": "a", "score": 0.9},
              {"segment": [260.0, 290.0], "label": "b", "score": 0.9}],
        "w": [{"segment": [0.0, 30.0], "label": "a", "score": 0.9}]}, source="test")
    assert window_actions_found(gt, preds, {"v": 41.0, "w": 20.0}) == (1, 3)
    assert window_actions_found(gt, preds, {"v": 41.0, "w": 20.0}, tiou=0.4) == (2, 3)
    assert window_actions_found(gt, preds, {"v": 41.0}) == (1, 2)  # a video of no known window: none of its actions


def test_a_further_set_gets_its_own_average_column() -> None:
    rows = [_row("full", 0, 64.0, 65.0), _row("full", 1, 66.0, 67.0)]
    rows[0]["scores"]["idle"] = {"average_mAP": 70.0}
    rows[1]["scores"]["idle"] = {"average_mAP": 72.0}
    lines = markdown_table(rows).splitlines()
    assert lines[0].endswith("| idle: average mAP |")
    assert lines[2].endswith("| 71.0 ± 1.4 |")


def test_decoding_study_hop_rows_become_snippets_of_the_checkpoints_window() -> None:
    from decoding_study import VARIANTS, resolve_overrides

    quarter = resolve_overrides(VARIANTS["hop = window / 4 (75 % overlap)"], 128)
    assert quarter == {"data": {"hop": 32}}
    assert resolve_overrides(VARIANTS["hop = window (no overlap)"], 256) == {"data": {"hop": 256}}
    labels = VARIANTS["2 labels per proposal"]
    assert resolve_overrides(labels, 128) == labels  # inference rows pass unchanged
