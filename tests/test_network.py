"""The MENet network parts: shapes, gradients, determinism, dense/sparse agreement."""
from __future__ import annotations

import warnings

import pytest
import torch

from stream.settings import load_config
from engine.model.head import DetectorHead, cells_to_pairs, valid_cells
from engine.model.menet import MENet, TemporalDetector
from engine.model.mfe import MovementFeatureExtractor
from engine.model.backbone import build_backbone
from engine.model.mrem import MultiRelationEnhance
from engine.model.salign import salign
from engine.model.sfpn import ScaleFPN


def tiny_model(**model_overrides) -> MENet:
    """The tiny config shrunk further (window 32, 4x32x32 clips) so full-model tests stay fast."""
    cfg = load_config("tiny")
    cfg.data.window, cfg.data.clip_length, cfg.data.crop = 32, 4, [32, 32]
    cfg.model.level_lengths = [32, 16, 8]
    for k, v in model_overrides.items():
        setattr(cfg.model, k, v)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MENet(cfg)


@pytest.mark.parametrize("config,lengths", [("thumos14", [256, 128, 64]), ("anet13", [200, 100, 50])])
def test_paper_config_detector_shapes(config: str, lengths: list[int]) -> None:
    cfg = load_config(config)
    det = TemporalDetector(cfg, cfg.feature_channels).eval()
    assert cfg.feature_channels == 1024  # [F_movement, F_total] of R(2+1)D-34's 512
    # G-TAD's SAlign: S = 32 over the anchor widened by half its length on each side
    assert all((h.num_samples, h.context) == (32, 0.5) for h in det.heads)
    feats = torch.randn(2, 1024, cfg.data.window)
    anchors = [torch.tensor([[0, 0], [length // 4, 3]]) for length in lengths]  # cells (d, s)
    with torch.no_grad():
        out = det(feats, anchors)
    assert [o.start.shape for o in out] == [(2, n) for n in lengths]
    assert [o.end.shape for o in out] == [(2, n) for n in lengths]
    for o in out:
        assert o.anchors.cls.shape == o.anchors.reg.shape == o.anchors.cent.shape == (2, 2)
        assert o.anchors.class_logits.shape == (2, 2, cfg.data.num_classes + 1)
        assert ((o.start >= 0) & (o.start <= 1)).all() and ((o.anchors.cls >= 0) & (o.anchors.cls <= 1)).all()


def test_detector_rejects_wrong_window() -> None:
    cfg = load_config("tiny")
    det = TemporalDetector(cfg, cfg.feature_channels)
    with pytest.raises(ValueError, match="windows of 128 snippets, got 100"):
        det(torch.randn(1, cfg.feature_channels, 100))


def test_full_tiny_model_every_parameter_gets_a_gradient() -> None:
    model = tiny_model().train()
    cfg = model.cfg
    clips = torch.randn(2, cfg.data.window, 3, cfg.data.clip_length, *cfg.data.crop)
    cells = [valid_cells(n, n)[::7] for n in cfg.level_lengths()]
    out = model(clips, cells)
    # Stand-in for the real losses (training issue): the sum of every head output.
    loss = sum(o.start.sum() + o.end.sum() + o.anchors.cls.sum() + o.anchors.reg.sum() + o.anchors.cent.sum()
               + o.anchors.dura.sum() + o.anchors.class_logits.sum() for o in out)
    loss.backward()
    # the segment classifier is not part of the detector's loss: it is fitted afterwards on the
    # frozen detector (engine/training/segment_classifier.py), so the detector loss leaves it alone
    labeller = [p for n, p in model.named_parameters() if n.startswith("detector.labeller.")]
    assert labeller and all(p.grad is None for p in labeller)
    missing = [n for n, p in model.named_parameters() if not n.startswith("detector.labeller.") and (
               p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert missing == []


def test_eval_mode_is_deterministic() -> None:
    model = tiny_model().eval()
    cfg = model.cfg
    clips = torch.randn(1, cfg.data.window, 3, cfg.data.clip_length, *cfg.data.crop)
    cells = [valid_cells(n, n)[::5] for n in cfg.level_lengths()]
    with torch.no_grad():
        a = model(clips, cells)
        b = model(clips, cells)
    for x, y in zip(a, b):
        assert torch.equal(x.start, y.start) and torch.equal(x.anchors.cls, y.anchors.cls)


def test_mfe_is_one_batched_forward_and_movement_is_the_difference() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("tiny").eval()
    mfe = MovementFeatureExtractor(backbone).eval()
    calls = []
    backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    clips = torch.randn(3, 3, 8, 64, 64)
    with torch.no_grad():
        out = mfe(clips)
    assert calls == [6]  # snippet path and duplication path in ONE forward
    assert out.shape == (3, 2 * backbone.out_channels)
    with torch.no_grad():
        total = backbone(clips)
        static = backbone(clips[:, :, 4:5].expand(-1, -1, 8, -1, -1))
    c = backbone.out_channels
    torch.testing.assert_close(out[:, c:], total, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[:, :c], total - static, atol=1e-5, rtol=1e-5)


def test_mfe_no_movement_in_a_still_clip() -> None:
    torch.manual_seed(0)
    mfe = MovementFeatureExtractor(build_backbone("tiny")).eval()
    still = torch.randn(2, 3, 1, 64, 64).expand(-1, -1, 8, -1, -1)
    moving = torch.randn(2, 3, 8, 64, 64)
    c = mfe.backbone.out_channels
    with torch.no_grad():
        assert mfe(still)[:, :c].abs().max() < 1e-5
        assert mfe(moving)[:, :c].abs().max() > 1e-3


def test_base_ablation_has_no_movement_path() -> None:
    model = tiny_model(movement=False, relation="conv")
    assert model.mfe.out_channels == model.mfe.backbone.out_channels
    assert "lstm" not in " ".join(n for n, _ in model.named_modules()).lower()


def test_mrem_forward_path_is_causal_and_backward_path_anticausal() -> None:
    torch.manual_seed(0)
    mrem = MultiRelationEnhance(8, 6, kernel_size=3).eval()
    x = torch.randn(1, 8, 20)
    seq = lambda t: mrem.fuse(t).transpose(1, 2)  # noqa: E731
    y = x.clone()
    y[..., 15:] += 1.0  # change only the future
    with torch.no_grad():
        fwd_x, _ = mrem.forward_lstm(seq(x))
        fwd_y, _ = mrem.forward_lstm(seq(y))
        assert torch.equal(fwd_x[:, :15], fwd_y[:, :15])
        assert not torch.equal(fwd_x[:, 15:], fwd_y[:, 15:])
        z = x.clone()
        z[..., :5] += 1.0  # change only the past: the backward path before t=5 moves, after it does not
        full_x, full_z = mrem(x), mrem(z)
    assert full_x.shape == (1, 6, 20)
    # output at t >= 6 still differs through the forward path; check the backward LSTM alone
    with torch.no_grad():
        b_x, _ = mrem.backward_lstm(torch.flip(seq(x), [1]))
        b_z, _ = mrem.backward_lstm(torch.flip(seq(z), [1]))
    b_x, b_z = torch.flip(b_x, [1]), torch.flip(b_z, [1])
    assert torch.equal(b_x[:, 5:], b_z[:, 5:]) and not torch.equal(b_x[:, :5], b_z[:, :5])
    assert not torch.equal(full_x, full_z)


def test_sfpn_levels_and_input_check() -> None:
    sfpn = ScaleFPN(16, 8, levels=3)
    outs = sfpn(torch.randn(2, 16, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 64), (2, 8, 32), (2, 8, 16)]
    with pytest.raises(ValueError, match="not divisible"):
        sfpn(torch.randn(2, 16, 30))
    assert len(ScaleFPN(16, 8, levels=1)(torch.randn(1, 16, 10))) == 1


def test_salign_interpolates_linearly_by_hand() -> None:
    # feature value = index, so an interpolated sample equals its position
    feat = torch.arange(10, dtype=torch.float32).view(1, 1, 10)
    # anchor (2, 5) covers [2, 6): 2 samples at bin centres 3.0 and 5.0 -> feature coords 2.5, 4.5
    out = salign(feat, torch.tensor([[2, 5]]), num_samples=2)
    torch.testing.assert_close(out, torch.tensor([[[2.5], [4.5]]]))
    # a one-snippet anchor (7, 7) with 4 samples: coords 6.625, 6.875, 7.125, 7.375
    out = salign(feat, torch.tensor([[7, 7]]), num_samples=4)
    torch.testing.assert_close(out.flatten(), torch.tensor([6.625, 6.875, 7.125, 7.375]))
    # clamped at the sequence ends
    out = salign(feat, torch.tensor([[0, 0]]), num_samples=2)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.25]))


def test_dense_and_sparse_heads_agree() -> None:
    torch.manual_seed(0)
    head = DetectorHead(channels=12, num_samples=4, hidden=16, num_classes=3).eval()
    feat = torch.randn(2, 12, 24)
    with torch.no_grad():
        maps = head.dense_maps(feat, max_duration=24, chunk=50)
        pairs = torch.tensor([[0, 0], [0, 23], [5, 9], [11, 12], [20, 23], [3, 17]])
        sparse = head.anchors(feat, pairs)
        cells = torch.stack([pairs[:, 1] - pairs[:, 0], pairs[:, 0]], dim=1)
        sampled = head.cells(feat, cells)
    for name in ("cls", "reg", "cent", "dura"):
        dense_vals = maps[name][:, pairs[:, 1] - pairs[:, 0], pairs[:, 0]]
        torch.testing.assert_close(getattr(sparse, name), dense_vals, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(getattr(sampled, name), dense_vals, atol=1e-6, rtol=1e-6)
    # invalid cells (anchor past the end) stay empty in the dense map
    assert maps["cls"][:, 23, 1:].abs().sum() == 0
    assert torch.equal(cells_to_pairs(cells), pairs)


def test_per_sample_anchors_equal_shared_anchors() -> None:
    torch.manual_seed(0)
    head = DetectorHead(8, 4, 16, 2).eval()
    feat = torch.randn(2, 8, 16)
    pairs = torch.tensor([[1, 4], [0, 15]])
    with torch.no_grad():
        shared = head.anchors(feat, pairs)
        per_sample = head.anchors(feat, pairs.unsqueeze(0).expand(2, -1, -1))
    torch.testing.assert_close(shared.cls, per_sample.cls)


def test_valid_cells_count() -> None:
    cells = valid_cells(10, 4)
    assert cells.shape[0] == 10 + 9 + 8 + 7
    assert bool(((cells[:, 0] + cells[:, 1]) < 10).all())


@pytest.mark.parametrize("context", [0.0, 0.5])
def test_sparse_head_exports_to_onnx_with_dynamic_anchor_count(context: float) -> None:
    """SAlign + ASPs export with a dynamic anchor count; with context, anchors reaching past both
    ends of the sequence (zeroed samples) agree with PyTorch too."""
    ort = pytest.importorskip("onnxruntime")
    import io
    torch.manual_seed(0)
    head = DetectorHead(8, 6, 16, 2, context=context).eval()

    class Sparse(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, feat: torch.Tensor, pairs: torch.Tensor):
            o = self.head.anchors(feat, pairs)
            return o.cls, o.reg, o.cent, o.dura, o.class_logits

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Sparse(), (torch.randn(1, 8, 16), torch.tensor([[0, 3]])), buf, dynamo=False,
                          input_names=["feature", "pairs"], dynamic_axes={"pairs": {0: "anchors"}},
                          opset_version=17)
    session = ort.InferenceSession(buf.getvalue())
    feat = torch.randn(1, 8, 16)
    for pairs in (torch.tensor([[0, 15], [2, 4], [7, 7], [14, 15], [0, 0]]), torch.tensor([[5, 9]])):
        got = session.run(None, {"feature": feat.numpy(), "pairs": pairs.numpy()})
        with torch.no_grad():
            want = Sparse()(feat, pairs)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape)
            assert abs(torch.from_numpy(g) - w).max() < 1e-5
