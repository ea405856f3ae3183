"""benchmarks/peer_actionformer.py's data side: scoring an earlier run's peer on another video set
(``--reuse``) keeps that run's class ids; the peer itself (its venv, training) is not run here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ablation_seeds import quick_dataset  # noqa: E402
from peer_actionformer import ALL_SUBSETS, parse_args, peer_config, prepare, reused_run  # noqa: E402

TRAINED_CLASSES = ["bounce", "orbit", "pulse", "spin", "sway"]  # a training run's ids: sorted names


def test_reused_classes_keep_their_ids_and_every_video_is_scored(tmp_path: Path) -> None:
    features, ann = quick_dataset(tmp_path / "set")
    data = prepare(features, ann, tmp_path / "work", None, None, (None, ALL_SUBSETS), TRAINED_CLASSES)
    assert data["videos"] == {ALL_SUBSETS: 16}  # training and validation videos alike
    assert data["labels"] == TRAINED_CLASSES
    database = json.loads(data["json_file"].read_text())["database"]
    source = json.loads(ann.read_text())["database"]
    assert set(database) == set(source)
    for video, item in database.items():
        for mine, theirs in zip(item["annotations"], source[video]["annotations"]):
            assert TRAINED_CLASSES[mine["label_id"]] == theirs["label"] == mine["label"]


def test_a_class_the_reused_peer_never_learned_is_refused(tmp_path: Path) -> None:
    features, ann = quick_dataset(tmp_path / "set")
    with pytest.raises(SystemExit, match=r"labels \['sway'\] were not in the reused peer's training"):
        prepare(features, ann, tmp_path / "work", None, None, (None, ALL_SUBSETS), TRAINED_CLASSES[:4])


def _fake_run(run: Path, classes: list[str], report_classes: list[str]) -> None:
    (run / "data").mkdir(parents=True)
    (run / "ckpt" / "actionformer_peer").mkdir(parents=True)
    (run / "ckpt" / "actionformer_peer" / "epoch_018.pth.tar").write_bytes(b"weights")
    database = {f"v{i}": {"subset": "training", "annotations": [{"label": c, "label_id": i, "segment": [0, 1]}]}
                for i, c in enumerate(classes)}
    (run / "data" / "actionformer.json").write_text(json.dumps({"database": database}))
    (run / "report.json").write_text(json.dumps({"epochs": {"total": 18}, "classes": report_classes}))


def test_reused_run_gives_its_final_checkpoint_and_classes_in_id_order(tmp_path: Path) -> None:
    _fake_run(tmp_path / "run", ["spin", "bounce", "orbit"], ["spin", "bounce", "orbit"])
    ckpt, classes, epochs = reused_run(tmp_path / "run")
    assert classes == ["spin", "bounce", "orbit"] and epochs == 18 and ckpt.name == "epoch_018.pth.tar"
    _fake_run(tmp_path / "bad", ["spin", "bounce"], ["bounce", "spin"])
    with pytest.raises(SystemExit, match="do not match its report's classes"):
        reused_run(tmp_path / "bad")
    with pytest.raises(SystemExit, match="not a finished run of this script"):
        reused_run(tmp_path / "absent")


def test_seed_reaches_the_peer_config_and_its_default_is_the_peers_own(tmp_path: Path) -> None:
    features, ann = quick_dataset(tmp_path / "set")
    data = prepare(features, ann, tmp_path / "work", None, None, ("training", "validation"), None)
    default = peer_config(data, parse_args([]), ("training", "validation"), tmp_path / "ckpt")
    assert "init_rand_seed" not in default  # the reference code's own default seed applies
    seeded = peer_config(data, parse_args(["--seed", "7"]), ("training", "validation"), tmp_path / "ckpt")
    assert seeded["init_rand_seed"] == 7 and seeded["opt"] == default["opt"]
