"""The ``menet bench`` line plots, drawn with matplotlib (the optional ``bench`` extra:
``pip install .[bench]``). Importing this module raises ImportError without matplotlib;
:func:`stream.bench.report.write_plots` then skips the plots.

    fig = Figure(2, 2, title="...")
    fig.panel(0, 0, "title", "x label", "y label", [Series("a", xs, ys)], logx=True)
    fig.save("out.png")

Figures are drawn on the Agg canvas directly, never through pyplot: no GUI backend,
no global figure state, safe in a headless process and in threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

DPI = 100
# colour-blind friendly (Okabe-Ito)
PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000"]


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    markers: bool = True
    dashed: bool = False


def fmt(v: float) -> str:
    """Short tick label: 0, 3, 2.5, 0.25, 12k, 1.5M."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 10000:
        return f"{v / 1000:g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 0.01:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.0e}"


def _finite(s: Series, logx: bool) -> tuple[list[float], list[float]]:
    # None / NaN points (a figure a run did not produce) are left out, and x <= 0 on a log axis
    pts = [(float(x), float(y)) for x, y in zip(s.x, s.y)
           if y is not None and math.isfinite(float(y)) and (not logx or float(x) > 0)]
    return [p[0] for p in pts], [p[1] for p in pts]


class Figure:
    """A grid of ``rows x cols`` panels; ``panel_size`` in pixels (at :data:`DPI`)."""

    def __init__(self, rows: int = 1, cols: int = 1, panel_size: tuple[int, int] = (560, 380),
                 title: str = "", subtitle: str = "") -> None:
        self.rows, self.cols = rows, cols
        lines = [t for t in (title, subtitle) if t]
        w, h = cols * panel_size[0] / DPI, rows * panel_size[1] / DPI + 0.1 + 0.25 * len(lines)
        self.fig = MplFigure(figsize=(w, h), dpi=DPI, layout="constrained")
        FigureCanvasAgg(self.fig)
        if lines:
            self.fig.suptitle("\n".join(lines), fontsize=11)
        self.axes = self.fig.subplots(rows, cols, squeeze=False)

    def panel(self, row: int, col: int, title: str, xlabel: str, ylabel: str, series: list[Series], *,
              logx: bool = False, ymin: float | None = 0.0, ymax: float | None = None, xticks: list[float] | None = None,
              hline: tuple[float, str] | None = None, note: str = "") -> None:
        ax = self.axes[row][col]
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="#e1e1e1", linewidth=0.8)
        ax.set_axisbelow(True)
        data = [(s, *_finite(s, logx)) for s in series]
        if not any(xs for _, xs, _ in data):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", fontsize=11)
            ax.set_xticks([])
            ax.set_yticks([])
            return
        for i, (s, xs, ys) in enumerate(data):
            ax.plot(xs, ys, color=PALETTE[i % len(PALETTE)], linewidth=1.8, linestyle="--" if s.dashed else "-",
                    marker="o" if s.markers else None, markersize=4, label=s.label)
        if logx:
            ax.set_xscale("log", base=2)
        if xticks is None and logx:
            lo, hi = (f(x for _, xs, _ in data for x in xs) for f in (min, max))
            xticks = [2.0 ** k for k in range(math.floor(math.log2(lo)), math.ceil(math.log2(hi)) + 1)]
        if xticks is not None:
            ax.xaxis.set_major_locator(FixedLocator(xticks))
            ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
        if hline:
            ax.axhline(hline[0], color="#c80000", linestyle="--", linewidth=1)
            ax.annotate(hline[1], (1, hline[0]), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", va="bottom", fontsize=8, color="#c80000")
        # the y range starts at ymin (0 by default: a figure that halves looks halved) and
        # always shows the hline
        lo, hi = ax.get_ylim()
        if hline:
            lo, hi = min(lo, hline[0]), max(hi, hline[0] * 1.05)
        if ymin is not None:
            lo = min(ymin, lo)
        if ymax is not None:
            hi = ymax
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0)
        ax.set_ylim(lo, hi)
        ax.legend(loc="upper left", fontsize=8, framealpha=0.85)
        if note:
            ax.text(0.98, 0.03, note, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#5a5a5a")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fig.savefig(path, dpi=DPI, facecolor="white")
        except OSError as exc:
            raise OSError(f"cannot write plot {path}: {exc}") from exc
        return path


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values and their empirical CDF (fraction of values <= each)."""
    v = sorted(values)
    n = len(v)
    return v, [(i + 1) / n for i in range(n)]
