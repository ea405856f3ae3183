"""The online pipeline's logic in one process (no sockets): grabber -> engine -> detector.

Messages still go through the wire encoding and validation, so these tests pin
the contract fast; tests/test_stream_e2e.py runs the same through real processes.
"""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from stream.settings import load_config
from engine.online.layout import window_starts
from stream import protocol as P
from stream.detector_worker import DetectorCore
from engine.runtime.split import DetectorStages, EngineStages, RuntimeChoice
from stream.engine_worker import EngineCore
from stream.grabber import Grabber
from stream.sources import FrameItem, Source, StatusItem, assign_stream_ids, open_source, parse_source_arg, safe_uri
from stream_support import (assert_same_detections, make_checkpoint, make_video, offline_detections, top_events,
                                 write_config)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Chain:
    """grabber send() -> engine -> detector, every hop encoded + validated."""

    def __init__(self, cfg, stages: tuple) -> None:
        self.engine = EngineCore(cfg, stages[0])
        self.detector = DetectorCore(cfg, stages[1])
        self.published: list[dict[str, Any]] = []
        self.windows: list[dict[str, Any]] = []

    def __call__(self, frames, block) -> bool:
        self.engine.handle(P.decode(frames))
        self.engine.run_batch()
        self.pump()
        return True

    def pump(self) -> None:
        for out in self.engine.outbox:
            msg = P.decode(out)
            if msg.type == P.WINDOW:
                self.windows.append(msg.header)
            self.detector.handle(msg)
        self.engine.outbox.clear()
        for topic, h in self.detector.outbox:
            self.published.append(P.decode(P.encode(h, topic=topic), with_topic=True).header)
        self.detector.outbox.clear()

    def events(self, stream: str | None = None) -> list[dict[str, Any]]:
        return [h for h in self.published if h["type"] == P.EVENT and (stream is None or h["stream"] == stream)
                and h.get("state", "final") == "final"]


@pytest.mark.parametrize("seed,seconds", [(1, 20.3), (2, 2.5)])
def test_online_equals_offline_in_process(stream_setup, seed: int, seconds: float) -> None:
    """20.3 s: windows [0, 16, 19] (last one aligned to the end, partial last snippet);
    2.5 s: shorter than a window (one zero-padded window)."""
    cfg, ckpt, root = stream_setup["cfg"], stream_setup["ckpt"], stream_setup["root"]
    video = make_video(root / f"inproc{seed}.mp4", seed, seconds)
    offline = offline_detections(cfg, ckpt, video)
    stages = (EngineStages(cfg, str(ckpt)), DetectorStages(cfg, str(ckpt)))
    chain = Chain(cfg, stages)
    Grabber(cfg, "cam", open_source(str(video), cfg.stream.sources), chain).run(threading.Event())
    n = int(np.ceil(round(seconds * 10) / cfg.data.sigma))
    assert [w["start"] for w in chain.windows] == window_starts(n, cfg.data.window, cfg.data.hop)
    assert [w["final"] for w in chain.windows][-1] is True
    online = top_events(chain.events("cam"), cfg.inference.max_detections)
    assert offline, "a random detector should propose something"
    assert_same_detections(online, offline, cfg.data.sigma / 10.0)
    types = [h["type"] for h in chain.published]
    assert types[0] == "status" and types[-1] == "eos"
    ids = [e["event_id"] for e in chain.events()]
    assert len(ids) == len(set(ids))


def _labeller_setup(stream_setup, segment_input: str) -> tuple[Any, Path]:
    root = stream_setup["root"]
    cfg_path = root / f"stream-{segment_input}.yaml"
    cfg_path.write_text(f"extends: {stream_setup['cfg_path']}\nname: stream-{segment_input}\nmodel:\n"
                        f"  segment_input: {segment_input}\n")
    cfg = load_config(cfg_path)
    assert cfg.model.labeller == "segment"
    return cfg, make_checkpoint(cfg, root / f"ckpt-{segment_input}.pt")


@pytest.mark.parametrize("segment_input", ["relation", "mfe"])
def test_online_equals_offline_whatever_the_labeller_reads(stream_setup, segment_input: str) -> None:
    """model.segment_input: with mfe the engine sends each window's MFE features next to its MREM
    output and the detector's labeller reads them; with relation it sends the MREM output only."""
    cfg, ckpt = _labeller_setup(stream_setup, segment_input)
    video = make_video(stream_setup["root"] / "inproc-labeller.mp4", 3, 20.3)
    offline = offline_detections(cfg, ckpt, video)
    chain = Chain(cfg, (EngineStages(cfg, str(ckpt)), DetectorStages(cfg, str(ckpt))))
    Grabber(cfg, "cam", open_source(str(video), cfg.stream.sources), chain).run(threading.Event())
    sent = [w.get("features_shape") for w in chain.windows]
    assert sent and sent == [[cfg.feature_channels, cfg.data.window] if segment_input == "mfe" else None] * len(sent)
    assert offline
    assert_same_detections(top_events(chain.events("cam"), cfg.inference.max_detections), offline,
                           cfg.data.sigma / 10.0)
    assert chain.detector.metrics.malformed._value.get() == 0


def test_detector_refuses_windows_without_the_features_its_labeller_reads(stream_setup) -> None:
    """An engine configured for the MREM-output labeller sends no features: a detector whose
    labeller reads them refuses every window, counts it and goes on to the stream's end."""
    cfg, ckpt = _labeller_setup(stream_setup, "mfe")
    rel_cfg, _ = _labeller_setup(stream_setup, "relation")
    video = make_video(stream_setup["root"] / "inproc-labeller.mp4", 3, 20.3)
    chain = Chain(rel_cfg, (EngineStages(cfg, str(ckpt)), DetectorStages(cfg, str(ckpt))))
    chain.detector = DetectorCore(cfg, chain.detector.stages)
    Grabber(cfg, "cam", open_source(str(video), cfg.stream.sources), chain).run(threading.Event())
    assert chain.windows and "features_shape" not in chain.windows[0]
    assert chain.events() == []
    assert chain.detector.metrics.malformed._value.get() == len(chain.windows)
    assert [h["type"] for h in chain.published][-1] == "eos"  # the stream still ends cleanly


class ListSource(Source):
    def __init__(self, frames, fps=10.0, live=False):
        super().__init__("list://")
        self.frames, self.fps, self.live = frames, fps, live

    def items(self, stop):
        yield StatusItem("live")
        for i, f in enumerate(self.frames):
            yield FrameItem(f, i / self.fps, 1000.0 + i / self.fps)
        yield StatusItem("ended")


def test_live_grabber_drops_whole_snippets_and_announces_gaps(stream_setup) -> None:
    cfg = stream_setup["cfg"]
    frames = [np.full((40, 40, 3), i, np.uint8) for i in range(80)]  # 20 snippets of 4 frames
    sent: list[dict[str, Any]] = []
    refuse = {5, 6, 7, 12}  # the engine's queue is full at these snippets

    def send(wire, block):
        h = P.decode(wire).header
        if not block and h["type"] == P.SNIPPET and h["index"] in refuse:
            return False
        sent.append(h)
        return True

    g = Grabber(cfg, "live", ListSource(frames, live=True), send)
    g.run(threading.Event())
    snippets = [h["index"] for h in sent if h["type"] == P.SNIPPET]
    gaps = [(h["first"], h["count"]) for h in sent if h["type"] == P.GAP]
    assert snippets == [i for i in range(20) if i not in refuse]
    # every dropped index is announced exactly once, before the next snippet that got through
    announced = sorted(i for first, count in gaps for i in range(first, first + count))
    assert announced == sorted(refuse) and g.dropped == 4
    order = [(h["type"], h.get("index", h.get("first"))) for h in sent]
    for first, _ in gaps:
        later = [i for i in snippets if i > first]
        assert order.index(("gap", first)) < order.index(("snippet", later[0]))
    assert sent[-1]["type"] == P.EOS and sent[-1]["n_snippets"] == 20


def test_file_grabber_blocks_instead_of_dropping(stream_setup) -> None:
    cfg = stream_setup["cfg"]
    frames = [np.zeros((40, 40, 3), np.uint8)] * 41
    blocks = []

    def send(wire, block):
        blocks.append(block)
        return True

    g = Grabber(cfg, "file", ListSource(frames, live=False), send)
    g.run(threading.Event())
    assert all(blocks) and g.dropped == 0 and g.sent == 11  # ceil(41 / 4)


class FakeStages:
    """Snippet feature = its index in every channel, so windows are checkable."""
    feature_channels = 2
    class_names = ["a"]

    def mfe(self, clips):
        return np.stack([np.full(2, float(c[0, 0, 0, 0]), np.float32) for c in clips])

    def mrem(self, windows):
        return windows


def engine_feed(eng: EngineCore, items: list[tuple[str, dict]]) -> list[dict[str, Any]]:
    out = []
    for type_, fields in items:
        buffers = ()
        if type_ == P.SNIPPET:
            clip = np.full((4, 8, 8, 3), fields["index"] % 250 + 1, np.uint8)
            fields = {"t_stream": 0.0, "t_capture": time.time(), "fps": 10.0, "sigma": 4, "shape": [4, 8, 8, 3],
                      "dtype": "uint8", "live": True, **fields}
            buffers = (clip,)
        eng.handle(P.decode(P.encode(P.make_header(type_, 0, **fields), buffers)))
        eng.run_batch()
    for wire in eng.outbox:
        m = P.decode(wire)
        out.append({**m.header, "feat": m.array()[0] if m.type == P.WINDOW else None})
    eng.outbox.clear()
    return out


def test_engine_fills_short_gaps_and_restarts_after_long_ones(stream_setup) -> None:
    cfg = stream_setup["cfg"]  # window 32, hop 16, gap_fill = hop
    eng = EngineCore(cfg, FakeStages())
    items = [(P.SNIPPET, dict(stream="s", index=i)) for i in range(20)]
    items += [(P.GAP, dict(stream="s", first=20, count=5, reason="dropped"))]
    items += [(P.SNIPPET, dict(stream="s", index=i)) for i in range(25, 40)]
    out = engine_feed(eng, items)
    # a live segment: an early (partial) window at 16 snippets, then the full one
    assert [(o["start"], o["valid"]) for o in out if o["type"] == P.WINDOW and o.get("early")] == [(0, 16)]
    win = [o for o in out if o["type"] == P.WINDOW and not o.get("early")]
    assert [w["start"] for w in win] == [0]
    feat = win[0]["feat"]
    assert np.all(feat[20:25] == 0) and feat[19] == 20 and feat[25] == 26  # zero-filled gap, indices kept
    # a long gap (> gap_fill): the segment ends (its remaining windows, final) and a new one starts at 200
    out = engine_feed(eng, [(P.GAP, dict(stream="s", first=40, count=160, reason="reconnect"))]
                      + [(P.SNIPPET, dict(stream="s", index=i)) for i in range(200, 240)]
                      + [(P.EOS, dict(stream="s", n_snippets=240, duration=96.0))])
    # the new segment looks early again before its first full window
    assert [(o["start"], o["valid"]) for o in out if o["type"] == P.WINDOW and o.get("early")] == [(200, 16)]
    win = [o for o in out if o["type"] == P.WINDOW and not o.get("early")]
    assert [(w["start"], w["valid"], w["final"]) for w in win] == [
        (8, 32, True),  # window_starts(40) = [0, 8]: the old segment's last window
        (200, 32, False), (208, 32, True)]  # new segment: window_starts(40) from 200
    assert [o["type"] for o in out].count("gap") == 1 and out[-1]["type"] == P.EOS
    assert win[-1]["duration"] == 96.0 and win[0]["duration"] == pytest.approx(16.0)


def test_engine_drops_stale_live_snippets_and_announces_them_as_a_gap(stream_setup) -> None:
    """A live snippet that reaches the engine older than stream.engine.max_snippet_age_s (a backlog
    in the queues) is not processed late: it is dropped, counted, and the run of stale snippets goes
    downstream as one gap (reason "stale"); fresh snippets after it keep their place on the time line."""
    cfg = copy.deepcopy(stream_setup["cfg"])  # window 32, hop 16, gap_fill = hop
    cfg.stream.engine.max_snippet_age_s = 5.0
    eng = EngineCore(cfg, FakeStages())
    now = time.time()
    items = [(P.SNIPPET, dict(stream="s", index=i, t_capture=now)) for i in range(10)]
    items += [(P.SNIPPET, dict(stream="s", index=i, t_capture=now - 30.0)) for i in range(10, 14)]  # stale
    items += [(P.SNIPPET, dict(stream="s", index=i, t_capture=time.time())) for i in range(14, 40)]
    items += [(P.EOS, dict(stream="s", n_snippets=40, duration=16.0))]
    out = engine_feed(eng, items)
    gaps = [o for o in out if o["type"] == P.GAP]
    assert [(g["first"], g["count"], g["reason"]) for g in gaps] == [(10, 4, "stale")]
    assert eng.metrics.snippets_stale.labels("s")._value.get() == 4
    assert eng.metrics.snippets.labels("s")._value.get() == 36  # the 36 fresh ones were processed
    win = [o for o in out if o["type"] == P.WINDOW and not o.get("early")]  # early looks aside (test above)
    assert [w["start"] for w in win] == [0, 8]  # window_starts(40, 32, 16): the time line is intact
    first = win[0]["feat"]  # feature = snippet index + 1 in every channel; the stale ones read as zeros
    assert list(first[10:14]) == [0.0] * 4 and first[9] == 10.0 and first[14] == 15.0


def test_engine_hop_is_configurable(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, ""))
    cfg.data.hop = 8
    eng = EngineCore(cfg, FakeStages())
    out = engine_feed(eng, [(P.SNIPPET, dict(stream="s", index=i)) for i in range(50)]
                      + [(P.EOS, dict(stream="s", n_snippets=50, duration=20.0))])
    starts = [o["start"] for o in out if o["type"] == P.WINDOW and not o.get("early")]
    assert starts == [0, 8, 16, 18] == window_starts(50, 32, 8)
    # before the first full window, the live stream's early looks come every hop (8, 16, 24 snippets)
    assert [o["valid"] for o in out if o["type"] == P.WINDOW and o.get("early")] == [8, 16, 24]


def test_engine_batches_across_streams(stream_setup) -> None:
    cfg = copy.deepcopy(stream_setup["cfg"])
    cfg.stream.engine.max_wait_ms = 60_000  # only a full batch may trigger: no timing dependence on a busy machine
    stages = FakeStages()
    sizes = []
    orig = stages.mfe
    stages.mfe = lambda clips: (sizes.append(len(clips)), orig(clips))[1]
    eng = EngineCore(cfg, stages)
    for i in range(6):
        for sid in ("a", "b"):
            clip = np.zeros((4, 8, 8, 3), np.uint8)
            h = P.make_header(P.SNIPPET, 0, stream=sid, index=i, t_stream=0.0, t_capture=time.time(), fps=10.0,
                              sigma=4, shape=[4, 8, 8, 3], dtype="uint8", live=True)
            eng.handle(P.decode(P.encode(h, (clip,))))
            if eng.batch_due():
                eng.run_batch()
    eng.run_batch()
    assert sizes == [4, 4, 4]  # max_batch 4, mixing both streams


def test_source_arguments() -> None:
    assert parse_source_arg("cam1=rtsp://h/x?a=b") == ("cam1", "rtsp://h/x?a=b")
    assert parse_source_arg("rtsp://h/x?a=b") == (None, "rtsp://h/x?a=b")
    assert assign_stream_ids(["/v/a.mp4", "/w/a.mp4", "x=/v/b.mp4", "rtsp://u:p@host:8554/live/cam"]) == [
        ("a", "/v/a.mp4"), ("a-2", "/w/a.mp4"), ("x", "/v/b.mp4"), ("live-cam", "rtsp://u:p@host:8554/live/cam")]
    assert safe_uri("rtsp://u:p@host:8554/live") == "rtsp://host:8554/live"


def test_online_on_onnxruntime_engines_equals_offline(stream_setup, tmp_path) -> None:
    """stream.runtime.backend onnxruntime + engines from build_engines: same events as offline PyTorch."""
    pytest.importorskip("onnxruntime")
    from build_engine.build import build_engines
    from engine.checkpoint import load_checkpoint
    from engine.runtime.torch_backend import build_model

    cfg, ckpt, root = stream_setup["cfg"], stream_setup["ckpt"], stream_setup["root"]
    engines = tmp_path / "engines"
    checkpoint = load_checkpoint(ckpt, expect=cfg)
    build_engines(cfg, build_model(cfg, checkpoint), engines, checkpoint=checkpoint, precision="fp32",
                  tensorrt=False)
    video = make_video(root / "ort.mp4", 5, 9.0)
    offline = offline_detections(cfg, ckpt, video)
    cfg_ort = copy.deepcopy(cfg)
    cfg_ort.stream.runtime.backend = "onnxruntime"
    choice = RuntimeChoice("onnxruntime", engine_dir=str(engines), threads=1)  # as stream.runtime.threads gives
    stages = (EngineStages(cfg_ort, str(ckpt), choice), DetectorStages(cfg_ort, str(ckpt), choice))
    assert [s.backend.name for s in stages] == ["onnxruntime"] * 2
    chain = Chain(cfg_ort, stages)
    Grabber(cfg_ort, "cam", open_source(str(video), cfg_ort.stream.sources), chain).run(threading.Event())
    online = top_events(chain.events("cam"), cfg.inference.max_detections)
    assert_same_detections(online, offline, cfg.data.sigma / 10.0)


def test_grabber_opencv_threads_setting() -> None:
    """stream.sources.opencv_threads: a grabber process runs OpenCV on that many threads; 0 leaves it."""
    import cv2
    from stream.grabber import set_opencv_threads
    before = cv2.getNumThreads()
    try:
        set_opencv_threads(1)
        assert cv2.getNumThreads() == 1
        set_opencv_threads(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_run_refuses_onnxruntime_without_engines(stream_setup, tmp_path, capsys) -> None:
    from stream.cli import main
    cfg_path = stream_setup["cfg_path"]
    video = make_video(tmp_path / "v.mp4", 1, 2.0)
    rc = main(["run", "--config", str(cfg_path), "--source", str(video), "--backend", "onnxruntime",
               "--engine-dir", str(tmp_path / "no-engines")])
    assert rc == 2
    assert "no-engines" in capsys.readouterr().err


def test_recent_event_ids_are_bounded_and_keep_the_newest() -> None:
    from engine.online import RecentIds

    ids = RecentIds(capacity=100)
    for i in range(10_000):
        ids.add(f"e{i}")
    ids.add("e9999")  # re-adding a present id changes nothing
    assert len(ids) == 100
    assert "e9999" in ids and "e9900" in ids and "e9899" not in ids and "e0" not in ids
