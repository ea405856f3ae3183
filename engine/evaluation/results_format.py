"""Prediction files: readers and writers for the two submission formats.

* ActivityNet results JSON (what ``ANETdetection._import_prediction`` /
  ``ANETproposal._import_proposal`` read)::

    {"version": ..., "results": {video: [{"label": str, "score": float,
                                          "segment": [start, end]}]},
     "external_data": {...}}

* THUMOS-14 submission text (what ``TH14evalDet.m`` reads with
  ``textread(file, '%s%f%f%d%f')``): one detection per line,
  ``video start end class_id score``, whitespace separated.

Readers validate strictly and raise :class:`EvaluationInputError` naming the file
and the line (text) or JSON path (``results.video_x[3].segment``), because a
silently skipped line changes a published number.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

PathLike = str | os.PathLike


class EvaluationInputError(ValueError):
    """Malformed ground-truth or prediction input; the message names file and place."""


@dataclass
class Predictions:
    """Flat, column-oriented predictions in file order.

    ``labels`` holds class names (JSON) or integer class ids (THUMOS text, mapped to
    names against the ground truth later). ``lines`` holds the 1-based source line of
    each text prediction (0 for JSON), so late errors can still point at the line.
    """

    source: str
    videos: np.ndarray  # object array of str
    starts: np.ndarray  # float64
    ends: np.ndarray  # float64
    scores: np.ndarray  # float64
    labels: np.ndarray  # object array of str, or int64 class ids when labels_are_ids
    labels_are_ids: bool = False
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def subset(self, mask: np.ndarray) -> "Predictions":
        """Rows where ``mask`` is true, order kept."""
        return Predictions(
            self.source, self.videos[mask], self.starts[mask], self.ends[mask],
            self.scores[mask], self.labels[mask], self.labels_are_ids, self.lines[mask],
        )


def _obj_array(items: list[str]) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _finite_number(value: Any, where: str) -> float:
    # bool is an int subclass in Python but never a valid number in these files
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EvaluationInputError(f"{where}: expected a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise EvaluationInputError(f"{where}: expected a finite number, got {value!r}")
    return out


# --------------------------------------------------------------------------- readers


def read_json(path: PathLike) -> Any:
    """Parse a JSON input file; a syntax error names the file, line and column."""
    try:
        with open(path, "r", encoding="utf-8") as fobj:
            return json.load(fobj)
    except json.JSONDecodeError as exc:
        raise EvaluationInputError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc


def read_activitynet_results(path: PathLike, require_label: bool = True) -> Predictions:
    """Read an ActivityNet results JSON (mirrors ``ANETdetection._import_prediction``).

    Only ``results`` is required (the toolkit also insists on ``version`` and
    ``external_data``; we accept files without them). With ``require_label=False``
    (proposal files) ``label`` may be absent and is read as ``""``.
    """
    src = str(path)
    data = read_json(path)
    if not isinstance(data, dict) or "results" not in data:
        raise EvaluationInputError(f"{src}: missing key 'results' at the top level")
    results = data["results"]
    if not isinstance(results, dict):
        raise EvaluationInputError(f"{src}: results: expected an object mapping video to a list")

    fast = _columns_if_valid(results, require_label)
    if fast is None:
        _raise_first_error(src, results, require_label)  # the slow walk names the exact place
        raise EvaluationInputError(f"{src}: malformed results")
    videos, labels, starts, ends, scores = fast
    return Predictions(
        source=src,
        videos=_obj_array(videos),
        starts=starts,
        ends=ends,
        scores=scores,
        labels=_obj_array(labels),
        labels_are_ids=False,
        lines=np.zeros(len(videos), dtype=np.int64),
    )


_NUMBER_TYPES = {int, float}


def _columns_if_valid(
    results: dict[str, Any], require_label: bool,
) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """Columns of a well-formed ``results`` object, or None if anything is off.

    Type checks run over whole columns (``map(type, ...)``) because a per-entry
    Python walk dominates the time on 500k predictions.
    """
    videos: list[str] = []
    labels: list[Any] = []
    segments: list[Any] = []
    scores: list[Any] = []
    try:
        for video, entries in results.items():
            if type(entries) is not list:
                return None
            videos.extend([video] * len(entries))
            for entry in entries:
                segments.append(entry["segment"])
                scores.append(entry["score"])
                labels.append(entry["label"] if require_label else entry.get("label", ""))
    except (KeyError, TypeError, AttributeError):
        return None
    if not set(map(type, labels)) <= {str} or not set(map(type, scores)) <= _NUMBER_TYPES:
        return None
    if not set(map(type, segments)) <= {list} or not set(map(len, segments)) <= {2}:
        return None
    starts = [seg[0] for seg in segments]
    ends = [seg[1] for seg in segments]
    if not set(map(type, starts)) <= _NUMBER_TYPES or not set(map(type, ends)) <= _NUMBER_TYPES:
        return None
    try:
        s = np.asarray(starts, dtype=np.float64)
        e = np.asarray(ends, dtype=np.float64)
        sc = np.asarray(scores, dtype=np.float64)
    except OverflowError:  # integers beyond float range
        return None
    if not (np.isfinite(s).all() and np.isfinite(e).all() and np.isfinite(sc).all() and (s <= e).all()):
        return None
    return videos, labels, s.reshape(-1), e.reshape(-1), sc.reshape(-1)


def _raise_first_error(src: str, results: dict[str, Any], require_label: bool) -> None:
    """Walk ``results`` entry by entry and raise for the first malformed one."""
    for video, entries in results.items():
        if not isinstance(entries, list):
            raise EvaluationInputError(f"{src}: results.{video}: expected a list of predictions")
        for i, entry in enumerate(entries):
            where = f"{src}: results.{video}[{i}]"
            if not isinstance(entry, dict):
                raise EvaluationInputError(f"{where}: expected an object")
            for key in ("score", "segment") + (("label",) if require_label else ()):
                if key not in entry:
                    raise EvaluationInputError(f"{where}: missing key '{key}'")
            label = entry.get("label", "")
            if not isinstance(label, str):
                raise EvaluationInputError(f"{where}.label: expected a string, got {label!r}")
            segment = entry["segment"]
            if not isinstance(segment, list) or len(segment) != 2:
                raise EvaluationInputError(f"{where}.segment: expected [start, end], got {segment!r}")
            start = _finite_number(segment[0], f"{where}.segment[0]")
            end = _finite_number(segment[1], f"{where}.segment[1]")
            if start > end:
                raise EvaluationInputError(f"{where}.segment: start {start} > end {end}")
            _finite_number(entry["score"], f"{where}.score")


def _parse_float(token: str, where: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise EvaluationInputError(f"{where}: {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise EvaluationInputError(f"{where}: {what} {token!r} is not finite")
    return value


def read_thumos_results(path: PathLike) -> Predictions:
    """Read a THUMOS-14 submission text file (what ``TH14evalDet.m`` parses).

    Blank lines are skipped (``textread`` skips them too); every other line needs
    exactly five whitespace-separated fields. Class ids stay ids here; they are
    mapped to names against the ground truth's class list.
    """
    src = str(path)
    videos: list[str] = []
    rows: list[tuple[float, float, float]] = []
    ids: list[int] = []
    lines: list[int] = []
    with open(path, "r", encoding="utf-8") as fobj:
        for lineno, line in enumerate(fobj, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{src}:{lineno}"
            if len(fields) != 5:
                raise EvaluationInputError(
                    f"{where}: expected 5 fields 'video start end class_id score', got {len(fields)}"
                )
            start = _parse_float(fields[1], where, "start")
            end = _parse_float(fields[2], where, "end")
            if start > end:
                raise EvaluationInputError(f"{where}: start {start} > end {end}")
            try:
                class_id = int(fields[3])
            except ValueError:
                raise EvaluationInputError(f"{where}: class id {fields[3]!r} is not an integer") from None
            score = _parse_float(fields[4], where, "score")
            videos.append(fields[0])
            rows.append((start, end, score))
            ids.append(class_id)
            lines.append(lineno)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return Predictions(
        source=src,
        videos=_obj_array(videos),
        starts=table[:, 0].copy(),
        ends=table[:, 1].copy(),
        scores=table[:, 2].copy(),
        labels=np.asarray(ids, dtype=np.int64),
        labels_are_ids=True,
        lines=np.asarray(lines, dtype=np.int64),
    )


def predictions_from_results(results: "ResultsDict", source: str = "<memory>") -> Predictions:
    """Predictions from an in-memory ``{video: [{label, score, segment}]}`` dict
    (the structure the writers take), validated like a results JSON."""
    rows = list(_checked_entries(results))
    table = np.asarray([(r[3], r[4], r[5]) for r in rows], dtype=np.float64).reshape(-1, 3)
    return Predictions(
        source=source,
        videos=_obj_array([r[0] for r in rows]),
        starts=table[:, 0].copy(),
        ends=table[:, 1].copy(),
        scores=table[:, 2].copy(),
        labels=_obj_array([r[2] for r in rows]),
        labels_are_ids=False,
        lines=np.zeros(len(rows), dtype=np.int64),
    )


def read_predictions(path: PathLike, require_label: bool = True) -> Predictions:
    """Read predictions, choosing the format by extension: ``.json`` or ``.txt``."""
    suffix = Path(path).suffix.lower()
    if not Path(path).is_file():
        raise EvaluationInputError(f"{path}: prediction file not found")
    if suffix == ".json":
        return read_activitynet_results(path, require_label=require_label)
    if suffix == ".txt":
        return read_thumos_results(path)
    raise EvaluationInputError(f"{path}: unknown prediction format (expected .json or .txt)")


# --------------------------------------------------------------------------- writers

ResultsDict = Mapping[str, Iterable[Mapping[str, Any]]]


def _checked_entries(results: ResultsDict) -> Iterable[tuple[str, int, str, float, float, float]]:
    for video, entries in results.items():
        for i, entry in enumerate(entries):
            where = f"results.{video}[{i}]"
            try:
                start, end = (float(x) for x in entry["segment"])
                score = float(entry["score"])
                label = entry.get("label", "")
            except (KeyError, TypeError, ValueError) as exc:
                raise EvaluationInputError(f"{where}: not a {{label, score, segment}} entry ({exc})") from None
            if not (math.isfinite(start) and math.isfinite(end) and math.isfinite(score)):
                raise EvaluationInputError(f"{where}: non-finite segment or score")
            if start > end:
                raise EvaluationInputError(f"{where}.segment: start {start} > end {end}")
            yield video, i, str(label), start, end, score


def write_activitynet_results(
    path: PathLike,
    results: ResultsDict,
    version: str = "VERSION 1.3",
    external_data: Mapping[str, Any] | None = None,
) -> None:
    """Write an ActivityNet results JSON that the official toolkit accepts."""
    out: dict[str, list[dict[str, Any]]] = {video: [] for video in results}
    for video, _, label, start, end, score in _checked_entries(results):
        out[video].append({"label": label, "score": score, "segment": [start, end]})
    payload = {
        "version": version,
        "results": out,
        "external_data": dict(external_data) if external_data is not None else {"used": False, "details": ""},
    }
    with open(path, "w", encoding="utf-8") as fobj:
        json.dump(payload, fobj)


def write_thumos_results(path: PathLike, results: ResultsDict, class_ids: Mapping[str, int]) -> None:
    """Write a THUMOS-14 submission text file; ``class_ids`` maps label name to id.

    Floats are written with ``repr`` so reading the file back is lossless.
    """
    lines = []
    for video, i, label, start, end, score in _checked_entries(results):
        if label not in class_ids:
            raise EvaluationInputError(f"results.{video}[{i}].label: {label!r} has no THUMOS class id")
        if any(ch.isspace() for ch in video) or not video:
            raise EvaluationInputError(f"results.{video}: video name must be non-empty without whitespace")
        lines.append(f"{video} {start!r} {end!r} {int(class_ids[label])} {score!r}\n")
    with open(path, "w", encoding="utf-8") as fobj:
        fobj.writelines(lines)
