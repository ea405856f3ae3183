"""Per-stream rolling windows: snippet features in, windows of the shared layout out.

Socket-free and model-free: the engine worker feeds it the features of a live or file
stream snippet by snippet, offline inference feeds it a whole video
(:func:`video_windows`); both get the same windows, so online equals offline by
construction.

Emission: window ``s`` (segment-local snippet index) goes out as soon as snippets
``s .. s+W-1`` are there, for ``s = 0, hop, 2 hop, ...``. At the end of a segment the
windows still missing from :func:`~engine.online.layout.window_starts` follow (the last
one aligned to the end; a segment shorter than a window gets one zero-padded window).

Early windows (live streams, ``early=True``; choice, the paper has no live input): until a
segment's first full window, a partial window at its start goes out every ``hop`` snippets
(``valid`` = the snippets so far, zero-padded), flagged ``early``. Without them nothing
is seen of the first window length of a stream, or after every restart of a segment (41 s
for ``tiny``). They feed the event lifecycle only (provisional events), never the merge,
so final events are the same with or without them; the regular windows are unchanged.

Gaps (choice: the paper has no live input): a gap of at most ``gap_fill`` snippets is
filled with zero features (the value window padding uses) so indices stay on the
stream's time line; a longer one ends the current *segment* (its remaining windows are
flushed as at end of stream) and a new segment starts after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .layout import WindowLayout


@dataclass
class Window:
    """One window of one stream, ready for MREM."""

    start: int  # absolute snippet index of the window's first snippet
    valid: int  # real snippets; the rest (end of a short segment) is zero padding
    final: bool  # the last window of its segment
    duration: float | None  # seconds: the stream's end, when the segment ended with the stream
    features: np.ndarray  # [C_feat, W] float32, padding zero
    index: int  # the stream's window counter (it runs on across segments)
    stamp: Any = None  # what :meth:`StreamWindower.reserve` stored for the last real snippet
    early: bool = False  # a partial look before the segment's first full window (module docstring)


@dataclass
class StreamWindower:
    """The rolling windows of one stream.

    Snippets are announced in order with :meth:`reserve` (a slot on the stream's time
    line; the engine reserves on arrival, before the batched MFE has run) and their
    features arrive with :meth:`put`; :meth:`ready` then returns the windows complete so
    far. ``tail`` snippets (repeated frames at a file's end, whose clip was clamped) hold
    back the windows ending on them until :meth:`end` says where the stream ends.
    """

    layout: WindowLayout
    channels: int
    gap_fill: int | None = None  # None: the layout's hop
    base: int = 0  # absolute snippet index of the segment's local snippet 0
    early: bool = False  # emit early windows (module docstring): live streams
    count: int = 0  # local snippets present (real or zero-filled)
    window_index: int = 0
    _feats: dict[int, np.ndarray] = field(default_factory=dict)
    _stamps: dict[int, Any] = field(default_factory=dict)
    _next_start: int = 0  # local start of the next window emitted while streaming
    _last_emitted: int | None = None
    _tail_at: int | None = None  # local index of the first clamped snippet, while it is the newest
    _last_stamp: Any = None
    _early_valid: int = 0  # snippets the last early window held

    @property
    def expected(self) -> int:
        """Absolute index of the next snippet."""
        return self.base + self.count

    @property
    def fill_limit(self) -> int:
        return self.layout.hop if self.gap_fill is None else self.gap_fill

    def reserve(self, index: int, stamp: Any = None, tail: bool = False) -> None:
        """Announce snippet ``index`` (must be :attr:`expected`; gaps go through :meth:`gap`)."""
        if index != self.expected:
            raise ValueError(f"snippet {index} reserved, {self.expected} expected")
        local = self.count
        self.count += 1
        if not tail:
            self._tail_at = None
        elif self._tail_at is None:
            self._tail_at = local
        self._stamps[local] = stamp
        self._last_stamp = stamp

    def put(self, index: int, feature: np.ndarray) -> None:
        """The feature [C_feat] of a reserved snippet."""
        self._feats[index - self.base] = feature

    def ready(self) -> list[Window]:
        """Windows whose snippets are all there, in order."""
        out = []
        W = self.layout.window
        if self.early and self._last_emitted is None:
            hop = self.layout.hop
            while self._early_valid + hop < W and self._early_valid + hop <= self.count:
                self._early_valid += hop
                out.append(self._emit_early(self._early_valid))
        while self._next_start + W <= self.count:
            if self._tail_at is not None and self._next_start + W > self._tail_at:
                break  # the window ends on clamped snippets: wait for the end of stream (its duration)
            out.append(self._emit(self._next_start, W, final=False, duration=None))
            self._next_start += self.layout.hop
        return out

    def gap(self, next_index: int, seconds_per_snippet: float) -> tuple[list[Window], bool]:
        """Snippets ``expected .. next_index - 1`` will never come.

        Returns the windows this makes ready and whether a new segment started (the gap
        was longer than :attr:`fill_limit`)."""
        missing = next_index - self.expected
        if missing <= 0:
            return [], False
        if missing <= self.fill_limit:
            self.count += missing  # absent features read as zeros
            self._tail_at = None
            return self.ready(), False
        out = self.end(duration=self.expected * seconds_per_snippet)
        self._restart(next_index)
        return out, True

    def end(self, n_snippets: int | None = None, duration: float | None = None) -> list[Window]:
        """The end of the segment: the layout's windows not emitted yet.

        ``n_snippets``: the stream's length in absolute snippets when the source says
        (trailing snippets that never arrived read as zeros)."""
        n = self.count if n_snippets is None else n_snippets - self.base
        if n > self.count:
            self.count = n
        starts = [s for s in self.layout.starts(n) if self._last_emitted is None or s > self._last_emitted]
        return [self._emit(s, min(self.layout.window, n - s), final=i == len(starts) - 1, duration=duration)
                for i, s in enumerate(starts)]

    def _restart(self, base: int) -> None:
        index = self.window_index
        fresh = StreamWindower(self.layout, self.channels, self.gap_fill, base=base, early=self.early,
                               window_index=index)
        self.__dict__.update(fresh.__dict__)

    def _emit_early(self, valid: int) -> Window:
        """The segment's first ``valid`` snippets as a zero-padded window; it keeps every feature (the
        full window still needs them) and takes the index the next regular window will carry."""
        w = np.zeros((self.channels, self.layout.window), np.float32)
        for j in range(valid):
            f = self._feats.get(j)
            if f is not None:
                w[:, j] = f
        stamp = self._stamps.get(valid - 1, self._last_stamp)
        return Window(self.base, valid, False, None, w, self.window_index, stamp, early=True)

    def _emit(self, start: int, valid: int, final: bool, duration: float | None) -> Window:
        w = np.zeros((self.channels, self.layout.window), np.float32)
        for j in range(valid):
            f = self._feats.get(start + j)
            if f is not None:
                w[:, j] = f
        last = start + valid - 1
        stamp = self._stamps.get(last, self._last_stamp)
        win = Window(self.base + start, valid, final, duration, w, self.window_index, stamp)
        self.window_index += 1
        self._last_emitted = start
        for k in [k for k in self._feats if k <= start]:
            del self._feats[k]
        for k in [k for k in self._stamps if k <= start]:
            del self._stamps[k]
        return win


def video_windows(features: np.ndarray, layout: WindowLayout) -> list[Window]:
    """The windows of a whole video's snippet features [N, C_feat] (offline inference)."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    windower = StreamWindower(layout, feats.shape[1])
    out: list[Window] = []
    for i, f in enumerate(feats):
        windower.reserve(i)
        windower.put(i, f)
        out += windower.ready()
    return out + windower.end(len(feats))
