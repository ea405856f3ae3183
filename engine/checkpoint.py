"""Trained MENet checkpoints: weights + the config, label map and versions they were made with.

Saved with ``torch.save`` but holding only tensors and plain values, and read
back with ``weights_only=True``: a checkpoint from a user can never run code.
Loading re-validates the stored config and, when the caller gives the config it
intends to run with, refuses a checkpoint whose network or data settings differ
(naming each differing key), so a model is never run on features it was not
trained for.
"""
from __future__ import annotations

import os
import platform
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, MENetConfig, config_from_dict

FORMAT = "menet-checkpoint-1"
# Sections whose values change what the weights mean; train/inference/stream may differ.
BINDING_SECTIONS = ("data", "model")
# Keys inside those sections that may differ without changing the weights' meaning.
# settings a checkpoint may be used with whatever it was trained with: weights' source, window layout,
# training-window rules, and how a camera of another shape meets the crop (identical on frames of
# the training shape; docs/streaming.md, "Cameras of another shape")
FREE_KEYS = {"model.backbone_weights", "data.hop", "data.window_gt", "data.window_gt_coverage", "data.frame_fit"}


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the reason."""


@dataclass
class Checkpoint:
    config: MENetConfig
    class_names: list[str]
    detector: dict[str, torch.Tensor]
    backbone: dict[str, torch.Tensor] | None = None
    epoch: int = -1
    optimizer: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    feature_settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    path: str = ""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    try:
        menet = version("menet-stream")
    except PackageNotFoundError:
        menet = "source"
    # str(): torch.__version__ is a TorchVersion object, which tensors-only loading refuses
    return {"menet": str(menet), "torch": str(torch.__version__), "python": platform.python_version()}


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> None:
    path = Path(path)
    obj = {
        "format": FORMAT,
        "config": ckpt.config.to_dict(),
        "class_names": list(ckpt.class_names),
        "detector": ckpt.detector,
        "backbone": ckpt.backbone,
        "epoch": int(ckpt.epoch),
        "optimizer": ckpt.optimizer,
        "history": ckpt.history,
        "feature_settings": ckpt.feature_settings,
        "versions": versions(),
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def config_differences(a: MENetConfig, b: MENetConfig) -> list[str]:
    da, db = a.to_dict(), b.to_dict()
    out = []
    for section in BINDING_SECTIONS:
        for key in sorted(set(da[section]) | set(db[section])):
            name = f"{section}.{key}"
            if name not in FREE_KEYS and da[section].get(key) != db[section].get(key):
                out.append(f"{name}: checkpoint {da[section].get(key)!r} vs config {db[section].get(key)!r}")
    return out


def stored_config(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config dict in today's layout.

    Checkpoints written before the window layout became one setting hold
    ``data.window_overlap`` (now ``data.hop``, derived from the window when absent) and
    sections that are not the network's (a program's own settings, which come from the
    run's config): only the network's sections are kept."""
    network = {f.name for f in dataclasses.fields(MENetConfig)}
    data = {k: v for k, v in data.items() if k in network}
    if isinstance(data.get("data"), dict) and "window_overlap" in data["data"]:
        d = dict(data["data"])
        overlap = d.pop("window_overlap")
        if d.get("hop") is None and isinstance(d.get("window"), int) and isinstance(overlap, (int, float)):
            d["hop"] = max(1, int(round(d["window"] * (1.0 - overlap))))
        data["data"] = d
    return data


def load_checkpoint(path: str | Path, expect: MENetConfig | None = None, with_optimizer: bool = False) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a tensors-only MENet checkpoint ({exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a MENet checkpoint (format {obj.get('format') if isinstance(obj, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    try:
        cfg = config_from_dict(stored_config(obj["config"]), source=f"{path} (stored config)")
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: stored config is invalid: {exc}") from exc
    if expect is not None:
        diffs = config_differences(cfg, expect)
        if diffs:
            raise CheckpointError(f"{path} was trained with a different configuration than {expect.source}:\n  "
                                  + "\n  ".join(diffs))
    return Checkpoint(
        config=cfg, class_names=list(obj.get("class_names") or []), detector=obj["detector"],
        backbone=obj.get("backbone"), epoch=int(obj.get("epoch", -1)),
        optimizer=obj.get("optimizer") if with_optimizer else None, history=list(obj.get("history") or []),
        feature_settings=dict(obj.get("feature_settings") or {}), versions=dict(obj.get("versions") or {}),
        path=str(path))
