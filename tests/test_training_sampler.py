"""Anchor sampler (paper sec. 3.4, Fig. 4): counts per stage and part, validity, seeding."""
from __future__ import annotations

import pytest
import torch

from stream.settings import load_config
from engine.training.sampler import AnchorSampler, stage_for_epoch

LENGTHS = [32, 16, 8]
RANGES = [[0.0, 0.15], [0.10, 0.75], [0.50, 1.0]]
RATIOS = [0.5, 0.4, 0.9]


def make(schedule: str = "two-stage", seed: int = 0) -> AnchorSampler:
    return AnchorSampler(LENGTHS, None, RANGES, RATIOS, seed=seed, schedule=schedule)


def in_range(cells: torch.Tensor, length: int, lo: float, hi: float) -> torch.Tensor:
    scale = (cells[:, 0] + 1).double() / length
    return (scale >= lo - 1e-9) & (scale <= hi + 1e-9)


# Hand counts. Level 0 (L=32, [0, .15], r=.5): 528 valid cells; in range (d+1) <= 4.8 -> d in 0..3:
# 32+31+30+29 = 122, rest 406. C(32,2) = 496.  Level 1 (L=16, [.1, .75], r=.4): 136 valid;
# d+1 in 2..12 -> d in 1..11: 15+..+5 = 110, rest 26. C(16,2) = 120.  Level 2 (L=8, [.5, 1], r=.9):
# 36 valid; d in 3..7: 5+4+3+2+1 = 15, rest 21. C(8,2) = 28.
EXPECTED = {
    # level: (n_in, n_out, generalization N, specialization (in, out), bias N)
    0: (122, 406, 248, (122, 203), 61),  # 496*.5; min(1, 1.0)*122, .5*406; .5*122
    1: (110, 26, 48, (88, 10), 44),  # 120*.4; .8*110, round(10.4); .4*110
    2: (15, 21, 25, (15, 19), 14),  # round(25.2); min(1, 1.8)*15, round(18.9); round(13.5) half-up
}


@pytest.mark.parametrize("level", [0, 1, 2])
def test_counts_per_stage_and_part(level: int) -> None:
    s = make()
    n_in, n_out, n_gen, (k_in, k_out), n_bias = EXPECTED[level]
    length = LENGTHS[level]
    lo, hi = RANGES[level]
    assert int(s.in_range(level).sum()) == n_in and s.valid(level).shape[0] == n_in + n_out

    gen = s.sample(level, "generalization", epoch=0, step=0)
    assert gen.shape == (n_gen, 2) and gen.dtype == torch.long

    spec = s.sample(level, "specialization", epoch=0, step=0)
    inside = in_range(spec, length, lo, hi)
    assert spec.shape == (k_in + k_out, 2)
    assert int(inside.sum()) == k_in and int((~inside).sum()) == k_out

    bias = s.sample(level, "bias", epoch=0, step=0)
    assert bias.shape == (n_bias, 2) and bool(in_range(bias, length, lo, hi).all())


@pytest.mark.parametrize("stage", ["generalization", "specialization", "bias"])
def test_cells_are_valid_and_unique(stage: str) -> None:
    s = make()
    for level, length in enumerate(LENGTHS):
        for step in range(3):
            cells = s.sample(level, stage, epoch=1, step=step)
            d, st = cells[:, 0], cells[:, 1]
            assert bool(((d >= 0) & (st >= 0) & (st + d < length)).all())
            assert len({tuple(c) for c in cells.tolist()}) == cells.shape[0]  # without replacement


def test_max_duration_limits_cells_and_caps_the_count() -> None:
    s = AnchorSampler([16], [3], [[0.0, 0.15]], [0.9], seed=0)
    # valid: 16 + 15 + 14 = 45 cells < round(120 * .9) = 108 -> all of them
    cells = s.sample(0, "generalization", epoch=0, step=0)
    assert cells.shape == (45, 2) and int(cells[:, 0].max()) == 2


def test_reproducible_with_seed_epoch_step() -> None:
    a, b = make(seed=7), make(seed=7)
    for stage in ("generalization", "specialization"):
        assert torch.equal(a.sample(0, stage, epoch=2, step=5), b.sample(0, stage, epoch=2, step=5))
    # independent of call order / history
    b.sample(0, "generalization", epoch=0, step=0)
    assert torch.equal(a.sample(1, "generalization", epoch=3, step=1), b.sample(1, "generalization", epoch=3, step=1))
    assert not torch.equal(a.sample(0, "generalization", epoch=2, step=5), a.sample(0, "generalization", epoch=2, step=6))
    assert not torch.equal(make(seed=8).sample(0, "generalization", epoch=2, step=5),
                           a.sample(0, "generalization", epoch=2, step=5))


def test_reproducible_with_generator_and_internal_stream() -> None:
    a, b = make(seed=3), make(seed=3)
    assert torch.equal(a.sample(0, "generalization"), b.sample(0, "generalization"))
    first = a.sample(0, "generalization")
    assert torch.equal(first, b.sample(0, "generalization"))
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    assert torch.equal(a.sample(2, "specialization", generator=g1), b.sample(2, "specialization", generator=g2))


def test_generalization_is_uniform_over_scales() -> None:
    s = make()
    hits = torch.zeros(s.valid(0).shape[0])
    index = {tuple(c): i for i, c in enumerate(s.valid(0).tolist())}
    for step in range(200):
        for c in s.sample(0, "generalization", epoch=0, step=step).tolist():
            hits[index[tuple(c)]] += 1
    rate = hits / 200
    assert abs(rate.mean().item() - 248 / 528) < 1e-6  # exact: 248 per step
    inside = s.in_range(0)
    assert abs(rate[inside].mean().item() - rate[~inside].mean().item()) < 0.03


def test_stage_for_epoch_and_schedules() -> None:
    assert [stage_for_epoch(e, 1) for e in range(3)] == ["generalization", "specialization", "specialization"]
    assert [stage_for_epoch(e, 7) for e in (0, 6, 7, 9)] == ["generalization"] * 2 + ["specialization"] * 2
    assert stage_for_epoch(0, 0) == "specialization"
    for sched in ("generalization", "specialization", "bias"):
        assert make(sched).stage_for_epoch(0, 1) == sched and make(sched).stage_for_epoch(5, 1) == sched
    assert make().stage_for_epoch(0, 1) == "generalization"
    with pytest.raises(ValueError):
        stage_for_epoch(0, 1, "sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make().sample(0, "random")  # type: ignore[arg-type]


def test_from_config_uses_paper_settings() -> None:
    cfg = load_config("thumos14")
    s = AnchorSampler.from_config(cfg)
    assert s.level_lengths == [256, 128, 64] and s.ratios == [0.5, 0.4, 0.9]
    n = [s.sample(i, "generalization", epoch=0, step=0).shape[0] for i in range(3)]
    assert n == [16320, 3251, 1814]  # round(C(256,2)*.5), round(8128*.4) = 3251.2, round(2016*.9) = 1814.4
    assert [c.shape[0] for c in s.sample_levels("generalization", epoch=0, step=0)] == n
