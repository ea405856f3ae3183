"""RTSP transport choice (stream.sources.rtsp_transport, per-source URI fragment)."""
from __future__ import annotations

import pytest

from stream import sources
from stream.sources import SourceError, rtsp_transports


def test_transport_order_from_config_and_fragment() -> None:
    assert rtsp_transports("rtsp://cam/live", "auto") == ("rtsp://cam/live", ["tcp", "udp"])
    assert rtsp_transports("rtsp://cam/live", "tcp") == ("rtsp://cam/live", ["tcp"])
    # the fragment never reaches the server; it overrides the config for this source
    assert rtsp_transports("rtsp://u:p@cam/live?ch=1#rtsp_transport=udp", "tcp") == ("rtsp://u:p@cam/live?ch=1",
                                                                                       ["udp"])
    with pytest.raises(SourceError, match="rtsp_transport must be one of auto, tcp, udp, got 'quic'"):
        rtsp_transports("rtsp://cam/live#rtsp_transport=quic", "auto")


def test_user_ffmpeg_options_are_kept_under_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_USER_FFMPEG_OPTIONS", "rtsp_transport;udp|stimeout;5000000")
    assert sources._ffmpeg_options("tcp") == "rtsp_transport;tcp|stimeout;5000000"


def test_unopenable_rtsp_source_says_which_transports_were_tried() -> None:
    from stream.settings import SourceSettings

    cfg = SourceSettings(open_timeout_s=0.5, read_timeout_s=0.5)
    with pytest.raises(SourceError, match=r"cannot open rtsp source over RTSP/TCP\+UDP"):
        sources.probe_source("rtsp://127.0.0.1:9/nothing-here", cfg)  # port 9 (discard): refused at once
