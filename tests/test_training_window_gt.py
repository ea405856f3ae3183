"""benchmarks/window_gt_rules.py: the window ground-truth measurement behind data.window_gt's default."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stream.settings import load_config


def _script(repo_root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("window_gt_rules", repo_root / "benchmarks" / "window_gt_rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_help_runs(repo_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        _script(repo_root).main(["--help"])
    assert exc.value.code == 0
    assert "--coverage" in capsys.readouterr().out


def test_absent_folder_says_so(repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _script(repo_root).main(["--annotations", str(tmp_path / "nope")]) == 2
    assert "is absent: nothing to measure" in capsys.readouterr().err


def test_measurement_on_the_thumos14_test_annotations(repo_root: Path, shared_data: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    folder = shared_data / "thumos14" / "annotations_test"
    if not folder.is_dir():
        pytest.skip(f"THUMOS-14 test annotations not found at {folder}")
    script = _script(repo_root)
    d = load_config("thumos14").data
    m = script.measure(folder, d.sigma, d.window, d.hop, 30.0, [("coverage", 0.75), ("clip", 1.0)])
    cov, clip = m.rules
    assert m.instances == 3358  # the paper's count for the THUMOS-14 test set (sec. 4.1)
    for r in (cov, clip):  # every overlapping pair is whole, clipped or dropped
        assert r.pairs_whole + r.pairs_clipped + r.pairs_dropped == m.pairs
        assert r.instances_whole + r.instances_only_clipped + r.instances_dropped == m.instances
    assert clip.pairs_dropped == 0 and clip.instances_dropped == 0 and clip.windows_with_dropped == 0
    assert cov.pairs_whole == clip.pairs_whole  # the rules differ only on cut instances
    assert cov.pairs_dropped > 0 and cov.training_windows < clip.training_windows <= m.windows
    assert sum(m.partial_by_share) == clip.pairs_clipped
    # the table printed by the script
    assert script.main(["--annotations", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "3358 instances" in out and "| coverage-0.75 |" in out and "| clip |" in out
