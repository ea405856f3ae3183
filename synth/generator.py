"""Synthetic "movement submergence" benchmark for online temporal action detection.

MENet argues that in real videos the movement that defines an action is submerged
under strong, static, class-specific context (an accordion is visible whether or not
somebody plays it) and that action scales vary wildly. This module synthesises videos
that isolate exactly those two properties:

* every video has a static, seeded procedural background texture;
* the object of every class that acts in the video (and optionally static distractor
  objects of other classes) is visible for the *whole* video, so appearance tells you
  *which* classes may occur but never *when*;
* an object moves with its class-specific motion only inside annotated segments;
* camera noise (Gaussian sensor noise, smooth + random global jitter, brightness
  flicker) produces frame-difference energy everywhere, submerging the movement;
* action lengths are drawn log-uniformly between ~2 % and ~80 % of the video.

Public API
----------
``CLASS_LIBRARY`` / ``class_names(k)``       the class styles (shape, colour, motion)
``Action``, ``VideoSpec``                     a video description (pure data)
``random_spec(rng, ...)``                     draw a random ``VideoSpec``
``SyntheticVideo(spec).frame(i)``             deterministic random-access BGR frames
``dataset_specs(...)``                        the specs a dataset of given params holds
``generate_dataset(out_dir, ...)``            write mp4s + ActivityNet-style json, resumable
``scale_histogram(scales)``                   action-scale summary used by the CLI
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import cv2
import numpy as np

SYNTH_VERSION = "menet-synth-1"

# Fixed-length seed tuples (seed, stream tag, index): numpy's SeedSequence can map
# entropy lists that differ only by trailing zeros to the same state, so every
# stream uses exactly three words and a distinct tag.
_TAG_BACKGROUND = 1
_TAG_LAYOUT = 2
_TAG_FRAME = 3
_TAG_CAMERA = 4
_TAG_VIDEO_SPEC = 7
_TAG_SPLIT = 11

_SUBPIX_SHIFT = 4  # cv2 drawing fixed-point bits: 1/16 px so slow motion is visible
_SUBPIX = float(1 << _SUBPIX_SHIFT)


# --------------------------------------------------------------------------- classes
@dataclass(frozen=True)
class ClassStyle:
    """Appearance and motion of one action class.

    ``frequency_hz`` is the nominal motion rate; per action it is rounded to an integer
    number of cycles so the object is back at its rest pose exactly at the segment end.
    """

    name: str
    shape: str
    color_bgr: tuple[int, int, int]
    motion: str
    frequency_hz: float


CLASS_LIBRARY: tuple[ClassStyle, ...] = (
    ClassStyle("sway", "disc", (40, 40, 225), "sway", 1.0),  # red disc, horizontal oscillation
    ClassStyle("bounce", "square", (40, 200, 40), "bounce", 1.5),  # green square, vertical bounce
    ClassStyle("spin", "triangle", (225, 90, 30), "spin", 0.5),  # blue triangle, rotation
    ClassStyle("orbit", "ring", (30, 220, 235), "orbit", 0.8),  # yellow ring, circular orbit
    ClassStyle("pulse", "cross", (210, 40, 210), "pulse", 1.0),  # magenta cross, pulsing scale
    ClassStyle("figure8", "diamond", (220, 220, 40), "figure8", 0.5),  # cyan diamond
    ClassStyle("shake", "star", (20, 140, 255), "shake", 3.0),  # orange star, fast diagonal
    ClassStyle("rock", "bar", (235, 235, 235), "rock", 1.0),  # white bar, rocking rotation
)
MAX_CLASSES = len(CLASS_LIBRARY)
_STYLE_BY_NAME = {style.name: style for style in CLASS_LIBRARY}


def class_names(num_classes: int = 5) -> list[str]:
    """Names of the first ``num_classes`` classes (index = class id)."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes}")
    return [style.name for style in CLASS_LIBRARY[:num_classes]]


def _unit_polygon(shape: str) -> np.ndarray | None:
    """Outline of a shape with circumradius 1 (None for circle-drawn shapes)."""
    if shape in ("disc", "ring"):
        return None
    if shape == "square":
        a = np.deg2rad(45 + 90 * np.arange(4))
        return np.stack([np.cos(a), np.sin(a)], 1) * 0.95
    if shape == "triangle":
        a = np.deg2rad(-90 + 120 * np.arange(3))
        return np.stack([np.cos(a), np.sin(a)], 1)
    if shape == "diamond":
        return np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]], float)
    if shape == "cross":
        w, l = 0.33, 1.0
        return np.array(
            [[-w, -l], [w, -l], [w, -w], [l, -w], [l, w], [w, w],
             [w, l], [-w, l], [-w, w], [-l, w], [-l, -w], [-w, -w]], float)
    if shape == "star":
        a = np.deg2rad(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([np.cos(a) * r, np.sin(a) * r], 1)
    if shape == "bar":
        return np.array([[-1, -0.32], [1, -0.32], [1, 0.32], [-1, 0.32]], float)
    raise ValueError(f"unknown shape {shape!r}")


_UNIT_POLYGONS = {style.shape: _unit_polygon(style.shape) for style in CLASS_LIBRARY}


# ------------------------------------------------------------------------------ specs
class Action(NamedTuple):
    """One annotated action: ``[start_s, end_s)`` of class ``label``."""

    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class VideoSpec:
    """Everything that determines a synthetic video's frames (pure, hashable data).

    Action boundaries should lie on the frame grid (``random_spec`` guarantees it);
    frame ``i`` belongs to an action when ``round(start_s*fps) <= i < round(end_s*fps)``.
    ``sensor_noise`` is the Gaussian noise std in grey levels, ``jitter_px`` the global
    camera jitter std in pixels, ``flicker`` the relative brightness-gain std. Set all
    three to 0 for a noise-free video (frames outside actions are then identical).
    """

    seed: int
    num_frames: int
    actions: tuple[Action, ...] = ()
    width: int = 128
    height: int = 128
    fps: float = 25.0
    distractors: tuple[str, ...] = ()
    sensor_noise: float = 5.0
    jitter_px: float = 0.2
    flicker: float = 0.005

    def __post_init__(self) -> None:
        # Accept plain (start, end, label) tuples / lists for convenience.
        object.__setattr__(self, "actions", tuple(Action(float(s), float(e), str(l)) for s, e, l in self.actions))
        object.__setattr__(self, "distractors", tuple(self.distractors))

    @property
    def duration_s(self) -> float:
        """Video length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps

    @property
    def object_classes(self) -> tuple[str, ...]:
        """Classes whose object is on screen: action classes first, then distractors."""
        seen = dict.fromkeys(a.label for a in self.actions)
        seen.update(dict.fromkeys(self.distractors))
        return tuple(seen)

    def action_frames(self) -> list[tuple[int, int, str]]:
        """Actions as half-open frame ranges ``(start, end, label)``."""
        return [(round(a.start_s * self.fps), round(a.end_s * self.fps), a.label) for a in self.actions]

    def frame_labels(self, classes: Sequence[str]) -> np.ndarray:
        """Per-frame class id (index into ``classes``), -1 for background."""
        labels = np.full(self.num_frames, -1, dtype=np.int64)
        index = {name: i for i, name in enumerate(classes)}
        for start, end, label in self.action_frames():
            labels[max(start, 0):min(end, self.num_frames)] = index[label]
        return labels

    def validate(self) -> None:
        """Raise ``ValueError`` when the spec cannot be rendered."""
        if self.width < 16 or self.height < 16:
            raise ValueError(f"frame size must be at least 16x16, got {self.width}x{self.height}")
        if self.fps <= 0 or self.num_frames < 1:
            raise ValueError(f"need fps > 0 and num_frames >= 1, got fps={self.fps}, num_frames={self.num_frames}")
        for name in self.object_classes:
            if name not in _STYLE_BY_NAME:
                raise ValueError(f"unknown class {name!r}; known: {sorted(_STYLE_BY_NAME)}")
        if len(self.object_classes) > 9:
            raise ValueError("at most 9 distinct objects fit on the 3x3 layout grid")
        frames = sorted(self.action_frames())
        for start, end, label in frames:
            if not 0 <= start < end <= self.num_frames:
                raise ValueError(f"action {label!r} frames [{start}, {end}) outside video of {self.num_frames} frames")
        for (_, prev_end, _), (start, _, label) in zip(frames, frames[1:]):
            if start < prev_end:
                raise ValueError(f"action {label!r} starting at frame {start} overlaps the previous one")


def random_spec(
    rng: np.random.Generator,
    *,
    classes: Sequence[str] | None = None,
    width: int = 128,
    height: int = 128,
    fps: float = 25.0,
    duration_range: tuple[float, float] = (20.0, 40.0),
    max_actions: int = 4,
    scale_range: tuple[float, float] = (0.02, 0.8),
    min_gap_s: float = 1.0,
    max_distractors: int = 2,
    sensor_noise: float = 5.0,
    jitter_px: float = 0.2,
    flicker: float = 0.005,
) -> VideoSpec:
    """Draw a random video: 1..``max_actions`` non-overlapping actions.

    Action lengths are log-uniform in ``scale_range`` (fraction of the video, capped by
    what still fits), consecutive actions are separated by at least ``min_gap_s`` of
    background and the remaining background is spread randomly (including before the
    first and after the last action). All boundaries lie on the frame grid.
    """
    classes = list(classes) if classes is not None else class_names(5)
    lo_s, hi_s = duration_range
    num_frames = max(1, round(float(rng.uniform(lo_s, hi_s)) * fps))
    min_len = max(1, math.ceil(scale_range[0] * num_frames))
    max_len = max(min_len, math.floor(scale_range[1] * num_frames))
    gap = max(2, round(min_gap_s * fps))

    lengths: list[int] = []
    for _ in range(int(rng.integers(1, max_actions + 1))):
        used = sum(lengths) + gap * len(lengths)  # gaps needed between placed + new action
        hi = min(max_len, num_frames - used)
        if hi < min_len:
            break
        length = round(math.exp(rng.uniform(math.log(min_len), math.log(hi)))) if hi > min_len else min_len
        lengths.append(min(max(int(length), min_len), hi))
    if not lengths:  # video too short for even one action of min length: use it whole
        lengths = [min(num_frames, max_len)]
    rng.shuffle(lengths)

    slack = num_frames - sum(lengths) - gap * (len(lengths) - 1)
    if slack < 0:  # only possible in the degenerate fallback above
        gap, slack = 0, num_frames - sum(lengths)
    cuts = np.sort(rng.integers(0, slack + 1, size=len(lengths)))
    actions: list[Action] = []
    cursor = int(cuts[0])
    for i, length in enumerate(lengths):
        label = classes[int(rng.integers(len(classes)))]
        actions.append(Action(cursor / fps, (cursor + length) / fps, label))
        if i + 1 < len(lengths):
            cursor += length + gap + int(cuts[i + 1] - cuts[i])

    present = {a.label for a in actions}
    candidates = [c for c in classes if c not in present]
    n_distract = min(int(rng.integers(0, max_distractors + 1)), len(candidates))
    distractors = tuple(str(c) for c in rng.choice(candidates, size=n_distract, replace=False)) if n_distract else ()

    return VideoSpec(
        seed=int(rng.integers(0, 2**31 - 1)),
        num_frames=num_frames,
        actions=tuple(actions),
        width=width,
        height=height,
        fps=fps,
        distractors=distractors,
        sensor_noise=sensor_noise,
        jitter_px=jitter_px,
        flicker=flicker,
    )


# ---------------------------------------------------------------------------- render
@functools.lru_cache(maxsize=8)
def _noise_field(height: int, width: int) -> np.ndarray:
    """Fixed standard-normal field of size 2H x 2W x 3; frames use random H x W crops."""
    field_ = np.random.default_rng([height, width, 0x5EED]).standard_normal((2 * height, 2 * width, 3), dtype=np.float32)
    field_.setflags(write=False)
    return field_


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Seeded static texture: smoothed multi-scale noise + stripes + soft blobs."""
    base = rng.uniform(70, 160, size=3).astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[:] = base
    # Coarse and fine smoothed noise; mostly luminance so the scene is not a rainbow.
    for cells, amp in ((4, 30.0), (16, 12.0)):
        shape = (max(2, height * cells // 128), max(2, width * cells // 128))
        small = rng.standard_normal((*shape, 1)) + 0.4 * rng.standard_normal((*shape, 3))
        img += amp * cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(1, 3))):  # oriented stripes
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 30) * max(width, height) / 128
        wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(5, 20, size=3).astype(np.float32)
    blobs = np.zeros_like(img)
    for _ in range(int(rng.integers(3, 9))):  # soft, muted blobs
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(4, max(5, width // 4))), int(rng.integers(4, max(5, height // 4))))
        color = tuple(float(c) for c in rng.uniform(-40, 40, size=3))
        cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    img += cv2.GaussianBlur(blobs, (0, 0), sigmaX=max(1.0, width / 64))
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class _SceneObject:
    style: ClassStyle
    centre: np.ndarray  # rest position (x, y), pixels
    radius: float
    amplitude: float  # translation amplitude, pixels
    # Per action of this class: (start frame, end frame, integer cycle count).
    segments: list[tuple[int, int, int]] = field(default_factory=list)


def _pose(motion: str, u: float, cycles: int, amp: float) -> tuple[float, float, float, float]:
    """Offset (dx, dy), rotation (rad) and scale at normalised segment time ``u``.

    Every motion is exactly at rest (0, 0, 0, 1) for u = 0 and u = 1 (integer cycles),
    so nothing changes outside a segment and there is no pop at its boundaries.
    """
    ph = 2 * np.pi * cycles * u
    if motion == "sway":
        return amp * math.sin(ph), 0.0, 0.0, 1.0
    if motion == "bounce":
        return 0.0, -1.2 * amp * abs(math.sin(ph / 2)), 0.0, 1.0
    if motion == "spin":  # whole turns: the rest orientation is restored
        return 0.0, 0.0, ph, 1.0
    if motion == "orbit":  # orbit a centre offset from rest, starting at rest
        r = 0.6 * amp
        return r * (math.cos(ph) - 1.0), r * math.sin(ph), 0.0, 1.0
    if motion == "pulse":
        return 0.0, 0.0, 0.0, 1.0 + 0.45 * math.sin(ph / 2) ** 2
    if motion == "figure8":
        return amp * math.sin(ph), 0.5 * amp * math.sin(2 * ph), 0.0, 1.0
    if motion == "shake":
        d = 0.45 * amp * math.sin(ph)
        return d, d, 0.0, 1.0
    if motion == "rock":
        return 0.0, 0.0, 0.5 * math.sin(ph), 1.0
    raise ValueError(f"unknown motion {motion!r}")


class SyntheticVideo:
    """Random-access renderer for one ``VideoSpec``.

    ``frame(i)`` is a pure function of ``(spec, i)``: the background and layout are
    derived from ``spec.seed`` once, and per-frame noise from ``(spec.seed, i)``.
    A 128x128 frame costs well under 1 ms.
    """

    def __init__(self, spec: VideoSpec) -> None:
        spec.validate()
        self.spec = spec
        self._background = _background(np.random.default_rng([spec.seed, _TAG_BACKGROUND, 0]), spec.width, spec.height)
        self._objects = self._layout()
        # Smooth camera shake: a few random sinusoids, evaluated at any t (random access).
        cam = np.random.default_rng([spec.seed, _TAG_CAMERA, 0])
        self._shake_freq = cam.uniform(0.2, 2.5, size=(2, 3))
        self._shake_phase = cam.uniform(0, 2 * np.pi, size=(2, 3))
        self._noise = _noise_field(spec.height, spec.width) * np.float32(spec.sensor_noise) if spec.sensor_noise > 0 else None

    # -- public ------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.spec.num_frames

    def __len__(self) -> int:
        return self.spec.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.spec.num_frames):
            yield self.frame(i)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as an ``HxWx3`` uint8 BGR array."""
        if not 0 <= i < self.spec.num_frames:
            raise IndexError(f"frame {i} outside [0, {self.spec.num_frames})")
        spec = self.spec
        img = self._background.copy()
        for obj in self._objects:
            self._draw(img, obj, i)
        if spec.jitter_px == 0 and spec.sensor_noise == 0 and spec.flicker == 0:
            return img  # noise-free: exactly reproducible pixels, no float round trip

        rng = np.random.default_rng([spec.seed, _TAG_FRAME, i])
        if spec.jitter_px > 0:
            t = i / spec.fps
            smooth = np.sin(2 * np.pi * self._shake_freq * t + self._shake_phase).sum(1) / math.sqrt(1.5)
            dx, dy = spec.jitter_px * (0.8 * smooth + 0.6 * rng.standard_normal(2))
            warp = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
            img = cv2.warpAffine(img, warp, (spec.width, spec.height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        out = img.astype(np.float32)
        if spec.flicker > 0:
            out *= np.float32(1.0 + spec.flicker * float(rng.standard_normal()))
        if self._noise is not None:
            # A random crop of the per-video noise field: drawing 3*H*W fresh normals
            # per frame would cost more than the whole rest of the frame.
            oy = int(rng.integers(0, spec.height))
            ox = int(rng.integers(0, spec.width))
            out += self._noise[oy:oy + spec.height, ox:ox + spec.width]
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)

    def active_labels(self, i: int) -> list[str]:
        """Labels of the actions that contain frame ``i`` (empty = background)."""
        return [label for start, end, label in self.spec.action_frames() if start <= i < end]

    # -- internals ---------------------------------------------------------------
    def _layout(self) -> list[_SceneObject]:
        """Place one object per present class in distinct cells of a 3x3 grid."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, _TAG_LAYOUT, 0])
        side = min(spec.width, spec.height)
        cell_w, cell_h = spec.width / 3, spec.height / 3
        cells = rng.permutation(9)
        objects: list[_SceneObject] = []
        for k, name in enumerate(spec.object_classes):
            style = _STYLE_BY_NAME[name]
            radius = side * rng.uniform(0.07, 0.095)  # diameter 14-19 % of the frame: context
            amplitude = side * 0.065 * rng.uniform(0.85, 1.15)
            row, col = divmod(int(cells[k]), 3)
            # Slack inside the cell once the object and its motion envelope are accounted for.
            slack_x = max(0.0, cell_w / 2 - radius - amplitude)
            slack_y = max(0.0, cell_h / 2 - radius - amplitude)
            centre = np.array([(col + 0.5) * cell_w + rng.uniform(-slack_x, slack_x),
                               (row + 0.5) * cell_h + rng.uniform(-slack_y, slack_y)])
            obj = _SceneObject(style, centre, radius, amplitude)
            for start, end, label in spec.action_frames():
                if label == name:
                    cycles = max(1, round(style.frequency_hz * (end - start) / spec.fps))
                    obj.segments.append((start, end, cycles))
            objects.append(obj)
        return objects

    def _draw(self, img: np.ndarray, obj: _SceneObject, i: int) -> None:
        dx = dy = angle = 0.0
        scale = 1.0
        for start, end, cycles in obj.segments:
            if start <= i < end:
                dx, dy, angle, scale = _pose(obj.style.motion, (i - start) / (end - start), cycles, obj.amplitude)
                break
        cx, cy = obj.centre[0] + dx, obj.centre[1] + dy
        r = obj.radius * scale
        color = obj.style.color_bgr
        outline = tuple(c // 3 for c in color)
        poly = _UNIT_POLYGONS[obj.style.shape]
        if poly is None:
            centre = (int(round(cx * _SUBPIX)), int(round(cy * _SUBPIX)))
            if obj.style.shape == "disc":
                cv2.circle(img, centre, int(round(r * _SUBPIX)), color, -1, cv2.LINE_AA, _SUBPIX_SHIFT)
            else:  # ring: thick circle; thickness is integer pixels in cv2
                thick = max(2, int(round(r * 0.4)))
                cv2.circle(img, centre, int(round((r - thick / 2) * _SUBPIX)), color, thick, cv2.LINE_AA, _SUBPIX_SHIFT)
            return
        c, s = math.cos(angle), math.sin(angle)
        pts = poly @ np.array([[c, s], [-s, c]]) * r + (cx, cy)
        pts = np.round(pts * _SUBPIX).astype(np.int32)
        cv2.fillPoly(img, [pts], color, cv2.LINE_AA, _SUBPIX_SHIFT)
        cv2.polylines(img, [pts], True, outline, 1, cv2.LINE_AA, _SUBPIX_SHIFT)


# --------------------------------------------------------------------------- dataset
SCALE_BINS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.4, 1.0)


def scale_histogram(scales: Sequence[float], bins: Sequence[float] = SCALE_BINS) -> list[tuple[float, float, int, float]]:
    """``(lo, hi, count, fraction)`` per bin of action scale (length / video length)."""
    arr = np.asarray(list(scales), dtype=float)
    counts, _ = np.histogram(arr, bins=np.asarray(bins, dtype=float))
    total = max(1, len(arr))
    return [(float(bins[k]), float(bins[k + 1]), int(n), n / total) for k, n in enumerate(counts)]


@dataclass(frozen=True)
class DatasetConfig:
    """Parameters that determine the *content* of every video of a dataset.

    ``num_videos`` and ``val_fraction`` are deliberately not part of it: video ``i``
    depends only on ``(seed, i)`` and these, so a dataset can be extended in place.
    """

    seed: int = 0
    width: int = 128
    height: int = 128
    fps: float = 25.0
    duration_range: tuple[float, float] = (20.0, 40.0)
    num_classes: int = 5
    max_actions: int = 4
    scale_range: tuple[float, float] = (0.02, 0.8)
    min_gap_s: float = 1.0
    max_distractors: int = 2
    sensor_noise: float = 5.0
    jitter_px: float = 0.2
    flicker: float = 0.005
    # file stem of video i is f"{name_prefix}{i:05d}": two datasets with different prefixes can
    # share one feature store and be trained on together (`menet train --annotations A B`)
    name_prefix: str = "synth_"

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending parameter."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.name_prefix):
            raise ValueError(f"name_prefix must be 1-64 letters, digits, '_', '-' or '.' (not first), "
                             f"got {self.name_prefix!r}")
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise ValueError(f"size must be even and at least 32x32, got {self.width}x{self.height}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be positive, got {self.fps}")
        lo, hi = self.duration_range
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"duration_range must satisfy 0 < A <= B, got {lo},{hi}")
        if lo * self.fps < 50:
            raise ValueError(f"duration_range: videos need at least 50 frames, got {lo} s at {self.fps} fps")
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [1, {MAX_CLASSES}], got {self.num_classes}")
        if self.max_actions < 1:
            raise ValueError(f"max_actions must be >= 1, got {self.max_actions}")
        smin, smax = self.scale_range
        if not 0 < smin <= smax <= 1:
            raise ValueError(f"scale_range must satisfy 0 < min <= max <= 1, got {smin},{smax}")
        for name in ("min_gap_s", "sensor_noise", "jitter_px", "flicker"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {self.max_distractors}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["duration_range"] = list(self.duration_range)
        d["scale_range"] = list(self.scale_range)
        if self.name_prefix == DatasetConfig.name_prefix:
            del d["name_prefix"]  # the default: generator.json files written before the option stay valid
        d["version"] = SYNTH_VERSION
        return d


def video_name(index: int, prefix: str = "synth_") -> str:
    """File stem of dataset video ``index``."""
    return f"{prefix}{index:05d}"


def dataset_specs(num_videos: int, config: DatasetConfig | None = None) -> list[tuple[str, VideoSpec]]:
    """The ``(name, spec)`` pairs of a dataset, without rendering anything.

    The live "synthetic" source can use this to stream exactly the videos of a
    written dataset.
    """
    config = config or DatasetConfig()
    config.validate()
    classes = class_names(config.num_classes)
    specs = []
    for i in range(num_videos):
        rng = np.random.default_rng([config.seed, _TAG_VIDEO_SPEC, i])
        spec = random_spec(
            rng, classes=classes, width=config.width, height=config.height, fps=config.fps,
            duration_range=config.duration_range, max_actions=config.max_actions,
            scale_range=config.scale_range, min_gap_s=config.min_gap_s,
            max_distractors=config.max_distractors, sensor_noise=config.sensor_noise,
            jitter_px=config.jitter_px, flicker=config.flicker)
        specs.append((video_name(i, config.name_prefix), spec))
    return specs


def split_names(names: Sequence[str], seed: int, val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic training/validation split with ``round(val_fraction * n)`` validation videos.

    Both subsets are kept non-empty when there are at least two videos and
    ``0 < val_fraction < 1``.
    """
    n = len(names)
    n_val = round(val_fraction * n)
    if n >= 2 and 0 < val_fraction < 1:
        n_val = min(max(n_val, 1), n - 1)
    order = np.random.default_rng([seed, _TAG_SPLIT, 0]).permutation(n)
    val = set(order[:n_val].tolist())
    return [x for k, x in enumerate(names) if k not in val], [x for k, x in enumerate(names) if k in val]


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + ``os.replace`` so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def count_video_frames(path: str | os.PathLike, width: int | None = None, height: int | None = None) -> int:
    """Decoded frame count of a video file, -1 if it cannot be opened or has the wrong size.

    Decodes every frame (cheap at benchmark resolutions) instead of trusting the
    container header, so a damaged stream is caught too.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return -1
        if width is not None and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) != width:
            return -1
        if height is not None and int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) != height:
            return -1
        header = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        n = 0
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        return n if header in (n, 0) else -1
    finally:
        cap.release()


def video_is_complete(path: str | os.PathLike, spec: VideoSpec) -> bool:
    """True when ``path`` decodes to exactly ``spec.num_frames`` frames of the right size."""
    p = Path(path)
    return p.is_file() and p.stat().st_size > 0 and count_video_frames(p, spec.width, spec.height) == spec.num_frames


def write_video(spec: VideoSpec, path: str | os.PathLike, tmp_dir: str | os.PathLike | None = None) -> None:
    """Render ``spec`` to an mp4 (fourcc 'mp4v') atomically and verify it reads back.

    The file is written under ``tmp_dir`` (same filesystem as ``path``) and only moved
    into place with ``os.replace`` after the decoded frame count matched.
    """
    path = Path(path)
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{path.stem}.partial{os.getpid()}.mp4"  # .mp4 so cv2 picks the container
    video = SyntheticVideo(spec)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), spec.fps, (spec.width, spec.height))
    try:
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter could not open {tmp} with fourcc mp4v")
        for frame in video:
            writer.write(frame)
        writer.release()
        n = count_video_frames(tmp, spec.width, spec.height)
        if n != spec.num_frames:
            raise RuntimeError(f"{path.name}: wrote {spec.num_frames} frames but read back {n}")
        os.replace(tmp, path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)


def spec_annotation(spec: VideoSpec, subset: str) -> dict:
    """ActivityNet-style database entry of one video."""
    return {
        "subset": subset,
        "duration": round(spec.duration_s, 6),
        "fps": spec.fps,
        "resolution": f"{spec.width}x{spec.height}",
        "annotations": [{"segment": [round(a.start_s, 6), round(a.end_s, 6)], "label": a.label} for a in spec.actions],
    }


@dataclass
class DatasetSummary:
    """What ``generate_dataset`` did."""

    out_dir: Path
    classes: list[str]
    training: list[str]
    validation: list[str]
    generated: int
    skipped: int
    num_actions: int
    class_counts: dict[str, int]
    scales: list[float]
    seconds: float

    @property
    def num_videos(self) -> int:
        return len(self.training) + len(self.validation)

    def scale_histogram(self) -> list[tuple[float, float, int, float]]:
        return scale_histogram(self.scales)


def generate_dataset(
    out_dir: str | os.PathLike,
    num_videos: int = 60,
    seed: int = 0,
    width: int = 128,
    height: int = 128,
    fps: float = 25.0,
    duration_range: tuple[float, float] = (20.0, 40.0),
    num_classes: int = 5,
    val_fraction: float = 0.25,
    *,
    progress: bool = False,
    **config_overrides: object,
) -> DatasetSummary:
    """Write a synthetic dataset to ``out_dir`` (resumable, atomic per file).

    Layout::

        out_dir/generator.json    content parameters (checked on re-runs)
        out_dir/classes.txt       one class name per line, line index = class id
        out_dir/videos/<name>.mp4
        out_dir/annotations.json  ActivityNet format, version "menet-synth-1"
        out_dir/split.json        {"training": [...], "validation": [...]}

    Videos that already exist and decode to the expected frame count are skipped;
    missing, truncated or corrupt ones are regenerated. ``annotations.json`` and
    ``split.json`` are written last, so their presence means the dataset is complete.
    Extra keyword arguments override other ``DatasetConfig`` fields (e.g.
    ``sensor_noise=0``). Raises ``ValueError`` for bad parameters or when ``out_dir``
    holds a dataset generated with different content parameters.
    """
    t0 = time.perf_counter()
    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    config = DatasetConfig(seed=seed, width=width, height=height, fps=fps,
                           duration_range=tuple(duration_range), num_classes=num_classes)  # type: ignore[arg-type]
    config = replace(config, **config_overrides)  # type: ignore[arg-type]
    config.validate()

    out = Path(out_dir)
    videos_dir = out / "videos"
    tmp_dir = out / ".partial"
    videos_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp_dir, ignore_errors=True)  # leftovers of a crashed run

    params_path = out / "generator.json"
    params = config.to_json()
    if params_path.exists():
        try:
            old = json.loads(params_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None  # unreadable: cannot have been written by us completely, rewrite
        if old is not None and old != params:
            diff = ", ".join(f"{k}: {old.get(k)!r} != {v!r}" for k, v in params.items() if old.get(k) != v)
            raise ValueError(f"{out} holds a synthetic dataset with different parameters ({diff}); "
                             "use another output directory")
    _atomic_write_text(params_path, json.dumps(params, indent=2) + "\n")
    classes = class_names(config.num_classes)
    _atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in classes))

    specs = dataset_specs(num_videos, config)
    generated = skipped = 0
    from tqdm import tqdm  # local: keep the module importable by the live pipeline without tqdm

    for name, spec in tqdm(specs, desc="synth", unit="video", disable=not progress):
        path = videos_dir / f"{name}.mp4"
        if video_is_complete(path, spec):
            skipped += 1
            continue
        write_video(spec, path, tmp_dir)
        generated += 1
    shutil.rmtree(tmp_dir, ignore_errors=True)

    training, validation = split_names([n for n, _ in specs], config.seed, val_fraction)
    subset = {n: "training" for n in training} | {n: "validation" for n in validation}
    database = {name: spec_annotation(spec, subset[name]) for name, spec in specs}
    annotations = {"version": SYNTH_VERSION, "taxonomy": classes, "database": database}
    _atomic_write_text(out / "annotations.json", json.dumps(annotations, indent=1) + "\n")
    _atomic_write_text(out / "split.json", json.dumps({"training": training, "validation": validation}, indent=1) + "\n")

    class_counts = {c: 0 for c in classes}
    scales: list[float] = []
    for _, spec in specs:
        for start, end, label in spec.action_frames():
            class_counts[label] += 1
            scales.append((end - start) / spec.num_frames)
    return DatasetSummary(out, classes, training, validation, generated, skipped, len(scales),
                          class_counts, scales, time.perf_counter() - t0)
