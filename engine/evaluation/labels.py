"""Label accuracy of found actions: a figure of its own, beside mAP.

For each true action, the detections that overlap it at tIoU >= ``tiou`` (whatever their
label) are its matches; the action is *found* when it has one. Its label is *right* when the
best-scoring match carries the action's label. This separates "was the action localised" from
"was it named right", and it is comparable between detectors that emit one label per segment
and detectors that emit one row per (segment, class) - counting every matched row would
penalise the latter for their low-scoring alternative labels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ground_truth import GroundTruth
from .results_format import Predictions


@dataclass
class LabelAccuracy:
    """Counts over the ground truth's actions; ``confusion[true][given]`` for found actions."""

    tiou: float
    actions: int
    found: int
    right: int
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """Share of found actions whose best-scoring match has the right label (0 when none found)."""
        return self.right / self.found if self.found else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"tiou": self.tiou, "actions": self.actions, "found": self.found, "right": self.right,
                "accuracy": self.accuracy, "confusion": self.confusion}


def label_accuracy(gt: GroundTruth, preds: Predictions, tiou: float = 0.5) -> LabelAccuracy:
    """Label accuracy of the actions of ``gt`` found by ``preds`` (labels as class names).

    Predictions whose labels are THUMOS class ids are mapped through ``gt.class_ids``; an id the
    ground truth does not know counts as a wrong label (it cannot name any true class).
    """
    labels = preds.labels
    if preds.labels_are_ids:
        labels = np.array([gt.class_ids.get(int(i), f"<id {int(i)}>") for i in labels], dtype=object)
    by_video: dict[str, list[int]] = {}
    for index, video in enumerate(preds.videos):
        by_video.setdefault(video, []).append(index)
    found = right = 0
    confusion: dict[str, dict[str, int]] = {}
    for i in range(len(gt)):
        rows = np.asarray(by_video.get(gt.inst_videos[i], []), dtype=np.int64)
        if rows.size == 0:
            continue
        start, end = float(gt.inst_starts[i]), float(gt.inst_ends[i])
        inter = (np.minimum(preds.ends[rows], end) - np.maximum(preds.starts[rows], start)).clip(0)
        union = (preds.ends[rows] - preds.starts[rows]) + (end - start) - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        matches = rows[iou >= tiou]
        if matches.size == 0:
            continue
        best = matches[np.argmax(preds.scores[matches])]
        true_label, given = str(gt.inst_labels[i]), str(labels[best])
        found += 1
        right += given == true_label
        row = confusion.setdefault(true_label, {})
        row[given] = row.get(given, 0) + 1
    return LabelAccuracy(tiou, len(gt), found, right, confusion)
