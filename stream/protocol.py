"""The MENet-stream wire protocol: every process speaks only this (docs/protocol.md).

A message is one ZeroMQ multipart message::

    [topic]   only on the event PUB socket: the stream id, UTF-8
    header    msgpack map: {"v": 1 or 2, "type": ..., "stream": ..., "seq": ..., ...}
    buffer*   raw payloads the header describes (snippet frames; a window's MREM output and,
              when the detector's labeller reads them, its MFE features)

Frames travel as raw ``uint8`` buffers sent with ``copy=False`` (zero-copy on the
sending side; the receiver wraps the received frame with ``np.frombuffer``).

:func:`decode` validates every field of every message type; a malformed message
raises :class:`ProtocolError` (receivers count it, log one line and drop it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import msgpack
import numpy as np

# Version 2 adds the event lifecycle (provisional, open, retracted events before the final one).
# Everything a version-1 client knows keeps "v": 1 (final events included); only the lifecycle
# messages carry "v": 2, so a client that checks v == 1 still gets exactly the v1 stream and drops
# (counts) the rest. This module reads both.
PROTOCOL_VERSION = 2
VERSIONS = (1, 2)
EVENT_STATES = ("provisional", "open", "final", "retracted")

SNIPPET, GAP, EOS, WINDOW, EVENT, STATUS, STOP = "snippet", "gap", "eos", "window", "event", "status", "stop"
CONTROL = "control"  # supervisor -> its workers: the run's state (replay epoch, releases, removals)
TYPES = (SNIPPET, GAP, EOS, WINDOW, EVENT, STATUS, STOP, CONTROL)
STATES = ("connecting", "live", "stalled", "reconnecting", "ended", "error")

MAX_HEADER_BYTES = 64 * 1024
MAX_STREAM_ID = 128
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024  # a declared shape beyond this is rejected before any allocation


class ProtocolError(ValueError):
    """A message does not follow the protocol; the text says which field and why."""


@dataclass
class Message:
    header: dict[str, Any]
    buffers: list[memoryview]
    topic: str | None = None

    @property
    def type(self) -> str:
        return self.header["type"]

    @property
    def stream(self) -> str | None:
        return self.header.get("stream")

    def array(self) -> np.ndarray:
        """The payload of a snippet (uint8 [T, H, W, 3]) or window (float32 [C, W]) message."""
        h = self.header
        return np.frombuffer(self.buffers[0], dtype=np.dtype(h["dtype"])).reshape(h["shape"])

    def window_features(self) -> np.ndarray | None:
        """A window message's MFE features (float32 [C_feat, W]), when it carries them."""
        h = self.header
        if "features_shape" not in h:
            return None
        return np.frombuffer(self.buffers[1], dtype=np.dtype(h["dtype"])).reshape(h["features_shape"])


# ---------------------------------------------------------------- field checks


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _nonneg_int(x: Any) -> bool:
    return _int(x) and x >= 0


def _pos_int(x: Any) -> bool:
    return _int(x) and x >= 1


def _pos_num(x: Any) -> bool:
    return _num(x) and x > 0


def _nonneg_num(x: Any) -> bool:
    return _num(x) and x >= 0


def _str(x: Any) -> bool:
    return isinstance(x, str) and len(x) <= 4096


def _bool(x: Any) -> bool:
    return isinstance(x, bool)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or check(x)


def _stream_id(x: Any) -> bool:
    return isinstance(x, str) and 1 <= len(x) <= MAX_STREAM_ID and x.isprintable()


def _str_list(x: Any) -> bool:
    return isinstance(x, list) and len(x) <= 100_000 and all(_str(v) for v in x)


def _shape(x: Any) -> bool:
    return (isinstance(x, list) and 1 <= len(x) <= 8 and all(_pos_int(v) and v <= 2 ** 31 for v in x)
            and math.prod(x) * 4 <= MAX_PAYLOAD_BYTES)


# Replay epoch (non-live streams only, optional): a worker restart makes file grabbers resend
# their stream from snippet 0 with a higher epoch; receivers drop messages of older epochs.
_EPOCH: "Field" = ("epoch", lambda x: _nonneg_int(x), False, "replay epoch (int >= 0), file streams")
# Source instance (optional): a source removed and added again with the same id at runtime
# (`menet sources`) is instance 1, 2, ...; its events get ids that cannot repeat the old ones.
_INSTANCE: "Field" = ("instance", lambda x: _nonneg_int(x), False, "source instance (int >= 0), re-added sources")


Field = tuple[str, Callable[[Any], bool], bool, str]  # name, check, required, description

_COMMON: list[Field] = [
    ("v", lambda x: x in VERSIONS and not isinstance(x, bool), True, f"protocol version, one of {VERSIONS}"),
    ("type", lambda x: x in TYPES, True, f"one of {TYPES}"),
    ("seq", _nonneg_int, True, "integer >= 0"),
]

SCHEMA: dict[str, list[Field]] = {
    SNIPPET: [
        ("stream", _stream_id, True, "stream id"),
        ("index", _nonneg_int, True, "snippet index >= 0"),
        ("t_stream", _num, True, "stream seconds of the first frame (PTS when present)"),
        ("t_capture", _num, True, "capture clock (unix seconds)"),
        ("fps", _pos_num, True, "frames per second > 0"),
        ("sigma", _pos_int, True, "frames per snippet"),
        ("shape", _shape, True, "[T, H, W, 3]"),
        ("dtype", lambda x: x == "uint8", True, "'uint8'"),
        ("live", _bool, True, "bool"),
        ("tail", _bool, False, "bool: clip clamped at the stream end"),
        ("t_sent", _opt(_num), False, "send clock"),
        _EPOCH,
        _INSTANCE,
    ],
    GAP: [
        ("stream", _stream_id, True, "stream id"),
        ("first", _nonneg_int, True, "first missing snippet index"),
        ("count", _pos_int, True, "missing snippets >= 1"),
        ("reason", _str, True, "'dropped', 'reconnect' or 'stale'"),
        ("t_capture", _opt(_num), False, "clock"),
        _EPOCH,
    ],
    EOS: [
        ("stream", _stream_id, True, "stream id"),
        ("n_snippets", _opt(_nonneg_int), True, "snippets in the stream (null: as received)"),
        ("n_frames", _opt(_nonneg_int), False, "frames in the stream"),
        ("duration", _opt(_nonneg_num), False, "seconds"),
        ("reason", _str, False, "why"),
        _EPOCH,
        _INSTANCE,
    ],
    WINDOW: [
        ("stream", _stream_id, True, "stream id"),
        ("index", _nonneg_int, True, "window number in the stream"),
        ("start", _nonneg_int, True, "first snippet index"),
        ("valid", _pos_int, True, "real (unpadded) snippets"),
        ("sps", _pos_num, True, "seconds per snippet"),
        ("final", _bool, True, "last window of a stream or segment"),
        ("early", _bool, False, "a partial window before the segment's first full one: provisional events only"),
        ("duration", _opt(_nonneg_num), True, "clip bound (stream seconds) or null"),
        ("shape", _shape, True, "[C, W]"),
        ("dtype", lambda x: x == "float32", True, "'float32'"),
        ("t_stream_ref", _num, True, "stream seconds of the newest snippet's end"),
        ("t_capture", _num, True, "capture clock of the newest snippet"),
        ("t_engine_in", _num, True, "engine receive clock of the newest snippet"),
        ("t_window", _num, True, "engine send clock"),
        # the window's MFE snippet features, a second float32 payload: sent when the detector's
        # segment classifier reads them (model.segment_input: mfe)
        ("features_shape", _shape, False, "[C_feat, W] of the second payload"),
        _EPOCH,
        _INSTANCE,
    ],
    EVENT: [
        ("stream", _stream_id, True, "stream id"),
        ("event_id", _str, True, "stable id"),
        ("label", _str, True, "class name"),
        ("class_id", _nonneg_int, True, "class id"),
        ("score", _nonneg_num, True, "score"),
        ("start", _num, True, "stream seconds"),
        ("end", _num, True, "stream seconds"),
        ("start_wall", _num, True, "unix seconds"),
        ("end_wall", _num, True, "unix seconds"),
        ("window", _nonneg_int, True, "window index that made it final"),
        ("t_capture", _num, True, "capture clock"),
        ("t_engine_in", _num, True, "engine receive clock"),
        ("t_window", _num, True, "engine send clock"),
        ("t_published", _num, True, "publish clock"),
        ("latency_s", _num, True, "t_published - t_capture"),
        _INSTANCE,
        # v2: the event's lifecycle state; absent = final (v1). A later message for the same event_id
        # supersedes the earlier ones.
        ("state", lambda x: x in EVENT_STATES, False, f"one of {EVENT_STATES}"),
    ],
    STATUS: [
        ("stream", _stream_id, True, "stream id"),
        ("state", lambda x: x in STATES, True, f"one of {STATES}"),
        ("source", _str, False, "source URI (credentials removed)"),
        ("detail", _str, False, "text"),
        ("t", _num, True, "clock"),
        ("counters", _opt(lambda x: isinstance(x, dict) and all(isinstance(k, str) and _num(v) for k, v in x.items())),
         False, "map name -> number"),
        _EPOCH,
        _INSTANCE,
    ],
    STOP: [("reason", _str, False, "why")],
    # The supervisor's state as its workers need it, published whole a few times a second (a worker
    # that (re)connects late still gets it): no shared memory or files pass between processes.
    CONTROL: [
        ("epoch", _nonneg_int, True, "replay epoch (int >= 0)"),
        ("replay", _str_list, True, "stream ids whose files are sent again from snippet 0 at this epoch"),
        ("released", _str_list, True, "workers that may close their sockets: 'engine', 'grabber:ID#INSTANCE'"),
        ("removed", _str_list, True, "sources removed at runtime: 'ID#INSTANCE'"),
        # optional: older supervisors omit it (= none restarted)
        ("restarted", _str_list, False, "core workers restarted at least once: 'engine', 'detector'"),
    ],
}

N_BUFFERS = {SNIPPET: 1, WINDOW: 1}


# ---------------------------------------------------------------- encode / decode


def make_header(type_: str, seq: int, **fields: Any) -> dict[str, Any]:
    """A header; version 1 unless it is a lifecycle event (any state but final), which needs v2."""
    v = 2 if type_ == EVENT and fields.get("state", "final") != "final" else 1
    return {"v": v, "type": type_, "seq": int(seq), **fields}


def encode(header: dict[str, Any], buffers: Sequence[Any] = (), topic: str | None = None) -> list[Any]:
    """Multipart frames for ``send_multipart(frames, copy=False)``; buffers go as they are."""
    frames: list[Any] = [] if topic is None else [topic.encode()]
    frames.append(msgpack.packb(header, use_bin_type=True))
    frames.extend(buffers)
    return frames


def _bytes(frame: Any) -> bytes:
    if isinstance(frame, bytes):
        return frame
    if hasattr(frame, "bytes"):  # zmq.Frame
        return frame.bytes
    return bytes(frame)


def _view(frame: Any) -> memoryview:
    if hasattr(frame, "buffer"):  # zmq.Frame: no copy
        return frame.buffer
    return memoryview(frame)


def validate_header(header: Any) -> dict[str, Any]:
    if not isinstance(header, dict):
        raise ProtocolError(f"header is a {type(header).__name__}, not a map")
    fields = list(_COMMON)
    t = header.get("type")
    if t not in TYPES:
        raise ProtocolError(f"type: expected one of {TYPES}, got {t!r}")
    fields += SCHEMA[t]
    for name, check, required, desc in fields:
        if name not in header:
            if required:
                raise ProtocolError(f"{t}: missing field {name!r} ({desc})")
            continue
        try:
            ok = check(header[name])
        except Exception:  # noqa: BLE001 - a check must never crash a receiver
            ok = False
        if not ok:
            raise ProtocolError(f"{t}: field {name!r} must be {desc}, got {header[name]!r:.80}")
    if t == SNIPPET and header["shape"][-1] != 3:
        raise ProtocolError("snippet: shape must end with 3 channels")
    if t == WINDOW and (len(header["shape"]) != 2 or header["valid"] > header["shape"][1]):
        raise ProtocolError("window: shape must be [C, W] with valid <= W")
    if t == WINDOW and "features_shape" in header and (
            len(header["features_shape"]) != 2 or header["features_shape"][1] != header["shape"][1]):
        raise ProtocolError("window: features_shape must be [C_feat, W] with the W of shape")
    if t == EVENT and header["end"] < header["start"]:
        raise ProtocolError("event: end before start")
    if t == EVENT and header.get("state", "final") != "final" and header["v"] < 2:
        raise ProtocolError(f"event: state {header['state']!r} needs protocol version 2")
    return header


def encode_window(header: dict[str, Any], relation: np.ndarray, features: np.ndarray | None = None) -> list[Any]:
    """A window message: the MREM output ``relation`` [C, W] and, when the detector's labeller reads
    them (``MENetConfig.labeller_reads_mfe``), the window's MFE ``features`` [C_feat, W]
    (``features_shape`` is set here). Fills ``shape`` and ``dtype`` of ``header``."""
    payload = [np.ascontiguousarray(relation, np.float32)]
    header = {**header, "shape": list(payload[0].shape), "dtype": "float32"}
    if features is not None:
        payload.append(np.ascontiguousarray(features, np.float32))
        header["features_shape"] = list(payload[1].shape)
    return encode(header, payload)


def decode(frames: Sequence[Any], with_topic: bool = False) -> Message:
    """Parse and validate one received multipart message (``recv_multipart(copy=False)``)."""
    frames = list(frames)
    topic = None
    if with_topic:
        if not frames:
            raise ProtocolError("empty message")
        try:
            topic = _bytes(frames.pop(0)).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("topic is not UTF-8") from exc
    if not frames:
        raise ProtocolError("no header frame")
    raw = _bytes(frames[0])
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header of {len(raw)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ProtocolError(f"header is not msgpack: {type(exc).__name__}: {exc}"[:200]) from None
    validate_header(header)
    t = header["type"]
    buffers = [_view(f) for f in frames[1:]]
    shapes = [header["shape"]] if N_BUFFERS.get(t, 0) else []
    if t == WINDOW and "features_shape" in header:
        shapes.append(header["features_shape"])
    if len(buffers) != len(shapes):
        raise ProtocolError(f"{t}: expected {len(shapes)} payload buffer(s), got {len(buffers)}")
    for buf, shape, name in zip(buffers, shapes, ("shape", "features_shape")):
        nbytes = int(np.prod(shape)) * np.dtype(header["dtype"]).itemsize
        if buf.nbytes != nbytes:
            raise ProtocolError(f"{t}: payload of {buf.nbytes} bytes, {name} {shape} "
                                f"{header['dtype']} needs {nbytes}")
    if topic is not None and topic != header.get("stream"):
        raise ProtocolError(f"topic {topic!r} differs from the header's stream {header.get('stream')!r}")
    return Message(header, buffers, topic)


class Sequencer:
    """Per-sender sequence numbers."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        n = self.n
        self.n += 1
        return n


# ---------------------------------------------------------------- sockets


def ensure_ipc_dir(endpoint: str) -> None:
    """Create the folder of an ``ipc://`` endpoint (binding needs it)."""
    if endpoint.startswith("ipc://"):
        import os
        folder = os.path.dirname(endpoint[6:])
        if folder:
            os.makedirs(folder, exist_ok=True)
