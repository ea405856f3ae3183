"""Shared helpers for the streaming tests (imported by tests/test_stream_*.py; not a test module).

A tiny config, a random-weight checkpoint, generated videos, the offline
reference detections (``extract_video`` + ``detect_video``) and the comparison
rule of the online == offline contract.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from engine.config import MENetConfig
from engine.model.backbone import build_backbone
from engine.model.menet import MENet, TemporalDetector
from engine.model.mfe import MovementFeatureExtractor
from synth import random_spec, write_video
from small_configs import small_config_text

REPO = Path(__file__).resolve().parents[1]

# the small network's data.hop is its default, window / 2 = 16; ``extra`` adds keys (or sections) under stream:
STREAM_SECTION = """stream:
  engine:
    max_batch: 4
    max_wait_ms: 5
  transport:
    queue_size: 16
"""


def write_config(folder: Path, extra: str = "") -> Path:
    path = folder / "stream-test.yaml"
    path.write_text(small_config_text("stream-test", STREAM_SECTION + extra))
    return path


def make_checkpoint(cfg: MENetConfig, path: Path) -> Path:
    torch.manual_seed(0)
    m = MENet(cfg, load_backbone_weights=False)
    names = list(cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)])
    save_checkpoint(path, Checkpoint(cfg, names, m.detector.state_dict(), m.mfe.backbone.state_dict(), epoch=0))
    return path


def make_video(path: Path, seed: int, seconds: float, fps: float = 10.0, size: int = 48) -> Path:
    spec = random_spec(np.random.default_rng(seed), width=size, height=size, fps=fps,
                       duration_range=(seconds, seconds))
    write_video(spec, path)
    return path


def offline_detections(cfg: MENetConfig, ckpt_path: Path, video: Path) -> list[dict[str, Any]]:
    """What ``menet infer`` computes: extract_video features, detect_video with the same checkpoint."""
    from engine.inference import detect_video
    from engine.training.extract import extract_video

    ckpt = load_checkpoint(ckpt_path, expect=cfg)
    backbone = build_backbone(cfg.model.backbone)
    backbone.load_state_dict(ckpt.backbone)
    mfe = MovementFeatureExtractor(backbone, cfg.model.movement).eval()
    feats, meta = extract_video(video, mfe, cfg)
    det = TemporalDetector(cfg, mfe.out_channels)
    det.load_state_dict(ckpt.detector)
    det.eval()
    dets = detect_video(det, cfg, feats, meta.duration, meta.fps)
    return [{"start": float(s), "end": float(e), "score": float(sc), "class_id": int(lab)}
            for (s, e), sc, lab in zip(dets.segments, dets.scores, dets.labels)]


def top_events(events: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """StreamMerger.result(): the top ``max_detections`` by score of everything published."""
    return sorted(events, key=lambda e: -e["score"])[:k]


def assert_same_detections(online: list[dict[str, Any]], offline: list[dict[str, Any]], sps: float,
                           score_tol: float = 1e-3) -> None:
    """Same segments within one snippet, same labels, scores within ``score_tol``.

    Matching is one to one, greedy by offline score: each offline detection takes
    the closest unused online one with its label.
    """
    assert len(online) == len(offline), f"{len(online)} online vs {len(offline)} offline detections"
    used = [False] * len(online)
    for ref in sorted(offline, key=lambda d: -d["score"]):
        best, best_cost = None, None
        for i, ev in enumerate(online):
            if used[i] or ev["class_id"] != ref["class_id"]:
                continue
            cost = abs(ev["score"] - ref["score"]) + abs(ev["start"] - ref["start"]) + abs(ev["end"] - ref["end"])
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        assert best is not None, f"no online detection with label {ref['class_id']} for {ref}"
        ev = online[best]
        used[best] = True
        assert abs(ev["start"] - ref["start"]) <= sps + 1e-6 and abs(ev["end"] - ref["end"]) <= sps + 1e-6, (ev, ref)
        assert abs(ev["score"] - ref["score"]) <= score_tol, (ev, ref)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

