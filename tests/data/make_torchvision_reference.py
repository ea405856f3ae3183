"""Produce ``torchvision_state_dicts.json``: reference state-dict layouts and outputs.

Run once, outside the project's venv, where torchvision imports (it does not
beside the pinned CPU torch 2.13.0):

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tvenv/bin/python tests/data/make_torchvision_reference.py

* ``r2plus1d_18``: ``torchvision.models.video.r2plus1d_18()``, exactly the module
  whose published weights users load.
* ``r2plus1d_34_ig65m``: torchvision's ``VideoResNet`` with layers 3-4-6-3 and the
  conv2 mid-plane patch and Caffe2 BatchNorm eps of moabitcoin/ig65m-pytorch
  (``model.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)`` etc.), the layout of the
  IG65M / Kinetics r2plus1d_34 files.

For each: names and shapes of the state dict, and the pooled 512-d output (fc
removed, eval mode) for weights and an input made by ``deterministic_tensor``
(closed-form, no RNG, so the project's test recreates them bit-for-bit). No
weights are downloaded.
"""
import json
import math
from pathlib import Path

import torch
import torchvision
from torchvision.models.video.resnet import (BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet,
                                             r2plus1d_18)

INPUT_SHAPE = [1, 3, 8, 48, 48]


def deterministic_tensor(name: str, shape: list, index: int) -> torch.Tensor:
    """Same function as in tests/test_backbone.py: a smooth, bounded pattern."""
    n = math.prod(shape)
    x = torch.arange(n, dtype=torch.float64)
    values = torch.sin(0.37 * x + index)
    if name.endswith("running_var"):
        values = 1.0 + 0.5 * values.abs()
    elif len(shape) > 1:  # conv / linear weights: keep activations O(1)
        values = values * math.sqrt(3.0 / math.prod(shape[1:]))
    else:
        values = 0.1 * values
    return values.reshape(shape).to(torch.float32)


def describe(model: torch.nn.Module) -> dict:
    state = model.state_dict()
    new_state = {}
    for i, (k, v) in enumerate(state.items()):
        new_state[k] = v if k.endswith("num_batches_tracked") else deterministic_tensor(k, list(v.shape), i)
    model.load_state_dict(new_state)
    model.fc = torch.nn.Identity()
    model.eval()
    clip = deterministic_tensor("input", INPUT_SHAPE, 7)
    with torch.no_grad():
        out = model(clip)[0]
    return {"state_dict": [[k, list(v.shape)] for k, v in state.items()],
            "input_shape": INPUT_SHAPE, "output": [round(float(v), 7) for v in out]}


r34 = VideoResNet(block=BasicBlock, conv_makers=[Conv2Plus1D] * 4, layers=[3, 4, 6, 3], stem=R2Plus1dStem)
r34.layer2[0].conv2[0] = Conv2Plus1D(128, 128, 288)
r34.layer3[0].conv2[0] = Conv2Plus1D(256, 256, 576)
r34.layer4[0].conv2[0] = Conv2Plus1D(512, 512, 1152)
for m in r34.modules():
    if isinstance(m, torch.nn.BatchNorm3d):
        m.eps = 1e-3
out = {
    "generator": f"tests/data/make_torchvision_reference.py with torch {torch.__version__}, "
                 f"torchvision {torchvision.__version__}",
    "r2plus1d_18": describe(r2plus1d_18()),
    "r2plus1d_34_ig65m": describe(r34),
}
text = json.dumps(out, separators=(",", ":")).replace('],["', '],\n["')
Path(__file__).with_name("torchvision_state_dicts.json").write_text(text)
print({k: (len(v["state_dict"]), v["output"][:3]) for k, v in out.items() if k != "generator"})
