"""What validating every message costs: ``stream.protocol.decode`` per message type.

    python benchmarks/bench_protocol.py            # 20000 decodes per type, median of 5
    python benchmarks/bench_protocol.py --quick

Every received message is decoded and checked field by field against the one schema
table (``stream/protocol.py`` ``SCHEMA``). This script times that per message type
and relates it to the message rates of a loaded engine (16 live streams at 25 fps,
sigma 8: 50 snippets/s; the detector sees far fewer windows). When ``msgspec`` is
importable it also times the same snippet header decoded into a typed
``msgspec.Struct`` (tagged union), the alternative docs/protocol.md discusses; the
project does not depend on it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream import protocol as P  # noqa: E402


def sample_messages() -> dict[str, list]:
    clip = np.zeros((8, 56, 56, 3), np.uint8)
    feat = np.zeros((512, 128), np.float32)
    snippet = P.make_header(P.SNIPPET, 7, stream="cam-1", index=1234, t_stream=49.3, t_capture=1.7e9, fps=25.0,
                            sigma=8, shape=list(clip.shape), dtype="uint8", live=True, tail=False, t_sent=1.7e9)
    window = P.make_header(P.WINDOW, 9, stream="cam-1", index=17, start=1088, valid=128, sps=0.32, final=False,
                           duration=None, live=True, shape=list(feat.shape), dtype="float32", t_stream_ref=389.1,
                           t_capture=1.7e9, t_engine_in=1.7e9, t_window=1.7e9)
    event = P.make_header(P.EVENT, 3, stream="cam-1", event_id="0123456789abcdef", label="spin", class_id=2,
                          score=0.61, start=12.0, end=18.5, start_wall=1.7e9, end_wall=1.7e9, window=17,
                          t_capture=1.7e9, t_engine_in=1.7e9, t_window=1.7e9, t_published=1.7e9, latency_s=0.05)
    return {"snippet": P.encode(snippet, (clip,)), "window": P.encode(window, (feat,)),
            "event": P.encode(event, topic="cam-1")}


def time_per_call(fn, n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def msgspec_snippet(frames: list, n: int, repeats: int) -> float | None:
    try:
        import msgspec
    except ImportError:
        return None

    class Snippet(msgspec.Struct, tag="snippet", tag_field="type"):  # type: ignore[call-arg]
        v: int
        seq: int
        stream: str
        index: int
        t_stream: float
        t_capture: float
        fps: float
        sigma: int
        shape: list[int]
        dtype: str
        live: bool
        tail: bool = False
        t_sent: float | None = None
        epoch: int | None = None
        instance: int | None = None

    decoder = msgspec.msgpack.Decoder(Snippet)
    raw = bytes(frames[0])
    return time_per_call(lambda: decoder.decode(raw), n, repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="decodes per type and repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="1000 decodes, 3 repeats")
    a = ap.parse_args(argv)
    n, repeats = (1000, 3) if a.quick else (a.n, a.repeats)
    print("| message | decode + validate (us, median) | share of one core at 50 msg/s |")
    print("| --- | --- | --- |")
    msgs = sample_messages()
    for name, frames in msgs.items():
        t = time_per_call(lambda: P.decode(frames, with_topic=name == "event"), n, repeats)
        print(f"| {name} | {t * 1e6:.1f} | {t * 50 * 100:.3f} % |")
    typed = msgspec_snippet(msgs["snippet"], n, repeats)
    if typed is not None:
        print(f"| snippet header into a msgspec Struct (typed, no payload checks) | {typed * 1e6:.1f} | "
              f"{typed * 50 * 100:.3f} % |")
    else:
        print("(msgspec not installed: the typed comparison is skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
