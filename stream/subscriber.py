"""Event subscriber: a validated view of the detector's PUB socket (``menet subscribe``).

Any ZeroMQ client can do the same (docs/protocol.md): SUB socket, connect to
the event endpoint, subscribe to a stream id (topic) or to everything (empty
topic), read ``[topic, msgpack header]`` messages.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Any, Iterator

import zmq

from . import protocol as P

log = logging.getLogger(__name__)


class Subscriber:
    """Receive validated messages from the event endpoint.

    ``streams``: stream ids to receive (``None``: all). ``types``: message types
    kept (default: every type; events, status, gap and eos are published).
    Malformed messages are counted in :attr:`malformed` and dropped with a log line.

    Events have a lifecycle (protocol v2): messages for one ``event_id`` go provisional /
    open -> ... -> final or retracted, and the latest one supersedes the earlier ones.
    :attr:`latest` keeps the latest message per ``(stream, event_id)`` (the last
    ``dedup_size`` ids). ``final_only``: keep final events only (what a v1 client saw).

    ``dedup``: drop an event message that repeats the latest one for its id (ids are stable:
    after a worker restart the pipeline may send an event again, see docs/streaming.md), and
    anything for an id already final or retracted; repeats are counted in :attr:`duplicates`.
    ``curve``: (client public, client secret, server public) keys for a CURVE endpoint.
    ``endpoint``: one event endpoint, or a list: the detectors of a fleet (each stream is
    published by exactly one of them; one SUB socket reads them all, fairly).
    """

    def __init__(self, endpoint: str | list[str], streams: list[str] | None = None, types: tuple[str, ...] | None = None,
                 hwm: int = 100000, dedup: bool = True, dedup_size: int = 100000,
                 curve: tuple[bytes, bytes, bytes] | None = None, final_only: bool = False) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.dedup = dedup
        self.dedup_size = dedup_size
        self.final_only = final_only
        self.latest: collections.OrderedDict[tuple[str, str], dict[str, Any]] = collections.OrderedDict()
        self.duplicates = 0
        self.streams = set(streams) if streams else None
        for topic in (streams or [""]):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        if not endpoints:
            raise ValueError("Subscriber needs at least one endpoint")
        for ep in endpoints:
            self.sock.connect(ep)
        self.types = types
        self.malformed = 0
        self.endpoint = endpoints[0] if len(endpoints) == 1 else endpoints
        # messages the detector published that never arrived (ZeroMQ drops for a subscriber that falls
        # stream.transport.event_queue_size behind): gaps in its `seq`, one counter per detector process.
        # Only countable when this socket receives everything one detector publishes.
        self.tracks_losses = len(endpoints) == 1 and self.streams is None
        self.lost = 0
        self.publisher_restarts = 0  # seq went back: a new detector process (its own count from 0)
        self._last_seq: int | None = None

    def recv(self, timeout: float | None = None) -> P.Message | None:
        """The next kept message, or ``None`` after ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.sock.poll(None if left is None else int(left * 1000)):
                return None
            frames = self.sock.recv_multipart()
            try:
                msg = P.decode(frames, with_topic=True)
            except P.ProtocolError as exc:
                self.malformed += 1
                log.warning("subscriber: malformed message dropped: %s", exc)
                continue
            self._count_losses(msg.header.get("seq"))
            if self.streams is not None and msg.topic not in self.streams:
                continue  # prefix match of another stream id
            if self.types is not None and msg.type not in self.types:
                continue
            if msg.type == P.EVENT:
                h = msg.header
                key = (h["stream"], h["event_id"])
                before = self.latest.get(key)
                if self.dedup and before is not None and (event_state(before) in ("final", "retracted")
                                                          or _same_event(before, h)):
                    self.duplicates += 1
                    continue
                self.latest[key] = h
                self.latest.move_to_end(key)
                if len(self.latest) > self.dedup_size:
                    self.latest.popitem(last=False)
                if self.final_only and event_state(h) != "final":
                    continue
            return msg

    def _count_losses(self, seq: Any) -> None:
        if not self.tracks_losses or not isinstance(seq, int) or isinstance(seq, bool):
            return
        last, self._last_seq = self._last_seq, seq
        if last is None:
            return
        if seq <= last:
            self.publisher_restarts += 1
        elif seq > last + 1:
            self.lost += seq - last - 1
            log.warning("subscriber: %d message(s) from the detector lost (seq %d..%d): this subscriber fell "
                        "stream.transport.event_queue_size messages behind; %d lost so far", seq - last - 1,
                        last + 1, seq - 1, self.lost)

    def __iter__(self) -> Iterator[P.Message]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def event_state(h: dict[str, Any]) -> str:
    """An event message's lifecycle state (a v1 event, without one, is final)."""
    return h.get("state", "final")


def _same_event(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("state", "label", "start", "end", "score"))


def format_message(h: dict[str, Any]) -> str:
    """One human-readable line per message."""
    t = h["type"]
    if t == P.EVENT:
        return (f"{h['stream']}  {event_state(h):<11} {h['start']:9.2f} - {h['end']:9.2f} s  {h['label']:<12} "
                f"{h['score']:.3f}  id {h['event_id']}  window {h['window']}  compute latency {h['latency_s']:.2f} s")
    if t == P.STATUS:
        return f"{h['stream']}  [{h['state']}] {h.get('detail', '')}"
    if t == P.GAP:
        return f"{h['stream']}  [gap] {h['count']} snippets from {h['first']} ({h['reason']})"
    if t == P.EOS:
        return f"{h['stream']}  [end of stream] {h.get('reason', '')}"
    return f"{h.get('stream', '')}  [{t}]"
