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

    ``dedup``: drop an event whose ``event_id`` was already received (ids are stable:
    after a worker restart the pipeline may send an event again, see docs/streaming.md);
    the last ``dedup_size`` ids are remembered; repeats are counted in :attr:`duplicates`.
    ``curve``: (client public, client secret, server public) keys for a CURVE endpoint.
    """

    def __init__(self, endpoint: str, streams: list[str] | None = None, types: tuple[str, ...] | None = None,
                 hwm: int = 100000, dedup: bool = True, dedup_size: int = 100000,
                 curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.dedup = dedup
        self.dedup_size = dedup_size
        self.seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self.duplicates = 0
        self.streams = set(streams) if streams else None
        for topic in (streams or [""]):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.sock.connect(endpoint)
        self.types = types
        self.malformed = 0
        self.endpoint = endpoint

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
            if self.streams is not None and msg.topic not in self.streams:
                continue  # prefix match of another stream id
            if self.types is not None and msg.type not in self.types:
                continue
            if self.dedup and msg.type == P.EVENT:
                key = (msg.header["stream"], msg.header["event_id"])
                if key in self.seen:
                    self.duplicates += 1
                    continue
                self.seen[key] = None
                if len(self.seen) > self.dedup_size:
                    self.seen.popitem(last=False)
            return msg

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


def format_message(h: dict[str, Any]) -> str:
    """One human-readable line per message."""
    t = h["type"]
    if t == P.EVENT:
        return (f"{h['stream']}  {h['start']:9.2f} - {h['end']:9.2f} s  {h['label']:<12} {h['score']:.3f}  "
                f"id {h['event_id']}  window {h['window']}  latency {h['latency_s']:.2f} s")
    if t == P.STATUS:
        return f"{h['stream']}  [{h['state']}] {h.get('detail', '')}"
    if t == P.GAP:
        return f"{h['stream']}  [gap] {h['count']} snippets from {h['first']} ({h['reason']})"
    if t == P.EOS:
        return f"{h['stream']}  [end of stream] {h.get('reason', '')}"
    return f"{h.get('stream', '')}  [{t}]"
