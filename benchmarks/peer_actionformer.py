"""Peer baseline: train the reference ActionFormer on this project's features, score it with `menet eval`.

    .venv/bin/python benchmarks/peer_actionformer.py \\
        --features runs/bundled/features --annotations runs/bundled/synth/annotations.json

Steps (each one a subprocess; the peer never runs inside this interpreter):

1. venv    -- create --venv (default runs/peer-venv) if it does not hold a working
              peer: `pip install <the project's torch, e.g. torch==2.13.0+cpu> numpy
              pyyaml pandas h5py joblib tensorboard setuptools wheel`, then
              `pip install --no-deps --no-build-isolation actionformer==1.5.0` (PyPI;
              an enhanced fork that keeps the original model; --no-deps because it
              declares torchvision, which it never imports; no build isolation so
              its 1-D NMS C++ extension `nms_1d_cpu` compiles against the pinned
              torch instead of pip fetching another torch into a build env).
2. prepare -- a `menet extract` feature store + the ActivityNet annotations of
              `menet synth` become the peer's THUMOS-style inputs in --work:
              data/actionformer.json (database: subset, fps, duration, annotations
              with label_id) and data/features/<video>.npy (links, [T, C]), plus
              actionformer.yaml: the peer's configs/thumos_i3d.yaml with the
              issue's settings (input_dim = feature width, feat_stride = num_frames =
              the store's sigma so feature i is centred on snippet i, default_fps
              from the metadata, max_seq_len 256, n_mha_win_size 9, fpn identity,
              lr 1e-4, 3 warm-up + 15 cosine epochs, batch 2, weight decay 0.05,
              multiclass NMS without external classification scores).
3. train   -- the peer's own `actionformer.train:main` (the actionformer-train entry
              point), unmodified; EMA weights of the final epoch are kept.
4. infer   -- the peer's own `actionformer.eval:main --saveonly` on the validation
              subset with the final checkpoint (EMA weights).
   (--reuse RUN skips training: the final checkpoint of an earlier run, with its class ids,
   is scored on --features / --annotations, e.g. longer unseen videos with --val-subset all.)
5. score   -- the peer's detections -> ActivityNet results JSON (predictions.json),
              then `python -m stream eval --protocol activitynet --subset validation`.

Both peer entry points run through a small launcher (work/peer_launch.py) that only
makes the GPU-only calls of the reference code harmless on a CPU-only torch:
``torch.cuda.synchronize()`` (timing prints) becomes a no-op and checkpoints load
with ``map_location="cpu"`` (the peer maps them with ``storage.cuda(...)``). It also
pins the thread count. No peer code is copied or edited.

Outputs in --work: report.json (command line, settings, epochs, wall times, the
`menet eval` figures), predictions.json, eval.json, train.log, infer.log.

--quick is a smoke test (1 warm-up + 1 cosine epoch, 16 training and 8 validation
videos, scored against a ground truth restricted to those videos); its mAP means
nothing, it proves the pipeline end to end in a few minutes on one thread.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_SPEC = "actionformer==1.5.0"
# what the peer imports (torchvision and scipy are declared but never imported)
PEER_DEPS = ["numpy", "pyyaml", "pandas", "h5py", "joblib", "tensorboard", "setuptools", "wheel"]
READY_MARK = ".menet-peer-ready"

# Runs inside the peer venv. GPU-only calls of the reference code become harmless on
# a CPU-only torch; then the peer's own entry point runs with the given argv.
LAUNCHER = '''\
"""Run an ActionFormer entry point unmodified (written by benchmarks/peer_actionformer.py)."""
import json
import os
import pickle
import sys

import torch

torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
if not torch.cuda.is_available():
    # timing prints call torch.cuda.synchronize(); checkpoints are mapped with storage.cuda()
    torch.cuda.synchronize = lambda *args, **kwargs: None
    _torch_load = torch.load

    def _load_on_cpu(*args, **kwargs):
        kwargs["map_location"] = "cpu"
        return _torch_load(*args, **kwargs)

    torch.load = _load_on_cpu

command, argv = sys.argv[1], sys.argv[2:]
if command == "train":
    from actionformer.train import main
elif command == "eval":
    from actionformer.eval import main
elif command == "export":  # eval --saveonly pickle -> plain JSON (no numpy on the reading side)
    src, dst = argv
    with open(src, "rb") as fh:
        res = pickle.load(fh)
    out = {key: [v.item() if hasattr(v, "item") else v for v in res[key]]
           for key in ("video-id", "t-start", "t-end", "label", "score")}
    with open(dst, "w") as fh:
        json.dump(out, fh)
    sys.exit(0)
else:
    sys.exit("unknown command " + command)
sys.argv = ["actionformer-" + command] + argv
main()
'''


# --------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(f"[peer] {msg}", flush=True)


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[key] = str(threads)
    env["PEER_THREADS"] = str(threads)
    env["MAX_JOBS"] = str(threads)  # C++ extension build
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)  # keep the project out of the peer's interpreter
    return env


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None,
               echo: bool = True) -> float:
    """Run ``cmd``, tee its output to ``log_path``; raise on failure. Returns wall seconds."""
    log("$ " + shlex.join(cmd))
    t0 = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if echo:
                sys.stdout.write("    " + line)
                sys.stdout.flush()
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"command failed with exit status {rc} (log: {log_path}): {shlex.join(cmd)}")
    return time.perf_counter() - t0


def project_torch_spec() -> str:
    """The torch the project itself runs (e.g. torch==2.13.0+cpu): never a CUDA build by accident."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"torch=={version('torch')}"
    except PackageNotFoundError:
        return "torch==2.13.0"


# --------------------------------------------------------------------------- 1. venv

CHECK_PEER = (
    "import json, torch, actionformer; from actionformer.utils import HAS_CPP_NMS; "
    "import torch.utils.tensorboard, pandas, h5py, joblib, yaml; "
    "print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, "
    "'actionformer': actionformer.__version__, 'nms_1d_cpu': HAS_CPP_NMS}))"
)


def peer_info(python: Path, env: dict[str, str]) -> dict[str, Any] | None:
    if not python.is_file():
        return None
    proc = subprocess.run([str(python), "-c", CHECK_PEER], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ensure_venv(venv: Path, torch_spec: str, peer_spec: str, env: dict[str, str], log_path: Path) -> dict[str, Any]:
    python = venv / "bin" / "python"
    if (venv / READY_MARK).is_file():
        info = peer_info(python, env)
        if info is not None:
            log(f"peer venv {venv} ready: {info}")
            return info
    log(f"installing the peer into {venv} (a few minutes: torch wheel + compiling nms_1d_cpu)")
    if not python.is_file():
        run_logged([sys.executable, "-m", "venv", str(venv)], log_path, env)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    run_logged(pip + [torch_spec] + PEER_DEPS, log_path, env, echo=False)
    # pinned torch first, then the peer without its declared deps (torchvision would pull
    # another torch) and without build isolation (its C++ extension builds against this torch)
    run_logged(pip + ["--no-deps", "--no-build-isolation", peer_spec], log_path, env, echo=False)
    info = peer_info(python, env)
    if info is None:
        raise SystemExit(f"the peer does not import in {venv} (see {log_path})")
    want = torch_spec.split("==", 1)[-1]
    if info["torch"] != want:
        raise SystemExit(f"peer venv got torch {info['torch']}, expected {want}")
    (venv / READY_MARK).write_text(json.dumps({"torch_spec": torch_spec, "peer_spec": peer_spec, **info}) + "\n")
    log(f"peer venv ready: {info}")
    return info


# --------------------------------------------------------------------------- 2. prepare

def prepare(features: Path, annotations: Path, work: Path, limit_train: int | None,
            limit_val: int | None, subsets: tuple[str | None, str],
            labels: list[str] | None = None) -> dict[str, Any]:
    """Write the peer's json + feature links; returns what the config and scoring need.

    ``subsets``: (train, scored); train None = score only (``--reuse``); scored ``all`` = every
    video of the annotations. ``labels``: the class ids of an earlier training (``--reuse``),
    else the sorted labels of the videos used."""
    sys.path.insert(0, str(REPO_ROOT))
    from engine.features import FeatureStore

    store = FeatureStore(features)
    settings = store.settings()
    ann = json.loads(annotations.read_text())
    database: dict[str, Any] = ann["database"]
    train_subset, val_subset = subsets

    available = set(store.videos())
    chosen: dict[str, list[str]] = {}
    missing: dict[str, int] = {}
    for subset, limit in ((train_subset, limit_train), (val_subset, limit_val)):
        if subset is None:
            chosen[subset] = []
            continue
        names = sorted(v for v, item in database.items() if subset == ALL_SUBSETS or item.get("subset") == subset)
        have = [v for v in names if v in available]
        missing[subset] = len(names) - len(have)
        if limit is None and missing[subset]:
            raise SystemExit(f"{features}: features missing for {missing[subset]} of {len(names)} "
                             f"{subset} videos (run `menet extract` to completion, or use --quick)")
        chosen[subset] = have[:limit] if limit is not None else have
        if not chosen[subset]:
            raise SystemExit(f"no {subset} video of {annotations} has features in {features}")

    used = chosen[train_subset] + chosen[val_subset]
    seen = sorted({a["label"] for v in used for a in database[v].get("annotations", [])})
    if labels is None:
        labels = seen
    elif set(seen) - set(labels):
        raise SystemExit(f"{annotations}: labels {sorted(set(seen) - set(labels))} were not in the reused "
                         f"peer's training (its classes: {labels})")
    label_id = {name: i for i, name in enumerate(labels)}

    feat_dir = work / "data" / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    peer_db: dict[str, Any] = {}
    fps_seen: set[float] = set()
    dim = None
    import numpy as np
    for video in used:
        feats, meta = store.load(video)  # validates shape, rows == snippets, finite
        dim = feats.shape[1] if dim is None else dim
        if feats.shape[1] != dim:
            raise SystemExit(f"{video}: feature width {feats.shape[1]} != {dim}")
        item = database[video]
        fps = float(meta.fps)
        fps_seen.add(fps)
        link = feat_dir / f"{video}.npy"
        src = (features / f"{video}.npy").resolve()
        if link.is_symlink() or link.exists():
            link.unlink()
        try:
            link.symlink_to(src)
        except OSError:
            np.save(link, feats)
        peer_db[video] = {
            "subset": item["subset"],
            "duration": float(item.get("duration", meta.duration)),
            "fps": fps,
            "annotations": [{"label": a["label"], "segment": [float(s) for s in a["segment"]],
                             "label_id": label_id[a["label"]]} for a in item.get("annotations", [])],
        }
    json_path = work / "data" / "actionformer.json"
    json_path.write_text(json.dumps({"version": "menet-peer-1", "database": peer_db}, indent=1))

    # ground truth for `menet eval`: the original file unless the video set was cut down
    if limit_train is None and limit_val is None:
        gt_path = annotations
    else:
        gt_path = work / "gt.json"
        gt = {k: v for k, v in ann.items() if k != "database"}
        gt["database"] = {v: database[v] for v in used}
        gt_path.write_text(json.dumps(gt, indent=1))
    return {
        "json_file": json_path, "feat_folder": feat_dir, "labels": labels, "input_dim": int(dim),
        "sigma": int(settings.sigma), "clip_length": int(settings.clip_length),
        "feature_kind": settings.feature_kind,
        "default_fps": fps_seen.pop() if len(fps_seen) == 1 else None,
        "videos": {k: len(v) for k, v in chosen.items() if k is not None},
        "missing_features": {k: n for k, n in missing.items() if k is not None},
        "gt": gt_path,
    }


def peer_config(data: dict[str, Any], args: argparse.Namespace, subsets: tuple[str, str],
                output_folder: Path) -> dict[str, Any]:
    """configs/thumos_i3d.yaml of the reference code with the issue's settings."""
    seed = {} if args.seed is None else {"init_rand_seed": args.seed}  # else the peer's default, 1234567891
    return {
        **seed,
        "dataset_name": "thumos",
        "train_split": [subsets[0]],
        "val_split": [subsets[1]],
        "dataset": {
            "json_file": str(data["json_file"]),
            "feat_folder": str(data["feat_folder"]),
            "file_prefix": None,
            "file_ext": ".npy",
            "num_classes": len(data["labels"]),
            "input_dim": data["input_dim"],
            # one feature row per sigma-frame snippet, centred on the snippet:
            # t(i) = (i * feat_stride + num_frames / 2) / fps = (i + 1/2) * sigma / fps
            "feat_stride": data["sigma"],
            "num_frames": data["sigma"],
            "default_fps": data["default_fps"],
            "trunc_thresh": 0.5,
            "crop_ratio": [0.9, 1.0],
            "max_seq_len": args.max_seq_len,
        },
        "model": {
            "fpn_type": "identity",
            "max_buffer_len_factor": 6.0,
            "n_mha_win_size": args.mha_win_size,
        },
        "opt": {
            "learning_rate": args.lr,
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "weight_decay": 0.05,
        },
        # the peer's loader sets persistent_workers=True, which needs >= 1 worker
        "loader": {"batch_size": args.batch_size, "num_workers": 1},
        "train_cfg": {
            "init_loss_norm": 100,
            "clip_grad_l2norm": 1.0,
            "cls_prior_prob": 0.01,
            "center_sample": "radius",
            "center_sample_radius": 1.5,
        },
        # thumos_i3d.yaml's "otherwise" branch: no external classification scores
        "test_cfg": {
            "voting_thresh": 0.7,
            "pre_nms_topk": 2000,
            "max_seg_num": 200,
            "min_score": 0.001,
            "multiclass_nms": True,
        },
        "output_folder": str(output_folder),
    }


# --------------------------------------------------------------------------- --reuse

ALL_SUBSETS = "all"


def reused_run(run: Path) -> tuple[Path, list[str], int]:
    """An earlier run's final peer checkpoint, its classes in id order and its epoch count."""
    report_path, json_path = run / "report.json", run / "data" / "actionformer.json"
    try:
        report = json.loads(report_path.read_text())
        database = json.loads(json_path.read_text())["database"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"--reuse {run}: not a finished run of this script ({exc})")
    total = int(report["epochs"]["total"])
    ckpt = run / "ckpt" / "actionformer_peer" / f"epoch_{total:03d}.pth.tar"
    if not ckpt.is_file():
        raise SystemExit(f"--reuse {run}: its final checkpoint {ckpt} is missing")
    ids = {a["label"]: int(a["label_id"]) for item in database.values() for a in item["annotations"]}
    labels = [name for name, _ in sorted(ids.items(), key=lambda kv: kv[1])]
    if [ids[n] for n in labels] != list(range(len(labels))) or labels != list(report["classes"]):
        raise SystemExit(f"--reuse {run}: class ids in {json_path} do not match its report's classes")
    return ckpt.resolve(), labels, total


# --------------------------------------------------------------------------- 5. score

def to_activitynet(raw: dict[str, list], labels: list[str]) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {}
    for video, start, end, label, score in zip(raw["video-id"], raw["t-start"], raw["t-end"],
                                               raw["label"], raw["score"]):
        start, end = float(start) + 0.0, float(end) + 0.0  # + 0.0: no "-0.0" in the file
        if end < start:
            start, end = end, start
        results.setdefault(video, []).append(
            {"label": labels[int(label)], "score": float(score), "segment": [start, end]})
    return {"version": "actionformer-peer", "results": results,
            "external_data": {"used": False, "details": "trained on the project's features only"}}


def menet_eval(gt: Path, pred: Path, subset: str, log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    base = [sys.executable, "-m", "stream", "eval", "--gt", str(gt), "--pred", str(pred), "--protocol", "activitynet"]
    if subset != ALL_SUBSETS:
        base += ["--subset", subset]
    run_logged(base, log_path, env, cwd=REPO_ROOT)  # the table, for the log and the console
    proc = subprocess.run(base + ["--json"], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"menet eval failed: {proc.stderr}")
    result = json.loads(proc.stdout)
    result["command"] = shlex.join(base)
    return result


# --------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", type=Path, default=REPO_ROOT / "runs/bundled/features",
                   help="feature store made by `menet extract` (default runs/bundled/features)")
    p.add_argument("--annotations", type=Path, default=REPO_ROOT / "runs/bundled/synth/annotations.json",
                   help="ActivityNet-format annotations from `menet synth` "
                        "(default runs/bundled/synth/annotations.json)")
    p.add_argument("--venv", type=Path, default=REPO_ROOT / "runs/peer-venv",
                   help="virtualenv for the peer; created and filled if missing (default runs/peer-venv)")
    p.add_argument("--work", type=Path, default=None,
                   help="working directory (default runs/peer-actionformer, or runs/peer-actionformer-quick)")
    p.add_argument("--out", type=Path, default=None, help="report JSON (default WORK/report.json)")
    p.add_argument("--epochs", type=int, default=None, help="cosine epochs after warm-up (default 15; quick 1)")
    p.add_argument("--warmup-epochs", type=int, default=None, help="linear warm-up epochs (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads for the peer (default 1)")
    p.add_argument("--seed", type=int, default=None,
                   help="the peer's init_rand_seed (default: its own, 1234567891): a second draw of the peer")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=2, help="training batch size (default 2)")
    p.add_argument("--max-seq-len", type=int, default=256, help="training window in features (default 256)")
    p.add_argument("--mha-win-size", type=int, default=9, help="local self-attention window (default 9)")
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only the first N training videos (scored against a reduced ground truth)")
    p.add_argument("--limit-val", type=int, default=None,
                   help="use only the first N validation videos (scored against a reduced ground truth)")
    p.add_argument("--train-subset", default="training", help="annotation subset to train on (default training)")
    p.add_argument("--val-subset", default="validation",
                   help=f"annotation subset to score (default validation; {ALL_SUBSETS!r}: every video)")
    p.add_argument("--reuse", type=Path, default=None, metavar="RUN",
                   help="score the peer trained by an earlier run (RUN = its --work) on --features / "
                        "--annotations instead of training one, e.g. on longer unseen videos")
    p.add_argument("--torch-spec", default=None,
                   help="torch requirement for the peer venv (default: the project's own torch, "
                        "e.g. torch==2.13.0+cpu)")
    p.add_argument("--peer-spec", default=PEER_SPEC, help=f"peer requirement (default {PEER_SPEC})")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 warm-up + 1 cosine epoch on 16 training / 8 validation videos")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1 if args.epochs is None else args.epochs
        args.warmup_epochs = 1 if args.warmup_epochs is None else args.warmup_epochs
        args.limit_train = 16 if args.limit_train is None else args.limit_train
        args.limit_val = 8 if args.limit_val is None else args.limit_val
    args.epochs = 15 if args.epochs is None else args.epochs
    args.warmup_epochs = 3 if args.warmup_epochs is None else args.warmup_epochs
    if args.work is None:
        args.work = REPO_ROOT / ("runs/peer-actionformer-quick" if args.quick else "runs/peer-actionformer")
    if args.out is None:
        args.out = args.work / "report.json"
    if args.epochs < 1 or args.warmup_epochs < 1:
        p.error("--epochs and --warmup-epochs must be >= 1 (the peer's warm-up scheduler needs a warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = thread_env(args.threads)
    subsets: tuple[str | None, str] = (None if args.reuse else args.train_subset, args.val_subset)
    timings: dict[str, float] = {}
    total_epochs = args.warmup_epochs + args.epochs
    reused_labels = reused_ckpt = None
    if args.reuse:
        reused_ckpt, reused_labels, total_epochs = reused_run(args.reuse.resolve())

    t0 = time.perf_counter()
    torch_spec = args.torch_spec or project_torch_spec()
    info = ensure_venv(args.venv.resolve(), torch_spec, args.peer_spec, env, work / "install.log")
    timings["venv"] = time.perf_counter() - t0
    python = str(args.venv.resolve() / "bin" / "python")

    t0 = time.perf_counter()
    data = prepare(args.features.resolve(), args.annotations.resolve(), work,
                   args.limit_train, args.limit_val, subsets, reused_labels)
    cfg = peer_config(data, args, subsets, work / "ckpt")
    if args.val_subset == ALL_SUBSETS:  # the peer's loader selects by subset name: name them all
        names = sorted({item["subset"] for item in json.loads(data["json_file"].read_text())["database"].values()})
        cfg["val_split"] = names
    if args.reuse:
        cfg["train_split"] = cfg["val_split"]  # nothing is trained; the loader still wants a split
    (work / "ckpt").mkdir(exist_ok=True)
    import yaml
    cfg_path = work / "actionformer.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    launcher = work / "peer_launch.py"
    launcher.write_text(LAUNCHER)
    timings["prepare"] = time.perf_counter() - t0
    log(f"videos {data['videos']}, classes {data['labels']}, input_dim {data['input_dim']}, "
        f"feat_stride = num_frames = {data['sigma']}, default_fps {data['default_fps']}")

    ckpt_dir = work / "ckpt" / "actionformer_peer"
    ckpt = ckpt_dir / f"epoch_{total_epochs:03d}.pth.tar"
    for old in ckpt_dir.glob("*.pth.tar") if ckpt_dir.is_dir() else []:
        old.unlink()  # a stale checkpoint must never be scored
    for name in ("train.log", "infer.log", "eval.log"):
        (work / name).unlink(missing_ok=True)
    if reused_ckpt is not None:
        # a link in this run's folder: the peer's eval writes its results next to the checkpoint
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt.symlink_to(reused_ckpt)
        timings["train"] = 0.0
    else:
        # -c 0: only the final epoch is saved (what the issue reports)
        timings["train"] = run_logged([python, str(launcher), "train", str(cfg_path), "--output", "peer",
                                       "-c", "0", "-p", "20"], work / "train.log", env, cwd=work)
    if not ckpt.is_file():
        raise SystemExit(f"training finished without {ckpt}")

    results_pkl = ckpt_dir / "eval_results.pkl"
    results_pkl.unlink(missing_ok=True)
    timings["infer"] = run_logged([python, str(launcher), "eval", str(cfg_path), str(ckpt), "--saveonly",
                                   "-p", "20"], work / "infer.log", env, cwd=work)
    raw_path = work / "peer_detections.json"
    run_logged([python, str(launcher), "export", str(results_pkl), str(raw_path)], work / "infer.log", env,
               echo=False)

    t0 = time.perf_counter()
    raw = json.loads(raw_path.read_text())
    pred = to_activitynet(raw, data["labels"])
    pred_path = work / "predictions.json"
    pred_path.write_text(json.dumps(pred))
    result = menet_eval(data["gt"], pred_path, args.val_subset, work / "eval.log", env)
    (work / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    timings["score"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    tiou = result["tiou"]
    by_tiou = {f"{t:.2f}": round(100 * m, 2) for t, m in zip(tiou, result["mAP"])}
    report = {
        "peer": {"spec": args.peer_spec, **info, "config": "thumos_i3d.yaml + issue settings",
                 "entry_points": ["actionformer.train:main", "actionformer.eval:main --saveonly"]},
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "quick": args.quick,
        "seed": cfg.get("init_rand_seed", "the peer's default (1234567891)"),
        "reused_from": str(args.reuse) if args.reuse else None,  # scored only, trained by that run
        "features": str(args.features), "annotations": str(args.annotations),
        "feature_kind": data["feature_kind"], "input_dim": data["input_dim"],
        "feat_stride": data["sigma"], "num_frames": data["sigma"], "default_fps": data["default_fps"],
        "videos": data["videos"], "classes": data["labels"],
        "epochs": {"warmup": args.warmup_epochs, "cosine": args.epochs, "total": total_epochs,
                   "reported": total_epochs, "weights": "EMA"},
        "opt": cfg["opt"], "batch_size": args.batch_size, "max_seq_len": args.max_seq_len,
        "n_mha_win_size": args.mha_win_size, "threads": args.threads,
        "predictions": len(raw["score"]), "ground_truth": str(data["gt"]), "subset": args.val_subset,
        "eval_command": result["command"],
        "average_mAP": round(100 * result["average_mAP"], 2),
        "mAP": by_tiou,
        "wall_s": {k: round(v, 1) for k, v in timings.items()},
        "host": {"cpus": os.cpu_count(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    log(f"ActionFormer ({total_epochs} epochs, {data['videos']}): average mAP {report['average_mAP']:.2f} % "
        f"(@0.5 {by_tiou.get('0.50')}, @0.75 {by_tiou.get('0.75')}, @0.95 {by_tiou.get('0.95')}); "
        f"train {timings['train']:.0f} s, total {timings['total']:.0f} s")
    log(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
