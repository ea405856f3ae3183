"""``menet model-info``: parameters and MACs per MENet module."""
from __future__ import annotations

import argparse
import json
import sys

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "model-info", help="parameters and multiply-accumulates per module",
        description="Print parameters and MACs of the backbone, MFE, MREM, SFPN and heads for the "
                    "input sizes of a config (clip length x crop, window length).")
    p.add_argument("--config", required=True, help="config file or shipped name (tiny, thumos14, ...)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.model.complexity import format_costs, model_costs
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"menet model-info: {exc}", file=sys.stderr)
        return 2
    rows = model_costs(cfg)
    if args.json:
        print(json.dumps({"config": cfg.name, "modules": [r.__dict__ for r in rows]}))
    else:
        print(format_costs(cfg, rows))
    return 0
