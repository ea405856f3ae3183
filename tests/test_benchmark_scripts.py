"""Every benchmark script must at least parse its command line (``--help`` exits 0), and every
script with a ``--quick`` smoke mode must run it to the end.

Benchmarks are run by hand, rarely; this keeps an import, argparse or API error (a renamed
class, a moved module) from sitting unnoticed until someone needs the numbers. ``--help``
alone does not catch the lazy imports inside a benchmark's functions; ``--quick`` runs the
whole code path on small inputs.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO_ROOT / "benchmarks").glob("*.py"))
# peer_actionformer.py --quick creates a separate venv (pip installs torch and the peer) and
# trains the peer: not a unit test. --help only.
NO_QUICK = {"peer_actionformer.py"}
# a script has a quick mode when it declares the flag; found from the source so that a new
# quick mode is tested without editing this file
QUICK = [s for s in SCRIPTS if '"--quick"' in s.read_text() and s.name not in NO_QUICK]
# what a finished quick run prints (its result table), per script
QUICK_OUTPUT = {
    "bench_backends.py": ["| tiny | MFE (per snippet) | 2 |", "| tiny | SFPN + boundaries (per window) | 2 |"],
    "bench_decode.py": ["tiny       max_pairs=2048", "tiny       max_pairs=None"],
    "bench_soft_nms.py": ["gaussian    300", "bmn    600"],
    "bench_protocol.py": ["| snippet |", "| window |", "| event |"],
    "bench_delay.py": ["| hop | guard (s) | delay p50 / p95 (s) |", "| 8 | 1 |"],
    "replay_delay.py": ["min_score 0: delay p50", "messages per camera"],
    "decoding_study.py": ["| variant | seeds |", "| no pair cap (every candidate pair, as the paper) | 0 |",
                          "| hop = window / 4 (75 % overlap) | 0 |"],
    "missed_actions.py": ["| subset | short actions missed | longer actions missed |", "| training |",
                          "| validation |", "| actions | n | anchor tIoU | P_s | P_e | cls | reg | movement contrast |",
                          "missed by every one of the 2 checkpoints:"],
    "ablation_seeds.py": ["window-shift", "validation average_mAP:", "long label_accuracy:", "| variant | seeds |"],
    "bench_transport.py": ["| ipc |", "| tcp |", "| MFE, batch 1 |", "| MREM | window |",
                           "| decode (sparse anchors, random weights) |", "| merge + Soft-NMS"],
}
# quick runs over ~20 s on a CI CPU (bench_delay: one 12-s live camera through `menet run`, ~25 s;
# ablation_seeds: two 1-epoch trainings, one after the other, and their segment classifiers, ~60 s)
SLOW_QUICK: set[str] = {"bench_delay.py", "ablation_seeds.py"}


def _run(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _failure(script: Path, flag: str, proc: subprocess.CompletedProcess[str]) -> str:
    return (f"{script.name} {flag} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")


def test_benchmark_scripts_found() -> None:
    assert SCRIPTS, "no benchmarks/*.py found"
    # the discovery by source text must keep finding the quick modes that exist
    assert set(QUICK_OUTPUT) <= {s.name for s in QUICK}, "a benchmark lost its --quick mode"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_benchmark_help(script: Path) -> None:
    proc = _run(script, "--help", timeout=60)
    assert proc.returncode == 0, _failure(script, "--help", proc)
    assert "usage" in proc.stdout.lower(), f"{script.name} --help printed no usage:\n{proc.stdout[-2000:]}"


@pytest.mark.parametrize("script", [pytest.param(s, id=s.name, marks=[pytest.mark.slow] if s.name in SLOW_QUICK
                                                 else []) for s in QUICK])
def test_benchmark_quick(script: Path) -> None:
    proc = _run(script, "--quick", timeout=300)
    assert proc.returncode == 0, _failure(script, "--quick", proc)
    assert "Traceback" not in proc.stderr, _failure(script, "--quick", proc)
    for text in QUICK_OUTPUT.get(script.name, []):
        assert text in proc.stdout, f"{script.name} --quick did not print {text!r}:\n{proc.stdout[-3000:]}"


def test_short_actions_sorts_each_short_action_by_its_best_detection(tmp_path: Path) -> None:
    """benchmarks/short_actions.py: found / imprecise / wrong label / missed, long actions left out."""
    import json
    gt = {"database": {"v": {"subset": "validation", "duration": 60.0, "annotations": [
        {"segment": [1.0, 3.0], "label": "a"},     # found: same label, tIoU 0.8
        {"segment": [10.0, 12.0], "label": "a"},   # imprecise: same label, tIoU 0.6
        {"segment": [20.0, 22.0], "label": "b"},   # wrong label: only an `a` overlaps it
        {"segment": [30.0, 32.0], "label": "b"},   # wrong label too: its `b` is off, an `a` is on it
        {"segment": [35.0, 37.0], "label": "b"},   # missed: nothing there
        {"segment": [40.0, 50.0], "label": "a"},   # long: not counted
    ]}}}
    preds = {"results": {"v": [
        {"segment": [1.0, 2.6], "label": "a", "score": 0.9},
        {"segment": [10.0, 11.2], "label": "a", "score": 0.9},
        {"segment": [20.0, 22.0], "label": "a", "score": 0.9},
        {"segment": [31.5, 34.0], "label": "b", "score": 0.9},
        {"segment": [30.0, 32.0], "label": "a", "score": 0.1},  # another label at tIoU 1: not "missed"
    ]}}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "p.json").write_text(json.dumps(preds))
    out = tmp_path / "short.json"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "short_actions.py"), "--annotations",
                          str(tmp_path / "gt.json"), "--subset", "validation", "--pred", f"m={tmp_path / 'p.json'}",
                          "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "5 actions shorter than 3 s" in run.stdout and "| m | 1 | 1 | 2 | 1 |" in run.stdout
    assert json.loads(out.read_text())["systems"]["m"] == {"found": 1, "imprecise": 1, "wrong label": 2, "missed": 1}


def test_score_predictions_separates_localisation_from_labels(tmp_path: Path) -> None:
    """benchmarks/score_predictions.py: exact segments with every label swapped score 0 labelled,
    100 class-agnostic, 0 % labels right; the true labels score 100 on all three."""
    import json
    gt = {"database": {"v": {"subset": "validation", "duration": 60.0, "annotations": [
        {"segment": [1.0, 5.0], "label": "a"}, {"segment": [20.0, 30.0], "label": "b"}]}}}
    right = [{"segment": [1.0, 5.0], "label": "a", "score": 0.9}, {"segment": [20.0, 30.0], "label": "b", "score": 0.8}]
    swapped = [{**r, "label": "b" if r["label"] == "a" else "a"} for r in right]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "right.json").write_text(json.dumps({"results": {"v": right}}))
    (tmp_path / "swapped.json").write_text(json.dumps({"results": {"v": swapped}}))
    out = tmp_path / "scores.json"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "score_predictions.py"), "--annotations",
                          str(tmp_path / "gt.json"), "--subset", "validation",
                          "--pred", f"right={tmp_path / 'right.json'}", "--pred", f"swapped={tmp_path / 'swapped.json'}",
                          "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    scores = json.loads(out.read_text())
    assert scores["right"]["average_mAP"] == 100 and scores["right"]["labels_right_pct"] == 100
    assert scores["swapped"]["average_mAP"] == 0 and scores["swapped"]["labels_right_pct"] == 0
    assert scores["swapped"]["agnostic_average_mAP"] == 100 and scores["swapped"]["labels_found"] == 2
    assert "| swapped | 0.0 |" in run.stdout


def test_backbone_probe_tells_features_that_carry_the_classes_from_noise(tmp_path: Path) -> None:
    """benchmarks/backbone_probe.py: features that encode each snippet's class score near 100 on
    held-out training videos, pure noise near chance (1 / 3 for two classes and background)."""
    import json
    import numpy as np
    from engine.features import FeatureSettings, FeatureStore, VideoFeatureMeta

    rng = np.random.default_rng(0)
    database: dict = {}
    stores = {"informative": FeatureStore(tmp_path / "informative"), "noise": FeatureStore(tmp_path / "noise")}
    for store in stores.values():
        store.write_settings(FeatureSettings("tiny", "movement+total", 16, 8, 8, [56, 56], 64))
    for v in range(24):
        name, label = f"v{v:02d}", "ab"[v % 2]
        start = float(rng.integers(5, 20))
        database[name] = {"subset": "training", "duration": 40.0,
                          "annotations": [{"segment": [start, start + 10.0], "label": label}]}
        classes = np.full(40, 2)
        classes[int(start):int(start) + 10] = v % 2  # one snippet per second: sigma 8 at 8 fps
        noise = rng.standard_normal((40, 16)).astype(np.float32)
        meta = VideoFeatureMeta(name, 8.0, 320, 40)
        stores["informative"].write(meta, noise + 4.0 * np.eye(16, dtype=np.float32)[classes])
        stores["noise"].write(meta, noise)
    (tmp_path / "ann.json").write_text(json.dumps({"database": database}))
    out = tmp_path / "probe.json"
    run = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "backbone_probe.py"), "--annotations",
                          str(tmp_path / "ann.json"), "--held-out", "6", "--context", "1",
                          "--features", f"informative={tmp_path / 'informative'}",
                          "--features", f"noise={tmp_path / 'noise'}", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["informative"]["held_out_training"]["balanced"] > 95
    assert report["informative"]["held_out_training"]["action_class"] > 95
    assert report["noise"]["held_out_training"]["balanced"] < 50
    assert report["noise"]["held_out_training"]["snippets"] == 6 * 40
    assert "| informative | held_out_training |" in run.stdout
