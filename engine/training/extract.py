"""Offline feature extraction: videos -> MFE snippet features (``menet extract``).

Frames are decoded with OpenCV, preprocessed with the shared
:class:`~engine.model.preprocess.Preprocess`, grouped into clips by the shared
:class:`~engine.snippets.SnippetAssembler`, and run through the MFE in batches.

Without pretrained weights the backbone is randomly initialised from the config's
seed, and whatever backbone was used is saved next to the features
(``backbone.pt``, tensors only): training copies it into its checkpoint so the
online engine computes exactly the features the detector was trained on, and a
resumed extraction reuses it.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..config import MENetConfig
from ..features import FeatureError, FeatureSettings, FeatureStore, VideoFeatureMeta
from ..model.backbone import build_backbone
from ..model.mfe import MovementFeatureExtractor
from ..model.preprocess import Preprocess, to_clip_tensor
from ..model.weights import init_backbone, load_backbone_weights, read_state_dict
from ..snippets import SnippetAssembler, num_snippets

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpeg", ".mpg", ".m4v")
BACKBONE_FILE = "backbone.pt"


class VideoReadError(RuntimeError):
    """A video cannot be opened or decoded; the message names the file."""


def list_videos(source: str | Path) -> list[Path]:
    """A folder (its video files), a ``.txt`` list (one path per line, relative to it), or one video."""
    source = Path(source)
    if source.is_dir():
        videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise FileNotFoundError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)})")
        return videos
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.suffix.lower() in (".txt", ".lst", ".list"):
        videos = []
        for n, line in enumerate(source.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path = Path(line) if Path(line).is_absolute() else source.parent / line
            if not path.is_file():
                raise FileNotFoundError(f"{source}:{n}: video not found: {line}")
            videos.append(path)
        return videos
    return [source]


def read_frames(path: Path) -> tuple[float, Iterator[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoReadError(f"{path}: cannot open video")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or not math.isfinite(fps) or fps <= 0:
        cap.release()
        raise VideoReadError(f"{path}: the container reports no frame rate")

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return float(fps), frames()


def build_extractor(cfg: MENetConfig, store: FeatureStore) -> MovementFeatureExtractor:
    """The MFE used for a feature directory: its saved backbone if any, else the config's."""
    backbone = build_backbone(cfg.model.backbone)
    saved = store.root / BACKBONE_FILE
    if saved.is_file():
        load_backbone_weights(backbone, read_state_dict(saved), source=str(saved))
    else:
        if cfg.model.backbone_weights is None:
            torch.manual_seed(cfg.train.seed)  # a reproducible random backbone
            backbone = build_backbone(cfg.model.backbone)
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            init_backbone(backbone, cfg.model.backbone_weights)
        store.root.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_name(f".{saved.name}.tmp")
        torch.save(backbone.state_dict(), tmp)
        tmp.replace(saved)
    return MovementFeatureExtractor(backbone, cfg.model.movement).eval()


def feature_settings(cfg: MENetConfig, mfe: MovementFeatureExtractor) -> FeatureSettings:
    return FeatureSettings(
        backbone=cfg.model.backbone, feature_kind="movement+total" if cfg.model.movement else "total",
        feature_dim=mfe.out_channels, sigma=cfg.data.sigma, clip_length=cfg.data.clip_length,
        crop=list(cfg.data.crop), resize_short=cfg.data.resize_short, config=cfg.name)


@torch.no_grad()
def extract_video(path: Path, mfe: MovementFeatureExtractor, cfg: MENetConfig, batch_size: int = 16,
                  device: str = "cpu") -> tuple[np.ndarray, VideoFeatureMeta]:
    fps, frames = read_frames(path)
    pre = Preprocess.of(cfg.data)
    assembler = SnippetAssembler(cfg.data.sigma, cfg.data.clip_length)
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            clips = to_clip_tensor(np.stack(pending)).to(device)
            out.append(mfe(clips).float().cpu().numpy())
            pending.clear()

    for frame in frames:
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise VideoReadError(f"{path}: frame {assembler.frames_received} has shape {frame.shape}")
        for clip in assembler.push(pre.frame(frame)):
            pending.append(clip.frames)
            if len(pending) >= batch_size:
                flush()
    for clip in assembler.finish():
        pending.append(clip.frames)
    flush()
    n_frames = assembler.frames_received
    if n_frames == 0:
        raise VideoReadError(f"{path}: no frame could be decoded")
    feats = np.concatenate(out)
    meta = VideoFeatureMeta(path.stem, fps, n_frames, num_snippets(n_frames, cfg.data.sigma), str(path))
    return feats, meta


@dataclass
class ExtractSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def extract_videos(videos: list[Path], cfg: MENetConfig, out_dir: Path, batch_size: int = 16,
                   device: str = "cpu", progress: bool = True) -> ExtractSummary:
    """Extract every video not already in ``out_dir``; a bad video is reported, not fatal."""
    from tqdm import tqdm

    store = FeatureStore(out_dir)
    names = [v.stem for v in videos]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise FeatureError(f"several videos share the name(s) {dupes}: features are stored by name")
    mfe = build_extractor(cfg, store).to(device)
    store.write_settings(feature_settings(cfg, mfe))
    summary = ExtractSummary()
    bar = tqdm(videos, desc="extract", unit="video", disable=not progress)
    for path in bar:
        if store.has(path.stem):
            summary.skipped.append(path.stem)
            continue
        bar.set_postfix_str(path.name)
        try:
            feats, meta = extract_video(path, mfe, cfg, batch_size, device)
        except VideoReadError as exc:
            log.error("%s", exc)
            summary.failed[path.stem] = str(exc)
            continue
        store.write(meta, feats)
        summary.done.append(path.stem)
    return summary
