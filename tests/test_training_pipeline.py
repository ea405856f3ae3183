"""Features on disk, snippet grouping, extraction, datasets, checkpoints and training end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint
from engine.config import load_config
from engine.features import FeatureError, FeatureStore, VideoFeatureMeta
from engine.snippets import SnippetAssembler, iter_snippet_clips, lookahead_frames, num_snippets
from engine.synthetic import generate_dataset
from engine.training.dataset import AnnotationError, WindowDataset
from engine.training.extract import extract_videos, list_videos
from engine.training.trainer import train
from small_configs import small_config_text

SMALL_TRAIN = """train:
  batch_size: 4
  epochs: 3
  generalization_epochs: 1
  lr_decay_epoch: 2
  lr: 3.0e-3
"""


@pytest.fixture(scope="module")
def small_cfg_path(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(small_config_text("small", SMALL_TRAIN))
    return path


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, small_cfg_path: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root / "synth", num_videos=5, seed=3, width=48, height=48, fps=10.0,
                     duration_range=(8.0, 12.0), num_classes=5, val_fraction=0.4)
    cfg = load_config(small_cfg_path)
    summary = extract_videos(list_videos(root / "synth" / "videos"), cfg, root / "feats", batch_size=8,
                             progress=False)
    assert len(summary.done) == 5 and not summary.failed
    return {"root": root, "videos": root / "synth" / "videos", "ann": root / "synth" / "annotations.json",
            "feats": root / "feats"}


# ---------------------------------------------------------------- snippets


def test_snippet_assembler_matches_offline_clip_indices() -> None:
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(23)]
    clips = list(iter_snippet_clips(frames, sigma=5, clip_length=8))
    assert [c.index for c in clips] == list(range(num_snippets(23, 5))) == [0, 1, 2, 3, 4]
    # snippet 1: frames 5..9, centre 7.5 -> clip 3..10
    assert [int(f[0, 0, 0]) for f in clips[1].frames] == list(range(3, 11))
    # the last (partial) snippet's clip is clamped to the last frame
    assert int(clips[-1].frames[-1][0, 0, 0]) == 22


def test_snippet_assembler_emits_as_soon_as_possible_and_bounds_memory() -> None:
    asm = SnippetAssembler(sigma=5, clip_length=8)
    emitted_after = {}
    for i in range(200):
        for clip in asm.push(np.zeros((1, 1, 3), np.uint8)):
            emitted_after[clip.index] = i
        assert len(asm._frames) <= 8 + 5  # never more than one clip plus a snippet buffered
    # snippet k: clip of 8 centred at 5k + 2.5 starts at floor(5k - 1.5) = 5k - 2, ends at 5k + 5,
    # one frame past the snippet's own last frame 5k + 4
    assert emitted_after[0] == 5 and emitted_after[10] == 55
    assert lookahead_frames(5, 8) == 1


# ---------------------------------------------------------------- feature store


def test_feature_store_errors_name_video_and_file(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.write(VideoFeatureMeta("v1", 25.0, 100, 4, "v1.mp4"), np.zeros((4, 8), np.float32))
    feats, meta = store.load("v1", expected_dim=8)
    assert feats.shape == (4, 8) and meta.duration == 4.0
    with pytest.raises(FeatureError, match=r"video 'v1': .*v1.npy: feature dimension 8, the config expects 16"):
        store.load("v1", expected_dim=16)
    with pytest.raises(FeatureError, match=r"video 'v2': feature metadata .*v2.json is missing"):
        store.load("v2")
    np.save(tmp_path / "v1.npy", np.full((4, 8), np.nan, np.float32))
    with pytest.raises(FeatureError, match="NaN"):
        store.load("v1")
    with pytest.raises(FeatureError, match="4 feature rows for 5 snippets"):
        store.write(VideoFeatureMeta("v3", 25.0, 100, 5), np.zeros((4, 8)))
    assert not (tmp_path / "v3.npy").exists() and store.videos() == ["v1"]


# ---------------------------------------------------------------- extraction


def test_extraction_is_resumable_and_complete(small_data: dict[str, Path], small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    store = FeatureStore(small_data["feats"])
    assert len(store.videos()) == 5
    feats, meta = store.load("synth_00000", expected_dim=cfg.feature_channels)
    assert meta.fps == 10.0 and feats.shape == (num_snippets(meta.num_frames, 4), 128)
    before = feats.copy()
    (small_data["feats"] / "synth_00001.json").unlink()  # as if interrupted before the video finished
    summary = extract_videos(list_videos(small_data["videos"]), cfg, small_data["feats"], progress=False)
    assert summary.done == ["synth_00001"] and len(summary.skipped) == 4
    # the resumed run used the saved backbone: same features as before
    np.testing.assert_array_equal(store.load("synth_00000")[0], before)


def test_extraction_reports_a_corrupt_video_and_goes_on(tmp_path: Path, small_data: dict[str, Path],
                                                        small_cfg_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    good = small_data["videos"] / "synth_00000.mp4"
    summary = extract_videos([bad, good], load_config(small_cfg_path), tmp_path / "f", progress=False)
    assert summary.done == ["synth_00000"]
    assert "broken" in summary.failed and "broken.mp4" in summary.failed["broken"]


def test_list_videos_from_list_file(tmp_path: Path, small_data: dict[str, Path]) -> None:
    lst = tmp_path / "list.txt"
    lst.write_text(f"# my videos\n{small_data['videos'] / 'synth_00000.mp4'}\nmissing.mp4\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:3: video not found: missing.mp4"):
        list_videos(lst)


# ---------------------------------------------------------------- dataset


def test_dataset_windows_and_targets(small_data: dict[str, Path], small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    ds = WindowDataset(cfg, small_data["feats"], small_data["ann"], "training", training=True)
    ann = json.loads(small_data["ann"].read_text())["database"]
    train_videos = sorted(v for v, e in ann.items() if e["subset"] == "training")
    assert ds.videos == train_videos and len(ds) >= len(train_videos)
    x, targets, _ = ds[0]
    assert x.shape == (128, 32) and len(targets) == 3
    s = ds.samples[0]
    assert s.seconds_per_snippet == pytest.approx(0.4)  # sigma 4 at 10 fps
    # every kept segment lies in the window, in snippet units
    for sample in ds.samples:
        assert (sample.segments >= 0).all() and (sample.segments <= 32).all()
        assert len(sample.segments) > 0  # training windows hold an action
    # a segment from the annotation file maps to snippets through fps and sigma
    first = ann[s.video]["annotations"][0]["segment"]
    assert s.segments[0, 0] == pytest.approx(first[0] / 0.4 - s.start)


def test_dataset_activitynet_mode_resizes(small_data: dict[str, Path], small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    cfg.data.mode = "activitynet"
    ds = WindowDataset(cfg, small_data["feats"], small_data["ann"], "training", training=True)
    assert len(ds) == len(ds.videos)
    x, _, _ = ds[0]
    assert x.shape == (128, 32)


def test_dataset_segment_outside_video_names_video_and_file(tmp_path: Path, small_data: dict[str, Path],
                                                            small_cfg_path: Path) -> None:
    ann = json.loads(small_data["ann"].read_text())
    video = sorted(ann["database"])[0]
    ann["database"][video]["annotations"][0]["segment"] = [5.0, 500.0]
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps(ann))
    with pytest.raises(AnnotationError, match=rf"ann.json: video '{video}': segment \[5.0, 500.0\] is outside"):
        WindowDataset(load_config(small_cfg_path), small_data["feats"], bad, None, training=True)


def test_dataset_wrong_feature_dimension(small_data: dict[str, Path], small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    cfg.model.backbone = "r2plus1d_18"  # expects 1024-d
    with pytest.raises(FeatureError, match=r"features are 128-d .* expects 1024-d"):
        WindowDataset(cfg, small_data["feats"], small_data["ann"], "training", training=True)


def test_base_ablation_reads_the_total_half_of_mfe_features(small_data: dict[str, Path],
                                                            small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    full = WindowDataset(cfg, small_data["feats"], small_data["ann"], "training", training=True)
    cfg.model.movement = False  # the Base model of Table 5: F_total only
    base = WindowDataset(cfg, small_data["feats"], small_data["ann"], "training", training=True)
    x_full, x_base = full[0][0], base[0][0]
    assert x_base.shape == (64, 32)
    assert torch.equal(x_base, x_full[64:])


# ---------------------------------------------------------------- training


def test_training_lowers_the_loss_and_resumes(tmp_path: Path, small_data: dict[str, Path],
                                              small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    cfg.train.epochs = 2
    out = tmp_path / "run"
    first = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)
    assert [h["epoch"] for h in first.history] == [0, 1]
    assert [h["stage"] for h in first.history] == ["generalization", "specialization"]
    # resume: a longer run continues after epoch 1 instead of starting over
    cfg.train.epochs = 5
    second = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)
    assert [h["epoch"] for h in second.history] == [0, 1, 2, 3, 4]
    assert second.history[:2] == first.history
    losses = [h["train"]["total"] for h in second.history]
    assert losses[-1] < losses[0]
    assert all("average_mAP" in h["val_map"] for h in second.history)
    assert [h["lr"] for h in second.history] == [3e-3, 3e-3, 1e-4, 1e-4, 1e-4]
    ckpt = load_checkpoint(second.last_path, expect=cfg)
    assert ckpt.epoch == 4 and ckpt.class_names == ["sway", "bounce", "spin", "orbit", "pulse"]
    assert ckpt.backbone is not None and "stem.0.weight" in ckpt.backbone
    assert ckpt.versions["torch"] == torch.__version__


def test_checkpoint_refuses_other_config(tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path) -> None:
    cfg = load_config(small_cfg_path)
    cfg.train.epochs = 1
    res = train(cfg, small_data["feats"], small_data["ann"], tmp_path / "r", progress=False,
                validate_map=False, num_threads=2)
    other = load_config(small_cfg_path)
    other.model.channels = 24
    with pytest.raises(CheckpointError, match=r"model.channels: checkpoint 16 vs config 24"):
        load_checkpoint(res.last_path, expect=other)
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="junk.pt: not a tensors-only MENet checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


# ---------------------------------------------------------------- menet train / infer / eval


def test_cli_train_infer_eval_round_trip(tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    from stream.cli import main
    out = tmp_path / "run"
    assert main(["train", "--config", str(small_cfg_path), "--features", str(small_data["feats"]),
                 "--annotations", str(small_data["ann"]), "--out", str(out), "--epochs", "1",
                 "--no-progress", "--no-val-map", "--threads", "2"]) == 0
    ckpt = out / "best.pt"
    pred_json, pred_txt = tmp_path / "pred.json", tmp_path / "pred.txt"
    common = ["infer", "--checkpoint", str(ckpt), "--features", str(small_data["feats"])]
    assert main(common + ["--annotations", str(small_data["ann"]), "--subset", "validation",
                          "--out", str(pred_json)]) == 0
    results = json.loads(pred_json.read_text())["results"]
    ann = json.loads(small_data["ann"].read_text())["database"]
    assert sorted(results) == sorted(v for v, e in ann.items() if e["subset"] == "validation")
    entry = next(iter(results.values()))[0]
    assert entry["label"] in ["sway", "bounce", "spin", "orbit", "pulse"] and len(entry["segment"]) == 2
    assert main(common + ["--out", str(pred_txt)]) == 0
    lines = pred_txt.read_text().splitlines()
    assert len({line.split()[0] for line in lines}) == 5  # every extracted video
    capsys.readouterr()
    assert main(["eval", "--gt", str(small_data["ann"]), "--pred", str(pred_json), "--protocol", "activitynet",
                 "--subset", "validation", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["average_mAP"] <= 1.0 and len(report["mAP"]) == 10

    # external video-level scores: every detection takes one of the video's top-k classes
    scores = {"results": {v: {"sway": 0.9, "spin": 0.5, "pulse": 0.1} for v in results}}
    (tmp_path / "scores.json").write_text(json.dumps(scores))
    fused = tmp_path / "fused.json"
    assert main(common + ["--annotations", str(small_data["ann"]), "--subset", "validation",
                          "--labels", "external", "--video-scores", str(tmp_path / "scores.json"),
                          "--top-k", "2", "--out", str(fused)]) == 0
    labels = {d["label"] for dets in json.loads(fused.read_text())["results"].values() for d in dets}
    assert labels == {"sway", "spin"}

    # a checkpoint run against a config it was not trained with is refused, naming the key
    capsys.readouterr()
    assert main(common + ["--config", "tiny", "--out", str(pred_json)]) == 2
    assert "data.sigma: checkpoint 4 vs config 8" in capsys.readouterr().err


def test_pretrain_backbone_saves_loadable_weights_used_by_extract(tmp_path: Path, small_data: dict[str, Path],
                                                                 small_cfg_path: Path) -> None:
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.model.backbone import build_backbone
    from engine.model.weights import load_backbone_weights, read_state_dict
    from engine.training.pretrain import pretrain_backbone

    cfg = load_config(small_cfg_path)
    gt = load_ground_truth(small_data["ann"]).select("training")
    videos = [p for p in list_videos(small_data["videos"]) if p.stem in gt.videos]
    out = tmp_path / "bb.pt"
    stats = pretrain_backbone(cfg, videos, gt, cfg.data.class_names, out, steps=8, batch_size=4, progress=False)
    assert np.isfinite(stats["loss"])
    state = read_state_dict(out)
    assert not any(k.startswith("fc.") for k in state)
    load_backbone_weights(build_backbone(cfg.model.backbone), state)  # strict
    # extraction with model.backbone_weights uses exactly these weights
    cfg.model.backbone_weights = str(out)
    extract_videos(videos[:1], cfg, tmp_path / "f", progress=False)
    saved = read_state_dict(tmp_path / "f" / "backbone.pt")
    assert all(torch.equal(saved[k], state[k]) for k in state)


@pytest.mark.slow
def test_distributed_training_with_torchrun_on_cpu(tmp_path: Path, small_data: dict[str, Path],
                                                    small_cfg_path: Path, repo_root: Path) -> None:
    """Two gloo processes: DDP wraps the detector, rank 0 alone writes the checkpoint."""
    import subprocess
    import sys
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "stream", "train", "--config", str(small_cfg_path), "--features", str(small_data["feats"]),
           "--annotations", str(small_data["ann"]), "--out", str(out), "--epochs", "2", "--no-progress",
           "--no-val-map", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.epoch == 1 and len(json.loads((out / "history.json").read_text())) == 2
