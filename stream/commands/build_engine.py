"""``menet build-engine``: ONNX graphs (always), TensorRT plans (when possible), parity."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-engine", help="export ONNX graphs, build TensorRT plans, check parity",
        description="Compile MENet for deployment into OUT: the ONNX graphs of the MFE (dynamic batch), MREM and "
                    "the detector's dense part (SFPN + boundary predictors, one per window length) always; "
                    "TensorRT plans for this GPU when TensorRT and a CUDA GPU are present. Every artifact gets "
                    "a manifest next to it; OUT/manifest.json lists what was built and skipped, and why. "
                    "--verify compares every graph with PyTorch (max abs/rel error per output; fp32 must be "
                    "within 1e-4) and exits 1 when one is off.")
    p.add_argument("--config", help="config file or shipped name (default: the checkpoint's stored config)")
    p.add_argument("--checkpoint", help="MENet checkpoint (menet train); without it random weights are used, "
                                        "with a warning (for trying the build and timing only)")
    p.add_argument("--out", required=True, help="engine directory to write")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16",
                   help="TensorRT plan precision (default fp16); ONNX graphs are always fp32")
    p.add_argument("--verify", action="store_true", help="parity check of every graph against PyTorch")
    p.add_argument("--calib-video", help="video whose snippets calibrate INT8 (required for --precision int8)")
    p.add_argument("--calib-snippets", type=int, default=256, help="snippets read for INT8 calibration")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--max-batch", type=int, help="TensorRT profile max batch (default stream.engine.max_batch)")
    p.add_argument("--opt-batch", type=int, help="TensorRT profile opt batch (default = max batch)")
    p.add_argument("--workspace-mb", type=int, default=4096, help="TensorRT builder workspace (MiB)")
    p.add_argument("--no-tensorrt", action="store_true", help="ONNX only, even where TensorRT is present")
    p.add_argument("--verify-batch", type=int, default=2, help="batch of the parity inputs (default 2)")
    p.add_argument("--json", action="store_true", help="print the build index as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from build_engine.build import build_engines
    from build_engine.parity import format_parity
    from engine.checkpoint import CheckpointError, load_checkpoint
    from engine.config import ConfigError
    from stream.settings import as_stream_config, load_config
    from engine.runtime.base import BackendError
    from engine.runtime.manifest import EngineError
    from engine.runtime.torch_backend import build_model

    def fail(msg: str) -> int:
        print(f"menet build-engine: {msg}", file=sys.stderr)
        return 2

    if not args.config and not args.checkpoint:
        return fail("give --config, --checkpoint or both")
    if args.precision == "int8" and not args.calib_video:
        return fail("--precision int8 needs --calib-video VIDEO (real snippets calibrate the INT8 ranges)")
    try:
        cfg = load_config(args.config) if args.config else None
        ckpt = load_checkpoint(args.checkpoint, expect=cfg) if args.checkpoint else None
    except (ConfigError, CheckpointError) as exc:
        return fail(str(exc))
    if cfg is None:
        # the checkpoint's stored config has no stream section: its defaults (stream.engine.max_batch)
        cfg = as_stream_config(ckpt.config)  # type: ignore[union-attr]
    if ckpt is None:
        print("warning: no --checkpoint: exporting random weights (fine for trying the build and for latency, "
              "meaningless for detections)", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-checkpoint / no-backbone-weights warnings were reported above
        model = build_model(cfg, ckpt)
    logging.getLogger("build_engine").setLevel(logging.WARNING)
    try:
        report = build_engines(cfg, model, args.out, checkpoint=ckpt, precision=args.precision, verify=args.verify,
                               calib_video=args.calib_video, calib_snippets=args.calib_snippets, opset=args.opset,
                               max_batch=args.max_batch or cfg.stream.engine.max_batch, opt_batch=args.opt_batch, workspace_mb=args.workspace_mb,
                               tensorrt=not args.no_tensorrt, verify_batch=args.verify_batch)
    except (EngineError, BackendError, RuntimeError, ValueError, OSError) as exc:
        return fail(str(exc))
    if args.json:
        print(report.index.read_text() if report.index else "{}")
    else:
        print(f"engine directory: {report.out_dir}  (config {cfg.name}, "
              f"{'checkpoint ' + ckpt.path if ckpt else 'random weights'})")
        for b in report.built:
            extra = (f"opset {b['opset']}, dynamic batch" if b["kind"] == "onnx"
                     else f"{b['precision']}, {b['gpu']}, TensorRT {b['tensorrt']}, batch "
                          f"{b['profiles'][0]['min'][0]}/{b['profiles'][0]['opt'][0]}/{b['profiles'][0]['max'][0]}")
            print(f"  built    {b['path']:<40} {b['stage']:<6} {extra}, {b['bytes'] / 1e6:.1f} MB, {b['seconds']:.1f} s")
        for s in report.skipped:
            print(f"  skipped  {s['what']}: {s['why']}")
        if report.parity:
            print("parity vs PyTorch (same inputs):")
            print(format_parity(report.parity))
        print(f"manifest: {report.index}")
    if report.parity and not report.parity_ok:
        print("menet build-engine: parity check FAILED (see the table)", file=sys.stderr)
        return 1
    return 0
