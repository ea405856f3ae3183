"""What the role commands (``menet engine``, ``menet detector``, ``menet grabber``) share:
the config, the metrics server, the checks of a tcp endpoint given on the command line."""
from __future__ import annotations

import argparse
import sys

from engine.config import ConfigError
from stream.settings import StreamConfig, load_config


def add_common(p: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    p.add_argument("--config", default="stream", help="config name or path (default: stream)")
    if checkpoint:
        p.add_argument("--checkpoint", default=None, help="trained checkpoint (default: random weights + warning)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve /metrics and /health on this port (default: stream.transport.metrics_port; 0 = off)")
    p.add_argument("--metrics-host", default=None,
                   help="address /metrics and /health listen on (default: stream.transport.metrics_host, "
                        "127.0.0.1; 0.0.0.0 in a container, for probes and scrapes)")


def load(args: argparse.Namespace, command: str) -> StreamConfig | None:
    """The config with the command line's overrides, or None after printing why it cannot be used."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"menet {command}: {exc}", file=sys.stderr)
        return None
    t = cfg.stream.transport
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            print(f"menet {command}: --metrics-port must be 0..65535, got {args.metrics_port}", file=sys.stderr)
            return None
        t.metrics_port = args.metrics_port
    if args.metrics_host is not None:
        t.metrics_host = args.metrics_host
    r = cfg.stream.runtime
    if r.engine_dir == "auto" and hasattr(args, "checkpoint"):  # the engine and detector roles run stages
        from stream.engine_cache import EngineCacheError, resolve_engine_dir
        try:
            r.engine_dir, note = resolve_engine_dir(cfg, r.engine_dir, args.checkpoint, backend=r.backend,
                                                    device=r.device)
        except EngineCacheError as exc:
            print(f"menet {command}: {exc}", file=sys.stderr)
            return None
        print(f"menet {command}: {note}", file=sys.stderr)
    return cfg


def endpoint_or_fail(value: str | None, what: str, command: str) -> str | None:
    """A role's endpoint must be given (flag or config) and be tcp:// or ipc:// (other hosts connect)."""
    if not value:
        print(f"menet {command}: no {what} endpoint: pass it on the command line or set it in the config",
              file=sys.stderr)
        return None
    if not value.startswith(("tcp://", "ipc://")):
        print(f"menet {command}: {what} endpoint must be tcp://HOST:PORT or ipc://PATH, got {value!r}",
              file=sys.stderr)
        return None
    return value
