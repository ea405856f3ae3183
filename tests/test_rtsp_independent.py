"""RTSP transport choice against an independent, UDP-only server: Debian's rtsp-server-perl.

tests/rtsp/relay.py starts the server (a relay: publishers ANNOUNCE/RECORD on one port,
players on another) and pushes a live H.264 test picture into it, as an ``ffmpeg -f rtsp``
push does. The server forwards RTP over UDP only (a SETUP for TCP interleaving gets
400 Bad Request), so ``rtsp_transport: tcp`` cannot open it, ``auto`` falls back to UDP,
and a ``#rtsp_transport=udp`` fragment opens it whatever the config says.
Needs scripts/install-system-deps.sh; skips, saying why, without it.
"""
from __future__ import annotations

import logging
import os
import random
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream import sources
from stream.settings import SourceSettings
from stream.sources import FrameItem, SourceError, StatusItem

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"
RELAY = Path(__file__).resolve().parent / "rtsp" / "relay.py"
WIDTH, HEIGHT = 160, 120


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_udp_base() -> int:
    """An even UDP port with a few free ones after it, below the ephemeral range (the server
    binds its RTP/RTCP sockets from there, two per stream and two per player)."""
    for _ in range(100):
        base = random.randrange(20000, 32000, 2)
        held = []
        try:
            for port in range(base, base + 16):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free UDP port range")


@pytest.fixture(scope="module")
def relay_uri() -> Iterator[str]:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"{SYSTEM_PYTHON} not found (the relay runs under the system Python with python3-gi)")
    check = subprocess.run([SYSTEM_PYTHON, str(RELAY), "--check"], check=False, capture_output=True, text=True,
                           timeout=60)
    if check.returncode:
        why = (check.stderr.strip().splitlines() or [f"exit {check.returncode}"])[-1]
        pytest.skip(f"rtsp-server-perl relay unavailable (run scripts/install-system-deps.sh): {why}")
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(RELAY), "--client-port", str(_free_tcp_port()),
             "--source-port", str(_free_tcp_port()), "--rtp-port", str(_free_udp_base()),
             "--width", str(WIDTH), "--height", str(HEIGHT)],
            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
        try:
            line = ""
            deadline = time.monotonic() + 30
            while not line and proc.poll() is None and time.monotonic() < deadline:
                if select.select([proc.stdout], [], [], 0.2)[0]:
                    line = proc.stdout.readline()
            if not line.startswith("READY "):
                log.seek(0)
                pytest.fail(f"relay did not start (exit {proc.poll()}): {line}{log.read()[-2000:]}")
            yield line.split()[1]
        finally:
            # the relay and the perl server it started: the relay's own process group (SIGKILL
            # too, after the relay is gone, for a server it could not stop)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            proc.stdout.close()


def _cfg(transport: str) -> SourceSettings:
    return SourceSettings(open_timeout_s=5.0, read_timeout_s=3.0, stall_timeout_s=5.0,
                          reconnect_min_s=0.3, reconnect_max_s=1.0, rtsp_transport=transport)


def _read_frames(uri: str, cfg: SourceSettings, n: int = 5, timeout: float = 20.0) -> list[FrameItem]:
    """Open ``uri`` as the grabber does (open_source -> LiveSource) and read ``n`` frames."""
    src = sources.open_source(uri, cfg)
    stop = threading.Event()
    frames: list[FrameItem] = []
    states: list[str] = []
    items = src.items(stop)
    deadline = time.monotonic() + timeout
    try:
        for item in items:
            if isinstance(item, FrameItem):
                frames.append(item)
            elif isinstance(item, StatusItem):
                states.append(item.state)
            if len(frames) >= n or time.monotonic() > deadline:
                break
    finally:
        stop.set()
        items.close()
    assert len(frames) >= n, f"{len(frames)} frames in {timeout:g} s; states {states}"
    assert "live" in states
    return frames


def test_tcp_only_cannot_open_the_udp_only_server(relay_uri: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open rtsp source over RTSP/TCP \(open timeout"):
        sources.probe_source(relay_uri, _cfg("tcp"))
    assert time.monotonic() - t0 < 5.0  # refused (400 to the TCP SETUP), not timed out


def test_auto_falls_back_to_udp_and_reads_frames(relay_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stream.sources")
    cfg = _cfg("auto")
    sources.probe_source(relay_uri, cfg)
    assert "cannot open over RTSP/TCP; trying the next transport" in caplog.text
    assert "opened over RTSP/UDP" in caplog.text
    for f in _read_frames(relay_uri, cfg):
        assert f.image.shape == (HEIGHT, WIDTH, 3) and f.image.dtype.name == "uint8"


def test_uri_fragment_udp_overrides_a_tcp_config(relay_uri: str) -> None:
    cfg = _cfg("tcp")
    uri = relay_uri + "#rtsp_transport=udp"
    sources.probe_source(uri, cfg)
    for f in _read_frames(uri, cfg):
        assert f.image.shape == (HEIGHT, WIDTH, 3)
