"""Supervisor: starts the online pipeline's processes, restarts crashed ones, stops cleanly.

Processes (multiprocessing, "spawn" start method: torch is not fork-safe):

* detector worker: binds the event PUB socket and connects to the window endpoint;
* engine worker: binds the snippet endpoint (PULL) and the window endpoint (PUSH);
* one grabber per ``--source``: connects to the snippet endpoint.

Before anything starts every source is opened once (:func:`probe_source`): a
source that cannot be opened is an error with a message and exit status 2, as
is a checkpoint whose config differs from the run config.

A worker that dies is restarted after a backoff that doubles from
``stream.supervisor.restart_min_s`` to ``stream.supervisor.restart_max_s`` (reset once it has run that
long). A file grabber is not restarted (it would resend the file): its stream is
ended with an EOS sent on its behalf and the run exits 1.

Stop: when every grabber has finished (files) or on SIGINT/SIGTERM, grabbers get
SIGTERM and flush (their last snippets and EOS), then the engine gets a ``stop``
message: it drains its queue, flushes each stream's last partial window and
passes ``stop`` to the detector, which flushes its mergers and publishes the last
events. A stage is killed only once it has made no progress (used no CPU, published
nothing) for ``stream.supervisor.shutdown_timeout_s``, or after ``stream.supervisor.shutdown_max_s``
in all (:mod:`stream.drain`): a detector working through a backlog finishes it.

Runtime sources (:mod:`stream.control`, ``menet sources``): a REP socket on
``stream.transport.control_endpoint`` takes ``add`` / ``remove`` / ``list`` requests between
two supervision steps. ``add`` opens the source once (in a thread, so a slow RTSP
open does not hold supervision up) and starts a grabber; ``remove`` stops the
grabber like a stop does (last snippets, EOS), is answered once the detector has
published the stream's end, and the grabber is never restarted. A source added
again with an id used before is a new *instance* (stamped by its grabber on every
message): the engine and detector start it from scratch and its event ids differ from
the old ones.

Processes share nothing but protocol messages: the supervisor publishes its state
(replay epoch, streams to replay, workers released, sources removed) as ``control``
messages its workers follow (:mod:`stream.worker`), and learns that a stream has ended
from the ``eos`` the detector publishes (it subscribes like any client).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .settings import StreamConfig

from . import protocol as P
from .control import ControlError, encode, make_reply, parse_request
from .detector_worker import detector_main
from .drain import DrainWatch
from .engine_worker import engine_main
from .grabber import grabber_main
from .metrics import Metrics
from .worker import SupervisorState, grabber_target, source_key
from .sources import SourceError, is_live_uri, probe_source, safe_uri, source_kind

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
    removing: bool = False  # removed at runtime (EOS reason "removed", no replay)
    live: bool = False
    uri: str = ""
    slot: int = 0  # grabber metrics port offset
    instance: int = 0  # how many times this stream id was added before (runtime add/remove)


@dataclass
class Endpoints:
    snippets: str
    windows: str
    events: str
    tmpdir: str | None = None
    control: str | None = None
    supervisor: str | None = None  # the supervisor's state for its workers (control PUB), ipc in tmpdir


def resolve_endpoints(cfg: StreamConfig) -> Endpoints:
    s = cfg.stream.transport
    tmpdir = tempfile.mkdtemp(prefix="menet-run-")  # mode 0700: only this user reaches its ipc sockets
    snippets = s.snippet_endpoint or f"ipc://{tmpdir}/snippets"
    windows = s.window_endpoint or f"ipc://{tmpdir}/windows"
    control = s.control_endpoint or f"ipc://{tmpdir}/control"
    return Endpoints(snippets, windows, s.event_endpoint, tmpdir, control, f"ipc://{tmpdir}/supervisor")


@dataclass
class _PendingAdd:
    """An ``add`` request whose source is being opened (probe) in a thread."""
    sid: str
    uri: str
    future: Any
    replace: Worker | None = None


@dataclass
class _PendingRemove:
    """A ``remove`` request waiting for the detector to publish the stream's end."""
    worker: Worker
    started: float
    eos_sent: bool = False
    resend: bool = False  # a core worker restarted: the grabber's EOS may be lost
    terminated: bool = False  # SIGTERM sent (the grabber did not act on the removal in time)
    notes: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, cfg: StreamConfig, sources: list[tuple[str, str]], checkpoint: str | None = None,
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
        # the run's state as the workers see it, published whole as `control` messages (docs/protocol.md)
        self.state = SupervisorState()
        self._state_pub: Any = None
        self._state_sent = 0.0
        self._eos_sub: Any = None  # follows the detector's published `eos`: which streams have ended
        self._ended_streams: set[tuple[str, int]] = set()  # (stream id, instance)
        self._heard = 0  # messages received from the detector: a stop counts them as its progress
        self._ctl: Any = None  # control REP socket (stream.control)
        self._pending: _PendingAdd | _PendingRemove | None = None  # the control request being served
        self._probe_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._retired: list[tuple[Worker, float]] = []  # removed grabbers released, waiting to exit
        self._slots: dict[str, int] = {}  # stream id -> grabber metrics port offset
        self._instances: dict[str, int] = {}  # stream id -> instance of its latest add

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
        s, sec = self.cfg.stream.transport, self.cfg.stream.security
        try:
            for ep in (s.event_endpoint, s.snippet_endpoint, s.window_endpoint, s.control_endpoint):
                if ep:
                    check_bind(sec, ep)
            if sec.curve_server_secret_file:
                Transport(sec, None)  # the key pair loads
            if sec.curve_clients_dir and not os.path.isdir(sec.curve_clients_dir):
                raise SecurityError(f"stream.security.curve_clients_dir {sec.curve_clients_dir}: no such directory")
        except SecurityError as exc:
            raise StartError(str(exc)) from exc
        from .control import ipc_in_use
        if s.control_endpoint and ipc_in_use(s.control_endpoint):
            raise StartError(f"stream.transport.control_endpoint {s.control_endpoint} is in use (another menet run?)")
        bad = []
        for sid, uri in self.sources:  # every source is tried, so one run reports all the bad ones
            try:
                probe_source(uri, self.cfg.stream.sources)
            except SourceError as exc:
                bad.append(f"source {sid!r} cannot be opened: {exc}")
        if bad:
            raise StartError("\n".join(bad))

    def _port(self, offset: int) -> int:
        p = self.cfg.stream.transport.metrics_port
        return p + offset if p else 0

    def _build_workers(self) -> None:
        ep = self.endpoints
        assert ep is not None
        self.workers = [
            Worker("detector", "detector", detector_main,
                   (self.cfg, self.checkpoint, ep.windows, ep.events, self._port(1), self.log_level,
                    ep.supervisor, 1)),  # 1: this supervisor's own subscription (it follows the eos)
            Worker("engine", "engine", engine_main,
                   (self.cfg, self.checkpoint, ep.snippets, ep.windows, self._port(2), self.log_level,
                    ep.supervisor)),
        ]
        for sid, uri in self.sources:
            self.workers.append(self._grabber(sid, uri))

    def _grabber(self, sid: str, uri: str) -> Worker:
        """A grabber worker for source ``sid`` (a new instance when the id was used before)."""
        ep = self.endpoints
        assert ep is not None
        slot = self._slots.setdefault(sid, len(self._slots))
        # the grabber stamps its instance on every message; the detector's event ids of a new instance are new
        instance = self._instances.get(sid, -1) + 1
        self._instances[sid] = instance
        return Worker(f"grabber:{sid}", "grabber", grabber_main,
                      (self.cfg, sid, uri, ep.snippets, self._port(3 + slot), self.log_level, ep.supervisor,
                       instance),
                      restart=is_live_uri(uri), live=is_live_uri(uri), stream=sid, uri=uri, slot=slot,
                      instance=instance)

    def _start(self, w: Worker) -> None:
        w.proc = self.ctx.Process(target=w.target, args=w.args, name=w.name, daemon=False)
        w.proc.start()
        w.started_at = time.monotonic()
        self.metrics.up.labels(w.name).set(1)
        log.info("started %s (pid %d)", w.name, w.proc.pid)

    # ------------------------------------------------------------ control messages

    def _zmq(self) -> None:
        """The supervisor's ZeroMQ context and transport (CURVE, bind checks), created once."""
        if self._zctx is None:
            import zmq

            from .security import Transport
            self._zctx = zmq.Context()
            self._transport = Transport(self.cfg.stream.security, self._zctx)

    def _send(self, header: dict[str, Any]) -> None:
        import zmq
        if self._push is None:
            self._zmq()
            assert self.endpoints is not None
            self._push = self._transport.socket(zmq.PUSH, self.endpoints.snippets, bind=False,
                                                hwm=self.cfg.stream.transport.queue_size, linger_ms=2000)
            self._push.setsockopt(zmq.SNDTIMEO, 2000)
        try:
            self._push.send_multipart(P.encode(header))
        except zmq.Again:
            log.warning("could not send %s to the engine (queue full or engine down)", header["type"])

    # ------------------------------------------------------------ runtime sources (stream.control)

    def _open_control(self) -> None:
        import zmq
        assert self.endpoints is not None and self.endpoints.control
        self._zmq()
        from .security import SecurityError
        try:
            self._ctl = self._transport.socket(zmq.REP, self.endpoints.control, bind=True, hwm=16, linger_ms=0)
        except (zmq.ZMQError, SecurityError) as exc:
            raise StartError(f"control endpoint {self.endpoints.control}: {exc}") from exc

    def _reply(self, reply: dict[str, Any], op: str, result: str) -> None:
        import zmq
        self.metrics.control_requests.labels(op, result).inc()
        try:
            self._ctl.send(encode(reply), zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client went away: nothing to tell
            log.warning("control: reply not sent (%s)", exc)

    def _control_step(self, timeout_s: float) -> None:
        """Serve the control socket for up to ``timeout_s`` (one request at a time: REP)."""
        import zmq
        if self._ctl is None:
            time.sleep(timeout_s)
            return
        if self._pending is not None:
            try:
                done = self._poll_pending()
            except Exception as exc:  # noqa: BLE001 - a control request must never take the supervisor down
                log.exception("control: request failed")
                op = "remove" if isinstance(self._pending, _PendingRemove) else "add"
                self._pending = None
                self._reply(make_reply(False, f"internal error: {type(exc).__name__}: {exc}",
                                       sources=self._sources()), op, "error")
                return
            if not done:
                time.sleep(timeout_s)
            return
        if not self._ctl.poll(int(timeout_s * 1000)):
            return
        try:
            frames = self._ctl.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        op = "invalid"
        try:
            req = parse_request(frames)
            op = req["op"]
            reply = self._handle_request(req)
        except ControlError as exc:
            log.warning("control: %s request refused: %s", op, exc)
            self._reply(make_reply(False, str(exc), sources=self._sources()), op, "refused")
            return
        except Exception as exc:  # noqa: BLE001
            log.exception("control: %s request failed", op)
            self._reply(make_reply(False, f"internal error: {type(exc).__name__}: {exc}", sources=self._sources()),
                        op, "error")
            return
        if reply is not None:
            self._reply(reply, op, "ok")

    def _sources(self) -> list[dict[str, Any]]:
        out = []
        for w in self.workers:
            if w.role != "grabber":
                continue
            if w.removing:
                state = "removing"
            elif w.failed:
                state = "failed"
            elif w.finished or self._ended(w):  # _ended reads the detector's latest eos messages first
                state = "ended"
            elif w.proc is None:
                state = "restarting"
            else:
                state = "running"
            out.append({"id": w.stream, "uri": safe_uri(w.uri), "kind": source_kind(w.uri), "live": w.live,
                        "state": state, "restarts": w.restarts, "instance": w.instance})
        return out

    def _grabber_of(self, sid: str | None) -> Worker | None:
        return next((w for w in self.workers if w.role == "grabber" and w.stream == sid), None)

    def _handle_request(self, req: dict[str, Any]) -> dict[str, Any] | None:
        """The reply, or None when the request goes on in the background (``self._pending``)."""
        op, sid, uri = req["op"], req["id"], req["uri"]
        if op == "list":
            return make_reply(True, message=f"{len(self._sources())} source(s)", sources=self._sources())
        if self.stop_requested:
            raise ControlError("menet run is stopping")
        w = self._grabber_of(sid)
        if op == "add":
            if w is not None and not (w.finished or w.failed):
                raise ControlError(f"duplicate id: source {sid!r} is running ({safe_uri(w.uri)}); remove it first "
                                   "or choose another id")
            if w is not None and not self._ended(w):
                raise ControlError(f"source {sid!r} has ended but its end is not published yet; retry in a moment")
            if self._probe_pool is None:
                self._probe_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe")
            log.info("control: adding source %s = %s", sid, safe_uri(uri))
            self._pending = _PendingAdd(sid, uri, self._probe_pool.submit(probe_source, uri, self.cfg.stream.sources), w)
            return None
        # remove
        if w is None:
            known = ", ".join(x.stream or "" for x in self.workers if x.role == "grabber") or "none"
            raise ControlError(f"unknown source id {sid!r} (sources: {known})")
        log.info("control: removing source %s (%s)", sid, safe_uri(w.uri))
        w.removing = True
        w.restart = False  # never restarted again
        # the grabber follows the state: it stops (last snippets, EOS of reason "removed") and lingers until
        # released; SIGTERM follows if it has not ended its stream soon (see _poll_pending)
        self._set_state(removed=self.state.removed | {source_key(sid, w.instance)})
        self._pending = _PendingRemove(w, time.monotonic())
        return None

    def _poll_pending(self) -> bool:
        """Progress the pending request; True once it has been answered."""
        p = self._pending
        if isinstance(p, _PendingAdd):
            if not p.future.done():
                return False
            self._pending = None
            try:
                p.future.result()
            except SourceError as exc:
                log.error("control: source %s cannot be opened: %s", p.sid, exc)
                self._reply(make_reply(False, f"source {p.sid!r} cannot be opened: {exc}", sources=self._sources()),
                            "add", "refused")
                return True
            if self.stop_requested:
                self._reply(make_reply(False, "menet run is stopping"), "add", "refused")
                return True
            if p.replace is not None:  # the same id, ended: its old grabber goes, its end marker too
                self._retire(p.replace)
            w = self._grabber(p.sid, p.uri)
            self.workers.append(w)
            self._start(w)
            what = f"instance {w.instance} of " if w.instance else ""
            self._reply(make_reply(True, message=f"added {what}{p.sid} ({safe_uri(p.uri)})", sources=self._sources(),
                                   id=p.sid, instance=w.instance), "add", "ok")
            return True
        assert isinstance(p, _PendingRemove)
        w = p.worker
        sid = w.stream
        timeout = self.cfg.stream.supervisor.shutdown_timeout_s
        confirmed = self._ended(w)
        if not confirmed:
            alive = w.proc is not None and w.proc.is_alive()
            eos = P.make_header(P.EOS, 0, stream=sid, n_snippets=None, reason="removed")
            if w.instance:
                eos["instance"] = w.instance
            if alive and not p.terminated and time.monotonic() - p.started > 3.0:
                w.proc.terminate()  # it did not act on the state (stuck?): SIGTERM ends it like a stop
                p.terminated = True
            if not alive and not p.eos_sent and not w.failed:
                # the grabber is gone (it died, was never up, or is waiting for a restart): end the stream for it
                self._send(eos)
                p.eos_sent = True
                p.notes.append("EOS sent by the supervisor")
            elif p.resend and (not alive or time.monotonic() - p.started > 5.0):
                # a core worker restarted meanwhile: the grabber's EOS may be lost with it
                self._send(eos)
                p.resend = False
                p.notes.append("EOS sent again after a worker restart")
            if time.monotonic() - p.started < timeout:
                return False
        self._pending = None
        self._retire(w)
        if confirmed:
            msg = f"removed {sid}: its last window, events and end of stream were published"
            log.info("control: %s", msg)
        else:
            msg = f"removed {sid}: its end was not confirmed within {timeout:g} s"
            log.warning("control: %s", msg)
        if p.notes:
            msg += f" ({'; '.join(p.notes)})"
        self._reply(make_reply(True, message=msg, sources=self._sources()), "remove", "ok")
        return True

    def _retire(self, w: Worker) -> None:
        """Forget grabber ``w`` (removed, or replaced by a new instance): release it."""
        self._release(w)
        if w in self.workers:
            self.workers.remove(w)
        self.metrics.up.labels(w.name).set(0)
        if w.proc is not None:
            self._retired.append((w, time.monotonic()))

    def _reap_retired(self) -> None:
        keep = []
        for w, since in self._retired:
            if w.proc.is_alive():
                if time.monotonic() - since > 10.0:
                    log.warning("%s did not exit after its removal; killing it", w.name)
                    w.proc.kill()
                keep.append((w, since))
            else:
                w.proc.join()
        self._retired = keep

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
        prev = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.metrics.set_health(self.health)
            self.metrics.serve(self._port(0), self.cfg.stream.transport.metrics_host)
            self._open_control()
            self._open_state()
            self._build_workers()
            log.info("snippets %s, windows %s, events %s, control %s (menet subscribe --endpoint %s; "
                     "menet sources --control %s list|add|remove)", self.endpoints.snippets, self.endpoints.windows,
                     self.endpoints.events, self.endpoints.control, self.endpoints.events, self.endpoints.control)
            for w in self.workers:
                self._start(w)
            failed = self._supervise()
            self._shutdown()
            return EXIT_WORKER_FAILED if failed else EXIT_OK
        finally:
            for s, h in prev.items():
                signal.signal(s, h)
            if self._probe_pool is not None:
                self._probe_pool.shutdown(wait=False, cancel_futures=True)
            if self._ctl is not None:
                self._ctl.close(linger=0)
            for sock in (self._push, self._state_pub, self._eos_sub):
                if sock is not None:
                    sock.close(linger=0)
            if self._zctx is not None:
                self._transport.close()
                self._zctx.term()
            self.metrics.close()
            if self.endpoints and self.endpoints.tmpdir:
                shutil.rmtree(self.endpoints.tmpdir, ignore_errors=True)

    # ------------------------------------------------------------ state shared by protocol messages

    def _open_state(self) -> None:
        """The control PUB the workers follow, and a SUB on the detector's events for the ``eos``."""
        import zmq
        assert self.endpoints is not None and self.endpoints.supervisor
        self._zmq()
        self._state_pub = self._transport.socket(zmq.PUB, self.endpoints.supervisor, bind=True, hwm=16, linger_ms=0)
        # every message of the detector: events are small, and the eos of every stream is what matters here
        self._eos_sub = self._transport.socket(zmq.SUB, self.endpoints.events, bind=False, hwm=100_000, linger_ms=0,
                                               options={zmq.SUBSCRIBE: b""})

    def _set_state(self, **changes: Any) -> None:
        self.state = dataclasses.replace(self.state, **changes)
        self._publish_state()

    def _publish_state(self) -> None:
        """Send the whole state (at once after a change, else a few times a second for late joiners)."""
        import zmq
        if self._state_pub is None:
            return
        try:
            self._state_pub.send_multipart(P.encode(self.state.to_header()), zmq.NOBLOCK)
        except zmq.Again:
            pass
        self._state_sent = time.monotonic()

    def _follow_detector(self) -> None:
        """Record every stream end the detector has published (``eos`` with the source instance)."""
        import zmq
        if self._eos_sub is None:
            return
        while True:
            try:
                frames = self._eos_sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._heard += 1
            try:
                msg = P.decode(frames, with_topic=True)
            except P.ProtocolError as exc:
                self.metrics.malformed.inc()
                log.warning("supervisor: malformed message from the detector dropped: %s", exc)
                continue
            if msg.type == P.EOS:
                self._ended_streams.add((msg.header["stream"], msg.header.get("instance", 0)))

    def _release(self, w: Worker) -> None:
        """Let worker ``w`` close its sockets and exit (it lingers until then)."""
        target = "engine" if w.role == "engine" else grabber_target(w.stream or "", w.instance)
        if w.role in ("engine", "grabber") and target not in self.state.released:
            self._set_state(released=self.state.released | {target})

    def _ended(self, w: Worker) -> bool:
        """The detector has published the end of grabber ``w``'s stream (an ``eos`` naming w's instance)."""
        self._follow_detector()
        return (w.stream or "", w.instance) in self._ended_streams

    def _request_replay(self, why: str) -> None:
        """A core worker lost its in-flight state: file streams not yet ended are sent again."""
        pending = [w.stream for w in self.workers if w.role == "grabber" and not w.restart and not w.failed
                   and not w.removing and not self._ended(w)]
        if isinstance(self._pending, _PendingRemove):
            self._pending.resend = True  # the removed stream's EOS may have been lost with the worker
        self._set_state(epoch=self.state.epoch + 1, replay=frozenset(s for s in pending if s))
        for w in self.workers:
            if w.role == "grabber" and w.stream in pending and w.proc is not None:
                w.finished = False  # it sends its file again
        if pending:
            log.warning("%s: replaying file stream(s) %s from snippet 0 (epoch %d)", why, ", ".join(pending),
                        self.state.epoch)

    def _supervise(self) -> bool:
        failed = False
        s = self.cfg.stream.supervisor
        all_done: DrainWatch | None = None  # set once every grabber has finished
        while not self.stop_requested:
            now = time.monotonic()
            self._follow_detector()
            for w in self.workers:
                if w.finished or w.removing:  # a source being removed is followed by its _PendingRemove
                    continue
                if w.proc is None:
                    if now >= w.next_start:
                        self._start(w)
                    continue
                if w.role == "grabber" and not w.finished and self._ended(w):
                    w.finished = True  # its end is published (it lingers until released)
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
                    # published now, before the new process starts: its first control message says it is a
                    # restart (a restarted detector lets its subscribers reconnect before it publishes)
                    if w.name not in self.state.restarted:
                        self._set_state(restarted=self.state.restarted | {w.name})
                    self._request_replay(f"{w.name} died")
                if now - w.started_at > s.restart_max_s:
                    w.restarts = 0
                delay = min(s.restart_min_s * 2 ** w.restarts, s.restart_max_s)
                w.restarts += 1
                w.next_start = now + delay
                self.metrics.restarts.labels(w.name).inc()
                log.error("%s exited with status %s; restarting in %.1f s", w.name, code, delay)
            grabbers = [w for w in self.workers if w.role == "grabber"]
            # a run whose sources were all removed keeps running: it waits for `menet sources add`
            if grabbers and all(w.finished and not w.removing for w in grabbers):
                # wait (bounded) until the detector has published the end of every file stream, so a
                # core worker that dies meanwhile is still restarted and the streams replayed
                all_done = all_done or self._drain_watch()
                files = [w for w in grabbers if not w.restart and not w.failed]
                if all(self._ended(w) for w in files):
                    log.info("every source has ended")
                    break
                if self._drain_expired(all_done, [w for w in self.workers if w.role != "grabber"]):
                    log.warning("every source has finished, but the detector has not published the end of "
                                "every file stream: %s; stopping", all_done.why())
                    break
            else:
                all_done = None
            self._reap_retired()
            if time.monotonic() - self._state_sent > 0.2:
                self._publish_state()
            self._control_step(0.1)
        return failed

    def _drain_watch(self) -> DrainWatch:
        s = self.cfg.stream.supervisor
        watch = DrainWatch(s.shutdown_timeout_s, s.shutdown_max_s)
        watch.observe(self._heard)
        return watch

    def _drain_expired(self, watch: DrainWatch, workers: list[Worker]) -> bool:
        """Whether to stop waiting for ``workers``: no progress (CPU time, a message from the detector)
        for shutdown_timeout_s, or shutdown_max_s in all."""
        self._follow_detector()
        watch.observe(self._heard)
        return watch.expired(w.proc.pid for w in workers if w.proc is not None and w.proc.is_alive())

    def _alive(self, workers: list[Worker]) -> bool:
        return any(w.proc is not None and w.proc.is_alive() for w in workers)

    def _wait(self, workers: list[Worker], watch: DrainWatch) -> None:
        """Wait for ``workers`` to exit (the state keeps going out: workers wait for their release in it);
        kill those still running once ``watch`` expires."""
        while self._alive(workers) and not self._drain_expired(watch, workers):
            self._publish_state()
            time.sleep(0.05)
        for w in workers:
            if w.proc is not None and w.proc.is_alive():
                log.warning("%s did not stop: %s; killing it", w.name, watch.why())
                w.proc.kill()
                w.proc.join(5)

    def _shutdown(self) -> None:
        """Grabbers flush (EOS), the engine drains and flushes, the detector publishes the rest.

        Each sender keeps its socket open until the next stage has finished (see
        :meth:`stream.worker.WorkerShell.linger_until_released`), so nothing queued is lost."""
        watch = self._drain_watch()
        grabbers = [w for w in self.workers if w.role == "grabber"]
        for w in grabbers:
            if w.proc is not None and w.proc.is_alive() and not self._ended(w):
                w.proc.terminate()  # SIGTERM: flush the last snippets, send EOS
        engine = next(w for w in self.workers if w.role == "engine")
        detector = next(w for w in self.workers if w.role == "detector")
        # the whole pipeline's progress counts: a grabber's EOS waits behind the engine's and detector's backlog
        pipeline = grabbers + [engine, detector]
        for w in grabbers:
            while w.proc is not None and w.proc.is_alive() and not self._ended(w) \
                    and not self._drain_expired(watch, pipeline):
                self._publish_state()
                time.sleep(0.05)
        if engine.proc is not None and engine.proc.is_alive():
            self._send(P.make_header(P.STOP, 0, reason="supervisor stop"))
            # the detector exits once it has handled the engine's stop (and published the last events)
            while detector.proc is not None and detector.proc.is_alive() and engine.proc.is_alive() \
                    and not self._drain_expired(watch, [engine, detector]):
                time.sleep(0.05)
        if detector.proc is not None and detector.proc.is_alive():
            if engine.proc is None or not engine.proc.is_alive():
                log.warning("engine not running at shutdown; stopping the detector directly")
            detector.proc.terminate()  # SIGTERM: flush its mergers and publish
        self._wait([detector], watch)
        for w in self.workers:
            self._release(w)
        # released, they only close their sockets: a fresh wait
        idle = self.cfg.stream.supervisor.shutdown_timeout_s
        rest = DrainWatch(idle, idle + 5)
        self._wait([engine] + grabbers + [w for w, _ in self._retired], rest)
        self._retired.clear()
        for w in self.workers:
            self.metrics.up.labels(w.name).set(0)
        if self._pending is not None:
            if isinstance(self._pending, _PendingRemove):
                self._reply(make_reply(True, message=f"removed {self._pending.worker.stream}: the run stopped "
                                                     "meanwhile (every stream was ended)"), "remove", "ok")
            else:
                self._reply(make_reply(False, "menet run is stopping"), "add", "refused")
            self._pending = None
        log.info("stopped")


def run_pipeline(cfg: StreamConfig, sources: list[tuple[str, str]], checkpoint: str | None = None,
                 log_level: int = logging.INFO) -> int:
    if not checkpoint:
        log.warning("no --checkpoint: running a RANDOMLY initialised detector (seed %d); events are meaningless "
                    "until you pass a trained checkpoint", cfg.train.seed)
    return Supervisor(cfg, sources, checkpoint, log_level).run()


__all__ = ["EXIT_OK", "EXIT_START", "EXIT_WORKER_FAILED", "Endpoints", "StartError", "Supervisor",
           "resolve_endpoints", "run_pipeline", "safe_uri"]
