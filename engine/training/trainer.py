"""The training loop (paper sec. 4.1 implementation details, sec. 3.4 two stages).

Adam with ``train.lr``, decayed to ``train.lr_decayed`` from epoch
``train.lr_decay_epoch`` (0-based: epochs before it use ``lr``); the anchor
sampler's Generalization stage for the first ``train.generalization_epochs``
epochs, then Specialization. Each epoch ends with the validation loss and, with
validation annotations, the validation mAP (ActivityNet protocol, tIoU
0.5:0.05:0.95). ``last.pt`` is written after every epoch (atomically) and a run
resumes from it; ``best.pt`` keeps the best validation average mAP (or loss).

Multi-GPU: started under ``torchrun`` (WORLD_SIZE > 1) the loop wraps the
detector in DistributedDataParallel, shards the windows with a
DistributedSampler and lets rank 0 alone validate and write files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..checkpoint import Checkpoint, CheckpointError, config_differences, load_checkpoint, save_checkpoint
from ..config import MENetConfig
from ..evaluation.ground_truth import load_ground_truth
from ..features import FeatureStore
from ..model.menet import TemporalDetector
from ..model.weights import read_state_dict
from .dataset import WindowDataset, collate
from .extract import BACKBONE_FILE
from .losses import menet_loss
from .sampler import AnchorSampler, Schedule

log = logging.getLogger(__name__)

VALIDATION_TIOU = np.linspace(0.5, 0.95, 10)


@dataclass
class TrainResult:
    out_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None


def lr_for_epoch(cfg: MENetConfig, epoch: int) -> float:
    return cfg.train.lr if epoch < cfg.train.lr_decay_epoch else cfg.train.lr_decayed


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
        terms = menet_loss(out, targets, cells, cfg.train.lambda1, cfg.train.lambda2, cfg.train.positive_iou)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
    return _mean_terms(sums, n)


def validation_map(model: TemporalDetector, cfg: MENetConfig, dataset: WindowDataset) -> dict[str, Any]:
    """Average mAP of the detector on the validation videos (ActivityNet protocol)."""
    from ..evaluation.activitynet import evaluate_detection
    from ..evaluation.results_format import predictions_from_results
    from ..inference import detect_videos

    results = detect_videos(model, cfg, dataset.store, dataset.videos, dataset.class_names)
    preds = predictions_from_results(results, source="validation")
    res = evaluate_detection(dataset.gt, preds, VALIDATION_TIOU)
    return {"average_mAP": res.average_mAP, "mAP": [float(x) for x in res.mAP]}


def train(cfg: MENetConfig, features: str | Path, annotations: str | Path, out_dir: str | Path, *,
          train_subset: str = "training", val_subset: str | None = "validation",
          schedule: Schedule = "two-stage", resume: bool = True, device: str = "cpu",
          progress: bool = True, validate_map: bool = True, num_threads: int | None = None) -> TrainResult:
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
    gt = load_ground_truth(annotations)
    train_set = WindowDataset(cfg, store, gt, train_subset, training=True)
    if len(train_set) == 0:
        raise ValueError(f"{annotations}: no training windows in subset {train_subset!r}")
    val_set = None
    if val_subset:
        val_set = WindowDataset(cfg, store, gt, val_subset, training=False, class_names=train_set.class_names)
        if len(val_set) == 0:
            val_set = None
    backbone_file = store.root / BACKBONE_FILE
    backbone_state = read_state_dict(backbone_file) if backbone_file.is_file() else None

    torch.manual_seed(cfg.train.seed)
    model = TemporalDetector(cfg, cfg.feature_channels).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sampler = AnchorSampler.from_config(cfg, schedule=schedule)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    best_score = -math.inf
    if resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, with_optimizer=True)
        diffs = config_differences(ckpt.config, cfg)
        if diffs:
            raise CheckpointError(f"{last_path}: cannot resume, the config changed:\n  " + "\n  ".join(diffs))
        model.load_state_dict(ckpt.detector)
        if ckpt.optimizer:
            optimizer.load_state_dict(ckpt.optimizer)
        history = ckpt.history
        start_epoch = ckpt.epoch + 1
        best_score = max((h.get("score", -math.inf) for h in history), default=-math.inf)
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
                               cfg.train.positive_iou)
            if not torch.isfinite(terms["total"]):
                raise FloatingPointError(f"epoch {epoch}, step {step}: non-finite loss "
                                         f"{ {k: float(v) for k, v in terms.items()} }")
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            steps += 1
            bar.set_postfix({k: f"{v / steps:.3f}" for k, v in sums.items()})
        if rank != 0:
            continue
        record: dict[str, Any] = {"epoch": epoch, "stage": stage, "lr": lr_for_epoch(cfg, epoch),
                                  "seconds": round(time.perf_counter() - t0, 2),
                                  "train": _mean_terms(sums, steps)}
        if val_loader is not None:
            record["val"] = validation_loss(model, val_loader, sampler, cfg, dev)
            if validate_map and val_set is not None:
                record["val_map"] = validation_map(model, cfg, val_set)
        if "val_map" in record:
            record["score"] = record["val_map"]["average_mAP"]
        elif "val" in record:
            record["score"] = -record["val"]["total"]
        else:
            record["score"] = -record["train"]["total"]
        history.append(record)
        ckpt = Checkpoint(cfg, train_set.class_names, {k: v.detach().cpu() for k, v in model.state_dict().items()},
                          backbone_state, epoch, optimizer.state_dict(), history,
                          store.settings().__dict__)
        save_checkpoint(last_path, ckpt)
        if record["score"] > best_score:
            best_score = record["score"]
            save_checkpoint(best_path, ckpt)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        summary = f"epoch {epoch + 1}: train loss {record['train']['total']:.4f}"
        if "val" in record:
            summary += f", val loss {record['val']['total']:.4f}"
        if "val_map" in record:
            summary += f", val avg mAP {record['val_map']['average_mAP']:.4f}"
        log.info(summary)
        if progress:
            print(summary, flush=True)
    if distributed:
        import torch.distributed as dist
        dist.destroy_process_group()
    result.history = history
    result.last_path = last_path if last_path.exists() else None
    result.best_path = best_path if best_path.exists() else None
    return result
