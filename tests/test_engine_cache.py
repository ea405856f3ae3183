"""stream.runtime.engine_dir: auto (stream/engine_cache.py): a checkpoint's ONNX graphs, built
once into a cache folder and found there on the next start; a new checkpoint gets its own."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MENET_ENGINE_CACHE", str(root))
    return root


def test_auto_builds_once_per_checkpoint_and_onnxruntime_runs_it(stream_setup, cache: Path) -> None:
    from engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from engine.runtime.onnxruntime_backend import OnnxRuntimeBackend
    from engine.runtime.select import open_backend
    from stream.engine_cache import resolve_engine_dir

    cfg, ckpt = stream_setup["cfg"], stream_setup["ckpt"]
    path, note = resolve_engine_dir(cfg, "auto", ckpt)
    assert path is not None and Path(path).parent == cache and "built" in note
    assert isinstance(open_backend(cfg, path, ckpt, threads=1), OnnxRuntimeBackend)
    index = Path(path) / "manifest.json"
    stamp = index.stat().st_mtime_ns
    again, note = resolve_engine_dir(cfg, "auto", ckpt)
    assert again == path and "from the cache" in note and index.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in cache.iterdir()] == [Path(path).name]  # no half-built folder left behind

    theirs = load_checkpoint(ckpt, expect=cfg)  # the same network, retrained: another file, another sha256
    other = cache.parent / "other.pt"
    save_checkpoint(other, Checkpoint(cfg, theirs.class_names, theirs.detector, theirs.backbone, epoch=7))
    third, _ = resolve_engine_dir(cfg, "auto", other)
    assert third != path and Path(third).parent == cache


def test_auto_leaves_pytorch_where_graphs_do_not_apply(stream_setup, cache: Path, tmp_path: Path) -> None:
    from stream.engine_cache import EngineCacheError, resolve_engine_dir

    cfg, ckpt = stream_setup["cfg"], stream_setup["ckpt"]
    assert resolve_engine_dir(cfg, None, ckpt) == (None, "")
    assert resolve_engine_dir(cfg, "/some/engines", ckpt) == ("/some/engines", "")
    path, note = resolve_engine_dir(cfg, "auto", None)
    assert path is None and "no checkpoint" in note
    path, note = resolve_engine_dir(cfg, "auto", ckpt, device="cuda:0")
    assert path is None and "cuda:0" in note
    path, note = resolve_engine_dir(cfg, "auto", ckpt, backend="pytorch")
    assert path is None and "pytorch" in note
    with pytest.raises(EngineCacheError, match="missing.pt"):
        resolve_engine_dir(cfg, "auto", tmp_path / "missing.pt")
    assert not cache.exists()  # nothing was built


def test_auto_runs_pytorch_when_the_cache_cannot_be_written(stream_setup, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from stream.engine_cache import resolve_engine_dir
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MENET_ENGINE_CACHE", str(blocker / "cache"))  # under a file: cannot be created
    path, note = resolve_engine_dir(stream_setup["cfg"], "auto", stream_setup["ckpt"])
    assert path is None and "running PyTorch" in note and "a-file" in note


def test_menet_run_refuses_an_unusable_auto_checkpoint(stream_setup, cache: Path, tmp_path: Path, capsys) -> None:
    from stream.cli import main
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = main(["run", "--config", str(stream_setup["cfg_path"]), "--source", str(tmp_path / "none.mp4"),
               "--engine-dir", "auto", "--checkpoint", str(bad)])
    assert rc == 2
    assert "bad.pt" in capsys.readouterr().err
    assert not cache.exists() or not any(cache.iterdir())
