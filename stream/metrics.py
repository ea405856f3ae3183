"""Prometheus metrics and a health check, one registry and one HTTP server per process.

``GET /metrics`` is the Prometheus text format, ``GET /health`` a small JSON
document (``{"role": ..., "status": "ok" | "degraded", ...}``, HTTP 200 when ok,
503 otherwise). The server binds 127.0.0.1 only; port 0 disables it.

Port layout for ``menet run`` with ``stream.transport.metrics_port: P`` (0 = off):
supervisor P, detector P+1, engine P+2, grabber i P+3+i.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """The metrics every MENet-stream process may update (unused ones stay at zero), all
    registered here, one way. Stage timings use ``Histogram.time()``:
    ``with metrics.stage_latency.labels("mfe").time(): ...``."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.started = time.time()
        self.last_activity = time.time()
        self.frames = Counter("menet_frames", "frames decoded", ["stream"], registry=r)
        self.frames_dropped = Counter("menet_frames_dropped", "frames dropped by the capture queue",
                                      ["stream"], registry=r)
        self.snippets = Counter("menet_snippets", "snippets sent (grabber) or processed (engine)",
                                ["stream"], registry=r)
        self.snippets_dropped = Counter("menet_snippets_dropped", "snippets dropped because downstream lags",
                                        ["stream"], registry=r)
        self.snippets_stale = Counter("menet_snippets_stale", "live snippets dropped by the engine as older than "
                                      "stream.engine.max_snippet_age_s (announced as gaps)", ["stream"], registry=r)
        self.gaps = Counter("menet_gaps", "gap messages", ["stream", "reason"], registry=r)
        self.windows = Counter("menet_windows", "windows sent (engine) or decoded (detector)", ["stream"],
                               registry=r)
        self.early_windows = Counter("menet_early_windows", "early (partial) windows before a live segment's first "
                                     "full one, decoded for provisional events only", ["stream"], registry=r)
        self.events = Counter("menet_events", "final events published", ["stream"], registry=r)
        self.event_updates = Counter("menet_event_updates", "lifecycle event messages published (protocol v2: "
                                     "provisional, open, retracted)", ["state"], registry=r)
        self.malformed = Counter("menet_malformed_messages", "messages dropped as malformed", registry=r)
        self.reconnects = Counter("menet_reconnects", "source reopen attempts", ["stream"], registry=r)
        self.restarts = Counter("menet_worker_restarts", "crashed workers restarted", ["worker"], registry=r)
        self.batch_size = Histogram("menet_batch_size", "snippets per MFE batch / windows per MREM batch",
                                    ["stage"], buckets=BATCH_BUCKETS, registry=r)
        self.stage_latency = Histogram("menet_stage_latency_seconds", "time spent per stage call",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.end_to_end = Histogram("menet_event_latency_seconds", "event publish clock - capture clock",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("menet_queue_depth", "items waiting in a queue", ["queue"], registry=r)
        self.up = Gauge("menet_worker_up", "1 when the worker process is alive", ["worker"], registry=r)
        self.stream_state = Gauge("menet_stream_live", "1 when the source delivers frames", ["stream"], registry=r)
        self.stale = Counter("menet_stale_messages", "messages dropped as stale: older replay epoch, replayed windows "
                             "already processed, file snippets before the replay", ["who"], registry=r)
        self.nonfinite = Counter("menet_nonfinite", "snippet features zeroed / windows dropped for NaN or inf",
                                 ["stage"], registry=r)
        self.decode_errors = Counter("menet_decode_errors", "files whose decoding stopped before the frame count the "
                                     "container reports (corrupted or truncated): the stream ends there", ["stream"],
                                     registry=r)
        self.control_requests = Counter("menet_control_requests", "control requests (menet sources) by op and result",
                                        ["op", "result"], registry=r)
        self._health: Callable[[], dict[str, Any]] | None = None
        self._server: ThreadingHTTPServer | None = None

    def touch(self) -> None:
        self.last_activity = time.time()

    def set_health(self, fn: Callable[[], dict[str, Any]]) -> None:
        """``fn()`` adds fields to /health; a field ``"status": "degraded"`` makes it 503."""
        self._health = fn

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "status": "ok", "uptime_s": round(time.time() - self.started, 3),
                               "idle_s": round(time.time() - self.last_activity, 3)}
        if self._health is not None:
            try:
                out.update(self._health())
            except Exception as exc:  # noqa: BLE001 - health must answer
                out.update(status="degraded", error=str(exc))
        return out

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the HTTP server in a daemon thread; returns the bound port (0: disabled)."""
        if port <= 0:
            return 0
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
                elif path in ("/health", "/healthz"):
                    h = metrics.health()
                    body, ctype = json.dumps(h).encode(), "application/json"
                    code = 200 if h.get("status") == "ok" else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /health\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            log.warning("%s: metrics port %s unavailable (%s); metrics disabled", self.role, port, exc)
            return 0
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=f"metrics-{self.role}", daemon=True).start()
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
