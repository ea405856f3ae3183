"""The training loop (paper sec. 4.1 implementation details, sec. 3.4 two stages).

Adam (the paper's optimizer) with ``train.lr``, decayed to ``train.lr_decayed``
from epoch ``train.lr_decay_epoch`` (0-based: epochs before it use ``lr``), and
``train.weight_decay`` as Adam's L2 term (coupled, torch.optim.Adam; the paper
gives no decay, so the default is 0); with ``train.ema_decay`` > 0 an exponential
moving average of the weights (torch.optim.swa_utils.AveragedModel) is what gets
validated and saved (off by default: not in the paper); the anchor sampler's Generalization stage
for the first ``train.generalization_epochs`` epochs, then Specialization. Each
epoch ends with the validation loss and, with validation annotations, the
validation mAP (ActivityNet protocol, tIoU 0.5:0.05:0.95), logged for
information only. ``last.pt`` is written after every epoch (atomically) and a run
resumes from it.

``best.pt`` never looks at the evaluation subset (under the THUMOS protocol the
validation subset the loop reports on is the test set, sec. 4.1):
``train.selection: last`` (default) = the last epoch of the fixed schedule;
``holdout`` = the epoch with the best average mAP on ``train.holdout_fraction`` of
the training videos, drawn from ``train.seed`` and not trained on.

Multi-GPU: started under ``torchrun`` (WORLD_SIZE > 1) the loop wraps the
detector in DistributedDataParallel, shards the windows with a
DistributedSampler and lets rank 0 alone validate and write files.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from ..checkpoint import Checkpoint, CheckpointError, config_differences, load_checkpoint, save_checkpoint
from ..config import MENetConfig, TrainConfig
from ..evaluation.ground_truth import GroundTruth, load_ground_truth, load_ground_truths
from ..features import FeatureStore
from ..model.menet import TemporalDetector
from ..model.weights import read_state_dict
from .dataset import WindowDataset, collate
from .extract import BACKBONE_FILE
from .losses import menet_loss
from .sampler import AnchorSampler, Schedule

log = logging.getLogger(__name__)

VALIDATION_TIOU = np.linspace(0.5, 0.95, 10)


HOLDOUT_FILE = "holdout.json"


class TrainingDataError(ValueError):
    """The data cannot be split or trained on as configured; the message names the file and key."""


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None
    best_epoch: int | None = None
    train_videos: list[str] = field(default_factory=list)  # the videos trained on
    holdout_videos: list[str] = field(default_factory=list)  # train.selection "holdout": chose best.pt
    skipped_videos: list[str] = field(default_factory=list)  # bad annotations, all datasets


def lr_for_epoch(cfg: MENetConfig, epoch: int) -> float:
    return cfg.train.lr if epoch < cfg.train.lr_decay_epoch else cfg.train.lr_decayed


def build_optimizer(cfg: MENetConfig, model: torch.nn.Module) -> torch.optim.Adam:
    """Adam as the paper says; ``train.weight_decay`` is its (coupled) L2 term.

    Choice: Adam rather than AdamW so the default (decay 0) is exactly the paper's
    optimizer; with decay > 0 this is Adam + L2, not decoupled AdamW decay.
    """
    return torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def split_holdout(gt: GroundTruth, fraction: float, seed: int) -> list[str]:
    """The training videos held out for ``train.selection: holdout``, sorted.

    Drawn from the annotated videos of ``gt`` (a video without instances gives no
    mAP signal) by a permutation seeded with ``seed``, so a rerun or a resume
    holds out the same ones: round(fraction * n) videos, at least 1, leaving at
    least 1 to train on.
    """
    annotated = sorted(set(gt.inst_videos.tolist()))
    if len(annotated) < 2:
        raise TrainingDataError(f"{gt.source}: train.selection 'holdout' needs at least 2 annotated "
                                f"training videos, found {len(annotated)}")
    n = min(max(1, round(fraction * len(annotated))), len(annotated) - 1)
    order = np.random.default_rng(seed).permutation(len(annotated))
    return sorted(annotated[i] for i in order[:n])


# With EMA on, the checkpoint's detector is the average; the weights being trained and the
# number of averaged steps ride in the optimizer entry so a run resumes exactly.
EMA_TRAINING_WEIGHTS = "ema_training_weights"
EMA_UPDATES = "ema_updates"


def build_ema(cfg: MENetConfig, model: torch.nn.Module) -> AveragedModel | None:
    """The moving average of ``model``'s parameters (buffers follow the model), or None when
    ``train.ema_decay`` is 0."""
    if cfg.train.ema_decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=False)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _optimizer_entry(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                     ema: AveragedModel | None) -> dict[str, Any]:
    state = optimizer.state_dict()
    if ema is None:
        return state
    return {**state, EMA_TRAINING_WEIGHTS: _cpu_state(model), EMA_UPDATES: int(ema.n_averaged)}


def _selection_differences(old: TrainConfig, new: TrainConfig) -> list[str]:
    """Settings whose change would make a resumed holdout run select on videos it trained on."""
    if old.selection == new.selection == "last":
        return []
    keys = ("selection", "holdout_fraction", "seed")
    return [f"train.{k}: checkpoint {getattr(old, k)!r} vs config {getattr(new, k)!r}"
            for k in keys if getattr(old, k) != getattr(new, k)]


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _mean_terms(sums: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / max(count, 1) for k, v in sums.items()}


@torch.no_grad()
def validation_loss(model: TemporalDetector, loader: DataLoader, sampler: AnchorSampler, cfg: MENetConfig,
                    device: torch.device) -> dict[str, float]:
    """Mean loss terms over the validation windows, with fixed (epoch 0, step i) anchor draws."""
    model.eval()
    sums: dict[str, float] = {}
    n = 0
    for step, (feats, targets, _) in enumerate(loader):
        cells = sampler.sample_levels("generalization", epoch=0, step=step)
        out = model(feats.to(device), cells)
        terms = menet_loss(out, targets, cells, cfg.train.lambda1, cfg.train.lambda2, cfg.train.positive_iou,
                           reg_loss=cfg.train.reg_loss)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
    return _mean_terms(sums, n)


def validation_map(model: TemporalDetector, cfg: MENetConfig, dataset: WindowDataset,
                   class_agnostic: bool = False) -> dict[str, Any]:
    """Average mAP of the detector on ``dataset``'s videos (ActivityNet protocol).

    ``class_agnostic``: localisation only: class-agnostic proposals (eq. 10 without p_label,
    class-agnostic Soft-NMS) against every true action as one class; used while the detector
    trains with ``model.labeller: segment``, whose labels are learnt only after the detector
    (:func:`fit_segment_labeller`)."""
    from ..evaluation.activitynet import evaluate_detection
    from ..evaluation.results_format import predictions_from_results
    from ..inference import detect_videos

    results = detect_videos(model, cfg, dataset.store, dataset.videos, dataset.class_names,
                            proposals_only=class_agnostic)
    gt = dataset.gt
    if class_agnostic:
        results = {v: [{**r, "label": "action"} for r in rows] for v, rows in results.items()}
        gt = dataclasses.replace(gt, inst_labels=np.full(len(gt.inst_labels), "action", dtype=object),
                                 classes=["action"])
    preds = predictions_from_results(results, source="validation")
    res = evaluate_detection(gt, preds, VALIDATION_TIOU)
    out: dict[str, Any] = {"average_mAP": res.average_mAP, "mAP": [float(x) for x in res.mAP]}
    if class_agnostic:
        out["labels"] = "class-agnostic"
    return out


def fit_segment_labeller(path: Path, cfg: MENetConfig, train_set: WindowDataset,
                         val_set: WindowDataset | None, out: Path | None = None,
                         progress: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train the segment classifier of the checkpoint at ``path`` (for ``cfg``, which says
    ``model.labeller: segment``) on its frozen detector; write the result to ``out``
    (default: rewrite ``path``) with ``cfg`` as its config. Returns what was added to the
    checkpoint's last history entry."""
    from .segment_classifier import attach_labeller, train_labeller

    ckpt = load_checkpoint(path, with_optimizer=out is None)  # rewritten in place: still a resume point
    model = attach_labeller(ckpt, cfg)
    history = train_labeller(model, cfg, train_set, val_set, progress=progress)
    added: dict[str, Any] = {"labeller": history.epochs}
    if val_set is not None:
        added["val_map_labelled"] = validation_map(model, cfg, val_set)
    hist = [dict(h) for h in ckpt.history] or [{}]
    hist[-1].update(added)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(out or path, dataclasses.replace(ckpt, config=cfg, detector=state, optimizer=None
                                                     if out is not None else ckpt.optimizer, history=hist))
    return added


def train(cfg: MENetConfig, features: str | Path, annotations: str | Path | Sequence[str | Path],
          out_dir: str | Path, *,
          train_subset: str = "training", val_subset: str | None = "validation",
          schedule: Schedule = "two-stage", resume: bool = True, device: str = "cpu",
          progress: bool = True, validate_map: bool = True, num_threads: int | None = None,
          report: Callable[[str], None] | None = None) -> TrainResult:
    """Train on ``train_subset`` and write OUT/last.pt, OUT/best.pt, OUT/history.json.

    ``validate_map``: compute the validation-subset mAP each epoch (logged only).
    With ``train.selection: holdout`` the holdout mAP is computed every epoch
    whatever ``validate_map`` says: it is what chooses best.pt. ``report`` gets
    one-line notes before the first epoch (skipped videos, holdout split).
    """
    from tqdm import tqdm

    world, rank = _dist_info()
    distributed = world > 1
    if distributed:
        import torch.distributed as dist
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if num_threads:
        torch.set_num_threads(num_threads)
    dev = torch.device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(features)
    gt = load_ground_truths(annotations)  # several files: one ground truth (distinct video names)
    selection = cfg.train.selection
    # with the segment labeller, per-epoch mAP measures localisation: labels come after the detector
    agnostic = cfg.model.labeller == "segment"
    holdout_videos: list[str] = []
    if selection == "holdout":
        holdout_videos = split_holdout(gt.select(train_subset), cfg.train.holdout_fraction, cfg.train.seed)
    train_set = WindowDataset(cfg, store, gt, train_subset, training=True, exclude=holdout_videos)
    if len(train_set) == 0:
        raise TrainingDataError(f"{gt.source}: no training windows in subset {train_subset!r}")
    val_set = None
    if val_subset:
        val_set = WindowDataset(cfg, store, gt, val_subset, training=False, class_names=train_set.class_names)
        if len(val_set) == 0:
            val_set = None
    holdout_set = None
    if holdout_videos:
        holdout_set = WindowDataset(cfg, store, gt, train_subset, training=False, videos=holdout_videos,
                                    class_names=train_set.class_names)
        evaluation = set(gt.select(val_subset).videos) if val_subset else set()
        overlap = sorted(set(holdout_videos) & evaluation)
        if overlap:  # only when the training and validation subsets share videos
            raise TrainingDataError(f"{gt.source}: held-out videos {overlap[:5]} are also in the validation "
                                    f"subset {val_subset!r}: selection must not see the evaluation videos")
        if not holdout_set.videos:
            raise TrainingDataError(f"{gt.source}: every held-out video was skipped (bad annotations); "
                                    f"raise train.holdout_fraction or change train.seed")
    skipped = sorted({s.video for ds in (train_set, val_set, holdout_set) if ds is not None for s in ds.skipped})
    if rank == 0:
        notes = [f"annotations: {len(skipped)} video(s) skipped (a segment past the decoded video)"
                 + (f": {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}" if skipped else "")]
        notes.append(f"training: {len(train_set.videos)} videos, {len(train_set)} windows; best.pt: "
                     + ("last epoch" if selection == "last" else
                        f"best holdout average mAP on {len(holdout_set.videos)} held-out training videos"))
        for note in notes:
            log.info(note)
            if report is not None:
                report(note)
        if holdout_set is not None:  # which videos best.pt was chosen on, for whoever evaluates it later
            split = {"seed": cfg.train.seed, "fraction": cfg.train.holdout_fraction, "videos": holdout_set.videos}
            (out / HOLDOUT_FILE).write_text(json.dumps(split, indent=1))
    backbone_file = store.root / BACKBONE_FILE
    backbone_state = read_state_dict(backbone_file) if backbone_file.is_file() else None

    torch.manual_seed(cfg.train.seed)
    model = TemporalDetector(cfg, cfg.feature_channels).to(dev)
    if model.labeller is not None:
        # fitted after the detector (fit_segment_labeller), never by the detector's loss: frozen
        # here, so DistributedDataParallel does not wait for gradients that never come
        model.labeller.requires_grad_(False)
    optimizer = build_optimizer(cfg, model)
    ema = build_ema(cfg, model)
    scored = model if ema is None else ema.module  # what is validated and saved
    sampler = AnchorSampler.from_config(cfg, schedule=schedule)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    best_score = -math.inf
    best_epoch: int | None = None
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, with_optimizer=True)
        diffs = config_differences(ckpt.config, cfg) + _selection_differences(ckpt.config.train, cfg.train)
        if diffs:
            raise CheckpointError(f"{last_path}: cannot resume, the config changed:\n  " + "\n  ".join(diffs))
        opt_state = dict(ckpt.optimizer or {})
        training_weights = opt_state.pop(EMA_TRAINING_WEIGHTS, None)
        ema_updates = opt_state.pop(EMA_UPDATES, 0)
        if (ema is None) != (training_weights is None):
            raise CheckpointError(f"{last_path}: cannot resume, it was written with train.ema_decay "
                                  f"{'> 0' if training_weights is not None else '0'} and the config says "
                                  f"{cfg.train.ema_decay}")
        if ema is not None:
            model.load_state_dict(training_weights)
            ema.module.load_state_dict(ckpt.detector)
            ema.n_averaged.fill_(int(ema_updates))
        else:
            model.load_state_dict(ckpt.detector)
        if opt_state:
            optimizer.load_state_dict(opt_state)
            for group in optimizer.param_groups:  # the config's decay, not the one stored with the state
                group["weight_decay"] = cfg.train.weight_decay
        history = ckpt.history
        start_epoch = ckpt.epoch + 1
        for h in history:
            if selection == "last":
                best_epoch = h["epoch"]
            elif "holdout_map" in h and (best_epoch is None or h["holdout_map"]["average_mAP"] > best_score):
                best_score, best_epoch = h["holdout_map"]["average_mAP"], h["epoch"]
        if rank == 0:
            log.info("resuming from %s after epoch %d", last_path, ckpt.epoch)

    train_model: torch.nn.Module = model
    dist_sampler = None
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler
        train_model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        dist_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, seed=cfg.train.seed)

    val_loader = (DataLoader(val_set, batch_size=cfg.train.batch_size, shuffle=False, collate_fn=collate)
                  if val_set is not None else None)
    result = TrainResult(out, history)
    for epoch in range(start_epoch, cfg.train.epochs):
        stage = sampler.stage_for_epoch(epoch, cfg.train.generalization_epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr_for_epoch(cfg, epoch)
        train_set.set_epoch(epoch)
        if dist_sampler is not None:
            dist_sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=cfg.train.batch_size, sampler=dist_sampler,
                                collate_fn=collate)
        else:
            gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)  # reproducible across resumes
            loader = DataLoader(train_set, batch_size=cfg.train.batch_size, shuffle=True, generator=gen,
                                collate_fn=collate)
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        t0 = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs} {stage[:3]}", unit="batch",
                   disable=not progress or rank != 0, leave=True)
        for step, (feats, targets, _) in enumerate(bar):
            cells = sampler.sample_levels(stage, epoch=epoch, step=step)
            outputs = train_model(feats.to(dev), cells)
            terms = menet_loss(outputs, targets, cells, cfg.train.lambda1, cfg.train.lambda2,
                               cfg.train.positive_iou, reg_loss=cfg.train.reg_loss)
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"epoch {epoch}, step {step}: non-finite loss "
                                         f"{ {k: float(v) for k, v in terms.items()} }")
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
            bar.set_postfix({k: f"{v / steps:.3f}" for k, v in sums.items()})
        if rank != 0:
            continue
        record: dict[str, Any] = {"epoch": epoch, "stage": stage, "lr": lr_for_epoch(cfg, epoch),
                                  "seconds": round(time.perf_counter() - t0, 2),
                                  "train": _mean_terms(sums, steps)}
        # Validation figures are information only: nothing below reads them to choose best.pt.
        if val_loader is not None:
            record["val"] = validation_loss(scored, val_loader, sampler, cfg, dev)
            if validate_map and val_set is not None:
                record["val_map"] = validation_map(scored, cfg, val_set, class_agnostic=agnostic)
        if holdout_set is not None:
            record["holdout_map"] = validation_map(scored, cfg, holdout_set, class_agnostic=agnostic)
        if selection == "last":
            is_best = True  # every epoch is the last so far; the final one stays
        else:
            # ties keep the earlier epoch; the first epoch always counts (a NaN mAP compares False)
            is_best = best_epoch is None or record["holdout_map"]["average_mAP"] > best_score
        history.append(record)
        ckpt = Checkpoint(cfg, train_set.class_names, _cpu_state(scored),
                          backbone_state, epoch, _optimizer_entry(optimizer, model, ema), history,
                          store.settings().__dict__)
        save_checkpoint(last_path, ckpt)
        if is_best:
            if selection == "holdout":
                best_score = record["holdout_map"]["average_mAP"]
            best_epoch = epoch
            save_checkpoint(best_path, ckpt)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        summary = f"epoch {epoch + 1}: train loss {record['train']['total']:.4f}"
        if "val" in record:
            summary += f", val loss {record['val']['total']:.4f}"
        if "val_map" in record:
            summary += f", val avg mAP {record['val_map']['average_mAP']:.4f} (not used for selection)"
        if "holdout_map" in record:
            summary += f", holdout avg mAP {record['holdout_map']['average_mAP']:.4f}"
        log.info(summary)
        if progress:
            print(summary, flush=True)
    if rank == 0 and cfg.model.labeller == "segment" and last_path.exists():
        # the segment classifier learns on the chosen detector, frozen (about a minute here)
        added = fit_segment_labeller(last_path, cfg, train_set, val_set if validate_map else None)
        if history:
            history[-1].update(added)
        if best_path.exists():
            best = load_checkpoint(best_path)
            if best.epoch == len(history) - 1:  # best.pt is the last epoch: the same detector, fitted once
                save_checkpoint(best_path, load_checkpoint(last_path, with_optimizer=True))
            else:
                fit_segment_labeller(best_path, cfg, train_set, val_set if validate_map else None)
        if progress and "val_map_labelled" in added:
            print(f"segment classifier trained; val avg mAP with its labels (last epoch) "
                  f"{added['val_map_labelled']['average_mAP']:.4f}", flush=True)
        (out / "history.json").write_text(json.dumps(history, indent=1))
    if distributed:
        import torch.distributed as dist
        dist.destroy_process_group()
    result.history = history
    result.last_path = last_path if last_path.exists() else None
    result.best_path = best_path if best_path.exists() else None
    result.best_epoch = best_epoch
    result.train_videos = list(train_set.videos)
    result.holdout_videos = holdout_set.videos if holdout_set is not None else []
    result.skipped_videos = skipped
    return result
