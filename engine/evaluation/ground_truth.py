"""Ground-truth loaders and the mapping of predictions onto a ground truth.

Two ground-truth forms are accepted by every protocol:

* an ActivityNet JSON in database format (what ``ANETdetection._import_ground_truth``
  reads): ``database.{video}.{subset, annotations[{segment, label}], duration}``;
* a THUMOS-14 annotation folder (what ``TH14evalDet.m`` reads): ``detclasslist.txt``
  (``id name`` per line), one ``<Class>_<subset>.txt`` per class with lines
  ``video start end`` and an optional ``Ambiguous_<subset>.txt``.

Annotations labelled ``Ambiguous`` are kept apart from the classes in both forms: the
THUMOS protocol uses them to forgive false positives, the ActivityNet protocol ignores
them.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .results_format import EvaluationInputError, Predictions, _obj_array, read_json

PathLike = str | os.PathLike

AMBIGUOUS = "Ambiguous"
_SUBSET_ALIASES = {"val": "validation", "valid": "validation", "train": "training"}


def normalize_subset(name: str | None) -> str | None:
    """``val`` and ``validation`` name the same subset (THUMOS files use ``_val``)."""
    if name is None:
        return None
    return _SUBSET_ALIASES.get(name, name)


def subset_from_video_name(video: str) -> str | None:
    """THUMOS video names carry their subset: ``video_test_0000324``."""
    if "_test_" in video:
        return "test"
    if "_validation_" in video:
        return "validation"
    return None


@dataclass
class GroundTruth:
    """Annotations in loader order (the order the official kits iterate them).

    ``videos`` maps every known video (with or without annotations) to its subset;
    ``classes`` lists the evaluated classes (at least one instance) in the kit's
    order; ``class_ids`` maps THUMOS class ids to names.
    """

    source: str
    videos: dict[str, str | None]
    inst_videos: np.ndarray
    inst_starts: np.ndarray
    inst_ends: np.ndarray
    inst_labels: np.ndarray
    amb_videos: np.ndarray
    amb_starts: np.ndarray
    amb_ends: np.ndarray
    classes: list[str]
    class_ids: dict[int, str]
    class_ids_origin: str
    all_videos: dict[str, str | None] = field(default_factory=dict)
    subset: str | None = None

    def __len__(self) -> int:
        return int(self.inst_starts.shape[0])

    def select(self, subset: str | None) -> "GroundTruth":
        """Keep only the videos of ``subset`` (``None`` keeps everything)."""
        subset = normalize_subset(subset)
        if subset is None:
            return self
        videos = {v: s for v, s in self.videos.items() if s == subset}
        if not videos:
            found = sorted({str(s) for s in self.videos.values()})
            raise EvaluationInputError(f"{self.source}: no video in subset {subset!r} (subsets present: {found})")
        keep = np.fromiter((v in videos for v in self.inst_videos), bool, len(self.inst_videos))
        keep_amb = np.fromiter((v in videos for v in self.amb_videos), bool, len(self.amb_videos))
        labels = self.inst_labels[keep]
        present = set(labels.tolist())
        return replace(
            self,
            videos=videos,
            inst_videos=self.inst_videos[keep],
            inst_starts=self.inst_starts[keep],
            inst_ends=self.inst_ends[keep],
            inst_labels=labels,
            amb_videos=self.amb_videos[keep_amb],
            amb_starts=self.amb_starts[keep_amb],
            amb_ends=self.amb_ends[keep_amb],
            classes=[c for c in self.classes if c in present],
            subset=subset,
        )

    def with_class_list(self, path: PathLike) -> "GroundTruth":
        """Use a ``detclasslist.txt`` for THUMOS class ids instead of the default."""
        return replace(self, class_ids=read_class_list(path), class_ids_origin=str(path))


# --------------------------------------------------------------------------- loaders


def read_class_list(path: PathLike) -> dict[int, str]:
    """Read ``detclasslist.txt`` (``id name`` per line) as ``TH14evalDet.m`` does."""
    out: dict[int, str] = {}
    with open(path, "r", encoding="utf-8") as fobj:
        for lineno, line in enumerate(fobj, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise EvaluationInputError(f"{path}:{lineno}: expected 'class_id name', got {len(fields)} fields")
            try:
                class_id = int(fields[0])
            except ValueError:
                raise EvaluationInputError(f"{path}:{lineno}: class id {fields[0]!r} is not an integer") from None
            if class_id in out:
                raise EvaluationInputError(f"{path}:{lineno}: class id {class_id} listed twice")
            out[class_id] = fields[1]
    if not out:
        raise EvaluationInputError(f"{path}: empty class list")
    return out


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise EvaluationInputError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def load_activitynet_gt(path: PathLike) -> GroundTruth:
    """Load an ActivityNet database JSON (mirrors ``ANETdetection._import_ground_truth``).

    Duplicate annotations are kept as separate instances, as the toolkit does.
    Classes are ordered by first appearance (the toolkit's ``activity_index``);
    THUMOS class ids default to the sorted label names numbered from 1.
    """
    src = str(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise EvaluationInputError(f"{src}: missing object 'database' at the top level")

    videos: dict[str, str | None] = {}
    rows: list[tuple[str, float, float, str]] = []
    for video, info in data["database"].items():
        where = f"{src}: database.{video}"
        if not isinstance(info, dict):
            raise EvaluationInputError(f"{where}: expected an object")
        if "subset" not in info:
            raise EvaluationInputError(f"{where}: missing key 'subset'")
        if "annotations" not in info or not isinstance(info["annotations"], list):
            raise EvaluationInputError(f"{where}: missing list 'annotations'")
        videos[video] = normalize_subset(str(info["subset"]))
        for i, ann in enumerate(info["annotations"]):
            awhere = f"{where}.annotations[{i}]"
            if not isinstance(ann, dict) or "segment" not in ann or "label" not in ann:
                raise EvaluationInputError(f"{awhere}: expected an object with 'segment' and 'label'")
            seg = ann["segment"]
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                raise EvaluationInputError(f"{awhere}.segment: expected [start, end], got {seg!r}")
            start = _finite(seg[0], f"{awhere}.segment[0]")
            end = _finite(seg[1], f"{awhere}.segment[1]")
            if start > end:
                raise EvaluationInputError(f"{awhere}.segment: start {start} > end {end}")
            if not isinstance(ann["label"], str):
                raise EvaluationInputError(f"{awhere}.label: expected a string")
            rows.append((video, start, end, ann["label"]))

    labels_in_order = list(dict.fromkeys(r[3] for r in rows if r[3] != AMBIGUOUS))
    class_ids = {i + 1: name for i, name in enumerate(sorted(labels_in_order))}
    return _build(src, videos, rows, labels_in_order, class_ids, "sorted label names, 1-based")


def load_thumos_gt(folder: PathLike, subset: str | None = None) -> GroundTruth:
    """Load a THUMOS-14 annotation folder (mirrors the reading part of ``TH14evalDet.m``).

    With ``subset`` only ``<Class>_<subset>.txt`` files are read (``validation`` also
    finds ``_val`` files); without it every ``<Class>_<suffix>.txt`` is read and the
    suffix gives the subset. Every class of ``detclasslist.txt`` needs a file, as in
    the kit; ``Ambiguous_<suffix>.txt`` is optional.
    """
    root = Path(folder)
    src = str(root)
    classlist = root / "detclasslist.txt"
    if not classlist.is_file():
        raise EvaluationInputError(f"{src}: THUMOS annotation folder lacks detclasslist.txt")
    class_ids = read_class_list(classlist)
    names = list(class_ids.values())

    wanted = normalize_subset(subset)
    videos: dict[str, str | None] = {}
    rows: list[tuple[str, float, float, str]] = []
    for name in names + [AMBIGUOUS]:
        pattern = re.compile(re.escape(name) + r"_(.+)\.txt$")
        files = sorted(
            (p, normalize_subset(m.group(1)))
            for p in root.iterdir()
            if (m := pattern.match(p.name)) and (wanted is None or normalize_subset(m.group(1)) == wanted)
        )
        if not files and name != AMBIGUOUS:
            what = f"{name}_{subset}.txt" if subset else f"{name}_<subset>.txt"
            raise EvaluationInputError(f"{src}: missing ground-truth file {what}")
        for path, file_subset in files:
            _read_thumos_gt_file(path, name, file_subset, videos, rows)
    return _build(src, videos, rows, names, class_ids, str(classlist), subset=wanted)


def _read_thumos_gt_file(
    path: Path, label: str, subset: str | None,
    videos: dict[str, str | None], rows: list[tuple[str, float, float, str]],
) -> None:
    with open(path, "r", encoding="utf-8") as fobj:
        for lineno, line in enumerate(fobj, start=1):
            fields = line.split()  # the official files mix single and double spaces, and CRLF
            if not fields:
                continue
            where = f"{path}:{lineno}"
            if len(fields) != 3:
                raise EvaluationInputError(f"{where}: expected 'video start end', got {len(fields)} fields")
            try:
                start, end = float(fields[1]), float(fields[2])
            except ValueError:
                raise EvaluationInputError(f"{where}: start/end {fields[1]!r} {fields[2]!r} not numeric") from None
            if not (math.isfinite(start) and math.isfinite(end)):
                raise EvaluationInputError(f"{where}: start/end not finite")
            if start > end:
                raise EvaluationInputError(f"{where}: start {start} > end {end}")
            video = fields[0]
            videos.setdefault(video, subset_from_video_name(video) or subset)
            rows.append((video, start, end, label))


def _build(
    src: str, videos: dict[str, str | None], rows: list[tuple[str, float, float, str]],
    class_order: list[str], class_ids: dict[int, str], ids_origin: str, subset: str | None = None,
) -> GroundTruth:
    amb = [r for r in rows if r[3] == AMBIGUOUS]
    inst = [r for r in rows if r[3] != AMBIGUOUS]
    present = {r[3] for r in inst}

    def cols(items: list[tuple[str, float, float, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        table = np.asarray([(r[1], r[2]) for r in items], dtype=np.float64).reshape(-1, 2)
        return (_obj_array([r[0] for r in items]), table[:, 0].copy(), table[:, 1].copy(),
                _obj_array([r[3] for r in items]))

    iv, is_, ie, il = cols(inst)
    av, as_, ae, _ = cols(amb)
    return GroundTruth(
        source=src, videos=videos, inst_videos=iv, inst_starts=is_, inst_ends=ie, inst_labels=il,
        amb_videos=av, amb_starts=as_, amb_ends=ae,
        classes=[c for c in class_order if c in present],
        class_ids=class_ids, class_ids_origin=ids_origin, all_videos=dict(videos), subset=subset,
    )


def ground_truth_from_annotations(
    annotations: Iterable[tuple[str, float, float, str]],
    subsets: Mapping[str, str] | None = None,
    videos: Iterable[str] = (),
    class_ids: Mapping[int, str] | None = None,
    source: str = "<memory>",
) -> GroundTruth:
    """Ground truth from ``(video, start, end, label)`` tuples, e.g. inside a training loop.

    ``subsets`` maps video to subset (default ``validation``); ``videos`` adds videos
    without annotations; label ``Ambiguous`` marks ambiguous segments.
    """
    subsets = subsets or {}
    rows = [(str(v), float(s), float(e), str(lab)) for v, s, e, lab in annotations]
    known: dict[str, str | None] = {}
    for v in list(videos) + [r[0] for r in rows]:
        known.setdefault(v, normalize_subset(subsets.get(v, "validation")))
    for v, s, e, _ in rows:
        if not (math.isfinite(s) and math.isfinite(e)) or s > e:
            raise EvaluationInputError(f"{source}: bad segment [{s}, {e}] in video {v}")
    order = list(dict.fromkeys(r[3] for r in rows if r[3] != AMBIGUOUS))
    if class_ids is None:
        ids, origin = {i + 1: n for i, n in enumerate(sorted(order))}, "sorted label names, 1-based"
    else:
        ids, origin = dict(class_ids), "given class ids"
    return _build(source, known, rows, order, ids, origin)


def load_ground_truth(path: PathLike, subset: str | None = None) -> GroundTruth:
    """Load either form: a directory is a THUMOS folder, a file an ActivityNet JSON."""
    p = Path(path)
    if p.is_dir():
        gt = load_thumos_gt(p, subset)
    elif p.is_file():
        gt = load_activitynet_gt(p)
    else:
        raise EvaluationInputError(f"{path}: ground truth not found")
    return gt.select(subset)


def merge_ground_truths(parts: Sequence[GroundTruth]) -> GroundTruth:
    """One ground truth of several (e.g. a benchmark and extra training videos in one feature
    store). A video named in two of them is an error naming both sources: which one's segments
    would count is not ours to guess. Classes keep their first appearance across the parts."""
    if len(parts) == 1:
        return parts[0]
    owner: dict[str, str] = {}
    videos: dict[str, str | None] = {}
    rows: list[tuple[str, float, float, str]] = []
    for gt in parts:
        for video, subset in gt.videos.items():
            if video in owner:
                raise EvaluationInputError(f"{gt.source}: video {video!r} is also in {owner[video]}; "
                                           "give the datasets distinct video names (menet synth --name-prefix)")
            owner[video] = gt.source
            videos[video] = subset
        rows += [(str(v), float(a), float(b), str(lab)) for v, a, b, lab in
                 zip(gt.inst_videos, gt.inst_starts, gt.inst_ends, gt.inst_labels)]
        rows += [(str(v), float(a), float(b), AMBIGUOUS) for v, a, b in zip(gt.amb_videos, gt.amb_starts, gt.amb_ends)]
    order = list(dict.fromkeys(c for gt in parts for c in gt.classes))
    ids = {i + 1: name for i, name in enumerate(sorted(order))}
    return _build(" + ".join(gt.source for gt in parts), videos, rows, order, ids, "sorted label names, 1-based")


def load_ground_truths(paths: PathLike | Sequence[PathLike], subset: str | None = None) -> GroundTruth:
    """:func:`load_ground_truth` of one path, or the merge of several (:func:`merge_ground_truths`)."""
    if isinstance(paths, (str, os.PathLike)):
        return load_ground_truth(paths, subset)
    if not paths:
        raise EvaluationInputError("no ground-truth file given")
    return merge_ground_truths([load_ground_truth(p) for p in paths]).select(subset)


# --------------------------------------------------------------------------- alignment

UNKNOWN_VIDEO_POLICIES = ("false_positive", "drop")


@dataclass
class AlignedPredictions:
    """Predictions resolved against a ground truth: class names known, rows kept in file order.

    ``class_index`` indexes ``GroundTruth.classes`` (-1 when labels are ignored, as
    for proposals). ``ignored`` counts predictions that could not be tied to the
    ground truth; see :func:`align_predictions` for which of them still count.
    """

    predictions: Predictions
    class_index: np.ndarray
    ignored: dict[str, int]
    unknown_videos_policy: str


def _label_names(gt: GroundTruth, preds: Predictions) -> np.ndarray:
    if not preds.labels_are_ids:
        return preds.labels
    names = np.empty(len(preds), dtype=object)
    for i, class_id in enumerate(preds.labels.tolist()):
        name = gt.class_ids.get(class_id)
        if name is None:
            raise EvaluationInputError(
                f"{preds.source}:{int(preds.lines[i])}: unknown class id {class_id} "
                f"(class ids from {gt.class_ids_origin})"
            )
        names[i] = name
    return names


def align_predictions(
    gt: GroundTruth, preds: Predictions, use_labels: bool = True, unknown_videos: str = "false_positive",
) -> AlignedPredictions:
    """Resolve labels and count predictions the ground truth does not know.

    * ``unknown_classes``: label not among the evaluated classes; dropped (no class's
      AP can see it; the ActivityNet toolkit would crash, the THUMOS kit skips them).
    * ``unknown_videos`` / ``other_subset_videos``: video absent from the ground truth /
      belonging to another subset. Both official kits score these as false
      positives; that is the default. ``unknown_videos="drop"`` removes them instead.
    """
    if unknown_videos not in UNKNOWN_VIDEO_POLICIES:
        raise ValueError(f"unknown_videos must be one of {UNKNOWN_VIDEO_POLICIES}")
    ignored = {"unknown_classes": 0, "unknown_videos": 0, "other_subset_videos": 0}
    keep = np.ones(len(preds), dtype=bool)

    if use_labels:
        names = _label_names(gt, preds)
        lookup = {c: i for i, c in enumerate(gt.classes)}
        class_index = np.fromiter((lookup.get(n, -1) for n in names), np.int64, len(preds))
        unknown_class = class_index < 0
        ignored["unknown_classes"] = int(unknown_class.sum())
        keep &= ~unknown_class
    else:
        class_index = np.full(len(preds), -1, dtype=np.int64)

    known = np.fromiter((v in gt.videos for v in preds.videos), bool, len(preds))
    other = np.zeros(len(preds), dtype=bool)
    if gt.subset is not None:
        other = ~known & np.fromiter(
            ((v in gt.all_videos) or (subset_from_video_name(v) not in (None, gt.subset)) for v in preds.videos),
            bool, len(preds),
        )
    counted = keep.copy()  # a prediction is counted once, under its first reason
    ignored["other_subset_videos"] = int((other & counted).sum())
    ignored["unknown_videos"] = int((~known & ~other & counted).sum())
    if unknown_videos == "drop":
        keep &= known

    return AlignedPredictions(preds.subset(keep), class_index[keep], ignored, unknown_videos)
