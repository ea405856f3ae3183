"""The detection delay in stream time, replayed: many cameras, no real-time wait, deterministic.

    python benchmarks/replay_delay.py --seeds 0-7                           # the shipped stream config
    python benchmarks/replay_delay.py --seeds 8-15 --min-score 0.05 0.0 --json replay.json
    python benchmarks/replay_delay.py --quick                               # the code path: one 30-s camera

``bench_delay.py`` runs live cameras through the real processes and measures what a subscriber
gets, compute included, but a 300-s camera takes 300 s and two cores hold four. This script
asks the other question, cheaply and on many cameras: *given* the detector, when does the event
lifecycle first publish a message that matches each action, in stream time (the right edge of
the window that published it), and what do the settings of the lifecycle change?

Each camera is the live bench's (``synthetic://...?seed=i``, 25 fps, 320x240, 300 s), its frames
rendered in memory (no video codec) and taken through the very pieces of the live path:
the grabber's :class:`~engine.model.preprocess.Preprocess` and
:class:`~engine.snippets.SnippetAssembler`, the engine's stages (MFE, MREM) and
:class:`~engine.online.windower.StreamWindower` with early windows, the detector's
:class:`~stream.detector_worker.DetectorCore` (merger, joiner, chainer, lifecycle). Not modelled:
compute time (add the compute latency, 0.1-0.2 s on CPU) and anything lost on the way (none in
the live bench). The delay of an action is the published window's right edge minus the action's
end, over the actions matched by a message (same label, tIoU >= 0.5; provisional, open or final);
a match made only by the end-of-stream flush counts as the stream's end.

Features are cached per camera under ``--cache`` (the expensive part: about 20 s per camera on
two cores); the replay itself takes seconds per setting.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.evaluation.activitynet import evaluate_detection  # noqa: E402
from engine.evaluation.delay import segment_tiou  # noqa: E402
from engine.evaluation.ground_truth import ground_truth_from_annotations  # noqa: E402
from engine.evaluation.results_format import predictions_from_results  # noqa: E402
from engine.model.preprocess import Preprocess  # noqa: E402
from engine.online import WindowLayout  # noqa: E402
from engine.online.windower import StreamWindower  # noqa: E402
from engine.runtime.split import DetectorStages, EngineStages  # noqa: E402
from engine.snippets import SnippetAssembler  # noqa: E402
from stream import protocol as P  # noqa: E402
from stream.detector_worker import DetectorCore  # noqa: E402
from stream.settings import load_config  # noqa: E402
from stream.sources import SyntheticSource  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints" / "menet-tiny-synth.pt"
MATCH_TIOU = 0.5


def parse_seeds(text: str) -> list[int]:
    """``0-7`` or ``0,3,9``."""
    if "-" in text:
        first, last = (int(x) for x in text.split("-"))
        return list(range(first, last + 1))
    return [int(x) for x in text.split(",")]


def camera_uri(seed: int, seconds: float, size: tuple[int, int]) -> str:
    return f"synthetic://cam{seed}?seed={seed}&duration={seconds:g}&fps=25&width={size[0]}&height={size[1]}"


def backbone_key(checkpoint: str) -> str:
    """Hash of the checkpoint's backbone weights: features depend on them, not on the detector, so
    detectors trained on one backbone share the cache (the whole file when it holds no backbone)."""
    from engine.checkpoint import load_checkpoint

    backbone = load_checkpoint(checkpoint).backbone
    h = hashlib.sha256()
    if not backbone:
        h.update(Path(checkpoint).read_bytes())
    for name in sorted(backbone or {}):
        h.update(name.encode())
        h.update(backbone[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def camera_features(uri: str, cfg: Any, engine: EngineStages, cache: Path | None,
                    model_key: str) -> tuple[np.ndarray, Any]:
    """[T, C_feat] snippet features of a synthetic camera as the live engine computes them, and its spec
    (cached under ``cache`` by camera, data settings and ``model_key``, the hash of the backbone weights)."""
    source = SyntheticSource(uri, cfg.stream.sources)
    key = hashlib.sha256(f"{uri} {cfg.data} {cfg.model.backbone} {cfg.model.movement} {model_key}".encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"{key}.npy"
    if path is not None and path.is_file():
        return np.load(path), source.spec
    pre, asm = Preprocess.of(cfg.data), SnippetAssembler(cfg.data.sigma, cfg.data.clip_length)
    clips, feats = [], []
    for i in range(source.video.num_frames):
        clips += [c.frames for c in asm.push(pre.frame(source.video.frame(i)))]
        if len(clips) >= 16:
            feats.append(engine.mfe(np.stack(clips)))
            clips = []
    clips += [c.frames for c in asm.finish()]
    if clips:
        feats.append(engine.mfe(np.stack(clips)))
    out = np.concatenate(feats).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
    return out, source.spec


def replay(sid: str, feats: np.ndarray, cfg: Any, engine: EngineStages, core: DetectorCore,
           fps: float) -> list[tuple[float, dict[str, Any]]]:
    """(stream time published, event header) of every event message of one camera, in order."""
    sps = cfg.data.sigma / fps
    windower = StreamWindower(WindowLayout.of(cfg), cfg.feature_channels, early=True)
    seq = P.Sequencer()
    out: list[tuple[float, dict[str, Any]]] = []

    def send(windows: list[Any], end_of_stream: float | None = None) -> None:
        for w in windows:
            rel = np.asarray(engine.mrem(w.features[None]))[0].astype(np.float32)
            edge = (w.start + w.valid) * sps
            h = P.make_header(P.WINDOW, seq(), stream=sid, index=w.index, start=w.start, valid=w.valid, sps=sps,
                              final=w.final, duration=w.duration, live=True, t_stream_ref=edge, t_capture=edge,
                              t_engine_in=edge, t_window=edge)
            if w.early:
                h["early"] = True
            wire = P.encode_window(h, rel, w.features if cfg.labeller_reads_mfe else None)
            core.handle(P.decode(wire), t_in=edge)
            collect(edge)
        if end_of_stream is not None:
            core.handle(P.decode(P.encode(P.make_header(P.EOS, seq(), stream=sid, n_snippets=len(feats),
                                                        duration=end_of_stream, reason="end"))))
            collect(end_of_stream)

    def collect(at: float) -> None:
        out.extend((at, h) for _, h in core.outbox if h["type"] == P.EVENT)
        core.outbox.clear()

    for i, f in enumerate(feats):
        windower.reserve(i)
        windower.put(i, f)
        send(windower.ready())
    duration = len(feats) * sps
    send(windower.end(len(feats), duration), end_of_stream=duration)
    return out


def score(truth: list[tuple[str, float, float, str]], events: dict[str, list[tuple[float, dict[str, Any]]]],
          window_s: float) -> dict[str, Any]:
    """Delay percentiles, reported share, final and first-claimed mAP@0.5, message counts."""
    per_action, delays = [], []
    for cam, start, end, label in truth:
        hit = next(((t, h) for t, h in events[cam] if h["state"] != "retracted" and h["label"] == label
                    and segment_tiou((h["start"], h["end"]), (start, end)) >= MATCH_TIOU), None)
        delay = None if hit is None else round(hit[0] - end, 3)
        per_action.append({"camera": cam, "start": start, "end": end, "label": label, "delay_s": delay,
                           "first_state": None if hit is None else hit[1]["state"]})
        if delay is not None:
            delays.append(delay)
    gt = ground_truth_from_annotations(truth, videos=list(events))

    def map05(pick: dict[str, list[dict[str, Any]]]) -> float:
        results = {v: [{"segment": [h["start"], h["end"]], "score": h["score"], "label": h["label"]} for h in hs]
                   for v, hs in pick.items()}
        return float(evaluate_detection(gt, predictions_from_results(results, source="replay"), [0.5]).mAP[0])

    finals = {v: [h for _, h in evs if h["state"] == "final"] for v, evs in events.items()}
    first: dict[str, list[dict[str, Any]]] = {}
    for v, evs in events.items():
        seen: dict[str, dict[str, Any]] = {}
        for _, h in evs:
            if h["state"] in ("provisional", "final"):
                seen.setdefault(h["event_id"], h)
        first[v] = list(seen.values())
    counts: dict[str, int] = {}
    for evs in events.values():
        for _, h in evs:
            counts[h["state"]] = counts.get(h["state"], 0) + 1
    longer = [a for a in per_action if a["end"] - a["start"] > window_s]
    final_map, first_map = map05(finals), map05(first)
    return {
        "delay_p50_s": round(float(np.percentile(delays, 50)), 2) if delays else None,
        "delay_p95_s": round(float(np.percentile(delays, 95)), 2) if delays else None,
        "reported": f"{len(delays)}/{len(per_action)}",
        "longer_than_window_reported": f"{sum(a['delay_s'] is not None for a in longer)}/{len(longer)}",
        "final_map05": round(final_map, 3), "first_claimed_map05": round(first_map, 3),
        "first_to_final": round(first_map / final_map, 3) if final_map else None,
        "messages": counts, "messages_per_camera": round(sum(counts.values()) / max(len(events), 1)),
        "per_action": per_action,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="stream")
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--seeds", default="0-7", help="cameras: synthetic seeds, 0-7 or 0,3,9 (default 0-7)")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--resolution", default="320x240")
    ap.add_argument("--hop", type=int, default=16)
    ap.add_argument("--min-score", type=float, nargs="+", default=None,
                    help="stream.detector.provisional_min_score values to compare (default: the config's)")
    ap.add_argument("--cache", default=str(REPO / "runs" / "replay-features"), help="feature cache ('' : none)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="the code path only: one 30-s camera, no cache")
    a = ap.parse_args(argv)
    if a.quick:
        a.seeds, a.seconds, a.cache = "0", 30.0, ""
    import torch
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = load_config(a.config)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, hop=a.hop))
    size = tuple(int(x) for x in a.resolution.split("x"))
    engine, detector = EngineStages(cfg, a.checkpoint), DetectorStages(cfg, a.checkpoint)
    cache = Path(a.cache) if a.cache else None
    model_key = backbone_key(a.checkpoint)
    cams: dict[str, tuple[np.ndarray, Any]] = {}
    for seed in parse_seeds(a.seeds):
        cams[f"cam{seed}"] = camera_features(camera_uri(seed, a.seconds, size), cfg, engine, cache, model_key)
        print(f"cam{seed}: {len(cams[f'cam{seed}'][0])} snippets", file=sys.stderr, flush=True)
    truth = [(cam, a_.start_s, a_.end_s, a_.label) for cam, (_, spec) in cams.items() for a_ in spec.actions]
    window_s = cfg.data.window * cfg.data.sigma / 25.0
    runs = []
    for min_score in a.min_score or [cfg.stream.detector.provisional_min_score]:
        det = dataclasses.replace(cfg.stream.detector, provisional_min_score=min_score)
        run_cfg = dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, detector=det))
        core = DetectorCore(run_cfg, detector)
        events = {cam: replay(cam, feats, run_cfg, engine, core, spec.fps) for cam, (feats, spec) in cams.items()}
        row = {"provisional_min_score": min_score, "hop": a.hop, "guard_s": det.guard_s, **score(truth, events, window_s)}
        runs.append(row)
        print(f"min_score {min_score:g}: delay p50 {row['delay_p50_s']} s p95 {row['delay_p95_s']} s, reported "
              f"{row['reported']} (longer than a window {row['longer_than_window_reported']}), final mAP@0.5 "
              f"{row['final_map05']}, first claimed {row['first_claimed_map05']} ({row['first_to_final']}), "
              f"{row['messages_per_camera']} messages per camera {row['messages']}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"command": " ".join(sys.argv), "config": a.config, "seeds": a.seeds,
                                            "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
