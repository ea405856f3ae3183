"""Bad input: the protocol decoder fuzzed (>= 10k malformed messages), malformed messages through the
workers' receive path, NaN/inf features, frames of unexpected size/channels, invalid stream configs.

Every malformed message must raise ProtocolError (never another exception) and, on a worker's
socket, be counted in ``menet_malformed_messages_total``. Deterministic (hypothesis derandomize).
What the rows for docs/reliability.md report is measured by the test that records them.
"""
from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import ConfigError
from stream.settings import load_config
from stream import protocol as P
from stream.cli import main as menet
from stream.detector_worker import DetectorCore
from stream.engine_worker import EngineCore
from stream.grabber import Grabber, sanitize_frame
from stream.metrics import Metrics
from stream.worker import receive_valid
from stream.sources import FrameItem, Source, StatusItem
from hardening_results import record
from stream_support import write_config

if TYPE_CHECKING:
    from conftest import FuzzRuns, FuzzTally


def FUZZ(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _short(frames) -> str:
    return repr([bytes(f)[:40] for f in frames])[:300]


def _decode(t: FuzzTally, frames, with_topic: bool = False, *, must_refuse: bool = False,
            read_payload: bool = False, valid: Callable[[], bool] = lambda: True) -> None:
    """Decode one fuzzed message as a receiver does and count the outcome in ``t``.

    ProtocolError is the refusal receivers count and survive; any other exception is a crash and is
    caught here so the tally, not an assumption, says whether one happened. An accepted message that
    ``must_refuse`` or is not ``valid()`` is counted as wrongly accepted.
    """
    t.tried += 1
    try:
        msg = P.decode(frames, with_topic=with_topic)
        if read_payload:
            msg.array()  # receivers read the payload next: its declared size must have been checked
    except P.ProtocolError:
        t.rejected += 1
        return
    except Exception as exc:  # every other exception is the crash being measured
        t.crashes.append(f"{_short(frames)} -> {exc!r}")
        return
    t.accepted += 1
    if must_refuse or not valid():
        t.wrongly_accepted.append(_short(frames))


def _snippet_header(**over):
    h = P.make_header(P.SNIPPET, 3, stream="cam1", index=7, t_stream=1.2, t_capture=1e9, fps=25.0, sigma=4,
                      shape=[4, 8, 8, 3], dtype="uint8", live=True, tail=False, t_sent=1e9, epoch=0)
    h.update(over)
    return h


def _window_header(**over):
    h = P.make_header(P.WINDOW, 0, stream="s", index=1, start=16, valid=32, sps=0.4, final=False, duration=None,
                      shape=[16, 32], dtype="float32", t_stream_ref=19.2, t_capture=1.0, t_engine_in=1.0,
                      t_window=1.0, live=False, epoch=1)
    h.update(over)
    return h


VALID = {
    P.GAP: dict(stream="cam1", first=10, count=3, reason="dropped", t_capture=1.0),
    P.EOS: dict(stream="cam1", n_snippets=12, n_frames=48, duration=1.9, reason="end"),
    P.STATUS: dict(stream="cam1", state="reconnecting", source="rtsp://h/x", detail="retry", t=1.0,
                   counters={"frames": 3}),
    P.EVENT: dict(stream="cam1", event_id="ab", label="spin", class_id=2, score=0.5, start=1.0, end=2.0,
                  start_wall=1e9, end_wall=1e9 + 1, window=0, t_capture=1e9, t_engine_in=1e9, t_window=1e9,
                  t_published=1e9, latency_s=0.1),
    P.STOP: dict(reason="bye"),
}


def valid_message(type_: str):
    """(header, buffers, topic) of a valid message of ``type_``."""
    if type_ == P.SNIPPET:
        return _snippet_header(), [np.zeros((4, 8, 8, 3), np.uint8).tobytes()], None
    if type_ == P.WINDOW:
        return _window_header(), [np.zeros((16, 32), np.float32).tobytes()], None
    h = P.make_header(type_, 1, **VALID[type_])
    return h, [], ("cam1" if type_ == P.EVENT else None)


ALL_TYPES = sorted(VALID) + [P.SNIPPET, P.WINDOW]
weird = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=12)


# Each strategy is a hypothesis run over its inputs, called with the tally to fill (hypothesis
# passes the drawn values to the rightmost parameters).
@FUZZ(2500)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=5), st.booleans())
def _fuzz_random_bytes(t: FuzzTally, frames, with_topic) -> None:
    _decode(t, frames, with_topic)


@FUZZ(2500)
@given(st.sampled_from(ALL_TYPES), st.data(), weird)
def _fuzz_wrong_types(t: FuzzTally, type_, data, value) -> None:
    h, bufs, topic = valid_message(type_)
    names = [n for n, *_ in P._COMMON + P.SCHEMA[type_]] + ["type", "v", "shape", "dtype"]
    h[data.draw(st.sampled_from(names))] = value
    _decode(t, P.encode(h, bufs, topic=topic), with_topic=topic is not None)  # valid by chance: may decode


@FUZZ(2000)
@given(st.sampled_from(ALL_TYPES), st.floats(0, 1, exclude_max=True), st.booleans())
def _fuzz_truncated(t: FuzzTally, type_, cut, truncate_payload) -> None:
    h, bufs, topic = valid_message(type_)
    frames = [bytes(f) if not isinstance(f, bytes) else f for f in P.encode(h, bufs, topic=topic)]
    k = (1 if topic else 0) + (1 if truncate_payload and bufs else 0)
    frames[k] = frames[k][:int(len(frames[k]) * cut)]
    _decode(t, frames, with_topic=topic is not None, must_refuse=True)


@FUZZ(1500)
@given(st.sampled_from(ALL_TYPES), st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=5), st.none(),
                                           st.floats()).filter(lambda v: v not in P.VERSIONS or isinstance(v, bool)))
def _fuzz_wrong_version(t: FuzzTally, type_, version) -> None:
    h, bufs, topic = valid_message(type_)
    h["v"] = version
    _decode(t, P.encode(h, bufs, topic=topic), with_topic=topic is not None, must_refuse=True)


@FUZZ(1500)
@given(st.sampled_from([P.SNIPPET, P.WINDOW]),
       st.lists(st.integers(1, 2**64 - 1), min_size=1, max_size=8), st.integers(0, 4096))
def _fuzz_huge_and_wrong_sizes(t: FuzzTally, type_, shape, nbytes) -> None:
    """Declared shapes up to 2^64 per dimension with payloads of another size: rejected before any
    allocation (the decoder never trusts a declared size); only an exact size match may decode."""
    h, _, _ = valid_message(type_)
    if type_ == P.SNIPPET:
        shape = shape[:-1] + [3] if len(shape) > 1 else shape
    h["shape"] = shape
    if type_ == P.WINDOW:
        h["valid"] = 1
    _decode(t, [msgpack.packb(h), b"\0" * nbytes], read_payload=True,
            valid=lambda: math.prod(shape) * (4 if type_ == P.WINDOW else 1) == nbytes)


@FUZZ(1000)
@given(st.sampled_from(ALL_TYPES), st.integers(0, 4), st.binary(max_size=64))
def _fuzz_wrong_buffer_count_and_topic(t: FuzzTally, type_, extra, junk) -> None:
    h, bufs, topic = valid_message(type_)
    if extra == 0:  # no payload where one is needed, or one where none is allowed
        frames = P.encode(h, [] if bufs else [junk])
    else:
        frames = P.encode(h, list(bufs) + [junk] * extra)
    _decode(t, frames, must_refuse=True)
    if topic:
        _decode(t, P.encode(h, topic="other" + junk.hex()[:4]), with_topic=True, must_refuse=True)


STRATEGIES: dict[str, Callable[[FuzzTally], None]] = {
    "random bytes": _fuzz_random_bytes,
    "wrong field types": _fuzz_wrong_types,
    "truncated": _fuzz_truncated,
    "wrong version": _fuzz_wrong_version,
    "huge / wrong sizes": _fuzz_huge_and_wrong_sizes,
    "wrong buffer count / topic": _fuzz_wrong_buffer_count_and_topic,
}


def _fuzzed(fuzz_runs: FuzzRuns, name: str) -> FuzzTally:
    """The strategy's tally, run now unless another test of this session already ran it."""
    return fuzz_runs.tally(name, STRATEGIES[name])


def _outcome(t: FuzzTally) -> str:
    if t.crashes:
        return f"{len(t.crashes)} other exception(s), e.g. {t.crashes[0]}"
    if t.wrongly_accepted:
        return f"{len(t.wrongly_accepted)} malformed message(s) decoded, e.g. {t.wrongly_accepted[0]}"
    return "ProtocolError (valid-by-chance messages decoded)" if t.accepted else "ProtocolError"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_fuzz_strategy_raises_only_protocol_error(fuzz_runs: FuzzRuns, name: str) -> None:
    t = _fuzzed(fuzz_runs, name)
    assert t.tried > 0 and t.tried == t.rejected + t.accepted + len(t.crashes)
    assert not t.crashes, f"{len(t.crashes)} inputs raised something other than ProtocolError: {t.crashes[:3]}"
    assert not t.wrongly_accepted, f"{len(t.wrongly_accepted)} malformed inputs decoded: {t.wrongly_accepted[:3]}"


def test_fuzz_total_and_record(fuzz_runs: FuzzRuns) -> None:
    """At least 10k malformed messages over all strategies and none crashed the decoder, as measured
    (strategies no other test ran yet run here, so the order of the tests does not matter).

    The rows are recorded before the checks so that a failing run reports its crash, not a stale pass.
    """
    tallies = {name: _fuzzed(fuzz_runs, name) for name in STRATEGIES}
    for name, t in tallies.items():
        record("input", f"protocol fuzz: {name}", tried=t.tried, counted=t.rejected, crashed=t.crashed,
               outcome=_outcome(t))
    total = sum(t.tried for t in tallies.values())
    crashes = [c for t in tallies.values() for c in t.crashes]
    wrong = [w for t in tallies.values() for w in t.wrongly_accepted]
    record("input", "protocol fuzz: total", tried=total, counted=sum(t.rejected for t in tallies.values()),
           crashed=bool(crashes),
           outcome="no exception other than ProtocolError" if not crashes
           else f"{len(crashes)} other exception(s), e.g. {crashes[0]}")
    assert total >= 10_000
    assert not crashes, f"{len(crashes)} inputs raised something other than ProtocolError: {crashes[:3]}"
    assert not wrong, f"{len(wrong)} malformed inputs decoded: {wrong[:3]}"


# ---------------------------------------------------------------- worker receive paths


class FakeStages:
    feature_channels = 2
    class_names = ["a"]

    def __init__(self, bad_mfe=(), bad_mrem=False):
        self.bad_mfe, self.bad_mrem = set(bad_mfe), bad_mrem

    def mfe(self, clips):
        out = np.stack([np.full(2, float(c[0, 0, 0, 0]), np.float32) for c in clips])
        for i, c in enumerate(clips):
            if int(c[0, 0, 0, 0]) in self.bad_mfe:
                out[i] = np.nan if i % 2 else np.inf
        return out

    def mrem(self, windows):
        return windows * np.inf if self.bad_mrem else windows


def _snippet_wire(index, live=True, fill=None, shape=(4, 8, 8, 3), sid="s"):
    clip = np.full(shape, (index % 250 + 1) if fill is None else fill, np.uint8)
    h = P.make_header(P.SNIPPET, 0, stream=sid, index=index, t_stream=0.0, t_capture=time.time(), fps=10.0,
                      sigma=4, shape=list(shape), dtype="uint8", live=live)
    return P.encode(h, (clip,))


def _malformed_corpus(n: int) -> list[list[bytes]]:
    rng = np.random.default_rng(0)
    out = []
    good = bytes(P.encode(_snippet_header())[0])
    for i in range(n):
        k = i % 5
        if k == 0:
            out.append([rng.bytes(int(rng.integers(0, 100)))])
        elif k == 1:
            out.append([good[:int(rng.integers(0, len(good)))], b"x"])
        elif k == 2:
            out.append([msgpack.packb(_snippet_header(v=3)), np.zeros((4, 8, 8, 3), np.uint8).tobytes()])
        elif k == 3:
            out.append([msgpack.packb(_snippet_header(shape=[2**40, 2**40, 2**40, 3])), b"\0" * 16])
        else:
            out.append([msgpack.packb(_snippet_header(fps=float("nan"))), np.zeros((4, 8, 8, 3), np.uint8).tobytes()])
    return out


def test_engine_receive_path_counts_malformed_and_keeps_working() -> None:
    """A real PAIR socket over inproc: 500 malformed messages interleaved with a valid stream; every bad
    one counted, the valid ones all processed (windows out), no exception."""
    cfg = load_config(write_config(Path(__import__("tempfile").mkdtemp())))
    metrics = Metrics("engine")
    eng = EngineCore(cfg, FakeStages(), metrics)
    ctx = zmq.Context()
    rx, tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    rx.bind("inproc://engine-fuzz")
    tx.connect("inproc://engine-fuzz")
    bad = _malformed_corpus(500)
    sent_valid = 0
    for i, frames in enumerate(bad):
        tx.send_multipart(frames)
        if i % 10 == 0:
            tx.send_multipart(_snippet_wire(sent_valid), copy=False)
            sent_valid += 1
    # valid on the wire, wrong for this engine: another clip shape (would break a batch) -> counted
    tx.send_multipart(_snippet_wire(sent_valid, shape=(4, 16, 16, 3)), copy=False)
    tx.send_multipart(P.encode(P.make_header(P.EOS, 0, stream="s", n_snippets=sent_valid, duration=4.0)))
    handled = 0
    while True:
        got = receive_valid(rx, metrics, "engine")
        if got is None:
            break
        eng.handle(*got)
        eng.run_batch()
        handled += 1
    malformed = metrics.malformed._value.get()
    assert handled == sent_valid + 2
    assert malformed == 500 + 1
    wins = [P.decode(w) for w in eng.outbox]
    assert [m.type for m in wins][-1] == P.EOS and any(m.type == P.WINDOW for m in wins)
    record("input", "malformed messages into the engine socket (inproc PAIR)", tried=501, counted=int(malformed),
           crashed=False, outcome=f"all counted; the {sent_valid} valid snippets still made their windows")
    rx.close(0)
    tx.close(0)
    ctx.term()


def test_detector_receive_path_counts_malformed() -> None:
    cfg = load_config(write_config(Path(__import__("tempfile").mkdtemp())))
    metrics = Metrics("detector")

    class NoStages:
        class_names = ["a"]

        def detect(self, x):
            raise ValueError("wrong channel count")

    det = DetectorCore(cfg, NoStages(), metrics=metrics)
    ctx = zmq.Context()
    rx, tx = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    rx.bind("inproc://det-fuzz")
    tx.connect("inproc://det-fuzz")
    for frames in _malformed_corpus(300):
        tx.send_multipart(frames)
    # valid on the wire, wrong for this detector: window length 16 (expects 32), and a stage error
    tx.send_multipart(P.encode(_window_header(shape=[16, 16], valid=16, start=0, live=True),
                               (np.zeros((16, 16), np.float32),)))
    tx.send_multipart(P.encode(_window_header(start=0, live=True), (np.zeros((16, 32), np.float32),)))
    while (got := receive_valid(rx, metrics, "detector")) is not None:
        det.handle(*got)
    assert metrics.malformed._value.get() == 302
    assert not [h for _, h in det.outbox if h["type"] == P.EVENT]
    record("input", "malformed messages into the detector socket (inproc PAIR)", tried=302,
           counted=int(metrics.malformed._value.get()), crashed=False,
           outcome="all counted (incl. wrong window length, stage error)")
    rx.close(0)
    tx.close(0)
    ctx.term()


# ---------------------------------------------------------------- NaN / inf


def test_nonfinite_snippet_features_are_zeroed_and_counted(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    eng = EngineCore(cfg, FakeStages(bad_mfe={5, 6}))
    for i in range(40):
        eng.handle(P.decode(_snippet_wire(i)))
        eng.run_batch()
    eng.handle(P.decode(P.encode(P.make_header(P.EOS, 0, stream="s", n_snippets=40, duration=16.0))))
    wins = [P.decode(w) for w in eng.outbox if P.decode(w).type == P.WINDOW]
    assert wins
    for w in wins:
        a = w.array()
        assert np.isfinite(a).all()
        if w.header["start"] == 0:
            assert (a[:, 4:6] == 0).all() and a[0, 3] == 4.0 and a[0, 6] == 7.0  # index i has fill i + 1
    assert eng.nonfinite.labels("mfe")._value.get() == 2
    record("input", "NaN/inf snippet features (MFE output)", tried=2, counted=2, crashed=False,
           outcome="zeroed (as a missing snippet), counted in menet_nonfinite_total{stage=mfe}")


def test_nonfinite_windows_are_dropped_not_published(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    eng = EngineCore(cfg, FakeStages(bad_mrem=True))
    for i in range(40):
        eng.handle(P.decode(_snippet_wire(i + 1)))  # fill >= 2: inf * value stays inf
        eng.run_batch()
    eng.handle(P.decode(P.encode(P.make_header(P.EOS, 0, stream="s", n_snippets=41, duration=16.0))))
    types = [P.decode(w).type for w in eng.outbox]
    assert P.WINDOW not in types and types[-1] == P.EOS
    n_bad = eng.nonfinite.labels("mrem")._value.get()
    assert n_bad >= 2
    # the detector refuses a NaN window too (defence in depth): no events
    class Boom:
        class_names = ["a"]

        def detect(self, x):
            raise AssertionError("a NaN window reached the detector stage")

    det = DetectorCore(cfg, Boom())
    feat = np.full((16, 32), np.nan, np.float32)
    det.handle(P.decode(P.encode(_window_header(start=0, live=True), (feat,))))
    assert det.nonfinite.labels("detect")._value.get() == 1 and not det.outbox
    record("input", "NaN/inf windows (MREM output / window payload)", tried=int(n_bad) + 1, counted=int(n_bad) + 1,
           crashed=False, outcome="window dropped and counted (engine and detector); no event")


# ---------------------------------------------------------------- frames of unexpected size / channels


class OddSource(Source):
    def __init__(self, frames):
        super().__init__("odd://")
        self.frames, self.fps, self.live = frames, 10.0, False

    def items(self, stop):
        yield StatusItem("live")
        for i, f in enumerate(self.frames):
            yield FrameItem(f, i / 10.0, 1000.0 + i)
        yield StatusItem("ended")


def test_frames_of_unexpected_size_and_channels(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    rng = np.random.default_rng(0)
    good = [rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) for _ in range(8)]
    odd_ok = [rng.integers(0, 255, (17, 300), dtype=np.uint8),  # grey, extreme aspect
              rng.integers(0, 255, (480, 640, 4), dtype=np.uint8),  # BGRA
              rng.integers(0, 255, (20, 20, 1), dtype=np.uint8),  # grey with a channel axis, below the crop
              rng.integers(0, 65535, (36, 36, 3), dtype=np.uint16),  # 16-bit
              np.full((40, 40, 3), np.nan, np.float32)]  # float with NaN
    odd_bad = [np.zeros((0, 0, 3), np.uint8), np.zeros((1, 1, 3), np.uint8), np.zeros((40, 40, 2), np.uint8),
               np.zeros((40, 40, 3, 2), np.uint8), np.array(["x"]), None]
    frames = good[:4] + odd_ok + odd_bad + good[4:]
    sent = []

    def send(wire, block):
        sent.append(P.decode(wire).header)
        return True

    g = Grabber(cfg, "odd", OddSource(frames), send)
    g.run(threading.Event())
    snippets = [h for h in sent if h["type"] == P.SNIPPET]
    n_ok = len(good) + len(odd_ok)
    assert g.bad_frames == len(odd_bad) and g.frames == n_ok
    assert len(snippets) == -(-n_ok // cfg.data.sigma)
    assert all(h["shape"] == [cfg.data.clip_length, 32, 32, 3] for h in snippets)
    assert sanitize_frame(odd_ok[0]).shape == (17, 300, 3)
    record("input", "frames of unexpected size / channels / dtype (grabber)", tried=len(odd_ok) + len(odd_bad),
           counted=len(odd_bad), crashed=False,
           outcome=f"{len(odd_ok)} converted (grey, BGRA, 16-bit, float, tiny), {len(odd_bad)} dropped and counted")


# ---------------------------------------------------------------- invalid configs


# (section path, the bad line, the key the error must name); each goes in a config extending a good one
BAD_STREAM_CONFIGS = [
    ("data", "hop: 0", "data.hop"),
    ("data", "hop: 1000", "data.hop"),
    ("stream.transport", "queue_size: 0", "stream.transport.queue_size"),
    ("stream.engine", "max_batch: -1", "stream.engine.max_batch"),
    ("stream.transport", "event_endpoint: http://127.0.0.1:5560", "stream.transport.event_endpoint"),
    ("stream.transport", "event_endpoint: tcp://127.0.0.1", "stream.transport.event_endpoint"),
    ("stream.transport", "event_endpoint: tcp://127.0.0.1:99999", "stream.transport.event_endpoint"),
    ("stream.transport", "snippet_endpoint: 5", "stream.transport.snippet_endpoint"),
    ("stream.detector", "merge: sometimes", "stream.detector.merge"),
    ("stream.engine", "pad_batches: maybe", "stream.engine.pad_batches"),
    ("stream.sources", "reconnect_min_s: 0", "stream.sources.reconnect_min_s"),
    ("stream.sources", "reconnect_max_s: 0.1", "stream.sources.reconnect_max_s"),
    ("stream.sources", "opencv_threads: -1", "stream.sources.opencv_threads"),
    ("stream.security", "curve_clients_dir: /tmp", "stream.security.curve_clients_dir"),
    ("stream.security", "allow_insecure_remote: 3", "stream.security.allow_insecure_remote"),
    ("stream", "no_such_key: 1", "stream.no_such_key"),
    ("stream", "max_batch: 4", "stream.engine.max_batch"),  # the earlier flat layout: says where it moved
    ("stream.transport", "metrics_port: 70000", "stream.transport.metrics_port"),
]


def _nested(section: str, line: str) -> str:
    """YAML setting ``line`` inside the dotted ``section``."""
    parts = section.split(".")
    text = "".join("  " * i + f"{p}:\n" for i, p in enumerate(parts))
    return text + "  " * len(parts) + line + "\n"


def test_invalid_stream_configs_are_refused_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every bad setting: load_config raises ConfigError naming the key, and `menet run` exits 2 with that
    message before it starts anything. Counted per config, recorded, then checked."""
    refused: list[str] = []
    wrong: list[str] = []
    crashes: list[str] = []
    for i, (section, line, key) in enumerate(BAD_STREAM_CONFIGS):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        path = folder / "bad.yaml"
        path.write_text(f"extends: {write_config(folder)}\n" + _nested(section, line))
        try:
            load_config(path)
        except ConfigError as exc:
            if key not in str(exc):
                wrong.append(f"{line!r}: ConfigError does not name {key}: {exc}")
                continue
        except Exception as exc:  # anything but ConfigError is a crash of the loader
            crashes.append(f"{line!r}: {exc!r}")
            continue
        else:
            wrong.append(f"{line!r}: accepted")
            continue  # a config that loads would start a pipeline below
        # the source is never opened: the config is refused first
        rc = menet(["run", "--config", str(path), "--source", str(folder / "never-opened.mp4")])
        err = capsys.readouterr().err
        if rc != 2 or key not in err:
            wrong.append(f"{line!r}: menet run exited {rc}, stderr {err.strip()!r}")
            continue
        refused.append(line)
    n = len(BAD_STREAM_CONFIGS)
    record("input", "invalid stream configs", tried=n, counted=len(refused), crashed=bool(crashes),
           outcome="ConfigError naming the key (menet run exits 2)" if len(refused) == n
           else f"{n - len(refused)} not refused as they should be, e.g. {(crashes + wrong)[0]}")
    assert not crashes, crashes
    assert not wrong, wrong
