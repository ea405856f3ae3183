"""Supervisor: starts the online pipeline's processes, restarts crashed ones, stops cleanly.

Processes (multiprocessing, "spawn" start method: torch is not fork-safe):

* detector worker: binds the event PUB socket and connects to the window endpoint;
* engine worker: binds the snippet endpoint (PULL) and the window endpoint (PUSH);
* one grabber per ``--source``: connects to the snippet endpoint.

Before anything starts every source is opened once (:func:`probe_source`): a
source that cannot be opened is an error with a message and exit status 2, as
is a checkpoint whose config differs from the run config.

A worker that dies is restarted after a backoff that doubles from
``stream.restart_min_s`` to ``stream.restart_max_s`` (reset once it has run that
long). A file grabber is not restarted (it would resend the file): its stream is
ended with an EOS sent on its behalf and the run exits 1.

Stop: when every grabber has finished (files) or on SIGINT/SIGTERM, grabbers get
SIGTERM and flush (their last snippets and EOS), then the engine gets a ``stop``
message: it drains its queue, flushes each stream's last partial window and
passes ``stop`` to the detector, which flushes its mergers and publishes the last
events. Anything still running after ``stream.shutdown_timeout_s`` is killed.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import signal
import tempfile
import time
import os
from dataclasses import dataclass
from typing import Any, Callable

from engine.config import MENetConfig

from . import protocol as P
from .detector_worker import detector_main
from .engine_worker import engine_main
from .grabber import grabber_main
from .metrics import Metrics
from .sources import SourceError, probe_source, safe_uri, source_kind

log = logging.getLogger(__name__)

EXIT_OK, EXIT_WORKER_FAILED, EXIT_START = 0, 1, 2


class StartError(RuntimeError):
    """The pipeline cannot start (source, checkpoint, endpoint); the message says why."""


@dataclass
class Worker:
    name: str
    role: str  # grabber | engine | detector
    target: Callable[..., None]
    args: tuple
    restart: bool = True
    stream: str | None = None
    proc: Any = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    finished: bool = False
    failed: bool = False
    done: Any = None  # Event: a grabber has sent its EOS
    release: Any = None  # Event: the process may close its sockets and exit


@dataclass
class Endpoints:
    snippets: str
    windows: str
    events: str
    tmpdir: str | None = None


def resolve_endpoints(cfg: MENetConfig) -> Endpoints:
    s = cfg.stream
    tmpdir = None
    if s.snippet_endpoint is None or s.window_endpoint is None:
        tmpdir = tempfile.mkdtemp(prefix="menet-run-")
    snippets = s.snippet_endpoint or f"ipc://{tmpdir}/snippets"
    windows = s.window_endpoint or f"ipc://{tmpdir}/windows"
    return Endpoints(snippets, windows, s.event_endpoint, tmpdir)


class Supervisor:
    def __init__(self, cfg: MENetConfig, sources: list[tuple[str, str]], checkpoint: str | None = None,
                 log_level: int = logging.INFO) -> None:
        self.cfg = cfg
        self.sources = sources
        self.checkpoint = checkpoint
        self.log_level = log_level
        self.ctx = mp.get_context("spawn")
        self.stop_requested = False
        self.workers: list[Worker] = []
        self.metrics = Metrics("supervisor")
        self.endpoints: Endpoints | None = None
        self._zctx: Any = None
        self._push: Any = None
        self._transport: Any = None
        self.epoch = self.ctx.Value("i", 0)  # replay epoch shared with every worker (docs/streaming.md)
        self.state_dir: str | None = None

    # ------------------------------------------------------------ start

    def check(self) -> None:
        """Start checks: config usable online, checkpoint matches, every source opens."""
        if self.cfg.data.mode != "thumos":
            raise StartError("online detection needs sliding windows: data.mode must be 'thumos'")
        if not self.sources:
            raise StartError("no --source given")
        if self.checkpoint:
            from engine.checkpoint import CheckpointError, load_checkpoint
            try:
                load_checkpoint(self.checkpoint, expect=self.cfg)
            except CheckpointError as exc:
                raise StartError(str(exc)) from exc
        from .security import SecurityError, Transport, check_bind
        s = self.cfg.stream
        try:
            for ep in (s.event_endpoint, s.snippet_endpoint, s.window_endpoint):
                if ep:
                    check_bind(s, ep)
            if s.curve_server_secret_file:
                Transport(s, None)  # the key pair loads
            if s.curve_clients_dir and not os.path.isdir(s.curve_clients_dir):
                raise SecurityError(f"stream.curve_clients_dir {s.curve_clients_dir}: no such directory")
        except SecurityError as exc:
            raise StartError(str(exc)) from exc
        for sid, uri in self.sources:
            try:
                probe_source(uri, self.cfg.stream)
            except SourceError as exc:
                raise StartError(f"source {sid!r} cannot be opened: {exc}") from exc

    def _port(self, offset: int) -> int:
        p = self.cfg.stream.metrics_port
        return p + offset if p else 0

    def _build_workers(self) -> None:
        ep = self.endpoints
        assert ep is not None
        c = self.ctx
        engine_release = c.Event()
        self.workers = [
            Worker("detector", "detector", detector_main,
                   (self.cfg, self.checkpoint, ep.windows, ep.events, self._port(1), self.log_level,
                    self.epoch, self.state_dir)),
            Worker("engine", "engine", engine_main,
                   (self.cfg, self.checkpoint, ep.snippets, ep.windows, self._port(2), self.log_level,
                    engine_release, self.epoch), release=engine_release),
        ]
        for i, (sid, uri) in enumerate(self.sources):
            kind = source_kind(uri)
            live = kind in ("rtsp", "v4l2") or (kind == "synthetic" and "rate=max" not in uri)
            done, release = c.Event(), c.Event()
            self.workers.append(Worker(f"grabber:{sid}", "grabber", grabber_main,
                                       (self.cfg, sid, uri, ep.snippets, self._port(3 + i), self.log_level,
                                        done, release, self.epoch, self.state_dir),
                                       restart=live, stream=sid, done=done, release=release))

    def _start(self, w: Worker) -> None:
        w.proc = self.ctx.Process(target=w.target, args=w.args, name=w.name, daemon=False)
        w.proc.start()
        w.started_at = time.monotonic()
        self.metrics.up.labels(w.name).set(1)
        log.info("started %s (pid %d)", w.name, w.proc.pid)

    # ------------------------------------------------------------ control messages

    def _send(self, header: dict[str, Any]) -> None:
        import zmq
        if self._push is None:
            from .security import Transport
            self._zctx = zmq.Context()
            assert self.endpoints is not None
            self._transport = Transport(self.cfg.stream, self._zctx)
            self._push = self._transport.socket(zmq.PUSH, self.endpoints.snippets, bind=False,
                                                hwm=self.cfg.stream.queue_size, linger_ms=2000)
            self._push.setsockopt(zmq.SNDTIMEO, 2000)
        try:
            self._push.send_multipart(P.encode(header))
        except zmq.Again:
            log.warning("could not send %s to the engine (queue full or engine down)", header["type"])

    # ------------------------------------------------------------ main

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stop_requested:
            log.info("%s: stopping (flushing every stream's last window)", signal.Signals(signum).name)
        self.stop_requested = True

    def health(self) -> dict[str, Any]:
        alive = {w.name: bool(w.proc is not None and w.proc.is_alive()) for w in self.workers}
        core_ok = all(alive.get(n, False) for n in ("engine", "detector"))
        return {"workers": alive, "status": "ok" if core_ok else "degraded",
                "restarts": {w.name: w.restarts for w in self.workers if w.restarts}}

    def run(self) -> int:
        """Check, start, supervise, stop; returns the exit status."""
        self.check()
        self.endpoints = resolve_endpoints(self.cfg)
        self.state_dir = tempfile.mkdtemp(prefix="menet-state-")
        prev = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.metrics.set_health(self.health)
            self.metrics.serve(self._port(0))
            self._build_workers()
            log.info("snippets %s, windows %s, events %s (menet subscribe --endpoint %s)", self.endpoints.snippets,
                     self.endpoints.windows, self.endpoints.events, self.endpoints.events)
            for w in self.workers:
                self._start(w)
            failed = self._supervise()
            self._shutdown()
            return EXIT_WORKER_FAILED if failed else EXIT_OK
        finally:
            for s, h in prev.items():
                signal.signal(s, h)
            if self._push is not None:
                self._push.close(linger=0)
                self._transport.close()
                self._zctx.term()
            if self.state_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
            self.metrics.close()
            if self.endpoints and self.endpoints.tmpdir:
                shutil.rmtree(self.endpoints.tmpdir, ignore_errors=True)

    def _ended(self, stream: str | None) -> bool:
        return bool(self.state_dir and stream and os.path.exists(os.path.join(self.state_dir, "ended", stream)))

    def _request_replay(self, why: str) -> None:
        """A core worker lost its in-flight state: file streams not yet ended are sent again."""
        pending = [w.stream for w in self.workers if w.role == "grabber" and not w.restart and not w.failed
                   and not self._ended(w.stream)]
        with self.epoch.get_lock():
            self.epoch.value += 1
        for w in self.workers:
            if w.role == "grabber" and w.stream in pending and w.proc is not None:
                w.finished = False  # it sends its file again
        if pending:
            log.warning("%s: replaying file stream(s) %s from snippet 0 (epoch %d)", why, ", ".join(pending),
                        self.epoch.value)

    def _supervise(self) -> bool:
        failed = False
        s = self.cfg.stream
        all_done_at: float | None = None
        while not self.stop_requested:
            now = time.monotonic()
            for w in self.workers:
                if w.finished:
                    continue
                if w.proc is None:
                    if now >= w.next_start:
                        self._start(w)
                    continue
                if w.done is not None and w.done.is_set():
                    w.finished = True
                    log.info("%s finished", w.name)
                    continue
                if w.proc.is_alive():
                    continue
                code = w.proc.exitcode
                w.proc.join()
                w.proc = None
                self.metrics.up.labels(w.name).set(0)
                if w.role == "grabber" and code == 0:
                    w.finished = True
                    log.info("%s finished", w.name)
                    continue
                if w.role == "grabber" and not w.restart:
                    w.finished = w.failed = failed = True
                    log.error("%s exited with status %s; ending stream %s", w.name, code, w.stream)
                    self._send(P.make_header(P.EOS, 0, stream=w.stream, n_snippets=None, reason="grabber failed"))
                    continue
                if w.role in ("engine", "detector"):
                    self._request_replay(f"{w.name} died")
                if now - w.started_at > s.restart_max_s:
                    w.restarts = 0
                delay = min(s.restart_min_s * 2 ** w.restarts, s.restart_max_s)
                w.restarts += 1
                w.next_start = now + delay
                self.metrics.restarts.labels(w.name).inc()
                log.error("%s exited with status %s; restarting in %.1f s", w.name, code, delay)
            grabbers = [w for w in self.workers if w.role == "grabber"]
            for w in grabbers:  # a file grabber replaying after a restart is busy again
                if w.finished and w.done is not None and w.proc is not None and not w.done.is_set():
                    w.finished = False
            if grabbers and all(w.finished for w in grabbers):
                # wait (bounded) until the detector has published the end of every file stream, so a
                # core worker that dies meanwhile is still restarted and the streams replayed
                all_done_at = all_done_at or now
                files = [w.stream for w in grabbers if not w.restart and not w.failed]
                if all(self._ended(sid) for sid in files) or now - all_done_at > s.shutdown_timeout_s:
                    log.info("every source has ended")
                    break
            else:
                all_done_at = None
            time.sleep(0.1)
        return failed

    def _wait(self, workers: list[Worker], deadline: float) -> None:
        for w in workers:
            if w.proc is None:
                continue
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                log.warning("%s did not stop in time; killing it", w.name)
                w.proc.kill()
                w.proc.join(5)

    def _shutdown(self) -> None:
        """Grabbers flush (EOS), the engine drains and flushes, the detector publishes the rest.

        Each sender keeps its socket open until the next stage has finished (see
        :func:`stream.grabber.linger_until_released`), so nothing queued is lost."""
        s = self.cfg.stream
        deadline = time.monotonic() + s.shutdown_timeout_s
        grabbers = [w for w in self.workers if w.role == "grabber"]
        for w in grabbers:
            if w.proc is not None and w.proc.is_alive() and not w.done.is_set():
                w.proc.terminate()  # SIGTERM: flush the last snippets, send EOS, set done
        for w in grabbers:
            while w.proc is not None and w.proc.is_alive() and not w.done.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
        engine = next(w for w in self.workers if w.role == "engine")
        detector = next(w for w in self.workers if w.role == "detector")
        if engine.proc is not None and engine.proc.is_alive():
            self._send(P.make_header(P.STOP, 0, reason="supervisor stop"))
            # the detector exits once it has handled the engine's stop (and published the last events)
            while detector.proc is not None and detector.proc.is_alive() and engine.proc.is_alive() \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
        if detector.proc is not None and detector.proc.is_alive():
            if engine.proc is None or not engine.proc.is_alive():
                log.warning("engine not running at shutdown; stopping the detector directly")
            detector.proc.terminate()  # SIGTERM: flush its mergers and publish
        self._wait([detector], deadline)
        for w in self.workers:
            if w.release is not None:
                w.release.set()
        self._wait([engine] + grabbers, deadline + 5)
        for w in self.workers:
            self.metrics.up.labels(w.name).set(0)
        log.info("stopped")


def run_pipeline(cfg: MENetConfig, sources: list[tuple[str, str]], checkpoint: str | None = None,
                 log_level: int = logging.INFO) -> int:
    if not checkpoint:
        log.warning("no --checkpoint: running a RANDOMLY initialised detector (seed %d); events are meaningless "
                    "until you pass a trained checkpoint", cfg.train.seed)
    return Supervisor(cfg, sources, checkpoint, log_level).run()


__all__ = ["EXIT_OK", "EXIT_START", "EXIT_WORKER_FAILED", "Endpoints", "StartError", "Supervisor",
           "resolve_endpoints", "run_pipeline", "safe_uri"]
