"""Typed, validated YAML configs.

Every section is a dataclass; loading walks the YAML against the dataclass
fields so an unknown key, a wrong type or an impossible value is a
:class:`ConfigError` naming the file, the line and the dotted key. All problems
of a config are reported together, one per line, sorted by file and line.

A config may ``extends: other.yaml`` and override any key: the path is taken
relative to the extending file when that file exists, else a bare shipped name
(``stream``, ``stream.yaml``) means the config in ``configs/``, as for ``--config``.
``name`` is never inherited: a file without one is named after its stem.

Configs ship in ``configs/``; ``--config tiny`` is short for ``configs/tiny.yaml``.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config is invalid; the message names file, line and key, one line per problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = problems if problems is not None else [message]


# ---------------------------------------------------------------- sections


@dataclass
class DataConfig:
    # keys of older configs and where they live now (the loader says so instead of "unknown key")
    MOVED_KEYS: typing.ClassVar[dict[str, str]] = {
        "window_overlap": "data.hop, in snippets between two window starts (overlap 0.5 = window / 2)"}

    mode: Literal["thumos", "activitynet"]
    sigma: int  # frames per snippet (paper sec. 4.1: 5 THUMOS, 16 ActivityNet)
    clip_length: int  # frames the backbone sees per snippet, centred on it
    resize_short: int
    crop: list[int]  # [height, width] fed to the backbone
    window: int  # THUMOS: sliding-window length; ActivityNet: resized length T
    # THE window layout (engine.online.layout), for training windows, offline inference and the
    # online windower alike: snippets between two window starts. None: window // 2 (paper sec. 4.1:
    # 50 % overlap). Online, a smaller hop means earlier events and more compute.
    hop: int | None = None
    num_classes: int = 1
    class_names: list[str] | None = None
    # THUMOS training windows: which ground truths a window keeps. "coverage": those with at
    # least window_gt_coverage of their length inside (the earlier rule); "clip": any overlap,
    # clipped to the window (G-TAD). See docs/training.md for the measurement behind the default.
    window_gt: Literal["coverage", "clip"] = "coverage"
    window_gt_coverage: float = 0.75
    # How a frame whose shape differs from the crop's becomes the crop (engine/model/preprocess.py).
    # "crop" (the paper's, Kinetics-style): short side to resize_short, centre crop; a 4:3 or 16:9
    # camera loses its sides. "stretch": the whole frame, resized to the crop's aspect first; a frame
    # of the crop's aspect gets exactly what "crop" gives it. Features must be extracted, and the
    # detector trained, with what the live cameras use.
    frame_fit: Literal["crop", "stretch"] = "crop"


@dataclass
class ModelConfig:
    backbone: Literal["r2plus1d_34", "r2plus1d_18", "tiny"]
    backbone_weights: str | None = None
    movement: bool = True  # False: the "Base" ablation (F_total only)
    relation: Literal["mrem", "conv"] = "mrem"  # "conv": Base ablation, MREM -> 1D conv
    relation_kernel: int = 3  # k of MREM's local path
    channels: int = 256  # MREM output and SFPN width
    levels: int = 3
    level_lengths: list[int] = field(default_factory=list)  # derived from window when empty
    scale_ranges: list[list[float]] = field(default_factory=list)
    max_duration: list[int] | None = None  # D_i per level; None: L_i (every anchor)
    head_samples: int = 16  # S of SAlign
    head_hidden: int = 256
    # SAlign context: the anchor is widened by this fraction of its length on each side before
    # sampling (G-TAD: 0.5 with S = 32). The paper names G-TAD's SAlign but gives neither.
    salign_context: float = 0.0
    # Dropout on the MREM output before SFPN, in training only (0 = off, the paper's model: it
    # names no dropout). Measured in docs/results.md ("Regularisation") because the tiny detector
    # fits its 240 training windows almost exactly while its validation losses rise after epoch ~9.
    dropout: float = 0.0
    # Who labels proposals (beyond the paper, which uses an external video-level classifier):
    # "anchor": the per-anchor classifier on SAlign samples in each head; "segment": the
    # segment classifier (engine/model/segment_classifier.py) on the SFPN levels pooled over
    # the refined proposal, trained after the detector.
    labeller: Literal["anchor", "segment"] = "anchor"
    # What the segment classifier reads: "relation", the window's MREM output (the detector
    # worker has it already); "mfe", the raw MFE snippet features of the window (the engine
    # worker sends them next to the MREM output, C_feat x W float32 more per window). Measured
    # (docs/results.md, "An MFE labeller"): the MFE features label as well on every detector
    # draw, while the MREM output's labels move with how the detector was trained.
    segment_input: Literal["relation", "mfe"] = "relation"
    segment_hidden: int = 128
    segment_samples: int = 8
    segment_context: float = 0.5  # surroundings on each side, fraction of the segment length


@dataclass
class TrainConfig:
    batch_size: int = 8
    lr: float = 1e-3
    lr_decayed: float = 1e-4
    lr_decay_epoch: int = 5
    epochs: int = 7
    generalization_epochs: int = 1
    sample_ratios: list[float] = field(default_factory=lambda: [0.5, 0.4, 0.9])
    positive_iou: float = 0.9
    # Ground truths that no anchor reaches at tIoU > positive_iou (short actions: anchors are
    # whole snippets) get their best anchors as positives too (engine/training/labels.py).
    # The paper is silent on such ground truths; false keeps its rule alone.
    best_match: bool = False
    lambda1: float = 5.0
    lambda2: float = 10.0
    weight_decay: float = 0.0
    # Exponential moving average of the detector's weights (ActionFormer's recipe; the paper
    # trains and reports the raw weights): 0 = off; d > 0 updates avg <- d * avg + (1 - d) * w
    # after every step, and checkpoints, validation and inference use the average.
    ema_decay: float = 0.0
    # M_reg loss (eq. 5): "paper" = plain L2 over the sampled anchors; "balanced" = BMN/G-TAD's
    # high/mid/low tIoU balance (equal weight to anchors with tIoU > 0.7, 0.3-0.7, < 0.3).
    reg_loss: Literal["paper", "balanced"] = "paper"
    # Which epoch best.pt holds. "last": the fixed schedule's last epoch (never looks at the
    # evaluation subset); "holdout": best average mAP on holdout_fraction of the *training*
    # videos, held out from training. Validation mAP is still logged, never used to choose.
    selection: Literal["last", "holdout"] = "last"
    holdout_fraction: float = 0.1
    # segment classifier (model.labeller: segment), trained after the detector on its frozen
    # level features: ground-truth segments with each boundary moved by up to
    # segment_jitter x the segment length, so it sees segments as imprecise as proposals
    segment_epochs: int = 60
    segment_jitter: float = 0.1
    segment_lr: float = 1.0e-3
    # THUMOS mode, training only: each epoch a training window's start moves forward into its
    # video by a random 0..window_shift snippets (ground truth re-cut by data.window_gt), so
    # window edges fall anywhere in a scene, as they do on a camera. The paper is silent (its
    # windows are fixed); 0 keeps the fixed layout.
    window_shift: int = 0
    # THUMOS mode, training only: each epoch a training window's video is resampled in time by a
    # factor drawn log-uniformly from [1 / time_scale, time_scale] (linear interpolation of its
    # snippet features, ground truth scaled with it; the window keeps its centre), so every action
    # is also seen shorter and longer than it was filmed. The paper is silent on augmentation (its
    # ActivityNet inputs are all resampled to one length, which is this with a per-video factor);
    # 1.0 keeps the videos as extracted.
    time_scale: float = 1.0
    # THUMOS mode: keep training windows that hold no ground truth ("idle" windows: a scene with
    # nothing happening), where every anchor is a negative for P_s / P_e, IoU-ASP and Offset-ASP.
    # The paper is silent; G-TAD, whose THUMOS windowing it follows, trains only on windows with
    # an action, which false keeps. A camera spends most of its time idle.
    idle_windows: bool = False
    seed: int = 0


@dataclass
class SoftNMSConfig:
    method: Literal["gaussian", "linear", "hard", "bmn"] = "gaussian"
    sigma: float = 0.5
    iou_threshold: float = 0.5
    bmn_low: float = 0.65
    bmn_high: float = 0.9
    class_agnostic: bool = False


@dataclass
class JoinConfig:
    """Actions longer than a window (engine/online/joiner.py): pieces cut by window edges,
    same label, joined into one detection. The paper is silent (its THUMOS windows hold its
    actions); this is our rule, offline and online alike."""
    enabled: bool = True
    edge_snippets: float = 2.0  # a piece within this of its window's edge was cut by it
    min_score: float = 0.05     # fainter pieces pass through unjoined (they are mostly noise)
    max_span_s: float = 900.0   # a group longer than this is closed where it stands (bounded hold)


@dataclass
class ChainConfig:
    """Actions longer than a window, second rule (engine/online/chainer.py): same-label final
    detections with short gaps between them chained, and a chain longer than a window reported
    as one extra detection. Ours; the paper is silent."""
    enabled: bool = True
    max_gap_s: float = 10.0          # detections at most this far apart are linked
    min_score: float = 0.1           # fainter detections are not linked (mostly noise)
    min_span_windows: float = 1.0    # a chain a window could hold adds nothing
    # the hull is a guess from fragments: ranked below what the detector proposed itself
    score_factor: float = 0.5


@dataclass
class InferenceConfig:
    peak_ratio: float = 0.5  # candidate boundary: local peak or > ratio * max
    # the paper is silent on a window's first and last snippet: "always" candidates (BSN/BMN's
    # post-processing) or only when they "peak" (engine/postprocess/decode.py)
    boundary_edges: Literal["always", "peak"] = "always"
    # scored (start, end) pairs per level and window, those with the largest p_s * p_e (an upper
    # bound of the eq. 10 score); 0 = every pair, as the paper (decode.DEFAULT_MAX_PAIRS says why)
    max_pairs: int = 2048
    max_detections: int = 100
    min_score: float = 0.001
    soft_nms: SoftNMSConfig = field(default_factory=SoftNMSConfig)
    top_k_labels: int = 2  # external video-level score fusion
    # labels emitted per proposal (offline and online): each proposal is reported once per
    # each of its best k classes, score = proposal score x class probability
    labels_per_proposal: int = 1
    join: JoinConfig = field(default_factory=JoinConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)


@dataclass
class MENetConfig:
    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    source: str = "<memory>"  # where it was loaded from; not a YAML key

    # Derived values live here so no caller recomputes them differently.
    def level_lengths(self) -> list[int]:
        return list(self.model.level_lengths)

    def max_durations(self) -> list[int]:
        return list(self.model.max_duration or self.model.level_lengths)

    @property
    def feature_channels(self) -> int:
        from .model.backbone import BACKBONES
        return BACKBONES[self.model.backbone].out_channels * (2 if self.model.movement else 1)

    @property
    def labeller_reads_mfe(self) -> bool:
        """The segment classifier reads each window's MFE features (model.segment_input: mfe), so
        online the engine worker sends them to the detector worker with the MREM output."""
        return self.model.labeller == "segment" and self.model.segment_input == "mfe"

    def to_dict(self) -> dict[str, Any]:
        """The network's config as plain data (what checkpoints and manifests store): the sections
        of this class only, not those a program adds by extending it."""
        return {f.name: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                for f in dataclasses.fields(MENetConfig) if f.name != "source"
                for v in [getattr(self, f.name)]}

    def check_more(self, check: "typing.Callable[[bool, str, str], None]") -> None:
        """Validation of the sections a subclass adds (``check(ok, dotted_key, message)``)."""


# ---------------------------------------------------------------- loading


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key."""


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[path] = key_node.start_mark.line + 1
            _key_lines(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = f"{prefix}[{i}]"
            out.setdefault(path, item.start_mark.line + 1)
            _key_lines(item, path, out)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from exc
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)
    return data, lines


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or a bare name of a shipped config (``tiny`` -> configs/tiny.yaml)."""
    path = Path(name)
    if path.is_file() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    return CONFIG_DIR / f"{name}.yaml"


def _shipped(name: str) -> Path | None:
    """configs/NAME(.yaml) for a bare file name (no folder part), else None."""
    path = Path(name)
    if len(path.parts) != 1 or path.is_absolute():
        return None
    return CONFIG_DIR / (name if path.suffix in (".yaml", ".yml") else f"{name}.yaml")


def _resolve_extends(parent: str, child: Path, line: int | str) -> Path:
    """Where ``extends: parent`` in ``child`` points: relative to ``child`` first, then shipped."""
    relative = child.parent / parent
    # A file cannot extend itself, so a user's own stream.yaml with `extends: stream.yaml`
    # means the shipped one rather than a cycle.
    if relative.is_file() and relative.resolve() != child.resolve():
        return relative
    shipped = _shipped(parent)
    if shipped is not None and shipped.is_file():
        return shipped
    looked = [str(relative)] + ([str(shipped)] if shipped is not None else [])
    raise ConfigError(f"{child}:{line}: extends: no config {parent!r} (looked for {' and '.join(looked)})")


class _Where:
    """Where a key came from, for error messages."""

    def __init__(self, files: list[tuple[Path, dict[str, int]]]) -> None:
        self.files = files

    def locate(self, key: str) -> tuple[str, int]:
        """(file, line) of ``key``; line 0 when no line is known."""
        # The file that sets the key itself wins (the overriding one first); else
        # the nearest enclosing section, so inherited keys point at their origin.
        probe = key
        while probe:
            for path, lines in reversed(self.files):
                if probe in lines:
                    return str(path), lines[probe]
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return str(self.files[-1][0]), 0

    def __call__(self, key: str) -> str:
        path, line = self.locate(key)
        return f"{path}:{line}: {key}" if line else f"{path}: {key}"


class _Problems:
    """Collects every problem of a config so the user sees them all in one error."""

    def __init__(self, where: _Where) -> None:
        self.where = where
        self.items: list[tuple[str, int, int, str]] = []  # file, line, order found, text
        self.bad: set[str] = set()  # keys whose value was refused (their default stands in)

    def add(self, key: str, message: str) -> None:
        path, line = self.where.locate(key)
        self.items.append((path, line, len(self.items), f"{self.where(key)}: {message}"))

    def trial(self) -> _Problems:
        """A scratch collector for one alternative of a union."""
        return _Problems(self.where)

    def absorb(self, other: _Problems) -> None:
        for path, line, _, text in other.items:
            self.items.append((path, line, len(self.items), text))
        self.bad |= other.bad

    def raise_if_any(self) -> None:
        if self.items:
            lines = [text for *_, text in sorted(self.items)]
            raise ConfigError("\n".join(lines), lines)


def _related(key: str, bad: set[str]) -> bool:
    """``key`` is a refused key, inside one, or encloses one (model.scale_ranges[0] vs model.scale_ranges)."""
    return any(key == b or key.startswith((f"{b}.", f"{b}[")) or b.startswith((f"{key}.", f"{key}["))
               for b in bad)


def load_config(name: str | Path, schema: type[MENetConfig] = MENetConfig) -> MENetConfig:
    """Load, merge ``extends`` chains, type-check and validate a config file.

    ``schema``: MENetConfig, or a subclass that adds the sections of the program loading it
    (this package never reads them); the file is checked against all of its fields."""
    path = resolve_config_path(name)
    chain: list[tuple[Path, dict[str, Any], dict[str, int]]] = []
    seen: set[Path] = set()
    while True:
        if path.resolve() in seen:
            raise ConfigError(f"{path}: 'extends' forms a cycle")
        seen.add(path.resolve())
        data, lines = _read_yaml(path)
        chain.insert(0, (path, data, lines))
        parent = data.pop("extends", None)
        if parent is None:
            break
        if not isinstance(parent, str):
            raise ConfigError(f"{path}:{lines.get('extends', '?')}: extends: expected a file name")
        path = _resolve_extends(parent, path, lines.get("extends", "?"))
    merged: dict[str, Any] = {}
    for _, data, _ in chain:
        merged = _merge(merged, data)
    # A name describes the file loaded, not its parent: never inherited, the stem by default.
    top_path, top_data, _ = chain[-1]
    merged["name"] = top_data["name"] if "name" in top_data else top_path.stem
    where = _Where([(p, lines) for p, _, lines in chain])
    merged.pop("source", None)
    return _finish(merged, str(top_path), where, schema)


def config_from_dict(data: dict[str, Any], source: str = "<dict>",
                     schema: type[MENetConfig] = MENetConfig) -> MENetConfig:
    """Build a config from a plain dict (e.g. the one stored in a checkpoint)."""
    where = _Where([(Path(source), {})])
    data = {k: v for k, v in data.items() if k != "source"}
    return _finish(data, source, where, schema)


def _finish(data: dict[str, Any], source: str, where: _Where, schema: type[MENetConfig]) -> MENetConfig:
    """Build, derive and validate, then raise every problem found as one ConfigError."""
    problems = _Problems(where)
    cfg = _build(schema, data, "", where, problems)
    if cfg is _BAD:
        # A required value is missing or unusable: there is nothing to validate.
        problems.raise_if_any()
    cfg.source = source
    _derive(cfg)
    _validate(cfg, problems)
    problems.raise_if_any()
    return cfg


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


_BAD: Any = object()  # _build's result for a value it refused (the reason is in problems)


def _build(tp: Any, value: Any, key: str, where: _Where, problems: _Problems) -> Any:
    """Convert ``value`` to type ``tp``; a refused value is recorded in ``problems`` and gives _BAD."""
    def bad(message: str, at: str = key) -> Any:
        problems.add(at, message)
        return _BAD

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            return bad(f"expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.name != "source"}
        complete = True
        moved: dict[str, str] = getattr(tp, "MOVED_KEYS", {})
        for name in sorted(set(value) - set(fields)):
            sub = f"{key}.{name}" if key else name
            if name in moved:  # a key of an older layout: say where it lives now
                bad(f"this key moved: it is {moved[name]} now", sub)
            else:
                bad(f"unknown key (allowed here: {', '.join(sorted(fields))})", sub)
        kwargs = {}
        for name, f in fields.items():
            sub = f"{key}.{name}" if key else name
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            if name in value:
                built = _build(hints[name], value[name], sub, where, problems)
                if built is not _BAD:
                    kwargs[name] = built
                elif has_default:
                    # The default stands in so the other checks still run; checks on this key are muted.
                    problems.bad.add(sub)
                else:
                    complete = False
            elif not has_default:
                bad(f"missing required key '{sub}'", key or name)
                complete = False
        return tp(**kwargs) if complete else _BAD
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        trials = []
        for arg in (a for a in args if a is not type(None)):
            trial = problems.trial()
            built = _build(arg, value, key, where, trial)
            if built is not _BAD:
                problems.absorb(trial)
                return built
            trials.append(trial)
        if len(trials) == 1:
            problems.absorb(trials[0])
            return _BAD
        return bad(f"expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            return bad(f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            return bad(f"expected a list, got {type(value).__name__} {value!r}")
        items = [_build(args[0], v, f"{key}[{i}]", where, problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if origin is dict:
        if not isinstance(value, dict):
            return bad(f"expected a map, got {type(value).__name__} {value!r}")
        out = {}
        for k, v in value.items():
            kk = _build(args[0], k, f"{key} key {k!r}", where, problems)
            vv = _build(args[1], v, f"{key}.{k}", where, problems)
            out[kk] = vv
        return _BAD if any(v is _BAD for v in [*out, *out.values()]) else out
    if tp is bool:
        if not isinstance(value, bool):
            return bad(f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return bad(f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return bad(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            return bad(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {key}")


def _derive(cfg: MENetConfig) -> None:
    m = cfg.model
    if not m.level_lengths:
        m.level_lengths = [cfg.data.window // 2 ** i for i in range(m.levels)]
    if cfg.data.hop is None:
        cfg.data.hop = max(1, cfg.data.window // 2)


def _validate(cfg: MENetConfig, problems: _Problems) -> None:
    """Record every impossible value in ``problems`` (the caller raises them together)."""
    def check(ok: bool, key: str, message: str) -> None:
        # A key whose own value was refused already has its problem; its default proves nothing.
        if not ok and not _related(key, problems.bad):
            problems.add(key, message)

    d, m, t = cfg.data, cfg.model, cfg.train
    check(d.sigma >= 1, "data.sigma", f"must be >= 1, got {d.sigma}")
    check(d.clip_length >= 1, "data.clip_length", f"must be >= 1, got {d.clip_length}")
    check(len(d.crop) == 2 and min(d.crop) >= 16, "data.crop", f"must be [height, width] >= 16, got {d.crop}")
    check(d.resize_short >= min(d.crop), "data.resize_short",
          f"must be >= the crop's short side {min(d.crop)}, got {d.resize_short}")
    check(d.hop is not None and 1 <= d.hop <= d.window, "data.hop", f"must be in 1..data.window ({d.window}), got {d.hop}")
    check(d.num_classes >= 1, "data.num_classes", f"must be >= 1, got {d.num_classes}")
    if d.class_names is not None:
        check(len(d.class_names) == d.num_classes, "data.class_names",
              f"has {len(d.class_names)} names but data.num_classes is {d.num_classes}")
    check(1 <= m.levels <= 6, "model.levels", f"must be in 1..6, got {m.levels}")
    check(d.window % 2 ** (m.levels - 1) == 0, "data.window",
          f"{d.window} is not divisible by 2^(levels-1) = {2 ** (m.levels - 1)}")
    expected = [d.window // 2 ** i for i in range(m.levels)]
    check(m.level_lengths == expected, "model.level_lengths",
          f"must be {expected} for window {d.window} and {m.levels} levels, got {m.level_lengths}")
    check(len(m.scale_ranges) == m.levels, "model.scale_ranges",
          f"needs one [min, max] per level ({m.levels}), got {len(m.scale_ranges)}")
    for i, rng in enumerate(m.scale_ranges):
        check(len(rng) == 2 and 0 <= rng[0] < rng[1] <= 1, f"model.scale_ranges[{i}]",
              f"must be [min, max] with 0 <= min < max <= 1, got {rng}")
    if m.max_duration is not None:
        check(len(m.max_duration) == m.levels, "model.max_duration", f"needs {m.levels} values")
        for i, (dur, length) in enumerate(zip(m.max_duration, m.level_lengths)):
            check(1 <= dur <= length, f"model.max_duration[{i}]", f"must be in 1..{length}, got {dur}")
    check(m.relation_kernel % 2 == 1, "model.relation_kernel", f"must be odd, got {m.relation_kernel}")
    for key, value in (("model.channels", m.channels), ("model.head_samples", m.head_samples),
                       ("model.head_hidden", m.head_hidden), ("train.batch_size", t.batch_size),
                       ("train.epochs", t.epochs)):
        check(value >= 1, key, f"must be >= 1, got {value}")
    check(len(t.sample_ratios) == m.levels, "train.sample_ratios",
          f"needs one ratio per level ({m.levels}), got {len(t.sample_ratios)}")
    for i, r in enumerate(t.sample_ratios):
        # The paper states 0 < r1 <= r2 <= r3 but uses (0.5, 0.4, 0.9): we only require (0, 1].
        check(0 < r <= 1, f"train.sample_ratios[{i}]", f"must be in (0, 1], got {r}")
    check(0 <= t.generalization_epochs <= t.epochs, "train.generalization_epochs",
          f"must be in 0..epochs ({t.epochs}), got {t.generalization_epochs}")
    check(t.lr > 0 and t.lr_decayed > 0, "train.lr", "learning rates must be > 0")
    check(0 < t.positive_iou < 1, "train.positive_iou", f"must be in (0, 1), got {t.positive_iou}")
    check(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    check(0 <= t.ema_decay < 1, "train.ema_decay", f"must be in [0, 1), got {t.ema_decay}")
    check(0 < t.holdout_fraction < 1, "train.holdout_fraction", f"must be in (0, 1), got {t.holdout_fraction}")
    check(0 < d.window_gt_coverage <= 1, "data.window_gt_coverage",
          f"must be in (0, 1], got {d.window_gt_coverage}")
    check(0 <= m.salign_context <= 2, "model.salign_context", f"must be in [0, 2], got {m.salign_context}")
    check(0 <= m.dropout < 1, "model.dropout", f"must be in [0, 1), got {m.dropout}")
    for key, value in (("model.segment_hidden", m.segment_hidden), ("model.segment_samples", m.segment_samples),
                       ("train.segment_epochs", t.segment_epochs)):
        check(value >= 1, key, f"must be >= 1, got {value}")
    check(m.segment_context >= 0, "model.segment_context", f"must be >= 0, got {m.segment_context}")
    check(0 <= t.segment_jitter < 0.5, "train.segment_jitter", f"must be in [0, 0.5), got {t.segment_jitter}")
    check(1.0 <= t.time_scale <= 4.0, "train.time_scale", f"must be in [1, 4] (1 = off), got {t.time_scale}")
    check(0 <= t.window_shift < d.window, "train.window_shift",
          f"must be in 0..data.window - 1 ({d.window - 1}), got {t.window_shift}")
    check(1 <= cfg.inference.labels_per_proposal <= d.num_classes, "inference.labels_per_proposal",
          f"must be in 1..data.num_classes ({d.num_classes}), got {cfg.inference.labels_per_proposal}")
    i = cfg.inference
    check(0 < i.peak_ratio <= 1, "inference.peak_ratio", f"must be in (0, 1], got {i.peak_ratio}")
    check(i.max_pairs >= 0, "inference.max_pairs", f"must be >= 0 (0 = no cap), got {i.max_pairs}")
    check(i.max_detections >= 1, "inference.max_detections", f"must be >= 1, got {i.max_detections}")
    check(i.join.edge_snippets >= 0, "inference.join.edge_snippets", f"must be >= 0, got {i.join.edge_snippets}")
    check(0 <= i.join.min_score, "inference.join.min_score", f"must be >= 0, got {i.join.min_score}")
    check(i.join.max_span_s > 0, "inference.join.max_span_s", f"must be > 0, got {i.join.max_span_s}")
    check(i.chain.max_gap_s >= 0, "inference.chain.max_gap_s", f"must be >= 0, got {i.chain.max_gap_s}")
    check(0 <= i.chain.min_score, "inference.chain.min_score", f"must be >= 0, got {i.chain.min_score}")
    check(i.chain.min_span_windows >= 0, "inference.chain.min_span_windows",
          f"must be >= 0, got {i.chain.min_span_windows}")
    check(0 < i.chain.score_factor <= 1, "inference.chain.score_factor",
          f"must be in (0, 1], got {i.chain.score_factor}")
    check(i.soft_nms.sigma > 0, "inference.soft_nms.sigma", f"must be > 0, got {i.soft_nms.sigma}")
    cfg.check_more(check)
