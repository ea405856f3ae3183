"""Video sources for the grabber: files, RTSP, V4L2 devices and the synthetic generator.

A source yields items in order: :class:`FrameItem` (a decoded BGR frame with its
PTS and capture clock), :class:`StatusItem` (connecting, live, stalled,
reconnecting, ended, error) and :class:`OutageItem` (a live source was lost at
``t_lost`` and came back at ``t_back``: the grabber turns it into a gap message).

Files and the synthetic generator at ``rate=max`` are *non-live*: the grabber
applies back-pressure and loses nothing. RTSP, V4L2 and ``rate=realtime``
synthetic sources are *live*: a reader thread drains the capture continuously
into a small bounded queue (oldest frames dropped, counted), and a watchdog
reopens a source that stays silent, with exponential backoff.

URIs: ``rtsp://...`` (``rtsps://``), ``/dev/videoN`` or ``v4l2://N``,
``synthetic://NAME?seed=0&duration=30&fps=25&width=128&height=128&classes=5&rate=realtime``,
anything else is a video file (``file://`` prefix allowed).
"""
from __future__ import annotations

import collections
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from .settings import SourceSettings

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class SourceError(RuntimeError):
    """A source cannot be opened; the message names it and says why."""


@dataclass
class FrameItem:
    image: np.ndarray  # BGR uint8 [H, W, 3]
    pts: float | None  # stream seconds from the container/RTP timestamps, when known
    t_capture: float  # wall clock when the frame was read


@dataclass
class StatusItem:
    state: str
    detail: str = ""


@dataclass
class OutageItem:
    t_lost: float
    t_back: float


Item = FrameItem | StatusItem | OutageItem


# ---------------------------------------------------------------- URIs


def source_kind(uri: str) -> str:
    low = uri.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith("v4l2://") or re.match(r"^/dev/video\d+$", uri):
        return "v4l2"
    if low.startswith("synthetic:"):
        return "synthetic"
    return "file"


def safe_uri(uri: str) -> str:
    """The URI without user:password (for logs and status messages)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password or parts.username:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def parse_source_arg(arg: str) -> tuple[str | None, str]:
    """``NAME=URI`` or ``URI`` -> (name or None, uri)."""
    if "=" in arg:
        name, rest = arg.split("=", 1)
        if _NAME_RE.match(name) and rest:
            return name, rest
    return None, arg


def default_stream_id(uri: str) -> str:
    kind = source_kind(uri)
    if kind == "file":
        stem = Path(uri[7:] if uri.startswith("file://") else uri).stem
    elif kind == "synthetic":
        stem = urllib.parse.urlsplit(uri).netloc or "synthetic"
    elif kind == "v4l2":
        stem = "video" + re.sub(r"\D", "", uri)
    else:
        parts = urllib.parse.urlsplit(uri)
        stem = (parts.path.strip("/").replace("/", "-") or parts.hostname or "rtsp")
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "-", stem)[:64] or "stream"
    return stem


def is_live_uri(uri: str) -> bool:
    """Live sources (dropped snippets, no replay, restarted when their grabber dies)."""
    kind = source_kind(uri)
    return kind in ("rtsp", "v4l2") or (kind == "synthetic" and "rate=max" not in uri)


def assign_stream_ids(args: list[str]) -> list[tuple[str, str]]:
    """(stream id, uri) per ``--source``; ids are unique (``-2``, ``-3`` suffixes)."""
    out, seen = [], set()
    for arg in args:
        name, uri = parse_source_arg(arg)
        sid = name or default_stream_id(uri)
        if sid in seen:
            if name:
                raise SourceError(f"stream id {name!r} given twice")
            k = 2
            while f"{sid}-{k}" in seen:
                k += 1
            sid = f"{sid}-{k}"
        seen.add(sid)
        out.append((sid, uri))
    return out


# ---------------------------------------------------------------- sources


class Source:
    live = False
    fps = 0.0

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.frames_dropped = 0
        self.reconnects = 0

    def items(self, stop: threading.Event) -> Iterator[Item]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _file_path(uri: str) -> str:
    return uri[7:] if uri.startswith("file://") else uri


class FileSource(Source):
    """A video file, decoded as ``menet extract`` decodes it (same OpenCV call).

    Like offline extraction, decoding ends at the first frame that does not decode. When
    that happens before the frame count the container reports (a corrupted or truncated
    file), :attr:`error` says so; the frames read until then are a normal, shorter stream.
    """

    def __init__(self, uri: str, cfg: SourceSettings) -> None:
        super().__init__(uri)
        path = _file_path(uri)
        self.path = path
        self.error: str | None = None
        if not Path(path).is_file():
            raise SourceError(f"{path}: no such file")
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise SourceError(f"{path}: {exc.strerror or exc}") from exc
        if size == 0:
            raise SourceError(f"{path}: empty file (0 bytes)")
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise SourceError(f"{path}: cannot open video (not a container FFmpeg can read, or damaged: "
                              "e.g. an mp4 cut short before its index)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if not fps or not math.isfinite(fps) or fps <= 0:
            self.cap.release()
            raise SourceError(f"{path}: the container reports no frame rate")
        self.fps = float(fps)
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and math.isfinite(count) and count > 0 else None

    def items(self, stop: threading.Event) -> Iterator[Item]:
        yield StatusItem("live", "file opened")
        n = 0
        try:
            while not stop.is_set():
                ok, frame = self.cap.read()
                if not ok:
                    break
                n += 1
                pts = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield FrameItem(frame, pts if math.isfinite(pts) else None, time.time())
        finally:
            self.cap.release()
        if stop.is_set():
            yield StatusItem("ended", "stopped")
            return
        # the container's count can be an estimate (duration x fps) for some formats: allow 1 %
        if self.frame_count is not None and n < self.frame_count - max(1, self.frame_count // 100):
            self.error = (f"{self.path}: decoding stopped at frame {n} of {self.frame_count} "
                          "(file corrupted or truncated)")
            yield StatusItem("ended", self.error)
        elif n == 0:
            yield StatusItem("ended", f"{self.path}: no frame in the file (zero-length stream)")
        else:
            yield StatusItem("ended", "end of file")

    def close(self) -> None:
        self.cap.release()


class SyntheticSource(Source):
    """``synth`` (the synthetic generator) rendered on the fly; ``rate=realtime`` paces it (live), ``max`` does not."""

    def __init__(self, uri: str, cfg: SourceSettings) -> None:
        super().__init__(uri)
        from synth import SyntheticVideo, class_names, random_spec

        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query))
        try:
            seed = int(q.pop("seed", 0))
            duration = float(q.pop("duration", 30.0))
            fps = float(q.pop("fps", 25.0))
            width, height = int(q.pop("width", 128)), int(q.pop("height", 128))
            classes = int(q.pop("classes", 5))
            rate = q.pop("rate", "realtime")
            if rate not in ("realtime", "max"):
                raise ValueError(f"rate must be realtime or max, got {rate!r}")
            if q:
                raise ValueError(f"unknown parameter(s) {sorted(q)}")
            spec = random_spec(np.random.default_rng(seed), classes=class_names(classes), width=width,
                               height=height, fps=fps, duration_range=(duration, duration))
            self.video = SyntheticVideo(spec)
        except ValueError as exc:
            raise SourceError(f"{uri}: {exc}") from exc
        self.fps = fps
        self.live = rate == "realtime"
        self.spec = spec

    def items(self, stop: threading.Event) -> Iterator[Item]:
        yield StatusItem("live", f"synthetic, {self.video.num_frames} frames")
        t0 = time.time()
        for i in range(self.video.num_frames):
            if stop.is_set():
                break
            if self.live:
                delay = t0 + i / self.fps - time.time()
                if delay > 0:
                    stop.wait(delay)
            yield FrameItem(self.video.frame(i), i / self.fps, time.time())
        yield StatusItem("ended", "end of synthetic video" if not stop.is_set() else "stopped")


class _FrameQueue:
    """Bounded queue of items; beyond ``max_frames`` frames the oldest frame is dropped."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self.items: collections.deque[Item] = collections.deque()
        self.n_frames = 0
        self.dropped = 0
        self.cond = threading.Condition()

    def put(self, item: Item) -> None:
        with self.cond:
            if isinstance(item, FrameItem):
                if self.n_frames >= self.max_frames:
                    for k, old in enumerate(self.items):
                        if isinstance(old, FrameItem):
                            del self.items[k]
                            self.n_frames -= 1
                            self.dropped += 1
                            break
                self.n_frames += 1
            self.items.append(item)
            self.cond.notify()

    def get(self, timeout: float) -> Item | None:
        with self.cond:
            if not self.items:
                self.cond.wait(timeout)
            if not self.items:
                return None
            item = self.items.popleft()
            if isinstance(item, FrameItem):
                self.n_frames -= 1
            return item

    def __len__(self) -> int:
        return len(self.items)


class LiveSource(Source):
    """RTSP or V4L2: reader thread + watchdog + reconnect with backoff."""

    live = True

    def __init__(self, uri: str, cfg: SourceSettings, opener: Callable[[], Any]) -> None:
        super().__init__(uri)
        self.cfg = cfg
        self.opener = opener
        self.fps = 0.0
        self.queue = _FrameQueue(cfg.capture_queue)
        self.last_frame = 0.0
        self._generation = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # -- reader thread
    def _start_reader(self, first: bool, lost_at: float | None) -> None:
        with self._lock:
            self._generation += 1
            gen = self._generation
        threading.Thread(target=self._reader, args=(gen, first, lost_at), name=f"reader-{gen}", daemon=True).start()

    def _current(self, gen: int) -> bool:
        return gen == self._generation and not self._stop.is_set()

    def _reader(self, gen: int, first: bool, lost_at: float | None) -> None:
        backoff = self.cfg.reconnect_min_s
        while self._current(gen):
            self.queue.put(StatusItem("connecting" if first else "reconnecting", safe_uri(self.uri)))
            try:
                cap = self.opener()
                opened = cap is not None and cap.isOpened()
            except Exception as exc:  # noqa: BLE001 - a capture backend may raise anything
                log.warning("%s: open failed: %s", safe_uri(self.uri), exc)
                cap, opened = None, False
            if not self._current(gen):
                if cap is not None:
                    cap.release()
                return
            if not opened:
                self.reconnects += 1
                self.queue.put(StatusItem("reconnecting", f"cannot open; retry in {backoff:.1f} s"))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
                continue
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not self.fps:
                self.fps = float(fps) if fps and math.isfinite(fps) and 0 < fps <= 240 else self.cfg.fps_fallback
            backoff = self.cfg.reconnect_min_s
            self.last_frame = time.time()
            self.queue.put(StatusItem("live", safe_uri(self.uri)))
            if lost_at is not None:
                self.queue.put(OutageItem(lost_at, time.time()))
                lost_at = None
            first = False
            while self._current(gen):
                ok, frame = cap.read()
                now = time.time()
                if not ok or frame is None:
                    break
                if not self._current(gen):
                    break
                pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                self.last_frame = now
                self.queue.put(FrameItem(frame, pts if math.isfinite(pts) else None, now))
            cap.release()
            if not self._current(gen):
                return
            lost_at = self.last_frame
            self.reconnects += 1
            self.queue.put(StatusItem("stalled", "no frame within the read timeout; reopening"))

    def wait_fps(self, timeout: float) -> float:
        t0 = time.time()
        while not self.fps and time.time() - t0 < timeout:
            time.sleep(0.01)
        return self.fps or self.cfg.fps_fallback

    def items(self, stop: threading.Event) -> Iterator[Item]:
        self._start_reader(first=True, lost_at=None)
        stalled_reported = False
        watchdog = self.cfg.stall_timeout_s + self.cfg.read_timeout_s + 2.0
        try:
            while not stop.is_set():
                item = self.queue.get(timeout=0.2)
                self.frames_dropped = self.queue.dropped
                if item is not None:
                    if isinstance(item, FrameItem):
                        stalled_reported = False
                    yield item
                    continue
                silent = time.time() - self.last_frame if self.last_frame else 0.0
                if self.last_frame and silent > self.cfg.stall_timeout_s and not stalled_reported:
                    stalled_reported = True
                    yield StatusItem("stalled", f"no frame for {silent:.1f} s")
                if self.last_frame and silent > watchdog:
                    # the reader is stuck inside the backend despite its timeouts: abandon it
                    log.warning("%s: reader silent for %.1f s; starting a new one", safe_uri(self.uri), silent)
                    lost = self.last_frame
                    self.last_frame = time.time()
                    self.reconnects += 1
                    self._start_reader(first=False, lost_at=lost)
        finally:
            self.close()
        yield StatusItem("ended", "stopped")

    def close(self) -> None:
        self._stop.set()


# FFmpeg options the user set for OpenCV (key;value|key;value), kept under ours
_USER_FFMPEG_OPTIONS = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
RTSP_TRANSPORTS = ("auto", "tcp", "udp")


def rtsp_transports(uri: str, default: str) -> tuple[str, list[str]]:
    """The URI to open (without its fragment) and the RTSP transports to try, in order.

    ``#rtsp_transport=tcp|udp|auto`` on the URI overrides ``stream.sources.rtsp_transport``
    for that source (a fragment never reaches the server). ``auto``: TCP (no loss on a lossy
    network), then UDP (servers that offer nothing else)."""
    base, _, fragment = uri.partition("#")
    chosen = urllib.parse.parse_qs(fragment).get("rtsp_transport", [default])[-1]
    if chosen not in RTSP_TRANSPORTS:
        raise SourceError(f"{safe_uri(uri)}: rtsp_transport must be one of {', '.join(RTSP_TRANSPORTS)}, "
                          f"got {chosen!r}")
    return base, (["tcp", "udp"] if chosen == "auto" else [chosen])


def _ffmpeg_options(transport: str) -> str:
    user = [o for o in _USER_FFMPEG_OPTIONS.split("|") if o and not o.startswith("rtsp_transport;")]
    return "|".join([f"rtsp_transport;{transport}"] + user)


def _rtsp_opener(uri: str, cfg: SourceSettings) -> Callable[[], Any]:
    base, transports = rtsp_transports(uri, cfg.rtsp_transport)

    def open_() -> Any:
        cap = None
        for transport in transports:
            # FFmpeg takes its options from the environment when a capture opens (one source per
            # grabber process, so the variable is this source's)
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = _ffmpeg_options(transport)
            cap = cv2.VideoCapture(base, cv2.CAP_FFMPEG, [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000)])
            if cap.isOpened():
                if len(transports) > 1:
                    log.info("%s: opened over RTSP/%s", safe_uri(base), transport.upper())
                return cap
            cap.release()
            log.info("%s: cannot open over RTSP/%s%s", safe_uri(base), transport.upper(),
                     "; trying the next transport" if transport != transports[-1] else "")
        return cap
    return open_


def _v4l2_opener(uri: str) -> Callable[[], Any]:
    dev = uri[7:] if uri.lower().startswith("v4l2://") else uri
    target: Any = int(dev) if dev.isdigit() else dev

    def open_() -> Any:
        return cv2.VideoCapture(target, cv2.CAP_V4L2)
    return open_


def open_source(uri: str, cfg: SourceSettings) -> Source:
    kind = source_kind(uri)
    if kind == "file":
        return FileSource(uri, cfg)
    if kind == "synthetic":
        return SyntheticSource(uri, cfg)
    if kind == "rtsp":
        return LiveSource(uri, cfg, _rtsp_opener(uri, cfg))
    return LiveSource(uri, cfg, _v4l2_opener(uri))


def probe_source(uri: str, cfg: SourceSettings) -> None:
    """Raise :class:`SourceError` when ``uri`` cannot be opened now (``menet run``'s start check)."""
    kind = source_kind(uri)
    if kind in ("file", "synthetic"):
        src = open_source(uri, cfg)
        src.close()
        return
    opener = _rtsp_opener(uri, cfg) if kind == "rtsp" else _v4l2_opener(uri)
    cap = opener()
    try:
        if cap is None or not cap.isOpened():
            tried = ""
            if kind == "rtsp":
                tried = f" over RTSP/{'+'.join(t.upper() for t in rtsp_transports(uri, cfg.rtsp_transport)[1])}"
            raise SourceError(f"{safe_uri(uri)}: cannot open {kind} source{tried} "
                              f"(open timeout {cfg.open_timeout_s:g} s)")
    finally:
        if cap is not None:
            cap.release()
