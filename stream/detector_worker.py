"""Detector worker: SFPN + heads per window, decoding, merging, Soft-NMS, events.

Per window message (MREM features of one window): SFPN and the heads' boundary
predictors (:meth:`engine.runtime.split.DetectorStages.detect`), sparse proposal decoding
(:func:`engine.postprocess.decode.decode_window`, with the window's valid
length), then the stream's :class:`~engine.online.merger.StreamMerger`
maps the proposals to stream seconds, merges them with the overlapping windows
and runs Soft-NMS. Detections the merger reports final are published as
``event`` messages on a PUB socket, topic = stream id. Status, gap and
end-of-stream messages are republished on the same socket.

Merge mode (``stream.detector.merge``): ``exact`` gives, after the final window, the
same detections as offline :func:`engine.postprocess.windows.merge_video`, but
an event may wait for an overlapping chain of proposals to end; ``lag``
(``stream.detector.max_lag_s``) bounds that wait at the cost of an approximation;
``auto`` = exact for files, lag for live sources.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from engine.postprocess.decode import decode_window
from engine.online import EventIdentity, StreamMerger
from engine.postprocess.windows import Detections
from engine.runtime.split import DetectorStages

from . import protocol as P
from .metrics import Metrics, Timer, receive_valid
from .settings import StreamConfig, runtime_choice

log = logging.getLogger(__name__)


@dataclass
class _DStream:
    merger: StreamMerger
    last_start: int
    ids: EventIdentity
    last_header: dict[str, Any] = field(default_factory=dict)  # stamps for events released by a flush
    live: bool = True
    processed: int = 0  # windows pushed into the merger


class DetectorCore:
    """Socket-free detector logic; :attr:`outbox` holds ``(topic, header)`` to publish."""

    def __init__(self, cfg: StreamConfig, stages: Any, class_names: list[str] | None = None,
                 metrics: Metrics | None = None, epoch: Callable[[], int] | None = None,
                 state_dir: str | None = None) -> None:
        self.cfg = cfg
        self.stages = stages
        self.class_names = list(class_names or getattr(stages, "class_names", []) or
                                cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)])
        self.metrics = metrics or Metrics("detector")
        self.streams: dict[str, _DStream] = {}
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        self.seq = P.Sequencer()
        from .engine_worker import nonfinite_counter, stale_counter
        self.epoch = epoch or (lambda: 0)
        self.state_dir = state_dir
        self.stale = stale_counter(self.metrics).labels("detector")
        self.nonfinite = nonfinite_counter(self.metrics)

    def _max_lag(self, live: bool) -> float | None:
        mode = self.cfg.stream.detector.merge
        if mode == "exact" or (mode == "auto" and not live):
            return None
        return self.cfg.stream.detector.max_lag_s

    def handle(self, msg: P.Message, t_in: float | None = None) -> None:
        t_in = time.time() if t_in is None else t_in
        h = msg.header
        t = h["type"]
        if h.get("epoch") is not None and h["epoch"] < self.epoch():
            self.stale.inc()  # a file stream's message from before a replay
            return
        if t == P.WINDOW:
            self._window(h, msg.array(), t_in)
        elif t == P.EOS:
            st = self.streams.pop(h["stream"], None)
            if st is not None:
                self._publish(h["stream"], st, st.merger.flush(), None)
            self._republish(h)
            self._mark_ended(h["stream"], st.ids.instance if st is not None else self._instance(h["stream"]))
        elif t in (P.STATUS, P.GAP):
            self._republish(h)
        elif t == P.STOP:
            self.flush_all()
        else:
            self.metrics.malformed.inc()
            log.warning("detector: unexpected %s message dropped", t)

    def flush_all(self) -> None:
        for sid in list(self.streams):
            st = self.streams.pop(sid)
            self._publish(sid, st, st.merger.flush(), None)

    def _mark_ended(self, sid: str, instance: int = 0) -> None:
        """Tell the supervisor this stream is complete (no replay needed after a restart).

        The marker ``ended/ID`` holds ``EPOCH INSTANCE``."""
        if self.state_dir:
            try:
                folder = os.path.join(self.state_dir, "ended")
                os.makedirs(folder, exist_ok=True)
                tmp = os.path.join(folder, f".{sid}.tmp")
                with open(tmp, "w") as f:
                    f.write(f"{self.epoch()} {instance}")
                os.replace(tmp, os.path.join(folder, sid))
            except OSError as exc:
                log.warning("detector: cannot write the end marker of %s: %s", sid, exc)

    def _instance(self, sid: str) -> int:
        """The stream's source instance (``instances/ID``, written by the supervisor when a source is
        added again with an id used before); 0 when there is none."""
        if not self.state_dir:
            return 0
        try:
            with open(os.path.join(self.state_dir, "instances", sid)) as f:
                return max(0, int(f.read().strip() or 0))
        except (OSError, ValueError):
            return 0

    def _republish(self, h: dict[str, Any]) -> None:
        self.outbox.append((h["stream"], {**h, "seq": self.seq()}))

    def _window(self, h: dict[str, Any], feat: np.ndarray, t_in: float) -> None:
        sid = h["stream"]
        st = self.streams.get(sid)
        live = bool(h.get("live"))
        if not live:
            # file stream: windows are taken up from the stream's first window only, once each
            # (after a worker restart the stream is replayed from snippet 0; see docs/streaming.md)
            if (st is None and h["start"] != 0) or (st is not None and st.processed and h["start"] <= st.last_start):
                self.stale.inc()
                return
        if feat.shape[1] != self.cfg.data.window:
            self.metrics.malformed.inc()
            log.warning("%s: window of shape %s dropped (window length %d expected)", sid, feat.shape,
                        self.cfg.data.window)
            return
        if not np.isfinite(feat).all():
            self.nonfinite.labels("detect").inc()
            log.warning("%s: window at %d has NaN/inf features: dropped", sid, h["start"])
            return
        if st is not None and h["start"] < st.last_start:
            log.info("%s: window start went back (%d < %d): new merge segment", sid, h["start"], st.last_start)
            self._publish(sid, st, st.merger.flush(), None)
            st = None
        if st is None:
            st = self.streams[sid] = _DStream(
                StreamMerger(h["sps"], self.cfg.inference, None, max_lag=self._max_lag(bool(h.get("live"))),
                             keep_history=False),
                h["start"], EventIdentity(sid, self._instance(sid)), live=live)
        st.last_start = h["start"]
        st.processed += 1
        st.last_header = h
        if h["duration"] is not None:
            st.merger.video_duration = float(h["duration"])
        m = self.metrics
        try:
            with Timer(m.stage_latency.labels("detect")):
                levels = self.stages.detect(feat[None])
        except Exception as exc:  # noqa: BLE001 - e.g. a window with the wrong channel count
            self.metrics.malformed.inc()
            log.warning("%s: window at %d rejected by the detector stage: %s", sid, h["start"], exc)
            return
        with Timer(m.stage_latency.labels("decode")):
            labeller = getattr(self.stages, "labeller", None)  # test doubles of the stages have none
            relation = None if labeller is None else torch.from_numpy(feat).to(levels[0].feature.device)
            props = decode_window(levels, self.stages.heads, self.cfg, batch_index=0, valid_length=h["valid"],
                                  labeller=labeller, relation=relation)
        with Timer(m.stage_latency.labels("merge")):
            out = st.merger.push(h["start"], props)
            if h["final"]:
                out = Detections.concatenate([out, st.merger.flush()])
        m.windows.labels(sid).inc()
        self._publish(sid, st, out, h, t_in)
        if h["final"]:
            self.streams.pop(sid, None)

    def _publish(self, sid: str, st: _DStream, dets: Detections, h: dict[str, Any] | None,
                 t_in: float | None = None) -> None:
        if len(dets) == 0:
            return
        if h is None:
            h = st.last_header
        now = time.time()
        t_ref, t_cap = h.get("t_stream_ref", 0.0), h.get("t_capture", now)
        for (s, e), score, lab in zip(dets.segments, dets.scores, dets.labels):
            s, e, lab = float(s), float(e), int(lab)
            if not (np.isfinite(s) and np.isfinite(e) and np.isfinite(score) and e >= s):
                self.nonfinite.labels("event").inc()
                continue
            eid = st.ids.assign(lab, s, e)
            label = self.class_names[lab] if 0 <= lab < len(self.class_names) else str(lab)
            header = P.make_header(
                P.EVENT, self.seq(), stream=sid, event_id=eid, label=label, class_id=lab, score=float(score),
                start=s, end=e, start_wall=t_cap - (t_ref - s), end_wall=t_cap - (t_ref - e),
                window=int(h.get("index", 0)), t_capture=t_cap, t_engine_in=h.get("t_engine_in", t_cap),
                t_window=h.get("t_window", t_cap), t_published=now, latency_s=now - t_cap)
            if st.ids.instance:
                header["instance"] = st.ids.instance
            self.outbox.append((sid, header))
            self.metrics.events.labels(sid).inc()
            self.metrics.end_to_end.observe(max(0.0, now - t_cap))
        # later events all end after the merger's floor: older ids cannot collide any more
        # (1 ms below it covers the 0.1 ms rounding of the id key)
        st.ids.forget_ending_before(st.merger.emit_floor() - 1e-3)


def detector_main(cfg: StreamConfig, checkpoint: str | None, window_endpoint: str, event_endpoint: str,
                  metrics_port: int = 0, log_level: int = logging.INFO, epoch: Any = None,
                  state_dir: str | None = None) -> None:
    """Process entry point (spawned by the supervisor)."""
    import zmq

    from .grabber import install_stop_signals, setup_logging

    setup_logging(log_level)
    stop = threading.Event()
    install_stop_signals(stop)
    if cfg.stream.runtime.threads:
        torch.set_num_threads(cfg.stream.runtime.threads)
    metrics = Metrics("detector")
    stages = DetectorStages(cfg, checkpoint, runtime_choice(cfg))
    core = DetectorCore(cfg, stages, stages.class_names, metrics,
                        epoch=(lambda: epoch.value) if epoch is not None else None, state_dir=state_dir)
    from .security import Transport
    ctx = zmq.Context()
    transport = Transport(cfg.stream.security, ctx)
    hwm = cfg.stream.transport.queue_size
    pull = transport.socket(zmq.PULL, window_endpoint, bind=False, hwm=hwm)
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.SNDHWM, max(hwm, 1000))
    pub.setsockopt(zmq.LINGER, 2000)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    transport.secure(pub, event_endpoint, bind=True)
    P.ensure_ipc_dir(event_endpoint)
    pub.bind(event_endpoint)
    subscribers = 0
    metrics.set_health(lambda: {"streams": sorted(core.streams), "subscriptions": subscribers})
    metrics.serve(metrics_port)
    log.info("detector: windows from %s, events on %s", window_endpoint, event_endpoint)
    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    poller.register(pull, zmq.POLLIN)
    want = cfg.stream.detector.wait_subscribers
    stopping = False
    while not stop.is_set() and not stopping:
        events = dict(poller.poll(200))
        if pub in events:
            while True:
                try:
                    sub = pub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if sub[:1] == b"\x01":
                    subscribers += 1
                elif sub[:1] == b"\x00":
                    subscribers = max(0, subscribers - 1)
        if subscribers >= want:
            want = 0  # the wait is for the start only: later unsubscriptions do not hold the pipeline
        if pull in events and subscribers >= want:
            got = receive_valid(pull, metrics, "detector")
            if got is None:
                continue
            msg, t_in = got
            core.handle(msg, t_in)
            stopping = msg.type == P.STOP
        elif pull in events:
            time.sleep(0.05)  # waiting for subscribers: leave windows queued (back-pressure)
        for topic, header in core.outbox:
            pub.send_multipart(P.encode(header, topic=topic))
        core.outbox.clear()
    core.flush_all()
    for topic, header in core.outbox:
        pub.send_multipart(P.encode(header, topic=topic))
    core.outbox.clear()
    log.info("detector: stopped")
    time.sleep(0.2)  # let the last events leave
    pull.close()
    pub.close()
    transport.close()
    ctx.term()
    sys.exit(0)
