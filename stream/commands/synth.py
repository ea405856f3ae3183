"""``menet synth``: write the synthetic movement-submergence benchmark to disk."""
from __future__ import annotations

import argparse
import math
import re
import sys
from typing import Any

DEFAULT_NUM_VIDEOS = 60
DEFAULT_SEED = 0
DEFAULT_SIZE = "128x128"
DEFAULT_FPS = 25.0
DEFAULT_DURATION_RANGE = "20,40"
DEFAULT_NUM_CLASSES = 5
DEFAULT_VAL_FRACTION = 0.25
DEFAULT_MAX_ACTIONS = 4
DEFAULT_SCALE_RANGE = "0.02,0.8"
DEFAULT_NAME_PREFIX = "synth_"

_DESCRIPTION = """\
Generate the synthetic "movement submergence" benchmark: textured static scenes in
which the object of every class is visible for the whole video and moves with its
class-specific motion only inside annotated action segments (1 to --max-actions per
video, scales 2-80 %% of the video by default), under sensor noise, camera jitter and
brightness flicker. Few short actions in long videos (e.g. --duration-range 80,120
--max-actions 1 --scale-range 0.02,0.1) give scenes with long idle stretches.

Writes DIR/videos/*.mp4, DIR/annotations.json (ActivityNet format), DIR/split.json,
DIR/classes.txt and DIR/generator.json. Re-running resumes: complete videos are
skipped, missing or damaged ones are regenerated. The defaults take about a minute
on two CPU cores."""


class _ArgError(ValueError):
    """A bad command-line value; the message names the argument."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="generate the synthetic movement-submergence benchmark (mp4 + ActivityNet json)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created; resumable)")
    p.add_argument("--num-videos", type=int, default=DEFAULT_NUM_VIDEOS, metavar="N",
                   help=f"number of videos (default {DEFAULT_NUM_VIDEOS})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="S",
                   help=f"dataset seed; same seed, same videos and annotations (default {DEFAULT_SEED})")
    p.add_argument("--size", default=DEFAULT_SIZE, metavar="WxH",
                   help=f"frame size, even numbers >= 32 (default {DEFAULT_SIZE})")
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, metavar="F",
                   help=f"frames per second (default {DEFAULT_FPS:g})")
    p.add_argument("--duration-range", default=DEFAULT_DURATION_RANGE, metavar="A,B",
                   help=f"video length range in seconds (default {DEFAULT_DURATION_RANGE})")
    p.add_argument("--num-classes", type=int, default=DEFAULT_NUM_CLASSES, metavar="K",
                   help=f"number of action classes, 1-8 (default {DEFAULT_NUM_CLASSES})")
    p.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, metavar="F",
                   help=f"fraction of videos in the validation subset, [0, 1) (default {DEFAULT_VAL_FRACTION:g})")
    p.add_argument("--max-actions", type=int, default=DEFAULT_MAX_ACTIONS, metavar="N",
                   help=f"at most N actions per video, at least 1 (default {DEFAULT_MAX_ACTIONS})")
    p.add_argument("--scale-range", default=DEFAULT_SCALE_RANGE, metavar="A,B",
                   help="action length range as a fraction of its video, 0 < A <= B <= 1 "
                        f"(default {DEFAULT_SCALE_RANGE})")
    p.add_argument("--name-prefix", default=DEFAULT_NAME_PREFIX, metavar="P",
                   help=f"video names are P00000, P00001, ... (default {DEFAULT_NAME_PREFIX}); give a second "
                        "dataset another prefix to extract it into the same feature store and train on "
                        "both (menet train --annotations A B)")
    p.set_defaults(func=run)


def _parse_size(value: object) -> tuple[int, int]:
    text = str(value).strip().lower()
    try:
        w_text, h_text = text.split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise _ArgError(f"--size: expected WxH such as 128x128, got {value!r}") from None
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise _ArgError(f"--size: width and height must be even and >= 32, got {value!r}")
    return width, height


def _parse_pair(flag: str, value: object, example: str) -> tuple[float, float]:
    """``A,B`` (or a 2-sequence) as two finite floats with 0 < A <= B."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        parts = [str(v) for v in value]
    else:
        parts = str(value).split(",")
    try:
        lo, hi = (float(x) for x in parts)
    except ValueError:
        raise _ArgError(f"{flag}: expected A,B such as {example}, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise _ArgError(f"{flag}: need 0 < A <= B, got {value!r}")
    return lo, hi


def _parse_duration_range(value: object) -> tuple[float, float]:
    return _parse_pair("--duration-range", value, "20,40 (seconds)")


def _number(args: argparse.Namespace, attr: str, kind: type, default: object) -> Any:
    """Read a numeric option (argparse already converted it unless run() got a bare Namespace)."""
    value = getattr(args, attr, default)
    flag = "--" + attr.replace("_", "-")
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise _ArgError(f"{flag}: expected {kind.__name__}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise _ArgError(f"{flag}: must be finite, got {value!r}")
    return number


def _validate(args: argparse.Namespace) -> dict:
    """Turn parsed arguments into ``generate_dataset`` kwargs or raise ``_ArgError``."""
    out = getattr(args, "out", None)
    if not out:
        raise _ArgError("--out: an output directory is required")
    num_videos = _number(args, "num_videos", int, DEFAULT_NUM_VIDEOS)
    if num_videos < 1:
        raise _ArgError(f"--num-videos: must be >= 1, got {num_videos}")
    seed = _number(args, "seed", int, DEFAULT_SEED)
    if seed < 0:
        raise _ArgError(f"--seed: must be >= 0, got {seed}")
    width, height = _parse_size(getattr(args, "size", DEFAULT_SIZE))
    fps = _number(args, "fps", float, DEFAULT_FPS)
    if fps <= 0:
        raise _ArgError(f"--fps: must be > 0, got {fps}")
    duration_range = _parse_duration_range(getattr(args, "duration_range", DEFAULT_DURATION_RANGE))
    if duration_range[0] * fps < 50:
        raise _ArgError(f"--duration-range: videos need at least 50 frames, got {duration_range[0]:g} s at {fps:g} fps")
    num_classes = _number(args, "num_classes", int, DEFAULT_NUM_CLASSES)
    from synth import MAX_CLASSES

    if not 1 <= num_classes <= MAX_CLASSES:
        raise _ArgError(f"--num-classes: must be in [1, {MAX_CLASSES}], got {num_classes}")
    val_fraction = _number(args, "val_fraction", float, DEFAULT_VAL_FRACTION)
    if not 0 <= val_fraction < 1:
        raise _ArgError(f"--val-fraction: must be in [0, 1), got {val_fraction}")
    max_actions = _number(args, "max_actions", int, DEFAULT_MAX_ACTIONS)
    if max_actions < 1:
        raise _ArgError(f"--max-actions: must be >= 1, got {max_actions}")
    scale_range = _parse_pair("--scale-range", getattr(args, "scale_range", DEFAULT_SCALE_RANGE), "0.02,0.8")
    if scale_range[1] > 1:
        raise _ArgError(f"--scale-range: an action cannot be longer than its video (B <= 1), got {scale_range[1]:g}")
    name_prefix = str(getattr(args, "name_prefix", DEFAULT_NAME_PREFIX))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name_prefix):
        raise _ArgError(f"--name-prefix: 1-64 letters, digits, '_', '-' or '.' (not first), got {name_prefix!r}")
    return dict(out_dir=out, num_videos=num_videos, seed=seed, width=width, height=height, fps=fps,
                duration_range=duration_range, num_classes=num_classes, val_fraction=val_fraction,
                max_actions=max_actions, scale_range=scale_range, name_prefix=name_prefix)


def run(args: argparse.Namespace) -> int:
    """Generate the dataset; 0 on success, 2 on bad arguments, 1 on other failures."""
    try:
        kwargs = _validate(args)
    except _ArgError as exc:
        print(f"menet synth: error: {exc}", file=sys.stderr)
        return 2
    from synth import generate_dataset  # heavy imports (cv2) only when running

    try:
        summary = generate_dataset(progress=True, **kwargs)
    except ValueError as exc:  # e.g. --out holds a dataset made with other parameters
        print(f"menet synth: error: --out: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:
        print(f"menet synth: error: {exc}", file=sys.stderr)
        return 1

    print(f"wrote {summary.num_videos} videos to {summary.out_dir} "
          f"({len(summary.training)} training / {len(summary.validation)} validation; "
          f"{summary.generated} generated, {summary.skipped} already complete) in {summary.seconds:.1f} s")
    per_class = ", ".join(f"{name} {n}" for name, n in summary.class_counts.items())
    print(f"actions: {summary.num_actions} ({per_class})")
    print("action scale (segment length / video length):")
    bins = summary.scale_histogram()
    for k, (lo, hi, count, fraction) in enumerate(bins):
        close = "]" if k == len(bins) - 1 else ")"  # numpy's last bin includes its right edge
        print(f"  [{lo:.2f}, {hi:.2f}{close}  {count:5d}  {100 * fraction:5.1f}%  {'#' * round(40 * fraction)}")
    return 0
