"""Each role of the pipeline as its own service, for deployments across machines.

``menet run`` keeps the one-box supervisor. A fleet runs the roles apart
(docs/deployment.md):

- ``menet engine``: one engine worker; binds the snippet endpoint (grabbers connect) and the
  window endpoint (its detector connects);
- ``menet detector``: one detector worker; connects to its engine's window endpoint, binds the
  event endpoint (subscribers connect). Engine and detector come in pairs;
- ``menet grabber``: one grabber process per source of a camera group, each connected to the
  engine that serves its stream (:func:`engine_for`), restarted with backoff when a live one
  dies.

The orchestrator (Kubernetes, systemd) restarts a role that exits; nothing here manages other
hosts. Per-stream window state lives in exactly one engine/detector pair, because a stream's
snippets all go to one engine: :func:`engine_for` is a pure function of the stream id and the
fleet's engine list, so every grabber host computes the same assignment.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .drain import DrainWatch
from .settings import StreamConfig

log = logging.getLogger(__name__)


def engine_for(stream_id: str, engines: list[str], shards: dict[str, int] | None = None) -> int:
    """Index of the engine in ``engines`` that serves ``stream_id``.

    ``shards[stream_id]`` when given; otherwise rendezvous (highest-random-weight) hashing of the
    stream id against each engine's endpoint: stable across hosts and runs, and adding an engine
    moves only the streams the new engine wins (about 1/N of them), none between old engines."""
    if not engines:
        raise ValueError("no engine endpoints (stream.transport.engines or --engine)")
    shards = shards or {}
    if stream_id in shards:
        index = shards[stream_id]
        if not 0 <= index < len(engines):
            raise ValueError(f"stream.transport.shards.{stream_id}: {index} is not an engine index "
                             f"(0..{len(engines) - 1})")
        return index

    def weight(endpoint: str) -> bytes:
        return hashlib.sha256(f"{endpoint}\x00{stream_id}".encode()).digest()

    return max(range(len(engines)), key=lambda i: weight(engines[i]))


@dataclass
class _Child:
    stream_id: str
    uri: str
    endpoint: str
    metrics_port: int
    live: bool
    proc: Any = None
    restarts: int = 0
    started_at: float = 0.0
    due: float = 0.0  # monotonic time of the next (re)start
    done: bool = False
    codes: list[int] = field(default_factory=list)


def run_grabbers(cfg: StreamConfig, sources: list[tuple[str, str]], engines: list[str],
                 metrics_port: int = 0, log_level: int = logging.INFO) -> int:
    """``menet grabber``: one grabber process per source, each sending to ``engines[engine_for(id)]``.

    A live source's process that exits is restarted after a backoff doubling from
    ``stream.supervisor.restart_min_s`` to ``restart_max_s``; a file source's is not (it would
    send the file again). Returns when every file source has ended, or on SIGINT/SIGTERM (the
    children get SIGTERM and end their streams). Exit status: 0, or 1 when a file source failed."""
    from .grabber import grabber_main
    from .sources import is_live_uri

    shards = cfg.stream.transport.shards
    children = [_Child(sid, uri, engines[engine_for(sid, engines, shards)],
                       metrics_port + i if metrics_port else 0, is_live_uri(uri))
                for i, (sid, uri) in enumerate(sources)]
    for c in children:
        log.info("grabber %s -> %s", c.stream_id, c.endpoint)
    ctx = mp.get_context("spawn")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    sup = cfg.stream.supervisor
    failed = False
    while not stop.is_set():
        now = time.monotonic()
        for c in children:
            if c.done:
                continue
            if c.proc is None and now >= c.due:
                c.proc = ctx.Process(target=grabber_main, name=f"grabber:{c.stream_id}",
                                     args=(cfg, c.stream_id, c.uri, c.endpoint, c.metrics_port, log_level, None, 0))
                c.proc.start()
                c.started_at = now
                log.info("started grabber:%s (pid %d)", c.stream_id, c.proc.pid)
            elif c.proc is not None and not c.proc.is_alive():
                code = c.proc.exitcode
                c.codes.append(code)
                c.proc = None
                if not c.live:
                    c.done = True
                    failed |= code != 0
                    log.log(logging.INFO if code == 0 else logging.ERROR, "grabber:%s (file) ended, status %s",
                            c.stream_id, code)
                    continue
                if now - c.started_at > sup.restart_max_s:
                    c.restarts = 0
                delay = min(sup.restart_min_s * 2 ** c.restarts, sup.restart_max_s)
                c.restarts += 1
                c.due = now + delay
                log.error("grabber:%s exited with status %s; restarting in %.1f s", c.stream_id, code, delay)
        if all(c.done for c in children):
            break
        stop.wait(0.2)
    for c in children:
        if c.proc is not None and c.proc.is_alive():
            c.proc.terminate()  # SIGTERM: the grabber ends its stream (EOS) and exits
    # a grabber flushing into a busy engine is waited for while it works (stream.drain)
    watch = DrainWatch(sup.shutdown_timeout_s, sup.shutdown_max_s)
    running = [c for c in children if c.proc is not None]
    while any(c.proc.is_alive() for c in running) and not watch.expired(c.proc.pid for c in running):
        time.sleep(0.05)
    for c in running:
        if c.proc.is_alive():
            log.error("grabber:%s did not stop: %s; killing it", c.stream_id, watch.why())
            c.proc.kill()
        c.proc.join(5)
    return 1 if failed else 0


__all__ = ["engine_for", "run_grabbers"]
