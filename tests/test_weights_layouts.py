"""Published backbone weight layouts load: torchvision, IG65M, DataParallel, TSP (one or two heads).

Files are built from the project's own backbones (random weights) in the layout each
publisher uses, then read through ``menet weights check / convert / fetch`` and the
loader the configs use (``init_backbone``). The paper-size files are written once per
module; every layout is also exercised on the small ``tiny`` backbone through the CLI
and on r2plus1d_18 / r2plus1d_34 in memory.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine.model.backbone import build_backbone
from engine.model.weights import WeightLoadError, init_backbone, inspect_state_dict, load_backbone_weights
from stream.cli import main
from stream.commands.weights import RELEASES

LAYOUTS = {  # layout written -> layout name `menet weights check` must print
    "torchvision": "plain",
    "ig65m": "plain",
    "dataparallel": "dataparallel",
    "tsp": "tsp",
    "tsp-two-head": "tsp-two-head",
    "wrapped": "wrapped",
}


def tsp_args(backbone: str) -> argparse.Namespace:
    """What TSP's train.py pickles under ``args`` (a subset of its options)."""
    return argparse.Namespace(backbone=backbone, label_columns=["action-label", "temporal-region-label"],
                              backbone_lr=1e-4, fc_lr=2e-3, epochs=8, lr_milestones=[4, 6],
                              global_video_features=None, distributed=False, world_size=1, output_dir="out")


def in_layout(state: dict[str, torch.Tensor], layout: str, backbone: str) -> dict:
    """``state`` saved the way each publisher saves it, classifier heads included."""
    width = state["layer4.0.conv1.1.weight"].shape[0]

    def head(name: str, classes: int, inputs: int = width) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.randn(classes, inputs), f"{name}.bias": torch.zeros(classes)}

    if layout == "torchvision":
        return {**state, **head("fc", 400)}
    if layout == "ig65m":
        return {**state, **head("fc", 359)}
    if layout == "dataparallel":
        return {f"module.{k}": v for k, v in {**state, **head("fc", 400)}.items()}
    if layout == "wrapped":
        return {"state_dict": {f"backbone.{k}": v for k, v in state.items()}, "epoch": 3}
    features = {f"features.{k}": v for k, v in state.items()}
    extras = {"args": tsp_args(backbone), "epoch": 4,
              "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "momentum": 0.9, "name": "backbone",
                                                           "params": [0, 1, 2]}]},
              "lr_scheduler": {"milestones": [4, 6], "gamma": 0.01, "warmup_iters": 10, "last_epoch": 40,
                               "base_lrs": [0.0, 1e-4, 2e-3], "warmup_method": "linear"}}
    if layout == "tsp":
        return {"model": {**features, **head("fc", 400)}, **extras}
    if layout == "tsp-two-head":  # action labels + temporal region, fed [feature, global video feature]
        return {"model": {**features, **head("fc1", 201, 2 * width), **head("fc2", 2, 2 * width)}, **extras}
    raise AssertionError(layout)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_backbone(name) for name in ("tiny", "r2plus1d_18", "r2plus1d_34")}


@pytest.fixture(scope="module")
def paper_files(models: dict[str, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two real-size files: r2plus1d_34 as TSP's tac_on_kinetics, r2plus1d_18 as a TSP two-head file."""
    folder = tmp_path_factory.mktemp("paper")
    files = {"r2plus1d_34": folder / "r2plus1d_34-tac_on_kinetics.pth",
             "r2plus1d_18": folder / "r2plus1d_18-tsp_on_activitynet.pth"}
    torch.save(in_layout(models["r2plus1d_34"].state_dict(), "tsp", "r2plus1d_34"), files["r2plus1d_34"])
    torch.save(in_layout(models["r2plus1d_18"].state_dict(), "tsp-two-head", "r2plus1d_18"), files["r2plus1d_18"])
    return files


def weights_cli(*argv: str) -> int:
    return main(["weights", *argv])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_recognises_each_layout(layout: str, models: dict, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / f"{layout}.pth"
    torch.save(in_layout(models["tiny"].state_dict(), layout, "tiny"), path)
    assert weights_cli("check", str(path), "--backbone", "tiny") == 0
    out = capsys.readouterr().out
    assert f"{path}: OK, loads into tiny" in out
    assert f"layout: {LAYOUTS[layout]} --" in out
    assert f"backbone: {len(models['tiny'].state_dict())} tensors" in out
    if layout.startswith("tsp"):
        assert "other entries args, epoch, lr_scheduler, optimizer" in out
        assert ("heads fc1, fc2 (4 tensors)" if layout == "tsp-two-head" else "head fc (2 tensors)") in out


@pytest.mark.parametrize("backbone", ["r2plus1d_18", "r2plus1d_34"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_of_the_real_backbones_loads_strictly(layout: str, backbone: str, models: dict) -> None:
    model = models[backbone]
    state, found = inspect_state_dict(in_layout(model.state_dict(), layout, backbone), source=layout)
    assert found.name == LAYOUTS[layout]
    assert set(state) == set(model.state_dict())  # heads dropped, prefixes stripped
    load_backbone_weights(model, state, source=layout)


def test_paper_file_checks_and_loads_from_config(paper_files: dict[str, Path], models: dict,
                                                 capsys: pytest.CaptureFixture) -> None:
    path = paper_files["r2plus1d_34"]
    assert weights_cli("check", str(path), "--backbone", "r2plus1d_34") == 0
    out = capsys.readouterr().out
    assert "OK, loads into r2plus1d_34" in out
    assert "layout: tsp -- TSP checkpoint" in out and "prefix 'features.' stripped" in out
    assert "head fc (2 tensors)" in out
    # What `model.backbone_weights: <this file>` does in configs/thumos14.yaml.
    model = models["r2plus1d_34"]
    saved = model.layer4[2].conv2[1].running_var.clone()
    with torch.no_grad():
        model.layer4[2].conv2[1].running_var.zero_()
    init_backbone(model, path)
    torch.testing.assert_close(model.layer4[2].conv2[1].running_var, saved)


@pytest.mark.parametrize("file_of,checked_as", [("r2plus1d_18", "r2plus1d_34"), ("r2plus1d_34", "r2plus1d_18")])
def test_wrong_backbone_is_refused(file_of: str, checked_as: str, paper_files: dict[str, Path],
                                   capsys: pytest.CaptureFixture) -> None:
    assert weights_cli("check", str(paper_files[file_of]), "--backbone", checked_as) == 1
    err = capsys.readouterr().err
    assert f"weights do not match the backbone {checked_as}: the file holds a {file_of} backbone" in err
    if checked_as == "r2plus1d_34":  # r18 lacks blocks and has torchvision mid-planes
        assert "missing keys (" in err and "layer1.2.conv1.0.0.weight" in err
        assert "layer2.0.conv2.0.0.weight: file (230, 128, 1, 3, 3) vs model (288, 128, 1, 3, 3)" in err
    else:
        assert "unexpected keys (" in err and "layer3.5.conv2.1.weight" in err


def test_convert_writes_a_tensors_only_file(paper_files: dict[str, Path], models: dict, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "r18.pth"
    assert weights_cli("convert", str(paper_files["r2plus1d_18"]), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "holds: r2plus1d_18 backbone" in printed
    plain = torch.load(out, map_location="cpu", weights_only=True)  # no allow-list needed
    assert isinstance(plain, dict) and all(isinstance(v, torch.Tensor) for v in plain.values())
    model = models["r2plus1d_18"]
    assert set(plain) == set(model.state_dict())
    model.load_state_dict(plain, strict=True)
    assert weights_cli("convert", str(paper_files["r2plus1d_18"]), "--out", str(out)) == 2  # exists
    assert "--force" in capsys.readouterr().err


class _Tripwire:
    """Writes ``marker`` if it is ever unpickled for real (i.e. if foreign code runs)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("unpickled for real")


def test_disallowed_class_is_refused_and_convert_reads_it_inertly(models: dict, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "tsp-custom-args.pth"
    checkpoint = in_layout(models["tiny"].state_dict(), "tsp", "tiny")
    checkpoint["args"] = _Tripwire(str(marker))
    torch.save(checkpoint, path)

    assert weights_cli("check", str(path), "--backbone", "tiny") == 1
    err = capsys.readouterr().err
    assert re.search(r"it pickles \S*_Tripwire, which is refused", err)
    assert f"menet weights convert {path} --out {tmp_path / 'tsp-custom-args.tensors.pth'}" in err
    with pytest.raises(WeightLoadError, match="tensors-only"):
        init_backbone(build_backbone("tiny"), path)

    out = tmp_path / "converted.pth"
    assert weights_cli("convert", str(path), "--out", str(out), "--backbone", "tiny") == 0
    assert "read as inert stand-ins (never imported or run):" in capsys.readouterr().out
    assert not marker.exists()
    assert weights_cli("check", str(out), "--backbone", "tiny") == 0
    assert "layout: plain" in capsys.readouterr().out


# -- fetch against a local HTTP server -------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """(base URL, sha256) of a tiny TSP file served over HTTP from 127.0.0.1."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    root = tmp_path / "www"
    root.mkdir()
    torch.save(in_layout(models["tiny"].state_dict(), "tsp", "tiny"), root / "tiny-tsp.pth")
    digest = hashlib.sha256((root / "tiny-tsp.pth").read_bytes()).hexdigest()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", digest
    finally:
        server.shutdown()
        server.server_close()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_verifies_sha256_and_checks_the_file(served: tuple[str, str], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    base, digest = served
    dest = tmp_path / "dl"
    assert weights_cli("fetch", "tiny-test", "--url", f"{base}/tiny-tsp.pth", "--sha256", digest,
                       "--out", str(dest), "--backbone", "tiny") == 0
    out = capsys.readouterr().out
    assert f"sha256 {digest} (sha256 verified)" in out
    assert "OK, loads into tiny" in out and "layout: tsp" in out
    assert leftovers(dest) == ["tiny-tsp.pth"]  # renamed into place, no temp file left
    # Present and matching: nothing downloaded again.
    assert weights_cli("fetch", "tiny-test", "--url", f"{base}/tiny-tsp.pth", "--sha256", digest,
                       "--out", str(dest), "--no-check") == 0
    assert "already there, sha256 verified" in capsys.readouterr().out


def test_fetch_hash_mismatch_names_expected_and_got(served: tuple[str, str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    base, digest = served
    wrong = "0" * 64
    dest = tmp_path / "dl"
    assert weights_cli("fetch", "tiny-test", "--url", f"{base}/tiny-tsp.pth", "--sha256", wrong,
                       "--out", str(dest)) == 1
    err = capsys.readouterr().err
    assert f"expected {wrong}, got {digest}" in err
    assert leftovers(dest) == []


def test_fetch_without_a_known_hash_refuses_unless_trusted(served: tuple[str, str], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    base, digest = served
    dest = tmp_path / "dl"
    url = f"{base}/tiny-tsp.pth"
    assert weights_cli("fetch", "tiny-test", "--url", url, "--out", str(dest)) == 1
    err = capsys.readouterr().err
    assert f"its sha256 is {digest}" in err and "--sha256 HEX" in err and "--trust-unverified" in err
    assert leftovers(dest) == []
    assert weights_cli("fetch", "tiny-test", "--url", url, "--out", str(dest), "--trust-unverified",
                       "--backbone", "tiny") == 0
    assert "NOT verified" in capsys.readouterr().out
    assert leftovers(dest) == ["tiny-tsp.pth"]


def test_fetch_release_from_a_mirror_still_checks_the_release_prefix(served: tuple[str, str], tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    base, digest = served
    release = RELEASES["r2plus1d_34-tac_on_kinetics"]
    assert not digest.startswith(release.sha256_prefix)  # our stand-in file is not the release
    dest = tmp_path / "dl"
    assert weights_cli("fetch", "r2plus1d_34-tac_on_kinetics", "--url", f"{base}/tiny-tsp.pth",
                       "--out", str(dest), "--trust-unverified") == 1
    err = capsys.readouterr().err
    assert f"says it starts with {release.sha256_prefix}, got {digest}" in err
    assert leftovers(dest) == []


def test_fetch_http_error_is_reported(served: tuple[str, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    base, _ = served
    assert weights_cli("fetch", "x", "--url", f"{base}/missing.pth", "--sha256", "a" * 64,
                       "--out", str(tmp_path / "dl")) == 1
    assert f"{base}/missing.pth: HTTP error 404" in capsys.readouterr().err
    assert leftovers(tmp_path / "dl") == []


def test_release_registry_holds_real_names_and_no_invented_hashes() -> None:
    paper = RELEASES["r2plus1d_34-tac_on_kinetics"]
    assert paper.backbone == "r2plus1d_34"
    assert paper.url == ("https://github.com/HumamAlwassel/TSP/releases/download/model_weights/"
                         "r2plus1d_34-tac_on_kinetics-0547130e.pth")
    for name, release in RELEASES.items():
        assert name.split("-")[0] == release.backbone
        assert release.url.endswith("/" + release.file_name)
        # The prefix is the one the published file name carries (torch.hub convention), nothing else.
        assert release.sha256_prefix == re.fullmatch(r".*-([0-9a-f]{8})\.pth", release.file_name).group(1)
        assert release.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", release.sha256)


def test_weights_help(capsys: pytest.CaptureFixture) -> None:
    for argv in (["weights", "--help"], ["weights", "fetch", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: menet weights" in out and "r2plus1d_34-tac_on_kinetics" in out
