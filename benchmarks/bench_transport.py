"""Streaming transport and per-stage latency (docs/benchmarks.md, "Streaming transport and stages").

    .venv/bin/python benchmarks/bench_transport.py [--config stream] [--messages 2000] [--quick]

1. Transport: snippet messages (msgpack header + raw uint8 clip, zero-copy send)
   from one process to another over ipc:// and tcp://127.0.0.1, PUSH -> PULL with
   the pipeline's high-water marks; the receiver decodes and validates every message
   and wraps the clip with np.frombuffer, as the engine does. Reports throughput
   (microseconds per snippet, MB/s, pipelined) and one-way latency (one message at
   a time, median / p99 of receive clock - send clock, same host).
2. Stages: the online stages in one process on the config's network (random
   weights; same cost as trained ones): preprocess per frame, MFE per snippet batch,
   MREM per window, SFPN + heads + decoding per window, merge per window.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream import protocol as P  # noqa: E402
from stream.security import Transport  # noqa: E402
from stream.settings import SecuritySettings  # noqa: E402


def _receiver(endpoint: str, n: int, hwm: int, ready, out) -> None:
    import zmq
    ctx = zmq.Context()
    sock = Transport(SecuritySettings(), ctx).socket(zmq.PULL, endpoint, bind=True, hwm=hwm)
    ready.set()
    lat = []
    t0 = None
    nbytes = 0
    for _ in range(n):
        frames = sock.recv_multipart(copy=False)
        now = time.time()
        if t0 is None:
            t0 = time.perf_counter()
        msg = P.decode(frames)
        clip = msg.array()
        nbytes += clip.nbytes
        lat.append(now - msg.header["t_sent"])
    out.put((time.perf_counter() - t0, nbytes, lat))
    sock.close()
    ctx.term()


def transport(endpoint: str, shape: tuple[int, ...], n: int, hwm: int, paced: bool) -> dict[str, float]:
    import zmq
    c = mp.get_context("spawn")
    ready, out = c.Event(), c.Queue()
    proc = c.Process(target=_receiver, args=(endpoint, n + 1, hwm, ready, out))
    proc.start()
    ready.wait(60)
    ctx = zmq.Context()
    sock = Transport(SecuritySettings(), ctx).socket(zmq.PUSH, endpoint, bind=False, hwm=hwm)
    clip = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    seq = P.Sequencer()

    def send(i: int) -> None:
        h = P.make_header(P.SNIPPET, seq(), stream="bench", index=i, t_stream=0.0, t_capture=time.time(),
                          fps=25.0, sigma=8, shape=list(shape), dtype="uint8", live=False, t_sent=time.time())
        sock.send_multipart(P.encode(h, (clip,)), copy=False)

    send(0)  # connection warm-up (counted by the receiver, not timed)
    time.sleep(0.2)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        send(i)
        if paced:
            time.sleep(0.002)
    send_s = time.perf_counter() - t0
    elapsed, nbytes, lat = out.get(timeout=300)
    proc.join(30)
    sock.close()
    ctx.term()
    lat = sorted(lat[1:])
    return {"us_per_msg": elapsed / n * 1e6, "mb_s": nbytes / elapsed / 1e6, "send_us": send_s / n * 1e6,
            "lat_med_us": statistics.median(lat) * 1e6, "lat_p99_us": lat[int(0.99 * (len(lat) - 1))] * 1e6}


def stages(config: str, repeats: int) -> list[tuple[str, str, float]]:
    import torch

    from stream.settings import load_config
    from engine.model.preprocess import Preprocess
    from engine.online.merger import StreamMerger
    from engine.postprocess.decode import decode_window
    from engine.runtime.split import DetectorStages, EngineStages, RuntimeChoice  # the workers' model split
    from synth import SyntheticVideo, random_spec

    cfg = load_config(config)
    torch.set_num_threads(cfg.stream.runtime.threads or torch.get_num_threads())
    d = cfg.data
    # PyTorch on the CPU, random weights: the stages as `menet run` runs them without an engine build
    choice = RuntimeChoice(backend="auto", device="cpu")  # auto without an engine dir: PyTorch
    st, det = EngineStages(cfg, None, choice), DetectorStages(cfg, None, choice)
    video = SyntheticVideo(random_spec(np.random.default_rng(0), width=320, height=240, duration_range=(4, 4)))
    pre = Preprocess(d.resize_short, tuple(d.crop))
    frames = [video.frame(i) for i in range(32)]
    rows = []

    def timed(name: str, unit: str, fn, n: int = repeats) -> None:
        fn()
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        rows.append((name, unit, statistics.median(ts) * 1000))

    timed("preprocess (320x240 BGR -> crop RGB)", "frame", lambda: pre.frame(frames[0]), repeats * 10)
    clip = pre.frames(frames[: d.clip_length])
    for b in (1, cfg.stream.engine.max_batch):
        clips = np.stack([clip] * b)
        timed(f"MFE, batch {b}", f"batch of {b}", lambda: st.mfe(clips))
    window = np.random.default_rng(0).standard_normal((1, st.feature_channels, d.window)).astype(np.float32)
    timed("MREM", "window", lambda: st.mrem(window))
    rel = st.mrem(window)
    timed("SFPN + boundary heads", "window", lambda: det.detect(rel))
    levels = det.detect(rel)
    # as the detector worker decodes: the segment classifier (if the config has one) reads the MREM
    # output or the MFE window (model.segment_input)
    chosen = window[0] if cfg.model.segment_input == "mfe" else rel[0]
    labeller_input = None if det.labeller is None else torch.from_numpy(chosen).to(levels[0].feature.device)

    def decode():
        return decode_window(levels, det.heads, cfg, valid_length=d.window, labeller=det.labeller,
                             labeller_input=labeller_input)

    timed("decode (sparse anchors, random weights)", "window", decode)
    props = decode()
    counter = {"start": 0}

    def merge() -> None:
        m = counter.setdefault("m", StreamMerger(d.sigma / 25.0, cfg.inference, None, max_lag=10.0))
        m.push(counter["start"], props)
        counter["start"] += cfg.data.hop

    timed("merge + Soft-NMS (StreamMerger, lag mode)", "window", merge)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="stream")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="fewer messages and repeats (smoke test)")
    args = ap.parse_args()
    n = 200 if args.quick else args.messages
    reps = 3 if args.quick else args.repeats
    from stream.settings import load_config
    cfg = load_config(args.config)
    d = cfg.data
    shapes = {f"{args.config} ({d.clip_length}x{d.crop[0]}x{d.crop[1]}x3)": (d.clip_length, d.crop[0], d.crop[1], 3),
              "thumos14 (16x112x112x3)": (16, 112, 112, 3)}
    tmp = tempfile.mkdtemp(prefix="menet-bench-")
    print("## Transport (PUSH -> PULL, separate processes, decode + validate + np.frombuffer)\n")
    print("| snippet | transport | us / snippet (pipelined) | MB/s | one-way latency median / p99 (us) |")
    print("| --- | --- | --- | --- | --- |")
    import itertools
    import socket as so
    counter = itertools.count()

    def endpoint(kind: str) -> str:
        if kind == "ipc":
            return f"ipc://{tmp}/bench-{next(counter)}"
        with so.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"

    for label, shape in shapes.items():
        for name in ("ipc", "tcp"):
            thr = transport(endpoint(name), shape, n, cfg.stream.transport.queue_size, paced=False)
            lat = transport(endpoint(name), shape, max(50, n // 10), cfg.stream.transport.queue_size, paced=True)
            print(f"| {label} | {name} | {thr['us_per_msg']:.0f} | {thr['mb_s']:.0f} | "
                  f"{lat['lat_med_us']:.0f} / {lat['lat_p99_us']:.0f} |", flush=True)
    print(f"\n## Stages ({args.config}, one process, torch threads {cfg.stream.runtime.threads or 'default'}, "
          "median of repeats)\n")
    print("| stage | per | ms |")
    print("| --- | --- | --- |")
    for name, unit, ms in stages(args.config, reps):
        print(f"| {name} | {unit} | {ms:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
