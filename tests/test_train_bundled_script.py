"""scripts/train-bundled-checkpoint.sh: which `menet` commands each pretraining mode runs, in order.

The script is orchestration only (every step is a `menet` command tested elsewhere), so PY is
pointed at a recorder that logs each command line instead of running an hour and a half of
training; what is checked is the script's own logic: the corpus made before the pretraining
reads it, the seed and held-out videos passed, the checkpoint written where CHECKPOINT says.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "train-bundled-checkpoint.sh"

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")


def _run(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    log = tmp_path / "commands.log"
    recorder = tmp_path / "py"
    recorder.write_text(f"#!{sys.executable}\n"
                        "import sys\n"
                        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                        "if sys.argv[1:2] == ['-']: sys.stdin.read()\n")
    recorder.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("PRETRAIN", "PRETRAIN_SEED", "CHECKPOINT")}
    proc = subprocess.run(["sh", str(SCRIPT), str(tmp_path / "work")], capture_output=True, text=True,
                          env={**base, "PY": str(recorder), **env}, timeout=60)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_corpus_mode_pretrains_on_a_separate_corpus_made_first(tmp_path: Path) -> None:
    out = tmp_path / "mine.pt"
    proc, cmds = _run(tmp_path, PRETRAIN="corpus", PRETRAIN_SEED="2", CHECKPOINT=str(out))
    assert proc.returncode == 0, proc.stderr
    corpus = next(i for i, c in enumerate(cmds) if "synth" in c and "pretrain-corpus" in c)
    assert "--num-videos 720 --seed 100" in cmds[corpus] and "--name-prefix pre_" in cmds[corpus]
    pretrain = next(i for i, c in enumerate(cmds) if "pretrain-backbone" in c)
    assert pretrain > corpus
    assert "pretrain-corpus/videos" in cmds[pretrain] and "--seed 2 --held-out-videos 24" in cmds[pretrain]
    assert "synth/videos" not in cmds[pretrain].replace("pretrain-corpus/videos", "")
    assert cmds[-1] == f"- {tmp_path / 'work' / 'run' / 'best.pt'} {out}"  # step 5 writes where asked


def test_default_mode_pretrains_on_the_benchmark_and_ships_the_bundled_file(tmp_path: Path) -> None:
    proc, cmds = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not any("pretrain-corpus" in c for c in cmds)
    pretrain = next(c for c in cmds if "pretrain-backbone" in c)
    assert f"{tmp_path / 'work' / 'synth' / 'videos'}" in pretrain and "--seed 0" in pretrain
    assert "--held-out-videos" not in pretrain
    assert cmds[-1].endswith(" checkpoints/menet-tiny-synth.pt")


def test_an_unknown_pretraining_mode_is_refused_before_any_work(tmp_path: Path) -> None:
    proc, cmds = _run(tmp_path, PRETRAIN="kinetics")
    assert proc.returncode == 2
    assert "PRETRAIN must be 'benchmark' or 'corpus', not 'kinetics'" in proc.stderr
    assert cmds == []
