"""Pipeline bench: N live synthetic streams through the real ``menet run`` processes.

One run per N: ``python -m stream run`` (supervisor, engine and detector workers, one
grabber per source) with N ``synthetic://`` sources paced at real time
(``rate=realtime``: live, so a lagging engine makes the grabbers drop whole snippets),
metrics enabled (``--metrics-port``) and events published on a free loopback port. The
bench subscribes to the events, scrapes every worker's Prometheus metrics and samples
CPU time and memory of the supervisor and all its descendants (``psutil``).

Phases: start (processes spawn, the model loads) -> fill (until the detector has
processed a window of every stream: the first window needs ``data.window`` snippets)
-> measurement (``duration`` seconds, steady state) -> stop (SIGINT, flush). Figures
come from the measurement phase only:

* per-event latency: the event's ``latency_s`` (``t_published - t_capture``, capture
  clock of the newest snippet of the window that made it final), p50/p95/p99, for
  events published during the measurement; events released by the stop flush are
  counted separately;
* realtime factor: stream seconds the engine received per stream / wall seconds
  (1.0 = keeping up; mean and min over streams); source factor: frames the grabbers
  rendered / (fps x wall) (below 1: the grabbers themselves are CPU-starved);
* end delay: ``t_published - end_wall``, how long after the action ended (capture
  clock) its event came out: the window hop, the merge lag (``stream.detector.max_lag_s``) and
  the latency above;
* dropped snippets (grabber ``menet_snippets_dropped_total``), backlog (sent - received
  at the end), CPU % (100 = one core), peak RSS (sum over processes: shared library
  pages counted once per process) and PSS (shared pages split), GPU memory when present.

N streams are *sustained* when no snippet was dropped and both factors are >= 0.95.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import psutil
from prometheus_client.parser import text_string_to_metric_families

from .model import percentile

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
SUSTAIN_FACTOR = 0.95


# ---------------------------------------------------------------- processes


def process_tree(root: int) -> list[psutil.Process]:
    """``root`` and every process below it; empty once ``root`` has exited."""
    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def descendants(root: int) -> list[int]:
    """Pids of ``root`` and every process below it."""
    return [p.pid for p in process_tree(root)]


def proc_usage(proc: psutil.Process, pss: bool = False) -> tuple[float, int, int | None] | None:
    """(CPU seconds user+system, RSS bytes, PSS bytes or None) of a live process; None once it is gone.

    PSS (shared pages split between their users) only when ``pss``: reading it walks the
    process's page tables, too slow to do outside the measurement. Where the platform or
    the permissions give no PSS, the process's RSS stands in (an upper bound of its PSS).
    """
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            if not pss:
                return t.user + t.system, proc.memory_info().rss, None
            try:
                full = proc.memory_full_info()
                return t.user + t.system, full.rss, getattr(full, "pss", full.rss)
            except psutil.AccessDenied:
                rss = proc.memory_info().rss
                return t.user + t.system, rss, rss
    except psutil.Error:  # NoSuchProcess (exited between listing and reading), zombie, AccessDenied
        return None


def gpu_memory_used() -> float | None:
    """MiB used on GPU 0 by every process (nvidia-smi, else torch.cuda.mem_get_info); None without a GPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return float(out.stdout.split()[0])
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    try:
        import torch
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info(0)
            return (total - free) / 2**20
    except Exception:  # noqa: BLE001
        pass
    return None


class ProcSampler(threading.Thread):
    """Samples CPU seconds and RSS (and PSS while measuring) of ``root`` and its descendants every
    ``interval`` s."""

    def __init__(self, root: int, interval: float = 0.5, gpu: bool = False) -> None:
        super().__init__(name="bench-proc", daemon=True)
        self.root, self.interval, self.gpu = root, interval, gpu
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.cpu: dict[int, float] = {}  # latest CPU seconds per pid
        self.rss: dict[int, int] = {}
        self.peak_rss_total = 0
        self.peak_rss: dict[int, int] = {}
        self.peak_pss_total: int | None = None
        self.gpu_peak: float | None = None
        self.marks: dict[str, tuple[float, dict[int, float]]] = {}
        self.measuring = False

    def sample(self) -> None:
        cpu: dict[int, float] = {}
        rss: dict[int, int] = {}
        pss: list[int | None] = []
        for proc in process_tree(self.root):
            u = proc_usage(proc, pss=self.measuring)
            if u is not None:  # a process that exited mid-sample is left out of this sample
                cpu[proc.pid], rss[proc.pid] = u[0], u[1]
                if self.measuring:
                    pss.append(u[2])
        g = gpu_memory_used() if self.gpu else None
        with self.lock:
            self.cpu.update(cpu)
            self.rss = rss
            if self.measuring:
                self.peak_rss_total = max(self.peak_rss_total, sum(rss.values()))
                if pss and all(v is not None for v in pss):
                    self.peak_pss_total = max(self.peak_pss_total or 0, sum(pss))  # type: ignore[arg-type]
                for pid, v in rss.items():
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), v)
                if g is not None:
                    self.gpu_peak = g if self.gpu_peak is None else max(self.gpu_peak, g)

    def mark(self, name: str) -> None:
        self.sample()
        with self.lock:
            self.marks[name] = (time.monotonic(), dict(self.cpu))

    def run(self) -> None:
        while not self.stop_flag.wait(self.interval):
            self.sample()


# ---------------------------------------------------------------- metrics


def scrape(port: int, timeout: float = 2.0) -> list[tuple[str, dict[str, str], float]] | None:
    """Samples of a worker's ``/metrics`` (Prometheus text), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    try:
        return parse_metrics(text)
    except ValueError as exc:  # a garbled answer counts as no answer: the caller polls again
        log.debug("port %d: unparsable /metrics: %s", port, exc)
        return None


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` per sample of the Prometheus text format; sample names carry
    their suffix (``_total``, ``_sum``, ``_count``, ``_bucket``). Raises ValueError on bad text."""
    return [(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


def metric(samples: list | None, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
    if not samples:
        return 0.0
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(n: int) -> int:
    """A base port P with P .. P+n-1 all free on 127.0.0.1."""
    for _ in range(50):
        base = free_port()
        if base + n >= 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports")


# ---------------------------------------------------------------- events


class Collector(threading.Thread):
    """Subscribes to every stream on the event endpoint and keeps (receive clock, header)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(name="bench-sub", daemon=True)
        from ..subscriber import Subscriber
        self.sub = Subscriber(endpoint)
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                msg = self.sub.recv(0.2)
                if msg is not None:
                    with self.lock:
                        self.messages.append((time.time(), msg.header))
        finally:
            self.sub.close()

    def of_type(self, t: str) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(r, h) for r, h in self.messages if h["type"] == t]


# ---------------------------------------------------------------- one run


def synthetic_uri(i: int, duration: float, fps: float, size: tuple[int, int]) -> str:
    return (f"synthetic://bench{i}?seed={i}&duration={duration:.0f}&fps={fps:g}&width={size[0]}&height={size[1]}"
            f"&rate=realtime")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def run_streams(config: str, n: int, *, duration: float = 30.0, fps: float = 25.0, hop: int | None = 16,
                size: tuple[int, int] = (320, 240), checkpoint: str | None = None, engine_dir: str | None = None,
                backend: str | None = None, fill_timeout: float | None = None, start_timeout: float = 180.0,
                log_dir: str | Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One pipeline run with ``n`` live synthetic streams; the figures of the measurement phase."""
    from stream.settings import load_config

    say = progress or (lambda s: None)
    cfg = load_config(config)
    W = cfg.data.window
    sps = cfg.data.sigma / fps
    hop_used = hop if hop is not None else (cfg.data.hop or W // 2)
    fill_s = W * sps
    fill_timeout = fill_timeout if fill_timeout is not None else fill_s + max(30.0, hop_used * sps * 3)
    video_s = start_timeout + fill_timeout + duration + 120  # never ends during the run
    ids = [f"s{i}" for i in range(n)]
    sources = [f"{sid}={synthetic_uri(i, video_s, fps, size)}" for i, sid in enumerate(ids)]
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    mport = free_port_block(n + 3)
    own_tmp = log_dir is None
    log_dir = Path(tempfile.mkdtemp(prefix="menet-bench-run-") if own_tmp else log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"run-{n}.log"
    cmd = [sys.executable, "-m", "stream", "run", "--config", str(config), "--event-endpoint", endpoint,
           "--metrics-port", str(mport), "--merge", "lag"]
    if hop is not None:
        cmd += ["--hop", str(hop)]
    if checkpoint:
        cmd += ["--checkpoint", str(checkpoint)]
    if engine_dir:
        cmd += ["--engine-dir", str(engine_dir)]
    if backend:
        cmd += ["--backend", backend]
    for s in sources:
        cmd += ["--source", s]
    gpu = gpu_memory_used() is not None
    gpu_base = gpu_memory_used() if gpu else None
    collector = Collector(endpoint)
    collector.start()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    logf = open(log_path, "w")
    t_launch = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=env)
    sampler = ProcSampler(proc.pid, gpu=gpu)
    sampler.start()
    ports = {"detector": mport + 1, "engine": mport + 2, **{sid: mport + 3 + i for i, sid in enumerate(ids)}}
    result: dict[str, Any] = {"streams": n, "fps": fps, "hop": hop_used, "window": W, "sigma": cfg.data.sigma,
                              "snippet_s": sps, "resolution": list(size), "duration_s": duration,
                              "sources": sources, "command": " ".join(cmd[1:]), "log": str(log_path)}

    def grab_all() -> dict[str, list | None]:
        return {k: scrape(p) for k, p in ports.items()}

    def fail(why: str) -> dict[str, Any]:
        result.update(ok=False, error=why, log_tail=_tail(log_path))
        return result

    try:
        # start: every grabber renders frames and the engine answers
        say(f"  N={n}: starting {n} stream(s) ...")
        while True:
            if proc.poll() is not None:
                return fail(f"menet run exited with status {proc.returncode} during start")
            m = grab_all()
            if m["engine"] is not None and all(m[s] is not None and metric(m[s], "menet_frames_total") > 0
                                               for s in ids):
                break
            if time.monotonic() - t_launch > start_timeout:
                return fail(f"pipeline not up after {start_timeout:.0f} s")
            time.sleep(0.5)
        result["start_s"] = time.monotonic() - t_launch
        # fill: the detector has a window of every stream
        say(f"  N={n}: up after {result['start_s']:.1f} s; filling the first window ({fill_s:.0f} s of video) ...")
        t_fill = time.monotonic()
        while True:
            if proc.poll() is not None:
                return fail(f"menet run exited with status {proc.returncode} during fill")
            m = grab_all()
            if all(metric(m["detector"], "menet_windows_total", stream=s) >= 1 for s in ids):
                break
            if time.monotonic() - t_fill > fill_timeout:
                result["fill_timeout"] = True
                say(f"  N={n}: no window of every stream after {fill_timeout:.0f} s; measuring anyway")
                break
            time.sleep(0.25)
        result["fill_s"] = time.monotonic() - t_fill
        # measurement
        say(f"  N={n}: measuring for {duration:.0f} s ...")
        m0 = grab_all()
        with sampler.lock:
            sampler.measuring = True
        sampler.mark("start")
        w0 = time.time()
        t_end = time.monotonic() + duration
        while time.monotonic() < t_end:
            if proc.poll() is not None:
                return fail(f"menet run exited with status {proc.returncode} during the measurement")
            time.sleep(min(0.5, max(0.0, t_end - time.monotonic())))
        m1 = grab_all()
        sampler.mark("end")
        w1 = time.time()
        with sampler.lock:
            sampler.measuring = False
        result["load_avg"] = list(os.getloadavg())
        # stop: SIGINT, flush, exit
        proc.send_signal(signal.SIGINT)
        t_stop = time.monotonic()
        try:
            # menet run bounds its own stop by shutdown_max_s (stream.drain)
            result["exit_status"] = proc.wait(timeout=cfg.stream.supervisor.shutdown_max_s + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            result["exit_status"] = proc.wait()
        result["stop_s"] = time.monotonic() - t_stop
        time.sleep(0.5)  # the last published messages
        result.update(_figures(cfg, ids, sps, fps, m0, m1, w0, w1, sampler, collector, log_path, gpu_base))
        result["detection_delay"] = _delays(cfg, ids, sources, collector, w0, w1)
        result["ok"] = True
        return result
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sampler.stop_flag.set()
        collector.stop_flag.set()
        collector.join(5)
        sampler.join(5)
        logf.close()


def _roles(log_path: Path, root: int) -> dict[int, str]:
    roles = {root: "supervisor"}
    for m in re.finditer(r"started (\S+) \(pid (\d+)\)", log_path.read_text(errors="replace")):
        roles[int(m.group(2))] = m.group(1).split(":")[0]
    return roles


def _delays(cfg: Any, ids: list[str], sources: list[str], collector: "Collector", w0: float, w1: float
            ) -> dict[str, Any]:
    """Detection delay over the true actions that ended during the measurement (capture clock in
    [w0, w1]): the first matching event's publication - the action's end (docs/benchmarks.md)."""
    from engine.evaluation.delay import detection_delays, merge_reports

    from ..sources import SyntheticSource

    # the first event message that matches an action counts, whatever its state (a retraction is not an
    # announcement)
    events = [h for _, h in collector.of_type("event") if h.get("state", "final") != "retracted"]
    reports = []
    for sid, src in zip(ids, sources):
        uri = src.split("=", 1)[1]
        truth = [(a.start_s, a.end_s, a.label) for a in SyntheticSource(uri, cfg.stream.sources).spec.actions]
        reports.append(detection_delays(truth, [h for h in events if h["stream"] == sid], horizon=w1, since=w0))
    return merge_reports(reports).summary()


def _figures(cfg: Any, ids: list[str], sps: float, fps: float, m0: dict, m1: dict, w0: float, w1: float,
             sampler: ProcSampler, collector: Collector, log_path: Path, gpu_base: float | None) -> dict[str, Any]:
    wall = w1 - w0
    per_stream = {}
    for sid in ids:
        g0, g1 = m0.get(sid), m1.get(sid)
        frames = metric(g1, "menet_frames_total") - metric(g0, "menet_frames_total")
        sent = metric(g1, "menet_snippets_total") - metric(g0, "menet_snippets_total")
        dropped = metric(g1, "menet_snippets_dropped_total") - metric(g0, "menet_snippets_dropped_total")
        recv = (metric(m1["engine"], "menet_snippets_total", stream=sid)
                - metric(m0["engine"], "menet_snippets_total", stream=sid))
        backlog = metric(g1, "menet_snippets_total") - metric(m1["engine"], "menet_snippets_total", stream=sid)
        per_stream[sid] = {"frames": frames, "snippets_sent": sent, "snippets_received": recv,
                           "dropped_snippets": dropped, "backlog_snippets": backlog,
                           "source_factor": frames / (fps * wall), "realtime_factor": recv * sps / wall}
    rtf = [s["realtime_factor"] for s in per_stream.values()]
    src = [s["source_factor"] for s in per_stream.values()]
    dropped = sum(s["dropped_snippets"] for s in per_stream.values())
    # events
    events = [(r, h) for r, h in collector.of_type("event") if h.get("state", "final") == "final"]
    steady = [h for r, h in events if w0 <= h["t_published"] <= w1]
    flushed = [h for r, h in events if h["t_published"] > w1]
    lat = [h["latency_s"] for h in steady]
    delay = [h["t_published"] - h["end_wall"] for h in steady]
    flush_lat = [h["latency_s"] for h in flushed]
    # where the latency goes: capture -> engine receive -> window sent (MFE of the last
    # snippet, MREM) -> published (SFPN, decode, merge)
    parts = {"capture_to_engine": [h["t_engine_in"] - h["t_capture"] for h in steady],
             "engine_to_window": [h["t_window"] - h["t_engine_in"] for h in steady],
             "window_to_published": [h["t_published"] - h["t_window"] for h in steady]}
    windows = {(h["stream"], h["window"]) for h in steady}
    gaps = collector.of_type("gap")
    # stages (engine and detector histograms: mean over the measurement)
    stages = {}
    for role, stage in (("engine", "mfe"), ("engine", "mrem"), ("detector", "detect"), ("detector", "decode"),
                        ("detector", "merge")):
        s = metric(m1[role], "menet_stage_latency_seconds_sum", stage=stage) - \
            metric(m0[role], "menet_stage_latency_seconds_sum", stage=stage)
        c = metric(m1[role], "menet_stage_latency_seconds_count", stage=stage) - \
            metric(m0[role], "menet_stage_latency_seconds_count", stage=stage)
        stages[stage] = {"calls": c, "mean_ms": s / c * 1e3 if c else None, "busy_pct": s / wall * 100}
    bs = metric(m1["engine"], "menet_batch_size_sum", stage="mfe") - metric(m0["engine"], "menet_batch_size_sum",
                                                                            stage="mfe")
    bc = metric(m1["engine"], "menet_batch_size_count", stage="mfe") - metric(m0["engine"], "menet_batch_size_count",
                                                                              stage="mfe")
    stages["mfe"]["mean_batch"] = bs / bc if bc else None
    # processes
    roles = _roles(log_path, sampler.root)
    t0, c0 = sampler.marks["start"]
    t1, c1 = sampler.marks["end"]
    cpu_role: dict[str, float] = {}
    rss_role: dict[str, int] = {}
    for pid, v in c1.items():
        role = roles.get(pid, "other")
        cpu_role[role] = cpu_role.get(role, 0.0) + (v - c0.get(pid, 0.0)) / (t1 - t0) * 100
        rss_role[role] = rss_role.get(role, 0) + sampler.peak_rss.get(pid, 0)
    sustained = dropped == 0 and min(rtf) >= SUSTAIN_FACTOR and min(src) >= SUSTAIN_FACTOR
    why = []
    if dropped:
        why.append(f"{dropped:.0f} snippets dropped")
    if min(rtf) < SUSTAIN_FACTOR:
        why.append(f"realtime factor {min(rtf):.2f} < {SUSTAIN_FACTOR}")
    if min(src) < SUSTAIN_FACTOR:
        why.append(f"sources at {min(src):.2f} x real time (grabbers CPU-starved)")
    return {
        "wall_s": wall,
        "sustained": sustained, "not_sustained_because": "; ".join(why),
        "dropped_snippets": dropped,
        "realtime_factor": sum(rtf) / len(rtf), "realtime_factor_min": min(rtf),
        "source_factor": sum(src) / len(src), "source_factor_min": min(src),
        "backlog_snippets": sum(s["backlog_snippets"] for s in per_stream.values()),
        "events": len(steady), "event_windows": len(windows), "flush_events": len(flushed),
        "latency_s": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
                      "mean": sum(lat) / len(lat) if lat else float("nan"), "max": max(lat) if lat else float("nan")},
        "latencies": sorted(lat),
        "latency_parts_p50_s": {k: percentile(v, 50) for k, v in parts.items()},
        "flush_latency_s": {"p50": percentile(flush_lat, 50), "max": max(flush_lat) if flush_lat else float("nan")},
        "end_delay_s": {"p50": percentile(delay, 50), "p95": percentile(delay, 95),
                        "max": max(delay) if delay else float("nan")},
        "gap_messages": len(gaps), "gap_snippets_dropped": sum(h["count"] for _, h in gaps if h["reason"] == "dropped"),
        "cpu_pct": sum(cpu_role.values()), "cpu_pct_by_role": cpu_role,
        "rss_mb": sampler.peak_rss_total / 2**20,
        "pss_mb": None if sampler.peak_pss_total is None else sampler.peak_pss_total / 2**20,
        "rss_mb_by_role": {k: v / 2**20 for k, v in rss_role.items()},
        "gpu_mem_mb": (None if sampler.gpu_peak is None else sampler.gpu_peak - (gpu_base or 0.0)),
        "stages": stages, "per_stream": per_stream,
    }


# ---------------------------------------------------------------- search


def stream_counts(spec: str, max_streams: int) -> list[int] | None:
    """``auto`` -> None (search); ``1,2,4`` -> [1, 2, 4]."""
    if spec == "auto":
        return None
    out = sorted({int(x) for x in spec.split(",") if x.strip()})
    if not out or out[0] < 1:
        raise ValueError(f"--streams: positive counts or 'auto', got {spec!r}")
    return out


def bench_pipeline(config: str, *, streams: list[int] | None = None, max_streams: int = 16, max_runs: int = 6,
                   progress: Callable[[str], None] | None = None, **kw: Any) -> dict[str, Any]:
    """Runs for each N of ``streams``, or (None) a search: N = 1, 2, 4, ... until a run is not
    sustained (at most ``max_streams``), then bisection between the last sustained and the
    first failing N, ``max_runs`` runs in all. Reports the largest sustained N."""
    say = progress or (lambda s: None)
    runs: dict[int, dict[str, Any]] = {}

    def one(n: int) -> dict[str, Any]:
        r = run_streams(config, n, progress=progress, **kw)
        runs[n] = r
        if r.get("ok"):
            lat = r["latency_s"]
            say(f"  N={n}: {'sustained' if r['sustained'] else 'NOT sustained (' + r['not_sustained_because'] + ')'}"
                f"; latency p50/p95/p99 {lat['p50']:.2f}/{lat['p95']:.2f}/{lat['p99']:.2f} s over {r['events']} "
                f"events; realtime {r['realtime_factor']:.3f}; dropped {r['dropped_snippets']:.0f}; "
                f"CPU {r['cpu_pct']:.0f} %; RSS {r['rss_mb']:.0f} MB")
        else:
            say(f"  N={n}: FAILED: {r.get('error')}\n{r.get('log_tail', '')}")
        return r

    if streams is not None:
        for n in streams:
            one(n)
    else:
        n, good, bad = 1, 0, None
        while n <= max_streams and len(runs) < max_runs:
            r = one(n)
            if r.get("ok") and r["sustained"]:
                good = n
                n *= 2
            else:
                bad = n
                break
        if bad is None and good and good < max_streams and len(runs) < max_runs and n > max_streams:
            # doubling passed max_streams: try max_streams itself
            r = one(max_streams)
            if r.get("ok") and r["sustained"]:
                good = max_streams
            else:
                bad = max_streams
        while bad is not None and bad - good > 1 and len(runs) < max_runs:
            mid = (good + bad) // 2
            r = one(mid)
            if r.get("ok") and r["sustained"]:
                good = mid
            else:
                bad = mid
    ok = [n for n, r in runs.items() if r.get("ok") and r["sustained"]]
    failing = [n for n, r in runs.items() if not (r.get("ok") and r["sustained"])]
    # the largest N sustained below the smallest failing N
    limit = min(failing) if failing else None
    best = max([n for n in ok if limit is None or n < limit], default=0)
    return {"runs": [runs[n] for n in sorted(runs)], "max_sustained_streams": best,
            "first_failing_streams": limit, "search": "auto" if streams is None else "list",
            "max_streams": max_streams, "sustain_rule": f"no dropped snippet, realtime and source factors >= "
                                                        f"{SUSTAIN_FACTOR}"}
