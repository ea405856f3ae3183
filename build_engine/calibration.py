"""INT8 calibration data from real snippets of a video.

Snippet clips are made exactly as online (:class:`engine.snippets.SnippetAssembler`,
:class:`engine.model.preprocess.Preprocess`, :func:`engine.model.preprocess.to_clip_tensor`).
MFE calibrates on those clips; MREM on windows of their MFE features (PyTorch, fp32);
the dense stage on MREM's output for the same windows. A short video gives fewer
snippets than a window: windows are then cut from the feature sequence repeated
cyclically, each starting at another snippet, so every value is a real feature.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.config import MENetConfig
from engine.model.preprocess import Preprocess, to_clip_tensor
from engine.runtime.stages import stage_modules
from engine.snippets import SnippetAssembler
from engine.training.extract import read_frames


def video_clips(cfg: MENetConfig, video: str | Path, max_snippets: int) -> np.ndarray:
    """Normalised clips [N, 3, T, H, W] of the first ``max_snippets`` snippets of ``video``."""
    _, frames = read_frames(Path(video))
    pre = Preprocess(cfg.data.resize_short, tuple(cfg.data.crop))
    asm = SnippetAssembler(cfg.data.sigma, cfg.data.clip_length)
    clips: list[np.ndarray] = []
    for frame in frames:
        clips.extend(c.frames for c in asm.push(pre.frame(frame)))
        if len(clips) >= max_snippets:
            break
    else:
        clips.extend(c.frames for c in asm.finish())
    if not clips:
        raise ValueError(f"{video}: no frames decoded for calibration")
    return to_clip_tensor(np.stack(clips[:max_snippets])).numpy()


def _batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    if x.shape[0] < batch:  # too few: cycle so one full batch exists
        x = np.concatenate([x] * (batch // x.shape[0] + 1))[:batch]
    n = x.shape[0] // batch
    return [x[i * batch:(i + 1) * batch] for i in range(n)]


@torch.no_grad()
def calibration_batches(cfg: MENetConfig, model: nn.Module, video: str | Path, *, batch: int,
                        max_snippets: int = 256, windows: int | None = None,
                        device: str = "cpu") -> dict[str, list[np.ndarray]]:
    """Per stage, a list of calibration batches of ``batch`` items each."""
    modules = {k: m.to(device).eval() for k, m in stage_modules(model).items()}
    clips = video_clips(cfg, video, max_snippets)
    feats = np.concatenate([modules["mfe"](torch.from_numpy(clips[i:i + batch]).to(device)).float().cpu().numpy()
                            for i in range(0, clips.shape[0], batch)])  # [N, C_feat]
    w = cfg.data.window
    n = feats.shape[0]
    count = windows or batch
    cyc = np.concatenate([feats] * (w // n + 2))
    step = max(1, n // count)
    wins = np.stack([cyc[(k * step) % n:(k * step) % n + w].T for k in range(count)]).astype(np.float32)
    relation = np.concatenate([modules["mrem"](torch.from_numpy(wins[i:i + batch]).to(device)).float().cpu().numpy()
                               for i in range(0, count, batch)])
    return {"mfe": _batches(clips, batch), "mrem": _batches(wins, batch), "dense": _batches(relation, batch)}
