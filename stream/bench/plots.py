"""Small line plots drawn with OpenCV (a dependency already), so ``menet bench`` needs no
plotting library: panels with axes, ticks, grid, a legend, log2 or linear x.

    fig = Figure(2, 2, title="...")
    fig.panel(0, 0, "title", "x label", "y label", [Series("a", xs, ys)], logx=True)
    fig.save("out.png")
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR; colour-blind friendly (Okabe-Ito)
PALETTE = [(178, 114, 0), (0, 94, 213), (115, 158, 0), (167, 121, 204), (0, 159, 230), (233, 180, 86),
           (66, 228, 240), (0, 0, 0)]
GRID = (225, 225, 225)
AXIS = (60, 60, 60)
TEXT = (30, 30, 30)


@dataclass
class Series:
    label: str
    x: Sequence[float]
    y: Sequence[float]
    markers: bool = True
    dashed: bool = False


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 0.5 + 1e-12:
        ticks.append(round(t, 10))
        t += step
    return ticks


def fmt(v: float) -> str:
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


def put(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.5, color=TEXT, thick: int = 1,
        align: str = "left") -> None:
    (w, h), _ = cv2.getTextSize(text, FONT, scale, thick)
    x, y = org
    if align == "center":
        x -= w // 2
    elif align == "right":
        x -= w
    cv2.putText(img, text, (int(x), int(y)), FONT, scale, color, thick, cv2.LINE_AA)


def put_vertical(img: np.ndarray, text: str, center: tuple[int, int], scale: float = 0.5) -> None:
    (w, h), base = cv2.getTextSize(text, FONT, scale, 1)
    tile = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
    cv2.putText(tile, text, (2, h + 1), FONT, scale, TEXT, 1, cv2.LINE_AA)
    tile = cv2.rotate(tile, cv2.ROTATE_90_COUNTERCLOCKWISE)
    th, tw = tile.shape[:2]
    x0, y0 = center[0] - tw // 2, center[1] - th // 2
    x0, y0 = max(0, x0), max(0, y0)
    region = img[y0:y0 + th, x0:x0 + tw]
    region[...] = np.minimum(region, tile[:region.shape[0], :region.shape[1]])


def _dashed(img: np.ndarray, p: tuple[int, int], q: tuple[int, int], color, thick: int, dash: int = 8) -> None:
    d = math.hypot(q[0] - p[0], q[1] - p[1])
    n = max(1, int(d // dash))
    for k in range(0, n, 2):
        a = (int(p[0] + (q[0] - p[0]) * k / n), int(p[1] + (q[1] - p[1]) * k / n))
        b = (int(p[0] + (q[0] - p[0]) * min(n, k + 1) / n), int(p[1] + (q[1] - p[1]) * min(n, k + 1) / n))
        cv2.line(img, a, b, color, thick, cv2.LINE_AA)


class Figure:
    """A grid of ``rows x cols`` panels on a white canvas."""

    def __init__(self, rows: int = 1, cols: int = 1, panel_size: tuple[int, int] = (560, 380),
                 title: str = "", subtitle: str = "") -> None:
        self.rows, self.cols = rows, cols
        self.pw, self.ph = panel_size
        self.top = (36 if title else 8) + (22 if subtitle else 0)
        self.img = np.full((self.top + rows * self.ph, cols * self.pw, 3), 255, np.uint8)
        if title:
            put(self.img, title, (self.img.shape[1] // 2, 26), 0.7, thick=2, align="center")
        if subtitle:
            put(self.img, subtitle, (self.img.shape[1] // 2, self.top - 8), 0.45, color=(90, 90, 90),
                align="center")

    def panel(self, row: int, col: int, title: str, xlabel: str, ylabel: str, series: list[Series], *,
              logx: bool = False, ymin: float | None = 0.0, ymax: float | None = None, xticks: list[float] | None = None,
              hline: tuple[float, str] | None = None, note: str = "") -> None:
        img = self.img
        x0, y0 = col * self.pw, self.top + row * self.ph
        left, right, top, bottom = x0 + 78, x0 + self.pw - 18, y0 + 34, y0 + self.ph - 52
        put(img, title, ((left + right) // 2, y0 + 22), 0.55, thick=1, align="center")
        put(img, xlabel, ((left + right) // 2, y0 + self.ph - 12), 0.5, align="center")
        put_vertical(img, ylabel, (x0 + 16, (top + bottom) // 2), 0.5)
        pts = [(float(x), float(y)) for s in series for x, y in zip(s.x, s.y)
               if y is not None and math.isfinite(float(y)) and (not logx or float(x) > 0)]
        if not pts:
            cv2.rectangle(img, (left, top), (right, bottom), AXIS, 1)
            put(img, "no data", ((left + right) // 2, (top + bottom) // 2), 0.6, align="center")
            return
        tx = (lambda v: math.log2(v)) if logx else (lambda v: v)
        xs = [tx(p[0]) for p in pts]
        ys = [p[1] for p in pts] + ([hline[0]] if hline else [])
        xlo, xhi = min(xs), max(xs)
        if xhi == xlo:
            xlo, xhi = xlo - 1, xhi + 1
        pad = (xhi - xlo) * 0.04
        xlo, xhi = xlo - pad, xhi + pad
        ylo = min(ys) if ymin is None else min(ymin, min(ys))
        yhi = max(ys) if ymax is None else ymax
        if yhi <= ylo:
            yhi = ylo + (abs(ylo) or 1.0)
        yt = nice_ticks(ylo, yhi + (yhi - ylo) * 0.05)
        ylo, yhi = min(yt[0], ylo), yt[-1]

        def px(v: float) -> int:
            return int(round(left + (tx(v) - xlo) / (xhi - xlo) * (right - left)))

        def py(v: float) -> int:
            return int(round(bottom - (v - ylo) / (yhi - ylo) * (bottom - top)))

        for t in yt:
            y = py(t)
            cv2.line(img, (left, y), (right, y), GRID, 1)
            put(img, fmt(t), (left - 6, y + 4), 0.42, align="right")
        if xticks is None:
            if logx:
                lo2, hi2 = math.ceil(xlo), math.floor(xhi)
                xticks = [2.0 ** k for k in range(int(lo2), int(hi2) + 1)]
            else:
                xticks = [t for t in nice_ticks(xlo, xhi) if xlo <= t <= xhi]
        for t in xticks:
            x = px(t)
            if left <= x <= right:
                cv2.line(img, (x, top), (x, bottom), GRID, 1)
                put(img, fmt(t), (x, bottom + 18), 0.42, align="center")
        cv2.rectangle(img, (left, top), (right, bottom), AXIS, 1)
        if hline:
            _dashed(img, (left, py(hline[0])), (right, py(hline[0])), (0, 0, 200), 1)
            put(img, hline[1], (right - 4, py(hline[0]) - 5), 0.4, color=(0, 0, 200), align="right")
        for i, s in enumerate(series):
            color = PALETTE[i % len(PALETTE)]
            p = [(px(float(x)), py(float(y))) for x, y in zip(s.x, s.y)
                 if y is not None and math.isfinite(float(y)) and (not logx or float(x) > 0)]
            for a, b in zip(p, p[1:]):
                if s.dashed:
                    _dashed(img, a, b, color, 2)
                else:
                    cv2.line(img, a, b, color, 2, cv2.LINE_AA)
            if s.markers:
                for q in p:
                    cv2.circle(img, q, 4, color, -1, cv2.LINE_AA)
        # legend, top-left inside the axes, on a white box
        if series:
            wmax = max(cv2.getTextSize(s.label, FONT, 0.42, 1)[0][0] for s in series)
            box = img[top + 2:top + 6 + 17 * len(series), left + 4:left + 48 + wmax]
            box[...] = (box.astype(np.float32) * 0.15 + 255 * 0.85).astype(np.uint8)
        ly = top + 16
        for i, s in enumerate(series):
            color = PALETTE[i % len(PALETTE)]
            cv2.line(img, (left + 10, ly - 4), (left + 34, ly - 4), color, 2, cv2.LINE_AA)
            put(img, s.label, (left + 40, ly), 0.42)
            ly += 17
        if note:
            put(img, note, (right - 4, bottom - 8), 0.4, color=(90, 90, 90), align="right")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), self.img):
            raise OSError(f"cannot write {path}")
        return path


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    v = sorted(values)
    n = len(v)
    return v, [(i + 1) / n for i in range(n)]
