#!/bin/sh
# System packages the test suite needs beyond the Python ones (Debian/Ubuntu, apt).
#   - GStreamer's RTSP server (+ codecs) for tests/test_stream_rtsp.py, driven by the
#     system python3 with python3-gi (tests/rtsp/serve.py).
#   - rtsp-server-perl, an independent UDP-only RTSP relay, for tests/test_rtsp_independent.py
#     (tests/rtsp/relay.py starts it on free ports and pushes into it with the GStreamer
#     packages above; no ffmpeg needed). The package's own service is disabled again.
#   - iproute2 (`ip netns`, veth) for tests/test_multihost_netns.py (two hosts as namespaces).
# Idempotent and quiet: does nothing when everything is already installed; without
# root or apt it says so and exits 0 (the tests that need the packages then skip).
set -eu
PKGS="python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \
gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
gstreamer1.0-plugins-ugly gstreamer1.0-libav rtsp-server-perl iproute2"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get; install by hand:$missing (RTSP tests will skip)" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "install-system-deps: not root; install by hand:$missing (RTSP tests will skip)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
case " $missing " in
*" rtsp-server-perl "*)
    # the tests start their own instance; do not leave a system service listening on 554/5545
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now rtsp-server-perl.service >/dev/null 2>&1 || true
    else
        $SUDO invoke-rc.d rtsp-server-perl stop >/dev/null 2>&1 || true
        $SUDO update-rc.d rtsp-server-perl disable >/dev/null 2>&1 || true
    fi
    ;;
esac
