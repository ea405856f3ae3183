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
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from engine.postprocess.decode import Proposals, decode_window
from engine.online import EventIdentity, StreamMerger
from engine.online.lifecycle import FINAL, EventLifecycle, EventUpdate
from engine.postprocess.windows import Detections
from engine.runtime.split import DetectorStages

from . import protocol as P
from .metrics import Metrics
from .worker import receive_valid
from .settings import StreamConfig, runtime_choice

log = logging.getLogger(__name__)


@dataclass
class _DStream:
    merger: StreamMerger
    last_start: int
    ids: EventIdentity
    events: EventLifecycle
    last_header: dict[str, Any] = field(default_factory=dict)  # stamps for events released by a flush
    live: bool = True
    processed: int = 0  # windows pushed into the merger


class DetectorCore:
    """Socket-free detector logic; :attr:`outbox` holds ``(topic, header)`` to publish."""

    def __init__(self, cfg: StreamConfig, stages: Any, class_names: list[str] | None = None,
                 metrics: Metrics | None = None, epoch: Callable[[], int] | None = None) -> None:
        self.cfg = cfg
        self.stages = stages
        self.class_names = list(class_names or getattr(stages, "class_names", []) or
                                cfg.data.class_names or [str(i) for i in range(cfg.data.num_classes)])
        self.metrics = metrics or Metrics("detector")
        self.streams: dict[str, _DStream] = {}
        self.outbox: list[tuple[str, dict[str, Any]]] = []
        self.seq = P.Sequencer()
        self.epoch = epoch or (lambda: 0)
        self.stale = self.metrics.stale.labels("detector")
        self.nonfinite = self.metrics.nonfinite

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
            self._window(h, msg.array(), t_in, msg.window_features())
        elif t == P.EOS:
            st = self.streams.pop(h["stream"], None)
            if st is not None:
                self._release(h["stream"], st, st.merger.flush(), None, closing=True)
            # the published eos names the source instance it ends: the supervisor (a subscriber) learns
            # from it that the stream is complete, which replaces any shared state between processes
            instance = h.get("instance") or (st.ids.instance if st is not None else 0)
            self._republish({**h, "instance": instance} if instance else h)
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
            self._release(sid, st, st.merger.flush(), None, closing=True)

    def _republish(self, h: dict[str, Any]) -> None:
        self.outbox.append((h["stream"], {**h, "seq": self.seq()}))

    def _window(self, h: dict[str, Any], feat: np.ndarray, t_in: float,
                features: np.ndarray | None = None) -> None:
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
            self._release(sid, st, st.merger.flush(), None, closing=True)
            st = None
        if st is None:
            ids = EventIdentity(sid, h.get("instance", 0))
            d = self.cfg.stream.detector
            st = self.streams[sid] = _DStream(
                StreamMerger(h["sps"], self.cfg.inference, None, max_lag=self._max_lag(bool(h.get("live"))),
                             keep_history=False),
                h["start"], ids, EventLifecycle(ids, d.guard_s, d.provisional_min_score), live=live)
        if h.get("early"):
            self._early_window(sid, st, h, feat, features)
            return
        st.last_start = h["start"]
        st.processed += 1
        st.last_header = h
        if h["duration"] is not None:
            st.merger.video_duration = float(h["duration"])
        m = self.metrics
        props = self._decode(sid, h, feat, features)
        if props is None:
            return
        with m.stage_latency.labels("merge").time():
            out = st.merger.push(h["start"], props)
            if h["final"]:
                out = Detections.concatenate([out, st.merger.flush()])
        m.windows.labels(sid).inc()
        self._release(sid, st, out, h, closing=bool(h["final"]))
        if h["final"]:
            self.streams.pop(sid, None)

    def _reads_features(self) -> bool:
        """The labeller reads each window's MFE features (sent by the engine next to the MREM output)."""
        return getattr(self.stages, "labeller", None) is not None and self.cfg.labeller_reads_mfe

    def _decode(self, sid: str, h: dict[str, Any], feat: np.ndarray,
                features: np.ndarray | None = None) -> Proposals | None:
        """SFPN + heads + decoding of one window's MREM output ``feat``; the labeller reads it or the
        window's MFE ``features`` (None: the stage refused it, counted)."""
        m = self.metrics
        if self._reads_features():
            if features is None or features.shape != (self.cfg.feature_channels, self.cfg.data.window):
                # an engine whose config says model.segment_input: relation (or an older engine)
                m.malformed.inc()
                got = "none" if features is None else list(features.shape)
                log.warning("%s: window at %d dropped: the labeller reads the window's MFE features "
                            "(model.segment_input: mfe), [%d, %d] expected, got %s", sid, h["start"],
                            self.cfg.feature_channels, self.cfg.data.window, got)
                return None
            if not np.isfinite(features).all():
                self.nonfinite.labels("detect").inc()
                log.warning("%s: window at %d has NaN/inf MFE features: dropped", sid, h["start"])
                return None
        try:
            with m.stage_latency.labels("detect").time():
                levels = self.stages.detect(feat[None])
        except Exception as exc:  # noqa: BLE001 - e.g. a window with the wrong channel count
            m.malformed.inc()
            log.warning("%s: window at %d rejected by the detector stage: %s", sid, h["start"], exc)
            return None
        with m.stage_latency.labels("decode").time():
            labeller = getattr(self.stages, "labeller", None)  # test doubles of the stages have none
            chosen = features if self._reads_features() else feat
            labeller_input = None if labeller is None else torch.from_numpy(chosen).to(levels[0].feature.device)
            return decode_window(levels, self.stages.heads, self.cfg, batch_index=0, valid_length=h["valid"],
                                 labeller=labeller, labeller_input=labeller_input)

    def _early_window(self, sid: str, st: _DStream, h: dict[str, Any], feat: np.ndarray,
                      features: np.ndarray | None = None) -> None:
        """A partial window before the segment's first full one (live): provisional events from what it
        sees, the merge untouched (engine/online/windower.py, "Early windows")."""
        if not self.cfg.stream.detector.lifecycle:
            return  # final events only: an early window has nothing to say
        props = self._decode(sid, h, feat, features)
        if props is None:
            return
        self.metrics.early_windows.labels(sid).inc()
        edge = (h["start"] + h["valid"]) * h["sps"]
        updates = st.events.window(st.merger.look(h["start"], props), edge, st.merger.emit_floor())
        self._publish(sid, st, updates, h)

    def _release(self, sid: str, st: _DStream, final: Detections, h: dict[str, Any] | None,
                 closing: bool = False) -> None:
        """Publish what the merger made final and, with the lifecycle on, the state of what it still
        holds after window ``h`` (``closing``: the merge segment is over, nothing is pending)."""
        finite = np.isfinite(final.segments).all(axis=1) & np.isfinite(final.scores) & \
            (final.segments[:, 1] >= final.segments[:, 0])
        if not finite.all():
            self.nonfinite.labels("event").inc(int((~finite).sum()))
            final = Detections(final.segments[finite], final.scores[finite], final.labels[finite])
        updates = st.events.final(final)
        if self.cfg.stream.detector.lifecycle:
            if closing:
                updates += st.events.flush()
            elif h is not None:
                edge = (h["start"] + h["valid"]) * h["sps"]
                updates += st.events.window(st.merger.pending, edge, st.merger.emit_floor())
        else:
            st.events.tracked.clear()
        self._publish(sid, st, updates, h)

    def _publish(self, sid: str, st: _DStream, updates: list[EventUpdate], h: dict[str, Any] | None) -> None:
        if not updates:
            return
        if h is None:
            h = st.last_header
        now = time.time()
        t_ref, t_cap = h.get("t_stream_ref", 0.0), h.get("t_capture", now)
        for u in updates:
            label = self.class_names[u.label] if 0 <= u.label < len(self.class_names) else str(u.label)
            fields: dict[str, Any] = {} if u.state == FINAL and not self.cfg.stream.detector.lifecycle \
                else {"state": u.state}
            header = P.make_header(
                P.EVENT, self.seq(), stream=sid, event_id=u.event_id, label=label, class_id=u.label, score=u.score,
                start=u.start, end=u.end, start_wall=t_cap - (t_ref - u.start), end_wall=t_cap - (t_ref - u.end),
                window=int(h.get("index", 0)), t_capture=t_cap, t_engine_in=h.get("t_engine_in", t_cap),
                t_window=h.get("t_window", t_cap), t_published=now, latency_s=now - t_cap, **fields)
            if st.ids.instance:
                header["instance"] = st.ids.instance
            self.outbox.append((sid, header))
            if u.state == FINAL:
                self.metrics.events.labels(sid).inc()
                self.metrics.end_to_end.observe(max(0.0, now - t_cap))
            else:
                self.metrics.event_updates.labels(u.state).inc()
        # later events all end after the merger's floor: older ids cannot collide any more
        # (1 ms below it covers the 0.1 ms rounding of the id key)
        st.ids.forget_ending_before(st.merger.emit_floor() - 1e-3)


class PublishGate:
    """When a starting detector may take windows, and so publish (pure: no sockets, no clock).

    Until the gate opens the detector leaves windows queued (back-pressure), so nothing it
    publishes goes out before its subscribers are in. ``want``: subscriptions awaited at every
    start, as ever (``stream.detector.wait_subscribers`` + ``internal``, the pipeline's own).
    A *restarted* detector (``restarted``) also holds for ``grace_s`` seconds from ``since``
    (its bind): the subscribers of the dead one reconnect on their own (ZeroMQ ``RECONNECT_IVL``),
    and would miss its first messages. With ``wait_subscribers`` > 0 (``want > internal``) the
    hold ends as soon as that many are in. A first start has no hold; ``grace_s`` 0 = no hold.
    Once open it stays open: later unsubscriptions never hold the pipeline."""

    def __init__(self, want: int, grace_s: float, restarted: bool, internal: int = 0, since: float = 0.0) -> None:
        self.want = want
        self.internal = internal
        self.grace_s = grace_s if restarted else 0.0
        self.restarted = restarted
        self.since = since
        self.opened_at: float | None = None

    def open(self, subscribers: int, now: float) -> bool:
        if self.opened_at is not None:
            return True
        if subscribers < self.want:
            return False  # awaited as at any start (internal subscriptions, then wait_subscribers)
        early = self.want > self.internal  # wait_subscribers reached: those the operator asked for are in
        if not early and now - self.since < self.grace_s:
            return False
        self.opened_at = now
        return True

    def waited(self) -> float:
        """Seconds from ``since`` to the opening (0 while closed)."""
        return 0.0 if self.opened_at is None else max(0.0, self.opened_at - self.since)


def detector_main(cfg: StreamConfig, checkpoint: str | None, window_endpoint: str, event_endpoint: str,
                  metrics_port: int = 0, log_level: int = logging.INFO, control_endpoint: str | None = None,
                  internal_subscribers: int = 0, serve: bool = False) -> None:
    """Process entry point (spawned by the supervisor, or run alone by ``menet detector``).

    ``internal_subscribers``: subscriptions the pipeline itself makes (the supervisor follows
    the published ``eos`` messages); the detector waits for them before it takes windows, so
    none of them misses the start, on top of ``stream.detector.wait_subscribers``.

    ``serve`` (``menet detector``, a fleet): the detector outlives its engine. An engine's
    ``stop`` flushes every stream (their events go out) but does not stop the detector, which
    takes the next engine's windows; only SIGINT/SIGTERM stop it. With no supervisor to say
    whether this start is a restart (an orchestrator restarts it), every start holds windows
    ``stream.detector.resubscribe_s`` for the subscribers of a previous process."""
    import zmq

    from .worker import WorkerShell

    shell = WorkerShell("detector", cfg, log_level, control_endpoint, metrics_port)
    stop, metrics = shell.stop, shell.metrics
    stages = DetectorStages(cfg, checkpoint, runtime_choice(cfg))
    shell.control.wait_first(5.0)
    core = DetectorCore(cfg, stages, stages.class_names, metrics, epoch=lambda: shell.control.state.epoch)
    pull = shell.socket(zmq.PULL, window_endpoint, bind=False)
    pub = shell.socket(zmq.XPUB, event_endpoint, bind=True, hwm=cfg.stream.transport.event_queue_size,
                       options={zmq.XPUB_VERBOSE: 1})
    subscribers = 0
    shell.serve_metrics(lambda: {"streams": sorted(core.streams), "subscriptions": subscribers})
    log.info("detector: windows from %s, events on %s", window_endpoint, event_endpoint)
    poller = zmq.Poller()
    poller.register(pub, zmq.POLLIN)
    poller.register(pull, zmq.POLLIN)
    d = cfg.stream.detector
    # the supervisor's state says so before the start; a service cannot tell, so it assumes a restart
    restarted = serve or "detector" in shell.control.state.restarted
    gate = PublishGate(d.wait_subscribers + internal_subscribers, d.resubscribe_s, restarted,
                       internal=internal_subscribers, since=time.monotonic())
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
        was_open = gate.opened_at is not None
        ready = gate.open(subscribers, time.monotonic())  # once open, later unsubscriptions do not hold it
        if ready and not was_open and restarted:
            log.info("detector: %s; publishing with %d subscription(s) after holding windows %.2f s for the "
                     "subscribers of a previous detector process to reconnect (stream.detector.resubscribe_s %g)",
                     "started as a service (it cannot tell a restart, so it holds at every start)" if serve
                     else "restarted", subscribers, gate.waited(), d.resubscribe_s)
        if pull in events and ready:
            got = receive_valid(pull, metrics, "detector")
            if got is None:
                continue
            msg, t_in = got
            core.handle(msg, t_in)  # a stop flushes every stream
            stopping = msg.type == P.STOP and not serve
            if msg.type == P.STOP and serve:
                log.info("detector: the engine stopped (%s); its streams are flushed, waiting for windows",
                         msg.header.get("reason", "no reason given"))
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
    shell.close()
    sys.exit(0)
