"""``menet detector``: the detector role on its own (SFPN, heads, merge, events), for a fleet.

    menet detector --config C --checkpoint P [--windows tcp://ENGINE:5556] [--events tcp://0.0.0.0:5560]
                   [--metrics-port 9100] [--metrics-host 0.0.0.0]

Connects to its engine's window endpoint (default ``stream.transport.window_endpoint``) and
binds the event endpoint (default ``stream.transport.event_endpoint``); subscribers connect
there (``menet subscribe --endpoint``, several for a fleet). It outlives its engine: an
engine that stops or restarts ends its streams (their events are flushed) and the detector
takes the next engine's windows. Stops on SIGINT/SIGTERM. docs/deployment.md.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any

from ._role import add_common, endpoint_or_fail, load


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("detector", help="run the detector role alone (publishes the events of one engine)",
                              description="The detector worker as a service: windows in, events out.")
    add_common(p)
    p.add_argument("--windows", default=None, metavar="ENDPOINT",
                   help="connect: the engine's window endpoint (default: stream.transport.window_endpoint)")
    p.add_argument("--events", default=None, metavar="ENDPOINT",
                   help="bind: where subscribers connect (default: stream.transport.event_endpoint)")
    p.add_argument("--wait-subscribers", type=int, default=None,
                   help="hold detection until this many subscribers are connected")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..detector_worker import detector_main

    cfg = load(args, "detector")
    if cfg is None:
        return 2
    t = cfg.stream.transport
    windows = endpoint_or_fail(args.windows or t.window_endpoint, "window", "detector")
    events = endpoint_or_fail(args.events or t.event_endpoint, "event", "detector")
    if windows is None or events is None:
        return 2
    if args.wait_subscribers is not None:
        cfg.stream.detector.wait_subscribers = args.wait_subscribers
    detector_main(cfg, args.checkpoint, windows, events, t.metrics_port, logging.getLogger().getEffectiveLevel(),
                  serve=True)
    return 0
