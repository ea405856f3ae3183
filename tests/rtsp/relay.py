#!/usr/bin/python3
"""An independent, UDP-only RTSP server for the transport tests: Debian's ``rtsp-server-perl``.

    /usr/bin/python3 tests/rtsp/relay.py --client-port 8554 --source-port 8555 [--rtp-port 30000]
    /usr/bin/python3 tests/rtsp/relay.py --check      # exit 3 and say what is missing

rtsp-server-perl (RTSP::Server, CPAN) is a relay: a publisher ANNOUNCEs and RECORDs
on the source port (default 5545), players DESCRIBE/SETUP/PLAY on the client port
(default 554). It forwards RTP over UDP only: a player's SETUP asking for TCP
interleaving has no client_port and is answered 400 Bad Request. Its RTP/RTCP sockets
take consecutive ports from --rtp_start_port, but the package resets the counter to a
hard-coded 20000 whenever a connection closes while nothing is mounted; both are set
here (--rtp-port) so a test can pick free ports.

This script starts the server (loopback only) and publishes into it as an
``ffmpeg -f rtsp`` push does: ANNOUNCE/SETUP/RECORD here (see :func:`publish`:
GStreamer's rtspclientsink cannot publish to this server), then RTP over UDP from
GStreamer (videotestsrc, an endless live test picture; x264 zero-latency, a key frame
every second, SPS/PPS in band; rtph264pay ! udpsink). Runs under the *system* Python
(python3-gi, plugins-base/-good/-ugly; see scripts/install-system-deps.sh); needs no
ffmpeg. Prints "READY rtsp://127.0.0.1:PORT/MOUNT" once the stream is mounted; stops
(and stops the server) on SIGINT/SIGTERM or when the server or the publisher fails; the
server stays in this script's process group (tests/test_rtsp_independent.py starts the
script in a new session and ends the group; the script also stops once the process
that started it is gone).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

SERVER = "/usr/bin/rtsp-server-perl"
ELEMENTS = ("videotestsrc", "videoconvert", "x264enc", "rtph264pay", "udpsink")
# run the packaged script with the package's RTP port base (see above) overridden
PERL = ('$| = 1; use RTSP::Server; $RTSP::Server::RTP_START_PORT = shift @ARGV; '
        'my $script = shift @ARGV; do $script; die $@ if $@;')


def missing() -> str | None:
    if not os.path.exists(SERVER) or not shutil.which("perl"):
        return f"{SERVER} not found (Debian package rtsp-server-perl)"
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as exc:
        return f"python3-gi with GStreamer 1.0 not available: {exc}"
    Gst.init(None)
    absent = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
    if absent:
        return "GStreamer elements missing: " + ", ".join(absent)
    return None


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _request(conn: socket.socket, method: str, url: str, cseq: int, headers: dict[str, str],
             body: str = "") -> dict[str, str]:
    """One RTSP request on the publishing connection; the response headers (lower-case names)."""
    lines = [f"{method} {url} RTSP/1.0", f"CSeq: {cseq}", "User-Agent: menet-tests-relay"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/sdp", f"Content-Length: {len(body.encode())}"]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError(f"{method}: connection closed by rtsp-server-perl")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    if not head[0].startswith("RTSP/1.0 200"):
        raise RuntimeError(f"{method}: {head[0]}")
    return {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)}


def publish(args: argparse.Namespace) -> tuple[socket.socket, int]:
    """ANNOUNCE, SETUP and RECORD one H.264 stream, as ``ffmpeg -f rtsp`` does (its SDP names the
    stream ``streamid=0``, the only form this server parses: GStreamer's rtspclientsink says
    ``stream=0`` and the server fails its SETUP). Returns the control connection (closing it
    unmounts the stream) and the server's UDP port to send RTP to."""
    url = f"rtsp://127.0.0.1:{args.source_port}{args.mount}"
    sdp = "\r\n".join([
        "v=0", "o=- 0 0 IN IP4 127.0.0.1", "s=menet test", "c=IN IP4 127.0.0.1", "t=0 0",
        "m=video 0 RTP/AVP 96", "b=AS:300", "a=rtpmap:96 H264/90000",
        "a=fmtp:96 packetization-mode=1; profile-level-id=42C01E",
        f"a=framesize:96 {args.width}-{args.height}", "a=control:streamid=0", ""])
    conn = socket.create_connection(("127.0.0.1", args.source_port), timeout=args.timeout)
    _request(conn, "OPTIONS", url, 1, {})
    session = _request(conn, "ANNOUNCE", url, 2, {}, sdp).get("session", "")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sess = {"Session": session} if session else {}
    transport = _request(conn, "SETUP", f"{url}/streamid=0", 3, {
        "Transport": f"RTP/AVP/UDP;unicast;client_port={port}-{port + 1};mode=record", **sess})["transport"]
    server_rtp = int(re.search(r"server_port=(\d+)", transport).group(1))
    _request(conn, "RECORD", url, 4, {"Range": "npt=0.000-", **sess})
    return conn, server_rtp


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 3, saying why, when something is missing")
    ap.add_argument("--client-port", type=int, default=8554, help="players connect here")
    ap.add_argument("--source-port", type=int, default=8555, help="the publisher connects here")
    ap.add_argument("--rtp-port", type=int, default=30000, help="first of the server's RTP/RTCP UDP ports")
    ap.add_argument("--mount", default="/test")
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the mount")
    args = ap.parse_args()
    why = missing()
    if args.check or why:
        print(why or "ok", file=sys.stderr if why else sys.stdout)
        return 3 if why else 0

    from gi.repository import GLib, Gst

    server = subprocess.Popen(
        ["perl", "-e", PERL, str(args.rtp_port), SERVER,
         "--clientport", str(args.client_port), "--client_listen_address", "127.0.0.1",
         "--serverport", str(args.source_port), "--source_listen_address", "127.0.0.1",
         "--rtp_start_port", str(args.rtp_port), "--loglevel", os.environ.get("RELAY_LOGLEVEL", "2")],
        stdin=subprocess.DEVNULL, stdout=sys.stderr)  # same process group: a killpg ends both
    pipeline = None
    try:
        deadline = time.monotonic() + args.timeout
        while not (_listening(args.source_port) and _listening(args.client_port)):
            if server.poll() is not None:
                print(f"rtsp-server-perl exited with {server.returncode}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("rtsp-server-perl is not listening", file=sys.stderr)
                return 1
            time.sleep(0.05)

        try:
            control, server_rtp = publish(args)
        except (OSError, RuntimeError, KeyError, AttributeError) as exc:
            print(f"cannot publish into rtsp-server-perl: {exc!r}", file=sys.stderr)
            return 1
        control.setblocking(False)  # watch_server polls it for the server closing the session
        pipeline = Gst.parse_launch(
            f"videotestsrc is-live=true pattern=ball ! "
            f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
            "videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.fps} bitrate=300 ! "
            "video/x-h264,profile=baseline ! rtph264pay pt=96 config-interval=-1 ! "
            f"udpsink host=127.0.0.1 port={server_rtp} sync=false async=false")
        bus = pipeline.get_bus()
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            msg = bus.pop_filtered(Gst.MessageType.ERROR)
            print(f"publisher pipeline failed: {msg.parse_error()[0].message if msg else '?'}", file=sys.stderr)
            return 1

        loop = GLib.MainLoop()
        status = {"rc": 0}
        parent = os.getppid()

        def on_message(_bus, msg) -> None:
            if msg.type == Gst.MessageType.ERROR:
                print(f"publisher: {msg.parse_error()[0].message}", file=sys.stderr)
                status["rc"] = 1
                loop.quit()
            elif msg.type == Gst.MessageType.EOS:
                loop.quit()

        def watch_server() -> bool:
            gone = None
            if os.getppid() != parent:
                gone = "the process that started the relay is gone"
            elif server.poll() is not None:
                gone = f"rtsp-server-perl exited with {server.returncode}"
            else:
                try:
                    if control.recv(4096) == b"":
                        gone = "rtsp-server-perl closed the publishing session"
                except BlockingIOError:
                    pass
            if gone:
                print(gone, file=sys.stderr)
                status["rc"] = 1
                loop.quit()
                return False
            return True

        bus.add_signal_watch()
        bus.connect("message", on_message)
        GLib.timeout_add(200, watch_server)
        for sig in (signal.SIGINT, signal.SIGTERM):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
        print(f"READY rtsp://127.0.0.1:{args.client_port}{args.mount}", flush=True)
        loop.run()
        return status["rc"]
    finally:
        if pipeline is not None:
            pipeline.set_state(Gst.State.NULL)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)


if __name__ == "__main__":
    sys.exit(main())
