"""Wire protocol: round trips, and every malformed message is a ProtocolError (never a crash)."""
from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import protocol as P


def snippet_msg(**over):
    frames = np.arange(4 * 8 * 8 * 3, dtype=np.uint8).reshape(4, 8, 8, 3)
    h = P.make_header(P.SNIPPET, 3, stream="cam1", index=7, t_stream=1.2, t_capture=1e9, fps=25.0, sigma=4,
                      shape=[4, 8, 8, 3], dtype="uint8", live=True, tail=False, t_sent=1e9)
    h.update(over)
    return h, frames


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


def test_snippet_round_trip_is_zero_copy_on_receive() -> None:
    h, frames = snippet_msg()
    wire = P.encode(h, (frames,))
    assert wire[1] is frames  # the array itself goes to send_multipart(copy=False)
    msg = P.decode([bytes(wire[0]), frames.tobytes()])
    assert msg.type == "snippet" and msg.stream == "cam1" and msg.header["index"] == 7
    np.testing.assert_array_equal(msg.array(), frames)


def test_window_round_trip() -> None:
    feat = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    h = P.make_header(P.WINDOW, 0, stream="s", index=1, start=16, valid=32, sps=0.4, final=False, duration=None,
                      shape=[16, 32], dtype="float32", t_stream_ref=19.2, t_capture=1.0, t_engine_in=1.0,
                      t_window=1.0, live=False)
    msg = P.decode(P.encode(h, (feat,)))
    np.testing.assert_array_equal(msg.array(), feat)
    assert msg.window_features() is None


def _window_header(**over):
    h = P.make_header(P.WINDOW, 0, stream="s", index=1, start=16, valid=32, sps=0.4, final=False, duration=None,
                      shape=[16, 32], dtype="float32", t_stream_ref=19.2, t_capture=1.0, t_engine_in=1.0,
                      t_window=1.0, live=False)
    h.update(over)
    return h


def test_window_carries_its_mfe_features_as_a_second_payload() -> None:
    rng = np.random.default_rng(1)
    feat = rng.standard_normal((16, 32)).astype(np.float32)
    features = rng.standard_normal((128, 32)).astype(np.float32)
    header = {k: v for k, v in _window_header().items() if k not in ("shape", "dtype")}
    msg = P.decode(P.encode_window(header, feat, features))
    assert msg.header["shape"] == [16, 32] and msg.header["features_shape"] == [128, 32]
    np.testing.assert_array_equal(msg.array(), feat)
    np.testing.assert_array_equal(msg.window_features(), features)
    assert P.decode(P.encode_window(header, feat)).window_features() is None


@pytest.mark.parametrize("shape,buffers,match", [
    ([128, 32], 1, "expected 2 payload"),  # announced, not sent
    (None, 2, "expected 1 payload"),  # sent, not announced
    ([128, 31], 2, "features_shape must be"),  # another window length
    ([128, 32, 1], 2, "features_shape must be"),
    ([64, 32], 2, "features_shape \\[64, 32\\] float32 needs 8192"),  # payload of another size
])
def test_window_features_payload_is_checked(shape, buffers: int, match: str) -> None:
    feat = np.zeros((16, 32), np.float32)
    features = np.zeros((128, 32), np.float32)
    h = _window_header() if shape is None else _window_header(features_shape=shape)
    with pytest.raises(P.ProtocolError, match=match):
        P.decode(P.encode(h, (feat, features)[:buffers]))


@pytest.mark.parametrize("type_", sorted(VALID))
def test_other_types_round_trip(type_: str) -> None:
    h = P.make_header(type_, 1, **VALID[type_])
    topic = h.get("stream") if type_ == P.EVENT else None
    msg = P.decode(P.encode(h, topic=topic), with_topic=topic is not None)
    assert msg.header == h


@pytest.mark.parametrize("type_", sorted(VALID))
def test_each_missing_required_field_is_rejected(type_: str) -> None:
    h = P.make_header(type_, 1, **VALID[type_])
    required = [name for name, _, req, _ in P._COMMON + P.SCHEMA[type_] if req]
    for name in required:
        bad = {k: v for k, v in h.items() if k != name}
        with pytest.raises(P.ProtocolError, match=name if name not in ("type",) else "type"):
            P.decode(P.encode(bad))


@pytest.mark.parametrize("field,value", [
    ("v", 3), ("v", True), ("seq", -1), ("index", 1.5), ("fps", 0), ("fps", math.inf), ("sigma", True), ("shape", [4, 8, 8]),
    ("shape", [4, 8, 8, 3, 0]), ("dtype", "float32"), ("live", 1), ("stream", ""), ("stream", "x" * 200),
    ("stream", "a\nb"), ("t_capture", "now"),
])
def test_bad_snippet_fields_are_rejected(field: str, value) -> None:
    h, frames = snippet_msg(**{field: value})
    with pytest.raises(P.ProtocolError):
        P.decode(P.encode(h, (frames,)))


def test_payload_must_match_the_header() -> None:
    h, frames = snippet_msg()
    with pytest.raises(P.ProtocolError, match="payload"):
        P.decode([P.encode(h)[0], frames.tobytes()[:-1]])
    with pytest.raises(P.ProtocolError, match="buffer"):
        P.decode([P.encode(h)[0]])
    with pytest.raises(P.ProtocolError, match="buffer"):
        P.decode(P.encode(P.make_header(P.STOP, 0), (b"x",)))


def test_event_topic_must_match_stream_and_segment_order() -> None:
    h = P.make_header(P.EVENT, 1, **VALID[P.EVENT])
    with pytest.raises(P.ProtocolError, match="topic"):
        P.decode(P.encode(h, topic="other"), with_topic=True)
    h2 = {**h, "start": 3.0}
    with pytest.raises(P.ProtocolError, match="end before start"):
        P.decode(P.encode(h2, topic="cam1"), with_topic=True)


def test_oversized_and_non_map_headers() -> None:
    with pytest.raises(P.ProtocolError, match="exceeds"):
        P.decode([b"\x00" * (P.MAX_HEADER_BYTES + 1)])
    with pytest.raises(P.ProtocolError, match="not a map"):
        P.decode([msgpack.packb([1, 2, 3])])
    with pytest.raises(P.ProtocolError):
        P.decode([])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=4), st.booleans())
def test_random_bytes_never_crash(frames: list[bytes], with_topic: bool) -> None:
    try:
        P.decode(frames, with_topic=with_topic)
    except P.ProtocolError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(VALID) + [P.SNIPPET]), st.text(max_size=12), json_values)
def test_mutated_headers_never_crash(type_: str, key: str, value) -> None:
    """Set one field (known or not) of a valid header to an arbitrary value: valid or ProtocolError."""
    if type_ == P.SNIPPET:
        h, frames = snippet_msg()
        buffers = (frames,)
    else:
        h, buffers = P.make_header(type_, 1, **VALID[type_]), ()
    fields = [name for name, *_ in P._COMMON + P.SCHEMA[type_]]
    target = fields[sum(map(ord, key)) % len(fields)] if key else "unknown"
    h[target] = value
    try:
        P.decode(P.encode(h, buffers))
    except P.ProtocolError:
        pass


def test_event_lifecycle_states_need_version_2() -> None:
    """v2 adds the lifecycle: final events stay v1 (a v1 reader still gets them), the other states are v2."""
    base = dict(stream="cam1", event_id="ab", label="spin", class_id=2, score=0.5, start=1.0, end=2.0,
                start_wall=1e9, end_wall=1e9 + 1, window=0, t_capture=1e9, t_engine_in=1e9, t_window=1e9,
                t_published=1e9, latency_s=0.1)
    final = P.make_header(P.EVENT, 0, state="final", **base)
    provisional = P.make_header(P.EVENT, 1, state="provisional", **base)
    assert (final["v"], provisional["v"]) == (1, 2)
    for h in (final, provisional):
        assert P.decode(P.encode(h, topic="cam1"), with_topic=True).header["state"] == h["state"]
    with pytest.raises(P.ProtocolError, match="needs protocol version 2"):
        P.decode(P.encode({**provisional, "v": 1}, topic="cam1"), with_topic=True)
    with pytest.raises(P.ProtocolError, match="state"):
        P.decode(P.encode({**provisional, "state": "maybe"}, topic="cam1"), with_topic=True)
