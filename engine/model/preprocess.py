"""Frame preprocessing shared by every path that feeds the backbone.

The grabber (online), ``menet extract`` (offline) and the tests all call these
functions, so a snippet is turned into exactly the same tensor everywhere.

Steps: BGR uint8 frames (as OpenCV decodes them) -> resize so the short side is
``resize_short`` -> centre crop ``crop`` -> RGB float in [0, 1] -> Kinetics
mean/std -> layout [3, T, H, W]. With ``fit="stretch"`` the frame is first resized to the
crop's aspect (short side ``resize_short``), so the crop keeps the whole picture: a 320x240
camera under a square crop loses no side (``data.frame_fit``).
"""
from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

    from ..config import DataConfig

# Kinetics-400 statistics used by torchvision's and IG65M's video models (RGB order).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class Preprocess:
    resize_short: int
    crop: tuple[int, int]  # (height, width)
    fit: str = "crop"  # "crop" | "stretch" (data.frame_fit)

    def __post_init__(self) -> None:
        if self.fit not in ("crop", "stretch"):
            raise ValueError(f"frame fit must be 'crop' or 'stretch', got {self.fit!r}")

    @classmethod
    def of(cls, data: DataConfig) -> "Preprocess":
        """The preprocessing a config's ``data`` section asks for (extraction and grabbers alike)."""
        return cls(data.resize_short, (int(data.crop[0]), int(data.crop[1])), data.frame_fit)

    def frame(self, bgr: np.ndarray) -> np.ndarray:
        """One BGR uint8 frame [H, W, 3] -> resized, centre-cropped RGB uint8 [h, w, 3]."""
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame of shape [H, W, 3], got {bgr.dtype} {bgr.shape}")
        h, w = bgr.shape[:2]
        if self.fit == "stretch":  # the frame takes the crop's aspect: nothing falls outside the crop
            h, w = self.crop
        scale = self.resize_short / min(h, w)
        # Never resize below the crop: round up so the crop always fits.
        nh, nw = max(self.crop[0], round(h * scale)), max(self.crop[1], round(w * scale))
        h, w = bgr.shape[:2]
        if (nh, nw) != (h, w):
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            bgr = cv2.resize(bgr, (nw, nh), interpolation=interp)
        top, left = (nh - self.crop[0]) // 2, (nw - self.crop[1]) // 2
        crop = bgr[top:top + self.crop[0], left:left + self.crop[1]]
        return np.ascontiguousarray(crop[:, :, ::-1])

    def frames(self, frames: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Frames -> uint8 [T, h, w, 3] RGB, the form that travels on the wire."""
        return np.stack([self.frame(f) for f in frames])


def to_clip_tensor(rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB [..., T, H, W, 3] -> normalised float [..., 3, T, H, W].

    Accepts a batch dimension in front, so the engine normalises a whole batch
    of snippets in one call.
    """
    import torch  # here, not at module level: grabbers import this module and need no torch (~200 MB RSS each)

    x = torch.as_tensor(rgb)
    if x.dtype != torch.uint8 or x.shape[-1] != 3 or x.dim() < 4:
        raise ValueError(f"expected uint8 [..., T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    x = x.float().div_(255.0)
    mean = torch.tensor(KINETICS_MEAN, dtype=x.dtype, device=x.device)  # on x's device: GPU normalisation
    std = torch.tensor(KINETICS_STD, dtype=x.dtype, device=x.device)
    x = (x - mean) / std
    return x.movedim(-1, -4).contiguous()


def clip_indices(snippet_index: int, sigma: int, clip_length: int, num_frames: int) -> np.ndarray:
    """Frame indices of the backbone clip for snippet ``snippet_index``.

    A snippet covers frames [i*sigma, (i+1)*sigma); the backbone sees
    ``clip_length`` consecutive frames centred on the snippet (paper sec. 4.1
    gives sigma but not how a clip longer than sigma is placed: centring keeps
    the feature aligned with the snippet's own time). Indices are clamped at the
    video edges by repeating the first/last frame.
    """
    centre = snippet_index * sigma + sigma / 2.0
    start = int(np.floor(centre - clip_length / 2.0))
    return np.clip(np.arange(start, start + clip_length), 0, max(num_frames - 1, 0))
