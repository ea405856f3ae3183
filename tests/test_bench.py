"""`menet bench` (stream/bench/): model report, a short live pipeline run, --compare, plots."""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import psutil
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from stream.bench import compare_reports, format_report, load_report, write_plots
from stream.bench.pipeline import ProcSampler, free_port, metric, parse_metrics, proc_usage, scrape, stream_counts
from stream.cli import main
from stream_support import write_config


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the shrunk tiny network of the stream tests, with a short merge lag so that a run of a
    # few seconds publishes events while it is measured
    return write_config(tmp_path_factory.mktemp("bench"), "  detector:\n    max_lag_s: 0.5\n")


@pytest.fixture(scope="module")
def model_report(cfg_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-model")
    assert main(["bench", "--config", str(cfg_path), "--only", "model", "--batches", "1", "2", "--repeats", "2",
                 "--out", str(out)]) == 0
    return out


def fake_pipeline(scale: float = 1.0) -> dict:
    runs = []
    for n, dropped in ((1, 0), (2, 0), (4, 3)):
        lat = [scale * (0.05 + 0.01 * k) * n for k in range(20)]
        runs.append({"ok": True, "streams": n, "fps": 25.0, "hop": 16, "events": len(lat), "event_windows": 4,
                     "latencies": lat, "latency_s": {"p50": lat[10], "p95": lat[19], "p99": lat[19]},
                     "realtime_factor": 1.0 if not dropped else 0.9, "realtime_factor_min": 1.0 if not dropped else 0.8,
                     "dropped_snippets": dropped, "cpu_pct": 30.0 * n * scale, "rss_mb": 1000 + 250 * n,
                     "pss_mb": 600 + 100 * n, "gpu_mem_mb": None, "stages": {"mfe": {"mean_batch": 1.5}},
                     "sustained": not dropped, "not_sustained_because": "3 snippets dropped" if dropped else ""})
    return {"runs": runs, "max_sustained_streams": 2, "first_failing_streams": 4, "sustain_rule": "no drops"}


def test_model_bench_report_is_well_formed(model_report: Path) -> None:
    rep = load_report(model_report / "bench.json")
    m = rep["machine"]
    assert m["cores"] >= 1 and m["torch"] and m["cpu"]
    assert rep["config"]["name"] == "stream-test" and rep["checkpoint"] is None
    mod = rep["model"]
    names = [b["name"] for b in mod["backends"]]
    assert "pytorch-cpu-fp32" in names and "onnxruntime-cpu-fp32" in names
    for name in names:
        for stage in ("mfe", "mrem", "dense"):
            for b in (1, 2):
                r = next(r for r in mod["rows"] if (r["backend"], r["stage"], r["batch"]) == (name, stage, b))
                assert r["median_ms"] > 0 and r["repeats"] >= 2
                assert math.isclose(r["per_item_ms"], r["median_ms"] / b)
                assert math.isclose(r["throughput_per_s"], b / r["median_ms"] * 1e3)
    assert any(r["stage"] == "decode" and r["median_ms"] > 0 for r in mod["rows"])
    skipped = {s["backend"] for s in mod["skipped"]}
    import torch
    if not torch.cuda.is_available():
        assert {"pytorch-cuda-fp32", "pytorch-cuda-fp16", "tensorrt"} <= skipped
    text = format_report(rep)
    assert "MFE (per snippet)" in text and "onnxruntime-cpu-fp32" in text
    img = cv2.imread(str(model_report / "bench-throughput-batch.png"))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 600


def test_compare_two_reports(model_report: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = json.loads((model_report / "bench.json").read_text())
    a["pipeline"] = fake_pipeline()
    b = copy.deepcopy(a)
    for r in b["model"]["rows"]:
        r["per_item_ms"] *= 2
    b["pipeline"] = fake_pipeline(scale=2.0)
    b["pipeline"]["max_sustained_streams"] = 1
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main(["bench", "--compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "A = " in out and "B = " in out and "| B / A |" in out
    assert "2.00" in out  # model rows doubled, latencies doubled
    assert "largest N sustained: A 2, B 1" in out
    assert "| 4 | sustained | no | no |" in out
    assert "nothing to compare" in compare_reports({**a, "model": None, "pipeline": None}, b)
    pa.write_text("{}")
    assert main(["bench", "--compare", str(pa), str(pb)]) == 2


def test_plots_are_written(model_report: Path, tmp_path: Path) -> None:
    rep = load_report(model_report / "bench.json")
    rep["pipeline"] = fake_pipeline()
    files = write_plots(rep, tmp_path, prefix="x")
    assert sorted(f.name for f in files) == ["x-latency.png", "x-streams.png", "x-throughput-batch.png"]
    for f in files:
        img = cv2.imread(str(f))
        assert img is not None and img.mean() > 150  # white canvas with drawing on it
    assert "largest N sustained: 2" in format_report(rep)


def test_plots_skipped_without_matplotlib(model_report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    # matplotlib is optional (the bench extra): a None entry makes its import fail, as when absent
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "stream.bench.plots", None)
    rep = load_report(model_report / "bench.json")
    rep["pipeline"] = fake_pipeline()
    with caplog.at_level(logging.WARNING):
        assert write_plots(rep, tmp_path) == []
    assert not list(tmp_path.glob("*.png"))
    assert "plots skipped" in caplog.text and "pip install '.[bench]'" in caplog.text
    # the report itself does not need matplotlib
    assert "largest N sustained: 2" in format_report(rep)


def test_helpers() -> None:
    text = ('# HELP menet_snippets_total x\nmenet_snippets_total{stream="a"} 3.0\nmenet_snippets_total{stream="b"} 4.0\n'
            'menet_stage_latency_seconds_sum{stage="mfe"} 0.5\n')
    s = parse_metrics(text)
    assert metric(s, "menet_snippets_total") == 7 and metric(s, "menet_snippets_total", stream="b") == 4
    assert metric(s, "menet_stage_latency_seconds_sum", stage="mfe") == 0.5 and metric(None, "x") == 0
    with pytest.raises(ValueError):
        parse_metrics('menet_snippets_total{stream="a" 3\n')
    assert stream_counts("auto", 8) is None and stream_counts("4,1,2", 8) == [1, 2, 4]
    with pytest.raises(ValueError):
        stream_counts("0", 8)


def test_scrape_reads_a_workers_metrics_endpoint() -> None:
    # the exposition the workers serve (prometheus_client): counters, labelled histograms
    reg = CollectorRegistry()
    Counter("menet_snippets", "snippets", ["stream"], registry=reg).labels("s0").inc(5)
    h = Histogram("menet_stage_latency_seconds", "stage latency", ["stage"], registry=reg)
    h.labels("mfe").observe(0.25)
    h.labels("mfe").observe(0.5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        s = scrape(port)
    finally:
        server.shutdown()
        thread.join(5)
    assert s is not None
    assert metric(s, "menet_snippets_total", stream="s0") == 5
    assert metric(s, "menet_stage_latency_seconds_count", stage="mfe") == 2
    assert metric(s, "menet_stage_latency_seconds_sum", stage="mfe") == 0.75
    assert scrape(port, timeout=0.5) is None  # nobody listening any more


def test_proc_sampler_follows_the_process_tree() -> None:
    # a parent that starts a busy child: both count, and the samples survive their exit
    code = ("import subprocess, sys, time; "
            "c = subprocess.Popen([sys.executable, '-c', 'import time; t = time.time()\\nwhile time.time() - t < 20: pass']); "
            "print(c.pid, flush=True); time.sleep(20)")
    root = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(root.stdout.readline())
        sampler = ProcSampler(root.pid)
        sampler.measuring = True
        sampler.mark("start")
        time.sleep(0.5)
        sampler.mark("end")
        assert {root.pid, child} <= set(sampler.rss)
        assert all(v > 1 << 20 for v in sampler.rss.values())  # a Python interpreter: MBs
        assert sampler.peak_rss_total >= sum(sampler.rss.values())
        # PSS splits shared pages: never above RSS (RSS stands in where PSS is unreadable)
        assert sampler.peak_pss_total is not None and 0 < sampler.peak_pss_total <= sampler.peak_rss_total
        (t0, c0), (t1, c1) = sampler.marks["start"], sampler.marks["end"]
        assert c1[child] - c0[child] > 0.1 * (t1 - t0)  # the child spins: it used CPU between the marks
    finally:
        if child is not None:
            os.kill(child, 9)  # orphaned, it would spin on
        root.kill()
        root.wait()
        root.stdout.close()
    sampler.sample()  # the root has exited: an empty sample, no error
    assert sampler.rss == {}
    # a process listed, then gone before it is read (exited and reaped): skipped, no error
    short = subprocess.Popen([sys.executable, "-c", "pass"])
    listed = psutil.Process(short.pid)
    short.wait()
    assert proc_usage(listed) is None and proc_usage(listed, pss=True) is None


@pytest.mark.slow
def test_pipeline_bench_one_stream(cfg_path: Path, tmp_path: Path) -> None:
    code = main(["bench", "--config", str(cfg_path), "--only", "pipeline", "--streams", "1", "--duration", "6",
                 "--resolution", "64x64", "--out", str(tmp_path)])
    rep = load_report(tmp_path / "bench.json")
    run = rep["pipeline"]["runs"][0]
    assert code == 0, run.get("error", "") + "\n" + run.get("log_tail", "")
    assert run["ok"] and run["streams"] == 1 and run["exit_status"] == 0
    assert run["events"] > 0 and run["event_windows"] >= 1
    lat = run["latency_s"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] < 30
    parts = run["latency_parts_p50_s"]
    assert set(parts) == {"capture_to_engine", "engine_to_window", "window_to_published"}
    assert all(v >= 0 for v in parts.values())
    assert 0.5 < run["realtime_factor"] < 1.5 and run["dropped_snippets"] >= 0
    assert run["cpu_pct"] > 0 and run["rss_mb"] > 100
    assert {"engine", "detector", "grabber"} <= set(run["cpu_pct_by_role"])
    assert run["stages"]["mfe"]["calls"] > 0
    assert rep["pipeline"]["max_sustained_streams"] in (0, 1)
    assert (tmp_path / "bench-latency.png").is_file() and (tmp_path / "bench-streams.png").is_file()
