"""Training/validation windows on pre-extracted features (paper sec. 4.1).

Annotations: an ActivityNet-format JSON or a THUMOS annotation folder (loaded by
:func:`engine.evaluation.ground_truth.load_ground_truth`, the same reader the
evaluators use). Features: a :class:`engine.features.FeatureStore`.

* THUMOS mode: each video's snippet sequence is cut into windows of
  ``data.window`` with ``data.window_overlap`` (the layout of
  :func:`engine.online.layout.window_starts`, shared with inference).
  Which ground truths a window holds is ``data.window_gt`` (the paper does not
  say; :func:`window_ground_truth`): ``coverage`` keeps those with at least
  ``data.window_gt_coverage`` of their length inside, clipped to the window (so a
  mostly-cut action is not taught as if its cut were a boundary); ``clip`` keeps
  any overlap, clipped (G-TAD). Training keeps only windows with at least one
  kept instance (as BMN/G-TAD do on THUMOS); validation keeps every window.
* ActivityNet mode: the whole video's features are linearly interpolated to
  ``data.window`` = T snippets, and segments are scaled by T / duration.

A video with a segment that does not fit its decoded length (starts at or after
the decoded end, or ends more than ``OVERSHOOT_TOLERANCE_S`` past it: typically a
truncated download, or a known-bad THUMOS/ActivityNet annotation) is skipped with
one WARNING line and listed in :attr:`WindowDataset.skipped`; the build goes on.

Targets (labels of sec. 3.5) are computed once per window and cached.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..config import MENetConfig
from ..evaluation.ground_truth import GroundTruth, load_ground_truth
from ..features import FeatureError, FeatureStore, VideoFeatureMeta
from ..online.layout import window_starts
from .labels import LevelTargets, assign_window

log = logging.getLogger(__name__)

# Annotations may overshoot the decoded length a little (rounded durations, a
# dropped last frame): up to this they are clipped; more skips the video.
OVERSHOOT_TOLERANCE_S = 1.0


class AnnotationError(ValueError):
    """An annotation does not fit its video; the message names the video and the file."""


@dataclass(frozen=True)
class SkippedVideo:
    """A video left out because an annotation does not fit its decoded length."""

    video: str
    segment: tuple[float, float]  # the first segment that does not fit, seconds
    decoded_duration: float  # seconds, from the feature metadata
    bad_segments: int  # how many of the video's segments do not fit

    def describe(self) -> str:
        more = f" (and {self.bad_segments - 1} more)" if self.bad_segments > 1 else ""
        return (f"video {self.video!r}: segment [{self.segment[0]:g}, {self.segment[1]:g}] s{more} does not fit "
                f"the decoded length {self.decoded_duration:.2f} s (tolerance {OVERSHOOT_TOLERANCE_S:g} s)")


@dataclass
class WindowSample:
    video: str
    start: int  # first snippet of the window in the video (0 in ActivityNet mode)
    valid: int  # real snippets in the window (the rest is padding)
    seconds_per_snippet: float
    segments: np.ndarray  # [G, 2] window snippet units
    labels: np.ndarray  # [G] class ids


def window_ground_truth(segments: np.ndarray, start: int, window: int,
                        rule: Literal["coverage", "clip"] = "coverage",
                        coverage: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Ground truths of the window [start, start + window) (``data.window_gt``).

    ``segments``: [G, 2] in video snippet units. Returns (clipped [G, 2] in window
    snippet units, keep mask [G]). Both rules need a positive overlap; ``coverage``
    also needs ``coverage`` of the segment's length inside (the float tolerance
    keeps a segment whose inside share equals ``coverage`` exactly), ``clip`` keeps
    any overlap (G-TAD). The paper does not say which.
    """
    segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    lo = np.clip(segments[:, 0] - start, 0, window)
    hi = np.clip(segments[:, 1] - start, 0, window)
    keep = hi > lo
    if rule == "coverage":
        keep &= (hi - lo) >= coverage * (segments[:, 1] - segments[:, 0]) - 1e-9
    elif rule != "clip":
        raise ValueError(f"window ground-truth rule must be 'coverage' or 'clip', got {rule!r}")
    return np.stack([lo, hi], axis=1), keep


def restrict_videos(gt: GroundTruth, videos: Iterable[str]) -> GroundTruth:
    """``gt`` limited to ``videos`` (their instances and ambiguous segments)."""
    wanted = set(videos)
    keep = np.fromiter((v in wanted for v in gt.inst_videos), bool, len(gt.inst_videos))
    keep_amb = np.fromiter((v in wanted for v in gt.amb_videos), bool, len(gt.amb_videos))
    labels = gt.inst_labels[keep]
    present = set(labels.tolist())
    return replace(gt, videos={v: s for v, s in gt.videos.items() if v in wanted},
                   inst_videos=gt.inst_videos[keep], inst_starts=gt.inst_starts[keep],
                   inst_ends=gt.inst_ends[keep], inst_labels=labels, amb_videos=gt.amb_videos[keep_amb],
                   amb_starts=gt.amb_starts[keep_amb], amb_ends=gt.amb_ends[keep_amb],
                   classes=[c for c in gt.classes if c in present])


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
    """Windows of the videos of ``subset`` (all videos when None).

    ``videos`` limits them further (the trainer's holdout split); ``exclude``
    drops some (the held-out videos from the training set). ``skipped`` lists the
    videos left out because an annotation does not fit the decoded video; they
    are gone from ``videos`` and ``gt`` too, so a validation mAP does not count
    their instances as misses.
    """

    def __init__(self, cfg: MENetConfig, features: str | FeatureStore, annotations: str | GroundTruth,
                 subset: str | None, training: bool, class_names: list[str] | None = None,
                 videos: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.store = features if isinstance(features, FeatureStore) else FeatureStore(features)
        gt = annotations if isinstance(annotations, GroundTruth) else load_ground_truth(annotations)
        selected = gt.select(subset) if subset else gt
        if videos is not None or exclude:
            wanted = set(selected.videos if videos is None else videos) - set(exclude)
            selected = restrict_videos(selected, wanted)
        self.gt = selected
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
        self._features: dict[str, np.ndarray] = {}
        self._meta: dict[str, VideoFeatureMeta] = {}
        self._video_segments: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # snippet units, labels
        self.training = training
        self.epoch = 0  # set by the trainer: the window shifts (train.window_shift) are drawn per epoch
        self.samples: list[WindowSample] = []
        self.skipped: list[SkippedVideo] = []
        for video in sorted(self.gt.videos):
            feats, meta = self.store.load(video, expected_dim=cfg.feature_channels)
            segments = self._segments(video, meta)
            if isinstance(segments, SkippedVideo):
                log.warning("%s: skipping %s per %s", self.gt.source, segments.describe(),
                            self.store.paths(video)[1])
                self.skipped.append(segments)
                continue
            self._features[video], self._meta[video] = feats, meta
            self.samples.extend(self._windows(video, feats.shape[0], meta, segments, training))
        if self.skipped:
            self.gt = restrict_videos(self.gt, set(self.gt.videos) - {s.video for s in self.skipped})
        self.videos = sorted(self.gt.videos)
        self._targets: dict[int, list[LevelTargets]] = {}

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)

    # ------------------------------------------------------------ layout
    def _segments(self, video: str, meta: VideoFeatureMeta) -> tuple[np.ndarray, np.ndarray] | SkippedVideo:
        """(segments [G, 2] seconds clipped to the decoded length, class ids [G]), or why the video is skipped."""
        mask = self.gt.inst_videos == video
        starts, ends = self.gt.inst_starts[mask], self.gt.inst_ends[mask]
        labels = np.array([self.class_index[x] for x in self.gt.inst_labels[mask]], dtype=np.int64)
        duration = meta.duration
        for s, e in zip(starts, ends):
            if s < 0 or e <= s:  # malformed whatever the video: an error, not a skip
                raise AnnotationError(f"{self.gt.source}: video {video!r}: segment [{s}, {e}] is not a "
                                      f"segment with 0 <= start < end")
        # Past the decoded end: the annotation was made on a longer copy of the video; its
        # other segments may be fine, but we cannot tell, so the whole video goes.
        bad = (starts >= duration) | (ends > duration + OVERSHOOT_TOLERANCE_S)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            return SkippedVideo(video, (float(starts[first]), float(ends[first])), float(duration), int(bad.sum()))
        return np.stack([starts, np.minimum(ends, duration)], axis=1).reshape(-1, 2), labels

    def _windows(self, video: str, length: int, meta: VideoFeatureMeta,
                 segments: tuple[np.ndarray, np.ndarray], training: bool) -> list[WindowSample]:
        d = self.cfg.data
        segs_s, labels = segments
        if d.mode == "activitynet":
            sps = meta.duration / d.window
            return [WindowSample(video, 0, d.window, sps, segs_s / sps, labels)]
        sps = d.sigma / meta.fps
        segs = segs_s / sps
        self._video_segments[video] = (segs, labels)
        out = []
        for start in window_starts(length, d.window, d.hop):
            clipped, keep = window_ground_truth(segs, start, d.window, d.window_gt, d.window_gt_coverage)
            if training and not keep.any() and not self.cfg.train.idle_windows:
                continue  # G-TAD's rule: training windows hold an action (train.idle_windows keeps the rest)
            out.append(WindowSample(video, start, min(d.window, length - start), sps, clipped[keep], labels[keep]))
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
                self.cfg.data.num_classes, self.cfg.train.positive_iou, window=self.cfg.data.window,
                best_match=self.cfg.train.best_match)
        return self._targets[index]

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose window shifts ``__getitem__`` draws (``train.window_shift``)."""
        self.epoch = epoch

    def shifted(self, index: int) -> WindowSample | None:
        """Training window ``index`` with its start moved forward by a random 0..window_shift
        snippets, its ground truth re-cut; None when the shift is off, is 0, leaves the video,
        or keeps no ground truth (the window is then used as laid out). The draw depends only
        on (train.seed, epoch, index), so a resumed run sees the same windows."""
        cfg = self.cfg
        if not self.training or cfg.train.window_shift <= 0 or cfg.data.mode == "activitynet":
            return None
        s = self.samples[index]
        rng = np.random.default_rng((cfg.train.seed, self.epoch, index))
        offset = int(rng.integers(0, cfg.train.window_shift + 1))
        length = self._features[s.video].shape[0]
        start = s.start + offset
        if offset == 0 or start >= length:
            return None
        segs, labels = self._video_segments[s.video]
        clipped, keep = window_ground_truth(segs, start, cfg.data.window, cfg.data.window_gt,
                                            cfg.data.window_gt_coverage)
        if not keep.any():
            return None
        return WindowSample(s.video, start, min(cfg.data.window, length - start), s.seconds_per_snippet,
                            clipped[keep], labels[keep])

    def rescaled(self, index: int) -> tuple[torch.Tensor, WindowSample] | None:
        """Training window ``index`` cut from its video resampled in time (``train.time_scale``):
        (features [C, window], the window with its ground truth scaled and re-cut), or None when
        the option is off or the draw keeps no ground truth (the window is then used as laid
        out). The factor is log-uniform in [1 / time_scale, time_scale], drawn from (train.seed,
        epoch, index) like the window shifts; the resampled window keeps the original one's
        centre (clamped into the resampled video) and is not shifted."""
        cfg = self.cfg
        if not self.training or cfg.train.time_scale <= 1.0 or cfg.data.mode == "activitynet":
            return None
        s = self.samples[index]
        rng = np.random.default_rng((cfg.train.seed, self.epoch, index, 1))  # a stream apart from the shifts'
        bound = float(np.log(cfg.train.time_scale))
        feats = torch.from_numpy(self._features[s.video])  # [L, C]
        length = feats.shape[0]
        new_length = max(1, int(round(length * float(np.exp(rng.uniform(-bound, bound))))))
        factor = new_length / length
        w = cfg.data.window
        centre = (s.start + w / 2) * factor
        start = int(min(max(0, round(centre - w / 2)), max(0, new_length - 1)))
        segs, labels = self._video_segments[s.video]
        clipped, keep = window_ground_truth(segs * factor, start, w, cfg.data.window_gt, cfg.data.window_gt_coverage)
        if not keep.any():
            return None
        resampled = F.interpolate(feats.T[None], size=new_length, mode="linear", align_corners=False)[0]
        window = resampled[:, start:start + w]
        if window.shape[1] < w:
            window = F.pad(window, (0, w - window.shape[1]))
        sample = WindowSample(s.video, start, min(w, new_length - start), s.seconds_per_snippet / factor,
                              clipped[keep], labels[keep])
        return window.contiguous(), sample

    def _targets_of(self, sample: WindowSample) -> list[LevelTargets]:
        return assign_window(sample.segments, sample.labels, self.cfg.level_lengths(), self.cfg.max_durations(),
                             self.cfg.data.num_classes, self.cfg.train.positive_iou, window=self.cfg.data.window,
                             best_match=self.cfg.train.best_match)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[LevelTargets], int]:
        scaled = self.rescaled(index)
        if scaled is not None:
            return scaled[0], self._targets_of(scaled[1]), index
        moved = self.shifted(index)
        if moved is None:
            return self.window_features(self.samples[index]), self.targets(index), index
        return self.window_features(moved), self._targets_of(moved), index


def collate(batch: list[tuple[torch.Tensor, list[LevelTargets], int]]):
    feats = torch.stack([b[0] for b in batch])
    return feats, [b[1] for b in batch], [b[2] for b in batch]
