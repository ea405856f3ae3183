"""The online core: pure, socket-free pieces that turn snippet features into events.

``layout`` (which snippets each window holds) -> ``windower`` (per-stream rolling
windows) -> [the model: MREM, SFPN + heads, decoding] -> ``merger`` (windows merged,
Soft-NMS, final detections; its ``joiner`` joins the pieces of actions longer than a window) -> ``events`` (stable event ids, the memory of ids seen).

Offline inference (:mod:`engine.inference`) and the online workers (``stream/``) run
these same objects, so online equals offline by construction. Nothing here knows
sockets, processes or transport settings.
"""
from .events import EventIdentity, RecentIds
from .joiner import WindowJoiner
from .layout import WindowLayout, window_pad, window_starts, window_valid_length
from .merger import StreamMerger
from .windower import StreamWindower, Window, video_windows

__all__ = ["EventIdentity", "RecentIds", "StreamMerger", "StreamWindower", "Window", "WindowJoiner", "WindowLayout",
           "video_windows", "window_pad", "window_starts", "window_valid_length"]
