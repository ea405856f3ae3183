"""Loading backbone weights from published files, tensors only.

Layouts recognised (see :class:`WeightLayout`):

* ``plain`` -- a torchvision (``r2plus1d_18``) or IG65M (``r2plus1d_34``) state dict:
  backbone names as torchvision's ``VideoResNet`` plus the classifier ``fc.*``.
* ``dataparallel`` -- the same with the ``module.`` prefix of (Distributed)DataParallel.
* ``tsp`` / ``tsp-two-head`` -- TSP checkpoints (Alwassel et al., the public
  R(2+1)D-34 Kinetics/ActivityNet/THUMOS releases): the state dict under ``model``,
  every backbone key prefixed ``features.``, beside one head ``fc.*`` or two heads
  ``fc1.*``/``fc2.*``; the file also pickles ``args`` (an ``argparse.Namespace``),
  ``epoch``, ``optimizer``, ``lr_scheduler``.
* ``wrapped`` -- any other checkpoint holding the state dict under ``state_dict`` /
  ``model`` / ``model_state`` / ``backbone`` (optionally with a ``backbone.`` /
  ``model.`` prefix), e.g. MENet's own checkpoints.

Files are read with ``torch.load(weights_only=True)``: tensors, plain containers and,
beyond torch's defaults, only ``argparse.Namespace`` (an attribute bag: unpickling it
sets attributes and runs nothing else). A file naming any other class is refused with
the command that converts it: ``menet weights convert`` reads such a file once with
inert stand-ins registered under those names (the named classes are never imported
or called), and writes the backbone tensors as a plain state dict. Classifier heads
are dropped: MENet uses the pooled feature.
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import shlex
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

_NESTED_KEYS = ("state_dict", "model", "model_state", "backbone")
# Wrapper prefixes, stripped while every backbone key carries one; ``features.`` is TSP's.
_PREFIXES = ("module.", "backbone.", "model.", "features.")
# Classifier heads: torchvision / IG65M / TSP single head ``fc``, TSP two heads ``fc1``/``fc2``.
HEADS = ("fc", "fc1", "fc2")
# Non-tensor classes a weight file may serialize on top of torch's weights_only defaults.
SAFE_CLASSES: tuple[type, ...] = (argparse.Namespace,)


class WeightLoadError(ValueError):
    """A weight file does not match the model; the message lists every difference."""


@dataclass(frozen=True)
class WeightLayout:
    """How a weight file stores its backbone, as recognised by :func:`inspect_state_dict`."""

    name: str                       # plain | dataparallel | tsp | tsp-two-head | wrapped
    container: str | None           # top-level key holding the state dict (None: the file is one)
    prefixes: tuple[str, ...]       # key prefixes stripped, outermost first
    heads: tuple[str, ...]          # classifier heads dropped (fc, fc1, fc2)
    head_tensors: int               # number of tensors in those heads
    ignored: tuple[str, ...] = ()   # other top-level entries of the checkpoint (args, epoch, ...)
    stand_ins: tuple[str, ...] = ()  # classes read as inert stand-ins (convert only)

    def describe(self) -> str:
        what = {
            "plain": "plain state dict (torchvision / IG65M naming)",
            "dataparallel": "DataParallel state dict",
            "tsp": "TSP checkpoint (single classifier head)",
            "tsp-two-head": "TSP checkpoint (two classifier heads)",
            "wrapped": "checkpoint with a wrapped state dict",
        }[self.name]
        details = []
        if self.container is not None:
            details.append(f"state dict under {self.container!r}")
        if self.prefixes:
            details.append("prefix " + " + ".join(repr(p) for p in self.prefixes) + " stripped")
        return what + (f": {', '.join(details)}" if details else "")


@dataclass(frozen=True)
class WeightFile:
    """A weight file read and normalised: backbone tensors (torchvision names) and its layout."""

    path: Path
    state: dict[str, torch.Tensor]
    layout: WeightLayout


def _is_head(key: str) -> bool:
    return key.split(".", 1)[0] in HEADS


class _InertStandIn:
    """Registered, for one read, under a class name a file pickles and we refuse to import.

    It keeps whatever the unpickler hands it and runs nothing, so reading the file can
    execute no code of that class; the backbone tensors come out untouched.
    """

    qualified_name = "?"

    def __new__(cls, *args: object, **kwargs: object) -> _InertStandIn:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.args = args

    def __setstate__(self, state: object) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.qualified_name}>"


def _stand_in(name: str) -> type[_InertStandIn]:
    # One class per name: the unpickler allows BUILD only on instances of registered types.
    return type(f"InertStandIn[{name}]", (_InertStandIn,), {"qualified_name": name})


def _unsafe_globals(path: Path) -> list[str]:
    """Names the file pickles beyond what a tensors-only read allows ([] if undeterminable)."""
    try:
        with torch.serialization.safe_globals(list(SAFE_CLASSES)):
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # legacy (non-zip) format or a corrupt file: no static listing
        return []


def convert_command(path: str | Path) -> str:
    """The exact command that rewrites ``path`` as a tensors-only state dict."""
    path = Path(path)
    out = path.with_name(f"{path.stem}.tensors.pth")
    return f"menet weights convert {shlex.quote(str(path))} --out {shlex.quote(str(out))}"


def read_checkpoint(path: str | Path, *, inert_stand_ins: bool = False) -> tuple[object, tuple[str, ...]]:
    """Read ``path`` with ``weights_only=True``; return the object and the stand-ins used.

    Besides tensors and plain containers only :data:`SAFE_CLASSES` are allowed. Any other
    class refuses the file, naming the classes and the convert command, unless
    ``inert_stand_ins`` (what ``menet weights convert`` uses): then each such name is read
    as an inert :class:`_InertStandIn`, still under ``weights_only=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_CLASSES)):
            return torch.load(path, map_location="cpu", weights_only=True), ()
    except Exception as exc:  # unpickling refused or corrupt file
        first_error = exc
    unsafe = _unsafe_globals(path)
    if not unsafe:
        raise WeightLoadError(
            f"{path}: cannot be read as a tensors-only checkpoint ({first_error})") from first_error
    if not inert_stand_ins:
        raise WeightLoadError(
            f"{path}: cannot be read as a tensors-only checkpoint: it pickles {', '.join(unsafe)}, "
            f"which is refused (unpickling it could run code; only tensors and argparse.Namespace are "
            f"allowed). Convert it once into a plain state dict with:\n  {convert_command(path)}"
        ) from first_error
    stand_ins = [(_stand_in(name), name) for name in unsafe]
    try:
        with torch.serialization.safe_globals([*SAFE_CLASSES, *stand_ins]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightLoadError(
            f"{path}: cannot be read even with inert stand-ins for {', '.join(unsafe)} ({exc})") from exc
    log.info("%s: read %s as inert stand-ins", path, ", ".join(unsafe))
    return obj, tuple(unsafe)


def _normalise(obj: object, source: str) -> tuple[dict[str, torch.Tensor], WeightLayout]:
    """Find the state dict in ``obj`` and strip wrapper prefixes; heads are kept, not dropped."""
    container: str | None = None
    ignored: tuple[str, ...] = ()
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                container = key
                ignored = tuple(sorted(str(k) for k in obj if k != key))
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightLoadError(f"{source}: no state dict found (expected a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightLoadError(f"{source}: the mapping holds no tensors")
    prefixes: list[str] = []
    while True:
        # A prefix is stripped when every backbone key has it; heads may sit beside the
        # prefixed backbone (TSP's ``features.*`` + ``fc.*``) or carry it too (``module.fc.*``).
        body = [k for k in tensors if not _is_head(k)]
        prefix = next((p for p in _PREFIXES if body and all(k.startswith(p) for k in body)), None)
        if prefix is None:
            break
        tensors = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in tensors.items()}
        prefixes.append(prefix)
    head_keys = [k for k in tensors if _is_head(k)]
    heads = tuple(sorted({k.split(".", 1)[0] for k in head_keys}))
    if "features." in prefixes:
        name = "tsp-two-head" if {"fc1", "fc2"} & set(heads) else "tsp"
    elif "module." in prefixes:
        name = "dataparallel"
    elif container is not None or prefixes:
        name = "wrapped"
    else:
        name = "plain"
    layout = WeightLayout(name=name, container=container, prefixes=tuple(prefixes), heads=heads,
                          head_tensors=len(head_keys), ignored=ignored)
    return tensors, layout


def extract_state_dict(obj: object, source: str = "<memory>") -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``, wrapper prefixes stripped; classifier heads kept."""
    return _normalise(obj, source)[0]


def inspect_state_dict(obj: object, source: str = "<memory>") -> tuple[dict[str, torch.Tensor], WeightLayout]:
    """The backbone tensors inside ``obj`` (heads dropped) and the layout they were found in."""
    tensors, layout = _normalise(obj, source)
    return {k: v for k, v in tensors.items() if not _is_head(k)}, layout


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a tensors-only state dict from ``path`` (plain or wrapped in a checkpoint)."""
    obj, _ = read_checkpoint(path)
    return extract_state_dict(obj, source=str(path))


def read_weight_file(path: str | Path, *, inert_stand_ins: bool = False) -> WeightFile:
    """Read ``path``, find its layout and return the backbone tensors (heads dropped)."""
    obj, stand_ins = read_checkpoint(path, inert_stand_ins=inert_stand_ins)
    state, layout = inspect_state_dict(obj, source=str(path))
    if stand_ins:
        layout = replace(layout, stand_ins=stand_ins)
    return WeightFile(path=Path(path), state=state, layout=layout)


def load_backbone_weights(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "<memory>") -> None:
    """Strictly load ``state`` into ``model`` after dropping the heads ``fc*``.

    Raises :class:`WeightLoadError` listing missing keys, unexpected keys and
    shape differences, all at once, so one run tells the user everything.
    """
    state = {k: v for k, v in state.items() if not _is_head(k)}
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


def _unfilled_backbone(name: str, device: str | torch.device = "meta") -> nn.Module:
    """``name``'s module tree without initial values: on ``meta`` (shapes only) or as empty memory.

    For checks that overwrite every tensor by a strict load, initialising first (seconds
    for r2plus1d_34's 63 M parameters) would be wasted.
    """
    from .backbone import BACKBONES, R2Plus1D, build_backbone

    if name not in BACKBONES:
        build_backbone(name)  # raises the usual "unknown backbone" error

    class Unfilled(R2Plus1D):
        def _init_weights(self) -> None:
            pass  # values come from the file; on meta, init would also import torch's decompositions

    with torch.device("meta"):
        model = Unfilled(BACKBONES[name])
    return model if torch.device(device).type == "meta" else model.to_empty(device=device)


@functools.lru_cache(maxsize=None)
def _backbone_shapes(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _unfilled_backbone(name).state_dict().items()}


def matching_backbones(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the known backbones whose every key and shape ``state`` matches exactly."""
    from .backbone import BACKBONES

    shapes = {k: tuple(v.shape) for k, v in state.items() if not _is_head(k)}
    return [name for name in BACKBONES if _backbone_shapes(name) == shapes]


def load_into_backbone(state: Mapping[str, torch.Tensor], backbone: str, source: str = "<memory>",
                       layout: WeightLayout | None = None) -> nn.Module:
    """A ``backbone`` holding exactly ``state`` (strict load; heads ignored).

    A mismatch raises :class:`WeightLoadError` listing every difference and which known
    backbone, if any, the state does hold (an r2plus1d_18 file offered as r2plus1d_34).
    """
    model = _unfilled_backbone(backbone, device="cpu")
    try:
        load_backbone_weights(model, state, source=source)
    except WeightLoadError as exc:
        raise _explained(exc, state, layout, backbone) from None
    return model


def _explained(exc: WeightLoadError, state: Mapping[str, torch.Tensor], layout: WeightLayout | None,
               wanted: str | None) -> WeightLoadError:
    """``exc`` with, under its headline, which known backbone ``state`` does hold."""
    holds = matching_backbones(state)
    if holds:
        hint = f"the file holds a {' / '.join(holds)} backbone" + (f", not {wanted}" if wanted else "")
    else:
        hint = "it matches none of the known backbones exactly" + (
            f" (layout read: {layout.describe()})" if layout is not None else "")
    # The hint goes right under the headline: the lists below it can run to hundreds of lines.
    headline, _, details = str(exc).partition("\n")
    return WeightLoadError(f"{headline}{' ' + wanted if wanted else ''}: {hint}\n{details}")


def load_weight_file(path: str | Path, backbone: str) -> tuple[nn.Module, WeightFile]:
    """Read ``path`` (any recognised layout) and strictly load it into a new ``backbone``."""
    weights = read_weight_file(path)
    return load_into_backbone(weights.state, backbone, str(path), weights.layout), weights


def save_state_dict(state: Mapping[str, torch.Tensor], out: str | Path) -> Path:
    """Write ``state`` as a plain tensors-only file (readable with weights_only=True), atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Own, contiguous storage per tensor: a view would otherwise drag its whole base storage along.
    plain = {str(k): v.detach().clone().contiguous() for k, v in state.items()}
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        torch.save(plain, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def init_backbone(model: nn.Module, weights: str | Path | None) -> None:
    """Load ``weights`` into ``model``; without a file, keep random init and warn."""
    if weights is None:
        warnings.warn("backbone has no pretrained weights (model.backbone_weights is null): "
                      "random initialisation, features will not be meaningful until trained",
                      stacklevel=2)
        return
    loaded = read_weight_file(weights)
    try:
        load_backbone_weights(model, loaded.state, source=str(weights))
    except WeightLoadError as exc:
        raise _explained(exc, loaded.state, loaded.layout, None) from None
    log.info("loaded backbone weights from %s (%s)", weights, loaded.layout.describe())
