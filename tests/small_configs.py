"""A shrunk tiny network for fast tests (window 32, 4x32x32 clips, narrow heads).

Not a test module: the training and streaming tests add their own sections to it.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SMALL_NETWORK = """extends: {tiny}
data:
  sigma: 4
  clip_length: 4
  resize_short: 36
  crop: [32, 32]
  window: 32
model:
  channels: 16
  head_samples: 4
  head_hidden: 16
"""


def small_config_text(name: str, extra: str = "") -> str:
    """YAML of the shrunk network named ``name``, plus ``extra`` top-level sections."""
    return f"name: {name}\n" + SMALL_NETWORK.format(tiny=REPO / "configs" / "tiny.yaml") + extra
