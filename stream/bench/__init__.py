"""``menet bench``: model stages per backend and batch size, live streams through the real pipeline.

* :mod:`stream.bench.model`: per-stage latency and throughput vs batch size, per backend and precision;
* :mod:`stream.bench.pipeline`: N live synthetic streams through ``menet run``: event latency,
  realtime factor, drops, CPU, RSS, GPU memory; the largest N sustained;
* :mod:`stream.bench.report`: machine info, JSON report, Markdown tables, ``--compare``, PNG plots
  (drawn with matplotlib, :mod:`stream.bench.plots`; the optional ``bench`` extra, skipped without it).
"""
from .model import bench_model, format_model_table, time_stage
from .pipeline import bench_pipeline, run_streams
from .report import FORMAT, compare_reports, format_report, load_report, machine_info, write_plots, write_report

__all__ = ["FORMAT", "bench_model", "bench_pipeline", "compare_reports", "format_model_table", "format_report",
           "load_report", "machine_info", "run_streams", "time_stage", "write_plots", "write_report"]
