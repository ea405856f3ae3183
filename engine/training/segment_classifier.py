"""Training the segment classifier (``model.labeller: segment``) after the detector.

The detector is frozen: what the classifier reads of every training window (its MREM
output, or the MFE features themselves: ``model.segment_input``) is computed once, and
only the classifier's MLP learns, so this stage takes seconds to minutes, not the
detector's half hour, and can be added to an already trained checkpoint
(``menet train-labeller``). Each epoch sees every ground-truth segment of the training
windows as it is plus ``copies`` jittered versions (each boundary moved by up to
``train.segment_jitter`` x its length), because at inference it labels proposals, whose
boundaries are never exact. Choices (none of this is in the paper, which labels with an
external video-level classifier): AdamW with weight decay 0.01, batch 64, cross-entropy
without class weights (the synthetic benchmark's classes are balanced; see
docs/results.md for what was measured).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..checkpoint import Checkpoint, CheckpointError
from ..config import MENetConfig
from ..model.menet import TemporalDetector
from ..model.segment_classifier import SegmentClassifier
from .dataset import WindowDataset

log = logging.getLogger(__name__)

# Features of one window as the classifier reads them: one [C_i, L_i] tensor per sequence.
WindowFeatures = list[torch.Tensor]


@dataclass
class LabelledWindows:
    """Frozen features and ground-truth segments (window snippet units) of a set of windows."""

    features: list[WindowFeatures]
    segments: list[np.ndarray]  # [G, 2] per window
    labels: list[np.ndarray]  # [G] per window
    valid: list[int]  # real snippets per window (the rest is padding)

    def __len__(self) -> int:
        return sum(len(x) for x in self.labels)


@dataclass
class LabellerHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


@torch.no_grad()
def labeller_features(model: TemporalDetector, windows: torch.Tensor) -> list[list[torch.Tensor]]:
    """What the model's labeller reads of each window [B, C_feat, W] -> [[C, W]]: the MREM output
    or the MFE window itself (model.segment_input)."""
    chosen = model.labeller_input(windows, model.relation(windows))
    return [[chosen[b]] for b in range(windows.shape[0])]


def collect_windows(dataset: WindowDataset, features_of: Callable[[torch.Tensor], list[WindowFeatures]],
                    batch_size: int = 16) -> LabelledWindows:
    """Run ``features_of`` over every window of ``dataset`` that holds a ground truth."""
    index = [i for i, s in enumerate(dataset.samples) if len(s.labels)]
    out = LabelledWindows([], [], [], [])
    for i in range(0, len(index), batch_size):
        chunk = index[i:i + batch_size]
        x = torch.stack([dataset.window_features(dataset.samples[j]) for j in chunk])
        out.features.extend(features_of(x))
        for j in chunk:
            s = dataset.samples[j]
            out.segments.append(np.asarray(s.segments, np.float64).reshape(-1, 2))
            out.labels.append(np.asarray(s.labels, np.int64))
            out.valid.append(int(s.valid))
    return out


def jittered(segments: np.ndarray, valid: int, jitter: float, copies: int, rng: np.random.Generator) -> np.ndarray:
    """``segments`` plus ``copies`` versions with each boundary moved by U(-jitter, jitter) x length."""
    if copies == 0 or jitter == 0:
        return segments
    length = (segments[:, 1] - segments[:, 0])[None, :, None]
    moved = segments[None] + rng.uniform(-jitter, jitter, (copies,) + segments.shape) * length
    moved = np.clip(moved, 0.0, float(valid))
    moved[..., 1] = np.maximum(moved[..., 1], moved[..., 0] + 1e-2)
    return np.concatenate([segments[None], moved]).reshape(-1, 2)


def _descriptors(classifier: SegmentClassifier, data: LabelledWindows, jitter: float, copies: int,
                 rng: np.random.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    descs, labels = [], []
    with torch.no_grad():
        for feats, segs, labs, valid in zip(data.features, data.segments, data.labels, data.valid):
            if rng is not None:
                segs = jittered(segs, valid, jitter, copies, rng)
                labs = np.tile(labs, copies + 1)
            descs.append(classifier.describe(feats, torch.from_numpy(segs)))
            labels.append(torch.from_numpy(labs))
    return torch.cat(descs), torch.cat(labels)


def accuracy(classifier: SegmentClassifier, data: LabelledWindows) -> float:
    """Share of ground-truth segments (as annotated) whose top class is right."""
    if len(data) == 0:
        return float("nan")
    was = classifier.training
    classifier.eval()
    x, y = _descriptors(classifier, data, 0.0, 0, None)
    with torch.no_grad():
        acc = float((classifier.classify(x).argmax(1) == y).float().mean())
    classifier.train(was)
    return acc


def fit_classifier(classifier: SegmentClassifier, train: LabelledWindows, *, epochs: int, lr: float, jitter: float,
                   seed: int = 0, copies: int = 4, batch_size: int = 64, weight_decay: float = 1e-2,
                   validation: LabelledWindows | None = None,
                   progress: Callable[[int, dict[str, float]], None] | None = None) -> LabellerHistory:
    """Train ``classifier`` (its MLP; the features are fixed) on ``train``'s segments."""
    if len(train) == 0:
        raise ValueError("no ground-truth segment in the training windows: nothing to train the labeller on")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    history = LabellerHistory()
    for epoch in range(epochs):
        classifier.train()
        x, y = _descriptors(classifier, train, jitter, copies, rng)
        order = torch.randperm(x.shape[0], generator=gen)
        total, correct = 0.0, 0
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            logits = classifier.classify(x[idx])
            loss = loss_fn(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            correct += int((logits.argmax(1) == y[idx]).sum())
        sched.step()
        row = {"epoch": epoch + 1, "loss": total / x.shape[0], "train_accuracy": correct / x.shape[0]}
        if validation is not None and ((epoch + 1) % 10 == 0 or epoch + 1 == epochs):
            row["val_accuracy"] = accuracy(classifier, validation)  # every 10th epoch: it costs a pass
        history.epochs.append(row)
        if progress is not None:
            progress(epoch, row)
    classifier.eval()
    return history


def attach_labeller(ckpt: Checkpoint, cfg: MENetConfig) -> TemporalDetector:
    """The checkpoint's detector built for ``cfg`` (``model.labeller: segment``) with a fresh,
    untrained segment classifier; every other weight is the checkpoint's."""
    model = TemporalDetector(cfg, cfg.feature_channels)
    state = {k: v for k, v in ckpt.detector.items() if not k.startswith("labeller.")}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("labeller.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{ckpt.path}: detector weights do not fit {cfg.source}: missing {missing[:5]}, "
                              f"unexpected {result.unexpected_keys[:5]}")
    return model.eval()


def train_labeller(model: TemporalDetector, cfg: MENetConfig, train_set: WindowDataset,
                   validation_set: WindowDataset | None = None,
                   progress: Callable[[int, dict[str, float]], None] | None = None) -> LabellerHistory:
    """Fit ``model.labeller`` on what it reads (the frozen detector's MREM output, or the MFE
    features: model.segment_input) of ``train_set``'s windows."""
    if model.labeller is None:
        raise ValueError(f"{cfg.source}: model.labeller is {cfg.model.labeller!r}; the segment classifier "
                         "is trained only with model.labeller: segment")
    model.eval()
    features_of = lambda x: labeller_features(model, x)  # noqa: E731
    train = collect_windows(train_set, features_of)
    val = collect_windows(validation_set, features_of) if validation_set is not None else None
    t = cfg.train
    torch.manual_seed(t.seed)
    history = fit_classifier(model.labeller, train, epochs=t.segment_epochs, lr=t.segment_lr,
                             jitter=t.segment_jitter, seed=t.seed, validation=val, progress=progress)
    log.info("segment classifier: %d training segments, last epoch %s", len(train), history.last)
    return history


def matched_label_accuracy(pred_segments: np.ndarray, pred_labels: np.ndarray, gt_segments: np.ndarray,
                           gt_labels: Sequence, tiou: float = 0.5) -> tuple[int, int]:
    """(right, matched): of the detections whose best-overlapping true action reaches ``tiou``,
    how many carry that action's label. One video; labels compared as given."""
    if len(pred_segments) == 0 or len(gt_segments) == 0:
        return 0, 0
    p = np.asarray(pred_segments, np.float64).reshape(-1, 2)
    g = np.asarray(gt_segments, np.float64).reshape(-1, 2)
    inter = np.clip(np.minimum(p[:, None, 1], g[None, :, 1]) - np.maximum(p[:, None, 0], g[None, :, 0]), 0, None)
    union = (p[:, 1] - p[:, 0])[:, None] + (g[:, 1] - g[:, 0])[None, :] - inter
    iou = inter / np.maximum(union, 1e-9)
    best = iou.argmax(1)
    matched = iou[np.arange(len(p)), best] >= tiou
    right = np.asarray(pred_labels)[matched] == np.asarray(gt_labels)[best[matched]]
    return int(right.sum()), int(matched.sum())
