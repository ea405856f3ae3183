"""SAlign with context (model.salign_context, G-TAD's widened anchors): engine/model/salign.py."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_checkpoint
from stream.settings import load_config
from engine.model.head import DetectorHead, valid_cells
from engine.model.menet import TemporalDetector
from engine.model.salign import salign, sample_positions
from engine.postprocess.decode import LevelOutput, decode_level

REPO = Path(__file__).resolve().parents[1]


def old_salign(features: torch.Tensor, anchors: torch.Tensor, num_samples: int) -> torch.Tensor:
    """SAlign as it was before context existed (the reference for context 0)."""
    b, c, length = features.shape
    if anchors.dim() == 2:
        anchors = anchors.unsqueeze(0).expand(b, -1, -1)
    n = anchors.shape[1]
    start = anchors[..., 0:1].to(torch.float32)
    span = (anchors[..., 1:2] - anchors[..., 0:1]).to(torch.float32) + 1.0
    bins = (torch.arange(num_samples, dtype=torch.float32) + 0.5) / num_samples
    pos = (start + bins * span - 0.5).clamp(0, length - 1)
    left = pos.floor()
    frac = (pos - left).unsqueeze(1)
    left_i = left.long()
    right_i = (left_i + 1).clamp(max=length - 1)
    flat_l = left_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    flat_r = right_i.reshape(b, 1, n * num_samples).expand(b, c, n * num_samples)
    lv = features.gather(2, flat_l).reshape(b, c, n, num_samples)
    rv = features.gather(2, flat_r).reshape(b, c, n, num_samples)
    return (lv + (rv - lv) * frac).permute(0, 1, 3, 2).reshape(b, c * num_samples, n)


def test_sample_positions_with_context_by_hand() -> None:
    # anchor (2, 5) covers [2, 6), length 4; context 0.5 widens it to [0, 8); 4 bins of 2
    # have centres 1, 3, 5, 7 (time) = 0.5, 2.5, 4.5, 6.5 (feature index)
    pos = sample_positions(torch.tensor([[2, 5]]), 4, context=0.5)
    torch.testing.assert_close(pos, torch.tensor([[0.5, 2.5, 4.5, 6.5]]))
    # context 1 on a one-snippet anchor (7, 7): [6, 9), centres 6.5, 7.5, 8.5 -> 6, 7, 8
    pos = sample_positions(torch.tensor([[7, 7]]), 3, context=1.0)
    torch.testing.assert_close(pos, torch.tensor([[6.0, 7.0, 8.0]]))
    # context 0: the anchor itself, as before ([2, 6): centres 3, 5 -> 2.5, 4.5)
    torch.testing.assert_close(sample_positions(torch.tensor([[2, 5]]), 2), torch.tensor([[2.5, 4.5]]))


def test_salign_context_values_and_sequence_ends_by_hand() -> None:
    # feature value = index + 1, so a zero can only come from outside the sequence
    feat = (torch.arange(10, dtype=torch.float32) + 1).view(1, 1, 10)
    # inside: linear interpolation at 0.5, 2.5, 4.5, 6.5
    out = salign(feat, torch.tensor([[2, 5]]), 4, context=0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([1.5, 3.5, 5.5, 7.5]))
    # (0, 1) widened to [-1, 3): centres -0.5 (time < 0: zero), 0.5, 1.5, 2.5 -> index 0, 1, 2
    out = salign(feat, torch.tensor([[0, 1]]), 4, context=0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 1.0, 2.0, 3.0]))
    # (9, 9) widened to [8.5, 10.5): index 8.25, 8.75, 9.25 (inside [0, 10): clamped to the last
    # feature), 9.75 (time 10.25 > 10: zero)
    out = salign(feat, torch.tensor([[9, 9]]), 4, context=0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([9.25, 9.75, 10.0, 0.0]))
    # a sample exactly at the sequence start (time 0) still counts as inside: (0, 0) widened to
    # [-0.5, 1.5), centres 0 and 1 -> index -0.5 (clamped to 0) and 0.5
    out = salign(feat, torch.tensor([[0, 0]]), 2, context=0.5)
    torch.testing.assert_close(out.flatten(), torch.tensor([1.0, 1.5]))


def test_context_zero_is_bit_identical_to_the_old_salign() -> None:
    torch.manual_seed(0)
    feat = torch.randn(2, 5, 40)
    cells = valid_cells(40, 40)
    pairs = torch.stack([cells[:, 1], cells[:, 1] + cells[:, 0]], dim=-1)
    for s in (1, 4, 16):
        want = old_salign(feat, pairs, s)
        assert torch.equal(salign(feat, pairs, s), want)
        assert torch.equal(salign(feat, pairs, s, context=0.0), want)
        assert torch.equal(salign(feat, pairs.unsqueeze(0).expand(2, -1, -1), s, 0.0), want)
    # a context changes the features of every anchor
    assert not torch.isclose(salign(feat, pairs, 4, 0.5), old_salign(feat, pairs, 4)).all(dim=1).any()


def test_head_context_defaults_to_zero_and_the_bundled_checkpoint_keeps_it() -> None:
    assert DetectorHead(8, 4, 16, 2).context == 0.0
    for name in ("tiny", "stream"):
        assert load_config(name).model.salign_context == 0.0
    ckpt = load_checkpoint(REPO / "checkpoints" / "menet-tiny-synth.pt")
    assert ckpt.config.model.salign_context == 0.0
    det = TemporalDetector(ckpt.config, ckpt.config.feature_channels)
    det.load_state_dict(ckpt.detector)
    assert all(h.context == 0.0 for h in det.heads)


def test_paper_configs_use_gtad_salign() -> None:
    for name in ("thumos14", "anet13"):
        m = load_config(name).model
        assert (m.head_samples, m.salign_context) == (32, 0.5)


def test_salign_with_context_exports_to_onnx() -> None:
    """The aligned features themselves, zeroed samples included (the whole head: test_network.py)."""
    ort = pytest.importorskip("onnxruntime")
    feat = torch.randn(1, 8, 16)
    buf = io.BytesIO()

    class Align(torch.nn.Module):
        def forward(self, feat: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
            return salign(feat, pairs, 6, context=0.5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Align(), (feat, torch.tensor([[0, 3]])), buf, dynamo=False,
                          input_names=["feature", "pairs"], dynamic_axes={"pairs": {0: "anchors"}},
                          opset_version=17)
    pairs = torch.tensor([[0, 15], [0, 0], [15, 15], [3, 8]])
    got = ort.InferenceSession(buf.getvalue()).run(None, {"feature": feat.numpy(), "pairs": pairs.numpy()})[0]
    want = salign(feat, pairs, 6, context=0.5)
    assert (want == 0).any()
    torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-6, rtol=1e-6)


def test_config_with_context_runs_sparse_equal_to_dense() -> None:
    cfg = load_config("tiny")
    cfg.model.salign_context = 0.5
    cfg.model.head_samples = 6
    torch.manual_seed(0)
    det = TemporalDetector(cfg, cfg.feature_channels).eval()
    assert all(h.context == 0.5 and h.num_samples == 6 for h in det.heads)
    feats = torch.randn(2, cfg.feature_channels, cfg.data.window)
    with torch.no_grad():
        levels = det(feats)
        for level, head in zip(levels, det.heads):
            length = level.feature.shape[-1]
            maps = head.dense_maps(level.feature, max_duration=length, chunk=300)
            pairs = torch.tensor([[0, 0], [0, length - 1], [length // 3, length // 2], [length - 1, length - 1]])
            sparse = head.anchors(level.feature, pairs)
            # the detector's own sparse request (pairs) goes through the same context
            via_forward = det(feats, [pairs] * len(levels), anchors_are_cells=False)
            for name in ("cls", "reg", "cent", "dura"):
                dense_vals = maps[name][:, pairs[:, 1] - pairs[:, 0], pairs[:, 0]]
                torch.testing.assert_close(getattr(sparse, name), dense_vals, atol=1e-6, rtol=1e-6)
            i = [lv.feature.shape[-1] for lv in levels].index(length)
            torch.testing.assert_close(via_forward[i].anchors.cls, sparse.cls)


def test_decoding_uses_the_heads_context() -> None:
    # decode_level (offline inference and the online detector both decode through it) scores
    # pairs with DetectorHead.anchors, so the head's context reaches the proposals
    torch.manual_seed(0)
    with_ctx = DetectorHead(8, 4, 16, 2, context=0.5).eval()
    without = DetectorHead(8, 4, 16, 2).eval()
    without.load_state_dict(with_ctx.state_dict())
    feat = torch.randn(1, 8, 24)
    start = torch.full((1, 24), 0.05)
    end = torch.full((1, 24), 0.05)
    start[0, 3], start[0, 10], end[0, 8], end[0, 20] = 0.9, 0.7, 0.8, 0.9
    level = LevelOutput(feat, start, end, None)
    a = decode_level(level, with_ctx, [0.0, 1.0], max_duration=24)
    b = decode_level(level, without, [0.0, 1.0], max_duration=24)
    assert len(a) > 3 and (a.anchors == b.anchors).all()
    pairs = torch.from_numpy(a.anchors)
    with torch.no_grad():
        out = with_ctx.anchors(feat, pairs)
    bound = (start[0, pairs[:, 0]] * end[0, pairs[:, 1]]).double()
    torch.testing.assert_close(torch.from_numpy(a.proposal_scores), bound * out.cls[0].double() * out.reg[0].double())
    assert not (a.proposal_scores == b.proposal_scores).any()
