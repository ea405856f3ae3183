"""``menet eval`` subcommand: argument contract, JSON/table output, exit codes."""
from __future__ import annotations

import argparse
import json

import pytest

from stream.commands import eval as eval_cmd


def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="menet")
    eval_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    code = eval_cmd.run(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def thumos_dir(shared_data):
    return shared_data / "thumos14"


def test_parser_registers_eval_with_help():
    parser = argparse.ArgumentParser(prog="menet")
    sub = parser.add_subparsers(dest="command")
    eval_cmd.add_parser(sub)
    assert "eval" in sub.choices
    assert "evaluate" in sub._choices_actions[0].help
    args = parser.parse_args(["eval", "--gt", "g", "--pred", "p", "--protocol", "thumos"])
    assert args.task == "detection" and args.tiou is None and args.subset is None and not args.json


def test_thumos_json_output(thumos_dir, capsys):
    code, out, err = _run(["--gt", str(thumos_dir / "annotations_test"),
                           "--pred", str(thumos_dir / "turn_flow16_scnn" / "iou0.5.txt"),
                           "--protocol", "thumos", "--subset", "test", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)  # exactly one JSON object
    assert {"protocol", "task", "tiou", "mAP", "average_mAP", "per_class", "ignored"} <= set(result)
    assert result["protocol"] == "thumos" and result["task"] == "detection"
    assert result["tiou"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7])
    assert result["mAP"][0] == pytest.approx(0.380954, abs=1e-4)
    assert result["mAP"][2] == pytest.approx(0.255563, abs=1e-4)
    assert result["mAP"][4] == pytest.approx(0.065463, abs=1e-4)
    assert len(result["per_class"]) == 20 and len(result["per_class"]["LongJump"]) == 5
    assert result["average_mAP"] == pytest.approx(sum(result["mAP"]) / 5)


def test_table_output_and_custom_tiou(thumos_dir, capsys):
    code, out, _ = _run(["--gt", str(thumos_dir / "annotations_test"),
                         "--pred", str(thumos_dir / "turn_flow16_scnn" / "iou0.3.txt"),
                         "--protocol", "thumos", "--tiou", "0.3,0.5"], capsys)
    assert code == 0
    assert "mAP (%)" in out and "44.13" in out and "BaseballPitch" in out


def test_activitynet_default_tiou_and_proposal_task(tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": [
        {"segment": [0, 10], "label": "a"}]}}}))
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"results": {"v": [{"label": "a", "score": 1, "segment": [0, 10]}]}}))
    code, out, _ = _run(["--gt", str(gt), "--pred", str(pred), "--protocol", "activitynet", "--json"], capsys)
    det = json.loads(out)
    assert code == 0 and len(det["tiou"]) == 10 and det["average_mAP"] == 1.0
    code, out, _ = _run(["--gt", str(gt), "--pred", str(pred), "--protocol", "activitynet", "--task", "proposal",
                         "--json"], capsys)
    prop = json.loads(out)
    assert code == 0 and prop["task"] == "proposal"
    assert {"1", "5", "10", "100"} <= set(prop["AR@AN"]) and prop["AR@AN"]["100"] == 1.0
    assert 0.0 <= prop["AUC"] <= 1.0
    code, out, _ = _run(["--gt", str(gt), "--pred", str(pred), "--protocol", "activitynet", "--task", "proposal"],
                        capsys)
    assert code == 0 and "AUC (%)" in out


def test_bad_prediction_line_exits_2_naming_file_and_line(thumos_dir, tmp_path, capsys):
    pred = tmp_path / "bad.txt"
    pred.write_text("video_test_0000324 49.2 53.5 7 0.9\nvideo_test_0000324 49.2 53.5 7\n")
    code, out, err = _run(["--gt", str(thumos_dir / "annotations_test"), "--pred", str(pred),
                           "--protocol", "thumos", "--json"], capsys)
    assert code == 2 and out == ""
    assert f"{pred}:2:" in err


@pytest.mark.parametrize("argv_tail,needle", [
    (["--tiou", "0.3,abc"], "--tiou"),
    (["--tiou", "1.5"], "--tiou"),
    (["--subset", "training"], "no video in subset"),
])
def test_bad_options_exit_2(tmp_path, capsys, argv_tail, needle):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"v": {"subset": "validation", "annotations": []}}}))
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"results": {}}))
    code, _, err = _run(["--gt", str(gt), "--pred", str(pred), "--protocol", "activitynet", *argv_tail], capsys)
    assert code == 2 and needle in err


def test_missing_ground_truth_exits_2(tmp_path, capsys):
    code, _, err = _run(["--gt", str(tmp_path / "nope.json"), "--pred", str(tmp_path / "p.json"),
                         "--protocol", "thumos"], capsys)
    assert code == 2 and "nope.json" in err


def test_tiou_range_syntax_matches_linspace():
    import numpy as np
    assert eval_cmd.parse_tiou("0.5:0.05:0.95").tolist() == np.linspace(0.5, 0.95, 10).tolist()
    assert eval_cmd.parse_tiou("0.3,0.7").tolist() == [0.3, 0.7]
