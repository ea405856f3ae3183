"""The shell every worker process runs in: logging, signals, sockets, the supervisor's
state, linger, the receive path.

The grabber, engine and detector entry points (``grabber_main``, ``engine_main``,
``detector_main``) each open a :class:`WorkerShell` and keep only their own loop.
Processes share nothing but protocol messages (docs/protocol.md):

- the supervisor publishes its state as ``control`` messages (replay epoch, streams to
  replay, workers released, sources removed) on an ipc PUB socket; each worker follows
  them with a :class:`ControlFollower`. The state is sent whole a few times a second, so
  a worker that (re)connects late still sees it, and nothing depends on one message;
- the supervisor learns that a stream has ended from the ``eos`` the detector publishes.
"""
from __future__ import annotations

import faulthandler
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import protocol as P
from .metrics import Metrics
from .security import Transport
from .settings import StreamConfig

log = logging.getLogger(__name__)


def install_stop_signals(stop: threading.Event) -> None:
    """Workers ignore SIGINT (the supervisor coordinates shutdown) and stop on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())


def setup_logging(level: int) -> None:
    """Worker logging; ``kill -USR1 <pid>`` dumps every thread's stack to stderr."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")


def grabber_target(stream: str, instance: int) -> str:
    """How the supervisor names a grabber in ``released``; ``ID#INSTANCE`` names a source in ``removed``."""
    return f"grabber:{source_key(stream, instance)}"


def source_key(stream: str, instance: int) -> str:
    return f"{stream}#{instance}"


@dataclass(frozen=True)
class SupervisorState:
    """The latest ``control`` message (all empty before the first one, or without a supervisor)."""

    epoch: int = 0
    replay: frozenset[str] = field(default_factory=frozenset)
    released: frozenset[str] = field(default_factory=frozenset)
    removed: frozenset[str] = field(default_factory=frozenset)
    # core workers ("engine", "detector") the supervisor has restarted at least once: a restarted
    # detector gives its subscribers time to reconnect before it publishes (stream.detector.resubscribe_s)
    restarted: frozenset[str] = field(default_factory=frozenset)
    received: bool = False

    @classmethod
    def from_header(cls, h: dict[str, Any]) -> "SupervisorState":
        return cls(h["epoch"], frozenset(h["replay"]), frozenset(h["released"]), frozenset(h["removed"]),
                   frozenset(h.get("restarted", ())), received=True)

    def to_header(self) -> dict[str, Any]:
        return P.make_header(P.CONTROL, 0, epoch=self.epoch, replay=sorted(self.replay),
                             released=sorted(self.released), removed=sorted(self.removed),
                             restarted=sorted(self.restarted))


class ControlFollower:
    """Keeps :attr:`state` up to date from the supervisor's ``control`` PUB (a SUB socket owned by
    a daemon thread). Without an endpoint (a worker run on its own) the state stays empty."""

    def __init__(self, ctx: Any, endpoint: str | None, metrics: Metrics | None = None) -> None:
        self.state = SupervisorState()
        self._got = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if endpoint is not None:
            self._thread = threading.Thread(target=self._run, args=(ctx, endpoint, metrics), name="control",
                                            daemon=True)
            self._thread.start()

    def _run(self, ctx: Any, endpoint: str, metrics: Metrics | None) -> None:
        import zmq

        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 16)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                frames = sock.recv_multipart()
                try:
                    msg = P.decode(frames)
                except P.ProtocolError as exc:
                    if metrics is not None:
                        metrics.malformed.inc()
                    log.warning("control: malformed message dropped: %s", exc)
                    continue
                if msg.type != P.CONTROL:
                    log.warning("control: unexpected %s message dropped", msg.type)
                    continue
                self.state = SupervisorState.from_header(msg.header)
                self._got.set()
        finally:
            sock.close(0)

    def wait_first(self, timeout_s: float) -> bool:
        """Wait for the supervisor's first state (True at once without a supervisor)."""
        return self._thread is None or self._got.wait(timeout_s)

    def wait_until(self, predicate: Callable[[SupervisorState], bool], timeout_s: float,
                   interrupt: Callable[[], bool] = lambda: False) -> bool:
        """Wait (polling) until ``predicate(state)``, ``interrupt()`` or the timeout; returns the predicate."""
        deadline = time.monotonic() + timeout_s
        while True:
            if predicate(self.state):
                return True
            if interrupt() or time.monotonic() >= deadline:
                return predicate(self.state)
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)


class WorkerShell:
    """One worker process's common parts: logging, SIGTERM -> :attr:`stop`, torch threads, metrics
    (``/metrics``, ``/health``), a ZeroMQ context with the run's security, the supervisor's state."""

    def __init__(self, role: str, cfg: StreamConfig, log_level: int, control_endpoint: str | None,
                 metrics_port: int = 0, torch_threads: bool = True) -> None:
        import zmq

        setup_logging(log_level)
        self.stop = threading.Event()
        install_stop_signals(self.stop)
        if torch_threads and cfg.stream.runtime.threads:
            import torch
            torch.set_num_threads(cfg.stream.runtime.threads)
        self.cfg = cfg
        self.metrics = Metrics(role)
        self.metrics_port = metrics_port
        self.ctx = zmq.Context()
        self.transport = Transport(cfg.stream.security, self.ctx)
        self.control = ControlFollower(self.ctx, control_endpoint, self.metrics)
        self._sockets: list[Any] = []

    def socket(self, kind: int, endpoint: str, *, bind: bool, hwm: int | None = None, linger_ms: int = 2000,
               options: dict[int, Any] | None = None) -> Any:
        s = self.transport.socket(kind, endpoint, bind=bind, hwm=hwm or self.cfg.stream.transport.queue_size,
                                  linger_ms=linger_ms, options=options)
        self._sockets.append(s)
        return s

    def serve_metrics(self, health: Callable[[], dict[str, Any]]) -> None:
        self.metrics.set_health(health)
        self.metrics.serve(self.metrics_port, self.cfg.stream.transport.metrics_host)

    def linger_until_released(self, target: str, timeout_s: float,
                              interrupt: Callable[[], bool] = lambda: False) -> bool:
        """Keep the sockets open until the supervisor releases ``target``.

        ZeroMQ does not guarantee that messages still queued at the receiver's end are
        delivered once the sender disconnects (a full receive pipe loses the rest), so a
        sender that has finished waits until the supervisor says the downstream stage has
        confirmed the end (``released`` in its state) before it closes. Without a
        supervisor it waits 2 s at most."""
        if self.control._thread is None:
            time.sleep(min(timeout_s, 2.0))
            return False
        return self.control.wait_until(lambda s: target in s.released, timeout_s, interrupt)

    def close(self) -> None:
        self.control.close()
        for s in self._sockets:
            s.close()
        self.transport.close()
        self.ctx.term()
        self.metrics.close()


def receive_valid(sock: Any, metrics: Metrics, who: str) -> tuple[P.Message, float] | None:
    """The next valid message on ``sock`` and its arrival time, or None when none is waiting.

    Every received message is validated; a malformed one is counted (``malformed``
    metric), logged and dropped, and the next one is tried, so a worker never dies of one
    bad message.
    """
    import zmq

    while True:
        try:
            frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        t_in = time.time()
        metrics.touch()
        try:
            return P.decode(frames), t_in
        except P.ProtocolError as exc:
            metrics.malformed.inc()
            logging.getLogger(f"stream.{who}").warning("%s: malformed message dropped: %s", who, exc)
