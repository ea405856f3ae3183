"""``menet sources``: add, remove and list the sources of a running ``menet run``.

    menet sources list                         # id, state, kind, URI of every source
    menet sources add [ID=]URI                 # start a new stream (file, rtsp://, /dev/videoN, synthetic://)
    menet sources remove ID                    # end a stream cleanly; it is not restarted
    options: [--control ENDPOINT] [--config C] [--timeout S] [--json] [--key K --server-key K]

The control endpoint is ``--control``, else the config's ``stream.transport.control_endpoint``,
else the one running ``menet run`` of this user with the default endpoint (an ipc
socket in its temp dir; ``menet run`` prints it at start). ``add`` returns once the
source has opened (an unopenable source is refused with the reason); ``remove``
once the stream's last window, events and end of stream have been published.
Exit status: 0 done, 1 refused (the reply's error is printed), 2 usage, no reply
or no endpoint. Protocol: docs/protocol.md, "Control socket".
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from engine.config import ConfigError
from stream.settings import load_config


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("sources", help="add, remove or list the sources of a running `menet run`",
                              description="Add, remove or list the sources of a running `menet run` "
                                          "(its control endpoint).")
    p.add_argument("action", choices=("list", "add", "remove"), help="what to do")
    p.add_argument("target", nargs="?", default=None, metavar="[ID=]URI | ID",
                   help="add: [ID=]URI (the id defaults to one derived from the URI); remove: the source id")
    p.add_argument("--control", default=None, metavar="ENDPOINT",
                   help="control endpoint of the run (default: the config's stream.transport.control_endpoint, else the "
                        "running `menet run` of this user)")
    p.add_argument("--config", default=None, help="config whose stream.transport.control_endpoint (and CURVE keys) to use")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the reply (a remove waits for the stream's end; default 60)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    p.add_argument("--key", default=None,
                   help="CURVE (tcp endpoint): this client's NAME.key_secret "
                        "(default: stream.security.curve_client_secret_file)")
    p.add_argument("--server-key", default=None,
                   help="CURVE: the server's public NAME.key (default: stream.security.curve_server_public_file)")
    p.set_defaults(func=run)


def _table(sources: list[dict[str, Any]]) -> str:
    if not sources:
        return "(no sources)"
    rows = [("ID", "STATE", "KIND", "RESTARTS", "URI")]
    for s in sources:
        sid = str(s.get("id"))
        if s.get("instance"):
            sid += f" (#{s['instance']})"
        rows.append((sid, str(s.get("state")), str(s.get("kind")), str(s.get("restarts", 0)), str(s.get("uri"))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def run(args: argparse.Namespace) -> int:
    from ..control import ControlClient, ControlError, discover
    from ..security import SecurityError, load_client_curve
    from ..sources import parse_source_arg

    def fail(msg: str, code: int = 2) -> int:
        print(f"menet sources: {msg}", file=sys.stderr)
        return code

    if args.action == "list" and args.target is not None:
        return fail("list takes no argument")
    if args.action in ("add", "remove") and not args.target:
        return fail(f"{args.action} needs {'[ID=]URI' if args.action == 'add' else 'the source ID'}")
    endpoint, key, server_key = args.control, args.key, args.server_key
    if args.config is not None:
        try:
            scfg = load_config(args.config).stream
        except ConfigError as exc:
            return fail(str(exc))
        endpoint = endpoint or scfg.transport.control_endpoint
        key = key or scfg.security.curve_client_secret_file
        server_key = server_key or scfg.security.curve_server_public_file
    if endpoint is None:
        found = discover()
        if not found:
            return fail("no running `menet run` found; give --control ENDPOINT (printed by `menet run` at start) "
                        "or --config with stream.transport.control_endpoint")
        if len(found) > 1:
            return fail("several `menet run` are running; choose one with --control:\n  " + "\n  ".join(found))
        endpoint = found[0]
    curve = None
    if endpoint.startswith("tcp://"):
        try:
            curve = load_client_curve(key, server_key)
        except SecurityError as exc:
            return fail(str(exc))
    client = ControlClient(endpoint, timeout_s=args.timeout, curve=curve)
    try:
        if args.action == "list":
            reply = client.list()
        elif args.action == "add":
            sid, uri = parse_source_arg(args.target)
            reply = client.add(uri, sid)
        else:
            reply = client.remove(args.target)
    except ControlError as exc:
        return fail(str(exc))
    if args.json:
        print(json.dumps(reply, indent=1))
    elif reply.get("ok"):
        if args.action != "list" and reply.get("message"):
            print(reply["message"])
        print(_table(reply.get("sources") or []))
    if not reply.get("ok"):
        return fail(str(reply.get("error")), 1)
    return 0
