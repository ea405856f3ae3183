"""THE window layout: which snippets each window holds, offline and online alike.

One setting decides it: ``data.hop``, the snippets between the starts of two windows
(paper sec. 4.1: windows with 50 % overlap, i.e. hop = window / 2). Training windows
(:mod:`engine.training.dataset`), offline inference (:mod:`engine.inference`) and the
online windower (:class:`engine.online.windower.StreamWindower`) all take their starts
from :func:`window_starts`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def window_starts(num_snippets: int, window: int, hop: int | None = None) -> list[int]:
    """First snippet of each sliding window over a video of ``num_snippets``.

    Windows hold ``window`` snippets and advance by ``hop`` (default: half a window).
    Choice (the paper does not say): the last window is *aligned to the video end*
    (start ``num_snippets - window``) instead of padded, so every window but one of a
    short video holds only real snippets; it overlaps its predecessor by more than
    ``window - hop`` when the length is not a multiple of the hop. A video shorter than
    one window gets a single window at 0, padded at the end by :func:`window_pad`
    snippets. An empty video has no windows.

    Examples (window 256, hop 128): 100 -> [0] (156 padded); 256 -> [0];
    512 -> [0, 128, 256]; 300 -> [0, 44].
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    hop = max(1, window // 2) if hop is None else hop
    if not 1 <= hop <= window:
        raise ValueError(f"hop must be in 1..window ({window}), got {hop}")
    if num_snippets < 0:
        raise ValueError(f"num_snippets must be >= 0, got {num_snippets}")
    if num_snippets == 0:
        return []
    starts = [0]
    while starts[-1] + window < num_snippets:
        nxt = starts[-1] + hop
        if nxt + window >= num_snippets:
            nxt = num_snippets - window  # align the last window to the end
        starts.append(nxt)
    return starts


def window_valid_length(num_snippets: int, start: int, window: int) -> int:
    """Real (unpadded) snippets in the window starting at ``start``."""
    return max(0, min(window, num_snippets - start))


def window_pad(num_snippets: int, window: int) -> int:
    """Padding snippets appended to the (single) window of a video shorter than a window."""
    return max(0, window - num_snippets) if num_snippets > 0 else 0


@dataclass(frozen=True)
class WindowLayout:
    """``window`` snippets per window, a new window every ``hop`` snippets."""

    window: int
    hop: int

    def __post_init__(self) -> None:
        if self.window < 1 or not 1 <= self.hop <= self.window:
            raise ValueError(f"a window layout needs window >= 1 and hop in 1..window, got "
                             f"window {self.window}, hop {self.hop}")

    @classmethod
    def of(cls, cfg: Any) -> "WindowLayout":
        """The layout of an :class:`engine.config.MENetConfig` (``data.window``, ``data.hop``)."""
        return cls(cfg.data.window, cfg.data.hop)

    def starts(self, num_snippets: int) -> list[int]:
        return window_starts(num_snippets, self.window, self.hop)
