"""End to end over loopback: `menet run` (supervisor + grabber/engine/detector processes) and a subscriber.

The online == offline contract: events received for a generated video match
``detect_video`` on ``extract_video`` features with the same checkpoint (same
segments within one snippet, same labels, scores within 1e-3).
"""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq

from stream import protocol as P
from stream.subscriber import Subscriber
from stream_support import (REPO, assert_same_detections, free_port, make_video, offline_detections,
                                 top_events)

pytestmark = pytest.mark.slow


def free_port_block(n: int) -> int:
    for _ in range(50):
        base = free_port()
        try:
            socks = []
            for k in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + k))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


class Run:
    """`python -m stream run ...` plus a subscriber connected before it starts."""

    def __init__(self, setup: dict[str, Any], tmp: Path, sources: list[str], extra: list[str] = (),
                 checkpoint: bool = True) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.sub = Subscriber(self.endpoint)
        self.snippets = f"ipc://{tmp}/snippets"
        cmd = [sys.executable, "-m", "stream", "run", "--config", str(setup["cfg_path"]),
               "--event-endpoint", self.endpoint, "--snippet-endpoint", self.snippets,
               "--window-endpoint", f"ipc://{tmp}/windows", "--wait-subscribers", "1", *extra]
        if checkpoint:
            cmd += ["--checkpoint", str(setup["ckpt"])]
        for s in sources:
            cmd += ["--source", s]
        self.log = open(tmp / "run.log", "w+")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        self.messages: list[dict[str, Any]] = []

    def collect(self, until_eos: set[str], timeout: float = 90.0, until: Any = None) -> None:
        """Receive until every stream in ``until_eos`` has ended (or ``until(messages)`` holds)."""
        deadline = time.monotonic() + timeout
        pending = set(until_eos)
        while time.monotonic() < deadline:
            if until is not None and until(self.messages):
                return
            if until is None and not pending:
                return
            msg = self.sub.recv(0.5)
            if msg is None:
                continue
            self.messages.append(msg.header)
            if msg.type == P.EOS:
                pending.discard(msg.stream)
        raise AssertionError(f"timed out waiting (pending end of {pending}); log:\n{self.output()}")

    def events(self, stream: str) -> list[dict[str, Any]]:
        """The stream's final events (what offline inference gives; the lifecycle's provisional, open and
        retracted messages are left out)."""
        return [h for h in self.messages if h["type"] == P.EVENT and h["stream"] == stream
                and h.get("state", "final") == "final"]

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"menet run did not exit; log:\n{self.output()}")

    def output(self) -> str:
        if self.log.closed:
            return self.final_output
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sub.close()
        self.final_output = self.output()
        self.log.close()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_online_equals_offline_end_to_end(stream_setup, tmp_path: Path) -> None:
    cfg = stream_setup["cfg"]
    video = make_video(tmp_path / "clip.mp4", seed=11, seconds=20.3)
    offline = offline_detections(cfg, stream_setup["ckpt"], video)
    metrics = free_port_block(4)
    run = Run(stream_setup, tmp_path, [f"cam={video}"], ["--metrics-port", str(metrics)])
    try:
        # a malformed message straight into the engine's socket: counted and dropped, never a crash
        ctx = zmq.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(run.snippets)
        push.send_multipart([b"\xc1 not msgpack"])
        run.collect({"cam"})
        status, body = http_get(metrics + 2, "/metrics")  # engine
        assert status == 200 and "menet_snippets_total" in body
        malformed = [ln for ln in body.splitlines() if ln.startswith("menet_malformed_messages_total")]
        assert malformed and float(malformed[0].split()[-1]) == 1.0
        assert 'menet_batch_size_count{stage="mfe"}' in body
        status, body = http_get(metrics + 2, "/health")
        assert status == 200 and json.loads(body)["role"] == "engine"
        status, body = http_get(metrics + 1, "/metrics")  # detector
        assert 'menet_events_total{stream="cam"}' in body
        status, body = http_get(metrics, "/health")  # supervisor
        assert status == 200 and json.loads(body)["workers"]["engine"] is True
        assert run.wait() == 0, run.output()
        push.close(0)
        ctx.term()
    finally:
        run.close()
    online = top_events(run.events("cam"), cfg.inference.max_detections)
    assert_same_detections(online, offline, cfg.data.sigma / 10.0)
    states = [h["state"] for h in run.messages if h["type"] == P.STATUS]
    assert states[0] == "live" and states[-1] == "ended"
    ev = run.events("cam")[0]
    assert ev["label"] in cfg.data.class_names and ev["t_published"] >= ev["t_window"] >= ev["t_engine_in"]


def test_engine_dir_auto_runs_the_cached_onnx_graphs(stream_setup, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`menet run --engine-dir auto`: the first start builds the checkpoint's ONNX graphs into the cache and
    both workers run ONNX Runtime, with the offline (PyTorch) detections; the next start finds them."""
    pytest.importorskip("onnxruntime")
    cache = tmp_path / "cache"
    monkeypatch.setenv("MENET_ENGINE_CACHE", str(cache))  # inherited by `menet run` and its workers
    cfg = stream_setup["cfg"]
    video = make_video(tmp_path / "clip.mp4", seed=12, seconds=12.3)
    offline = offline_detections(cfg, stream_setup["ckpt"], video)
    outputs = []
    for attempt in range(2):
        run = Run(stream_setup, tmp_path, [f"cam={video}"], ["--engine-dir", "auto"])
        try:
            run.collect({"cam"})
            assert run.wait() == 0, run.output()
        finally:
            run.close()
        outputs.append(run.output())
        online = top_events(run.events("cam"), cfg.inference.max_detections)
        assert_same_detections(online, offline, cfg.data.sigma / 10.0)
    assert "ONNX graphs built" in outputs[0] and "ONNX graphs from the cache" in outputs[1]
    for out in outputs:
        assert "runtime backend onnxruntime" in out and "runtime backend pytorch" not in out
    assert len(list(cache.iterdir())) == 1


def test_three_streams_through_one_engine(stream_setup, tmp_path: Path) -> None:
    cfg = stream_setup["cfg"]
    videos = {f"s{k}": make_video(tmp_path / f"v{k}.mp4", seed=20 + k, seconds=secs)
              for k, secs in enumerate((12.1, 2.5, 8.0))}
    offline = {sid: offline_detections(cfg, stream_setup["ckpt"], v) for sid, v in videos.items()}
    run = Run(stream_setup, tmp_path, [f"{sid}={v}" for sid, v in videos.items()])
    try:
        run.collect(set(videos))
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    engines = [ln for ln in run.output().splitlines() if "started engine" in ln]
    assert len(engines) == 1
    for sid in videos:
        online = top_events(run.events(sid), cfg.inference.max_detections)
        assert_same_detections(online, offline[sid], cfg.data.sigma / 10.0)


def test_sigint_flushes_the_partial_window(stream_setup, tmp_path: Path) -> None:
    src = "syn=synthetic://syn?seed=3&duration=120&fps=10&width=48&height=48&rate=realtime"
    run = Run(stream_setup, tmp_path, [src], checkpoint=False)
    try:
        # wait until snippets flow (the live status), let a few seconds pass, then Ctrl-C
        run.collect(set(), timeout=60, until=lambda ms: any(h.get("state") == "live" for h in ms))
        time.sleep(3.0)
        run.proc.send_signal(signal.SIGINT)
        run.collect({"syn"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    assert "RANDOMLY initialised" in run.output()
    eos = [h for h in run.messages if h["type"] == P.EOS][0]
    assert eos["reason"] == "stopped" and eos["n_snippets"] >= 1
    assert run.events("syn"), "the flushed partial window should produce (random) events"
    assert [h["state"] for h in run.messages if h["type"] == P.STATUS][-1] == "ended"


def test_unopenable_source_fails_at_start(stream_setup, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "stream", "run", "--config", str(stream_setup["cfg_path"]),
                          "--source", str(tmp_path / "missing.mp4")], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "cannot be opened" in out.stderr and "missing.mp4" in out.stderr


def test_crashed_engine_is_restarted(stream_setup, tmp_path: Path) -> None:
    import os
    import re

    src = "syn=synthetic://syn?seed=4&duration=120&fps=10&width=48&height=48&rate=realtime"
    run = Run(stream_setup, tmp_path, [src], checkpoint=False)
    try:
        run.collect(set(), timeout=60, until=lambda ms: any(h.get("state") == "live" for h in ms))
        time.sleep(1.0)
        pid = int(re.search(r"started engine \(pid (\d+)\)", run.output()).group(1))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while run.output().count("started engine") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "engine exited with status -9; restarting in" in run.output()
        assert run.output().count("started engine") == 2
        n = len(run.messages)
        # the new engine takes snippets again: a status change or events after the restart
        time.sleep(8.0)
        run.proc.send_signal(signal.SIGINT)
        run.collect({"syn"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    eos = [h for h in run.messages[n:] if h["type"] == P.EOS]
    assert eos and eos[0]["n_snippets"] > 0
    assert run.events("syn"), "windows after the restart should give (random) events"


def test_live_source_starts_capturing_when_the_pipeline_is_ready(stream_setup, tmp_path: Path) -> None:
    """A live camera is not read while the engine loads: with queues of only 4 snippets per socket
    (a few seconds of this camera, less than the engine takes to spawn and load its model), no
    snippet is dropped at start and every snippet of the stream reaches the end of stream."""
    cfg = tmp_path / "small-queues.yaml"
    cfg.write_text(f"extends: {stream_setup['cfg_path']}\nstream:\n  transport:\n    queue_size: 4\n")
    src = "cam=synthetic://cam?seed=3&duration=12&fps=10&width=48&height=48&rate=realtime"
    run = Run({**stream_setup, "cfg_path": cfg}, tmp_path, [src])
    try:
        run.collect({"cam"}, timeout=120)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    gaps = [h for h in run.messages if h["type"] == P.GAP]
    assert not gaps, gaps
    eos = next(h for h in run.messages if h["type"] == P.EOS)
    assert eos["n_snippets"] == 12 * 10 // 4, eos  # 30 snippets of 4 frames, none lost
    log = run.final_output  # the grabber waited for the engine before it opened the camera
    assert log.index("cam: waiting for the engine to load") < log.index("cam: engine connected: capturing"), log
