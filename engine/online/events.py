"""Event identity: stable ids for a stream's detections and the memory of ids seen.

An event id is a hash of the stream, the source instance, the label and the segment
(to 0.1 ms), so a file replayed after a worker restart publishes the same ids and a
deduplicating subscriber drops the repeats (docs/streaming.md, "Worker restarts"). A
source removed and added again with the same stream id is a new *instance*: its ids
cannot repeat the old ones.
"""
from __future__ import annotations

import collections
import hashlib
import math


class RecentIds:
    """The event ids of a stream that a new event could still collide with.

    Two events get the same base id only when they have the same stream, label, start and
    end (to 0.1 ms), i.e. the same segment published twice. Every event the merger can
    still release ends at or after :meth:`StreamMerger.emit_floor
    <engine.online.merger.StreamMerger.emit_floor>`, so an id whose segment ended
    before that floor can never be needed again: :meth:`forget_ending_before` drops it.
    Keeping the last 65536 ids instead (count bound only) was bounded on paper but held
    ~130 B per id, ~8 MB per stream, reached only after 65536 events per stream: the
    30-minute soak (86k events per stream) saw the detector grow +1.07 MB/min from it.
    Both bounds depend on the stream's content only, so a replayed file stream still gets
    the same ids. ``capacity`` stays as a backstop (the last ``capacity`` ids at most).
    """

    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._order: collections.deque[tuple[str, float]] = collections.deque()  # (id, segment end)
        self._set: set[str] = set()

    def __contains__(self, eid: object) -> bool:
        return eid in self._set

    def __len__(self) -> int:
        return len(self._set)

    def add(self, eid: str, end: float = math.inf) -> None:
        if eid in self._set:
            return
        self._set.add(eid)
        self._order.append((eid, end))
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft()[0])

    def forget_ending_before(self, t: float) -> None:
        """Drop the ids of segments that ended before ``t`` (seconds), oldest first.

        Publication order is not end order: an id stays until every older one is dropped,
        which happens once the floor passes it (released ends never exceed the merger's cut)."""
        order = self._order
        while order and order[0][1] < t:
            self._set.discard(order.popleft()[0])


class EventIdentity:
    """Ids for one stream's events: :meth:`assign` per published detection."""

    def __init__(self, stream: str, instance: int = 0, capacity: int = 65536) -> None:
        self.stream = stream
        self.instance = instance
        self.recent = RecentIds(capacity)

    def assign(self, label: int, start: float, end: float) -> str:
        """The id of detection ``(label, start, end)``; a second detection with the same key
        (the same segment twice) gets a derived id, so ids never collide within memory."""
        key = f"{self.stream}|{label}|{start:.4f}|{end:.4f}" + (f"|i{self.instance}" if self.instance else "")
        eid = _digest(key)
        k = 2
        while eid in self.recent:
            eid = _digest(f"{key}|{k}")
            k += 1
        self.recent.add(eid, end)
        return eid

    def forget_ending_before(self, t: float) -> None:
        self.recent.forget_ending_before(t)

    def __len__(self) -> int:
        return len(self.recent)


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
