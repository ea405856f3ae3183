"""Pre-extracted snippet features on disk: one ``.npy`` per video plus metadata.

Layout of a feature directory::

    features.json        extraction settings shared by all videos
    <video>.npy          float32 [T, C], row i = snippet i
    <video>.json         per-video metadata: fps, num_frames, num_snippets

With fps, sigma and the frame count stored, snippet index <-> seconds is never
guessed: snippet i covers [i*sigma/fps, (i+1)*sigma/fps). A video counts as
extracted only when both its files exist; each is written to a temporary name
and renamed, so an interrupted extraction never leaves a half-written file.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "menet-features-1"
SETTINGS_FILE = "features.json"


class FeatureError(ValueError):
    """A feature file is missing or does not fit; the message names video and file."""


@dataclass
class FeatureSettings:
    """How the features of a directory were made (``features.json``)."""

    backbone: str
    feature_kind: str  # "movement+total" (MFE, 2C') or "total" (C', Base ablation)
    feature_dim: int
    sigma: int
    clip_length: int
    crop: list[int]
    resize_short: int
    config: str = ""
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VideoFeatureMeta:
    video: str
    fps: float
    num_frames: int
    num_snippets: int
    source: str = ""

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- settings
    def write_settings(self, settings: FeatureSettings) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / SETTINGS_FILE
        if path.exists():
            current = self.settings()
            if asdict(current) != asdict(settings):
                raise FeatureError(f"{path}: this directory holds features made with other settings "
                                   f"({asdict(current)}); use another --out or remove it")
            return
        atomic_write_json(path, asdict(settings))

    def settings(self) -> FeatureSettings:
        path = self.root / SETTINGS_FILE
        if not path.is_file():
            raise FeatureError(f"{path}: missing (not a feature directory made by `menet extract`?)")
        try:
            data = json.loads(path.read_text())
            return FeatureSettings(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise FeatureError(f"{path}: invalid feature settings ({exc})") from exc

    # ---------------------------------------------------------------- videos
    def paths(self, video: str) -> tuple[Path, Path]:
        return self.root / f"{video}.npy", self.root / f"{video}.json"

    def has(self, video: str) -> bool:
        npy, meta = self.paths(video)
        return npy.is_file() and meta.is_file()

    def videos(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json") if p.name != SETTINGS_FILE and self.has(p.stem))

    def write(self, meta: VideoFeatureMeta, features: np.ndarray) -> None:
        npy, meta_path = self.paths(meta.video)
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.shape[0] != meta.num_snippets:
            raise FeatureError(f"{meta.video}: {features.shape[0]} feature rows for {meta.num_snippets} snippets")
        import io
        buf = io.BytesIO()
        np.save(buf, features, allow_pickle=False)
        atomic_write_bytes(npy, buf.getvalue())
        atomic_write_json(meta_path, asdict(meta))  # last: its presence marks the video done

    def meta(self, video: str) -> VideoFeatureMeta:
        _, path = self.paths(video)
        if not path.is_file():
            raise FeatureError(f"video {video!r}: feature metadata {path} is missing (run `menet extract`)")
        try:
            return VideoFeatureMeta(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise FeatureError(f"video {video!r}: {path}: invalid metadata ({exc})") from exc

    def load(self, video: str, expected_dim: int | None = None) -> tuple[np.ndarray, VideoFeatureMeta]:
        """Features [T, C] and metadata of ``video``.

        MFE features are [F_movement, F_total]; a config that expects only C'
        (the Base ablation, ``model.movement: false``) gets the F_total half, so
        the ablation runs on the very same extraction.
        """
        npy, _ = self.paths(video)
        meta = self.meta(video)
        if not npy.is_file():
            raise FeatureError(f"video {video!r}: feature file {npy} is missing")
        try:
            feats = np.load(npy, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FeatureError(f"video {video!r}: {npy}: unreadable ({exc})") from exc
        if feats.ndim != 2:
            raise FeatureError(f"video {video!r}: {npy}: expected [T, C] features, got shape {feats.shape}")
        if expected_dim is not None and feats.shape[1] == 2 * expected_dim and \
                self.settings().feature_kind == "movement+total":
            feats = feats[:, expected_dim:]
        if expected_dim is not None and feats.shape[1] != expected_dim:
            raise FeatureError(f"video {video!r}: {npy}: feature dimension {feats.shape[1]}, "
                               f"the config expects {expected_dim}")
        if feats.shape[0] != meta.num_snippets:
            raise FeatureError(f"video {video!r}: {npy}: {feats.shape[0]} rows but metadata says "
                               f"{meta.num_snippets} snippets")
        if not np.isfinite(feats).all():
            raise FeatureError(f"video {video!r}: {npy}: contains NaN or inf")
        return feats, meta
