"""RTSP grabber against a real local RTSP server (GStreamer's, from Debian packages).

The server (tests/rtsp/serve.py, system python3 + python3-gi) serves a generated
mp4. The grabber attaches; when the server is killed and restarted, it
reconnects, announces the outage as a gap, and detection goes on.
Needs scripts/install-system-deps.sh; skips, saying why, without it.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from stream import protocol as P
from test_stream_e2e import Run
from stream_support import REPO, free_port, make_video

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
SERVE = REPO / "tests" / "rtsp" / "serve.py"

RTSP_CONFIG = """extends: {base}
stream:
  detector:
    merge: lag
    max_lag_s: 2.0
  sources:
    open_timeout_s: 3.0
    read_timeout_s: 2.0
    stall_timeout_s: 2.0
    reconnect_min_s: 0.3
    reconnect_max_s: 1.0
  supervisor:
    shutdown_timeout_s: 20.0
"""


def gst_rtsp_available() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = ("import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
             "('x264enc', 'rtph264pay', 'decodebin', 'qtdemux')) else 3)")
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True)
    if r.returncode:
        return ("GStreamer RTSP server or plugins missing (run scripts/install-system-deps.sh): "
                + (r.stderr.strip().splitlines() or ["x264enc/rtph264pay/decodebin/qtdemux not found"])[-1])
    return None


class Server:
    def __init__(self, video: Path, port: int) -> None:
        self.video, self.port = video, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVE), str(self.video), "--port", str(self.port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), f"RTSP server did not start: {line}{self.proc.stdout.read()}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise AssertionError("RTSP server not listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def test_rtsp_reconnects_reports_the_gap_and_detection_continues(stream_setup, tmp_path: Path) -> None:
    why = gst_rtsp_available()
    if why:
        pytest.skip(why)
    cfg_path = tmp_path / "rtsp.yaml"
    cfg_path.write_text(RTSP_CONFIG.format(base=stream_setup["cfg_path"]))
    setup = {**stream_setup, "cfg_path": cfg_path}
    video = make_video(tmp_path / "cam.mp4", seed=5, seconds=90.0, fps=25.0, size=64)
    port = free_port()
    server = Server(video, port)
    server.start()
    run = Run(setup, tmp_path, [f"cam=rtsp://127.0.0.1:{port}/test"])
    try:
        # attached: live status and a first event
        run.collect(set(), timeout=60, until=lambda ms: any(h["type"] == P.EVENT for h in ms))
        states = [h["state"] for h in run.messages if h["type"] == P.STATUS]
        assert "live" in states
        n_before = len(run.messages)
        server.kill()
        run.collect(set(), timeout=30, until=lambda ms: any(
            h["type"] == P.STATUS and h["state"] in ("stalled", "reconnecting") for h in ms[n_before:]))
        time.sleep(2.0)
        server.start()
        # back: live again, a reconnect gap, then events from windows after the gap
        run.collect(set(), timeout=60, until=lambda ms: any(h["type"] == P.GAP for h in ms[n_before:]))
        gap = next(h for h in run.messages[n_before:] if h["type"] == P.GAP)
        assert gap["reason"] == "reconnect" and gap["count"] >= 2 * 25 // 4 * 0.5
        sps = 4 / 25.0
        run.collect(set(), timeout=60, until=lambda ms: any(
            h["type"] == P.EVENT and h["end"] > (gap["first"] + gap["count"]) * sps for h in ms))
        after = [h["state"] for h in run.messages[n_before:] if h["type"] == P.STATUS]
        assert "live" in after and after.index("live") > 0
        run.proc.send_signal(signal.SIGINT)
        run.collect({"cam"}, timeout=40)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
        server.kill()
    assert "reconnect" in run.output()
