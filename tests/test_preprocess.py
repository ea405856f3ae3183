"""Shared preprocessing: one definition of how frames become backbone input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model.preprocess import KINETICS_MEAN, KINETICS_STD, Preprocess, clip_indices, to_clip_tensor


def test_resize_short_side_and_centre_crop() -> None:
    pre = Preprocess(resize_short=64, crop=(56, 56))
    frame = np.zeros((120, 160, 3), np.uint8)
    frame[:, :80] = (255, 0, 0)  # left half blue in BGR
    out = pre.frame(frame)
    assert out.shape == (56, 56, 3)
    # BGR -> RGB: the blue half is now in channel 2, left side of the crop
    assert out[28, 2, 2] == 255 and out[28, 2, 0] == 0
    assert out[28, 53, 2] == 0


def test_stretch_keeps_the_sides_a_centre_crop_loses() -> None:
    # a 4:3 camera with a marker at each side, 10 % from the edge: a square centre crop cuts both
    # off; "stretch" keeps the whole picture; a square frame gets the same pixels either way
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[100:140, 20:44] = 255
    frame[100:140, 276:300] = 255
    cropped = Preprocess(64, (56, 56)).frame(frame)
    stretched = Preprocess(64, (56, 56), fit="stretch").frame(frame)
    assert cropped.shape == stretched.shape == (56, 56, 3)
    assert cropped[:, :, 0].max() == 0  # both markers fell outside the crop
    assert stretched[:, :28, 0].max() > 200 and stretched[:, 28:, 0].max() > 200
    square = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(Preprocess(64, (56, 56)).frame(square),
                                  Preprocess(64, (56, 56), fit="stretch").frame(square))
    with pytest.raises(ValueError, match="frame fit"):
        Preprocess(64, (56, 56), fit="pad")


def test_small_frames_are_upscaled_to_fit_the_crop() -> None:
    pre = Preprocess(resize_short=72, crop=(64, 64))
    assert pre.frame(np.zeros((40, 30, 3), np.uint8)).shape == (64, 64, 3)


def test_bad_frames_are_rejected() -> None:
    pre = Preprocess(72, (64, 64))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        pre.frame(np.zeros((40, 30), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        pre.frame(np.zeros((40, 30, 3), np.float32))


def test_clip_tensor_layout_and_normalisation() -> None:
    rgb = np.full((2, 8, 4, 4, 3), 255, np.uint8)  # batch of 2 snippets of 8 white frames
    x = to_clip_tensor(rgb)
    assert x.shape == (2, 3, 8, 4, 4)
    for c in range(3):
        assert torch.allclose(x[:, c], torch.tensor((1 - KINETICS_MEAN[c]) / KINETICS_STD[c]))


def test_clip_indices_centred_and_clamped() -> None:
    # snippet 3 of sigma 5 covers frames 15..19, centre 17.5: a 16-frame clip starts at floor(17.5 - 8) = 9 (ties go to the past:
    # one frame less of look-ahead for the live grabber)
    assert list(clip_indices(3, 5, 16, 1000)) == list(range(9, 25))
    assert list(clip_indices(0, 5, 16, 1000))[:6] == [0, 0, 0, 0, 0, 0]
    assert list(clip_indices(10, 8, 8, 84))[-1] == 83
