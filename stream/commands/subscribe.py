"""``menet subscribe``: print events as the detector publishes them.

    menet subscribe [--endpoint tcp://127.0.0.1:5560 [--endpoint ...]] [--stream ID ...] [--json] [--status]
                    [--final-only] [--min-score S] [--count N] [--timeout S] [--until-end]

One line per event message, with its lifecycle state: provisional, open, final or
retracted; a later line for the same id supersedes the earlier ones. Several ``--endpoint``
follow every detector of a fleet at once (docs/deployment.md) (``--final-only``:
final events only, as protocol v1 clients see them). ``--min-score``: an event is printed from its
first message scoring at least S; after that every message of its id is (so its final or
retraction shows even when the score fell). ``--json``: one JSON object per
line, the message header as documented in docs/protocol.md. ``--status`` adds stream status, gap and
end-of-stream lines. Exits 0 on Ctrl-C, after ``--count`` events, after
``--timeout`` seconds without a message, or (``--until-end``) once every
``--stream`` (without ``--stream``: any stream) has ended.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Any

from engine.config import ConfigError
from stream.settings import load_config

from .. import protocol as P


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("subscribe", help="print detected events as they arrive",
                              description="Subscribe to the event endpoint of `menet run` and print events.")
    p.add_argument("--endpoint", action="append", default=None,
                   help="event endpoint, repeatable: every detector of a fleet (default: the config's "
                        "stream.transport.event_endpoint, tcp://127.0.0.1:5560)")
    p.add_argument("--config", default="stream", help="config whose stream.transport.event_endpoint is the default")
    p.add_argument("--stream", action="append", default=None, metavar="ID", help="only this stream (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--status", action="store_true", help="also print status, gap and end-of-stream messages")
    p.add_argument("--count", type=int, default=0, help="exit after this many events")
    p.add_argument("--timeout", type=float, default=0.0, help="exit after this many seconds without a message")
    p.add_argument("--until-end", action="store_true", help="exit when the stream(s) end")
    p.add_argument("--key", default=None,
                   help="CURVE: this client's NAME.key_secret (default: the config's stream.security.curve_client_secret_file)")
    p.add_argument("--server-key", default=None,
                   help="CURVE: the server's public NAME.key (default: stream.security.curve_server_public_file)")
    p.add_argument("--no-dedup", action="store_true", help="print repeated event messages (replays) too")
    p.add_argument("--final-only", action="store_true",
                   help="final events only (no provisional/open/retracted updates): what protocol v1 gave")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="print an event from its first message scoring at least this, then every message of its "
                        "id (default 0: all)")
    p.set_defaults(func=run)


def _passes(header: dict[str, Any], min_score: float, shown: set[str]) -> bool:
    """Whether an event message is printed under ``--min-score`` (remembering the ids printed)."""
    eid = header["event_id"]
    passes = eid in shown or header["score"] >= min_score
    if passes and header.get("state", "final") not in ("final", "retracted"):
        shown.add(eid)
    else:
        shown.discard(eid)  # its last message: the set stays as small as the events in flight
    return passes


def run(args: argparse.Namespace) -> int:
    from ..subscriber import Subscriber, format_message

    from ..security import SecurityError, load_client_curve

    endpoints = args.endpoint
    key, server_key = args.key, args.server_key
    if endpoints is None or (any(e.startswith("tcp://") for e in endpoints) and (key is None or server_key is None)):
        try:
            scfg = load_config(args.config).stream
        except ConfigError as exc:
            if endpoints is None:
                print(f"menet subscribe: {exc}", file=sys.stderr)
                return 2
            scfg = None
        if scfg is not None:
            endpoints = endpoints or [scfg.transport.event_endpoint]
            key = key or scfg.security.curve_client_secret_file
            server_key = server_key or scfg.security.curve_server_public_file
    try:
        curve = load_client_curve(key, server_key)
    except SecurityError as exc:
        print(f"menet subscribe: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)
    events = 0
    shown: set[str] = set()  # event ids printed once: their later messages print whatever the score
    pending_end = set(args.stream or [])
    with Subscriber(endpoints, args.stream, dedup=not args.no_dedup, curve=curve, final_only=args.final_only) as sub:
        try:
            while True:
                lost = sub.lost
                msg = sub.recv(args.timeout or None)
                if sub.lost > lost:  # said on stderr: the printed stream stays events only
                    print(f"menet subscribe: {sub.lost - lost} message(s) from the detector lost (this subscriber "
                          f"fell behind; {sub.lost} so far)", file=sys.stderr, flush=True)
                if msg is None:
                    return 0
                h = msg.header
                if h["type"] == P.EVENT and not _passes(h, args.min_score, shown):
                    continue
                if h["type"] == P.EVENT or args.status:
                    print(json.dumps(h) if args.json else format_message(h), flush=True)
                if h["type"] == P.EVENT:
                    events += 1
                    if args.count and events >= args.count:
                        return 0
                if h["type"] == P.EOS and args.until_end:
                    pending_end.discard(h["stream"])
                    if not pending_end:
                        return 0
        except KeyboardInterrupt:
            return 0
