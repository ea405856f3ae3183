"""The ``menet`` command: one subcommand per module in ``stream/commands``.

Each command module exposes ``add_parser(subparsers)`` (which sets ``func``) and
``run(args) -> int``;
this file only dispatches, so a command's whole contract lives in one place.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order is the order of `menet --help`. Every name must be a module in stream/commands:
# a missing one is an ImportError at startup, never a silently absent command.
COMMANDS = ("demo", "run", "grabber", "engine", "detector", "sources", "subscribe", "synth", "pretrain_backbone", "extract", "train", "train_labeller", "infer", "eval",
            "build_engine", "bench", "keys", "model_info", "weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="menet",
        description="MENet-stream: online temporal action detection (MENet, ICCV 2023).")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"stream.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
