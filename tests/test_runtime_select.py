"""The ``stream.runtime.backend`` rule and the TensorRT manifest checks, on real files.

TensorRT is not installed here: plan *files* are fakes (bytes with a real manifest), which
is all the selection rule and the manifest checks read. Loading a plan needs TensorRT:
those tests skip, saying so.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from build_engine.export import export_onnx
from build_engine.tensorrt_build import profiles_for
from stream.settings import load_config
from engine.runtime import BackendError, EngineError, GpuInfo, open_backend, select_backend
from engine.runtime.manifest import (FORMAT, check_plan, config_hash, plan_dir, plan_name, sha256_file,
                                     write_manifest)
from engine.runtime.stages import stage_specs
from engine.runtime.torch_backend import TorchBackend, build_model

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")
ORIN = GpuInfo("Orin", "8.7")
TRT = "10.3.0"


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny")


@pytest.fixture(scope="module")
def onnx_engine(cfg, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eng")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(cfg, build_model(cfg), out)
    return out


def fake_plans(cfg, root: Path, gpu: GpuInfo, trt_version: str = TRT, precision: str = "fp16") -> Path:
    """Plan files (not real TensorRT plans) with manifests as `menet build-engine` writes them."""
    directory = plan_dir(root, gpu, trt_version)
    directory.mkdir(parents=True, exist_ok=True)
    for stage, spec in stage_specs(cfg).items():
        path = directory / plan_name(spec.artifact, precision)
        path.write_bytes(f"fake plan {stage}".encode())
        write_manifest(path, {
            "format": FORMAT, "kind": "tensorrt", **spec.to_dict(), "artifact": path.name,
            "config": {"name": cfg.name, "hash": config_hash(cfg)}, "checkpoint": {"sha256": None},
            "sha256": sha256_file(path), "onnx": {"sha256": "0" * 64, "opset": 17},
            "tensorrt": {"version": trt_version, "gpu": gpu.name, "compute_capability": gpu.compute_capability,
                         "precision": precision, "profiles": [p.to_dict() for p in profiles_for(cfg, stage)]},
        })
    return directory


def test_auto_without_engines_is_pytorch(cfg) -> None:
    sel = select_backend(cfg, None, gpu=None, trt_version=None, cuda_available=False)
    assert (sel.backend, sel.device, sel.precision) == ("pytorch", "cpu", "fp32")
    with pytest.warns(UserWarning, match="random weights"):
        backend = open_backend(cfg)
    assert isinstance(backend, TorchBackend)


def test_auto_prefers_onnxruntime_when_graphs_exist(cfg, onnx_engine: Path) -> None:
    sel = select_backend(cfg, onnx_engine, gpu=None, trt_version=None, cuda_available=False)
    assert (sel.backend, sel.device) == ("onnxruntime", "cpu")
    assert any("tensorrt" in s for s in sel.skipped)


def test_auto_picks_tensorrt_when_a_plan_for_this_gpu_exists(cfg, onnx_engine: Path, tmp_path: Path) -> None:
    import shutil
    root = tmp_path / "eng"
    shutil.copytree(onnx_engine, root)
    fake_plans(cfg, root, ORIN)
    # this machine is an H100 with TensorRT 10.3: the Orin plans do not apply -> ONNX Runtime
    sel = select_backend(cfg, root, gpu=H100, trt_version=TRT, cuda_available=True)
    assert sel.backend == "onnxruntime"
    assert "not for this machine" in sel.skipped[0] and "Orin" in sel.skipped[0]
    # plans for the H100 appear -> TensorRT, on a CUDA device
    fake_plans(cfg, root, H100)
    sel = select_backend(cfg, root, gpu=H100, trt_version=TRT, cuda_available=True)
    assert (sel.backend, sel.device, sel.precision) == ("tensorrt", "cuda:0", "fp16")
    # same GPU, another TensorRT version: not usable
    sel = select_backend(cfg, root, gpu=H100, trt_version="10.8.0", cuda_available=True)
    assert sel.backend == "onnxruntime" and "TensorRT 10.3.0" in sel.skipped[0]
    # fp32 asked, only fp16 plans: TensorRT still, with the precision it has, and says so
    sel = select_backend(cfg, root, precision="fp32", gpu=H100, trt_version=TRT, cuda_available=True)
    assert sel.precision == "fp16" and "no fp32 plans" in sel.reason
    # no TensorRT installed at all
    sel = select_backend(cfg, root, gpu=H100, trt_version=None, cuda_available=True)
    assert sel.backend == "onnxruntime" and "TensorRT is not installed" in sel.skipped[0]


def test_explicit_backends_fail_with_rebuild_hint(cfg, tmp_path: Path) -> None:
    fake_plans(cfg, tmp_path, ORIN)
    with pytest.raises(EngineError, match=r"Orin.*this machine has 'NVIDIA H100.*menet build-engine"):
        select_backend(cfg, tmp_path, backend="tensorrt", gpu=H100, trt_version=TRT, cuda_available=True)
    with pytest.raises(EngineError, match=r"no ONNX graphs.*menet build-engine --config"):
        select_backend(cfg, tmp_path, backend="onnxruntime", gpu=None, trt_version=None)
    with pytest.raises(BackendError, match="no CUDA"):
        select_backend(cfg, None, backend="pytorch", device="cuda", gpu=None, trt_version=None,
                       cuda_available=False)
    with pytest.raises(BackendError, match="int8 needs TensorRT"):
        select_backend(cfg, None, backend="pytorch", precision="int8", gpu=None, trt_version=None)
    with pytest.raises(BackendError, match="unknown backend"):
        select_backend(cfg, None, backend="tflite")


def test_auto_pytorch_fallbacks_are_explained(cfg) -> None:
    sel = select_backend(cfg, None, device="cuda", precision="int8", gpu=None, trt_version=None,
                         cuda_available=False)
    assert (sel.backend, sel.device, sel.precision) == ("pytorch", "cpu", "fp32")
    assert "cuda unavailable" in sel.reason and "int8 needs TensorRT" in sel.reason


def test_plan_checks_name_gpu_version_and_corruption(cfg, tmp_path: Path) -> None:
    directory = fake_plans(cfg, tmp_path, ORIN, precision="int8")
    plan = directory / plan_name("mfe", "int8")
    assert check_plan(plan, cfg, ORIN, TRT, engine_dir=tmp_path)["stage"] == "mfe"
    with pytest.raises(EngineError, match=r"built for GPU 'Orin'.*'NVIDIA H100.*--precision int8"):
        check_plan(plan, cfg, H100, TRT, engine_dir=tmp_path)
    with pytest.raises(EngineError, match=r"TensorRT 10.3.0 but TensorRT 10.8.0 is installed"):
        check_plan(plan, cfg, ORIN, "10.8.0", engine_dir=tmp_path)
    with pytest.raises(EngineError, match="TensorRT is not installed"):
        check_plan(plan, cfg, ORIN, None, engine_dir=tmp_path)
    plan.write_bytes(b"fake plan mfe, truncated")
    with pytest.raises(EngineError, match=r"corrupted or was changed.*menet build-engine"):
        check_plan(plan, cfg, ORIN, TRT, engine_dir=tmp_path)
    thumos = load_config("thumos14")
    directory = fake_plans(cfg, tmp_path / "t", ORIN)
    # a thumos14 run finds no plan set for its window (256) among tiny's (128) plans
    sel = select_backend(thumos, tmp_path / "t", gpu=ORIN, trt_version=TRT, cuda_available=True)
    assert sel.backend == "pytorch"
    with pytest.raises(EngineError, match=r"built for config 'tiny'"):
        check_plan(directory / plan_name("mfe", "fp16"), thumos, ORIN, TRT, engine_dir=tmp_path / "t")


def test_profiles_from_config(cfg) -> None:
    (p,) = profiles_for(cfg, "mfe")
    assert p.input == "clips"
    assert (p.min, p.opt, p.max) == ((1, 3, 8, 56, 56), (8, 3, 8, 56, 56), (8, 3, 8, 56, 56))
    (p,) = profiles_for(cfg, "mrem", max_batch=16, opt_batch=4)
    assert (p.min[0], p.opt[0], p.max[0]) == (1, 4, 16) and p.max[1:] == (128, 128)
    (p,) = profiles_for(load_config("thumos14"), "dense")
    assert p.input == "relation" and p.max == (8, 256, 256)
    with pytest.raises(ValueError):
        profiles_for(cfg, "mfe", max_batch=2, opt_batch=4)


def test_tensorrt_backend_loads_real_plans_when_installed(cfg, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU boxes only: pip install '.[tensorrt]')")
    from engine.runtime.manifest import detect_gpu
    if detect_gpu() is None:
        pytest.skip("TensorRT is installed but no CUDA GPU is visible")
    from build_engine.build import build_engines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg)
    report = build_engines(cfg, model, tmp_path, precision="fp32", verify=True)
    assert any(b["kind"] == "tensorrt" for b in report.built)
    assert report.parity_ok, report.parity
    backend = open_backend(cfg, tmp_path, backend="tensorrt", precision="fp32")
    out = backend.mfe(__import__("numpy").zeros((11, 3, 8, 56, 56), "float32"))  # > max batch: chunked
    assert out.shape == (11, cfg.feature_channels)
    # a plan whose bytes no longer deserialize: refused by the manifest check, with the rebuild command
    plan = next(iter(backend.plan_set.plans.values()))
    backend.close()
    plan.write_bytes(plan.read_bytes()[:100])
    with pytest.raises(EngineError, match="menet build-engine"):
        open_backend(cfg, tmp_path, backend="tensorrt", precision="fp32")
