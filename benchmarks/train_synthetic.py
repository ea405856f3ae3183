"""Synthetic benchmark: synth -> pretrain backbone -> extract -> train (full + ablations) -> report.

Reproduces docs/results.md:

    .venv/bin/python benchmarks/train_synthetic.py --work runs/synth-bench

Every stage is a real `menet` command (run in-process through the CLI), timed on
this machine. Stages whose outputs exist are reused (delete --work to start over).
The ablations follow the paper's tables on the same data, features and seeds:
Base (no movement feature, MREM -> 1D conv; Table 5), single-level instead of
SFPN (Table 7), Generalization only and Specialization only (Table 8).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from stream.cli import main as menet

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"

VARIANTS: dict[str, dict] = {
    "full": {},
    "base": {"model": {"movement": False, "relation": "conv"}},
    "single-level": {"model": {"levels": 1, "scale_ranges": [[0.0, 1.0]]}, "train": {"sample_ratios": [0.5]}},
    "generalization-only": {"schedule": "generalization"},
    "specialization-only": {"schedule": "specialization"},
}


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    rc = menet(args)
    if rc != 0:
        raise SystemExit(f"menet {' '.join(args)} failed with {rc}")
    return time.perf_counter() - t0


def write_config(path: Path, base: str, overrides: dict) -> None:
    doc = {"extends": str(CONFIGS_DIR / f"{base}.yaml"), **overrides}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="runs/synth-bench", help="working directory")
    p.add_argument("--config", default="tiny", help="base config (default tiny)")
    p.add_argument("--num-videos", type=int, default=60)
    p.add_argument("--pretrain-steps", type=int, default=600)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    synth, feats, backbone = work / "synth", work / "features", work / "backbone.pt"
    ann = synth / "annotations.json"
    if not ann.exists():
        timings["synth"] = run(["synth", "--out", str(synth), "--num-videos", str(a.num_videos)])
    if not backbone.exists():
        timings["pretrain-backbone"] = run(["pretrain-backbone", "--config", a.config, "--videos",
                                            str(synth / "videos"), "--annotations", str(ann), "--out",
                                            str(backbone), "--steps", str(a.pretrain_steps), "--no-progress"])
    base_cfg = work / "base.yaml"
    write_config(base_cfg, a.config, {"model": {"backbone_weights": str(backbone.resolve())}})
    timings["extract"] = run(["extract", "--config", str(base_cfg), "--videos", str(synth / "videos"),
                              "--out", str(feats), "--no-progress"])
    report: dict[str, dict] = {}
    for name in a.variants.split(","):
        spec = dict(VARIANTS[name])
        schedule = spec.pop("schedule", "two-stage")
        spec.setdefault("model", {})["backbone_weights"] = str(backbone.resolve())
        cfg_path = work / f"{name}.yaml"
        doc = {"extends": str(CONFIGS_DIR / f"{a.config}.yaml"), **spec}
        cfg_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out = work / "runs" / name
        seconds = run(["train", "--config", str(cfg_path), "--features", str(feats), "--annotations", str(ann),
                       "--out", str(out), "--schedule", schedule, "--no-progress", "--threads", str(a.threads)])
        history = json.loads((out / "history.json").read_text())
        best = max(history, key=lambda h: h["score"])
        last = history[-1]
        report[name] = {"train_seconds": round(seconds, 1), "epochs": len(history),
                        "best_epoch": best["epoch"], "best_average_mAP": best["val_map"]["average_mAP"],
                        "best_mAP": best["val_map"]["mAP"], "last_average_mAP": last["val_map"]["average_mAP"],
                        "last_mAP": last["val_map"]["mAP"]}
        print(name, json.dumps(report[name]), flush=True)
    (work / "report.json").write_text(json.dumps({"timings": timings, "variants": report}, indent=1))
    print(json.dumps({"timings": timings}, indent=1))


if __name__ == "__main__":
    main()
