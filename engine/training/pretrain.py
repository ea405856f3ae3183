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


def augment_clip(clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One clip [T, h, w, 3] uint8, mirrored left-right half the time and with its brightness and
    contrast scaled by up to 20 %: changes that keep what moves and how (a mirrored orbit or spin
    is still an orbit or a spin; the paper's Kinetics pretraining uses flips and crops alike) but
    not the pixels a network could learn one video by."""
    out = clip[:, :, ::-1] if rng.random() < 0.5 else clip
    gain, shift = rng.uniform(0.8, 1.2), rng.uniform(-20.0, 20.0)
    mean = float(out.mean())
    return np.clip((out.astype(np.float32) - mean) * gain + mean + shift, 0, 255).astype(np.uint8)


def sample_batch(videos: list[DecodedVideo], cfg: MENetConfig, batch_size: int, rng: np.random.Generator,
                 action_fraction: float = 0.5,
                 augment_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Clips and labels; about ``action_fraction`` of them from action snippets (class balance).

    With ``augment_rng`` each clip is also moved by up to half a snippet in time and passed
    through ``augment_clip``; a generator of its own, so the draws of ``rng`` (which clips) are
    the same with and without augmentation."""
    clips, labels = [], []
    bg = cfg.data.num_classes
    sigma = cfg.data.sigma
    for _ in range(batch_size):
        want_action = rng.random() < action_fraction
        for _attempt in range(20):
            v = videos[rng.integers(len(videos))]
            pool = np.flatnonzero((v.snippet_labels != bg) == want_action)
            if len(pool):
                break
        i = int(rng.choice(pool)) if len(pool) else int(rng.integers(len(v.snippet_labels)))
        idx = clip_indices(i, sigma, cfg.data.clip_length, len(v.frames))
        if augment_rng is None:
            clips.append(v.frames[idx])
        else:
            shift = int(augment_rng.integers(-(sigma // 2), sigma // 2 + 1))
            idx = np.clip(idx + shift, 0, len(v.frames) - 1)
            clips.append(augment_clip(v.frames[idx], augment_rng))
        labels.append(v.snippet_labels[i])
    return np.stack(clips), np.array(labels)


def split_held_out(video_paths: list[Path], held_out: int, split_seed: int = 0) -> tuple[list[Path], list[Path]]:
    """(pretraining videos, held-out videos): ``held_out`` of them by a seeded permutation of the
    sorted names, so every draw of the pretraining (``seed``) holds out the same videos."""
    if not 0 <= held_out < len(video_paths):
        raise ValueError(f"held-out videos {held_out}: must be in [0, {len(video_paths)}) "
                         f"for {len(video_paths)} videos")
    ordered = sorted(video_paths, key=lambda p: p.stem)
    order = np.random.default_rng(split_seed).permutation(len(ordered))
    held = sorted(int(i) for i in order[:held_out])
    fit = sorted(int(i) for i in order[held_out:])
    return [ordered[i] for i in fit], [ordered[i] for i in held]


@torch.no_grad()
def clip_accuracy(model: nn.Module, videos: list[DecodedVideo], cfg: MENetConfig,
                  batch_size: int = 64) -> dict[str, float]:
    """Every snippet of ``videos`` classified (eval mode): ``accuracy`` over all snippets,
    ``balanced`` (mean recall over the classes present, background one of them) and
    ``action_class`` (action snippets given their own class), in [0, 1]."""
    was_training = model.training
    model.eval()
    preds, labels = [], []
    for v in videos:
        n = len(v.snippet_labels)
        for lo in range(0, n, batch_size):
            idx = [clip_indices(i, cfg.data.sigma, cfg.data.clip_length, len(v.frames))
                   for i in range(lo, min(lo + batch_size, n))]
            preds.append(model(to_clip_tensor(np.stack([v.frames[j] for j in idx]))).argmax(1).numpy())
        labels.append(v.snippet_labels)
    model.train(was_training)
    pred, label = np.concatenate(preds), np.concatenate(labels)
    bg = cfg.data.num_classes
    recalls = [float((pred[label == c] == c).mean()) for c in np.unique(label)]
    action = label != bg
    return {"accuracy": float((pred == label).mean()), "balanced": float(np.mean(recalls)),
            "action_class": float((pred[action] == label[action]).mean()) if action.any() else float("nan")}


def pretrain_backbone(cfg: MENetConfig, video_paths: list[Path], gt: GroundTruth, class_names: list[str],
                      out: Path, steps: int = 600, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
                      progress: bool = True, schedule: str = "constant", held_out_videos: int = 0,
                      augment: bool = False) -> dict[str, float]:
    """Train the config's backbone + a linear classifier; save the backbone's state dict to ``out``.

    ``schedule``: ``constant`` keeps ``lr`` throughout (the shipped backbone's recipe); ``cosine``
    decays it to 0 over ``steps``, which lets a longer run settle instead of hovering at ``lr``.
    ``held_out_videos``: that many videos (``split_held_out``) are left out of the pretraining and
    their snippets classified at the end (``held_out_*`` in the result): how well the backbone
    does on videos it never saw, which the training accuracy cannot say, and which never reads
    the evaluation subset. ``augment``: time shifts, mirroring and brightness / contrast changes
    of the clips (``sample_batch``). Neither is the shipped backbone's recipe; both off, the
    draws are exactly those of earlier versions.
    """
    if schedule not in PRETRAIN_SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: expected one of {', '.join(PRETRAIN_SCHEDULES)}")
    from tqdm import tqdm

    class_index = {n: i for i, n in enumerate(class_names)}
    if held_out_videos:
        video_paths, held_paths = split_held_out(list(video_paths), held_out_videos)
    else:
        held_paths = []
    videos = []
    for path in tqdm(video_paths, desc="decode", unit="video", disable=not progress):
        videos.append(decode_video(path, cfg, gt, class_index))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    augment_rng = np.random.default_rng([seed, 1]) if augment else None
    backbone = build_backbone(cfg.model.backbone)
    classifier = nn.Linear(backbone.out_channels, cfg.data.num_classes + 1)
    model = nn.Sequential(backbone, classifier).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if schedule == "cosine" else None
    correct = seen = 0
    loss_avg = 0.0
    bar = tqdm(range(steps), desc="pretrain", unit="step", disable=not progress)
    for step in bar:
        clips, labels = sample_batch(videos, cfg, batch_size, rng, augment_rng=augment_rng)
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
    stats = {"loss": loss_avg, "train_accuracy_last_100_steps": correct / max(seen, 1),
             "final_lr": float(opt.param_groups[0]["lr"])}
    if held_paths:
        del videos  # the pretraining videos' frames are no longer needed
        held = [decode_video(path, cfg, gt, class_index) for path in held_paths]
        stats.update({f"held_out_{k}": v for k, v in clip_accuracy(model, held, cfg).items()})
        stats["held_out_videos"] = len(held)
    return stats
