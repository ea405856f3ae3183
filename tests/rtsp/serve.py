#!/usr/bin/python3
"""Serve a video file over RTSP with GStreamer's RTSP server (tests only).

    /usr/bin/python3 tests/rtsp/serve.py VIDEO --port 8554 [--mount /test]

Runs under the *system* Python (python3-gi + gir1.2-gst-rtsp-server-1.0, see
scripts/install-system-deps.sh), not the project venv. Binds 127.0.0.1 only.
The file is decoded and re-encoded as H.264 (x264, zero-latency) so any input
codec works; each client session starts the file from the beginning, paced in
real time. Prints "READY rtsp://127.0.0.1:PORT/MOUNT" once listening.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("video")
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--mount", default="/test")
    args = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.video.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( filesrc location="{location}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 bitrate=500 ! "
        "rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
