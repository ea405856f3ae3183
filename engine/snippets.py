"""Grouping decoded frames into snippets and backbone clips.

One definition shared by offline extraction (``menet extract``) and the live
grabber, so snippet i means the same frames everywhere: snippet i covers frames
[i*sigma, (i+1)*sigma) and its clip is ``clip_indices(i, ...)`` (centred,
clamped at the ends). Frames arrive one by one; a snippet is emitted as soon
as the last frame its clip needs has arrived (or the stream ended), and frames
no later clip needs are released, so memory stays bounded for any video length.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .model.preprocess import clip_indices


@dataclass
class SnippetClip:
    index: int
    frames: np.ndarray  # uint8 [clip_length, H, W, 3], as the frames were given


def num_snippets(num_frames: int, sigma: int) -> int:
    """A trailing partial snippet counts: its clip is clamped to the last frame."""
    return math.ceil(num_frames / sigma)


def snippet_seconds(index: int, sigma: int, fps: float) -> tuple[float, float]:
    """Stream time covered by snippet ``index``."""
    return index * sigma / fps, (index + 1) * sigma / fps


def lookahead_frames(sigma: int, clip_length: int) -> int:
    """Frames past a snippet's own last frame that its clip needs (live latency)."""
    last_needed = int(clip_indices(0, sigma, clip_length, 1 << 30)[-1])
    return max(0, last_needed - (sigma - 1))


class SnippetAssembler:
    """Feed frames with :meth:`push`; collect finished snippet clips; :meth:`finish` at the end."""

    def __init__(self, sigma: int, clip_length: int) -> None:
        self.sigma, self.clip_length = sigma, clip_length
        self._frames: dict[int, np.ndarray] = {}
        self._received = 0
        self._next = 0

    @property
    def frames_received(self) -> int:
        return self._received

    def push(self, frame: np.ndarray) -> list[SnippetClip]:
        self._frames[self._received] = frame
        self._received += 1
        return self._emit(final=False)

    def finish(self) -> list[SnippetClip]:
        return self._emit(final=True)

    def _emit(self, final: bool) -> list[SnippetClip]:
        out = []
        total = num_snippets(self._received, self.sigma) if final else None
        while True:
            i = self._next
            if final:
                if i >= total:
                    break
                idx = clip_indices(i, self.sigma, self.clip_length, self._received)
            else:
                # the unclamped clip must be fully received; clamping at the start is fine
                idx = clip_indices(i, self.sigma, self.clip_length, 1 << 62)
                if idx[-1] >= self._received:
                    break
            out.append(SnippetClip(i, np.stack([self._frames[int(k)] for k in idx])))
            self._next += 1
            keep_from = int(clip_indices(self._next, self.sigma, self.clip_length, 1 << 62)[0])
            for k in [k for k in self._frames if k < keep_from]:
                del self._frames[k]
        return out


def iter_snippet_clips(frames: Iterable[np.ndarray], sigma: int, clip_length: int) -> Iterator[SnippetClip]:
    assembler = SnippetAssembler(sigma, clip_length)
    for frame in frames:
        yield from assembler.push(frame)
    yield from assembler.finish()
