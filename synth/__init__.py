"""Synthetic "movement submergence" dataset generator (``menet synth``, ``synthetic://`` sources).

A dataset generator, not part of the network: it lives outside ``engine`` so the
network package holds only what inference and training need. The implementation is
in :mod:`synth.generator`; this package re-exports its public names.
"""
from __future__ import annotations

from synth.generator import (
    CLASS_LIBRARY,
    MAX_CLASSES,
    SCALE_BINS,
    SYNTH_VERSION,
    Action,
    ClassStyle,
    DatasetConfig,
    DatasetSummary,
    SyntheticVideo,
    VideoSpec,
    class_names,
    count_video_frames,
    dataset_specs,
    generate_dataset,
    random_spec,
    scale_histogram,
    spec_annotation,
    split_names,
    video_is_complete,
    video_name,
    write_video,
)

__all__ = [
    "CLASS_LIBRARY",
    "MAX_CLASSES",
    "SCALE_BINS",
    "SYNTH_VERSION",
    "Action",
    "ClassStyle",
    "DatasetConfig",
    "DatasetSummary",
    "SyntheticVideo",
    "VideoSpec",
    "class_names",
    "count_video_frames",
    "dataset_specs",
    "generate_dataset",
    "random_spec",
    "scale_histogram",
    "spec_annotation",
    "split_names",
    "video_is_complete",
    "video_name",
    "write_video",
]
