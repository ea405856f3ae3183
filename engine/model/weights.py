"""Loading backbone weights from torchvision / IG65M files, tensors only.

A file may hold a plain state dict or a checkpoint with the state dict under
``state_dict`` / ``model`` (and optionally a ``module.`` / ``backbone.`` prefix from
DataParallel or wrappers). It is read with ``torch.load(weights_only=True)`` so a
file from a user can never run code. The classifier ``fc.*`` is dropped: MENet
uses the pooled feature.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

_NESTED_KEYS = ("state_dict", "model", "model_state", "backbone")
_PREFIXES = ("module.", "backbone.", "model.")


class WeightLoadError(ValueError):
    """A weight file does not match the model; the message lists every difference."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensors-only state dict from ``path`` (plain or wrapped in a checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or corrupt file
        raise WeightLoadError(f"{path}: cannot be read as a tensors-only checkpoint ({exc})") from exc
    return extract_state_dict(obj, source=str(path))


def extract_state_dict(obj: object, source: str = "<memory>") -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightLoadError(f"{source}: no state dict found (expected a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightLoadError(f"{source}: the mapping holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def load_backbone_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<memory>") -> None:
    """Strictly load ``state`` into ``model`` after dropping ``fc.*``.

    Raises :class:`WeightLoadError` listing missing keys, unexpected keys and
    shape differences, all at once, so one run tells the user everything.
    """
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected) if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        lines = [f"{source}: weights do not match the backbone"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape differences", shapes)):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {item}" for item in items)
        raise WeightLoadError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def init_backbone(model: nn.Module, weights: str | Path | None) -> None:
    """Load ``weights`` into ``model``; without a file, keep random init and warn."""
    if weights is None:
        warnings.warn("backbone has no pretrained weights (model.backbone_weights is null): "
                      "random initialisation, features will not be meaningful until trained",
                      stacklevel=2)
        return
    load_backbone_weights(model, read_state_dict(weights), source=str(weights))
    log.info("loaded backbone weights from %s", weights)
