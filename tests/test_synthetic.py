"""Tests of the synthetic movement-submergence benchmark (synth/generator.py, menet synth)."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from synth import (
    CLASS_LIBRARY,
    Action,
    DatasetConfig,
    SyntheticVideo,
    VideoSpec,
    class_names,
    count_video_frames,
    dataset_specs,
    generate_dataset,
    random_spec,
    scale_histogram,
)
from stream.commands import synth as synth_cmd

# Tiny dataset parameters: short, small videos keep the writing tests well under a second each.
TINY = dict(width=64, height=48, fps=10.0, duration_range=(6.0, 8.0))


def _quiet(spec: VideoSpec) -> VideoSpec:
    return replace(spec, sensor_noise=0.0, jitter_px=0.0, flicker=0.0)


# ------------------------------------------------------------------------- frames
def test_frames_are_deterministic_and_random_access() -> None:
    spec = random_spec(np.random.default_rng(3))
    a, b = SyntheticVideo(spec), SyntheticVideo(spec)
    order = [17, 0, spec.num_frames - 1, 17, 5]
    for i in order:
        fa, fb = a.frame(i), b.frame(i)
        assert fa.shape == (spec.height, spec.width, 3) and fa.dtype == np.uint8
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.frame(17), next(x for k, x in enumerate(b) if k == 17))
    other = SyntheticVideo(replace(spec, seed=spec.seed + 1))
    assert not np.array_equal(a.frame(0), other.frame(0))  # seed changes the scene
    with pytest.raises(IndexError):
        a.frame(spec.num_frames)


def test_noise_makes_consecutive_static_frames_differ() -> None:
    spec = VideoSpec(seed=1, num_frames=20, actions=[(1.0, 2.0, "sway")], fps=10.0)
    video = SyntheticVideo(spec)
    diff = np.abs(video.frame(1).astype(int) - video.frame(2).astype(int))
    assert diff.mean() > 1.0  # camera noise is everywhere, also outside actions


# ------------------------------------------------------------------------ movement
@pytest.mark.parametrize("label", [s.name for s in CLASS_LIBRARY])
def test_movement_only_inside_segments(label: str) -> None:
    fps = 10.0
    spec = VideoSpec(seed=7, num_frames=80, fps=fps, actions=[(2.0, 4.5, label)],
                     distractors=[n for n in class_names(8) if n != label][:2],
                     sensor_noise=0, jitter_px=0, flicker=0)
    video = SyntheticVideo(spec)
    frames = np.stack(list(video)).astype(np.int32)
    energy = np.abs(np.diff(frames, axis=0)).sum(axis=(1, 2, 3))  # energy[i]: frame i -> i+1
    start, end = 20, 45
    inside = energy[start:end - 1]  # pairs with both frames inside the segment
    outside = np.concatenate([energy[:start - 1], energy[end:]])
    assert np.all(outside == 0), "object moved outside the annotated segment"
    assert np.mean(inside > 0) > 0.9 and inside.mean() > 100
    # The class object is on screen, at rest, before and after the action (pure context).
    np.testing.assert_array_equal(frames[0], frames[-1])


def test_static_context_present_outside_actions() -> None:
    spec = _quiet(VideoSpec(seed=2, num_frames=60, fps=10.0, actions=[(3.0, 4.0, "pulse")]))
    video = SyntheticVideo(spec)
    empty = SyntheticVideo(replace(spec, actions=()))  # same seed, no object at all
    diff = np.abs(video.frame(0).astype(int) - empty.frame(0).astype(int)).max(axis=2)
    frac = np.mean(diff > 30)
    assert 0.01 < frac < 0.2  # the object covers a context-sized part of the frame


def test_classes_are_distinguishable_by_motion() -> None:
    # Mean absolute displacement pattern differs between classes: compare the motion
    # energy maps of two classes placed at the same layout.
    maps = {}
    for label in ("sway", "bounce"):
        spec = _quiet(VideoSpec(seed=4, num_frames=40, fps=10.0, actions=[(0.0, 4.0, label)]))
        frames = np.stack(list(SyntheticVideo(spec))).astype(np.float32).mean(axis=3)
        d = np.abs(np.diff(frames, axis=0)).sum(axis=0)
        ys, xs = np.nonzero(d > d.max() * 0.2)
        maps[label] = (np.ptp(xs), np.ptp(ys))
    assert maps["sway"][0] > maps["sway"][1]  # horizontal spread
    assert maps["bounce"][1] > maps["bounce"][0]  # vertical spread


# -------------------------------------------------------------------------- specs
def test_spec_constraints_and_scale_spread() -> None:
    config = DatasetConfig(seed=11)
    scales = []
    labels = set()
    for _, spec in dataset_specs(300, config):
        spec.validate()
        frames = sorted(spec.action_frames())
        assert 1 <= len(frames) <= config.max_actions
        for start, end, label in frames:
            assert 0 <= start < end <= spec.num_frames
            scales.append((end - start) / spec.num_frames)
            labels.add(label)
        for (_, prev_end, _), (start, _, _) in zip(frames, frames[1:]):
            assert start - prev_end >= round(config.min_gap_s * spec.fps)  # background gap
        for a in spec.actions:  # boundaries on the frame grid
            assert abs(a.start_s * spec.fps - round(a.start_s * spec.fps)) < 1e-6
        assert 20.0 - 1 / spec.fps <= spec.duration_s <= 40.0 + 1 / spec.fps
        assert not set(spec.distractors) & {a.label for a in spec.actions}
    scales_arr = np.array(scales)
    assert scales_arr.min() >= 0.02 - 1e-9 and scales_arr.max() <= 0.8 + 1e-9
    assert scales_arr.min() < 0.03 and scales_arr.max() > 0.6
    hist = scale_histogram(scales)
    assert all(count > 0 for _, _, count, _ in hist[1:])  # every scale bin is populated
    assert labels == set(class_names(5))


def test_spec_accepts_plain_tuples_and_rejects_overlap() -> None:
    spec = VideoSpec(seed=0, num_frames=50, fps=10.0, actions=[(0.0, 1.0, "sway"), [2.0, 3.0, "spin"]])
    assert spec.actions[1] == Action(2.0, 3.0, "spin")
    assert list(spec.frame_labels(class_names(5))[[0, 9, 10, 20, 29, 30]]) == [0, 0, -1, 2, 2, -1]
    with pytest.raises(ValueError, match="overlaps"):
        SyntheticVideo(VideoSpec(seed=0, num_frames=50, fps=10.0, actions=[(0.0, 2.0, "sway"), (1.0, 3.0, "spin")]))
    with pytest.raises(ValueError, match="unknown class"):
        SyntheticVideo(VideoSpec(seed=0, num_frames=50, actions=[(0.0, 1.0, "juggling")]))


# ------------------------------------------------------------------------ dataset
def test_dataset_written_readable_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    summary = generate_dataset(a, num_videos=4, seed=5, val_fraction=0.25, **TINY)
    generate_dataset(b, num_videos=4, seed=5, val_fraction=0.25, **TINY)
    assert summary.generated == 4 and summary.skipped == 0

    ann = json.loads((a / "annotations.json").read_text())
    assert ann == json.loads((b / "annotations.json").read_text())
    assert ann["version"] == "menet-synth-1" and ann["taxonomy"] == class_names(5)
    assert (a / "classes.txt").read_text().split() == class_names(5)
    split = json.loads((a / "split.json").read_text())
    assert len(split["validation"]) == 1 and len(split["training"]) == 3
    assert sorted(split["training"] + split["validation"]) == sorted(ann["database"])

    for name, entry in ann["database"].items():
        assert entry["subset"] == ("validation" if name in split["validation"] else "training")
        assert entry["resolution"] == "64x48" and entry["fps"] == 10.0
        n = round(entry["duration"] * entry["fps"])
        path = a / "videos" / f"{name}.mp4"
        assert count_video_frames(path, 64, 48) == n
        cap = cv2.VideoCapture(str(path))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == n
        cap.release()
        for seg in entry["annotations"]:
            assert 0 <= seg["segment"][0] < seg["segment"][1] <= entry["duration"]
            assert seg["label"] in ann["taxonomy"]
    # Same seed: byte-identical frames (decode both files).
    name = next(iter(ann["database"]))
    ca, cb = cv2.VideoCapture(str(a / "videos" / f"{name}.mp4")), cv2.VideoCapture(str(b / "videos" / f"{name}.mp4"))
    for _ in range(5):
        np.testing.assert_array_equal(ca.read()[1], cb.read()[1])
    # The decoded video resembles the live renderer (lossy codec: loose bound).
    spec = dict(dataset_specs(4, DatasetConfig(seed=5, **TINY)))[name]
    ok, decoded = cv2.VideoCapture(str(a / "videos" / f"{name}.mp4")).read()
    assert ok and np.abs(decoded.astype(int) - SyntheticVideo(spec).frame(0).astype(int)).mean() < 8
    assert not (a / ".partial").exists()


def test_resume_skips_complete_and_regenerates_damaged(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_dataset(out, num_videos=3, seed=1, **TINY)
    videos = sorted((out / "videos").glob("*.mp4"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in videos}

    again = generate_dataset(out, num_videos=3, seed=1, **TINY)
    assert (again.generated, again.skipped) == (0, 3)
    assert {p.name: p.stat().st_mtime_ns for p in videos} == mtimes

    # Truncate one file, fill another with garbage, delete a third.
    data = videos[0].read_bytes()
    videos[0].write_bytes(data[: len(data) // 2])
    videos[1].write_bytes(b"not a video" * 100)
    videos[2].unlink()
    (out / "annotations.json").unlink()
    fixed = generate_dataset(out, num_videos=3, seed=1, **TINY)
    assert (fixed.generated, fixed.skipped) == (3, 0)
    specs = dict(dataset_specs(3, DatasetConfig(seed=1, **TINY)))
    for p in videos:
        assert count_video_frames(p, 64, 48) == specs[p.stem].num_frames
    assert (out / "annotations.json").exists()

    # Extending the dataset keeps the existing videos.
    more = generate_dataset(out, num_videos=4, seed=1, **TINY)
    assert (more.generated, more.skipped) == (1, 3)

    # Different content parameters in the same directory are refused, not mixed.
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(out, num_videos=3, seed=2, **TINY)


# ---------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="menet")
    synth_cmd.add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_cli_run_tiny_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = _parser().parse_args(["synth", "--out", str(out), "--num-videos", "2", "--seed", "3",
                                 "--size", "64x48", "--fps", "10", "--duration-range", "6,8",
                                 "--num-classes", "3", "--val-fraction", "0.5"])
    assert args.func is synth_cmd.run
    assert synth_cmd.run(args) == 0
    text = capsys.readouterr().out
    assert "wrote 2 videos" in text and "actions:" in text and "scale" in text
    ann = json.loads((out / "annotations.json").read_text())
    assert ann["taxonomy"] == class_names(3) and len(ann["database"]) == 2
    assert len(list((out / "videos").glob("*.mp4"))) == 2


def test_cli_few_short_actions_leave_idle_stretches(tmp_path: Path) -> None:
    # --max-actions and --scale-range: one short action per long video, the rest of the scene idle
    out = tmp_path / "idle"
    args = _parser().parse_args(["synth", "--out", str(out), "--num-videos", "3", "--seed", "4",
                                 "--size", "32x32", "--fps", "10", "--duration-range", "20,24",
                                 "--max-actions", "1", "--scale-range", "0.05,0.1", "--val-fraction", "0",
                                 "--name-prefix", "idle_"])
    assert synth_cmd.run(args) == 0
    ann = json.loads((out / "annotations.json").read_text())["database"]
    assert sorted(ann) == ["idle_00000", "idle_00001", "idle_00002"]  # names apart from the benchmark's
    assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) == sorted(ann)
    for video in ann.values():
        assert len(video["annotations"]) == 1
        start, end = video["annotations"][0]["segment"]
        assert 0.05 * video["duration"] - 0.1 <= end - start <= 0.1 * video["duration"] + 0.1
    params = json.loads((out / "generator.json").read_text())
    assert params["max_actions"] == 1 and params["name_prefix"] == "idle_"
    # the default prefix is not written: datasets generated before the option still resume
    assert "name_prefix" not in DatasetConfig().to_json()


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--size", "128"], "--size"),
        (["--size", "33x32"], "--size"),
        (["--duration-range", "40,20"], "--duration-range"),
        (["--duration-range", "abc"], "--duration-range"),
        (["--num-classes", "9"], "--num-classes"),
        (["--val-fraction", "1"], "--val-fraction"),
        (["--num-videos", "0"], "--num-videos"),
        (["--fps", "0"], "--fps"),
        (["--max-actions", "0"], "--max-actions"),
        (["--scale-range", "0.5,0.2"], "--scale-range"),
        (["--scale-range", "0.1,1.5"], "--scale-range"),
        (["--scale-range", "x"], "--scale-range"),
        (["--name-prefix", "../x"], "--name-prefix"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str) -> None:
    args = _parser().parse_args(["synth", "--out", str(tmp_path / "x"), *argv])
    assert synth_cmd.run(args) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on bad input


def test_cli_help_and_argparse_type_errors(capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["synth", "--out", "d", "--num-videos", "many"])
    assert exc.value.code == 2 and "--num-videos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["synth", "--help"])
    assert exc.value.code == 0 and "movement" in capsys.readouterr().out
