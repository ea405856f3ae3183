"""Temporal action detection and proposal evaluation (official-kit conformant).

* :mod:`.activitynet` - ActivityNet detection mAP (``eval_detection.py``)
* :mod:`.thumos` - THUMOS-14 detection mAP (``TH14evalDet.m``)
* :mod:`.proposals` - AR@AN and AUC (``eval_proposal.py``)
* :mod:`.ground_truth` / :mod:`.results_format` - input and output formats
"""
from __future__ import annotations

from .results_format import (
    EvaluationInputError,
    Predictions,
    predictions_from_results,
    read_activitynet_results,
    read_predictions,
    read_thumos_results,
    write_activitynet_results,
    write_thumos_results,
)
from .ground_truth import (
    GroundTruth,
    ground_truth_from_annotations,
    load_activitynet_gt,
    load_ground_truth,
    load_thumos_gt,
)
from .activitynet import DetectionResult
from .proposals import ProposalResult

__all__ = [
    "EvaluationInputError",
    "Predictions",
    "GroundTruth",
    "DetectionResult",
    "ProposalResult",
    "ground_truth_from_annotations",
    "predictions_from_results",
    "load_ground_truth",
    "load_activitynet_gt",
    "load_thumos_gt",
    "read_predictions",
    "read_activitynet_results",
    "read_thumos_results",
    "write_activitynet_results",
    "write_thumos_results",
]
