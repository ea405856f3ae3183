"""Label fusion: give class-agnostic proposals action labels from an external classifier.

The paper's protocol (as in BSN/BMN/G-TAD): every proposal of a video is duplicated
for each of the video's top-k classes with ``score = proposal_score * class_score``
(:func:`fuse_top_k`). The scores come from files:

* THUMOS-14: UntrimmedNet-style matrices ``[num_videos, num_columns]`` stored as
  ``.npy`` or whitespace text, with a video list (one name per line, row order) or a
  row-name pattern, and the ``detclasslist.txt`` class list (``<id> <ClassName>``
  lines). See :func:`load_thumos_scores`.
* ActivityNet: JSON of video-level scores, as CUHK's classification results are
  shipped. See :func:`load_activitynet_scores`.

The customary ``k`` is 2 on ActivityNet-1.3 (BMN, G-TAD) and THUMOS-14 work commonly
uses the top-2 UntrimmedNet classes as well, hence the default. Live streams, which
have no video-level score, are labelled during decoding (``decode.py``: the heads'
class logits or the segment classifier), not here.

Malformed files raise :class:`ScoreFileError` (a ``ValueError``) naming the file
and the line or JSON key; unknown videos raise :class:`UnknownVideoError` (a
``KeyError``) naming the video.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "ScoreFileError",
    "UnknownVideoError",
    "VideoScores",
    "load_class_list",
    "load_video_list",
    "load_score_matrix",
    "load_thumos_scores",
    "load_activitynet_scores",
    "fuse_top_k",
    "fuse_video",
]

PathLike = Union[str, "os.PathLike[str]"]


class ScoreFileError(ValueError):
    """A classifier score / class list / video list file is malformed.

    The message starts with ``<path>:<line>:`` or ``<path>: key <key>:`` so the
    offending place can be found; ``path``, ``line`` and ``key`` are also kept as
    attributes (``None`` where not applicable).
    """

    def __init__(self, path: PathLike, message: str, *, line: Optional[int] = None,
                 key: Optional[str] = None) -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        where = self.path
        if line is not None:
            where += f":{line}"
        if key is not None:
            where += f": key {key!r}"
        super().__init__(f"{where}: {message}")


class UnknownVideoError(KeyError):
    """A video has no classifier scores. ``str()`` gives the readable message."""

    def __init__(self, video: str, message: str) -> None:
        self.video = video
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


# ----------------------------------------------------------------------------- container


class VideoScores:
    """Video-level class scores: one row of ``num_classes`` scores per video.

    Args:
        videos: video names, one per row of ``scores``; must be unique.
        class_names: class names, one per column; must be unique.
        scores: ``[num_videos, num_classes]`` finite floats.
        source: where the scores came from (used in error messages).
    """

    def __init__(self, videos: Sequence[str], class_names: Sequence[str], scores: np.ndarray,
                 source: str = "<memory>") -> None:
        mat = np.asarray(scores, dtype=np.float64)
        videos = [str(v) for v in videos]
        class_names = [str(c) for c in class_names]
        if mat.ndim != 2 or mat.shape != (len(videos), len(class_names)):
            raise ValueError(
                f"{source}: scores must have shape [{len(videos)} videos, {len(class_names)} classes], "
                f"got {mat.shape}"
            )
        if not np.isfinite(mat).all():
            r, c = np.argwhere(~np.isfinite(mat))[0]
            raise ValueError(f"{source}: non-finite score for video {videos[r]!r}, class {class_names[c]!r}")
        _check_unique(videos, f"{source}: duplicate video")
        _check_unique(class_names, f"{source}: duplicate class")
        self._videos = tuple(videos)
        self._classes = tuple(class_names)
        self._row = {v: i for i, v in enumerate(videos)}
        self._scores = mat
        self._scores.setflags(write=False)
        self.source = source

    @property
    def videos(self) -> tuple[str, ...]:
        return self._videos

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._classes

    @property
    def matrix(self) -> np.ndarray:
        """Read-only ``[num_videos, num_classes]`` score matrix."""
        return self._scores

    def __len__(self) -> int:
        return len(self._videos)

    def __contains__(self, video: object) -> bool:
        return video in self._row

    def _row_of(self, video: str) -> int:
        try:
            return self._row[video]
        except KeyError:
            pass
        # ActivityNet names appear both with and without the "v_" prefix (BMN strips it); say so.
        alt = video[2:] if video.startswith("v_") else "v_" + video
        hint = f" (but {alt!r} is present)" if alt in self._row else ""
        raise UnknownVideoError(video, f"no classifier scores for video {video!r} in {self.source}{hint}")

    def scores(self, video: str) -> np.ndarray:
        """``[num_classes]`` scores of ``video`` (a copy), in :attr:`class_names` order."""
        return self._scores[self._row_of(video)].copy()

    def as_dict(self, video: str) -> dict[str, float]:
        """``{class_name: score}`` for ``video``."""
        row = self._scores[self._row_of(video)]
        return {c: float(s) for c, s in zip(self._classes, row)}

    def top_k(self, video: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best classes of ``video`` as ``(class_name, score)``, best first.

        Ties keep class-list order. ``k`` larger than the number of classes returns
        all classes. Raises :class:`UnknownVideoError` for an unknown video and
        ``ValueError`` for ``k < 1``.
        """
        _check_k(k)
        row = self._scores[self._row_of(video)]
        order = np.argsort(-row, kind="stable")[:k]
        return [(self._classes[i], float(row[i])) for i in order]


def _check_unique(items: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{what} {item!r}")
        seen.add(item)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


# ----------------------------------------------------------------------------- THUMOS loaders


def _read_lines(path: PathLike) -> list[str]:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise ScoreFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def load_class_list(path: PathLike) -> list[tuple[int, str]]:
    """Read a THUMOS ``detclasslist.txt``-style file: ``<id> <ClassName>`` per line.

    Blank lines are skipped. Returns ``[(id, name), ...]`` in file order. Raises
    :class:`ScoreFileError` naming the line for a malformed line, a non-integer
    id, or a repeated id or name.
    """
    out: list[tuple[int, str]] = []
    ids: dict[int, int] = {}
    names: dict[str, int] = {}
    for lineno, raw in enumerate(_read_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ScoreFileError(path, f"expected '<id> <ClassName>', got {raw!r}", line=lineno)
        try:
            cid = int(parts[0])
        except ValueError:
            raise ScoreFileError(path, f"class id {parts[0]!r} is not an integer", line=lineno) from None
        name = parts[1]
        if cid in ids:
            raise ScoreFileError(path, f"class id {cid} already used on line {ids[cid]}", line=lineno)
        if name in names:
            raise ScoreFileError(path, f"class {name!r} already listed on line {names[name]}", line=lineno)
        ids[cid] = lineno
        names[name] = lineno
        out.append((cid, name))
    if not out:
        raise ScoreFileError(path, "class list is empty")
    return out


def load_video_list(path: PathLike) -> list[str]:
    """Read video names, one per line, in score-matrix row order.

    Surrounding whitespace is stripped and trailing blank lines are ignored; a
    blank line *between* names is an error (it would shift the row mapping), as
    is a repeated name or a name containing whitespace.
    """
    lines = _read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, int] = {}
    out: list[str] = []
    for lineno, raw in enumerate(lines, start=1):
        name = raw.strip()
        if not name:
            raise ScoreFileError(path, "blank line inside the video list", line=lineno)
        if len(name.split()) != 1:
            raise ScoreFileError(path, f"expected one video name per line, got {raw!r}", line=lineno)
        if name in seen:
            raise ScoreFileError(path, f"video {name!r} already listed on line {seen[name]}", line=lineno)
        seen[name] = lineno
        out.append(name)
    if not out:
        raise ScoreFileError(path, "video list is empty")
    return out


def load_score_matrix(path: PathLike) -> np.ndarray:
    """Load a 2-D score matrix from ``.npy`` or whitespace-separated text.

    Text files: one row per non-blank line; ``#`` starts a comment. Errors name
    the line (ragged row, non-numeric or non-finite value).
    """
    p = Path(path)
    if p.suffix == ".npy":
        try:
            mat = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ScoreFileError(path, f"cannot read .npy: {exc}") from exc
        if mat.ndim != 2:
            raise ScoreFileError(path, f"expected a 2-D matrix, got shape {mat.shape}")
        if not np.issubdtype(mat.dtype, np.number) or np.issubdtype(mat.dtype, np.complexfloating):
            raise ScoreFileError(path, f"expected real numbers, got dtype {mat.dtype}")
        mat = mat.astype(np.float64)
        if not np.isfinite(mat).all():
            r, c = np.argwhere(~np.isfinite(mat))[0]
            raise ScoreFileError(path, f"non-finite value at row {r}, column {c}")
        return mat
    rows: list[list[float]] = []
    width: Optional[int] = None
    width_line = 0
    for lineno, raw in enumerate(_read_lines(path), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            row = [float(tok) for tok in line.split()]
        except ValueError:
            bad = next(t for t in line.split() if not _is_float(t))
            raise ScoreFileError(path, f"{bad!r} is not a number", line=lineno) from None
        if not all(np.isfinite(row)):
            raise ScoreFileError(path, "non-finite value", line=lineno)
        if width is None:
            width, width_line = len(row), lineno
        elif len(row) != width:
            raise ScoreFileError(
                path, f"{len(row)} values, but line {width_line} has {width}", line=lineno
            )
        rows.append(row)
    if not rows:
        raise ScoreFileError(path, "score matrix is empty")
    return np.asarray(rows, dtype=np.float64)


def _is_float(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def load_thumos_scores(
    matrix_path: PathLike,
    class_list_path: PathLike,
    video_list_path: Optional[PathLike] = None,
    *,
    row_name_format: Optional[str] = None,
) -> VideoScores:
    """Load UntrimmedNet-style THUMOS-14 video-level scores.

    Args:
        matrix_path: ``.npy`` or whitespace text, ``[num_videos, num_columns]``.
        class_list_path: ``detclasslist.txt``-style ``<id> <ClassName>`` lines.
            Column mapping: if the matrix has exactly one column per listed class,
            columns follow the class-list order; otherwise each class reads column
            ``id - 1`` (1-based UCF-101 ids, as in UntrimmedNet's 101-way output,
            e.g. ``7 BaseballPitch`` is column 6).
        video_list_path: one video name per line, naming the matrix rows in order.
        row_name_format: alternative to ``video_list_path``: a ``str.format``
            pattern applied to the 1-based row number, e.g. ``"video_test_{:07d}"``
            (UntrimmedNet matrices are indexed by THUMOS video number).

    Exactly one of ``video_list_path`` / ``row_name_format`` must be given.
    """
    if (video_list_path is None) == (row_name_format is None):
        raise ValueError("give exactly one of video_list_path or row_name_format")
    mat = load_score_matrix(matrix_path)
    classes = load_class_list(class_list_path)
    n_rows, n_cols = mat.shape
    if n_cols == len(classes):
        cols = list(range(n_cols))
    else:
        cols = []
        for cid, name in classes:
            if not 1 <= cid <= n_cols:
                raise ScoreFileError(
                    matrix_path,
                    f"has {n_cols} columns: not one per class of {class_list_path} ({len(classes)}), "
                    f"and class {name!r} id {cid} is outside columns 1..{n_cols}",
                )
            cols.append(cid - 1)
    if video_list_path is not None:
        videos = load_video_list(video_list_path)
        if len(videos) != n_rows:
            raise ScoreFileError(
                video_list_path, f"lists {len(videos)} videos but {matrix_path} has {n_rows} rows"
            )
    else:
        assert row_name_format is not None
        videos = [row_name_format.format(i + 1) for i in range(n_rows)]
    return VideoScores(videos, [n for _, n in classes], mat[:, cols], source=str(matrix_path))


# ----------------------------------------------------------------------------- ActivityNet loader


def load_activitynet_scores(path: PathLike) -> VideoScores:
    """Load ActivityNet-style video-level classification scores from JSON.

    Accepted layouts (the ``"results"`` wrapper is optional in the first two):

    * ``{"results": {video: {class_name: score, ...}, ...}}``
    * ``{video: {class_name: score, ...}, ...}``
    * ``{"results": {video: [score, ...]}, "class": [class_name, ...]}`` — the
      layout of CUHK's ``cuhk_val_simp_share.json`` used by BMN/G-TAD (``"classes"``
      is accepted for the class key too).

    Every video must score the same set of classes. Video names are kept as
    written (CUHK files omit ActivityNet's ``v_`` prefix). Errors name the file
    and JSON key.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise ScoreFileError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    except UnicodeDecodeError as exc:
        raise ScoreFileError(path, f"not UTF-8 text ({exc.reason})") from exc
    if not isinstance(data, dict):
        raise ScoreFileError(path, f"top level must be an object, got {type(data).__name__}")
    class_key: Optional[str] = None
    if "results" in data:
        # Only the wrapped layout can carry a class list; unwrapped, every key is a video.
        class_key = next((k for k in ("class", "classes") if k in data), None)
        results = data["results"]
        prefix = "results/"
        if not isinstance(results, dict):
            raise ScoreFileError(path, f"must be an object of videos, got {type(results).__name__}",
                                 key="results")
    else:
        results = data
        prefix = ""
    if not results:
        raise ScoreFileError(path, "no videos", key=prefix.rstrip("/") or None)

    videos = list(results.keys())
    first = results[videos[0]]
    if isinstance(first, list):
        if class_key is None:
            raise ScoreFileError(path, "scores are lists but there is no 'class' list naming them",
                                 key=f"{prefix}{videos[0]}")
        class_names = data[class_key]
        if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
            raise ScoreFileError(path, "must be a list of class names", key=class_key)
        seen: set[str] = set()
        for i, c in enumerate(class_names):
            if c in seen:
                raise ScoreFileError(path, f"class {c!r} listed twice (index {i})", key=class_key)
            seen.add(c)
        rows = [_list_row(path, f"{prefix}{v}", results[v], len(class_names)) for v in videos]
    elif isinstance(first, dict):
        class_names = [str(c) for c in first.keys()]
        expected = set(class_names)
        rows = []
        for v in videos:
            entry = results[v]
            key = f"{prefix}{v}"
            if not isinstance(entry, dict):
                raise ScoreFileError(path, f"expected an object of class scores, got {type(entry).__name__}",
                                     key=key)
            if set(entry.keys()) != expected:
                missing = sorted(expected - set(entry))
                extra = sorted(set(entry) - expected)
                raise ScoreFileError(
                    path, f"class set differs from video {videos[0]!r}: missing {missing[:5]}, extra {extra[:5]}",
                    key=key,
                )
            rows.append([_number(path, f"{key}/{c}", entry[c]) for c in class_names])
    else:
        raise ScoreFileError(path, f"expected class scores (object or list), got {type(first).__name__}",
                             key=f"{prefix}{videos[0]}")
    if not class_names:
        raise ScoreFileError(path, "no classes", key=f"{prefix}{videos[0]}")
    return VideoScores(videos, class_names, np.asarray(rows, dtype=np.float64), source=str(path))


def _list_row(path: PathLike, key: str, entry: Any, n: int) -> list[float]:
    if not isinstance(entry, list):
        raise ScoreFileError(path, f"expected a list of {n} scores, got {type(entry).__name__}", key=key)
    if len(entry) != n:
        raise ScoreFileError(path, f"has {len(entry)} scores but there are {n} classes", key=key)
    return [_number(path, f"{key}[{i}]", x) for i, x in enumerate(entry)]


def _number(path: PathLike, key: str, value: Any) -> float:
    # bool is an int subclass; a true/false score is a mistake, not 1.0/0.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScoreFileError(path, f"score must be a number, got {value!r}", key=key)
    if not np.isfinite(value):
        raise ScoreFileError(path, f"score must be finite, got {value!r}", key=key)
    return float(value)


# ----------------------------------------------------------------------------- fusion


def fuse_top_k(
    proposals: Iterable[Mapping[str, Any]],
    class_scores: Sequence[tuple[str, float]],
    k: int = 2,
) -> list[dict[str, Any]]:
    """Label class-agnostic proposals with a video's top-``k`` classes.

    Each proposal ``{"segment": [start, end], "score": s, ...}`` is emitted once
    per class among the ``k`` best of ``class_scores`` with
    ``score = s * class_score`` and ``label = class_name`` (the BSN/BMN/G-TAD
    fusion). Other keys of the proposal are copied. ``class_scores`` need not be
    sorted (e.g. :meth:`VideoScores.top_k` output or all classes); ties keep their
    given order, and ``k`` above the number of classes uses them all.

    The customary ``k`` is 2 (ActivityNet-1.3 in BMN/G-TAD; THUMOS-14 top-2
    UntrimmedNet classes). The result is sorted by fused score, descending
    (stable: ties stay class-major, then proposal order).
    """
    _check_k(k)
    cls = list(class_scores)
    if not cls:
        raise ValueError("class_scores is empty")
    pairs: list[tuple[str, float]] = []
    for i, item in enumerate(cls):
        try:
            name, value = item
            value = float(value)
        except (TypeError, ValueError):
            name, value = None, float("nan")
        if not isinstance(name, str) or not np.isfinite(value):
            raise ValueError(f"class_scores[{i}] must be (class_name, finite score), got {item!r}")
        pairs.append((name, value))
    chosen = sorted(pairs, key=lambda t: -t[1])[:k]  # sorted() is stable
    props = list(proposals)
    for i, p in enumerate(props):
        if "segment" not in p or "score" not in p:
            raise ValueError(f"proposal {i} needs 'segment' and 'score' keys, has {sorted(p)}")
        if len(p["segment"]) != 2:
            raise ValueError(f"proposal {i}: segment must be [start, end], got {p['segment']!r}")
    out: list[dict[str, Any]] = []
    for name, cscore in chosen:
        for p in props:
            fused = dict(p)
            fused["segment"] = [float(p["segment"][0]), float(p["segment"][1])]
            fused["score"] = float(p["score"]) * float(cscore)
            fused["label"] = name
            out.append(fused)
    out.sort(key=lambda d: -d["score"])
    return out


def fuse_video(
    proposals: Iterable[Mapping[str, Any]],
    video_scores: VideoScores,
    video: str,
    k: int = 2,
) -> list[dict[str, Any]]:
    """:func:`fuse_top_k` with the ``k`` best classes of ``video`` from ``video_scores``."""
    return fuse_top_k(proposals, video_scores.top_k(video, k), k)
