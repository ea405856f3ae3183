"""The detector worker's per-stream state stays bounded however many events a stream publishes.

A 30-minute soak (benchmarks/soak.py, 3 streams, ~86k events each) showed the detector
growing +1.07 MB/min: every stream kept the ids of its last 65536 events (RecentIds,
~130 B each), a bound only reached after ~23 minutes. Ids are now forgotten once the
merger can no longer emit a segment that ends where theirs did
(StreamMerger.emit_floor). These tests count structures, not RSS (too noisy for a test).
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import torch

from stream.settings import load_config
from stream import protocol as P
from engine.online import RecentIds
from stream.detector_worker import DetectorCore
from engine.runtime.split import DetectorStages
from stream_support import write_config

LAG = "  detector:\n    merge: lag\n    max_lag_s: 5.0\n"  # as benchmarks/soak.py


@pytest.fixture(scope="module")
def detector_parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    cfg = load_config(write_config(tmp_path_factory.mktemp("detmem"), LAG))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    stages = DetectorStages(cfg, None)  # random weights: plenty of proposals
    yield cfg, stages
    torch.set_num_threads(n)


def window(cfg: Any, seq: P.Sequencer, sid: str, k: int, feat: np.ndarray, *, start: int | None = None,
           live: bool = False, final: bool = False) -> P.Message:
    """A window message as the engine sends it (through the wire encoding)."""
    hop, sps = cfg.data.hop, cfg.data.sigma / 10.0
    start = k * hop if start is None else start
    h = P.make_header(P.WINDOW, seq(), stream=sid, index=k, start=start, valid=feat.shape[1], sps=sps,
                      final=final, duration=None if live else 1e6, live=live,
                      t_stream_ref=(start + feat.shape[1]) * sps, t_capture=1000.0,
                      t_engine_in=1000.0, t_window=1000.0)
    if not live:
        h["epoch"] = 0
    # the MFE window the labeller reads (tiny's model.segment_input: mfe), random like the MREM output
    features = (np.random.default_rng(start).standard_normal((cfg.feature_channels, feat.shape[1]))
                .astype(np.float32) if cfg.labeller_reads_mfe else None)
    return P.decode(P.encode_window(h, feat, features))


def test_detector_state_stays_bounded_over_many_windows(detector_parts) -> None:
    cfg, stages = detector_parts
    core = DetectorCore(cfg, stages)
    seq, rng = P.Sequencer(), np.random.default_rng(0)
    C, W = cfg.model.channels, cfg.data.window
    events: list[str] = []
    most_ids = most_pending = most_tracked = 0
    for k in range(60):
        for sid in ("s0", "s1"):
            core.handle(window(cfg, seq, sid, k, rng.standard_normal((C, W)).astype(np.float32)))
        events += [h["event_id"] for _, h in core.outbox if h["type"] == P.EVENT and h["state"] == "final"]
        core.outbox.clear()  # as detector_main after sending
        for st in core.streams.values():
            most_ids = max(most_ids, len(st.ids))
            most_pending = max(most_pending, len(st.merger._pending))
            most_tracked = max(most_tracked, len(st.events.tracked))
            assert st.merger._emitted == []
    per_window = len(events) / 120
    assert len(events) > 1000, "a random detector publishes plenty of events"
    assert len(set(events)) == len(events)
    # before the fix every id stayed (up to 65536 per stream): ~len(events) / 2 here. In flight: the ids of
    # the finals still to come and of provisional events (every pending detection is previewed) to retract
    assert most_ids <= 4 * per_window, (most_ids, len(events))
    assert most_pending < 20 * per_window  # lag mode: the merger's pending set is bounded too
    assert most_tracked <= most_pending  # provisional/open events are retracted once the merger cannot take them


def test_identical_segments_still_get_distinct_ids(detector_parts) -> None:
    """The ids' reason to exist: the same segment published twice gets two ids."""
    cfg, stages = detector_parts
    core = DetectorCore(cfg, stages)
    seq, rng = P.Sequencer(), np.random.default_rng(1)
    C, W = cfg.model.channels, cfg.data.window
    for k in range(12):
        feat = rng.standard_normal((C, W)).astype(np.float32)
        core.handle(window(cfg, seq, "cam", k, feat, live=True))
        core.handle(window(cfg, seq, "cam", k, feat, live=True))  # same start, same features
    core.handle(window(cfg, seq, "cam", 12, rng.standard_normal((C, W)).astype(np.float32), live=True,
                       final=True))
    evs = [h for _, h in core.outbox if h["type"] == P.EVENT and h["state"] == "final"]
    keys = [(h["class_id"], f"{h['start']:.4f}", f"{h['end']:.4f}") for h in evs]
    assert len(keys) - len(set(keys)) > 10  # many segments were published twice ...
    assert len({h["event_id"] for h in evs}) == len(evs)  # ... each time under its own id


def test_recent_ids_forget_what_ended_before_the_floor() -> None:
    ids = RecentIds()
    for i, end in enumerate([1.0, 3.0, 2.0, 5.0]):
        ids.add(f"e{i}", end)
    ids.forget_ending_before(2.5)
    assert "e0" not in ids and "e1" in ids
    assert "e2" in ids  # published after e1 (end 3.0): goes when the floor passes e1
    ids.forget_ending_before(4.0)
    assert len(ids) == 1 and "e3" in ids
    ids.add("x")  # no end: only the count bound applies
    ids.forget_ending_before(1e9)
    assert "x" in ids
