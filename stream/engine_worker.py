"""Engine worker: batch snippets across streams, MFE, rolling windows, MREM.

Snippets from every grabber arrive on one PULL socket. They are batched (up to
``stream.max_batch``, waiting at most ``stream.max_wait_ms`` for the batch to
fill) and run through the MFE in one forward. Each stream keeps a rolling
window of snippet features; window ``s`` (local snippet index) is emitted as
soon as snippets ``s .. s+W-1`` are there, for ``s = 0, hop, 2 hop, ...``. At
end of stream the windows still missing from the offline layout
``window_starts(n, W, 1 - hop/W)`` follow (the last one aligned to the end; a
stream shorter than a window gets one zero-padded window), so with ``hop =
W/2`` the windows are exactly the offline ones. Ready windows are batched
through MREM and their features sent on (PUSH) to the detector worker.

Gaps: a gap of at most ``stream.gap_fill`` snippets (default: hop) is filled
with zero features (the value window padding uses) so snippet indices stay on
the stream's time line; a longer gap ends the current segment (its remaining
windows are flushed as at end of stream) and a new one starts after it.

The model calls sit behind :class:`Stages` (``mfe``, ``mrem``, ``detect``)
so another runtime backend can replace them.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from engine.checkpoint import load_checkpoint
from engine.config import MENetConfig
from engine.model.menet import MENet, LevelOutput
from engine.model.preprocess import to_clip_tensor
from engine.postprocess.windows import window_starts
from engine.runtime.base import dense_to_levels
from engine.runtime.torch_backend import TorchBackend

from . import protocol as P
from .metrics import Metrics, Timer, receive_valid

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- model stages


def load_model(cfg: MENetConfig, checkpoint: str | None) -> tuple[MENet, list[str]]:
    """MENet with the checkpoint's weights, or (no checkpoint) a seeded random one + a warning.

    Every worker calls this with the same arguments, so without a checkpoint the
    engine's and the detector's random halves still belong to one network.
    """
    from engine.runtime.torch_backend import build_model

    ckpt = load_checkpoint(checkpoint, expect=cfg) if checkpoint else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if ckpt is None else "default")
        model = build_model(cfg, ckpt)
    names = list(ckpt.class_names) if ckpt is not None else []
    if not names:
        names = list(cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)])
    return model, names


class Stages:
    """The network split as the online pipeline runs it.

    ``mfe``: uint8 clips [B, T, H, W, 3] -> snippet features [B, C_feat];
    ``mrem``: windows [B, C_feat, W] -> [B, C, W];
    ``detect``: MREM output [B, C, W] -> per-level boundary outputs (SFPN + heads).

    The dense stages run on the runtime backend that ``stream.backend`` selects
    (``engine.runtime``: TensorRT plan for this GPU, ONNX Runtime, or PyTorch;
    ``auto`` needs ``stream.engine_dir`` from `menet build-engine` for the first
    two). The sparse anchor heads used by decoding stay in PyTorch (fp32), as the
    engine build documents: on the backend's device when that is a PyTorch device
    (a CUDA GPU included), else on the CPU.

    With the PyTorch backend the whole path stays in torch on its device: uint8
    clips are uploaded as they are (4x fewer bytes than float32) and normalised
    there, and the dense outputs stay on the device for decoding. On a GPU this
    takes the per-batch host work (normalising 32 clips on one CPU thread cost
    ~4x the fp16 MFE itself on an H200, docs/benchmarks.md) off the engine's
    critical path; on a CPU it saves a numpy round trip.
    """

    def __init__(self, cfg: MENetConfig, checkpoint: str | None = None, device: str = "cpu",
                 engine_dir: str | None = None) -> None:
        import copy

        from engine.runtime.select import open_backend, select_backend

        self.cfg = cfg
        self.model, self.class_names = load_model(cfg, checkpoint)
        self.heads = copy.deepcopy(self.model.detector.heads).float().eval()
        # the segment classifier (model.labeller: segment) labels decoded proposals next to the heads
        labeller = self.model.detector.labeller
        self.labeller = None if labeller is None else copy.deepcopy(labeller).float().eval()
        self.feature_channels = self.model.mfe.out_channels
        d = cfg.data
        self.clip_shape = [d.clip_length, d.crop[0], d.crop[1], 3]
        selection = select_backend(cfg, engine_dir, device=device)
        if selection.backend == "pytorch":
            self.backend = TorchBackend(cfg, self.model, selection.device, selection.precision)
        else:
            self.backend = open_backend(cfg, engine_dir, checkpoint, device=device)
        self.torch_backend: TorchBackend | None = self.backend if isinstance(self.backend, TorchBackend) else None
        if self.torch_backend is not None:
            self.heads = self.heads.to(self.torch_backend.torch_device)
            if self.labeller is not None:
                self.labeller = self.labeller.to(self.torch_backend.torch_device)
        log.info("stages on %s (%s)", self.backend.describe(), selection.reason)

    def mfe(self, clips: np.ndarray) -> np.ndarray:
        tb = self.torch_backend
        if tb is None:
            return self.backend.mfe(to_clip_tensor(torch.from_numpy(clips)).numpy())
        x = torch.from_numpy(np.ascontiguousarray(clips)).to(tb.torch_device)
        (feat,) = tb.run_torch("mfe", to_clip_tensor(x))
        return feat.float().cpu().numpy()

    def mrem(self, windows: np.ndarray) -> np.ndarray:
        return self.backend.mrem(np.ascontiguousarray(windows, np.float32))

    def detect(self, relation: np.ndarray) -> list[LevelOutput]:
        tb = self.torch_backend
        if tb is None:
            return self.backend.levels(np.ascontiguousarray(relation, np.float32))
        x = torch.from_numpy(np.ascontiguousarray(relation, np.float32)).to(tb.torch_device)
        outs = tb.run_torch("dense", x)
        # float32 on the device: decoding's heads are fp32 there
        return dense_to_levels({n: o.float() for n, o in zip(tb.specs["dense"].outputs, outs)})


# ---------------------------------------------------------------- per-stream state


@dataclass
class _Stream:
    id: str
    fps: float
    sigma: int
    live: bool
    base: int = 0  # absolute snippet index of local snippet 0 (segment start)
    count: int = 0  # local snippets present (real or zero-filled)
    feats: dict[int, np.ndarray] = field(default_factory=dict)
    stamps: dict[int, tuple[float, float]] = field(default_factory=dict)  # local -> (t_capture, t_engine_in)
    next_start: int = 0  # local start of the next window emitted while streaming
    last_emitted: int | None = None
    tail_at: int | None = None  # local index of a clamped (end-of-segment) snippet, if it is the newest
    window_index: int = 0
    last_stamp: tuple[float, float] = (0.0, 0.0)
    epoch: int = 0  # replay epoch of a file stream (docs/streaming.md, "Worker restarts")

    @property
    def sps(self) -> float:
        return self.sigma / self.fps

    @property
    def expected(self) -> int:
        return self.base + self.count


@dataclass
class _Ready:
    stream: _Stream
    start: int  # local
    valid: int
    final: bool
    duration: float | None
    features: np.ndarray  # [C_feat, W]


def extra_counter(metrics: Metrics, name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
    """A counter on ``metrics``' registry, created once per Metrics object."""
    from prometheus_client import Counter

    cache = metrics.__dict__.setdefault("_extra", {})
    if name not in cache:
        cache[name] = Counter(name, doc, list(labels), registry=metrics.registry)
    return cache[name]


def stale_counter(metrics: Metrics) -> Any:
    return extra_counter(metrics, "menet_stale_messages", "messages dropped as stale: older replay epoch, "
                         "replayed windows already processed, file snippets before the replay", ("who",))


def nonfinite_counter(metrics: Metrics) -> Any:
    return extra_counter(metrics, "menet_nonfinite", "snippet features zeroed / windows dropped for NaN or inf",
                         ("stage",))


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` padded with zeros to ``size`` rows (batch-composition-independent results)."""
    if len(x) >= size:
        return x
    return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)])


class EngineCore:
    """Socket-free engine logic: feed messages with :meth:`handle`, run :meth:`run_batch`,
    collect outgoing messages from :attr:`outbox`.

    ``epoch``: the run's current replay epoch (a callable; default 0). File-stream
    messages stamped with an older epoch are stale and dropped (a worker restart
    made the file grabbers replay from snippet 0 with a new epoch)."""

    def __init__(self, cfg: MENetConfig, stages: Any, metrics: Metrics | None = None,
                 epoch: Callable[[], int] | None = None) -> None:
        if cfg.data.mode != "thumos":
            raise ValueError("online detection needs sliding windows (data.mode: thumos)")
        self.cfg = cfg
        self.stages = stages
        self.metrics = metrics or Metrics("engine")
        self.W = cfg.data.window
        self.hop = cfg.stream.hop
        self.overlap = 1.0 - self.hop / self.W
        self.gap_fill = self.hop if cfg.stream.gap_fill is None else cfg.stream.gap_fill
        self.streams: dict[str, _Stream] = {}
        self.pending: list[tuple[_Stream, dict[str, Any], np.ndarray, float]] = []
        self.pending_since = 0.0
        self.ready: list[_Ready] = []
        self.outbox: list[list[Any]] = []
        self.seq = P.Sequencer()
        self.epoch = epoch or (lambda: 0)
        # the clip shape the stages run on ([clip_length, crop_h, crop_w, 3]); stages that do not say
        # take the first snippet's shape
        self.clip_shape: list[int] | None = getattr(stages, "clip_shape", None)
        self.stale = stale_counter(self.metrics).labels("engine")
        self.nonfinite = nonfinite_counter(self.metrics)

    # ------------------------------------------------------------ messages

    def _is_stale(self, h: dict[str, Any]) -> bool:
        ep = h.get("epoch")
        if ep is None:
            return False
        st = self.streams.get(h.get("stream", ""))
        if ep < self.epoch() or (st is not None and ep < st.epoch):
            self.stale.inc()
            log.debug("engine: stale %s of %s (epoch %d) dropped", h["type"], h.get("stream"), ep)
            return True
        return False

    def handle(self, msg: P.Message, t_in: float | None = None) -> None:
        t_in = time.time() if t_in is None else t_in
        h = msg.header
        t = h["type"]
        if self._is_stale(h):
            return
        if t == P.SNIPPET:
            self._snippet(h, msg.array(), t_in)
            return
        # control messages keep their order relative to the stream's snippets
        self.run_batch()
        if t == P.GAP:
            st = self.streams.get(h["stream"])
            if st is not None:
                self._gap(st, h["first"] + h["count"], h["reason"])
            self._forward(h)
        elif t == P.EOS:
            self._eos(h)
        elif t == P.STATUS:
            self._forward(h)
        elif t == P.STOP:
            pass  # the worker loop handles it
        else:
            self.metrics.malformed.inc()
            log.warning("engine: unexpected %s message dropped", t)
        self._flush_windows()

    def _forward(self, h: dict[str, Any]) -> None:
        self.outbox.append(P.encode({**h, "seq": self.seq()}))

    def _snippet(self, h: dict[str, Any], clip: np.ndarray, t_in: float) -> None:
        d = self.cfg.data
        want = self.clip_shape or list(h["shape"])
        self.clip_shape = want
        if list(h["shape"]) != want or h["sigma"] != d.sigma:
            # valid on the wire but not what this model runs on (another config's grabber?): one such
            # snippet in a batch would fail the whole batch, so it never gets in
            self.metrics.malformed.inc()
            log.warning("%s: snippet of shape %s, sigma %s dropped (this engine needs %s, sigma %d)",
                        h["stream"], h["shape"], h["sigma"], want, d.sigma)
            return
        sid = h["stream"]
        st = self.streams.get(sid)
        ep = h.get("epoch")
        if st is not None and ep is not None and ep > st.epoch:
            # a replay from snippet 0: forget the stream's state (no flush: its windows were partial)
            log.info("%s: replay (epoch %d): the stream starts again from snippet %d", sid, ep, h["index"])
            self.pending = [p for p in self.pending if p[0] is not st]
            del self.streams[sid]
            st = None
        if st is None:
            if not h["live"] and h["index"] != 0:
                # a file stream is only taken up at its first snippet (a restarted engine waits for the replay)
                self.stale.inc()
                return
            st = self.streams[sid] = _Stream(sid, h["fps"], h["sigma"], h["live"], base=h["index"],
                                             epoch=ep or 0)
        idx = h["index"]
        if idx < st.expected:
            if idx == 0:  # the source restarted from the beginning
                log.warning("%s: snippet 0 again: the stream restarted; ending the previous one", sid)
                self.run_batch()
                self._end_segment(st, None)
                st = self.streams[sid] = _Stream(sid, h["fps"], h["sigma"], h["live"], base=0)
            else:
                self.metrics.malformed.inc()
                log.warning("%s: stale snippet %d (expected %d) dropped", sid, idx, st.expected)
                return
        if idx > st.expected:
            self.run_batch()
            if idx > st.expected:
                log.warning("%s: snippets %d..%d missing without a gap message", sid, st.expected, idx - 1)
                self._gap(st, idx, "missing")
        # reserve the slot now so the order check above sees it before the batch runs
        local = st.count
        st.count += 1
        if not h.get("tail"):
            st.tail_at = None
        else:
            st.tail_at = local if st.tail_at is None else st.tail_at
        st.stamps[local] = (h["t_capture"], t_in)
        st.last_stamp = (h["t_capture"], t_in)
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((st, h, clip, t_in))
        self.metrics.snippets.labels(sid).inc()

    def batch_due(self, now: float | None = None) -> bool:
        if not self.pending:
            return False
        if len(self.pending) >= self.cfg.stream.max_batch:
            return True
        now = time.monotonic() if now is None else now
        return (now - self.pending_since) * 1000.0 >= self.cfg.stream.max_wait_ms

    def wait_left(self) -> float | None:
        """Seconds until the pending batch is due (None: nothing pending)."""
        if not self.pending:
            return None
        return max(0.0, self.cfg.stream.max_wait_ms / 1000.0 - (time.monotonic() - self.pending_since))

    def run_batch(self) -> None:
        """MFE on the pending snippets, then emit and send every window that became ready."""
        if self.pending:
            batch, self.pending = self.pending, []
            m = self.metrics
            m.batch_size.labels("mfe").observe(len(batch))
            clips = np.stack([clip for _, _, clip, _ in batch])
            if self._pad(any(not st.live for st, _, _, _ in batch)):
                clips = pad_batch(clips, self.cfg.stream.max_batch)
            with Timer(m.stage_latency.labels("mfe")):
                feats = np.asarray(self.stages.mfe(clips))[:len(batch)]
            bad = ~np.isfinite(feats.reshape(len(feats), -1)).all(axis=1)
            if bad.any():
                # a non-finite snippet feature would poison every window holding it: zero it (the value
                # of a missing snippet) and count it
                feats = feats.copy()
                feats[bad] = 0.0
                self.nonfinite.labels("mfe").inc(int(bad.sum()))
                log.warning("engine: %d snippet feature(s) with NaN/inf zeroed", int(bad.sum()))
            # local slots were reserved on arrival (control messages run the batch first,
            # so a stream's segment never changes while its snippets wait here)
            touched: dict[int, _Stream] = {}
            for (st, h, _, _), f in zip(batch, feats):
                st.feats[h["index"] - st.base] = f
                touched[id(st)] = st
            for st in touched.values():
                self._stream_windows(st)
        self._flush_windows()

    def _pad(self, has_file: bool) -> bool:
        mode = self.cfg.stream.pad_batches
        return mode == "always" or (mode == "files" and has_file)

    # ------------------------------------------------------------ windows

    def _stream_windows(self, st: _Stream) -> None:
        while st.next_start + self.W <= st.count:
            end = st.next_start + self.W
            if st.tail_at is not None and end > st.tail_at:
                break  # the window ends on clamped snippets: wait for the end of stream (its duration)
            self._window(st, st.next_start, self.W, final=False, duration=None)
            st.next_start += self.hop

    def _window(self, st: _Stream, start: int, valid: int, final: bool, duration: float | None) -> None:
        C = self.stages.feature_channels
        w = np.zeros((C, self.W), np.float32)
        for j in range(valid):
            f = st.feats.get(start + j)
            if f is not None:
                w[:, j] = f
        self.ready.append(_Ready(st, start, valid, final, duration, w))
        st.last_emitted = start
        for k in [k for k in st.feats if k <= start]:
            st.feats.pop(k, None)
            st.stamps.pop(k, None)

    def _end_segment(self, st: _Stream, duration: float | None, n_local: int | None = None) -> None:
        """Emit the windows of the offline layout not yet emitted (end of stream or segment)."""
        n = st.count if n_local is None else n_local
        if n > st.count:  # trailing snippets never arrived: zero features
            st.count = n
        starts = [s for s in window_starts(n, self.W, self.overlap) if st.last_emitted is None or s > st.last_emitted]
        for i, s in enumerate(starts):
            self._window(st, s, min(self.W, n - s), final=i == len(starts) - 1, duration=duration)

    def _gap(self, st: _Stream, next_index: int, reason: str) -> None:
        missing = next_index - st.expected
        if missing <= 0:
            return
        self.metrics.gaps.labels(st.id, reason).inc()
        if missing <= self.gap_fill:
            st.count += missing  # absent features read as zeros
            st.tail_at = None
            self._stream_windows(st)
            return
        log.info("%s: gap of %d snippets (%s) > gap_fill %d: new window segment at %d", st.id, missing, reason,
                 self.gap_fill, next_index)
        self._end_segment(st, (st.base + st.count) * st.sps)
        new = _Stream(st.id, st.fps, st.sigma, st.live, base=next_index, window_index=st.window_index)
        self.streams[st.id] = new

    def _eos(self, h: dict[str, Any]) -> None:
        st = self.streams.pop(h["stream"], None)
        if st is not None:
            n = None if h.get("n_snippets") is None else h["n_snippets"] - st.base
            duration = h.get("duration")
            self._end_segment(st, duration, n)
            # the EOS goes after this stream's windows
            self._flush_windows()
        self._forward(h)

    def flush_all(self, reason: str = "stopped") -> None:
        """Stop: every stream's partial window goes out, then an EOS per stream."""
        self.run_batch()
        for sid in list(self.streams):
            st = self.streams[sid]
            self._eos(P.make_header(P.EOS, 0, stream=sid, n_snippets=None, reason=reason,
                                    duration=(st.base + st.count) * st.sps))

    def _flush_windows(self) -> None:
        if not self.ready:
            return
        ready, self.ready = self.ready, []
        m = self.metrics
        for i in range(0, len(ready), max(1, self.cfg.stream.max_batch)):
            chunk = ready[i:i + self.cfg.stream.max_batch]
            m.batch_size.labels("mrem").observe(len(chunk))
            wins = np.stack([r.features for r in chunk])
            if self._pad(any(not r.stream.live for r in chunk)):
                wins = pad_batch(wins, self.cfg.stream.max_batch)
            with Timer(m.stage_latency.labels("mrem")):
                rel = np.asarray(self.stages.mrem(wins))[:len(chunk)]
            now = time.time()
            for r, feat in zip(chunk, rel):
                st = r.stream
                if not np.isfinite(feat).all():
                    self.nonfinite.labels("mrem").inc()
                    log.warning("%s: window at %d has NaN/inf features: dropped", st.id, st.base + r.start)
                    st.window_index += 1
                    continue
                last = r.start + r.valid - 1
                t_capture, t_in = st.stamps.get(last, st.last_stamp)
                feat = np.ascontiguousarray(feat, np.float32)
                header = P.make_header(
                    P.WINDOW, self.seq(), stream=st.id, index=st.window_index, start=st.base + r.start,
                    valid=r.valid, sps=st.sps, final=r.final, duration=r.duration, live=st.live,
                    shape=list(feat.shape), dtype="float32", t_stream_ref=(st.base + last + 1) * st.sps,
                    t_capture=t_capture, t_engine_in=t_in, t_window=now)
                if not st.live:
                    header["epoch"] = st.epoch
                st.window_index += 1
                self.outbox.append(P.encode(header, (feat,)))
                m.windows.labels(st.id).inc()


# ---------------------------------------------------------------- process


def engine_main(cfg: MENetConfig, checkpoint: str | None, snippet_endpoint: str, window_endpoint: str,
                metrics_port: int = 0, log_level: int = logging.INFO, release: Any = None,
                epoch: Any = None) -> None:
    """Process entry point (spawned by the supervisor).

    Stops on SIGTERM or on a ``stop`` message (after draining its queue): flushes
    every stream, sends ``stop`` to the detector, then lingers until ``release``."""
    import zmq

    from .grabber import install_stop_signals, linger_until_released, setup_logging

    setup_logging(log_level)
    stop = threading.Event()
    install_stop_signals(stop)
    if cfg.stream.threads:
        torch.set_num_threads(cfg.stream.threads)
    metrics = Metrics("engine")
    stages = Stages(cfg, checkpoint, cfg.stream.device, cfg.stream.engine_dir)
    core = EngineCore(cfg, stages, metrics, epoch=(lambda: epoch.value) if epoch is not None else None)
    from .security import Transport
    ctx = zmq.Context()
    transport = Transport(cfg.stream, ctx)
    hwm = cfg.stream.queue_size
    pull = transport.socket(zmq.PULL, snippet_endpoint, bind=True, hwm=hwm)
    push = transport.socket(zmq.PUSH, window_endpoint, bind=True, hwm=hwm, linger_ms=10000)
    push.setsockopt(zmq.SNDTIMEO, 200)
    metrics.set_health(lambda: {"streams": sorted(core.streams), "pending": len(core.pending)})
    metrics.serve(metrics_port)
    log.info("engine: snippets on %s, windows to %s, hop %d, window %d", snippet_endpoint, window_endpoint,
             core.hop, core.W)
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    draining_since: float | None = None

    def send_out() -> None:
        while core.outbox:
            try:
                push.send_multipart(core.outbox[0], copy=False)
                core.outbox.pop(0)
            except zmq.Again:
                if stop.is_set() and draining_since is None:
                    return  # terminated while the detector is gone: give up after the flush attempt
        metrics.queue_depth.labels("engine_outbox").set(len(core.outbox))

    while True:
        left = core.wait_left()
        timeout = 200 if left is None else max(0, int(left * 1000))
        if len(core.outbox) >= hwm:
            # the detector lags (or is restarting): stop taking snippets, so memory stays bounded and
            # files get back-pressure (live grabbers drop whole snippets and announce gaps)
            send_out()
            time.sleep(0.01)
            events = {}
            if stop.is_set():
                break
            continue
        events = dict(poller.poll(timeout))
        if pull in events:
            # drain what is there without blocking, up to one batch
            for _ in range(max(1, cfg.stream.max_batch)):
                got = receive_valid(pull, metrics, "engine")
                if got is None:
                    break
                msg, t_in = got
                log.debug("engine: %s %s #%s", msg.type, msg.stream, msg.header.get("index", ""))
                if msg.type == P.STOP:
                    log.info("engine: stop requested; draining")
                    draining_since = time.monotonic()
                    continue
                core.handle(msg, t_in)
                if core.batch_due():
                    core.run_batch()
                send_out()
        if core.batch_due():
            core.run_batch()
        send_out()
        metrics.queue_depth.labels("engine_pending").set(len(core.pending))
        idle = not events
        if stop.is_set() or (draining_since is not None and idle):
            break
    core.flush_all("stopped")
    core.outbox.append(P.encode(P.make_header(P.STOP, core.seq(), reason="engine stopped")))
    draining_since = time.monotonic()
    t0 = time.monotonic()
    while core.outbox and time.monotonic() - t0 < cfg.stream.shutdown_timeout_s:
        try:
            push.send_multipart(core.outbox[0], copy=False)
            core.outbox.pop(0)
        except zmq.Again:
            pass
    log.info("engine: flushed; waiting for the detector to finish")
    linger_until_released(release, cfg.stream.shutdown_timeout_s + 10)
    log.info("engine: stopped")
    pull.close()
    push.close()
    transport.close()
    ctx.term()
    sys.exit(0)
