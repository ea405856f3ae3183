"""Anchor sampler for the IoU-/Offset-ASP losses (paper sec. 3.4, Fig. 4).

Cells are (d, s) of a level's [D_i, L_i] map (segment [s, s + d + 1)); the
valid region is s + d < L_i, d < D_i (``engine.model.head.valid_cells``). The
scale of a cell is (d + 1) / L_i, the fraction of the window it covers (the
window plays the paper's "video"). "In range" means S_min <= scale <= S_max,
both ends inclusive (with a 1e-9 tolerance so 0.75 * 16 = 12 snippets counts).

Stages (all sample without replacement; counts are rounded half-up):

* ``generalization``: N_i = round(C(L_i, 2) * r_i) cells uniformly from the
  whole valid region, the paper's formula verbatim (capped at the number of
  valid cells; with D_i = L_i there are C(L_i, 2) + L_i valid cells, so this
  is r_i of them up to L_i * r_i anchors).
* ``specialization``: exactly round(min(1, 2 r_i) * n_in) cells from the
  in-range part plus exactly round(r_i * n_out) from the rest. The paper gives
  "sampling rates" per part; drawing the exact expected count per part (not a
  Bernoulli draw per cell) keeps N fixed from step to step, so batches have a
  constant anchor count and the specialization / generalization balance is the
  one of Fig. 4 at every step. N is larger than in generalization (the in-range
  part is over-sampled, not the rest under-sampled), as in the paper.
* ``bias`` (ablation of sec. 4.4): round(r_i * n_in) cells from the in-range
  part only.

Schedules (the sec. 4.4 ablations): ``two-stage`` (default: generalization for
epochs < generalization_epochs, then specialization), ``generalization`` only,
``specialization`` only, ``bias`` only.

Reproducibility: ``sample(..., generator=g)`` draws from ``g``;
``sample(..., epoch=e, step=t)`` draws from a generator seeded by
(seed, level, epoch, step) (numpy ``SeedSequence``), so any step can be
replayed independently of what was drawn before (resumed runs, workers);
with neither, an internal generator seeded with ``seed`` at construction
gives a reproducible stream. Returned cells are sorted by their index in
``valid_cells`` order (d-major), which does not affect training.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

from ..config import MENetConfig
from ..model.head import valid_cells

__all__ = ["AnchorSampler", "Stage", "Schedule", "STAGES", "SCHEDULES", "stage_for_epoch"]

Stage = Literal["generalization", "specialization", "bias"]
Schedule = Literal["two-stage", "generalization", "specialization", "bias"]
STAGES: tuple[str, ...] = ("generalization", "specialization", "bias")
SCHEDULES: tuple[str, ...] = ("two-stage", "generalization", "specialization", "bias")
_SCALE_TOL = 1e-9


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding; counts should not depend on parity.
    return int(math.floor(x + 0.5))


def stage_for_epoch(epoch: int, generalization_epochs: int, schedule: Schedule = "two-stage") -> Stage:
    """Stage of a 0-based ``epoch``: two-stage -> generalization while epoch < generalization_epochs."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "two-stage":
        return "generalization" if epoch < generalization_epochs else "specialization"
    return schedule  # type: ignore[return-value]


class AnchorSampler:
    """Per-level anchor sampling of sec. 3.4 (see the module docstring for the exact rules)."""

    def __init__(self, level_lengths: Sequence[int], max_durations: Sequence[int] | None,
                 scale_ranges: Sequence[Sequence[float]], ratios: Sequence[float], seed: int = 0,
                 schedule: Schedule = "two-stage") -> None:
        n = len(level_lengths)
        durs = list(level_lengths) if max_durations is None else list(max_durations)
        if not (len(durs) == len(scale_ranges) == len(ratios) == n):
            raise ValueError("level_lengths, max_durations, scale_ranges and ratios need one entry per level")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        for r in ratios:
            if not 0 < r <= 1:
                raise ValueError(f"sampling ratios must be in (0, 1], got {r}")
        self.level_lengths = list(level_lengths)
        self.max_durations = durs
        self.scale_ranges = [(float(lo), float(hi)) for lo, hi in scale_ranges]
        self.ratios = [float(r) for r in ratios]
        self.seed = int(seed)
        self.schedule: Schedule = schedule
        self._generator = torch.Generator().manual_seed(self.seed)
        self._cells: list[torch.Tensor] = []
        self._in_range: list[torch.Tensor] = []
        for length, dur, (lo, hi) in zip(self.level_lengths, durs, self.scale_ranges):
            cells = valid_cells(length, dur)
            extent = (cells[:, 0] + 1).to(torch.float64)  # snippets covered; scale = extent / L
            inside = (extent >= lo * length - _SCALE_TOL) & (extent <= hi * length + _SCALE_TOL)
            self._cells.append(cells)
            self._in_range.append(inside)

    @classmethod
    def from_config(cls, cfg: MENetConfig, schedule: Schedule = "two-stage",
                    seed: int | None = None) -> "AnchorSampler":
        """Build from a config: levels, D_i, scale ranges, r_i and (unless given) train.seed."""
        return cls(cfg.level_lengths(), cfg.max_durations(), cfg.model.scale_ranges,
                   cfg.train.sample_ratios, cfg.train.seed if seed is None else seed, schedule)

    @property
    def levels(self) -> int:
        return len(self.level_lengths)

    def stage_for_epoch(self, epoch: int, generalization_epochs: int) -> Stage:
        """Stage of a 0-based epoch under this sampler's schedule."""
        return stage_for_epoch(epoch, generalization_epochs, self.schedule)

    def valid(self, level: int) -> torch.Tensor:
        """All valid cells (d, s) of ``level``, [n_valid, 2]."""
        return self._cells[level]

    def in_range(self, level: int) -> torch.Tensor:
        """Bool [n_valid]: cell's scale (d + 1) / L_i inside [S_min, S_max] of the level."""
        return self._in_range[level]

    def counts(self, level: int, stage: Stage) -> tuple[int, int]:
        """(anchors from the in-range part, anchors from the rest) for ``stage``.

        For ``generalization`` the split is not fixed (uniform over all), so it
        returns (N_i, 0) with N_i the total.
        """
        r = self.ratios[level]
        n_in = int(self._in_range[level].sum())
        n_out = int(self._in_range[level].numel()) - n_in
        if stage == "generalization":
            length = self.level_lengths[level]
            return min(n_in + n_out, _round_half_up(math.comb(length, 2) * r)), 0
        if stage == "specialization":
            return min(n_in, _round_half_up(min(1.0, 2 * r) * n_in)), min(n_out, _round_half_up(r * n_out))
        if stage == "bias":
            return _round_half_up(r * n_in), 0
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")

    def _step_generator(self, level: int, epoch: int, step: int) -> torch.Generator:
        if epoch < 0 or step < 0:
            raise ValueError("epoch and step must be >= 0")
        state = np.random.SeedSequence([self.seed, level, epoch, step]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def sample(self, level: int, stage: Stage, generator: torch.Generator | None = None,
               epoch: int | None = None, step: int | None = None) -> torch.Tensor:
        """Cells (d, s) to train ``level`` on this step, LongTensor [N, 2] (sec. 3.4).

        Randomness: ``generator`` if given; else, if ``epoch`` or ``step`` is
        given, a generator seeded by (seed, level, epoch, step) (missing one = 0);
        else the sampler's internal generator (seeded at construction).
        """
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if generator is None:
            generator = (self._step_generator(level, epoch or 0, step or 0)
                         if epoch is not None or step is not None else self._generator)
        cells, inside = self._cells[level], self._in_range[level]
        k_a, k_b = self.counts(level, stage)
        if stage == "generalization":
            pick = torch.randperm(cells.shape[0], generator=generator)[:k_a]
        else:
            idx_in = inside.nonzero().squeeze(1)
            idx_out = (~inside).nonzero().squeeze(1)
            pick = idx_in[torch.randperm(idx_in.numel(), generator=generator)[:k_a]]
            if k_b:
                pick = torch.cat([pick, idx_out[torch.randperm(idx_out.numel(), generator=generator)[:k_b]]])
        return cells[pick.sort().values]

    def sample_levels(self, stage: Stage, generator: torch.Generator | None = None,
                      epoch: int | None = None, step: int | None = None) -> list[torch.Tensor]:
        """``sample`` for every level (one list entry per level)."""
        return [self.sample(i, stage, generator, epoch, step) for i in range(self.levels)]
