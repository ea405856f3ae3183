"""Backbone pretraining by snippet classification (``menet pretrain-backbone``).

The paper's backbone is R(2+1)D-34 pretrained on Kinetics-400 (sec. 3.2, 4.1):
its features already separate actions. The ``tiny`` backbone has no published
weights, and a randomly initialised one mostly encodes camera noise (measured on
the synthetic benchmark: the movement feature of action snippets is
indistinguishable from background). This module gives it the analogous
pretraining on annotated videos: classify each backbone clip as the action
class covering the snippet's centre, or background, with a linear classifier
on the pooled feature (the classifier is dropped afterwards, as ``fc.*`` is
dropped from Kinetics checkpoints).

Clips are made exactly as everywhere else (shared ``Preprocess`` and
``clip_indices``); each video is decoded once into memory at crop size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import MENetConfig
from ..evaluation.ground_truth import GroundTruth
from ..model.backbone import build_backbone
from ..model.preprocess import Preprocess, clip_indices, to_clip_tensor
from .extract import VideoReadError, read_frames

log = logging.getLogger(__name__)

PRETRAIN_SCHEDULES = ("constant", "cosine")


@dataclass
class DecodedVideo:
    name: str
    frames: np.ndarray  # uint8 [N, h, w, 3] preprocessed
    snippet_labels: np.ndarray  # [num_snippets] class id, num_classes = background


def decode_video(path: Path, cfg: MENetConfig, gt: GroundTruth, class_index: dict[str, int]) -> DecodedVideo:
    fps, frames = read_frames(path)
    pre = Preprocess.of(cfg.data)
    decoded = [pre.frame(f) for f in frames]
    if not decoded:
        raise VideoReadError(f"{path}: no frame could be decoded")
    arr = np.stack(decoded)
    sigma, k = cfg.data.sigma, cfg.data.num_classes
    n_snip = int(np.ceil(len(arr) / sigma))
    centres = (np.arange(n_snip) + 0.5) * sigma / fps
    labels = np.full(n_snip, k, dtype=np.int64)
    mask = gt.inst_videos == path.stem
    for s, e, lab in zip(gt.inst_starts[mask], gt.inst_ends[mask], gt.inst_labels[mask]):
        labels[(centres >= s) & (centres < e)] = class_index[lab]
    return DecodedVideo(path.stem, arr, labels)


def sample_batch(videos: list[DecodedVideo], cfg: MENetConfig, batch_size: int, rng: np.random.Generator,
                 action_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Clips and labels; about ``action_fraction`` of them from action snippets (class balance)."""
    clips, labels = [], []
    bg = cfg.data.num_classes
    for _ in range(batch_size):
        want_action = rng.random() < action_fraction
        for _attempt in range(20):
            v = videos[rng.integers(len(videos))]
            pool = np.flatnonzero((v.snippet_labels != bg) == want_action)
            if len(pool):
                break
        i = int(rng.choice(pool)) if len(pool) else int(rng.integers(len(v.snippet_labels)))
        idx = clip_indices(i, cfg.data.sigma, cfg.data.clip_length, len(v.frames))
        clips.append(v.frames[idx])
        labels.append(v.snippet_labels[i])
    return np.stack(clips), np.array(labels)


def pretrain_backbone(cfg: MENetConfig, video_paths: list[Path], gt: GroundTruth, class_names: list[str],
                      out: Path, steps: int = 600, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                      progress: bool = True, schedule: str = "constant") -> dict[str, float]:
    """Train the config's backbone + a linear classifier; save the backbone's state dict to ``out``.

    ``schedule``: ``constant`` keeps ``lr`` throughout (the shipped backbone's recipe); ``cosine``
    decays it to 0 over ``steps``, which lets a longer run settle instead of hovering at ``lr``.
    """
    if schedule not in PRETRAIN_SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: expected one of {', '.join(PRETRAIN_SCHEDULES)}")
    from tqdm import tqdm

    class_index = {n: i for i, n in enumerate(class_names)}
    videos = []
    for path in tqdm(video_paths, desc="decode", unit="video", disable=not progress):
        videos.append(decode_video(path, cfg, gt, class_index))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    backbone = build_backbone(cfg.model.backbone)
    classifier = nn.Linear(backbone.out_channels, cfg.data.num_classes + 1)
    model = nn.Sequential(backbone, classifier).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" else None
    correct = seen = 0
    loss_avg = 0.0
    bar = tqdm(range(steps), desc="pretrain", unit="step", disable=not progress)
    for step in bar:
        clips, labels = sample_batch(videos, cfg, batch_size, rng)
        logits = model(to_clip_tensor(clips))
        target = torch.from_numpy(labels)
        loss = nn.functional.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        loss_avg = 0.98 * loss_avg + 0.02 * float(loss.detach()) if step else float(loss.detach())
        if step >= steps - 100:  # accuracy over the last 100 steps
            correct += int((logits.argmax(1) == target).sum())
            seen += len(labels)
        bar.set_postfix(loss=f"{loss_avg:.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(backbone.state_dict(), tmp)
    tmp.replace(out)
    return {"loss": loss_avg, "train_accuracy_last_100_steps": correct / max(seen, 1),
            "final_lr": float(opt.param_groups[0]["lr"])}
