"""Each role as its own service (stream/roles.py, `menet engine|detector|grabber`) and sharding.

The fleet test runs two engine/detector pairs and one grabber command as separate processes
over tcp, as on separate hosts; a subscriber follows both detectors; every stream's final
events equal offline inference, each stream served by the engine the assignment names.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError
from stream import protocol as P
from stream.roles import engine_for
from stream.settings import load_config
from stream.subscriber import Subscriber
from stream_support import REPO, assert_same_detections, free_port, make_video, offline_detections, top_events

ENGINES = ["tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555", "tcp://10.0.0.3:5555", "tcp://10.0.0.4:5555"]


def test_assignment_is_stable_balanced_and_moves_little_when_an_engine_is_added() -> None:
    ids = [f"cam{i}" for i in range(2000)]
    before = {sid: engine_for(sid, ENGINES) for sid in ids}
    assert before == {sid: engine_for(sid, list(ENGINES)) for sid in ids}  # a pure function: every host agrees
    counts = [sum(1 for v in before.values() if v == k) for k in range(len(ENGINES))]
    assert min(counts) > 0.8 * len(ids) / len(ENGINES), counts  # no engine starved
    after = {sid: engine_for(sid, ENGINES + ["tcp://10.0.0.5:5555"]) for sid in ids}
    moved = [sid for sid in ids if after[sid] != before[sid]]
    assert all(after[sid] == 4 for sid in moved)  # only to the new engine, never between the old ones
    assert 0.1 < len(moved) / len(ids) < 0.3  # about 1/5 of the streams
    assert engine_for("cam7", ENGINES, {"cam7": 2}) == 2  # the config's shards win
    with pytest.raises(ValueError, match="no engine endpoints"):
        engine_for("cam1", [])
    with pytest.raises(ValueError, match=r"shards.cam1: 9 is not an engine index \(0..3\)"):
        engine_for("cam1", ENGINES, {"cam1": 9})


def test_fleet_settings_are_checked_with_their_key(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("extends: stream\nstream:\n  transport:\n    engines: [tcp://e0:5555, udp://e1:5555, tcp://e0:5555]\n"
                   "    shards: {cam1: 3}\n    metrics_host: ' '\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    text = str(err.value)
    assert "stream.transport.engines[1]: must be an ipc://, tcp:// or inproc:// endpoint" in text
    assert "stream.transport.engines: lists an endpoint twice" in text
    assert "stream.transport.shards.cam1: must index stream.transport.engines (0..2), got 3" in text
    assert "stream.transport.metrics_host: must be a host name or address" in text


def test_role_commands_refuse_a_missing_endpoint_with_a_reason(stream_setup) -> None:
    out = subprocess.run([sys.executable, "-m", "stream", "grabber", "--config", str(stream_setup["cfg_path"]),
                          "--source", "cam=synthetic://x?duration=1"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "no engine endpoint: pass --engine or set stream.transport.engines" in out.stderr
    out = subprocess.run([sys.executable, "-m", "stream", "engine", "--config", str(stream_setup["cfg_path"]),
                          "--snippets", "udp://0.0.0.0:1"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "snippet endpoint must be tcp://HOST:PORT or ipc://PATH" in out.stderr


class Role:
    """One `python -m stream ROLE ...` process with its log."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.log = open(tmp / f"{name}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "stream", *args], cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.mark.slow
def test_a_fleet_of_two_engine_detector_pairs_equals_offline(stream_setup, tmp_path: Path) -> None:
    cfg = stream_setup["cfg"]
    videos = {f"s{k}": make_video(tmp_path / f"v{k}.mp4", seed=40 + k, seconds=secs)
              for k, secs in enumerate((9.0, 6.5, 7.7))}
    offline = {sid: offline_detections(cfg, stream_setup["ckpt"], v) for sid, v in videos.items()}
    snippets = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    windows = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    events = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    common = ["--config", str(stream_setup["cfg_path"])]
    ckpt = ["--checkpoint", str(stream_setup["ckpt"])]
    # s2 pinned to engine 1 by the config; s0 and s1 go where rendezvous hashing sends them
    fleet_cfg = tmp_path / "fleet.yaml"
    fleet_cfg.write_text(f"extends: {stream_setup['cfg_path']}\nstream:\n  transport:\n"
                         f"    engines: [{snippets[0]}, {snippets[1]}]\n    shards: {{s2: 1}}\n")
    expected = {sid: engine_for(sid, snippets, {"s2": 1}) for sid in videos}
    sub = Subscriber(events)  # the whole fleet, as `menet subscribe --endpoint A --endpoint B` reads it
    per_detector = [Subscriber(ep) for ep in events]  # who published what
    roles: list[Role] = []
    messages: list[dict[str, Any]] = []
    published_by: dict[str, set[int]] = {sid: set() for sid in videos}
    try:
        for k in range(2):
            roles.append(Role(tmp_path, f"engine{k}", ["engine", *common, *ckpt, "--snippets", snippets[k],
                                                       "--windows", windows[k]]))
            roles.append(Role(tmp_path, f"detector{k}", ["detector", *common, *ckpt, "--windows", windows[k],
                                                         "--events", events[k], "--wait-subscribers", "2"]))
        roles.append(Role(tmp_path, "grabber", ["grabber", "--config", str(fleet_cfg),
                                                *[a for sid, v in videos.items() for a in ("--source", f"{sid}={v}")]]))
        pending = set(videos)
        deadline = time.monotonic() + 150
        while pending:
            assert time.monotonic() < deadline, "timed out; logs:\n" + "\n".join(r.output() for r in roles)
            msg = sub.recv(0.2)
            if msg is not None:
                messages.append(msg.header)
                if msg.type == P.EOS:
                    pending.discard(msg.stream)
            for k, one in enumerate(per_detector):
                while (m := one.recv(0)) is not None:
                    published_by[m.stream].add(k)
        assert roles[-1].proc.wait(60) == 0, roles[-1].output()  # the grabber command ends with its files
        grabber_log = roles[-1].output()
    finally:
        for r in roles:
            r.stop()
        for one in [sub, *per_detector]:
            one.close()
    for sid, index in expected.items():
        assert f"grabber {sid} -> {snippets[index]}" in grabber_log
        assert published_by[sid] == {index}, f"{sid}: published by detector(s) {published_by[sid]}, not {index}"
    for sid, v in videos.items():
        online = top_events([h for h in messages if h["type"] == P.EVENT and h["stream"] == sid
                             and h.get("state", "final") == "final"], cfg.inference.max_detections)
        assert_same_detections(online, offline[sid], cfg.data.sigma / 10.0)
