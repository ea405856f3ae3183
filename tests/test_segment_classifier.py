"""The segment classifier (model.labeller: segment): pooling, learning, decoding with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import CONFIG_DIR
from stream.settings import load_config
from engine.model.menet import TemporalDetector
from engine.model.segment_classifier import SegmentClassifier, interpolate_at
from engine.postprocess.decode import Proposals, decode_window, label_segments
from engine.training.segment_classifier import (LabelledWindows, accuracy, fit_classifier, jittered,
                                                matched_label_accuracy)


def test_interpolate_at_is_linear_between_centres_and_clamped() -> None:
    feats = torch.tensor([[0.0, 10.0, 20.0, 30.0]])
    out = interpolate_at(feats, torch.tensor([[0.0, 0.5, 2.25, -3.0, 9.0]]))
    assert out.shape == (1, 1, 5)
    assert torch.allclose(out[0, 0], torch.tensor([0.0, 5.0, 22.5, 0.0, 30.0]))


def test_descriptor_tells_the_segment_from_its_surroundings() -> None:
    # one channel is 1 on snippets 10..19 and 0 elsewhere; the segment [10, 20) is exactly it
    feats = torch.zeros(2, 40)
    feats[0, 10:20] = 1.0
    clf = SegmentClassifier([2], num_classes=3, samples=8, context=0.5, min_context=3.0, window=40)
    d = clf.describe([feats], torch.tensor([[10.0, 20.0], [25.0, 35.0]]))
    assert d.shape == (2, 6)  # [mean, max, mean - context] x 2 channels
    mean, peak, contrast = d[0, 0], d[0, 2], d[0, 4]
    assert mean == pytest.approx(1.0) and peak == pytest.approx(1.0) and contrast == pytest.approx(1.0)
    assert d[1, 0] == pytest.approx(0.0) and d[1, 4] == pytest.approx(0.0)


def test_descriptor_reads_a_coarser_level_at_the_same_times() -> None:
    # a level of half the window's resolution: the same segment must read the same bump
    fine = torch.zeros(1, 64)
    fine[0, 16:32] = 1.0
    coarse = fine.reshape(1, 32, 2).mean(-1)
    clf = SegmentClassifier([1, 1], num_classes=2, window=64)
    d = clf.describe([fine, coarse], torch.tensor([[16.0, 32.0]]))
    assert d[0, 0] == pytest.approx(1.0) and d[0, 3] == pytest.approx(1.0, abs=0.05)


def _toy_windows(n: int, rng: np.random.Generator, classes: int = 3, window: int = 48) -> LabelledWindows:
    """Windows where the action's class is written into channel `class` inside the segment only,
    under noise: a segment classifier must read inside vs. outside to tell the classes."""
    out = LabelledWindows([], [], [], [])
    for _ in range(n):
        feats = torch.from_numpy(rng.normal(0, 0.3, (classes, window)).astype(np.float32))
        start = int(rng.integers(0, window - 12))
        end = start + int(rng.integers(4, 12))
        label = int(rng.integers(0, classes))
        feats[label, start:end] += 1.0
        out.features.append([feats])
        out.segments.append(np.array([[start, end]], np.float64))
        out.labels.append(np.array([label]))
        out.valid.append(window)
    return out


def test_fit_classifier_learns_labels_it_could_not_guess() -> None:
    rng = np.random.default_rng(0)
    train, held_out = _toy_windows(120, rng), _toy_windows(60, rng)
    torch.manual_seed(0)
    clf = SegmentClassifier([3], num_classes=3, hidden=32, window=48)
    before = accuracy(clf, held_out)
    history = fit_classifier(clf, train, epochs=30, lr=3e-3, jitter=0.1, seed=0, validation=held_out)
    after = accuracy(clf, held_out)
    assert after >= 0.9 > before + 0.2
    assert history.last["val_accuracy"] == pytest.approx(after)


def test_jitter_moves_boundaries_within_bounds() -> None:
    segs = np.array([[10.0, 20.0], [0.0, 4.0]])
    out = jittered(segs, valid=22, jitter=0.1, copies=5, rng=np.random.default_rng(1))
    assert out.shape == (12, 2)
    assert np.array_equal(out[:2], segs)  # the annotated segments themselves come first
    assert (out[:, 0] >= 0).all() and (out[:, 1] <= 22).all() and (out[:, 1] > out[:, 0]).all()
    moved = out[2:].reshape(5, 2, 2) - segs[None]
    assert np.abs(moved[:, 0]).max() <= 1.0 + 1e-9 and np.abs(moved).max() > 0


def test_label_segments_emits_k_best_classes_scored_by_probability() -> None:
    torch.manual_seed(0)
    feats = [torch.randn(4, 32)]
    clf = SegmentClassifier([4], num_classes=3, window=32).eval()
    props = Proposals(segments=np.array([[2.0, 9.0], [12.0, 30.0]]), scores=np.array([0.5, 0.2]),
                      labels=np.zeros(2, np.int64), proposal_scores=np.array([0.5, 0.2]),
                      level=np.zeros(2, np.int64), anchors=np.array([[2, 8], [12, 29]]),
                      label_rank=np.zeros(2, np.int64), class_probs=np.full((2, 4), 0.25), window=32)
    out = label_segments(props, feats, clf, top_labels=2)
    assert len(out) == 4 and list(out.label_rank) == [0, 1, 0, 1]
    with torch.no_grad():
        probs = torch.softmax(clf(feats, torch.tensor(props.segments, dtype=torch.float32)), -1).numpy()
    for row in range(4):
        anchor = row // 2
        expect = np.sort(probs[anchor])[::-1][row % 2]
        assert out.scores[row] == pytest.approx(props.proposal_scores[anchor] * expect, rel=1e-5)
        assert out.labels[row] == int(np.argsort(-probs[anchor], kind="stable")[row % 2])
    assert out.labels[0] != out.labels[1]
    assert np.allclose(out.class_probs[:, :3].sum(1), 1.0) and (out.class_probs[:, 3] == 0).all()


def segment_detector(tmp_path, segment_input: str, extra: str = "") -> tuple:
    """(config path, config, seeded detector) of tiny with a segment labeller reading ``segment_input``."""
    cfg_path = tmp_path / f"{segment_input}.yaml"
    cfg_path.write_text(f"extends: {CONFIG_DIR / 'tiny.yaml'}\nname: {segment_input}\nmodel:\n  labeller: segment\n"
                        f"  segment_input: {segment_input}\n{extra}")
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    model = TemporalDetector(cfg, cfg.feature_channels).eval()
    assert model.labeller is not None
    return cfg_path, cfg, model


def test_decode_window_takes_labels_from_the_segment_classifier(tmp_path) -> None:
    _, cfg, model = segment_detector(tmp_path, "relation", "inference:\n  labels_per_proposal: 2\n")
    x = torch.randn(1, cfg.feature_channels, cfg.data.window)
    with torch.no_grad():
        relation = model.relation(x)
        levels = model.from_relation(relation)
    props = decode_window(levels, model.heads, cfg, labeller=model.labeller, labeller_input=relation[0])
    plain = decode_window(levels, model.heads, cfg, top_labels=1)
    assert len(props) == 2 * len(plain) > 0
    again = label_segments(plain, [relation[0]], model.labeller, 2)
    assert np.array_equal(props.labels, again.labels) and np.allclose(props.scores, again.scores)
    with pytest.raises(ValueError, match="labeller_input: relation"):
        decode_window(levels, model.heads, cfg, labeller=model.labeller)


def test_matched_label_accuracy_counts_only_matches() -> None:
    pred = np.array([[0.0, 10.0], [0.0, 10.0], [50.0, 60.0], [20.0, 21.0]])
    labels = np.array(["a", "b", "a", "a"])
    gt = np.array([[0.0, 9.0], [50.0, 62.0]])
    right, matched = matched_label_accuracy(pred, labels, gt, np.array(["a", "b"]))
    assert (right, matched) == (1, 3)


def test_mfe_labeller_reads_the_window_features_not_the_mrem_output(tmp_path) -> None:
    from engine.inference import detect_video
    from engine.training.segment_classifier import labeller_features

    cfg_path, cfg, model = segment_detector(tmp_path, "mfe")
    assert model.labeller.in_channels == [cfg.feature_channels]
    x = torch.randn(2, cfg.feature_channels, cfg.data.window)
    read = labeller_features(model, x)
    assert len(read) == 2 and torch.equal(read[1][0], x[1])  # what train-labeller fits on
    # offline inference labels with the same input: one window, decoded by hand, gives its labels
    feats = x[0].numpy().T.copy()  # [L, C] snippets of a one-window video
    sps = cfg.data.sigma / 25.0
    dets = detect_video(model, cfg, feats, cfg.data.window * sps, 25.0)
    with torch.no_grad():
        levels = model.from_relation(model.relation(x[:1]))
    props = decode_window(levels, model.heads, cfg, labeller=model.labeller, labeller_input=x[0],
                          valid_length=cfg.data.window)
    assert len(dets) > 0
    best = int(np.argmax(props.scores))
    top = int(np.argmax(dets.scores))
    assert dets.labels[top] == props.labels[best]
    assert dets.scores[top] == pytest.approx(props.scores[best], rel=1e-4)
    # a labeller built for the MREM output's width refuses the window features: no silent mix-up
    _, _, rel_model = segment_detector(tmp_path, "relation")
    assert cfg.model.channels != cfg.feature_channels
    with pytest.raises(RuntimeError):
        decode_window(levels, model.heads, cfg, labeller=rel_model.labeller, labeller_input=x[0])
