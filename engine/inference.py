"""Offline detection on pre-extracted features (``menet infer``, validation mAP).

The online core's objects (:mod:`engine.online`) run here too: the windower lays the
windows out, :func:`engine.postprocess.decode.decode_window` decodes each, the
:class:`~engine.online.merger.StreamMerger` merges them, so offline equals online.
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
from .online import StreamMerger, Window, WindowLayout, video_windows
from .postprocess.windows import Detections, detections_to_results

ResultsDict = dict[str, list[dict[str, Any]]]


def inference_windows(cfg: MENetConfig, feats: np.ndarray, duration: float, fps: float
                      ) -> tuple[list[Window], float]:
    """The windows of one video and its seconds per snippet.

    THUMOS mode: the online windower over the whole video
    (:func:`engine.online.windower.video_windows`), so offline windows are the online
    ones. ActivityNet mode: the video resized to one window of ``data.window`` snippets."""
    d = cfg.data
    if d.mode == "activitynet":
        x = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))
        resized = torch.nn.functional.interpolate(x.T[None], size=d.window, mode="linear", align_corners=False)[0]
        return [Window(0, d.window, True, duration, resized.numpy(), 0)], duration / d.window
    return video_windows(feats, WindowLayout.of(cfg)), d.sigma / fps


def load_detector(ckpt: Checkpoint, cfg: MENetConfig | None = None) -> TemporalDetector:
    """The checkpoint's detector in eval mode (built for ``cfg`` or the stored config)."""
    cfg = cfg or ckpt.config
    model = TemporalDetector(cfg, cfg.feature_channels)
    model.load_state_dict(ckpt.detector)
    return model.eval()


@torch.no_grad()
def detect_video(model: TemporalDetector, cfg: MENetConfig, feats: np.ndarray, duration: float, fps: float,
                 batch_size: int = 8, top_labels: int | None = None, proposals_only: bool = False) -> Detections:
    """One video's detections: windows, MREM, SFPN + heads, decoding, then the same
    :class:`~engine.online.merger.StreamMerger` (exact mode) the online detector runs."""
    windows, sps = inference_windows(cfg, feats, duration, fps)
    merger = StreamMerger(sps, cfg.inference, duration, proposals_only=proposals_only)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        x = torch.from_numpy(np.stack([w.features for w in chunk]))
        relation = model.relation(x)
        levels = model.from_relation(relation)
        labeller_input = model.labeller_input(x, relation)
        for b, win in enumerate(chunk):
            props = decode_window(levels, model.heads, cfg, batch_index=b, top_labels=top_labels,
                                  valid_length=win.valid, labeller=model.labeller,
                                  labeller_input=labeller_input[b])
            merger.push(win.start, props)
    merger.flush()
    return merger.result()


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
