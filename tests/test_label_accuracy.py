"""Label accuracy of found actions (``menet eval``'s ``labels`` figure)."""
from __future__ import annotations

import json
from pathlib import Path

from engine.evaluation.ground_truth import load_ground_truth
from engine.evaluation.labels import label_accuracy
from engine.evaluation.results_format import predictions_from_results
from stream.commands import eval as eval_cmd


def _gt(tmp_path: Path) -> Path:
    db = {"database": {
        "v1": {"subset": "validation", "duration": 60.0, "annotations": [
            {"segment": [0.0, 10.0], "label": "a"}, {"segment": [20.0, 30.0], "label": "b"},
            {"segment": [40.0, 50.0], "label": "a"}]},
        "v2": {"subset": "validation", "duration": 60.0, "annotations": [{"segment": [5.0, 15.0], "label": "b"}]},
    }}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(db))
    return path


def test_best_scoring_match_decides_and_other_labels_do_not_count(tmp_path: Path) -> None:
    gt = load_ground_truth(_gt(tmp_path))
    preds = predictions_from_results({
        # action [0,10] a: best match says b (wrong), a lower-scoring row says a
        "v1": [{"segment": [0.5, 10.0], "label": "b", "score": 0.9},
               {"segment": [0.5, 10.0], "label": "a", "score": 0.5},
               # action [20,30] b: right
               {"segment": [21.0, 30.0], "label": "b", "score": 0.4},
               # action [40,50] a: only a detection below tIoU 0.5 -> not found
               {"segment": [44.0, 60.0], "label": "a", "score": 0.99}],
        # v2 has no detections at all -> not found
    })
    result = label_accuracy(gt, preds)
    assert (result.actions, result.found, result.right) == (4, 2, 1)
    assert result.accuracy == 0.5
    assert result.confusion == {"a": {"b": 1}, "b": {"b": 1}}


def test_nothing_found_is_zero_not_an_error(tmp_path: Path) -> None:
    gt = load_ground_truth(_gt(tmp_path))
    result = label_accuracy(gt, predictions_from_results({}))
    assert (result.found, result.accuracy) == (0, 0.0)


def test_menet_eval_reports_it(tmp_path: Path, capsys) -> None:
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"results": {"v1": [{"segment": [0.0, 10.0], "label": "a", "score": 1.0},
                                                   {"segment": [20.0, 30.0], "label": "a", "score": 1.0}]}}))
    assert eval_cmd.main(["--gt", str(_gt(tmp_path)), "--pred", str(pred), "--protocol", "activitynet",
                          "--json"]) == 0
    labels = json.loads(capsys.readouterr().out)["labels"]
    assert (labels["found"], labels["right"]) == (2, 1)
    assert eval_cmd.main(["--gt", str(_gt(tmp_path)), "--pred", str(pred), "--protocol", "activitynet"]) == 0
    assert "labels: 1 of 2 found actions named right (50.0 %" in capsys.readouterr().out
