"""``menet engine``: the engine role on its own (backbone, MFE, windows, MREM), for a fleet.

    menet engine --config C --checkpoint P [--snippets tcp://0.0.0.0:5555] [--windows tcp://0.0.0.0:5556]
                 [--metrics-port 9100] [--metrics-host 0.0.0.0]

Binds the snippet endpoint (grabbers connect: ``menet grabber --engine``) and the window
endpoint (its detector connects: ``menet detector --windows``). Defaults:
``stream.transport.snippet_endpoint`` / ``window_endpoint``. A non-loopback bind needs CURVE
(docs/security.md). Stops on SIGINT/SIGTERM: flushes every stream to its detector first.
docs/deployment.md.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from ._role import add_common, endpoint_or_fail, load


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("engine", help="run the engine role alone (a fleet: grabbers -> engine -> detector)",
                              description="The engine worker as a service: snippets in, windows out.")
    add_common(p)
    p.add_argument("--snippets", default=None, metavar="ENDPOINT",
                   help="bind: where grabbers send snippets (default: stream.transport.snippet_endpoint)")
    p.add_argument("--windows", default=None, metavar="ENDPOINT",
                   help="bind: where the detector takes windows (default: stream.transport.window_endpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine_worker import engine_main

    cfg = load(args, "engine")
    if cfg is None:
        return 2
    t = cfg.stream.transport
    snippets = endpoint_or_fail(args.snippets or t.snippet_endpoint, "snippet", "engine")
    windows = endpoint_or_fail(args.windows or t.window_endpoint, "window", "engine")
    if snippets is None or windows is None:
        return 2
    engine_main(cfg, args.checkpoint, snippets, windows, t.metrics_port, logging.getLogger().getEffectiveLevel())
    return 0
