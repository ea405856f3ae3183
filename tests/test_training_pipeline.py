"""Features on disk, snippet grouping, extraction, datasets, checkpoints and training end to end."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint
from stream.settings import load_config
from engine.evaluation.ground_truth import ground_truth_from_annotations, load_ground_truth
from engine.features import FeatureError, FeatureSettings, FeatureStore, VideoFeatureMeta
from engine.snippets import SnippetAssembler, iter_snippet_clips, lookahead_frames, num_snippets
from synth import generate_dataset
from engine.training import trainer as trainer_module
from engine.training.dataset import AnnotationError, WindowDataset, window_ground_truth
from engine.training.extract import extract_videos, list_videos
from engine.training.trainer import TrainingDataError, build_optimizer, split_holdout, train
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


def _store(root: Path, videos: dict[str, int], fps: float = 10.0, sigma: int = 4, dim: int = 128) -> FeatureStore:
    """A feature store of zero features: ``videos`` maps name -> snippets (sigma 4 at 10 fps: 0.4 s each)."""
    store = FeatureStore(root)
    store.write_settings(FeatureSettings("tiny", "movement+total", dim, sigma, 4, [32, 32], 36))
    for name, snippets in videos.items():
        store.write(VideoFeatureMeta(name, fps, snippets * sigma, snippets), np.zeros((snippets, dim), np.float32))
    return store


def test_window_gt_rules_on_a_half_inside_ground_truth(tmp_path: Path, small_cfg_path: Path) -> None:
    # window 32 snippets, stride 16: a 48-snippet video has windows at 0 and 16. GT = snippets
    # [24, 40) = [9.6, 16.0] s: half inside window 0, whole inside window 16.
    store = _store(tmp_path, {"v": 48})
    gt = ground_truth_from_annotations([("v", 9.6, 16.0, "spin")], subsets={"v": "training"})
    cfg = load_config(small_cfg_path)
    assert cfg.data.window_gt == "coverage" and cfg.data.window_gt_coverage == 0.75  # the defaults
    cov = WindowDataset(cfg, store, gt, "training", training=False)
    assert [s.start for s in cov.samples] == [0, 16]
    assert cov.samples[0].segments.shape == (0, 2)  # half inside < 75 %: dropped
    np.testing.assert_allclose(cov.samples[1].segments, [[8, 24]])
    assert [s.start for s in WindowDataset(cfg, store, gt, "training", training=True).samples] == [16]
    cfg.data.window_gt = "clip"
    clip = WindowDataset(cfg, store, gt, "training", training=False)
    np.testing.assert_allclose(clip.samples[0].segments, [[24, 32]])  # kept, clipped to the window end
    np.testing.assert_allclose(clip.samples[1].segments, [[8, 24]])
    assert [s.start for s in WindowDataset(cfg, store, gt, "training", training=True).samples] == [0, 16]
    # the coverage fraction is the config's: at 0.5 the half-inside GT is kept
    cfg.data.window_gt, cfg.data.window_gt_coverage = "coverage", 0.5
    np.testing.assert_allclose(WindowDataset(cfg, store, gt, "training", training=False).samples[0].segments,
                               [[24, 32]])


def _ramp_video(root: Path) -> tuple[FeatureStore, object]:
    """A 60-snippet video whose feature at snippet i is i; window 32, GT snippets [36, 44) and [4, 8)."""
    store = FeatureStore(root)
    store.write_settings(FeatureSettings("tiny", "movement+total", 128, 4, 4, [32, 32], 36))
    store.write(VideoFeatureMeta("v", 10.0, 240, 60), np.repeat(np.arange(60, dtype=np.float32)[:, None], 128, 1))
    gt = ground_truth_from_annotations([("v", 1.6, 3.2, "spin"), ("v", 14.4, 17.6, "sway")],
                                       subsets={"v": "training"})
    return store, gt


def test_window_shift_moves_training_windows_into_the_scene(tmp_path: Path, small_cfg_path: Path) -> None:
    store, gt = _ramp_video(tmp_path)
    cfg = load_config(small_cfg_path)
    fixed = WindowDataset(cfg, store, gt, "training", training=True)
    assert cfg.train.window_shift == 0  # the paper's fixed layout stays the default
    assert all(fixed.shifted(i) is None for i in range(len(fixed)))
    cfg.train.window_shift = 20
    ds = WindowDataset(cfg, store, gt, "training", training=True)
    first = ds.samples[0]
    assert first.start == 0
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        feats, targets, index = ds[0]
        start = int(feats[0, 0])  # the features say where the window really starts
        seen.add(start)
        moved = ds.shifted(0)
        assert start == (0 if moved is None else moved.start)
        if moved is not None:
            assert 0 < moved.start <= 20
            # ground truth in the moved window's units: the early action is cut off past snippet 5 (75 %
            # coverage), the late one is kept once 75 % of it is inside, clipped to the window
            expected = [[4 - moved.start, 8 - moved.start]] if moved.start <= 5 else []
            if moved.start >= 10:
                expected.append([36 - moved.start, min(44 - moved.start, 32)])
            np.testing.assert_allclose(np.clip(moved.segments, 0, 32), np.clip(expected, 0, 32))
            assert moved.valid == min(32, 60 - moved.start)
            if moved.valid < 32:
                assert float(feats[0, moved.valid:].abs().sum()) == 0.0  # padded past the video end
        # the same epoch draws the same window again (a resumed run sees the same data)
        again, _, _ = ds[0]
        assert torch.equal(feats, again)
    assert len(seen) > 3  # it does move
    # validation windows never move
    cfg_val = load_config(small_cfg_path)
    cfg_val.train.window_shift = 20
    val = WindowDataset(cfg_val, store, gt, "training", training=False)
    assert all(val.shifted(i) is None for i in range(len(val)))


def test_time_scale_resamples_training_windows(tmp_path: Path, small_cfg_path: Path) -> None:
    store, gt = _ramp_video(tmp_path)
    cfg = load_config(small_cfg_path)
    assert cfg.train.time_scale == 1.0  # off by default: the videos as extracted
    assert all(WindowDataset(cfg, store, gt, "training", training=True).rescaled(i) is None for i in range(2))
    cfg.train.time_scale = 1.5
    ds = WindowDataset(cfg, store, gt, "training", training=True)
    factors = set()
    for epoch in range(10):
        ds.set_epoch(epoch)
        for index, sample in enumerate(ds.samples):
            feats, targets, _ = ds[index]
            scaled = ds.rescaled(index)
            if scaled is None:
                continue
            window, moved = scaled
            assert torch.equal(window, feats)
            factor = sample.seconds_per_snippet / moved.seconds_per_snippet
            assert 1 / 1.5 - 0.02 <= factor <= 1.5 + 0.02
            factors.add(round(factor, 3))
            # the features are the video's, resampled: snippet j of the window shows video time
            # (moved.start + j + 0.5) / factor - 0.5 (linear interpolation, clamped to the video)
            j = np.arange(moved.valid)
            expected = np.clip((moved.start + j + 0.5) / factor - 0.5, 0, 59)
            np.testing.assert_allclose(window[0, :moved.valid].numpy(), expected, atol=1e-3)
            assert float(window[:, moved.valid:].abs().sum()) == 0.0  # padded past the resampled video
            # its ground truth is the video's scaled by the same factor, cut by the window
            for seg in moved.segments:
                video_seg = (seg + moved.start) / factor
                assert any(np.allclose(video_seg, g, atol=1e-6) or (seg[0] == 0 or seg[1] == 32)
                           for g in ([4, 8], [36, 44]))
            assert len(targets) == len(cfg.level_lengths())
            # the same epoch draws the same window again (a resumed run sees the same data)
            assert torch.equal(ds[index][0], feats)
    assert len(factors) > 5  # it does vary
    cfg_val = load_config(small_cfg_path)
    cfg_val.train.time_scale = 1.5
    val = WindowDataset(cfg_val, store, gt, "training", training=False)
    assert all(val.rescaled(i) is None for i in range(len(val)))  # validation windows are never resampled
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {small_cfg_path}\ntrain: {{time_scale: 0.5}}\n")
    with pytest.raises(Exception, match="train.time_scale"):
        load_config(bad)


def test_idle_windows_train_the_detector_that_nothing_is_there(tmp_path: Path, small_cfg_path: Path) -> None:
    from engine.model.menet import TemporalDetector
    from engine.training.losses import menet_loss
    from engine.training.sampler import AnchorSampler
    from engine.training.dataset import collate

    # a 100-snippet scene with one action at snippets [4, 8): windows 0, 16, ..., 68 (window 32)
    store = FeatureStore(tmp_path)
    store.write_settings(FeatureSettings("tiny", "movement+total", 128, 4, 4, [32, 32], 36))
    rng = np.random.default_rng(0)
    store.write(VideoFeatureMeta("v", 10.0, 400, 100), rng.standard_normal((100, 128)).astype(np.float32))
    gt = ground_truth_from_annotations([("v", 1.6, 3.2, "spin")], subsets={"v": "training"})
    cfg = load_config(small_cfg_path)
    assert cfg.train.idle_windows is False  # G-TAD's rule stays the default: windows with an action only
    action_only = WindowDataset(cfg, store, gt, "training", training=True)
    assert [s.start for s in action_only.samples] == [0]
    cfg.train.idle_windows = True
    ds = WindowDataset(cfg, store, gt, "training", training=True)
    idle = [i for i, s in enumerate(ds.samples) if len(s.segments) == 0]
    assert len(ds) > 1 and len(idle) == len(ds) - 1  # every other window of the scene, kept
    # validation windows were always all kept; the option changes training only
    assert len(WindowDataset(cfg, store, gt, "training", training=False)) == len(ds)

    # a batch of idle windows trains: finite loss, every anchor a negative, gradients that move
    # P_s / P_e and IoU-ASP towards "nothing here"
    torch.manual_seed(0)
    model = TemporalDetector(cfg, cfg.feature_channels)
    sampler = AnchorSampler.from_config(cfg, schedule="two-stage")
    feats, targets, _ = collate([ds[i] for i in idle[:2]])
    cells = sampler.sample_levels("generalization", epoch=0, step=0)
    terms = menet_loss(model(feats, cells), targets, cells, cfg.train.lambda1, cfg.train.lambda2,
                       cfg.train.positive_iou, reg_loss=cfg.train.reg_loss)
    assert all(torch.isfinite(v) for v in terms.values())
    assert float(terms["total"].detach()) > 0
    terms["total"].backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    before = model(feats, cells)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(20):
        out = model(feats, cells)
        loss = menet_loss(out, targets, cells, cfg.train.lambda1, cfg.train.lambda2, cfg.train.positive_iou)
        optimizer.zero_grad()
        loss["total"].backward()
        optimizer.step()
    after = model(feats, cells)
    for b, a in zip(before, after):
        assert float(a.start.mean()) < float(b.start.mean())  # P_s falls where nothing starts
        assert float(a.end.mean()) < float(b.end.mean())


def test_window_shift_must_fit_a_window(tmp_path: Path, small_cfg_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"extends: {small_cfg_path}\ntrain: {{window_shift: 999}}\n")
    with pytest.raises(Exception, match="train.window_shift"):
        load_config(bad)


def test_window_ground_truth_function() -> None:
    segs = np.array([[-8.0, 8.0], [4.0, 12.0], [28.0, 30.0], [30.0, 50.0], [40.0, 44.0]])
    clipped, keep = window_ground_truth(segs, 0, 32, "coverage", 0.75)
    assert keep.tolist() == [False, True, True, False, False]
    np.testing.assert_allclose(clipped[:4], [[0, 8], [4, 12], [28, 30], [30, 32]])
    clipped, keep = window_ground_truth(segs, 0, 32, "clip")
    assert keep.tolist() == [True, True, True, True, False]  # any overlap; [40, 44) is outside
    _, keep = window_ground_truth(np.array([[-4.0, 12.0]]), 0, 32, "coverage", 0.75)
    assert keep.tolist() == [True]  # exactly 75 % inside counts
    with pytest.raises(ValueError, match="'coverage' or 'clip'"):
        window_ground_truth(segs, 0, 32, "any")  # type: ignore[arg-type]


def test_dataset_skips_a_video_whose_annotation_overshoots(tmp_path: Path, small_cfg_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    store = _store(tmp_path, {"a": 48, "b": 48, "c": 48})  # 19.2 s each
    gt = ground_truth_from_annotations(
        [("a", 2.0, 6.0, "spin"), ("b", 2.0, 6.0, "sway"), ("b", 8.0, 500.0, "sway"),
         ("c", 10.0, 20.0, "orbit")],  # c ends 0.8 s past the decoded end: tolerated, clipped
        subsets={"a": "training", "b": "training", "c": "training"}, source="ann.json")
    cfg = load_config(small_cfg_path)
    with caplog.at_level(logging.WARNING, logger="engine.training.dataset"):
        ds = WindowDataset(cfg, store, gt, "training", training=True)
    assert ds.videos == ["a", "c"] and "b" not in ds.gt.videos and "b" not in set(ds.gt.inst_videos)
    assert ds.skipped_count == 1 and ds.skipped[0].video == "b"
    assert ds.skipped[0].segment == (8.0, 500.0) and ds.skipped[0].decoded_duration == pytest.approx(19.2)
    assert {s.video for s in ds.samples} == {"a", "c"}
    warnings_ = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_) == 1
    assert "ann.json: skipping video 'b': segment [8, 500] s does not fit the decoded length 19.20 s" \
        in warnings_[0].getMessage()
    assert max(s.segments.max() for s in ds.samples if s.video == "c") <= 32  # clipped at the video end
    # a malformed segment (negative start) is still an error naming the file and video
    bad = ground_truth_from_annotations([("a", -3.0, 6.0, "spin")], subsets={"a": "training"}, source="ann.json")
    with pytest.raises(AnnotationError, match=r"ann.json: video 'a': segment \[-3.0, 6.0\]"):
        WindowDataset(cfg, store, bad, "training", training=True)


def test_dataset_overshoot_in_an_annotation_file_does_not_abort(tmp_path: Path, small_data: dict[str, Path],
                                                                small_cfg_path: Path) -> None:
    ann = json.loads(small_data["ann"].read_text())
    video = sorted(ann["database"])[0]
    ann["database"][video]["annotations"][0]["segment"] = [5.0, 500.0]
    bad = tmp_path / "ann.json"
    bad.write_text(json.dumps(ann))
    ds = WindowDataset(load_config(small_cfg_path), small_data["feats"], bad, None, training=True)
    assert [s.video for s in ds.skipped] == [video] and video not in ds.videos and len(ds.videos) == 4


def test_cli_train_prints_the_skipped_count(tmp_path: Path, small_cfg_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    from stream.cli import main
    _store(tmp_path / "f", {"a": 48, "b": 48})
    ann = {"database": {"a": {"subset": "training", "duration": 19.2,
                              "annotations": [{"segment": [2.0, 6.0], "label": "spin"}]},
                        "b": {"subset": "training", "duration": 19.2,
                              "annotations": [{"segment": [2.0, 60.0], "label": "spin"}]}}}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    capsys.readouterr()
    assert main(["train", "--config", str(small_cfg_path), "--features", str(tmp_path / "f"),
                 "--annotations", str(tmp_path / "ann.json"), "--out", str(tmp_path / "run"), "--epochs", "1",
                 "--val-subset", "", "--no-progress", "--no-val-map", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "annotations: 1 video(s) skipped (a segment past the decoded video): b"
    assert "best: epoch 1, train.selection last" in out


def test_cli_train_on_two_annotation_files_in_one_store(tmp_path: Path, small_cfg_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    # a benchmark plus extra (idle) training videos extracted into the same feature store
    from stream.cli import main
    _store(tmp_path / "f", {"a": 48, "b": 48, "idle_a": 120})
    bench = {"database": {"a": {"subset": "training", "duration": 19.2,
                                "annotations": [{"segment": [2.0, 6.0], "label": "spin"}]},
                          "b": {"subset": "validation", "duration": 19.2,
                                "annotations": [{"segment": [3.0, 8.0], "label": "sway"}]}}}
    extra = {"database": {"idle_a": {"subset": "training", "duration": 48.0,
                                     "annotations": [{"segment": [40.0, 44.0], "label": "pulse"}]}}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    capsys.readouterr()
    assert main(["train", "--config", str(small_cfg_path), "--features", str(tmp_path / "f"),
                 "--annotations", str(tmp_path / "bench.json"), str(tmp_path / "extra.json"),
                 "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress", "--no-val-map",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "training: 2 videos" in out  # a from the benchmark, idle_a from the extra file; b validates
    # the same video in both files: refused, naming the file and the way out
    (tmp_path / "dup.json").write_text(json.dumps({"database": {"a": bench["database"]["a"]}}))
    assert main(["train", "--config", str(small_cfg_path), "--features", str(tmp_path / "f"),
                 "--annotations", str(tmp_path / "bench.json"), str(tmp_path / "dup.json"),
                 "--out", str(tmp_path / "run2"), "--epochs", "1", "--no-progress", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "dup.json: video 'a' is also in" in err and "--name-prefix" in err


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


# ---------------------------------------------------------------- checkpoint selection, optimizer


def _scripted_map(monkeypatch: pytest.MonkeyPatch, holdout: list[float], val: list[float],
                  holdout_videos: list[str] | None = None) -> list[list[str]]:
    """Replace the per-epoch mAP with scripted figures (holdout or validation by the dataset's videos)."""
    calls: list[list[str]] = []
    served = {"holdout": 0, "val": 0}
    real = trainer_module.validation_map

    def fake(model, cfg, dataset, **kwargs):
        calls.append(list(dataset.videos))
        kind = "holdout" if dataset.videos == holdout_videos else "val"
        if kind == "holdout" and served["holdout"] == 0:  # once, the real mAP on the held-out videos
            assert 0.0 <= real(model, cfg, dataset)["average_mAP"] <= 1.0
        served[kind] += 1
        return {"average_mAP": (holdout if kind == "holdout" else val)[served[kind] - 1], "mAP": []}

    monkeypatch.setattr(trainer_module, "validation_map", fake)
    return calls


def test_selection_last_ignores_a_validation_peak_and_weight_decay_reaches_adam(
        tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(small_cfg_path)
    cfg.model.labeller = "anchor"  # the scripted mAP is per epoch; the segment labeller's own test is below
    assert cfg.train.selection == "last"  # the default
    cfg.train.epochs = 2
    _scripted_map(monkeypatch, holdout=[], val=[0.9, 0.1, 0.2])  # validation mAP peaks at epoch 0
    out = tmp_path / "run"
    first = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)
    assert first.best_epoch == 1 and load_checkpoint(first.best_path).epoch == 1
    assert [h["val_map"]["average_mAP"] for h in first.history] == [0.9, 0.1]  # logged, not used
    assert not (out / "holdout.json").exists()
    # resume for a third epoch with weight decay: best.pt follows the last epoch, and the
    # config's decay (not the one stored in the optimizer state) is what Adam uses
    cfg.train.epochs, cfg.train.weight_decay = 3, 1e-3
    second = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)
    assert second.best_epoch == 2 and load_checkpoint(second.best_path).epoch == 2
    assert [h["val_map"]["average_mAP"] for h in second.history] == [0.9, 0.1, 0.2]
    groups = load_checkpoint(second.last_path, with_optimizer=True).optimizer["param_groups"]
    assert groups and all(g["weight_decay"] == 1e-3 for g in groups)
    assert set(second.train_videos) == set(load_ground_truth(small_data["ann"], "training").videos)


def test_build_optimizer_applies_weight_decay() -> None:
    cfg = load_config("tiny")
    for decay, changed in ((0.0, False), (0.1, True)):
        cfg.train.weight_decay = decay
        layer = torch.nn.Linear(2, 2)
        before = layer.weight.detach().clone()
        opt = build_optimizer(cfg, layer)
        assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == decay
        layer.weight.grad, layer.bias.grad = torch.zeros_like(layer.weight), torch.zeros_like(layer.bias)
        opt.step()  # zero loss gradient: only the decay term can move the weights
        assert (not torch.equal(layer.weight, before)) == changed


def test_selection_holdout_picks_the_best_holdout_epoch(tmp_path: Path, small_data: dict[str, Path],
                                                        small_cfg_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(small_cfg_path)
    cfg.train.epochs, cfg.train.selection, cfg.train.holdout_fraction = 3, "holdout", 0.3
    cfg.train.reg_loss = "balanced"  # runs the balanced M_reg loss in a real loop too
    cfg.model.labeller = "anchor"  # the scripted mAP is per epoch; the segment labeller's own test is below
    gt = load_ground_truth(small_data["ann"])
    training, validation = set(gt.select("training").videos), set(gt.select("validation").videos)
    held = split_holdout(gt.select("training"), 0.3, cfg.train.seed)
    assert len(held) == 1 and set(held) < training
    calls = _scripted_map(monkeypatch, holdout=[0.2, 0.7, 0.4], val=[0.9, 0.1, 0.95], holdout_videos=held)
    out = tmp_path / "run"
    res = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)
    assert res.holdout_videos == held
    assert not set(held) & set(res.train_videos) and not set(held) & validation
    assert set(res.train_videos) == training - set(held)
    assert sorted(c for c in calls if c != held) == [sorted(validation)] * 3  # val mAP still logged
    figures = [h["holdout_map"]["average_mAP"] for h in res.history]
    assert figures == [0.2, 0.7, 0.4]
    assert res.best_epoch == int(np.argmax(figures)) == 1 and load_checkpoint(res.best_path).epoch == 1
    assert json.loads((out / "holdout.json").read_text())["videos"] == held
    # switching the selection on resume would select on videos already trained on: refused
    cfg.train.selection, cfg.train.epochs = "last", 4
    with pytest.raises(CheckpointError, match=r"train.selection: checkpoint 'holdout' vs config 'last'"):
        train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=2)


def test_split_holdout_is_deterministic_and_leaves_training_videos() -> None:
    gt = ground_truth_from_annotations([(f"v{i:02d}", 1.0, 2.0, "a") for i in range(20)], videos=["no_actions"],
                                       subsets={f"v{i:02d}": "training" for i in range(20)})
    a = split_holdout(gt, 0.1, seed=0)
    assert a == split_holdout(gt, 0.1, seed=0) and len(a) == 2 and a == sorted(a)
    assert any(split_holdout(gt, 0.1, seed=s) != a for s in range(1, 5))  # the seed draws them
    most = split_holdout(gt, 0.99, seed=0)
    assert len(most) == 19 and "no_actions" not in most  # one annotated video stays for training
    one = ground_truth_from_annotations([("v", 1.0, 2.0, "a")])
    with pytest.raises(TrainingDataError, match="needs at least 2 annotated"):
        split_holdout(one, 0.5, seed=0)


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
    assert stats["final_lr"] == pytest.approx(1e-3)  # the default schedule keeps the rate


def test_pretrain_backbone_cosine_schedule_ends_at_zero_and_unknown_schedule_is_refused(
        tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path) -> None:
    from engine.evaluation.ground_truth import load_ground_truth
    from engine.training.pretrain import pretrain_backbone

    cfg = load_config(small_cfg_path)
    gt = load_ground_truth(small_data["ann"]).select("training")
    videos = [p for p in list_videos(small_data["videos"]) if p.stem in gt.videos]
    stats = pretrain_backbone(cfg, videos, gt, cfg.data.class_names, tmp_path / "bb.pt", steps=4, batch_size=2,
                              progress=False, schedule="cosine")
    assert stats["final_lr"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="schedule 'linear'"):
        pretrain_backbone(cfg, videos, gt, cfg.data.class_names, tmp_path / "bb2.pt", steps=4, batch_size=2,
                          progress=False, schedule="linear")
    assert not (tmp_path / "bb2.pt").exists()


def test_pretrain_augmentation_changes_the_clips_not_which_snippets_are_drawn(small_cfg_path: Path) -> None:
    """--augment must leave the clip draws (and so the recipe's other randomness) as they were."""
    from engine.training.pretrain import DecodedVideo, sample_batch

    cfg = load_config(small_cfg_path)
    k = cfg.data.num_classes
    frames = np.random.default_rng(0).integers(0, 255, (60, 8, 8, 3), dtype=np.uint8)
    videos = [DecodedVideo("a", frames, np.array([k] * 10 + [1] * (60 // cfg.data.sigma - 10)))]
    plain_clips, plain_labels = sample_batch(videos, cfg, 32, np.random.default_rng(5))
    aug_clips, aug_labels = sample_batch(videos, cfg, 32, np.random.default_rng(5),
                                         augment_rng=np.random.default_rng(6))
    assert np.array_equal(plain_labels, aug_labels)
    assert aug_clips.shape == plain_clips.shape and aug_clips.dtype == np.uint8
    assert not np.array_equal(aug_clips, plain_clips)


def test_pretrain_backbone_held_out_videos_are_scored_and_too_many_are_refused(
        tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path, capsys: pytest.CaptureFixture) -> None:
    from engine.training.pretrain import split_held_out
    from stream.cli import main

    paths = [Path(f"v{i}.mp4") for i in range(10)]
    fit, held = split_held_out(paths, 3)
    assert len(held) == 3 and not set(fit) & set(held) and set(fit) | set(held) == set(paths)
    assert split_held_out(list(reversed(paths)), 3) == (fit, held)  # the same videos whatever the order

    common = ["pretrain-backbone", "--config", str(small_cfg_path), "--videos", str(small_data["videos"]),
              "--annotations", str(small_data["ann"]), "--steps", "2", "--batch-size", "2", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "bb.pt"), "--held-out-videos", "1", "--augment"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "bb.pt").is_file()
    assert "held-out videos (1, never pretrained on): snippet accuracy" in out
    # three training videos: holding all of them out leaves nothing to pretrain on
    assert main(common + ["--out", str(tmp_path / "bb2.pt"), "--held-out-videos", "3"]) == 2
    assert "held-out videos 3: must be in [0, 3) for 3 videos" in capsys.readouterr().err
    assert not (tmp_path / "bb2.pt").exists()


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


def test_segment_labeller_trains_after_the_detector_and_converts_old_checkpoints(
        tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path, capsys: pytest.CaptureFixture) -> None:
    from stream.cli import main
    data = ["--features", str(small_data["feats"]), "--annotations", str(small_data["ann"])]
    # `menet train` with model.labeller: segment fits the labeller on the chosen detector
    seg_cfg = tmp_path / "segment.yaml"
    seg_cfg.write_text(f"extends: {small_cfg_path}\nname: segment\nmodel:\n  labeller: segment\n"
                       "train:\n  segment_epochs: 20\n")
    assert main(["train", "--config", str(seg_cfg), *data, "--out", str(tmp_path / "seg"), "--epochs", "1",
                 "--no-progress", "--threads", "1"]) == 0
    ckpt = load_checkpoint(tmp_path / "seg" / "best.pt")
    last = ckpt.history[-1]
    assert ckpt.config.model.labeller == "segment" and len(last["labeller"]) == 20
    assert last["labeller"][-1]["loss"] < last["labeller"][0]["loss"]
    assert last["val_map"]["labels"] == "class-agnostic" and 0 <= last["val_map_labelled"]["average_mAP"] <= 1

    # a checkpoint whose heads label (as every checkpoint before the segment labeller) converts
    anchor_cfg = tmp_path / "anchor.yaml"
    anchor_cfg.write_text(f"extends: {small_cfg_path}\nname: anchor\nmodel:\n  labeller: anchor\n")
    assert main(["train", "--config", str(anchor_cfg), *data, "--out", str(tmp_path / "anchor"), "--epochs", "1",
                 "--no-progress", "--no-val-map", "--threads", "1"]) == 0
    old = load_checkpoint(tmp_path / "anchor" / "best.pt")
    assert old.config.model.labeller == "anchor" and not any(k.startswith("labeller.") for k in old.detector)
    converted = tmp_path / "converted.pt"
    capsys.readouterr()
    assert main(["train-labeller", "--checkpoint", str(tmp_path / "anchor" / "best.pt"), *data,
                 "--out", str(converted), "--epochs", "10"]) == 0
    assert "average mAP with its labels" in capsys.readouterr().out
    new = load_checkpoint(converted)
    assert new.config.model.labeller == "segment"
    assert all(torch.equal(new.detector[k], v) for k, v in old.detector.items())  # localisation untouched
    assert any(k.startswith("labeller.") for k in new.detector)
    pred = tmp_path / "pred.json"
    assert main(["infer", "--checkpoint", str(converted), "--features", str(small_data["feats"]),
                 "--annotations", str(small_data["ann"]), "--subset", "validation", "--out", str(pred)]) == 0
    labels = {d["label"] for dets in json.loads(pred.read_text())["results"].values() for d in dets}
    assert labels and labels <= {"sway", "bounce", "spin", "orbit", "pulse"}
    # --input mfe: a labeller on the MFE features replaces the MREM-output one, the detector untouched
    mfe = tmp_path / "mfe.pt"
    assert main(["train-labeller", "--checkpoint", str(converted), *data, "--out", str(mfe), "--epochs", "10",
                 "--input", "mfe"]) == 0
    relabelled = load_checkpoint(mfe)
    assert relabelled.config.model.segment_input == "mfe"
    assert relabelled.detector["labeller.norm.weight"].shape[0] == 3 * relabelled.config.feature_channels
    assert all(torch.equal(relabelled.detector[k], v) for k, v in old.detector.items())
    assert main(["infer", "--checkpoint", str(mfe), "--features", str(small_data["feats"]),
                 "--annotations", str(small_data["ann"]), "--subset", "validation", "--out", str(pred)]) == 0
    assert {d["label"] for dets in json.loads(pred.read_text())["results"].values() for d in dets}
    # a missing feature folder is a clear error, not a traceback
    assert main(["train-labeller", "--checkpoint", str(converted), "--features", str(tmp_path / "nowhere"),
                 "--annotations", str(small_data["ann"]), "--out", str(converted)]) == 2


def test_ema_weights_are_saved_training_is_unchanged_and_a_run_resumes_exactly(
        tmp_path: Path, small_data: dict[str, Path], small_cfg_path: Path) -> None:
    from engine.training.trainer import EMA_TRAINING_WEIGHTS

    def run(out: Path, epochs: int, ema_decay: float):
        cfg = load_config(small_cfg_path)
        cfg.model.labeller = "anchor"  # the detector alone: the segment labeller is fitted on top of either
        cfg.train.epochs, cfg.train.ema_decay = epochs, ema_decay
        res = train(cfg, small_data["feats"], small_data["ann"], out, progress=False, num_threads=1,
                    validate_map=False)
        return load_checkpoint(res.last_path, with_optimizer=True)

    plain = run(tmp_path / "plain", 2, 0.0)
    averaged = run(tmp_path / "ema", 2, 0.9)
    assert EMA_TRAINING_WEIGHTS not in plain.optimizer
    trained = averaged.optimizer[EMA_TRAINING_WEIGHTS]
    # the average never feeds back: the weights being trained are the plain run's
    for k, v in plain.detector.items():
        assert torch.equal(trained[k], v), k
    # what is saved (and so validated and served) is the average, not the last step
    moved = [k for k, v in averaged.detector.items() if v.is_floating_point() and not torch.equal(v, trained[k])]
    assert moved
    # one epoch, then resumed to two: the same average and the same weights as in one go
    run(tmp_path / "resumed", 1, 0.9)
    resumed = run(tmp_path / "resumed", 2, 0.9)
    for k, v in averaged.detector.items():
        assert torch.allclose(resumed.detector[k], v, atol=1e-6), k
    # switching the average on or off under a run is refused, saying which setting
    with pytest.raises(CheckpointError, match="train.ema_decay"):
        run(tmp_path / "resumed", 3, 0.0)
