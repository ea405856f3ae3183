"""Engine worker: batch snippets across streams, MFE, rolling windows, MREM.

Snippets from every grabber arrive on one PULL socket. They are batched (up to
``stream.engine.max_batch``, waiting at most ``stream.engine.max_wait_ms`` for the batch to
fill) and run through the MFE in one forward. Each stream's features go into the
online core's :class:`~engine.online.windower.StreamWindower` (the window layout,
gaps, end of stream: see there), the same object offline inference windows a video
with. Ready windows are batched through MREM and their features sent on (PUSH) to
the detector worker; when the detector's segment classifier reads the MFE features
(``model.segment_input: mfe``) each window's snippet features go along as a second
payload (C_feat x W float32: 64 KiB for the tiny config).

The model calls sit behind :class:`engine.runtime.split.EngineStages` (``mfe``,
``mrem``), on the runtime backend the config chooses.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from engine.online import StreamWindower, Window, WindowLayout
from engine.runtime.split import EngineStages

from . import protocol as P
from .drain import DrainWatch
from .metrics import Metrics
from .worker import receive_valid
from .settings import StreamConfig, runtime_choice

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- per-stream state


@dataclass
class _Stream:
    """A stream as the engine sees it: transport facts around the online core's windower."""

    id: str
    fps: float
    sigma: int
    live: bool
    windower: StreamWindower
    epoch: int = 0  # replay epoch of a file stream (docs/streaming.md, "Worker restarts")
    instance: int = 0  # > 0: a source added again at runtime; passed on with each window (new event ids)

    @property
    def sps(self) -> float:
        return self.sigma / self.fps

    @property
    def expected(self) -> int:
        return self.windower.expected


@dataclass
class _Ready:
    stream: _Stream
    window: Window


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

    def __init__(self, cfg: StreamConfig, stages: Any, metrics: Metrics | None = None,
                 epoch: Callable[[], int] | None = None) -> None:
        if cfg.data.mode != "thumos":
            raise ValueError("online detection needs sliding windows (data.mode: thumos)")
        self.cfg = cfg
        self.stages = stages
        self.metrics = metrics or Metrics("engine")
        self.layout = WindowLayout(cfg.data.window, cfg.data.hop)
        self.W, self.hop = self.layout.window, self.layout.hop
        self.gap_fill = cfg.stream.engine.gap_fill
        # the detector's labeller reads the MFE window itself: send it next to the MREM output
        self.send_features = cfg.labeller_reads_mfe
        self.max_age = cfg.stream.engine.max_snippet_age_s
        self.stale_gaps: dict[str, dict[str, Any]] = {}  # stream -> stale live snippets not yet announced
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
        self.stale = self.metrics.stale.labels("engine")
        self.nonfinite = self.metrics.nonfinite

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
            self._announce_stale(h["stream"])
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
            st = self.streams[sid] = self._new_stream(h, base=h["index"], epoch=ep or 0)
        idx = h["index"]
        if idx < st.expected:
            if idx == 0:  # the source restarted from the beginning
                log.warning("%s: snippet 0 again: the stream restarted; ending the previous one", sid)
                self.run_batch()
                self._end_segment(st, None)
                st = self.streams[sid] = self._new_stream(h, base=0)
            else:
                self.metrics.malformed.inc()
                log.warning("%s: stale snippet %d (expected %d) dropped", sid, idx, st.expected)
                return
        if st.live and self.max_age is not None and t_in - h["t_capture"] > self.max_age:
            self._stale_snippet(st, h, t_in)
            return
        self._announce_stale(sid)
        if idx > st.expected:
            self.run_batch()
            if idx > st.expected:
                log.warning("%s: snippets %d..%d missing without a gap message", sid, st.expected, idx - 1)
                self._gap(st, idx, "missing")
        # reserve the slot now so the order check above sees it before the batch runs
        st.windower.reserve(idx, (h["t_capture"], t_in), tail=bool(h.get("tail")))
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append((st, h, clip, t_in))
        self.metrics.snippets.labels(sid).inc()

    def _stale_snippet(self, st: _Stream, h: dict[str, Any], t_in: float) -> None:
        """A live snippet that waited too long (a backlog in the queues): it is dropped, counted and,
        with its stale neighbours, announced as one gap once the stream is fresh again."""
        self.metrics.snippets_stale.labels(st.id).inc()
        gap = self.stale_gaps.get(st.id)
        if gap is not None and gap["first"] + gap["count"] == h["index"]:
            gap["count"] += 1
            return
        self._announce_stale(st.id)
        log.warning("%s: live snippet %d is %.1f s old (> max_snippet_age_s %g): dropped", st.id, h["index"],
                    t_in - h["t_capture"], self.max_age)
        self.stale_gaps[st.id] = {"first": h["index"], "count": 1, "t_capture": h["t_capture"]}

    def _announce_stale(self, sid: str) -> None:
        gap = self.stale_gaps.pop(sid, None)
        st = self.streams.get(sid)
        if gap is None or st is None:
            return
        self.run_batch()
        self._gap(st, gap["first"] + gap["count"], "stale")
        self._forward(P.make_header(P.GAP, 0, stream=sid, first=gap["first"], count=gap["count"], reason="stale",
                                    t_capture=gap["t_capture"]))

    def batch_due(self, now: float | None = None) -> bool:
        if not self.pending:
            return False
        if len(self.pending) >= self.cfg.stream.engine.max_batch:
            return True
        now = time.monotonic() if now is None else now
        return (now - self.pending_since) * 1000.0 >= self.cfg.stream.engine.max_wait_ms

    def wait_left(self) -> float | None:
        """Seconds until the pending batch is due (None: nothing pending)."""
        if not self.pending:
            return None
        return max(0.0, self.cfg.stream.engine.max_wait_ms / 1000.0 - (time.monotonic() - self.pending_since))

    def run_batch(self) -> None:
        """MFE on the pending snippets, then emit and send every window that became ready."""
        if self.pending:
            batch, self.pending = self.pending, []
            m = self.metrics
            m.batch_size.labels("mfe").observe(len(batch))
            clips = np.stack([clip for _, _, clip, _ in batch])
            if self._pad(any(not st.live for st, _, _, _ in batch)):
                clips = pad_batch(clips, self.cfg.stream.engine.max_batch)
            with m.stage_latency.labels("mfe").time():
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
                st.windower.put(h["index"], f)
                touched[id(st)] = st
            for st in touched.values():
                self._queue(st, st.windower.ready())
        self._flush_windows()

    def _pad(self, has_file: bool) -> bool:
        mode = self.cfg.stream.engine.pad_batches
        return mode == "always" or (mode == "files" and has_file)

    # ------------------------------------------------------------ windows

    def _new_stream(self, h: dict[str, Any], base: int, epoch: int = 0) -> _Stream:
        windower = StreamWindower(self.layout, self.stages.feature_channels, self.gap_fill, base=base,
                                  early=bool(h["live"]) and self.cfg.stream.engine.early_windows)
        return _Stream(h["stream"], h["fps"], h["sigma"], h["live"], windower, epoch=epoch,
                       instance=h.get("instance", 0))

    def _queue(self, st: _Stream, windows: list[Window]) -> None:
        self.ready.extend(_Ready(st, w) for w in windows)

    def _end_segment(self, st: _Stream, duration: float | None, n_snippets: int | None = None) -> None:
        """Emit the windows of the layout not yet emitted (end of stream or segment)."""
        self._queue(st, st.windower.end(n_snippets, duration))

    def _gap(self, st: _Stream, next_index: int, reason: str) -> None:
        if next_index <= st.expected:
            return
        self.metrics.gaps.labels(st.id, reason).inc()
        missing = next_index - st.expected
        windows, restarted = st.windower.gap(next_index, st.sps)
        self._queue(st, windows)
        if restarted:
            log.info("%s: gap of %d snippets (%s) > gap_fill %d: new window segment at %d", st.id, missing,
                     reason, st.windower.fill_limit, next_index)

    def _eos(self, h: dict[str, Any]) -> None:
        self._announce_stale(h["stream"])
        st = self.streams.pop(h["stream"], None)
        if st is not None:
            self._end_segment(st, h.get("duration"), h.get("n_snippets"))
            # the EOS goes after this stream's windows
            self._flush_windows()
        self._forward(h)

    def flush_all(self, reason: str = "stopped") -> None:
        """Stop: every stream's partial window goes out, then an EOS per stream."""
        self.run_batch()
        for sid in list(self.streams):
            st = self.streams[sid]
            self._eos(P.make_header(P.EOS, 0, stream=sid, n_snippets=None, reason=reason,
                                    duration=st.expected * st.sps))

    def _flush_windows(self) -> None:
        if not self.ready:
            return
        ready, self.ready = self.ready, []
        m = self.metrics
        for i in range(0, len(ready), max(1, self.cfg.stream.engine.max_batch)):
            chunk = ready[i:i + self.cfg.stream.engine.max_batch]
            m.batch_size.labels("mrem").observe(len(chunk))
            wins = np.stack([r.window.features for r in chunk])
            if self._pad(any(not r.stream.live for r in chunk)):
                wins = pad_batch(wins, self.cfg.stream.engine.max_batch)
            with m.stage_latency.labels("mrem").time():
                rel = np.asarray(self.stages.mrem(wins))[:len(chunk)]
            now = time.time()
            for r, feat in zip(chunk, rel):
                st, win = r.stream, r.window
                if not np.isfinite(feat).all():
                    self.nonfinite.labels("mrem").inc()
                    log.warning("%s: window at %d has NaN/inf features: dropped", st.id, win.start)
                    continue
                t_capture, t_in = win.stamp if win.stamp is not None else (now, now)
                header = P.make_header(
                    P.WINDOW, self.seq(), stream=st.id, index=win.index, start=win.start,
                    valid=win.valid, sps=st.sps, final=win.final, duration=win.duration, live=st.live,
                    t_stream_ref=(win.start + win.valid) * st.sps, t_capture=t_capture, t_engine_in=t_in,
                    t_window=now)
                if win.early:
                    header["early"] = True
                if not st.live:
                    header["epoch"] = st.epoch
                if st.instance:
                    header["instance"] = st.instance
                self.outbox.append(P.encode_window(header, feat, win.features if self.send_features else None))
                m.windows.labels(st.id).inc()


# ---------------------------------------------------------------- process


def engine_main(cfg: StreamConfig, checkpoint: str | None, snippet_endpoint: str, window_endpoint: str,
                metrics_port: int = 0, log_level: int = logging.INFO, control_endpoint: str | None = None) -> None:
    """Process entry point (spawned by the supervisor).

    Stops on SIGTERM or on a ``stop`` message (after draining its queue): flushes
    every stream, sends ``stop`` to the detector, then lingers until the supervisor
    releases it. The replay epoch comes with the supervisor's state (``control``)."""
    import zmq

    from .worker import WorkerShell

    shell = WorkerShell("engine", cfg, log_level, control_endpoint, metrics_port)
    stop, metrics = shell.stop, shell.metrics
    stages = EngineStages(cfg, checkpoint, runtime_choice(cfg))
    shell.control.wait_first(5.0)
    core = EngineCore(cfg, stages, metrics, epoch=lambda: shell.control.state.epoch)
    hwm = cfg.stream.transport.queue_size
    pull = shell.socket(zmq.PULL, snippet_endpoint, bind=True)
    push = shell.socket(zmq.PUSH, window_endpoint, bind=True, linger_ms=10000, options={zmq.SNDTIMEO: 200})
    shell.serve_metrics(lambda: {"streams": sorted(core.streams), "pending": len(core.pending)})
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
            for _ in range(max(1, cfg.stream.engine.max_batch)):
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
    sup = cfg.stream.supervisor
    # gives up only once the detector has taken no window for shutdown_timeout_s (stream.drain)
    watch = DrainWatch(sup.shutdown_timeout_s, sup.shutdown_max_s)
    while core.outbox and not watch.expired():
        try:
            push.send_multipart(core.outbox[0], copy=False)  # blocks up to SNDTIMEO while the pipe is full
            core.outbox.pop(0)
            watch.progress()
        except zmq.Again:
            pass
    if core.outbox:
        log.error("engine: %d windows (and the stop) not sent: the detector takes none, %s",
                  len(core.outbox), watch.why())
    log.info("engine: flushed; waiting for the detector to finish")
    shell.linger_until_released("engine", sup.shutdown_max_s + 10)
    log.info("engine: stopped")
    shell.close()
    sys.exit(0)
