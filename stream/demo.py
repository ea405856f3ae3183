"""``menet demo``: the whole online pipeline on a synthetic live camera, with a report.

A ``synthetic://`` source paced in real time (a live source: it drops snippets
if the engine lags) is run through the real processes of ``menet run`` with the
bundled checkpoint; events are printed as a subscriber receives them; at the end
of the stream the detections are scored against the generated ground truth.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from stream.settings import StreamConfig, load_config

from engine.evaluation.delay import DelayReport, detection_delays

from . import protocol as P
from .sources import SyntheticSource
from .subscriber import Subscriber, event_state

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_CHECKPOINT = REPO_ROOT / "checkpoints" / "menet-tiny-synth.pt"
DEMO_TIOU = np.linspace(0.5, 0.95, 10)


# a false event at this score or above is one a subscriber would act on (the shipped checkpoint's true
# events score 0.02-0.96; most false ones below 0.1)
FALSE_EVENT_SCORE = 0.5


@dataclass
class DemoReport:
    truth: list[tuple[float, float, str]]
    events: list[dict[str, Any]] = field(default_factory=list)  # final events (what offline inference gives)
    # event id -> its first claim of a whole action (first provisional or final message: an open one's end is
    # "now"), what a user acting at once on provisional events gets (benchmarks/bench_delay.py scores it too)
    first_seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    updates: int = 0  # lifecycle messages (provisional, open, retracted) received
    announced: list[dict[str, Any]] = field(default_factory=list)  # every event message but retractions
    dropped_snippets: int = 0
    statuses: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    average_mAP: float = 0.0
    mAP_at_05: float = 0.0
    first_mAP_at_05: float = float("nan")  # each event as first claimed whole (provisional or final)
    matched: list[tuple[tuple[float, float, str], dict[str, Any] | None, float]] = field(default_factory=list)
    show_min_score: float = 0.0  # events below this score are counted and scored, not printed
    printed: int = 0
    delays: DelayReport = field(default_factory=DelayReport)
    runtime: list[str] = field(default_factory=list)  # what `menet run` said of its backend and engine cache
    false_events: list[dict[str, Any]] = field(default_factory=list)  # finals matching no true action
    lost_messages: int = 0  # published by the detector, never received (gaps in its seq)

    def confident_false_events(self, min_score: float = FALSE_EVENT_SCORE) -> list[dict[str, Any]]:
        return [e for e in self.false_events if e["score"] >= min_score]

    def compute_latency(self, q: float) -> float:
        """Percentile of the events' ``latency_s``: newest snippet captured -> event published."""
        lat = [e["latency_s"] for e in self.events if "latency_s" in e]
        return float(np.percentile(lat, q)) if lat else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def score(report: DemoReport, video: str = "demo") -> None:
    """mAP with the ActivityNet protocol (final events; and every event as first claimed whole), the
    detection delay, and the best-overlapping final detection of each true segment."""
    from engine.evaluation.activitynet import evaluate_detection
    from engine.evaluation.ground_truth import ground_truth_from_annotations
    from engine.evaluation.results_format import predictions_from_results

    gt = ground_truth_from_annotations([(video, s, e, lab) for s, e, lab in report.truth], videos=[video])

    def evaluate(events: list[dict[str, Any]]) -> Any:
        results = {video: [{"segment": [e["start"], e["end"]], "score": e["score"], "label": e["label"]}
                           for e in events]}
        return evaluate_detection(gt, predictions_from_results(results, source="demo events"), DEMO_TIOU)

    res = evaluate(report.events)
    report.average_mAP = res.average_mAP
    report.mAP_at_05 = float(res.mAP[0])
    first = list(report.first_seen.values())
    if first:
        report.first_mAP_at_05 = float(evaluate(first).mAP[0])
    report.delays = detection_delays(report.truth, report.announced)
    report.false_events = sorted(
        (e for e in report.events
         if not any(e["label"] == lab and _tiou((e["start"], e["end"]), (s, t)) >= 0.5 for s, t, lab in report.truth)),
        key=lambda e: -e["score"])
    for seg in report.truth:
        same = [e for e in report.events if e["label"] == seg[2]]
        best = max(same, key=lambda e: _tiou((e["start"], e["end"]), seg[:2]), default=None)
        report.matched.append((seg, best, _tiou((best["start"], best["end"]), seg[:2]) if best else 0.0))


def run_demo(cfg_name: str = "stream", checkpoint: Path = BUNDLED_CHECKPOINT, seconds: float = 90.0,
             seed: int = 7, out: Callable[[str], None] = print, timeout: float | None = None,
             hop: int | None = 16, show_min_score: float = 0.02) -> DemoReport:
    """Run ``menet run`` on a synthetic live camera of ``seconds`` and score its events.

    ``hop``: ``--hop`` of the run (None: the config's). ``timeout``: give up after this
    many seconds (default: the stream's length + 150 s for start-up and the flush).
    ``show_min_score``: events below it are not printed (a subscriber gets every
    proposal that survives Soft-NMS, most with tiny scores); all are scored.
    """
    cfg: StreamConfig = load_config(cfg_name)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    uri = (f"synthetic://demo?seed={seed}&duration={seconds:g}&fps=25&classes={cfg.data.num_classes}"
           f"&rate=realtime")
    spec = SyntheticSource(uri, cfg.stream.sources).spec  # the ground truth of what the source will render
    report = DemoReport([(a.start_s, a.end_s, a.label) for a in spec.actions], show_min_score=show_min_score)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    sub = Subscriber(endpoint)
    with tempfile.TemporaryDirectory(prefix="menet-demo-") as tmp:
        log_path = Path(tmp) / "run.log"
        cmd = [sys.executable, "-m", "stream", "run", "--config", cfg_name, "--checkpoint", str(checkpoint),
               "--source", uri, "--event-endpoint", endpoint, "--wait-subscribers", "1"]
        if hop is not None:
            cmd += ["--hop", str(hop)]
        timeout = seconds + 150.0 if timeout is None else timeout
        out(f"menet run: {seconds:g} s synthetic live camera (seed {seed}), {len(spec.actions)} true actions, "
            f"checkpoint {checkpoint}")
        t0 = time.monotonic()
        with open(log_path, "w+") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
            try:
                _collect(report, sub, proc, out, t0, timeout, log)
                report.lost_messages = sub.lost
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                sub.close()
        report.wall_seconds = time.monotonic() - t0
        report.runtime = runtime_lines(log_path.read_text(errors="replace"))
    score(report)
    return report


def runtime_lines(log: str) -> list[str]:
    """``menet run``'s own lines about where the network ran (backend, engine cache), from its log."""
    return [line[len("menet run: "):].strip() for line in log.splitlines()
            if line.startswith("menet run: ") and ("runtime backend" in line or "engine" in line)]


def _collect(report: DemoReport, sub: Subscriber, proc: subprocess.Popen, out: Callable[[str], None],
             t0: float, timeout: float, log: Any) -> None:
    while time.monotonic() - t0 < timeout:
        msg = sub.recv(0.5)
        if msg is None:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"menet run exited with {proc.returncode} before the end of the stream:\n"
                                   + log.read()[-3000:])
            continue
        h = msg.header
        if msg.type == P.EVENT:
            state = event_state(h)
            new = h["event_id"] not in report.first_seen and state in ("provisional", "final")
            if new:
                report.first_seen[h["event_id"]] = h
            if state != "retracted":
                report.announced.append(h)
            if state == "final":
                report.events.append(h)
            else:
                report.updates += 1
            if h["score"] < report.show_min_score or not (new or state == "final"):
                continue  # scored like every other event; only the printout skips it (and updates)
            report.printed += 1
            out(f"  [{time.monotonic() - t0:6.1f}s] {state:<11} {h['label']:<7} {h['start']:6.2f}-{h['end']:6.2f} s "
                f"score {h['score']:.3f} compute latency {h.get('latency_s', float('nan')):.2f} s")
        elif msg.type == P.GAP:
            report.dropped_snippets += int(h.get("count", 0))
        elif msg.type == P.STATUS:
            report.statuses.append(str(h.get("state")))
        elif msg.type == P.EOS:
            proc.wait(60)
            return
    raise TimeoutError(f"no end of stream within {timeout:.0f} s")


def format_report(r: DemoReport, top: int = 3) -> str:
    shown = (f" ({r.printed} printed: score >= {r.show_min_score:g}; all of them are scored)"
             if r.printed < len(r.events) else "")
    lines = ["", "summary", f"  true actions: {len(r.truth)}; final events received: {len(r.events)}{shown}; "
                            f"lifecycle updates (provisional, open, retracted): {r.updates}"]
    for (s, e, lab), best, iou in r.matched:
        found = (f"best {best['label']} event {best['start']:.2f}-{best['end']:.2f} s (tIoU {iou:.2f}, "
                 f"score {best['score']:.3f})" if best else "no event of this class")
        lines.append(f"  truth {lab:<7} {s:6.2f}-{e:6.2f} s: {found}")
    lines += [
        f"  final events: mAP@0.5 {r.mAP_at_05:.3f}; average mAP (tIoU 0.5:0.05:0.95) {r.average_mAP:.3f}",
        f"  events as first claimed whole (first provisional or final message): mAP@0.5 {r.first_mAP_at_05:.3f}",
        f"  detection delay (an action's last frame captured -> its first matching event, same label and "
        f"tIoU >= 0.5): p50 {r.delays.percentile(50):.1f} s, p95 {r.delays.percentile(95):.1f} s; "
        f"{r.delays.reported} of {len(r.delays.actions)} true actions reported",
        f"  compute latency (newest snippet captured -> event published): p50 {r.compute_latency(50):.2f} s, "
        f"p95 {r.compute_latency(95):.2f} s",
        f"  dropped snippets: {r.dropped_snippets}; event messages lost on the way: {r.lost_messages}; "
        f"wall time {r.wall_seconds:.1f} s",
    ]
    confident = r.confident_false_events()
    worst = (f" (highest: {confident[0]['label']} {confident[0]['start']:.2f}-{confident[0]['end']:.2f} s, score "
             f"{confident[0]['score']:.3f})" if confident else "")
    lines.insert(-1, f"  false events (finals matching no true action: same label, tIoU >= 0.5): {len(r.false_events)} "
                     f"of {len(r.events)}; {len(confident)} score >= {FALSE_EVENT_SCORE:g}{worst}")
    lines += [f"  menet run: {line}" for line in r.runtime]
    return "\n".join(lines)
