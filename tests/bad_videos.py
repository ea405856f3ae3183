"""Damaged video files for the bad-input tests (not a test module).

``make_bad_videos(folder)`` writes, from one generated mp4 (``synth``, 100 frames at 10 fps):

* ``trunc.mp4``: the mp4 cut in half. OpenCV's mp4 writer puts the index (``moov``) at the end,
  so this file cannot be opened at all;
* ``trunc_faststart.mp4``: the same video with its index moved to the front (as ``-movflags
  faststart`` does), cut in half: it opens, the first half decodes, then decoding fails;
* ``corrupt.mp4``: 2 KB in the middle overwritten with random bytes (decoding fails there);
* ``random.mp4``: 50 kB of random bytes; ``zero.mp4``: 0 bytes;
* ``empty.avi``: a valid MJPG/AVI container with 0 frames (``cv2.VideoWriter`` opened and released);
* ``empty.mp4``: the same with an mp4 container (FFmpeg refuses it: no sample tables).
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from stream_support import make_video

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def _boxes(buf: bytes | bytearray, start: int, end: int):
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", bytes(buf[i:i + 8]))
        hdr = 8
        if size == 1:
            size = struct.unpack(">Q", bytes(buf[i + 8:i + 16]))[0]
            hdr = 16
        elif size == 0:
            size = end - i
        if size < hdr:
            raise ValueError(f"bad mp4 box at {i}")
        yield i, size, hdr, kind
        i += size


def _shift_chunk_offsets(buf: bytearray, start: int, end: int, delta: int) -> None:
    for i, size, hdr, kind in _boxes(buf, start, end):
        if kind in _CONTAINERS:
            _shift_chunk_offsets(buf, i + hdr, i + size, delta)
        elif kind in (b"stco", b"co64"):
            width = 4 if kind == b"stco" else 8
            fmt = ">I" if width == 4 else ">Q"
            n = struct.unpack(">I", bytes(buf[i + 12:i + 16]))[0]
            for k in range(n):
                p = i + 16 + width * k
                buf[p:p + width] = struct.pack(fmt, struct.unpack(fmt, bytes(buf[p:p + width]))[0] + delta)


def faststart(data: bytes) -> bytes:
    """The mp4 with its ``moov`` box moved right after ``ftyp`` (chunk offsets shifted)."""
    top = list(_boxes(data, 0, len(data)))
    i, size, _, _ = next(t for t in top if t[3] == b"moov")
    moov = bytearray(data[i:i + size])
    _shift_chunk_offsets(moov, 8, len(moov), len(moov))
    out = bytearray()
    for j, sz, _, kind in top:
        if kind == b"moov":
            continue
        out += data[j:j + sz]
        if kind == b"ftyp":
            out += moov
    return bytes(out)


def count_frames(path: Path) -> tuple[bool, int, int]:
    """(opens, frames decoded until the first failure, frame count the container reports)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        return False, 0, 0
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return True, n, reported


def make_bad_videos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = make_video(folder / "good.mp4", seed=41, seconds=10.0, fps=10.0)
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    out = {"good": good}
    out["trunc"] = folder / "trunc.mp4"
    out["trunc"].write_bytes(data[:len(data) // 2])
    fast = faststart(data)
    out["trunc_faststart"] = folder / "trunc_faststart.mp4"
    out["trunc_faststart"].write_bytes(fast[:len(fast) // 2])
    corrupt = bytearray(data)
    mid = len(corrupt) // 2
    corrupt[mid:mid + 2000] = rng.bytes(2000)
    out["corrupt"] = folder / "corrupt.mp4"
    out["corrupt"].write_bytes(bytes(corrupt))
    out["random"] = folder / "random.mp4"
    out["random"].write_bytes(rng.bytes(50_000))
    out["zero"] = folder / "zero.mp4"
    out["zero"].write_bytes(b"")
    for name, fourcc in (("empty.avi", "MJPG"), ("empty.mp4", "mp4v")):
        w = cv2.VideoWriter(str(folder / name), cv2.VideoWriter_fourcc(*fourcc), 10.0, (48, 48))
        assert w.isOpened(), name
        w.release()
    out["empty_avi"] = folder / "empty.avi"
    out["empty_mp4"] = folder / "empty.mp4"
    return out
