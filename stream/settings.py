"""The online pipeline's settings: the ``stream:`` section of a config, in sections.

The network's config (``engine.config.MENetConfig``) knows nothing of them:
:class:`StreamConfig` extends it with one ``stream`` field, and every command of the
CLI loads configs with :func:`load_config` from here. The window layout is not a stream
setting: ``data.hop`` decides it offline and online alike.

Every key is described in docs/streaming.md ("Settings").
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal
from urllib.parse import urlsplit

from engine.config import MENetConfig

if TYPE_CHECKING:
    from engine.runtime.split import RuntimeChoice
from engine.config import load_config as _load_engine_config


@dataclass
class TransportSettings:
    snippet_endpoint: str | None = None  # grabbers -> engine; None: ipc:// in a per-run temp dir
    window_endpoint: str | None = None  # engine -> detector; None: ipc:// in a per-run temp dir
    event_endpoint: str = "tcp://127.0.0.1:5560"  # detector PUB, topic = stream id
    control_endpoint: str | None = None  # supervisor REP (`menet sources`); None: ipc:// in the per-run temp dir
    queue_size: int = 64  # ZMQ high-water marks (messages) on every socket but the event socket
    # the detector's event socket, per subscriber: a file's last window releases its finals and every
    # retraction at once (a thousand messages and more), which a 1000-message mark dropped, with the
    # stream's eos behind them. Bounded all the same: a subscriber that stops reading holds this many
    # messages (~0.5 KiB each, ~2 MB) before ZMQ drops for it (subscribers count the gaps: `seq`);
    # 100,000 and 10,000 let a lagging subscriber grow the detector by ~10 MB a minute in the soak
    event_queue_size: int = 3_000
    metrics_port: int = 0  # 0 = metrics disabled; else supervisor P, detector P+1, engine P+2, grabbers P+3..
    metrics_host: str = "127.0.0.1"  # where /metrics and /health listen; 0.0.0.0 in a container (probes, scrapes)
    # a fleet (`menet grabber`): the snippet endpoints of its engines; each stream goes to exactly one,
    # shards[stream id] (an index into engines) or else rendezvous hashing of the id (stream/roles.py)
    engines: list[str] = field(default_factory=list)
    shards: dict[str, int] = field(default_factory=dict)


@dataclass
class RuntimeSettings:
    backend: Literal["auto", "pytorch", "onnxruntime", "tensorrt"] = "auto"
    device: str = "cpu"
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    engine_dir: str | None = None  # output of `menet build-engine`; needed for onnxruntime/tensorrt
    threads: int = 1  # torch intra-op threads per worker process; 0 = torch default (all cores)


@dataclass
class EngineSettings:
    max_batch: int = 8  # snippets per MFE batch (across streams)
    max_wait_ms: float = 20.0  # longest a snippet waits for its batch to fill
    # pad MFE/MREM batches to max_batch so a snippet's features do not depend on its batch mates
    # (bit-exact replay after a worker restart): for batches holding file snippets, always, never
    pad_batches: Literal["files", "always", "never"] = "files"
    gap_fill: int | None = None  # gaps up to this many snippets are zero-filled; longer ones restart the window; None: hop
    # a live snippet captured longer ago than this when it reaches the engine is dropped, counted and
    # announced as a gap (reason "stale") instead of delaying everything behind it; None: never
    max_snippet_age_s: float | None = 10.0
    # live streams: until a segment's first full window (a window length after the stream starts or
    # comes back from a long gap), a partial window every hop, for provisional events only
    # (engine/online/windower.py, "Early windows"); final events do not change
    early_windows: bool = True


@dataclass
class DetectorSettings:
    merge: Literal["auto", "exact", "lag"] = "auto"  # auto: exact for files, lag for live sources
    max_lag_s: float = 10.0  # "lag" merge: final events trail the newest window by at most this
    wait_subscribers: int = 0  # detector holds windows until this many subscribers are connected
    # after a restart, the detector holds windows up to this long (from its bind) so the subscribers of the
    # dead one can reconnect before it publishes (less once wait_subscribers are back); 0: no wait
    resubscribe_s: float = 2.0
    # event lifecycle (protocol v2, docs/protocol.md): after every window, what the merger still holds is
    # published as provisional events (open when it reaches into the last guard_s of the window) and
    # updated until final; false: final events only (protocol v1 behaviour)
    lifecycle: bool = True
    guard_s: float = 1.0  # a detection ending this close to the window's right edge may go on: "open"
    # fainter detections are announced only when final. 0 (every detection the merger holds is previewed): every
    # final event is published whatever its score, so a floor here only makes faint actions final-only, about a
    # window length late (docs/benchmarks.md, "Detection delay": 8 cameras, p95 47 -> 18 s in stream time, for
    # 1.6x the messages). Subscribers that want fewer filter by score (menet subscribe --min-score)
    provisional_min_score: float = 0.0


@dataclass
class SourceSettings:
    fps_fallback: float = 25.0  # live sources that report no frame rate
    open_timeout_s: float = 10.0  # RTSP/V4L2 open timeout
    read_timeout_s: float = 5.0  # RTSP read timeout
    stall_timeout_s: float = 5.0  # watchdog: no frame for this long -> "stalled", reopen
    reconnect_min_s: float = 0.5  # reopen backoff, doubling up to reconnect_max_s
    reconnect_max_s: float = 10.0
    capture_queue: int = 64  # decoded frames a live reader thread may hold (oldest dropped beyond)
    # OpenCV's own worker threads per grabber (resize, colour conversion, the synthetic source's warp).
    # One grabber runs per camera, so the cameras are the parallelism: OpenCV's default (a pool as
    # wide as the machine) in every grabber made each one cost ~1.8x the CPU on two cores
    # (docs/benchmarks.md, "16 cameras"). 0 = OpenCV's default. FFmpeg's decoder threads are not these.
    opencv_threads: int = 1
    # RTSP over tcp, udp, or auto (TCP first, then UDP: some servers and cameras serve UDP only);
    # one source can say otherwise with a URI fragment: rtsp://host/path#rtsp_transport=udp
    rtsp_transport: Literal["auto", "tcp", "udp"] = "auto"


@dataclass
class SupervisorSettings:
    restart_min_s: float = 1.0  # crashed-worker restart backoff, doubling up to restart_max_s
    restart_max_s: float = 30.0
    # a stop kills a stage only after this long without progress (CPU time used, a message sent) ...
    shutdown_timeout_s: float = 30.0
    # ... or after this long in all, however busy it is (stream/drain.py)
    shutdown_max_s: float = 600.0


@dataclass
class SecuritySettings:
    """CURVE on tcp:// endpoints (docs/security.md)."""

    curve_server_secret_file: str | None = None  # server key pair (`menet keys`): enables CURVE on tcp endpoints
    curve_clients_dir: str | None = None  # allow-list: public keys (*.key) of the clients that may subscribe
    curve_client_secret_file: str | None = None  # client key pair (menet subscribe, internal connects)
    curve_server_public_file: str | None = None  # the server's public key (clients)
    allow_insecure_remote: bool = False  # allow a non-loopback tcp bind without CURVE


_SECTIONS: dict[str, type] = {"transport": TransportSettings, "runtime": RuntimeSettings, "engine": EngineSettings,
                              "detector": DetectorSettings, "sources": SourceSettings,
                              "supervisor": SupervisorSettings, "security": SecuritySettings}
# the flat keys of the earlier single `stream:` section, and where each lives now
_MOVED = {"hop": "data.hop (the window layout, offline and online)"}
_MOVED.update({f.name: f"stream.{section}.{f.name}" for section, cls in _SECTIONS.items()
               for f in dataclasses.fields(cls)})


@dataclass
class StreamSettings:
    MOVED_KEYS: typing.ClassVar[dict[str, str]] = _MOVED

    transport: TransportSettings = field(default_factory=TransportSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)


@dataclass
class StreamConfig(MENetConfig):
    """A network config plus the online pipeline's ``stream`` section."""

    stream: StreamSettings = field(default_factory=StreamSettings)

    def check_more(self, check: Callable[[bool, str, str], None]) -> None:
        check_stream_settings(self.stream, check)


def check_stream_settings(s: StreamSettings, check: Callable[[bool, str, str], None]) -> None:
    """Every impossible value of the stream section (``check(ok, dotted_key, message)``)."""
    t, r, e, d, src, sup, sec = s.transport, s.runtime, s.engine, s.detector, s.sources, s.supervisor, s.security
    check(e.max_batch >= 1, "stream.engine.max_batch", f"must be >= 1, got {e.max_batch}")
    check(0 <= e.max_wait_ms < 60_000, "stream.engine.max_wait_ms", f"must be in [0, 60000), got {e.max_wait_ms}")
    check(e.gap_fill is None or e.gap_fill >= 0, "stream.engine.gap_fill", f"must be >= 0, got {e.gap_fill}")
    check(e.max_snippet_age_s is None or e.max_snippet_age_s > 0, "stream.engine.max_snippet_age_s",
          f"must be > 0 seconds (or null: never), got {e.max_snippet_age_s}")
    check(1 <= t.queue_size <= 1_000_000, "stream.transport.queue_size",
          f"must be in 1..1000000, got {t.queue_size}")
    check(1000 <= t.event_queue_size <= 10_000_000, "stream.transport.event_queue_size",
          f"must be in 1000..10000000, got {t.event_queue_size}")
    check(0 <= t.metrics_port <= 65535 - 3, "stream.transport.metrics_port",
          f"must be 0 (off) or a port number, got {t.metrics_port}")
    check(d.max_lag_s >= 0, "stream.detector.max_lag_s", f"must be >= 0, got {d.max_lag_s}")
    check(d.wait_subscribers >= 0, "stream.detector.wait_subscribers", f"must be >= 0, got {d.wait_subscribers}")
    check(d.resubscribe_s >= 0, "stream.detector.resubscribe_s",
          f"must be >= 0 seconds (0: a restarted detector publishes at once), got {d.resubscribe_s}")
    check(d.guard_s >= 0, "stream.detector.guard_s", f"must be >= 0 seconds, got {d.guard_s}")
    check(0 <= d.provisional_min_score <= 1, "stream.detector.provisional_min_score",
          f"must be in [0, 1], got {d.provisional_min_score}")
    check(r.threads >= 0, "stream.runtime.threads", f"must be >= 0, got {r.threads}")
    check(src.fps_fallback > 0, "stream.sources.fps_fallback", f"must be > 0, got {src.fps_fallback}")
    for key in ("open_timeout_s", "read_timeout_s", "stall_timeout_s", "reconnect_min_s"):
        check(getattr(src, key) > 0, f"stream.sources.{key}", f"must be > 0, got {getattr(src, key)}")
    check(src.reconnect_max_s >= src.reconnect_min_s, "stream.sources.reconnect_max_s", "must be >= reconnect_min_s")
    check(src.opencv_threads >= 0, "stream.sources.opencv_threads", f"must be >= 0, got {src.opencv_threads}")
    check(1 <= src.capture_queue <= 100_000, "stream.sources.capture_queue",
          f"must be in 1..100000, got {src.capture_queue}")
    for key in ("restart_min_s", "shutdown_timeout_s"):
        check(getattr(sup, key) > 0, f"stream.supervisor.{key}", f"must be > 0, got {getattr(sup, key)}")
    check(sup.restart_max_s >= sup.restart_min_s, "stream.supervisor.restart_max_s", "must be >= restart_min_s")
    check(sup.shutdown_max_s >= sup.shutdown_timeout_s, "stream.supervisor.shutdown_max_s",
          f"must be >= shutdown_timeout_s ({sup.shutdown_timeout_s:g}), got {sup.shutdown_max_s:g}")
    check(t.control_endpoint is None or t.control_endpoint.startswith(("ipc://", "tcp://")),
          "stream.transport.control_endpoint",
          f"must be an ipc:// or tcp:// endpoint (other processes connect to it), got {t.control_endpoint!r}")
    endpoints = [(f"stream.transport.{key}", getattr(t, key))
                 for key in ("snippet_endpoint", "window_endpoint", "event_endpoint", "control_endpoint")]
    endpoints += [(f"stream.transport.engines[{i}]", ep) for i, ep in enumerate(t.engines)]
    for key, ep in endpoints:
        check(ep is None or ep.startswith(("ipc://", "tcp://", "inproc://")), key,
              f"must be an ipc://, tcp:// or inproc:// endpoint, got {ep!r}")
        if ep is not None and ep.startswith("tcp://"):
            try:
                port = urlsplit(ep).port
            except ValueError:
                port = None
            check(port is not None and 0 < port < 65536 and bool(urlsplit(ep).hostname), key,
                  f"must be tcp://HOST:PORT with a port in 1..65535, got {ep!r}")
    check(len(set(t.engines)) == len(t.engines), "stream.transport.engines", "lists an endpoint twice")
    for sid, index in t.shards.items():
        check(0 <= index < len(t.engines), f"stream.transport.shards.{sid}",
              f"must index stream.transport.engines (0..{len(t.engines) - 1}), got {index}")
    check(bool(t.metrics_host.strip()), "stream.transport.metrics_host", "must be a host name or address")
    check(sec.curve_clients_dir is None or sec.curve_server_secret_file is not None,
          "stream.security.curve_clients_dir", "needs stream.security.curve_server_secret_file (the server's key pair)")


def load_config(name: str | Path) -> StreamConfig:
    """A config file with its stream section (defaults where it has none)."""
    cfg = _load_engine_config(name, schema=StreamConfig)
    assert isinstance(cfg, StreamConfig)
    return cfg


def as_stream_config(cfg: MENetConfig) -> StreamConfig:
    """``cfg`` with default stream settings when it has none (e.g. a checkpoint's stored config)."""
    if isinstance(cfg, StreamConfig):
        return cfg
    fields: dict[str, Any] = {f: getattr(cfg, f) for f in ("name", "data", "model", "train", "inference", "source")}
    return StreamConfig(**fields)


def runtime_choice(cfg: StreamConfig) -> "RuntimeChoice":
    """Where the stages run, from the config's ``stream.runtime``."""
    from engine.runtime.split import RuntimeChoice  # torch: only the workers need it

    r = cfg.stream.runtime
    # `auto` is resolved by the command that starts the stages (stream/engine_cache.py); left unresolved
    # (stages built in process, e.g. a test or a script) it means no engines: PyTorch
    engine_dir = None if r.engine_dir == "auto" else r.engine_dir
    return RuntimeChoice(r.backend, r.device, r.precision, engine_dir, threads=r.threads or None)
