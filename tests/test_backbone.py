"""R(2+1)D backbones: torchvision names/shapes, numerics, and the weight loader.

``tests/data/torchvision_state_dicts.json`` was produced by
``tests/data/make_torchvision_reference.py`` run with torch 2.14.1 + torchvision
0.29.1 in a separate venv (torchvision's wheel does not import beside the pinned
CPU torch). It holds, for torchvision's ``r2plus1d_18`` and for torchvision's
``VideoResNet`` patched as ig65m-pytorch builds ``r2plus1d_34``, the state-dict
names and shapes and the pooled output for closed-form weights and input.
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from engine.model.backbone import build_backbone
from engine.model.weights import (WeightLoadError, extract_state_dict, init_backbone, load_backbone_weights,
                                  read_state_dict)

REFERENCE = json.loads((Path(__file__).parent / "data" / "torchvision_state_dicts.json").read_text())
CASES = [("r2plus1d_18", "r2plus1d_18"), ("r2plus1d_34", "r2plus1d_34_ig65m")]


def deterministic_tensor(name: str, shape: list, index: int) -> torch.Tensor:
    """Same closed form as the generator script (no RNG, identical across torch versions)."""
    n = math.prod(shape)
    x = torch.arange(n, dtype=torch.float64)
    values = torch.sin(0.37 * x + index)
    if name.endswith("running_var"):
        values = 1.0 + 0.5 * values.abs()
    elif len(shape) > 1:
        values = values * math.sqrt(3.0 / math.prod(shape[1:]))
    else:
        values = 0.1 * values
    return values.reshape(shape).to(torch.float32)


def reference_state(ref_name: str, with_fc: bool = True) -> dict[str, torch.Tensor]:
    state = {}
    for i, (name, shape) in enumerate(REFERENCE[ref_name]["state_dict"]):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
        else:
            state[name] = deterministic_tensor(name, shape, i)
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return state


@pytest.mark.parametrize("name,ref_name", CASES)
def test_names_and_shapes_match_torchvision(name: str, ref_name: str) -> None:
    ours = {k: list(v.shape) for k, v in build_backbone(name).state_dict().items()}
    theirs = {k: s for k, s in REFERENCE[ref_name]["state_dict"] if not k.startswith("fc.")}
    assert ours == theirs


@pytest.mark.parametrize("name,ref_name", CASES)
def test_forward_matches_torchvision_numerically(name: str, ref_name: str) -> None:
    model = build_backbone(name).eval()
    load_backbone_weights(model, reference_state(ref_name))  # fc.* present in the file, dropped
    clip = deterministic_tensor("input", REFERENCE[ref_name]["input_shape"], 7)
    with torch.no_grad():
        out = model(clip)[0]
    expected = torch.tensor(REFERENCE[ref_name]["output"])
    assert out.shape == expected.shape == (512,)
    assert expected.abs().max() > 0.01  # the reference is not a degenerate all-zero vector
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=1e-3)


def test_ig65m_midplanes_differ_from_torchvision() -> None:
    r34 = build_backbone("r2plus1d_34")
    assert r34.layer2[0].conv2[0][0].out_channels == 288  # Caffe2 layout
    assert r34.layer2[0].conv1[0][0].out_channels == 230
    assert r34.layer2[1].conv2[0][0].out_channels == 288
    r18 = build_backbone("r2plus1d_18")
    assert r18.layer2[0].conv2[0][0].out_channels == 230  # torchvision layout


def test_checkpoint_wrappers_and_file_loading(tmp_path: Path) -> None:
    state = reference_state("r2plus1d_18")
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, path)
    loaded = read_state_dict(path)
    assert set(loaded) == set(state)
    model = build_backbone("r2plus1d_18")
    init_backbone(model, path)
    torch.testing.assert_close(model.stem[0].weight, state["stem.0.weight"])


def test_mismatch_lists_missing_unexpected_and_shapes() -> None:
    state = reference_state("r2plus1d_18", with_fc=False)
    del state["layer1.0.conv1.0.0.weight"]
    state["layer9.weight"] = torch.zeros(3)
    state["stem.0.weight"] = torch.zeros(46, 3, 1, 7, 7)
    with pytest.raises(WeightLoadError) as info:
        load_backbone_weights(build_backbone("r2plus1d_18"), state, source="w.pth")
    msg = str(info.value)
    assert "w.pth" in msg
    assert "missing keys (1)" in msg and "layer1.0.conv1.0.0.weight" in msg
    assert "unexpected keys (1)" in msg and "layer9.weight" in msg
    assert "shape differences (1)" in msg and "stem.0.weight: file (46, 3, 1, 7, 7) vs model (45, 3, 1, 7, 7)" in msg


def test_r34_file_does_not_load_into_r18() -> None:
    with pytest.raises(WeightLoadError, match="unexpected keys"):
        load_backbone_weights(build_backbone("r2plus1d_18"), reference_state("r2plus1d_34_ig65m"))


class _NotATensor:
    pass


def test_loader_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"stem.0.weight": torch.zeros(1), "payload": _NotATensor()}, path)
    with pytest.raises(WeightLoadError, match="tensors-only"):
        read_state_dict(path)


def test_missing_file_and_empty_mapping(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(WeightLoadError, match="no state dict"):
        extract_state_dict({})


def test_no_weights_warns_and_keeps_random_init() -> None:
    model = build_backbone("tiny")
    before = model.stem[0].weight.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init_backbone(model, None)
    assert any("random initialisation" in str(w.message) for w in caught)
    assert torch.equal(before, model.stem[0].weight)


def test_unknown_backbone_name() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'r3d'"):
        build_backbone("r3d")
