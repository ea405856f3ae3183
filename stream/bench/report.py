"""The ``menet bench`` report: machine info, Markdown tables, PNG plots (matplotlib, optional),
side-by-side comparison."""
from __future__ import annotations

import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

from .model import LABEL, UNIT, format_model_table

log = logging.getLogger(__name__)

FORMAT = "menet-bench-1"


def machine_info() -> dict[str, Any]:
    import numpy as np
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem, "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import onnxruntime as ort
        info["onnxruntime"] = ort.__version__
    except ImportError:
        info["onnxruntime"] = None
    try:
        import tensorrt  # type: ignore[import-not-found]
        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def load_report(path: str | Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a menet bench report (format {data.get('format')!r}, want {FORMAT!r})")
    return data


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=_jsonable, allow_nan=True))
    return path


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


# ---------------------------------------------------------------- tables


def _f(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_pipeline_table(pipe: dict[str, Any]) -> str:
    lines = ["| streams | events (windows) | detection delay p50 / p95 (s) | true actions reported | "
             "compute latency p50 / p95 / p99 (s) | realtime factor (min) | dropped snippets | "
             "CPU % (100 = 1 core) | RSS / PSS (MB) | MFE batch (mean) | sustained |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in pipe["runs"]:
        if not r.get("ok"):
            lines.append(f"| {r['streams']} | run failed: {r.get('error', '?')} | | | | | | | | | no |")
            continue
        lat = r["latency_s"]
        gpu = f", GPU {r['gpu_mem_mb']:.0f} MB" if r.get("gpu_mem_mb") is not None else ""
        d = r.get("detection_delay") or {}
        reported = (f"{d['reported']} / {d['actions']}" if d.get("actions") else "no action ended") + (
            f" ({d['censored']} ended too late to count)" if d.get("censored") else "")
        lines.append(
            f"| {r['streams']} | {r['events']} ({r['event_windows']}) | "
            f"{_f(d.get('delay_p50_s'), '.1f')} / {_f(d.get('delay_p95_s'), '.1f')} | {reported} | "
            f"{_f(lat['p50'])} / {_f(lat['p95'])} / "
            f"{_f(lat['p99'])} | {r['realtime_factor']:.3f} ({r['realtime_factor_min']:.3f}) | "
            f"{r['dropped_snippets']:.0f} | {r['cpu_pct']:.0f} | {r['rss_mb']:.0f} / {_f(r.get('pss_mb'), '.0f')}{gpu} | "
            f"{_f(r['stages']['mfe'].get('mean_batch'), '.1f')} | "
            f"{'yes' if r['sustained'] else 'no: ' + r['not_sustained_because']} |")
    return "\n".join(lines)


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, onnxruntime {m.get('onnxruntime')}, "
           f"GPU {m.get('gpu') or 'none'}; config {report['config']['name']} ({report['config']['source']}), "
           + ("random weights" if not report.get("checkpoint") else f"checkpoint {report['checkpoint']}")]
    if report.get("model"):
        mod = report["model"]
        out += ["", f"## Model (median, {mod['threads']} CPU thread(s); ms per item and items per second)", "",
                format_model_table(mod)]
        for s in mod.get("skipped", []):
            out.append(f"skipped {s['backend']}: {s['why']}")
    if report.get("pipeline"):
        p = report["pipeline"]
        out += ["", "## Pipeline (live synthetic streams, measurement phase only)", "", format_pipeline_table(p), "",
                f"largest N sustained: {p['max_sustained_streams']}"
                + (f" (N={p['first_failing_streams']} not)" if p.get("first_failing_streams") else "")
                + f"  [{p['sustain_rule']}]"]
    return "\n".join(out)


# ---------------------------------------------------------------- compare


def _ratio(a: Any, b: Any) -> str:
    try:
        if a and b and math.isfinite(a) and math.isfinite(b):
            return f"{b / a:.2f}"
    except TypeError:
        pass
    return "-"


def compare_reports(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Side-by-side key figures of two reports, with B / A ratios."""
    out = [f"A = {name_a}: {a['machine']['cpu']} ({a['machine']['cores']} cores), GPU {a['machine'].get('gpu') or 'none'}, "
           f"config {a['config']['name']}, {a.get('created', '?')}",
           f"B = {name_b}: {b['machine']['cpu']} ({b['machine']['cores']} cores), GPU {b['machine'].get('gpu') or 'none'}, "
           f"config {b['config']['name']}, {b.get('created', '?')}", ""]
    ma, mb = a.get("model"), b.get("model")
    if ma and mb:
        out += ["## Model: ms per item (median)", "", "| backend | stage | batch | A | B | B / A |",
                "| --- | --- | --- | --- | --- | --- |"]
        idx = {(r["backend"], r["stage"], r["batch"]): r for r in mb["rows"]}
        keys = [(r["backend"], r["stage"], r["batch"]) for r in ma["rows"]]
        keys += [k for k in idx if k not in keys]
        ia = {(r["backend"], r["stage"], r["batch"]): r for r in ma["rows"]}
        for k in keys:
            ra, rb = ia.get(k), idx.get(k)
            va = ra["per_item_ms"] if ra else None
            vb = rb["per_item_ms"] if rb else None
            out.append(f"| {k[0]} | {LABEL[k[1]]} (per {UNIT[k[1]]}) | {k[2]} | {_f(va)} | {_f(vb)} | {_ratio(va, vb)} |")
        out.append("")
    pa, pb = a.get("pipeline"), b.get("pipeline")
    if pa and pb:
        out += ["## Pipeline", "",
                f"largest N sustained: A {pa['max_sustained_streams']}, B {pb['max_sustained_streams']}", "",
                "| streams | figure | A | B | B / A |", "| --- | --- | --- | --- | --- |"]
        ra = {r["streams"]: r for r in pa["runs"] if r.get("ok")}
        rb = {r["streams"]: r for r in pb["runs"] if r.get("ok")}
        for n in sorted(set(ra) | set(rb)):
            x, y = ra.get(n), rb.get(n)
            figs = [("detection delay p50 (s)", lambda r: (r.get("detection_delay") or {}).get("delay_p50_s")),
                    ("detection delay p95 (s)", lambda r: (r.get("detection_delay") or {}).get("delay_p95_s")),
                    ("compute latency p50 (s)", lambda r: r["latency_s"]["p50"]),
                    ("compute latency p95 (s)", lambda r: r["latency_s"]["p95"]),
                    ("compute latency p99 (s)", lambda r: r["latency_s"]["p99"]),
                    ("realtime factor", lambda r: r["realtime_factor"]),
                    ("dropped snippets", lambda r: r["dropped_snippets"]),
                    ("CPU %", lambda r: r["cpu_pct"]),
                    ("RSS (MB)", lambda r: r["rss_mb"]),
                    ("sustained", lambda r: r["sustained"])]
            for label, get in figs:
                va = get(x) if x else None
                vb = get(y) if y else None
                if label == "sustained":
                    out.append(f"| {n} | {label} | {_yn(va)} | {_yn(vb)} | |")
                else:
                    out.append(f"| {n} | {label} | {_f(va, '.3g')} | {_f(vb, '.3g')} | {_ratio(va, vb)} |")
    if not ((ma and mb) or (pa and pb)):
        out.append("nothing to compare: the reports have no section (model / pipeline) in common")
    return "\n".join(out)


def _yn(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


# ---------------------------------------------------------------- plots


def write_plots(report: dict[str, Any], out_dir: str | Path, prefix: str = "bench") -> list[Path]:
    """``{prefix}-throughput-batch.png`` (model), ``{prefix}-latency.png`` and ``{prefix}-streams.png``
    (pipeline); returns the files written.

    The plots need matplotlib (the ``bench`` extra). Without it nothing is written, a warning
    says how to get them, and [] is returned: the JSON and Markdown report do not depend on it.
    """
    try:
        from .plots import Figure, Series, cdf
    except ImportError as exc:
        log.warning("plots skipped: matplotlib is not installed (%s); the JSON and Markdown report are complete. "
                    "For the PNG plots: pip install '.[bench]' (or pip install 'matplotlib>=3.8')", exc)
        return []
    out_dir = Path(out_dir)
    m = report["machine"]
    sub = (f"{report['config']['name']} config, {m['cpu']} ({m['cores']} cores)"
           + (f", {m['gpu']}" if m.get("gpu") else "") + f", torch {m['torch']}"
           + (", random weights" if not report.get("checkpoint") else ""))
    written = []
    mod = report.get("model")
    if mod and mod["rows"]:
        stages = [s for s in ("mfe", "mrem", "dense") if any(r["stage"] == s for r in mod["rows"])]
        names = [b["name"] for b in mod["backends"]]
        fig = Figure(2, len(stages), title="menet bench: throughput and latency vs batch size", subtitle=sub,
                     panel_size=(470, 340))
        for j, s in enumerate(stages):
            thr, lat = [], []
            for n in names:
                rows = sorted((r for r in mod["rows"] if r["backend"] == n and r["stage"] == s), key=lambda r: r["batch"])
                if rows:
                    thr.append(Series(n, [r["batch"] for r in rows], [r["throughput_per_s"] for r in rows]))
                    lat.append(Series(n, [r["batch"] for r in rows], [r["per_item_ms"] for r in rows]))
            bt = [float(v) for v in sorted({r["batch"] for r in mod["rows"] if r["stage"] == s})]
            fig.panel(0, j, f"{LABEL[s]}: throughput", "batch size", f"{UNIT[s]}s / s", thr, logx=True, xticks=bt)
            fig.panel(1, j, f"{LABEL[s]}: latency per {UNIT[s]}", "batch size", f"ms per {UNIT[s]}", lat, logx=True,
                      xticks=bt)
        written.append(fig.save(out_dir / f"{prefix}-throughput-batch.png"))
    pipe = report.get("pipeline")
    runs = [r for r in (pipe or {}).get("runs", []) if r.get("ok")]
    if runs:
        series = [Series(f"N={r['streams']} ({r['events']} events)", *cdf(r["latencies"]), markers=False)
                  for r in runs if r["latencies"]]
        fig = Figure(1, 1, title="menet bench: compute latency (newest snippet captured -> event published)",
                     subtitle=sub, panel_size=(900, 460))
        fig.panel(0, 0, f"CDF over the events of the measurement phase (hop {runs[0]['hop']} snippets, "
                        f"{runs[0]['fps']:g} fps streams)", "latency (s)", "fraction of events", series,
                  ymin=0.0, ymax=1.0)
        written.append(fig.save(out_dir / f"{prefix}-latency.png"))
        ns = [r["streams"] for r in runs]
        fig = Figure(2, 3, title=f"menet bench: live {runs[0]['fps']:g} fps streams "
                                 f"(largest N sustained: {pipe['max_sustained_streams']})", subtitle=sub,
                     panel_size=(470, 330))
        logx = max(ns) >= 4
        fig.panel(0, 0, "compute latency", "streams", "seconds", [
            Series("p50", ns, [r["latency_s"]["p50"] for r in runs]),
            Series("p95", ns, [r["latency_s"]["p95"] for r in runs]),
            Series("p99", ns, [r["latency_s"]["p99"] for r in runs])], logx=logx, xticks=[float(v) for v in ns])
        fig.panel(0, 1, "realtime factor (stream s / wall s)", "streams", "factor", [
            Series("mean over streams", ns, [r["realtime_factor"] for r in runs]),
            Series("slowest stream", ns, [r["realtime_factor_min"] for r in runs])], logx=logx, xticks=[float(v) for v in ns], ymin=0.0,
            hline=(1.0, "real time"))
        fig.panel(0, 2, "dropped snippets (measured phase)", "streams", "snippets", [
            Series("dropped", ns, [r["dropped_snippets"] for r in runs])], logx=logx, xticks=[float(v) for v in ns])
        fig.panel(1, 0, "CPU of all pipeline processes", "streams", "CPU % (100 = 1 core)", [
            Series("CPU %", ns, [r["cpu_pct"] for r in runs])], logx=logx, xticks=[float(v) for v in ns],
            hline=(100.0 * (m["cores"] or 1), f"{m['cores']} cores"))
        mem = [Series("RSS (sum)", ns, [r["rss_mb"] for r in runs])]
        if all(r.get("pss_mb") is not None for r in runs):
            mem.append(Series("PSS (shared split)", ns, [r["pss_mb"] for r in runs]))
        if any(r.get("gpu_mem_mb") is not None for r in runs):
            mem.append(Series("GPU memory", ns, [r.get("gpu_mem_mb") or float("nan") for r in runs]))
        fig.panel(1, 1, "memory of all pipeline processes", "streams", "MB", mem, logx=logx, xticks=[float(v) for v in ns])
        fig.panel(1, 2, "MFE batch size (engine, mean)", "streams", "snippets per batch", [
            Series("mean batch", ns, [r["stages"]["mfe"].get("mean_batch") or float("nan") for r in runs])],
            logx=logx, xticks=[float(v) for v in ns])
        written.append(fig.save(out_dir / f"{prefix}-streams.png"))
    return written
