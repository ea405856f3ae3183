"""Prediction/ground-truth formats: readers, writers, malformed input, unknown videos/classes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.evaluation import activitynet
from engine.evaluation.ground_truth import (
    align_predictions,
    ground_truth_from_annotations,
    load_ground_truth,
)
from engine.evaluation.results_format import (
    EvaluationInputError,
    read_predictions,
    write_activitynet_results,
    write_thumos_results,
)

RESULTS = {
    "vid_a": [
        {"label": "Long jump", "score": 0.9, "segment": [1.25, 7.5]},
        {"label": "High jump", "score": 1e-7, "segment": [0.1, 0.30000000000000004]},
    ],
    "vid_b": [{"label": "Long jump", "score": 0.5, "segment": [3.0, 3.0]}],
}


def test_activitynet_writer_round_trips(tmp_path):
    path = tmp_path / "r.json"
    write_activitynet_results(path, RESULTS)
    data = json.loads(path.read_text())
    assert set(data) == {"version", "results", "external_data"}  # the toolkit requires all three
    p = read_predictions(path)
    assert p.videos.tolist() == ["vid_a", "vid_a", "vid_b"]
    assert p.labels.tolist() == ["Long jump", "High jump", "Long jump"]
    assert p.starts.tolist() == [1.25, 0.1, 3.0] and p.ends.tolist() == [7.5, 0.30000000000000004, 3.0]
    assert p.scores.tolist() == [0.9, 1e-7, 0.5]


def test_thumos_writer_round_trips_losslessly(tmp_path):
    path = tmp_path / "r.txt"
    write_thumos_results(path, RESULTS, {"Long jump": 51, "High jump": 40})
    lines = path.read_text().splitlines()
    assert lines[0].split() == ["vid_a", "1.25", "7.5", "51", "0.9"]
    p = read_predictions(path)
    assert p.labels_are_ids and p.labels.tolist() == [51, 40, 51]
    assert p.ends.tolist() == [7.5, 0.30000000000000004, 3.0]
    assert p.scores.tolist() == [0.9, 1e-7, 0.5]
    assert p.lines.tolist() == [1, 2, 3]


def test_thumos_writer_rejects_label_without_id(tmp_path):
    with pytest.raises(EvaluationInputError, match="High jump"):
        write_thumos_results(tmp_path / "r.txt", RESULTS, {"Long jump": 51})


def test_writers_reject_bad_segments(tmp_path):
    bad = {"v": [{"label": "a", "score": 1.0, "segment": [5.0, 1.0]}]}
    with pytest.raises(EvaluationInputError, match=r"results\.v\[0\]\.segment"):
        write_activitynet_results(tmp_path / "r.json", bad)


def test_text_reader_tolerates_blank_lines_crlf_and_runs_of_spaces(tmp_path):
    path = tmp_path / "p.txt"
    path.write_bytes(b"v1  1.0\t2.0 7 0.5\r\n\r\n   \nv2 3 4 9 1e-3\r\n")
    p = read_predictions(path)
    assert p.videos.tolist() == ["v1", "v2"] and p.lines.tolist() == [1, 4]


@pytest.mark.parametrize(
    "content,message",
    [
        ("v 1 2 7 0.5\nv 1 2 7\n", r"p\.txt:2: expected 5 fields"),
        ("v 1 2 7 0.5 extra\n", r"p\.txt:1: expected 5 fields"),
        ("v 1 two 7 0.5\n", r"p\.txt:1: end 'two' is not a number"),
        ("v 3 2 7 0.5\n", r"p\.txt:1: start 3\.0 > end 2\.0"),
        ("\nv 1 2 7 nan\n", r"p\.txt:2: score 'nan' is not finite"),
        ("v 1 2 seven 0.5\n", r"p\.txt:1: class id 'seven' is not an integer"),
    ],
)
def test_malformed_text_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "p.txt"
    path.write_text(content)
    with pytest.raises(EvaluationInputError, match=message):
        read_predictions(path)


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"version": 1}, r"missing key 'results'"),
        ({"results": {"v": [{"label": "a", "score": 1}]}}, r"results\.v\[0\]: missing key 'segment'"),
        ({"results": {"v": [{"label": "a", "segment": [0, 1]}]}}, r"results\.v\[0\]: missing key 'score'"),
        ({"results": {"v": [{"score": 1, "segment": [0, 1]}]}}, r"results\.v\[0\]: missing key 'label'"),
        ({"results": {"v": [{}, {"label": "a", "score": 1, "segment": [2, 1]}]}}, r"results\.v\[0\]: missing"),
        ({"results": {"v": [{"label": "a", "score": 1, "segment": [0, 1]},
                            {"label": "a", "score": 1, "segment": [2, 1]}]}}, r"results\.v\[1\]\.segment: start"),
        ({"results": {"v": [{"label": "a", "score": 1, "segment": [0, 1, 2]}]}}, r"results\.v\[0\]\.segment: expected"),
        ({"results": {"v": [{"label": "a", "score": "high", "segment": [0, 1]}]}}, r"results\.v\[0\]\.score"),
        ({"results": {"v": [{"label": "a", "score": True, "segment": [0, 1]}]}}, r"results\.v\[0\]\.score"),
        ({"results": {"v": {"label": "a"}}}, r"results\.v: expected a list"),
    ],
)
def test_malformed_json_names_file_and_path(tmp_path, payload, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(EvaluationInputError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value)


def test_json_nan_and_syntax_errors(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"results": {"v": [{"label": "a", "score": NaN, "segment": [0, 1]}]}}')
    with pytest.raises(EvaluationInputError, match=r"results\.v\[0\]\.score: expected a finite number"):
        read_predictions(path)
    path.write_text('{"results": {"v": [}')
    with pytest.raises(EvaluationInputError, match=r"p\.json: invalid JSON at line 1"):
        read_predictions(path)


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "p.csv").write_text("x")
    with pytest.raises(EvaluationInputError, match="expected .json or .txt"):
        read_predictions(tmp_path / "p.csv")
    with pytest.raises(EvaluationInputError, match="not found"):
        read_predictions(tmp_path / "nope.json")


def test_error_is_a_value_error():
    assert issubclass(EvaluationInputError, ValueError)


def test_unknown_class_id_names_the_line(tmp_path, shared_data):
    gt = load_ground_truth(shared_data / "thumos14" / "annotations_test", "test")
    path = tmp_path / "p.txt"
    path.write_text("video_test_0000324 49.2 53.5 7 0.9\nvideo_test_0000324 1 2 8 0.9\n")
    with pytest.raises(EvaluationInputError, match=r"p\.txt:2: unknown class id 8"):
        align_predictions(gt, read_predictions(path))


def test_unknown_videos_and_classes_are_counted(tmp_path):
    gt = ground_truth_from_annotations(
        [("video_validation_1", 0, 10, "a"), ("video_test_1", 0, 10, "a")],
        subsets={"video_validation_1": "validation", "video_test_1": "test"},
    ).select("validation")
    path = tmp_path / "p.json"
    write_activitynet_results(path, {
        "video_validation_1": [{"label": "a", "score": 0.1, "segment": [0, 10]},
                               {"label": "nope", "score": 0.9, "segment": [0, 10]}],
        "video_test_1": [{"label": "a", "score": 0.9, "segment": [0, 10]}],  # known, other subset
        "video_test_2": [{"label": "a", "score": 0.9, "segment": [0, 10]}],  # other subset by name
        "elsewhere": [{"label": "a", "score": 0.9, "segment": [0, 10]},
                      {"label": "nope", "score": 0.9, "segment": [0, 10]}],  # counted as class first
    })
    r = activitynet.evaluate_detection(gt, read_predictions(path), [0.5])
    assert r.ignored == {"unknown_classes": 2, "unknown_videos": 1, "other_subset_videos": 2}
    assert r.ap[0, 0] == pytest.approx(0.25)  # three FPs outrank the single TP
    assert r.to_dict()["ignored"] == r.ignored


def test_thumos_folder_gt_quirks(tmp_path):
    (tmp_path / "detclasslist.txt").write_text("7 A\r\n9 B\r\n")
    (tmp_path / "A_test.txt").write_text("video_test_1  1.0 2.0\nvideo_test_2 3 4\n")
    (tmp_path / "B_test.txt").write_text("video_test_1 5 6\n")
    (tmp_path / "A_val.txt").write_text("video_validation_1 5 6\n")
    (tmp_path / "B_val.txt").write_text("")
    (tmp_path / "Ambiguous_test.txt").write_text("video_test_3 0 1\n")
    gt = load_ground_truth(tmp_path, "test")
    assert gt.classes == ["A", "B"] and len(gt) == 3 and len(gt.amb_starts) == 1
    assert set(gt.videos) == {"video_test_1", "video_test_2", "video_test_3"}
    val = load_ground_truth(tmp_path, "validation")
    assert val.classes == ["A"] and list(val.videos) == ["video_validation_1"]
    everything = load_ground_truth(tmp_path)
    assert len(everything) == 4
    (tmp_path / "B_test.txt").write_text("video_test_1 5\n")
    with pytest.raises(EvaluationInputError, match=r"B_test\.txt:1: expected 'video start end'"):
        load_ground_truth(tmp_path, "test")
    with pytest.raises(EvaluationInputError, match="missing ground-truth file A_train.txt"):
        load_ground_truth(tmp_path, "train")


def test_activitynet_gt_errors_name_json_path(tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": {"v": {"subset": "validation",
                                                   "annotations": [{"segment": [3, 1], "label": "a"}]}}}))
    with pytest.raises(EvaluationInputError, match=r"database\.v\.annotations\[0\]\.segment: start"):
        load_ground_truth(path)
    path.write_text(json.dumps({"database": {"v": {"annotations": []}}}))
    with pytest.raises(EvaluationInputError, match=r"database\.v: missing key 'subset'"):
        load_ground_truth(path)
    path.write_text(json.dumps({"database": {"v": {"subset": "training", "annotations": []}}}))
    with pytest.raises(EvaluationInputError, match="no video in subset 'validation'"):
        load_ground_truth(path, "validation")


def test_anet13_gt_loads_with_its_quirks(shared_data):
    gt = load_ground_truth(shared_data / "anet13" / "val_gt.json", "val")  # alias of validation
    assert len(gt.videos) == 4926 and len(gt) == 7654 and len(gt.classes) == 200
    assert int(np.sum(gt.inst_starts == gt.inst_ends)) == 3  # zero-length segments kept
    assert gt.class_ids[1] == "Applying sunscreen"
