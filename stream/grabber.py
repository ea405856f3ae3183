"""Grabber: one process per source. Decode, preprocess, group into snippets, send.

Frames from a :mod:`stream.sources` source are preprocessed with the shared
:class:`~engine.model.preprocess.Preprocess` and grouped by the shared
:class:`~engine.snippets.SnippetAssembler` (the same code ``menet extract``
uses), so snippet ``i`` carries exactly the backbone clip offline extraction
computes for it. Each snippet message holds the clip as raw uint8
``[clip_length, h, w, 3]`` RGB (zero-copy send) and is stamped with the stream
id, sequence number, snippet index, stream time (PTS of its first frame when the
source has one) and capture clock.

Flow control: a non-live source sends blocking (back-pressure, nothing lost); a
live source sends with ``NOBLOCK`` and drops the whole snippet when the engine's
queue is full, counting it and announcing the lost indices in a ``gap``
message. A live source that reconnects ends its snippet segment (the clip of the
last snippets is clamped, marked ``tail``) and announces the outage as a gap of
``round(outage * fps / sigma)`` snippets, so snippet indices keep following the
wall clock. End of stream sends ``eos`` with the snippet and frame counts.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable

import cv2
import numpy as np

from .settings import StreamConfig
from engine.model.preprocess import Preprocess
from engine.snippets import SnippetAssembler, SnippetClip, num_snippets

from . import protocol as P
from .metrics import Metrics
from .sources import FrameItem, OutageItem, Source, SourceError, StatusItem, open_source, safe_uri

log = logging.getLogger(__name__)

Send = Callable[[list[Any], bool], bool]  # (frames, block) -> sent?

EXIT_SOURCE_ERROR = 3


class ReplayRequested(Exception):
    """The supervisor asked for a replay (a core worker restarted): stop this pass."""


def sanitize_frame(image: Any) -> np.ndarray | None:
    """A decoded frame as BGR uint8 [H, W, 3], or None when it cannot be one.

    Grey [H, W] / [H, W, 1] and BGRA [H, W, 4] frames are converted; 16-bit frames
    are scaled to 8 bits; empty, 1-pixel-wide, non-image or other-channel frames are refused.
    """
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        return None
    if image.shape[0] < 2 or image.shape[1] < 2:
        return None
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number):
            return None
        image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 3:
        return image
    return None


class Grabber:
    def __init__(self, cfg: StreamConfig, stream_id: str, source: Source, send: Send,
                 metrics: Metrics | None = None, epoch: int | None = None,
                 abort: Callable[[], bool] | None = None, instance: int = 0,
                 stop_reason: Callable[[], str] | None = None) -> None:
        self.cfg = cfg
        self.stream = stream_id
        self.source = source
        self.send = send
        self.metrics = metrics or Metrics("grabber")
        d = cfg.data
        self.pre = Preprocess.of(d)
        self.sigma, self.clip_length = d.sigma, d.clip_length
        self.live = source.live
        self.seq = P.Sequencer()
        self.fps = source.fps
        self.asm = SnippetAssembler(self.sigma, self.clip_length)
        self.meta: dict[int, tuple[float | None, float]] = {}
        self.offset = 0  # snippet index of the current segment's local snippet 0
        self.timeline_frames = 0  # frames of finished segments (incl. outages), for the stream duration
        self.gap: list[int] | None = None  # [first, count] of dropped snippets not yet announced
        self.control: list[list[Any]] = []  # live: control messages waiting for room
        self.sent = 0
        self.dropped = 0
        self.frames = 0
        self._frames_dropped_seen = 0
        self.last_capture = time.time()
        # replay epoch, stamped on a file stream's messages (None: live, never replayed)
        self.epoch = None if source.live else (epoch or 0)
        self.abort = abort or (lambda: False)
        self.bad_frames = 0
        # > 0: the source was removed and added again at runtime; stamped on snippets (the engine passes it on
        # with each window, so the detector's event ids are new ones), status and eos messages
        self.instance = instance
        self.stop_reason = stop_reason or (lambda: "stopped")  # EOS reason when stopped ("removed": menet sources)

    # ------------------------------------------------------------ sending

    def _msg(self, type_: str, buffers: tuple = (), **fields: Any) -> list[Any]:
        if self.epoch is not None:
            fields["epoch"] = self.epoch
        if self.instance and type_ in (P.STATUS, P.EOS, P.SNIPPET):
            fields["instance"] = self.instance
        return P.encode(P.make_header(type_, self.seq(), stream=self.stream, **fields), buffers)

    def _control(self, msg: list[Any]) -> None:
        if self.live:
            self.control.append(msg)
            self._flush_control()
        else:
            self.send(msg, True)

    def _flush_control(self, block: bool = False) -> bool:
        while self.control:
            if not self.send(self.control[0], block):
                return False
            self.control.pop(0)
        if self.gap is not None:
            first, count = self.gap
            msg = self._msg(P.GAP, first=first, count=count, reason="dropped", t_capture=self.last_capture)
            if not self.send(msg, block):
                return False
            self.metrics.gaps.labels(self.stream, "dropped").inc()
            self.gap = None
        return True

    def status(self, state: str, detail: str = "") -> None:
        self.metrics.stream_state.labels(self.stream).set(1 if state == "live" else 0)
        counters = {"frames": self.frames, "snippets": self.sent, "dropped_snippets": self.dropped,
                    "dropped_frames": self.source.frames_dropped, "reconnects": self.source.reconnects}
        self._control(self._msg(P.STATUS, state=state, source=safe_uri(self.source.uri), detail=detail,
                                t=time.time(), counters=counters))
        log.info("%s: %s %s", self.stream, state, detail)

    def _snippet(self, clip: SnippetClip, tail: bool) -> None:
        idx = self.offset + clip.index
        first = clip.index * self.sigma
        pts = self.meta.get(first, (None, 0.0))[0]
        for k in [k for k in self.meta if k < first + self.sigma]:
            del self.meta[k]
        t_stream = pts if pts is not None else idx * self.sigma / self.fps
        frames = np.ascontiguousarray(clip.frames)
        msg = self._msg(P.SNIPPET, (frames,), index=idx, t_stream=float(t_stream),
                        t_capture=self.last_capture, fps=float(self.fps), sigma=self.sigma,
                        shape=list(frames.shape), dtype="uint8", live=self.live, tail=tail, t_sent=time.time())
        if self.live:
            if not self._flush_control() or not self.send(msg, False):
                self.dropped += 1
                self.metrics.snippets_dropped.labels(self.stream).inc()
                if self.gap is None:
                    self.gap = [idx, 0]
                self.gap[1] += 1
                return
        elif not self.send(msg, True):
            if self.abort():
                raise ReplayRequested()
            raise RuntimeError("send failed while stopping")
        self.sent += 1
        self.metrics.snippets.labels(self.stream).inc()

    # ------------------------------------------------------------ segments

    def _finish_segment(self) -> None:
        for clip in self.asm.finish():
            self._snippet(clip, tail=True)
        received = self.asm.frames_received
        self.offset += num_snippets(received, self.sigma)
        self.timeline_frames += received
        self.asm = SnippetAssembler(self.sigma, self.clip_length)
        self.meta.clear()

    def _outage(self, item: OutageItem) -> None:
        self._finish_segment()
        missing = max(1, round((item.t_back - item.t_lost) * self.fps / self.sigma))
        log.warning("%s: source was lost for %.1f s: gap of %d snippets from %d", self.stream,
                    item.t_back - item.t_lost, missing, self.offset)
        self.metrics.gaps.labels(self.stream, "reconnect").inc()
        self.metrics.reconnects.labels(self.stream).inc()
        self._control(self._msg(P.GAP, first=self.offset, count=missing, reason="reconnect",
                                t_capture=item.t_back))
        self.offset += missing
        self.timeline_frames += missing * self.sigma

    # ------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> int:
        ended_by_source = False
        end_detail = "end of stream"
        for item in self.source.items(stop):
            self.metrics.touch()
            if self.abort():
                raise ReplayRequested()
            if isinstance(item, FrameItem):
                image = sanitize_frame(item.image)
                if image is None:
                    self.bad_frames += 1
                    self.metrics.frames_dropped.labels(self.stream).inc()
                    if self.bad_frames in (1, 10, 100) or self.bad_frames % 1000 == 0:
                        log.warning("%s: unusable frame (%s %s) dropped (%d so far)", self.stream,
                                    getattr(item.image, "dtype", type(item.image).__name__),
                                    getattr(item.image, "shape", ""), self.bad_frames)
                    continue
                item.image = image
                if not self.fps:
                    self.fps = self.source.fps or self.cfg.stream.sources.fps_fallback
                self.last_capture = item.t_capture
                self.meta[self.asm.frames_received] = (item.pts, item.t_capture)
                self.frames += 1
                self.metrics.frames.labels(self.stream).inc()
                for clip in self.asm.push(self.pre.frame(item.image)):
                    self._snippet(clip, tail=False)
                if self.source.frames_dropped > self._frames_dropped_seen:
                    self.metrics.frames_dropped.labels(self.stream).inc(
                        self.source.frames_dropped - self._frames_dropped_seen)
                    self._frames_dropped_seen = self.source.frames_dropped
            elif isinstance(item, OutageItem):
                self._outage(item)
            elif isinstance(item, StatusItem):
                if item.state == "ended":
                    ended_by_source = True
                    end_detail = item.detail or end_detail
                    continue  # sent after the flush below
                self.status(item.state, item.detail)
            if stop.is_set():
                break
        if not self.fps:
            self.fps = self.source.fps or self.cfg.stream.sources.fps_fallback
        self._finish_segment()
        self.live = False  # the end is never dropped: block (with the sender's timeout)
        self._flush_control(block=True)
        duration = self.timeline_frames / self.fps
        error = getattr(self.source, "error", None)  # a file whose decoding stopped early (corrupted, truncated)
        if stop.is_set():
            reason = self.stop_reason()
            detail = reason
        else:
            reason = "decode error" if error else "end"
            detail = end_detail if ended_by_source else "end of stream"
        if error:
            self.metrics.decode_errors.labels(self.stream).inc()
            log.error("%s: %s; the stream ends after %d readable frames", self.stream, error, self.frames)
        elif self.frames == 0 and not stop.is_set():
            log.warning("%s: %s gave no frame (a zero-length stream): end of stream with 0 snippets", self.stream,
                        safe_uri(self.source.uri))
        self.status("ended", detail)
        self.send(self._msg(P.EOS, n_snippets=self.offset, n_frames=self.timeline_frames, duration=duration,
                            reason=reason), True)
        log.info("%s: end of stream (%s): %d frames, %d snippets sent, %d dropped", self.stream, reason, self.frames,
                 self.sent, self.dropped)
        return 0


class ZmqSender:
    """``send(frames, block)`` over a PUSH socket; blocking sends give up 5 s after ``stop``."""

    def __init__(self, sock: Any, stop: threading.Event, grace_s: float = 5.0,
                 abort: Callable[[], bool] | None = None) -> None:
        import zmq
        self.zmq = zmq
        self.sock = sock
        self.stop = stop
        self.grace_s = grace_s
        self.abort = abort or (lambda: False)
        sock.setsockopt(zmq.SNDTIMEO, 200)

    def __call__(self, frames: list[Any], block: bool) -> bool:
        zmq = self.zmq
        if not block:
            try:
                self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
                return True
            except zmq.Again:
                return False
        stopped_at = None
        while True:
            try:
                self.sock.send_multipart(frames, copy=False)
                return True
            except zmq.Again:
                if self.abort():
                    return False
                if self.stop.is_set():
                    stopped_at = stopped_at or time.time()
                    if time.time() - stopped_at > self.grace_s:
                        return False


def set_opencv_threads(n: int) -> None:
    """OpenCV's worker threads in this process (``stream.sources.opencv_threads``; 0 leaves OpenCV's
    default). One grabber runs per camera, so the cameras are the parallelism: a pool as wide as
    the machine in every grabber only adds wake-ups (~1.8x a grabber's CPU on two cores)."""
    if n > 0:
        cv2.setNumThreads(n)


def grabber_main(cfg: StreamConfig, stream_id: str, uri: str, endpoint: str, metrics_port: int = 0,
                 log_level: int = logging.INFO, control_endpoint: str | None = None, instance: int = 0) -> None:
    """Process entry point (spawned by the supervisor).

    Once its EOS is sent the process lingers until the supervisor releases it
    (:meth:`stream.worker.WorkerShell.linger_until_released`).

    Replay (file sources): the supervisor's state (``control`` messages) carries the
    run's replay epoch and the streams to send again. When the epoch rises with this
    stream listed (the engine or detector was restarted and lost the stream's in-flight
    state), the grabber reopens the file and sends it again from snippet 0, stamped with
    the new epoch. Receivers drop older-epoch messages and windows already processed;
    events keep their ids, so a subscriber drops the repeats.

    Runtime removal (``menet sources remove``): the supervisor lists the source as
    removed and sends SIGTERM; the stream ends with an EOS of reason ``removed`` and is
    never replayed. ``instance`` (> 0 for a source added again with an id used before) is
    stamped on snippet, status and end-of-stream messages."""
    import zmq

    from .worker import WorkerShell, grabber_target, source_key

    shell = WorkerShell(f"grabber:{stream_id}", cfg, log_level, control_endpoint, metrics_port, torch_threads=False)
    stop = shell.stop
    set_opencv_threads(cfg.stream.sources.opencv_threads)
    try:
        source = open_source(uri, cfg.stream.sources)
    except SourceError as exc:
        log.error("%s: %s", stream_id, exc)
        sys.exit(EXIT_SOURCE_ERROR)
    # IMMEDIATE: snippets queue only on a live connection. The engine binds its endpoint once its model
    # is loaded, so "the socket can send" means "the engine is up"
    sock = shell.socket(zmq.PUSH, endpoint, bind=False, linger_ms=5000, options={zmq.IMMEDIATE: 1})
    replayable = not source.live and control_endpoint is not None
    shell.control.wait_first(5.0)  # the epoch a restarted grabber of a replayed file must stamp
    my_epoch = shell.control.state.epoch if replayable else 0
    me = source_key(stream_id, instance)

    def was_removed() -> bool:
        return me in shell.control.state.removed

    def replay_due() -> bool:
        st = shell.control.state
        return replayable and st.epoch > my_epoch and stream_id in st.replay and not was_removed()

    def stop_reason() -> str:
        return "removed" if was_removed() else "stopped"

    def stop_when_removed() -> None:
        # `menet sources remove`: the supervisor lists this source as removed; it ends like a stop
        # (last snippets, EOS of reason "removed"); SIGTERM stays the supervisor's fallback
        if shell.control.wait_until(lambda s: me in s.removed, float("inf"), interrupt=stop.is_set):
            stop.set()

    threading.Thread(target=stop_when_removed, name="removal", daemon=True).start()

    sender = ZmqSender(sock, stop, abort=replay_due)
    grabber = Grabber(cfg, stream_id, source, sender, shell.metrics, epoch=my_epoch, abort=replay_due,
                      instance=instance, stop_reason=stop_reason)
    shell.serve_metrics(lambda: {"stream": stream_id, "live": source.live, "frames": grabber.frames,
                                 "snippets": grabber.sent, "dropped": grabber.dropped,
                                 "status": "ok" if time.time() - shell.metrics.last_activity < 30 else "degraded"})
    code = 0
    linger_s = cfg.stream.supervisor.shutdown_max_s + 10  # the stop may wait that long for the pipeline
    if source.live:
        # a live camera does not wait: snippets sent while the engine loads would pile up and be dropped,
        # so capture starts once the engine is there to take them (files wait anyway: their sends block)
        if not sock.poll(0, zmq.POLLOUT):
            log.info("%s: waiting for the engine to load before capturing", stream_id)
            while not stop.is_set() and not sock.poll(100, zmq.POLLOUT):
                pass
            if stop.is_set():  # stopped before any engine took the connection: no stream was started
                log.info("%s: stopped while waiting for the engine (nothing was sent)", stream_id)
                source.close()
                shell.close()
                sys.exit(0)
            log.info("%s: engine connected: capturing", stream_id)
    while True:
        try:
            code = grabber.run(stop)
            # linger until released; a replay request while lingering sends the file again
            shell.linger_until_released(grabber_target(stream_id, instance), linger_s, interrupt=replay_due)
            if not replay_due():
                break
        except ReplayRequested:
            pass
        my_epoch = shell.control.state.epoch
        log.warning("%s: replaying the file from snippet 0 (epoch %d)", stream_id, my_epoch)
        source.close()
        source = open_source(uri, cfg.stream.sources)
        grabber = Grabber(cfg, stream_id, source, sender, shell.metrics, epoch=my_epoch, abort=replay_due,
                          instance=instance, stop_reason=stop_reason)
        grabber.seq = P.Sequencer()
    shell.close()
    sys.exit(code)
