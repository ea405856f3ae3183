"""How soon events come: detection delay, actions reported, provisional vs final mAP.

    python benchmarks/bench_delay.py                       # 4 live cameras x 300 s, config stream
    python benchmarks/bench_delay.py --hop 16 32 64 --guard 1.0 --json delay.json --plot delay.png
    python benchmarks/bench_delay.py --quick               # the code path only: a small random network

N live synthetic cameras (``synthetic://...&rate=realtime``, 25 fps, seeds 0..N-1, or from ``--first-seed``) run to
their end through the real ``menet run`` processes with the bundled checkpoint; an
independent subscriber keeps every message. Per run (one per hop x guard):

- **detection delay**: per true action, the capture of its last frame -> the publication
  of the first event message matching it (same label, tIoU >= 0.5; provisional, open or
  final), p50 / p95 over all cameras (``engine/evaluation/delay.py``);
- **reported**: the share of true actions with such a message, actions longer than a
  window included;
- **mAP@0.5**: of the final events (what offline inference gives) and of every event as
  first claimed whole (each id's first provisional or final message, retracted ids included:
  the provisional view a user acting at once gets); also of each id's very first message,
  open ones included (an open event's end is "now", so this one scores the open extents);
- dropped snippets (gaps) and the wall time.

The figures are of the whole streams, the end-of-stream flush included: an action at a
camera's end is reported by the flush, as a camera that stops would report it.
"""
from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation.activitynet import evaluate_detection  # noqa: E402
from engine.evaluation.delay import detection_delays, merge_reports  # noqa: E402
from engine.evaluation.ground_truth import ground_truth_from_annotations  # noqa: E402
from engine.evaluation.results_format import predictions_from_results  # noqa: E402
from stream import protocol as P  # noqa: E402
from stream.settings import load_config  # noqa: E402
from stream.sources import SyntheticSource  # noqa: E402
from stream.subscriber import Subscriber, event_state  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "menet-tiny-synth.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def map_at_05(truth: dict[str, list], events: dict[str, list[dict[str, Any]]]) -> float:
    rows = [(v, s, e, lab) for v, acts in truth.items() for s, e, lab in acts]
    gt = ground_truth_from_annotations(rows, videos=list(truth))
    results = {v: [{"segment": [h["start"], h["end"]], "score": h["score"], "label": h["label"]} for h in evs]
               for v, evs in events.items()}
    return float(evaluate_detection(gt, predictions_from_results(results, source="bench"), [0.5]).mAP[0])


# --quick: the shrunk network of the tests (5-s windows), random weights: exercises every step in
# seconds; its figures mean nothing
QUICK_NETWORK = """extends: {tiny}
name: delay-quick
data: {{sigma: 4, clip_length: 4, resize_short: 36, crop: [32, 32], window: 32}}
model: {{channels: 16, head_samples: 4, head_hidden: 16, labeller: anchor}}
stream: {{detector: {{provisional_min_score: 0.0}}}}
"""


def one_run(config: str, checkpoint: Path | None, cameras: int, seconds: float, hop: int, guard: float,
            size: tuple[int, int], first_seed: int = 0) -> dict[str, Any]:
    cfg = load_config(config)
    uris = {f"cam{i}": (f"synthetic://cam{i}?seed={i}&duration={seconds:g}&fps=25&width={size[0]}&height={size[1]}"
                        f"&classes={cfg.data.num_classes}&rate=realtime")
            for i in range(first_seed, first_seed + cameras)}
    truth = {sid: [(a.start_s, a.end_s, a.label) for a in SyntheticSource(uri, cfg.stream.sources).spec.actions]
             for sid, uri in uris.items()}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = Subscriber(endpoint, dedup=False)
    with tempfile.TemporaryDirectory(prefix="menet-delay-") as tmp:
        run_cfg = Path(tmp) / "delay.yaml"
        base = config if "/" in config or config.endswith(".yaml") else REPO / "configs" / f"{config}.yaml"
        run_cfg.write_text(f"extends: {base}\nstream:\n  detector:\n    guard_s: {guard}\n")
        cmd = [sys.executable, "-m", "stream", "run", "--config", str(run_cfg), "--event-endpoint", endpoint,
               "--wait-subscribers", "1", "--hop", str(hop)]
        if checkpoint is not None:
            cmd += ["--checkpoint", str(checkpoint)]
        for sid, uri in uris.items():
            cmd += ["--source", f"{sid}={uri}"]
        log = open(Path(tmp) / "run.log", "w+")
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        msgs: list[dict[str, Any]] = []
        ended: set[str] = set()
        try:
            while len(ended) < cameras and time.monotonic() - t0 < seconds + 300:
                msg = sub.recv(1.0)
                if msg is None:
                    if proc.poll() is not None:
                        break
                    continue
                msgs.append(msg.header)
                if msg.type == P.EOS:
                    ended.add(msg.header["stream"])
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
            sub.close()
            log.seek(0)
            tail = log.read()[-2000:]
            log.close()
    if len(ended) < cameras:
        raise RuntimeError(f"only {len(ended)} of {cameras} streams ended; menet run log:\n{tail}")
    events = [h for h in msgs if h["type"] == P.EVENT]
    finals = {sid: [h for h in events if h["stream"] == sid and event_state(h) == "final"] for sid in uris}
    # the provisional view: each id as first claimed whole (its first provisional or final message; an
    # open message's end is "now", not a claim about where the action ends), retracted ids included
    first: dict[str, dict[str, Any]] = {}
    first_any: dict[str, dict[str, Any]] = {}
    for h in events:
        if event_state(h) in ("provisional", "final"):
            first.setdefault(h["event_id"], h)
        if event_state(h) != "retracted":
            first_any.setdefault(h["event_id"], h)
    firsts = {sid: [h for h in first.values() if h["stream"] == sid] for sid in uris}
    firsts_any = {sid: [h for h in first_any.values() if h["stream"] == sid] for sid in uris}
    announced = {sid: [h for h in events if h["stream"] == sid and event_state(h) != "retracted"] for sid in uris}
    delays = merge_reports(detection_delays(truth[sid], announced[sid]) for sid in uris)
    long_actions = [a for a in delays.actions if a.end - a.start > cfg.data.window * cfg.data.sigma / 25.0]
    final_map, first_map, first_any_map = map_at_05(truth, finals), map_at_05(truth, firsts), map_at_05(truth, firsts_any)
    return {
        "config": config, "hop": hop, "guard_s": guard, "cameras": cameras, "seconds": seconds,
        "seeds": [first_seed, first_seed + cameras - 1], "resolution": f"{size[0]}x{size[1]}",
        **delays.summary(),
        "longer_than_a_window": {"actions": len(long_actions),
                                 "reported": sum(a.delay_s is not None for a in long_actions)},
        "final_mAP@0.5": round(final_map, 4), "first_published_mAP@0.5": round(first_map, 4),
        "first_over_final": round(first_map / final_map, 3) if final_map else None,
        "first_message_mAP@0.5": round(first_any_map, 4),  # open messages included, as first sent
        "messages": {s: sum(event_state(h) == s for h in events)
                     for s in ("provisional", "open", "final", "retracted")},
        "dropped_snippets": sum(h["count"] for h in msgs if h["type"] == P.GAP),
        # every true action: when it ended and how long after its end the first matching message came
        "per_action": [{"start": round(a.start, 2), "end": round(a.end, 2), "label": a.label,
                        "delay_s": None if a.delay_s is None else round(a.delay_s, 3),
                        "first_state": None if a.event is None else event_state(a.event)} for a in delays.actions],
        "wall_s": round(time.monotonic() - t0, 1),
    }


def plot_tradeoff(runs: list[dict[str, Any]], out: Path) -> None:
    """Delay p50 (x) against mAP@0.5 (y) per run: the final events and the first claims, one point each,
    labelled hop / guard; the p95 as a bar to the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, marker, name in (("final_mAP@0.5", "o", "final events"),
                              ("first_published_mAP@0.5", "s", "first claimed (provisional or final)")):
        xs = [r["delay_p50_s"] for r in runs]
        ys = [r[key] for r in runs]
        ax.scatter(xs, ys, marker=marker, label=name)
        spots: dict[tuple[float, float], list[dict[str, Any]]] = {}  # runs that land on one spot share a label
        for r, x, y in zip(runs, xs, ys):
            if x is not None:
                ax.hlines(y, x, r["delay_p95_s"], alpha=0.3)
                spots.setdefault((round(x, 0), round(y, 2)), []).append(r)
        for (x, y), same in spots.items():
            hops = sorted({r["hop"] for r in same})
            guards = "/".join(f"{g:g}" for g in sorted({r["guard_s"] for r in same}))
            ax.annotate(f"hop {'/'.join(map(str, hops))}, guard {guards}", (same[0]["delay_p50_s"], y), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("detection delay p50 (s); line to p95")
    ax.set_ylabel("mAP@0.5")
    ax.set_title(f"{runs[0]['cameras']} live cameras x {runs[0]['seconds']:g} s, config {Path(runs[0]['config']).stem}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="stream")
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="camera i renders synthetic seed first_seed + i (another set of actions than seeds 0..N-1)")
    ap.add_argument("--seconds", type=float, default=300.0, help="length of each camera's stream")
    ap.add_argument("--hop", type=int, nargs="+", default=[16], help="data.hop values to run")
    ap.add_argument("--guard", type=float, nargs="+", default=[1.0], help="stream.detector.guard_s values")
    ap.add_argument("--resolution", default="320x240")
    ap.add_argument("--quick", action="store_true",
                    help="one 12-s camera through a small random network: the code path, not a measurement")
    ap.add_argument("--json", default=None, help="write every run's figures here")
    ap.add_argument("--plot", default=None, help="PNG: detection delay against mAP@0.5 for every hop x guard run "
                                                   "(needs matplotlib: the bench extra)")
    a = ap.parse_args(argv)
    size = tuple(int(v) for v in a.resolution.split("x"))
    checkpoint: Path | None = Path(a.checkpoint)
    tmp = None
    if a.quick:
        tmp = tempfile.TemporaryDirectory(prefix="menet-delay-quick-")
        quick_cfg = Path(tmp.name) / "delay-quick.yaml"
        quick_cfg.write_text(QUICK_NETWORK.format(tiny=REPO / "configs" / "stream.yaml"))
        a.config, checkpoint, a.cameras, a.seconds, a.hop, a.guard = str(quick_cfg), None, 1, 12.0, [8], a.guard[:1]
        size = (48, 48)
    runs = []
    print("| hop | guard (s) | delay p50 / p95 (s) | reported | longer than a window | final mAP@0.5 | "
          "first-published mAP@0.5 (ratio) | provisional / open / retracted / final messages | dropped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for hop in a.hop:
        for guard in a.guard:
            r = one_run(a.config, checkpoint, a.cameras, a.seconds, hop, guard, size,  # type: ignore[arg-type]
                        a.first_seed)
            runs.append(r)
            m, lg = r["messages"], r["longer_than_a_window"]
            print(f"| {hop} | {guard:g} | {r['delay_p50_s']} / {r['delay_p95_s']} | {r['reported']} / {r['actions']} | "
                  f"{lg['reported']} / {lg['actions']} | {r['final_mAP@0.5']:.3f} | {r['first_published_mAP@0.5']:.3f} "
                  f"({r['first_over_final']}) | {m['provisional']} / {m['open']} / {m['retracted']} / {m['final']} | "
                  f"{r['dropped_snippets']} |", flush=True)
    if a.plot:
        plot_tradeoff(runs, Path(a.plot))
    if a.json:
        Path(a.json).write_text(json.dumps({"command": " ".join([sys.executable, *sys.argv]), "runs": runs}, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
