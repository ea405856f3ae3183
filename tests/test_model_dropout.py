"""model.dropout: regularisation of the detector in training only (engine/model/menet.py).

A user who trains with dropout must get the same detector at inference as without it: the
same weights give the same outputs in eval mode (offline, online and exports alike), and
checkpoints written before the key existed load with it off."""
from __future__ import annotations

from pathlib import Path

import torch

from engine.checkpoint import load_checkpoint
from engine.config import load_config
from engine.model.menet import TemporalDetector

from small_configs import small_config_text

REPO = Path(__file__).resolve().parents[1]


def _detectors(tmp_path: Path, dropout: float) -> tuple[TemporalDetector, TemporalDetector]:
    """The small network without and with dropout, holding the same weights."""
    plain_path, drop_path = tmp_path / "plain.yaml", tmp_path / "drop.yaml"
    plain_path.write_text(small_config_text("plain"))
    drop_path.write_text(small_config_text("drop").replace("  channels: 16\n",
                                                           f"  channels: 16\n  dropout: {dropout}\n"))
    plain_cfg, drop_cfg = load_config(plain_path), load_config(drop_path)
    assert (plain_cfg.model.dropout, drop_cfg.model.dropout) == (0.0, dropout)
    torch.manual_seed(0)
    plain = TemporalDetector(plain_cfg, 24)
    drop = TemporalDetector(drop_cfg, 24)
    drop.load_state_dict(plain.state_dict())  # dropout adds no parameters: the same weights load
    return plain, drop


def test_eval_mode_output_is_unchanged_by_dropout(tmp_path: Path) -> None:
    plain, drop = _detectors(tmp_path, 0.5)
    x = torch.randn(2, 24, 32)
    with torch.no_grad():
        a, b = plain.eval()(x), drop.eval()(x)
    for la, lb in zip(a, b):
        torch.testing.assert_close(la.feature, lb.feature)
        torch.testing.assert_close(la.start, lb.start)
        torch.testing.assert_close(la.end, lb.end)


def test_training_mode_drops_features(tmp_path: Path) -> None:
    plain, drop = _detectors(tmp_path, 0.5)
    x = torch.randn(2, 24, 32)
    with torch.no_grad():
        ref = plain.train()(x)[0].feature
        torch.manual_seed(1)
        one = drop.train()(x)[0].feature
        torch.manual_seed(2)
        two = drop.train()(x)[0].feature
    assert not torch.allclose(one, ref)  # the SFPN input was perturbed
    assert not torch.allclose(one, two)  # and differently on each step


def test_checkpoints_without_the_key_load_with_dropout_off() -> None:
    ckpt = load_checkpoint(REPO / "checkpoints" / "menet-tiny-synth.pt")
    assert ckpt.config.model.dropout == 0.0
