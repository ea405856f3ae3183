"""Accelerated soak: `menet run` on synthetic streams faster than real time, RSS of every process sampled.

    python benchmarks/soak.py [--minutes 30] [--streams 3] [--interval 2] [--config PATH] [--json OUT]

Each stream is ``synthetic://...&rate=max`` (rendered as fast as the pipeline takes it, with
back-pressure), long enough to outlast the run. A subscriber reads every event. Every
``--interval`` seconds the RSS of the supervisor and each of its worker processes is read
from /proc; at the end the least-squares slope of each process's RSS (MB/min) is fitted
over the samples after the warm-up (``--warmup`` fraction of the run) and printed with the
peak of the total. Without ``--config`` a tiny CPU network (the test config) is used.
Exit status 0; the JSON report holds every sample.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = """extends: {tiny}
name: soak
data:
  sigma: 4
  clip_length: 4
  resize_short: 36
  crop: [32, 32]
  window: 32
model:
  channels: 16
  head_samples: 4
  head_hidden: 16
stream:
  engine:
    max_batch: 4
    max_wait_ms: 5
  transport:
    queue_size: 16
  detector:
    merge: lag
    max_lag_s: 5.0
"""


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80]
    except OSError:
        return "?"


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) in MB per minute."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if den == 0 else 60.0 * sum((t - mx) * (v - my) for t, v in points) / den


def soak(minutes: float, streams: int, interval: float, config: str | None, warmup: float,
         checkpoint: str | None = None) -> dict:
    from stream.subscriber import Subscriber
    import socket as pysocket

    tmp = Path(tempfile.mkdtemp(prefix="menet-soak-"))
    if config is None:
        config = str(tmp / "soak.yaml")
        Path(config).write_text(TINY.format(tiny=REPO / "configs" / "tiny.yaml"))
    with pysocket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    sub = Subscriber(endpoint)
    cmd = [sys.executable, "-m", "stream", "run", "--config", config, "--event-endpoint", endpoint,
           "--wait-subscribers", "1"]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    seconds = max(600.0, minutes * 60 * 40)  # rendered faster than real time: never runs out
    for k in range(streams):
        cmd += ["--source", f"s{k}=synthetic://s{k}?seed={k}&duration={seconds:.0f}&fps=10&width=48&height=48&rate=max"]
    log = open(tmp / "run.log", "w+")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    samples: dict[int, list[tuple[float, float]]] = {}
    names: dict[int, str] = {}
    events = windows_seen = 0
    # the clock starts at the first event: model loading and process start-up are not the soak
    t_start = time.monotonic()
    while proc.poll() is None and time.monotonic() - t_start < 300:
        msg = sub.recv(0.1)
        if msg is not None and msg.type == "event":
            events += 1
            break
    t0 = time.monotonic()
    next_sample = t0
    end = t0 + minutes * 60
    try:
        while time.monotonic() < end and proc.poll() is None:
            msg = sub.recv(0.05)
            while msg is not None:  # read all that is there before sampling: the subscriber keeps up, so
                # the detector's event queue for it stays empty (a lagging reader grows that queue, up to
                # stream.transport.event_queue_size messages, which is the subscriber's cost, not a leak)
                if msg.type == "event":
                    events += 1
                    windows_seen = max(windows_seen, msg.header["window"])
                msg = sub.recv(0)
            now = time.monotonic()
            if now >= next_sample:
                next_sample = now + interval
                for pid in [proc.pid] + children(proc.pid):
                    v = rss_mb(pid)
                    if v is not None:
                        samples.setdefault(pid, []).append((now - t0, v))
                        names.setdefault(pid, cmdline(pid))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        t_stop = time.monotonic()
        while time.monotonic() - t_stop < 60 and proc.poll() is None:
            sub.recv(0.1)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        sub.close()
    log.seek(0)
    text = log.read()
    duration = min(time.monotonic(), end) - t0
    cut = duration * warmup
    per = {}
    for pid, pts in samples.items():
        after = [p for p in pts if p[0] >= cut]
        role = "supervisor" if pid == proc.pid else "worker"
        per[str(pid)] = {"role": role, "n": len(pts), "cmd": names.get(pid, "?"), "slope_mb_per_min": round(slope(after), 3),
                         "first_mb": round(pts[0][1], 1), "last_mb": round(pts[-1][1], 1),
                         "peak_mb": round(max(v for _, v in pts), 1), "samples": pts}
    totals: dict[float, float] = {}
    for pts in samples.values():
        for t, v in pts:
            totals[round(t / interval)] = totals.get(round(t / interval), 0.0) + v
    snippets = sum(int(line.rsplit("snippets sent", 1)[0].split(",")[-1].strip().split()[0])
                   for line in text.splitlines() if "snippets sent" in line)
    worst = max((p["slope_mb_per_min"] for p in per.values()), default=0.0)
    return {"minutes": minutes, "duration_s": round(duration, 1), "streams": streams, "events": events,
            "snippets": snippets, "exit": proc.returncode, "worst_slope_mb_per_min": worst,
            "peak_total_mb": round(max(totals.values(), default=0.0), 1), "processes": per,
            "warmup_s": round(cut, 1), "log_tail": text[-3000:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--interval", type=float, default=2.0, help="RSS sampling period (s)")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of the run left out of the fit")
    ap.add_argument("--config", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None, help="write the full report here")
    args = ap.parse_args(argv)
    rep = soak(args.minutes, args.streams, args.interval, args.config, args.warmup, args.checkpoint)
    print(f"soak: {rep['duration_s']:.0f} s, {rep['streams']} streams, {rep['snippets']} snippets, "
          f"{rep['events']} events, exit {rep['exit']}")
    for pid, p in rep["processes"].items():
        print(f"  pid {pid:>7} {p['role']:<10} RSS {p['first_mb']:7.1f} -> {p['last_mb']:7.1f} MB "
              f"(peak {p['peak_mb']:.1f}), slope {p['slope_mb_per_min']:+.3f} MB/min")
    print(f"worst slope {rep['worst_slope_mb_per_min']:+.3f} MB/min; peak total RSS {rep['peak_total_mb']:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
