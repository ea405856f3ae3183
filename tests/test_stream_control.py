"""Runtime sources and bad video files, in process (fast): control request validation, the source
instance of a re-added stream (new event ids, state freed at its end), damaged files through the file
source and the grabber. The same through real `menet run` processes: tests/test_hardening_faults.py
(remove / re-add) and tests/test_hardening_video.py (bad files), both slow."""
from __future__ import annotations

import dataclasses

import os
import threading
from pathlib import Path

import msgpack
import pytest
import torch

from stream import protocol as P
from stream.control import ControlError, parse_request, valid_stream_id
from stream.detector_worker import DetectorCore
from engine.runtime.split import DetectorStages, EngineStages
from stream.engine_worker import EngineCore
from stream.grabber import Grabber
from stream.worker import SupervisorState, grabber_target, source_key
from stream.metrics import Metrics
from stream.sources import FileSource, SourceError, open_source
from bad_videos import count_frames, make_bad_videos
from stream_support import make_video


def _req(obj) -> list[bytes]:
    return [msgpack.packb(obj, use_bin_type=True)]


@pytest.mark.parametrize("frames,why", [
    ([b"\xc1\xc1 not msgpack"], "not msgpack"),
    (_req([1, 2]), "must be a msgpack map"),
    (_req({"op": "restart", "id": "a"}), "unknown op"),
    (_req({"id": "a"}), "unknown op"),
    (_req({"op": "add", "id": "a"}), "uri must be"),
    (_req({"op": "add", "id": "a", "uri": ""}), "uri must be"),
    (_req({"op": "add", "id": "a", "uri": 42}), "uri must be"),
    (_req({"op": "add", "id": "a", "uri": "x\x00y"}), "uri must be"),
    (_req({"op": "add", "id": "a", "uri": "x" * 5000}), "uri must be"),
    (_req({"op": "add", "id": "../etc", "uri": "a.mp4"}), "id must be"),
    (_req({"op": "add", "id": "..", "uri": "a.mp4"}), "id must be"),
    (_req({"op": "add", "id": 7, "uri": "a.mp4"}), "id must be"),
    (_req({"op": "remove"}), "needs the id"),
    (_req({"op": "remove", "id": "a", "uri": "b.mp4"}), "takes no uri"),
    (_req({"op": "list", "extra": 1}), "unknown field"),
    (_req({"v": 2, "op": "list"}), "version"),
    (_req({"op": "list"}) * 2, "one msgpack frame"),
    ([b"\x80" * (65 * 1024)], "exceeds"),
])
def test_malformed_control_requests_are_refused_with_a_reason(frames, why: str) -> None:
    with pytest.raises(ControlError, match=why):
        parse_request(frames)


def test_valid_control_requests() -> None:
    assert parse_request(_req({"op": "list"})) == {"op": "list", "id": None, "uri": None}
    assert parse_request(_req({"v": 1, "op": "remove", "id": "cam-2"}))["id"] == "cam-2"
    add = parse_request(_req({"op": "add", "uri": " /data/lobby cam.mp4 "}))
    assert add == {"op": "add", "id": "lobby-cam", "uri": "/data/lobby cam.mp4"}  # id derived as --source does
    assert valid_stream_id("a.b_c-1") and not valid_stream_id("a/b") and not valid_stream_id("x" * 65)


def test_supervisor_state_travels_as_a_control_message() -> None:
    """The supervisor's state (replay epoch, streams to replay, releases, removals) is one validated
    protocol message; what a worker decodes is what was sent."""
    state = SupervisorState(3, frozenset({"cam"}), frozenset({"engine", grabber_target("cam", 1)}),
                            frozenset({source_key("cam", 1)}))
    msg = P.decode(P.encode(state.to_header()))
    assert msg.type == P.CONTROL and SupervisorState.from_header(msg.header) == dataclasses.replace(state, received=True)
    with pytest.raises(P.ProtocolError, match="replay"):
        P.decode(P.encode({**state.to_header(), "replay": "cam"}))


def test_readded_source_is_a_new_instance_with_new_event_ids(stream_setup, tmp_path: Path) -> None:
    """What the supervisor does on remove + add of the same id: the first instance ends (EOS: engine
    and detector free its state), the second starts from snippet 0 as instance 1 (stamped by its
    grabber on every snippet and carried by the engine's windows), so its events (same video: same
    detections) get ids the subscriber has not seen, and its published eos names instance 1."""
    torch.set_num_threads(1)
    cfg = stream_setup["cfg"]
    ckpt = str(stream_setup["ckpt"])
    video = make_video(tmp_path / "v.mp4", seed=5, seconds=14.0)
    engine = EngineCore(cfg, EngineStages(cfg, ckpt))
    detector = DetectorCore(cfg, DetectorStages(cfg, ckpt))
    out: list[dict] = []

    def send(frames, block):
        engine.handle(P.decode(frames))
        engine.run_batch()
        for m in engine.outbox:
            detector.handle(P.decode(m))
        engine.outbox.clear()
        out.extend(P.decode(P.encode(h, topic=t), with_topic=True).header for t, h in detector.outbox)
        detector.outbox.clear()
        return True

    runs = []
    for instance in (0, 1):
        out.clear()
        source = open_source(str(video), cfg.stream.sources)
        Grabber(cfg, "cam", source, send, epoch=0, instance=instance).run(threading.Event())
        assert not engine.streams and not detector.streams  # state freed at the end of stream
        runs.append([h for h in out if h["type"] == P.EVENT and h.get("state", "final") == "final"])
        eos = [h for h in out if h["type"] == P.EOS]
        assert len(eos) == 1 and eos[0].get("instance", 0) == instance
    first, second = runs
    assert first and len(first) == len(second)
    assert all("instance" not in e for e in first) and all(e["instance"] == 1 for e in second)
    assert {e["event_id"] for e in first}.isdisjoint(e["event_id"] for e in second)
    key = lambda e: (e["class_id"], e["start"], e["end"], e["score"])  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, second))  # the same detections otherwise


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_videos(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name,why", [("trunc", "cannot open video"), ("random", "cannot open video"),
                                      ("zero", "empty file"), ("empty_mp4", "cannot open video")])
def test_unreadable_files_are_refused_naming_the_file(bad_videos, stream_setup,
                                                      name: str, why: str) -> None:
    with pytest.raises(SourceError, match=why) as info:
        FileSource(str(bad_videos[name]), stream_setup["cfg"].stream)
    assert str(bad_videos[name]) in str(info.value)


@pytest.mark.parametrize("name", ["trunc_faststart", "corrupt", "empty_avi"])
def test_damaged_files_end_after_their_readable_frames(bad_videos, stream_setup, name: str) -> None:
    cfg = stream_setup["cfg"]
    opens, readable, reported = count_frames(bad_videos[name])
    assert opens
    sent: list[dict] = []

    def send(frames, block):
        sent.append(P.decode(frames).header)
        return True

    metrics = Metrics(f"grabber:{name}")
    g = Grabber(cfg, name, FileSource(str(bad_videos[name]), cfg.stream.sources), send, metrics)
    assert g.run(threading.Event()) == 0
    eos = sent[-1]
    ended = [h for h in sent if h["type"] == P.STATUS][-1]
    assert eos["type"] == P.EOS and eos["n_frames"] == readable == g.frames
    assert eos["n_snippets"] == len([h for h in sent if h["type"] == P.SNIPPET])
    errors = metrics.decode_errors.labels(name)._value.get()
    if name == "empty_avi":
        assert readable == reported == 0 and eos["n_snippets"] == 0 and eos["reason"] == "end"
        assert "zero-length" in ended["detail"] and errors == 0
    else:
        assert 0 < readable < reported and eos["reason"] == "decode error" and errors == 1
        assert f"decoding stopped at frame {readable} of {reported}" in ended["detail"]
        assert str(bad_videos[name]) in ended["detail"]
    assert os.path.getsize(bad_videos[name]) > 0


def test_menet_sources_cli_against_a_control_socket(tmp_path: Path, monkeypatch, capsys) -> None:
    """`menet sources` finds this user's run (ipc socket in a menet-run-* temp dir), prints the sources,
    exits 1 with the error of a refused request and 2 when nothing answers."""
    import tempfile

    import zmq

    from stream.cli import main
    from stream.control import discover, make_reply

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert discover() == []
    run_dir = tmp_path / "menet-run-x"
    run_dir.mkdir()
    endpoint = f"ipc://{run_dir}/control"
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.bind(endpoint)
    (tmp_path / "menet-run-stale").mkdir()  # a killed run's leftover: not a socket, skipped
    (tmp_path / "menet-run-stale" / "control").write_text("")
    sources = [{"id": "cam", "uri": "rtsp://h/s", "kind": "rtsp", "live": True, "state": "running", "restarts": 0,
                "instance": 1}]
    requests = []

    def serve(n):
        for _ in range(n):
            req = msgpack.unpackb(rep.recv())
            requests.append(req)
            if req["op"] == "remove":
                rep.send(msgpack.packb(make_reply(False, "unknown source id 'x' (sources: cam)", sources=sources)))
            else:
                rep.send(msgpack.packb(make_reply(True, message="ok", sources=sources)))
    t = threading.Thread(target=serve, args=(3,))
    t.start()
    try:
        assert discover() == [endpoint]
        assert main(["sources", "list"]) == 0
        out = capsys.readouterr().out
        assert "cam (#1)" in out and "running" in out and "rtsp://h/s" in out
        assert main(["sources", "remove", "x"]) == 1
        assert "unknown source id 'x'" in capsys.readouterr().err
        assert main(["sources", "--control", endpoint, "add", "cam2=/data/a.mp4"]) == 0
    finally:
        t.join(10)
        rep.close(0)
        ctx.term()
    assert requests == [{"v": 1, "op": "list"}, {"v": 1, "op": "remove", "id": "x"},
                        {"v": 1, "op": "add", "id": "cam2", "uri": "/data/a.mp4"}]
    assert main(["sources", "add"]) == 2 and "needs [ID=]URI" in capsys.readouterr().err
    assert main(["sources", "--control", f"ipc://{tmp_path}/nobody", "--timeout", "0.3", "list"]) == 2
    assert "no reply" in capsys.readouterr().err
