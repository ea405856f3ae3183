"""The `menet` command: help everywhere, model-info figures."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from engine.model.backbone import build_backbone
from engine.model.complexity import count_macs
from stream.cli import build_parser, main


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_model_info_is_registered() -> None:
    assert "model-info" in subcommands()


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: menet " + name in capsys.readouterr().out


def test_python_dash_m_is_the_same_command() -> None:
    out = subprocess.run([sys.executable, "-m", "stream", "--help"], capture_output=True, text=True, check=True)
    assert "model-info" in out.stdout


@pytest.mark.parametrize("name,gmac", [("r2plus1d_34", 76.0), ("r2plus1d_18", 40.5)])
def test_backbone_macs_match_published_figures(name: str, gmac: float) -> None:
    with torch.device("meta"):
        macs = count_macs(build_backbone(name), torch.zeros(1, 3, 16, 112, 112))
    assert abs(macs / 1e9 - gmac) / gmac < 0.02


def test_model_info_thumos14(capsys: pytest.CaptureFixture) -> None:
    assert main(["model-info", "--config", "thumos14", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["module"]: r for r in report["modules"]}
    assert abs(rows["backbone"]["macs"] / 1e9 - 76.0) / 76.0 < 0.02
    assert rows["MFE"]["macs"] == 2 * rows["backbone"]["macs"]  # two paths per snippet
    for module in ("MREM", "SFPN", "heads: boundary predictors"):
        assert rows[module]["params"] > 0 and rows[module]["macs"] > 0
    assert main(["model-info", "--config", "thumos14"]) == 0
    table = capsys.readouterr().out
    assert "76.178 G" in table and "MREM" in table


def test_model_info_bad_config(tmp_path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodle: {}\n")
    assert main(["model-info", "--config", str(bad)]) == 2
    assert "modle: unknown key" in capsys.readouterr().err
