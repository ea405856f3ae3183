"""menet build-engine: ONNX export + manifests + parity (tiny; thumos14 once, slow), and the
errors a corrupted or mismatched engine file gives."""
from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from build_engine.build import build_engines
from engine.checkpoint import Checkpoint, save_checkpoint
from stream.settings import load_config
from engine.model.menet import MENet
from engine.runtime import EngineError, open_backend
from engine.runtime.manifest import check_onnx, config_hash, onnx_dir, read_manifest
from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend
from engine.runtime.torch_backend import TorchBackend, build_model
from stream.cli import main as cli


def _tiny_checkpoint(path: Path) -> Path:
    cfg = load_config("tiny")
    torch.manual_seed(7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MENet(cfg)
    save_checkpoint(path, Checkpoint(cfg, list(cfg.data.class_names), model.detector.state_dict(),
                                     model.mfe.backbone.state_dict(), epoch=0))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("engine")
    ckpt = _tiny_checkpoint(root / "tiny.pt")
    out = root / "eng"
    rc = cli(["build-engine", "--config", "tiny", "--checkpoint", str(ckpt), "--out", str(out), "--verify"])
    return {"rc": rc, "out": out, "ckpt": ckpt, "cfg": load_config("tiny")}


def test_build_engine_exports_every_stage_with_manifests(built: dict) -> None:
    assert built["rc"] == 0
    out, cfg = built["out"], built["cfg"]
    index = json.loads((out / "manifest.json").read_text())
    assert [b["stage"] for b in index["built"]] == ["mfe", "mrem", "dense"]
    assert index["skipped"] and "tensorrt" in index["skipped"][0]["what"]  # no TensorRT on this machine
    for name, stage in (("mfe", "mfe"), ("mrem_w128", "mrem"), ("dense_w128", "dense")):
        m = read_manifest(onnx_dir(out) / f"{name}.onnx")
        assert m["stage"] == stage and m["kind"] == "onnx" and m["opset"] == 17
        assert m["config"] == {**m["config"], "name": "tiny", "hash": config_hash(cfg)}
        assert m["checkpoint"]["sha256"] and m["sha256"]
        assert all(axes == {"0": "batch"} for axes in m["dynamic_axes"].values())
        assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    assert read_manifest(onnx_dir(out) / "dense_w128.onnx")["outputs"]["bounds2"] == [-1, 2, 32]


def test_parity_fp32_within_1e4(built: dict) -> None:
    parity = json.loads((built["out"] / "manifest.json").read_text())["parity"]
    assert len(parity) == 8  # features, relation, 3 levels, 3 boundary maps
    for row in parity:
        assert row["max_abs"] <= 1e-4 and row["ok"], row
        assert row["max_rel"] < 1e-2


def test_onnxruntime_backend_matches_pytorch_dynamic_batch_and_decoding(built: dict) -> None:
    from engine.checkpoint import load_checkpoint
    from engine.postprocess.decode import decode_window
    cfg = built["cfg"]
    ckpt = load_checkpoint(built["ckpt"], expect=cfg)
    ort_b = open_backend(cfg, built["out"], built["ckpt"])
    assert isinstance(ort_b, OnnxRuntimeBackend)
    model = build_model(cfg, ckpt)
    ref = TorchBackend(cfg, model)
    g = torch.Generator().manual_seed(1)
    clips = torch.randn(5, 3, 8, 56, 56, generator=g)  # batch 5: not the export batch
    np.testing.assert_allclose(ort_b.mfe(clips), ref.mfe(clips), atol=1e-4)
    feats = torch.randn(3, cfg.feature_channels, 128, generator=g)
    rel_o, rel_t = ort_b.mrem(feats), ref.mrem(feats)
    np.testing.assert_allclose(rel_o, rel_t, atol=1e-4)
    lv_o, lv_t = ort_b.levels(rel_t), ref.levels(rel_t)
    props_o = decode_window(lv_o, model.detector.heads, cfg, batch_index=1)
    props_t = decode_window(lv_t, model.detector.heads, cfg, batch_index=1)
    assert len(props_o) == len(props_t) > 0
    np.testing.assert_allclose(props_o.scores, props_t.scores, rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 3, 8, 56, 56\]"):
        ort_b.mfe(np.zeros((1, 3, 8, 64, 64), np.float32))


def test_onnxruntime_sessions_take_the_configured_threads(built: dict) -> None:
    """stream.runtime.threads reaches every ONNX Runtime session (its default is one thread per
    core: two busy threads in an engine worker that the config gives one)."""
    from stream.settings import load_config as load_stream_config, runtime_choice
    one = open_backend(built["cfg"], built["out"], built["ckpt"], threads=1)
    assert [s.get_session_options().intra_op_num_threads for s in one.sessions.values()] == [1, 1, 1]
    default = open_backend(built["cfg"], built["out"], built["ckpt"])
    assert all(s.get_session_options().intra_op_num_threads == 0 for s in default.sessions.values())
    scfg = load_stream_config("stream")
    assert runtime_choice(scfg).threads == scfg.stream.runtime.threads == 1
    scfg.stream.runtime.threads = 3
    assert runtime_choice(scfg).threads == 3
    scfg.stream.runtime.threads = 0  # 0: the library's default
    assert runtime_choice(scfg).threads is None


def test_corrupted_onnx_gives_clear_error(built: dict, tmp_path: Path) -> None:
    out = tmp_path / "eng"
    shutil.copytree(built["out"], out)
    path = onnx_dir(out) / "mrem_w128.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"corrupted.*menet build-engine --config"):
        open_backend(built["cfg"], out, backend="onnxruntime")
    path.unlink()
    with pytest.raises(EngineError, match=r"file missing.*menet build-engine"):
        open_backend(built["cfg"], out)
    (onnx_dir(out) / "mfe.onnx.json").unlink()
    with pytest.raises(EngineError, match="manifest mfe.onnx.json is missing"):
        check_onnx(onnx_dir(out) / "mfe.onnx", built["cfg"])


def test_engine_for_another_config_or_checkpoint_is_refused(built: dict, tmp_path: Path) -> None:
    other = copy.deepcopy(built["cfg"])
    other.name = "narrow"
    other.model.channels = 32
    with pytest.raises(EngineError, match=r"built for config 'tiny'.*not for 'narrow'.*menet build-engine"):
        open_backend(other, built["out"], backend="onnxruntime")
    ckpt2 = _tiny_checkpoint(tmp_path / "other.pt")
    data = torch.load(ckpt2, weights_only=True)
    data["epoch"] = 3  # same weights, different file: a different checkpoint
    torch.save(data, ckpt2)
    with pytest.raises(EngineError, match=r"not from the given checkpoint.*menet build-engine"):
        open_backend(built["cfg"], built["out"], ckpt2)


def test_build_without_checkpoint_and_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = load_config("tiny")
    with pytest.warns(UserWarning, match="random weights"):
        model = build_model(cfg)
    report = build_engines(cfg, model, tmp_path / "e", tensorrt=False)
    assert [b["stage"] for b in report.built] == ["mfe", "mrem", "dense"]
    assert report.skipped == [{"what": "tensorrt plans", "why": "--no-tensorrt given"}]
    assert read_manifest(onnx_dir(tmp_path / "e") / "mfe.onnx")["checkpoint"]["sha256"] is None
    assert cli(["build-engine", "--config", "tiny", "--out", str(tmp_path / "x"), "--precision", "int8"]) == 2
    assert "--calib-video" in capsys.readouterr().err
    assert cli(["build-engine", "--out", str(tmp_path / "x")]) == 2


def test_build_engine_from_the_checkpoint_alone(built: dict, tmp_path: Path) -> None:
    """No --config: the checkpoint's stored config (no stream section) is built with the stream defaults."""
    out = tmp_path / "from-ckpt"
    assert cli(["build-engine", "--checkpoint", str(built["ckpt"]), "--out", str(out), "--no-tensorrt"]) == 0
    index = json.loads((out / "manifest.json").read_text())
    assert [b["stage"] for b in index["built"]] == ["mfe", "mrem", "dense"]


@pytest.mark.slow
def test_thumos14_export_and_parity(tmp_path: Path) -> None:
    """The paper config (R(2+1)D-34, 16x112x112 clips, window 256): export and fp32 parity, batch 1."""
    cfg = load_config("thumos14")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg)
    report = build_engines(cfg, model, tmp_path, tensorrt=False, verify=True, verify_batch=1)
    assert [b["path"] for b in report.built] == ["onnx/mfe.onnx", "onnx/mrem_w256.onnx", "onnx/dense_w256.onnx"]
    assert len(report.parity) == 8
    for row in report.parity:
        assert row.max_abs <= 1e-4, row
