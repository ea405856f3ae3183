"""Training/validation windows on pre-extracted features (paper sec. 4.1).

Annotations: an ActivityNet-format JSON or a THUMOS annotation folder (loaded by
:func:`engine.evaluation.ground_truth.load_ground_truth`, the same reader the
evaluators use). Features: a :class:`engine.features.FeatureStore`.

* THUMOS mode: each video's snippet sequence is cut into windows of
  ``data.window`` with ``data.window_overlap`` (the layout of
  :func:`engine.postprocess.windows.window_starts`, shared with inference).
  A ground truth is kept in a window, clipped to it, when at least
  ``KEEP_FRACTION`` of its length lies inside (choice: the paper does not say;
  BMN/G-TAD keep near-complete instances so a truncated action is not taught as
  a boundary). Training keeps only windows with at least one kept instance
  (as BMN/G-TAD do on THUMOS); validation keeps every window.
* ActivityNet mode: the whole video's features are linearly interpolated to
  ``data.window`` = T snippets, and segments are scaled by T / duration.

Targets (labels of sec. 3.5) are computed once per window and cached.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import MENetConfig
from ..evaluation.ground_truth import GroundTruth, load_ground_truth
from ..features import FeatureError, FeatureStore, VideoFeatureMeta
from ..postprocess.windows import window_starts
from .labels import LevelTargets, assign_window

KEEP_FRACTION = 0.75
# Annotations may overshoot the decoded length a little (rounded durations, a
# dropped last frame); more than this is an error rather than silently clipped.
OVERSHOOT_TOLERANCE_S = 1.0


class AnnotationError(ValueError):
    """An annotation does not fit its video; the message names the video and the file."""


@dataclass
class WindowSample:
    video: str
    start: int  # first snippet of the window in the video (0 in ActivityNet mode)
    valid: int  # real snippets in the window (the rest is padding)
    seconds_per_snippet: float
    segments: np.ndarray  # [G, 2] window snippet units
    labels: np.ndarray  # [G] class ids


def class_names_for(cfg: MENetConfig, gt: GroundTruth) -> list[str]:
    names = cfg.data.class_names or sorted(gt.classes)
    if len(names) != cfg.data.num_classes:
        raise AnnotationError(f"{gt.source}: {len(names)} classes {names[:5]}... but the config "
                              f"({cfg.source}) says data.num_classes = {cfg.data.num_classes}")
    unknown = sorted(set(gt.classes) - set(names))
    if unknown:
        raise AnnotationError(f"{gt.source}: labels {unknown} are not in data.class_names of {cfg.source}")
    return list(names)


class WindowDataset(Dataset):
    def __init__(self, cfg: MENetConfig, features: str | FeatureStore, annotations: str | GroundTruth,
                 subset: str | None, training: bool, class_names: list[str] | None = None) -> None:
        self.cfg = cfg
        self.store = features if isinstance(features, FeatureStore) else FeatureStore(features)
        gt = annotations if isinstance(annotations, GroundTruth) else load_ground_truth(annotations)
        self.gt = gt.select(subset) if subset else gt
        self.class_names = class_names or class_names_for(cfg, gt)
        self.class_index = {n: i for i, n in enumerate(self.class_names)}
        settings = self.store.settings()
        base_of_mfe = settings.feature_kind == "movement+total" and settings.feature_dim == 2 * cfg.feature_channels
        if settings.feature_dim != cfg.feature_channels and not base_of_mfe:
            raise FeatureError(f"{self.store.root}: features are {settings.feature_dim}-d "
                               f"({settings.backbone}, {settings.feature_kind}); {cfg.source} expects "
                               f"{cfg.feature_channels}-d")
        if settings.sigma != cfg.data.sigma:
            raise FeatureError(f"{self.store.root}: features use sigma {settings.sigma}, "
                               f"{cfg.source} says data.sigma {cfg.data.sigma}")
        self.videos = sorted(self.gt.videos)
        self._features: dict[str, np.ndarray] = {}
        self._meta: dict[str, VideoFeatureMeta] = {}
        self.samples: list[WindowSample] = []
        for video in self.videos:
            feats, meta = self.store.load(video, expected_dim=cfg.feature_channels)
            self._features[video], self._meta[video] = feats, meta
            self.samples.extend(self._windows(video, feats.shape[0], meta, training))
        self._targets: dict[int, list[LevelTargets]] = {}

    # ------------------------------------------------------------ layout
    def _segments(self, video: str, meta: VideoFeatureMeta) -> tuple[np.ndarray, np.ndarray]:
        mask = self.gt.inst_videos == video
        starts, ends = self.gt.inst_starts[mask], self.gt.inst_ends[mask]
        labels = np.array([self.class_index[x] for x in self.gt.inst_labels[mask]], dtype=np.int64)
        duration = meta.duration
        for s, e in zip(starts, ends):
            if s < 0 or e <= s or s >= duration or e > duration + OVERSHOOT_TOLERANCE_S:
                raise AnnotationError(f"{self.gt.source}: video {video!r}: segment [{s}, {e}] is outside the "
                                      f"video (0 to {duration:.2f} s per {self.store.paths(video)[1]})")
        return np.stack([starts, np.minimum(ends, duration)], axis=1).reshape(-1, 2), labels

    def _windows(self, video: str, length: int, meta: VideoFeatureMeta, training: bool) -> list[WindowSample]:
        d = self.cfg.data
        segs_s, labels = self._segments(video, meta)
        if d.mode == "activitynet":
            sps = meta.duration / d.window
            return [WindowSample(video, 0, d.window, sps, segs_s / sps, labels)]
        sps = d.sigma / meta.fps
        segs = segs_s / sps
        out = []
        for start in window_starts(length, d.window, d.window_overlap):
            lo, hi = np.clip(segs[:, 0] - start, 0, d.window), np.clip(segs[:, 1] - start, 0, d.window)
            inside = (hi - lo) >= KEEP_FRACTION * (segs[:, 1] - segs[:, 0])
            keep = inside & (hi > lo)
            if training and not keep.any():
                continue
            out.append(WindowSample(video, start, min(d.window, length - start), sps,
                                    np.stack([lo[keep], hi[keep]], axis=1), labels[keep]))
        return out

    # ------------------------------------------------------------ access
    def window_features(self, sample: WindowSample) -> torch.Tensor:
        """[C, window] features of one window (padded with zeros past the video end)."""
        feats = torch.from_numpy(self._features[sample.video])
        d = self.cfg.data
        if d.mode == "activitynet":
            # linear interpolation of the whole video to T (paper sec. 4.1)
            return F.interpolate(feats.T[None], size=d.window, mode="linear", align_corners=False)[0]
        window = feats[sample.start:sample.start + d.window].T
        if window.shape[1] < d.window:
            window = F.pad(window, (0, d.window - window.shape[1]))
        return window.contiguous()

    def targets(self, index: int) -> list[LevelTargets]:
        if index not in self._targets:
            s = self.samples[index]
            self._targets[index] = assign_window(
                s.segments, s.labels, self.cfg.level_lengths(), self.cfg.max_durations(),
                self.cfg.data.num_classes, self.cfg.train.positive_iou, window=self.cfg.data.window)
        return self._targets[index]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[LevelTargets], int]:
        return self.window_features(self.samples[index]), self.targets(index), index


def collate(batch: list[tuple[torch.Tensor, list[LevelTargets], int]]):
    feats = torch.stack([b[0] for b in batch])
    return feats, [b[1] for b in batch], [b[2] for b in batch]
