"""The PyTorch backend and the runtime interface contract."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from stream.settings import load_config
from engine.runtime import STAGES, stage_specs
from engine.runtime.base import dense_to_levels
from engine.runtime.onnxruntime_backend import providers_for
from engine.runtime.torch_backend import TorchBackend, build_model


@pytest.fixture(scope="module")
def setup():
    cfg = load_config("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, seed=3)
    return cfg, model


def test_stage_contracts(setup) -> None:
    cfg, _ = setup
    specs = stage_specs(cfg)
    assert tuple(specs) == STAGES
    assert specs["mfe"].inputs == {"clips": (-1, 3, 8, 56, 56)} and specs["mfe"].outputs == {"features": (-1, 128)}
    assert specs["mrem"].artifact == "mrem_w128"
    assert list(specs["dense"].outputs) == ["level0", "level1", "level2", "bounds0", "bounds1", "bounds2"]


def test_torch_backend_matches_the_model(setup) -> None:
    cfg, model = setup
    backend = TorchBackend(cfg, model)
    clips = torch.randn(2, 3, 8, 56, 56)
    feats = backend.mfe(clips)
    assert feats.dtype == np.float32 and feats.shape == (2, 128)
    with torch.no_grad():
        np.testing.assert_allclose(feats, model.mfe(clips).numpy(), atol=1e-6)
        window = torch.randn(2, 128, 128)
        levels = model.detector(window)
    relation = backend.mrem(window.numpy())
    got = backend.levels(relation)
    for a, b in zip(got, levels):
        np.testing.assert_allclose(a.feature.numpy(), b.feature.numpy(), atol=1e-5)
        np.testing.assert_allclose(a.start.numpy(), b.start.numpy(), atol=1e-5)
        np.testing.assert_allclose(a.end.numpy(), b.end.numpy(), atol=1e-5)
    empty = backend.mfe(np.zeros((0, 3, 8, 56, 56), np.float32))
    assert empty.shape == (0, 128)


def test_torch_backend_fp16_cpu_close(setup) -> None:
    cfg, _ = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = TorchBackend(cfg, build_model(cfg, seed=3), "cpu", "fp16")
        full = TorchBackend(cfg, build_model(cfg, seed=3))
    x = np.random.default_rng(0).standard_normal((2, 128, 128)).astype(np.float32)
    np.testing.assert_allclose(half.mrem(x), full.mrem(x), atol=5e-3)


def test_interface_validation(setup) -> None:
    cfg, model = setup
    backend = TorchBackend(cfg, model)
    with pytest.raises(ValueError, match="unknown stage"):
        backend.run("heads", {"x": np.zeros(1)})
    with pytest.raises(ValueError, match="takes inputs"):
        backend.run("mrem", {"relation": np.zeros((1, 128, 128), np.float32)})
    with pytest.raises(ValueError, match=r"\[B, 128, 128\]"):
        backend.mrem(np.zeros((1, 128, 64), np.float32))
    from engine.runtime import BackendError
    with pytest.raises(BackendError, match="INT8 needs TensorRT"):
        TorchBackend(cfg, model, "cpu", "int8")


def test_dense_to_levels_and_providers() -> None:
    out = {"level0": np.ones((1, 4, 8), np.float32), "level1": np.ones((1, 4, 4), np.float32),
           "bounds0": np.zeros((1, 2, 8), np.float32), "bounds1": np.zeros((1, 2, 4), np.float32)}
    levels = dense_to_levels(out)
    assert [tuple(lv.start.shape) for lv in levels] == [(1, 8), (1, 4)]
    assert providers_for("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert providers_for("cuda:0", ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) \
        == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers_for("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
