"""Offline detection on pre-extracted features (``menet infer``, validation mAP).

The same decode -> window merge path as the online detector worker: windows of
the shared layout, :func:`engine.postprocess.decode.decode_window` per window,
:func:`engine.postprocess.windows.merge_video` per video.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postprocess.label_fusion import VideoScores

import numpy as np
import torch

from .checkpoint import Checkpoint
from .config import MENetConfig
from .features import FeatureStore
from .model.menet import TemporalDetector
from .postprocess.decode import decode_window
from .postprocess.windows import Detections, detections_to_results, merge_video, window_starts

ResultsDict = dict[str, list[dict[str, Any]]]


def video_windows(cfg: MENetConfig, feats: np.ndarray, duration: float, fps: float
                  ) -> tuple[list[tuple[int, int, torch.Tensor]], float]:
    """(start, valid, [C, W] features) per window and seconds per snippet."""
    d = cfg.data
    x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
    if d.mode == "activitynet":
        resized = torch.nn.functional.interpolate(x.T[None], size=d.window, mode="linear", align_corners=False)[0]
        return [(0, d.window, resized)], duration / d.window
    out = []
    for start in window_starts(x.shape[0], d.window, d.window_overlap):
        w = x[start:start + d.window].T
        valid = w.shape[1]
        if valid < d.window:
            w = torch.nn.functional.pad(w, (0, d.window - valid))
        out.append((start, valid, w.contiguous()))
    return out, d.sigma / fps


def load_detector(ckpt: Checkpoint, cfg: MENetConfig | None = None) -> TemporalDetector:
    """The checkpoint's detector in eval mode (built for ``cfg`` or the stored config)."""
    cfg = cfg or ckpt.config
    model = TemporalDetector(cfg, cfg.feature_channels)
    model.load_state_dict(ckpt.detector)
    return model.eval()


@torch.no_grad()
def detect_video(model: TemporalDetector, cfg: MENetConfig, feats: np.ndarray, duration: float, fps: float,
                 batch_size: int = 8, top_labels: int | None = None, proposals_only: bool = False) -> Detections:
    windows, sps = video_windows(cfg, feats, duration, fps)
    per_window = []
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        relation = model.relation(torch.stack([w for _, _, w in chunk]))
        levels = model.from_relation(relation)
        for b, (start, valid, _) in enumerate(chunk):
            props = decode_window(levels, model.heads, cfg, batch_index=b, top_labels=top_labels,
                                  valid_length=valid, labeller=model.labeller, relation=relation[b])
            per_window.append((start, props))
    return merge_video(per_window, sps, duration, cfg.inference, proposals_only=proposals_only)


def detect_videos(model: TemporalDetector, cfg: MENetConfig, store: FeatureStore, videos: Iterable[str],
                  class_names: list[str], top_labels: int | None = None,
                  proposals_only: bool = False) -> ResultsDict:
    """``proposals_only``: class-agnostic proposals (eq. 10 without p_label, class-agnostic
    Soft-NMS); each keeps its best class as label, for information."""
    model.eval()
    results: ResultsDict = {}
    for video in videos:
        feats, meta = store.load(video, expected_dim=cfg.feature_channels)
        dets = detect_video(model, cfg, feats, meta.duration, meta.fps, top_labels=top_labels,
                            proposals_only=proposals_only)
        results[video] = detections_to_results(video, dets, class_names)
    return results


def detect_videos_fused(model: TemporalDetector, cfg: MENetConfig, store: FeatureStore, videos: Iterable[str],
                        video_scores: "VideoScores", k: int) -> ResultsDict:
    """The paper's protocol: class-agnostic proposals labelled with each video's top-k
    classes from an external video-level classifier (score = proposal * class score)."""
    from .postprocess.label_fusion import fuse_video

    model.eval()
    results: ResultsDict = {}
    for video in videos:
        feats, meta = store.load(video, expected_dim=cfg.feature_channels)
        dets = detect_video(model, cfg, feats, meta.duration, meta.fps, proposals_only=True)
        proposals = [{"segment": [float(a), float(b)], "score": float(sc)}
                     for (a, b), sc in zip(dets.segments, dets.scores)]
        results[video] = fuse_video(proposals, video_scores, video, k)
    return results
