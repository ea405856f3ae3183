"""``menet grabber``: the grabbers of a camera group on their own, for a fleet.

    menet grabber --config C --source [ID=]URI [--source ...] [--engine tcp://ENGINE:5555 ...]
                  [--metrics-port 9100] [--metrics-host 0.0.0.0]

One process per source, each sending its snippets to the engine that serves its stream: the
engines are ``--engine`` (repeatable) or ``stream.transport.engines``, else the one
``stream.transport.snippet_endpoint``; with several, ``stream.transport.shards`` or
rendezvous hashing of the stream id picks one (stream/roles.py), the same on every host.
Metrics: port P for the first source, P+1 for the next, ... A live source's process that
dies (or does not open) is restarted with backoff; the command ends when every file has been sent, or on
SIGINT/SIGTERM. docs/deployment.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ._role import add_common, endpoint_or_fail, load


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("grabber", help="run the grabbers of some sources alone, sending to remote engine(s)",
                              description="Grabbers as a service: frames in, snippets to the engine of each stream.")
    add_common(p, checkpoint=False)
    p.add_argument("--source", action="append", required=True, metavar="[ID=]URI",
                   help="file, rtsp://..., /dev/videoN or synthetic://NAME?... (repeatable)")
    p.add_argument("--engine", action="append", default=None, metavar="ENDPOINT",
                   help="an engine's snippet endpoint (repeatable: a fleet; default: stream.transport.engines, "
                        "else stream.transport.snippet_endpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..roles import run_grabbers
    from ..sources import SourceError, assign_stream_ids, is_live_uri, probe_source

    cfg = load(args, "grabber")
    if cfg is None:
        return 2
    t = cfg.stream.transport
    engines = args.engine or t.engines or ([t.snippet_endpoint] if t.snippet_endpoint else [])
    if not engines:
        print("menet grabber: no engine endpoint: pass --engine or set stream.transport.engines", file=sys.stderr)
        return 2
    for ep in engines:
        if endpoint_or_fail(ep, "engine", "grabber") is None:
            return 2
    bad = {sid: i for sid, i in t.shards.items() if i >= len(engines)}
    if bad:
        print(f"menet grabber: stream.transport.shards {bad} name engine indices past the {len(engines)} "
              f"engine endpoint(s) given", file=sys.stderr)
        return 2
    try:
        sources = assign_stream_ids(args.source)
        for sid, uri in sources:
            # a file that does not open is a mistake to report now; a camera that is down at start is
            # not: its grabber retries with backoff, and the group's other cameras run meanwhile
            if not is_live_uri(uri):
                probe_source(uri, cfg.stream.sources)
    except SourceError as exc:
        print(f"menet grabber: {exc}", file=sys.stderr)
        return 2
    return run_grabbers(cfg, sources, engines, t.metrics_port, logging.getLogger().getEffectiveLevel())
