"""Bad video files through real `menet run` processes, slow.

Files (tests/bad_videos.py): an mp4 cut in half (index at the end: unopenable; index first: the
first half decodes), an mp4 with 2 KB overwritten mid-file, random bytes named .mp4, a zero-byte
file, containers with 0 frames (AVI opens: a zero-length stream; mp4 does not open).

* at start, unopenable files make `menet run` exit 2 with one line naming each of them;
* in a running pipeline (beside a live source), files that open but break end after their readable
  frames (EOS reason ``decode error``, status naming the file, ``menet_decode_errors_total``), the
  zero-length stream ends with 0 snippets, unopenable files added with `menet sources add` are
  refused naming the file; the live source keeps producing events and the run stops cleanly.

Each case records a row for docs/reliability.md (tests/hardening_results.py).
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.snippets import num_snippets
from stream import protocol as P
from bad_videos import count_frames, make_bad_videos
from hardening_results import record
from stream_support import REPO
from test_stream_e2e import Run, free_port_block, http_get

pytestmark = pytest.mark.slow

LIVE = "live=synthetic://live?seed=4&duration=600&fps=25&width=48&height=48&rate=realtime"
UNOPENABLE = {"trunc": "truncated mp4, index (moov) at the end, cut in half",
              "random": "random bytes with an .mp4 extension",
              "zero": "zero-byte file",
              "empty_mp4": "mp4 with 0 frames (cv2.VideoWriter released unwritten)"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_videos(tmp_path_factory.mktemp("badvideo"))


def test_unopenable_files_stop_the_start_naming_each(stream_setup, bad, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "stream", "run", "--config", str(stream_setup["cfg_path"]), "--source", LIVE]
    cmd += [arg for name in UNOPENABLE for arg in ("--source", f"{name}={bad[name]}")]
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    for name in UNOPENABLE:
        line = next((ln for ln in out.stderr.splitlines() if f"source {name!r} cannot be opened" in ln), None)
        assert line is not None and str(bad[name]) in line, out.stderr
    assert "empty file (0 bytes)" in out.stderr
    assert "started" not in out.stderr  # nothing was started
    record("input", "video files that cannot be opened, at start (4 kinds)", tried=len(UNOPENABLE),
           counted=len(UNOPENABLE), crashed=False,
           outcome=f"menet run exits 2 in {elapsed:.0f} s before starting anything, one line per bad source "
                   "naming its file and why (empty file / cannot open video)")


def _metric(body: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in body.splitlines():
        if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
            return float(line.split()[-1])
    return None


def test_damaged_files_end_cleanly_beside_a_live_source(stream_setup, bad, tmp_path: Path) -> None:
    from stream.control import ControlClient

    cfg = stream_setup["cfg"]
    sigma = cfg.data.sigma
    damaged = {"cut": bad["trunc_faststart"], "corrupt": bad["corrupt"], "empty": bad["empty_avi"]}
    frames = {sid: count_frames(path) for sid, path in damaged.items()}
    port = free_port_block(3 + 1 + len(damaged))
    control = f"ipc://{tmp_path}/control"
    run = Run(stream_setup, tmp_path, [LIVE] + [f"{sid}={path}" for sid, path in damaged.items()],
              ["--control", control, "--metrics-port", str(port)], checkpoint=False)
    client = ControlClient(control, timeout_s=60)
    try:
        run.collect(set(damaged), timeout=120)  # each damaged file ends by itself
        t_ended = time.time()
        metrics = {sid: http_get(port + 3 + 1 + i, "/metrics")[1] for i, sid in enumerate(damaged)}
        engine_metrics = http_get(port + 2, "/metrics")[1]
        refused = {}
        for name in UNOPENABLE:
            rep = client.add(str(bad[name]), name)
            assert not rep["ok"] and str(bad[name]) in rep["error"], rep
            refused[name] = rep["error"]
        assert "empty file (0 bytes)" in refused["zero"]
        listed = client.list()["sources"]
        assert {s["id"]: s["state"] for s in listed} == {"live": "running", "cut": "ended", "corrupt": "ended",
                                                           "empty": "ended"}
        supervisor_metrics = http_get(port, "/metrics")[1]
        run.collect(set(), timeout=60, until=lambda ms: any(
            h["type"] == P.EVENT and h["stream"] == "live" and h["t_published"] > t_ended + 3.0 for h in ms))
        run.proc.send_signal(signal.SIGINT)
        run.collect({"live"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    out = run.output()
    assert _metric(supervisor_metrics, "menet_control_requests_total", op="add", result="refused") == len(UNOPENABLE)
    eos = {h["stream"]: h for h in run.messages if h["type"] == P.EOS}
    ended = {h["stream"]: h for h in run.messages if h["type"] == P.STATUS and h["state"] == "ended"}
    rows = {}
    for sid, path in damaged.items():
        opens, readable, reported = frames[sid]
        e, st = eos[sid], ended[sid]
        assert e["n_frames"] == readable and e["n_snippets"] == num_snippets(readable, sigma), (sid, e)
        assert st["counters"]["frames"] == readable
        events = [h for h in run.messages if h["type"] == P.EVENT and h["stream"] == sid
                  and h.get("state", "final") == "final"]
        windows = _metric(engine_metrics, "menet_windows_total", stream=sid) or 0
        errors = _metric(metrics[sid], "menet_decode_errors_total", stream=sid)
        if sid == "empty":
            assert readable == 0 and e["reason"] == "end" and "zero-length" in st["detail"] and not events
            assert f"{sid}: {path} gave no frame" in out
            rows[sid] = (f"a zero-length stream: EOS with 0 snippets, status '{st['detail'].split(': ', 1)[1]}', "
                         "a warning naming the file; no window, no event")
            continue
        assert e["reason"] == "decode error" and str(path) in st["detail"], (e, st)
        assert f"decoding stopped at frame {readable} of {reported}" in st["detail"]
        assert errors == 1.0 and windows >= 1 and events, (sid, errors, windows)
        assert re.search(rf"ERROR stream\.grabber\[\d+\]: {sid}: {re.escape(str(path))}: decoding stopped", out)
        rows[sid] = (f"{readable} of {reported} frames decoded and processed ({e['n_snippets']} snippets, "
                     f"{windows:.0f} window(s), {len(events)} events), then EOS reason 'decode error'; status "
                     "detail and an ERROR line name the file; menet_decode_errors_total 1")
    live_after = [h for h in run.events("live") if h["t_published"] > t_ended]
    assert live_after
    beside = "; the live source beside it kept producing events; run exit 0"
    record("input", "video file: mp4 cut in half, index (moov) first", tried=1, counted=1, crashed=False,
           outcome=rows["cut"] + beside)
    record("input", "video file: mp4 with 2 KB overwritten mid-file", tried=1, counted=1, crashed=False,
           outcome=rows["corrupt"] + " (decoding stops at the first undecodable frame, as offline extraction "
                                     "does)" + beside)
    record("input", "video file: AVI container with 0 frames (zero-length stream)", tried=1, counted=1,
           crashed=False, outcome=rows["empty"] + beside)
    for name, what in UNOPENABLE.items():
        record("input", f"video file: {what}", tried=1, counted=1, crashed=False,
               outcome=f"`menet sources add` refused with '{refused[name].split(': ', 2)[-1]}', naming the file; "
                       "the running streams unaffected (at start: menet run exits 2, see 'video files that cannot be "
                       "opened, at start')")
    (tmp_path / "eos.json").write_text(json.dumps(eos, indent=1))
