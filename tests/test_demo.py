"""`menet demo`: the bundled checkpoint and the whole online pipeline on a synthetic live camera."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint
from stream.settings import load_config
from stream.demo import BUNDLED_CHECKPOINT, DemoReport, format_report, runtime_lines, score


needs_bundle = pytest.mark.skipif(
    not BUNDLED_CHECKPOINT.is_file(),
    reason=f"no bundled checkpoint at {BUNDLED_CHECKPOINT} yet (it is produced by benchmarks/train_synthetic.py; "
           "the demo issue ships it)")


@needs_bundle
def test_bundled_checkpoint_fits_the_stream_config() -> None:
    assert BUNDLED_CHECKPOINT.stat().st_size < 10 * 1024 * 1024
    ckpt = load_checkpoint(BUNDLED_CHECKPOINT, expect=load_config("stream"))
    assert ckpt.class_names == ["sway", "bounce", "spin", "orbit", "pulse"]
    assert ckpt.backbone is not None  # the pretrained tiny backbone travels with the detector


def test_scoring_of_a_perfect_and_an_empty_run() -> None:
    truth = [(1.0, 3.0, "sway"), (10.0, 20.0, "spin")]
    perfect = DemoReport(truth, events=[{"start": s, "end": e, "label": lab, "score": 0.9} for s, e, lab in truth])
    score(perfect)
    assert perfect.average_mAP == pytest.approx(1.0) and [m[2] for m in perfect.matched] == [1.0, 1.0]
    empty = DemoReport(truth)
    score(empty)
    assert empty.average_mAP == 0.0 and empty.matched[0][1] is None


def test_the_summary_counts_false_events() -> None:
    truth = [(1.0, 3.0, "sway"), (10.0, 20.0, "spin")]
    events = [{"start": 1.0, "end": 3.0, "label": "sway", "score": 0.9},   # true
              {"start": 1.0, "end": 3.0, "label": "spin", "score": 0.6},   # right place, wrong label
              {"start": 30.0, "end": 40.0, "label": "spin", "score": 0.8},  # nothing there
              {"start": 10.0, "end": 13.0, "label": "spin", "score": 0.1}]  # tIoU 0.3
    report = DemoReport(truth, events=events)
    score(report)
    assert [e["score"] for e in report.false_events] == [0.8, 0.6, 0.1]
    assert [e["score"] for e in report.confident_false_events()] == [0.8, 0.6]
    text = format_report(report)
    assert ("false events (finals matching no true action: same label, tIoU >= 0.5): 3 of 4; 2 score >= 0.5 "
            "(highest: spin 30.00-40.00 s, score 0.800)") in text


def test_the_summary_says_where_the_network_ran() -> None:
    log = ("2026-12-02 INFO stream.supervisor: starting\n"
           "menet run: engine_dir auto: ONNX graphs from the cache, /home/u/.cache/menet/engines/tiny-1-ab\n"
           "menet run: runtime backend onnxruntime (engine directory /home/u/.cache/menet/engines/tiny-1-ab)\n"
           "menet run: --hop must be in 1..128, got 0\n")
    lines = runtime_lines(log)
    assert lines == ["engine_dir auto: ONNX graphs from the cache, /home/u/.cache/menet/engines/tiny-1-ab",
                     "runtime backend onnxruntime (engine directory /home/u/.cache/menet/engines/tiny-1-ab)"]
    report = DemoReport([(1.0, 3.0, "sway")], runtime=lines)
    score(report)
    assert "  menet run: runtime backend onnxruntime (engine directory" in format_report(report)


@needs_bundle
@pytest.mark.slow
def test_demo_finds_the_actions(tmp_path: Path, repo_root: Path) -> None:
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "stream", "demo", "--json", str(out)],
                          cwd=repo_root, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "event " in proc.stdout and "summary" in proc.stdout
    summary = json.loads(out.read_text())
    assert summary["events"] > 0 and summary["dropped_snippets"] == 0
    # the trained checkpoint finds and labels the synthetic actions: 0.36 measured on this video with
    # the shipped checkpoint (2 of its 3 actions; 0.67 with the previous one, which found its 4-s
    # `spin` but scored 25 points lower on the 80 validation videos, docs/results.md); a random
    # checkpoint scores ~0. Half of the measured figure leaves room for timing-dependent batching.
    assert summary["mAP@0.5"] >= 0.17
    assert any(line.startswith("runtime backend ") for line in summary["runtime"])  # it says what ran
    assert "menet run: runtime backend " in proc.stdout
    assert summary["false_events"] >= summary["false_events_above_0.5"] >= 0 and "false events" in proc.stdout
    assert summary["lost_messages"] == 0


@pytest.mark.slow
def test_demo_runs_the_pipeline_with_a_given_checkpoint(tmp_path: Path, repo_root: Path) -> None:
    """The whole path (synthetic live camera -> menet run -> subscriber -> summary) with a random checkpoint."""
    import torch
    from engine.checkpoint import Checkpoint, save_checkpoint
    from engine.model.menet import MENet

    cfg = load_config("stream")
    torch.manual_seed(0)
    model = MENet(cfg, load_backbone_weights=False)
    ckpt = save_path = tmp_path / "random.pt"  # noqa: F841
    save_checkpoint(save_path, Checkpoint(cfg, list(cfg.data.class_names), model.detector.state_dict(),
                                          model.mfe.backbone.state_dict(), epoch=0))
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "stream", "demo", "--seconds", "12", "--checkpoint", str(ckpt),
                           "--json", str(out)], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["events"] > 0 and summary["dropped_snippets"] == 0
    assert summary["compute_latency_p50_s"] >= 0 and "summary" in proc.stdout
    # every true action of the stream is accounted for (the stream ran to its end: nothing censored)
    delay = summary["detection_delay"]
    assert delay["actions"] == summary["true_actions"] and delay["censored"] == 0
    assert "detection delay (an action's last frame captured" in proc.stdout
