"""``menet keys``: generate a CURVE key pair for authenticated, encrypted tcp endpoints.

    menet keys --out DIR --name NAME

Writes ``DIR/NAME.key`` (public: give it to the other side) and ``DIR/NAME.key_secret``
(public + secret, mode 0600: keep it). The server (``menet run``) uses its
``.key_secret`` as ``stream.security.curve_server_secret_file``; each client's ``.key`` goes
into the server's ``stream.security.curve_clients_dir`` (the allow-list); a client
(``menet subscribe``) uses its own ``.key_secret`` and the server's ``.key``. See
docs/security.md.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("keys", help="generate a CURVE key pair (server or client)",
                              description="Generate a ZeroMQ CURVE key pair: NAME.key (public) and "
                                          "NAME.key_secret (secret).")
    p.add_argument("--out", required=True, help="directory to write the key files into")
    p.add_argument("--name", required=True, help="key name (file stem), e.g. server or client-ops")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..security import SecurityError, generate_keypair

    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", args.name) or args.name.startswith("."):
        print(f"menet keys: --name must be 1-64 of [A-Za-z0-9_.-], got {args.name!r}", file=sys.stderr)
        return 2
    out = Path(args.out)
    existing = [p for p in (out / f"{args.name}.key", out / f"{args.name}.key_secret") if p.exists()]
    if existing and not args.force:
        print(f"menet keys: {existing[0]} exists (--force to overwrite)", file=sys.stderr)
        return 2
    try:
        public, secret = generate_keypair(out, args.name)
    except (SecurityError, OSError) as exc:
        print(f"menet keys: {exc}", file=sys.stderr)
        return 2
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0
