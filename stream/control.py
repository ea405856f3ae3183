"""Runtime control of a running ``menet run``: add, remove and list sources.

The supervisor binds a ZeroMQ REP socket on ``stream.transport.control_endpoint`` (default
``ipc://<the run's temp dir>/control``, a folder only the user can enter); ``menet
sources`` and any ZeroMQ client send one request and read one reply, both msgpack
maps (docs/protocol.md, "Control socket")::

    request  {"v": 1, "op": "add" | "remove" | "list", "id": "cam2", "uri": "rtsp://..."}
    reply    {"v": 1, "ok": true | false, "error": null | "text", "message": "text", "sources": [...]}

A malformed request gets ``ok: false`` and an error saying why; it never
disturbs the running pipeline. Replies to ``add`` come after the source has
been opened once (like the start check); replies to ``remove`` once the
stream's end (last window, events, end of stream) has been published.
"""
from __future__ import annotations

import glob
import os
import socket as _socket
import stat
import tempfile
from typing import Any

import msgpack

from .sources import _NAME_RE, default_stream_id

CONTROL_VERSION = 1
OPS = ("add", "remove", "list")
FIELDS = ("v", "op", "id", "uri")
MAX_REQUEST_BYTES = 64 * 1024
MAX_URI = 4096


class ControlError(ValueError):
    """A control request is malformed or refused; the message says why."""


def valid_stream_id(sid: Any) -> bool:
    """A stream id usable as an event topic and a file name: ``[A-Za-z0-9_.-]{1,64}``, not ``.`` / ``..``."""
    return isinstance(sid, str) and bool(_NAME_RE.match(sid)) and sid not in (".", "..")


def parse_request(frames: list[Any]) -> dict[str, Any]:
    """Validate one received request (``recv_multipart()``) -> ``{op, id, uri}``; :class:`ControlError` else."""
    if len(frames) != 1:
        raise ControlError(f"a request is one msgpack frame, got {len(frames)} frames")
    raw = frames[0] if isinstance(frames[0], bytes) else bytes(frames[0])
    if len(raw) > MAX_REQUEST_BYTES:
        raise ControlError(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
    try:
        req = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ControlError(f"request is not msgpack: {type(exc).__name__}: {exc}"[:200]) from None
    if not isinstance(req, dict):
        raise ControlError(f"request must be a msgpack map, got {type(req).__name__}")
    unknown = sorted(str(k)[:40] for k in req if k not in FIELDS)
    if unknown:
        raise ControlError(f"unknown field(s) {unknown}: a request has {list(FIELDS)}")
    if req.get("v", CONTROL_VERSION) != CONTROL_VERSION:
        raise ControlError(f"v: control protocol version {CONTROL_VERSION} expected, got {req.get('v')!r:.40}")
    op = req.get("op")
    if op not in OPS:
        raise ControlError(f"unknown op {op!r:.40}: expected one of {', '.join(OPS)}")
    sid, uri = req.get("id"), req.get("uri")
    if op == "add":
        if not isinstance(uri, str) or not uri.strip() or len(uri) > MAX_URI or not uri.isprintable():
            raise ControlError(f"add: uri must be a non-empty printable string of at most {MAX_URI} characters, "
                               f"got {uri!r:.80}")
        uri = uri.strip()
        if sid is None:
            sid = default_stream_id(uri)
    elif uri is not None:
        raise ControlError(f"{op}: takes no uri")
    if op == "remove" and sid is None:
        raise ControlError("remove: needs the id of the source")
    if sid is not None and not valid_stream_id(sid):
        raise ControlError(f"id must be 1-64 characters of A-Z a-z 0-9 _ . - (not . or ..), got {sid!r:.80}")
    return {"op": op, "id": sid, "uri": uri}


def make_reply(ok: bool, error: str | None = None, message: str = "", sources: list[dict[str, Any]] | None = None,
               **extra: Any) -> dict[str, Any]:
    return {"v": CONTROL_VERSION, "ok": bool(ok), "error": error, "message": message, "sources": sources or [],
            **extra}


def encode(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# ---------------------------------------------------------------- client


class ControlClient:
    """Send control requests to a running ``menet run`` (a fresh REQ socket per request).

    ``curve``: (client public, client secret, server public) keys for a CURVE tcp endpoint.
    """

    def __init__(self, endpoint: str, timeout_s: float = 60.0, curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.curve = curve

    def send_raw(self, frames: list[bytes]) -> dict[str, Any]:
        """Send ``frames`` as they are (tests send malformed requests this way); the decoded reply."""
        import zmq

        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve is not None:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self.curve
        try:
            sock.connect(self.endpoint)
            sock.send_multipart(frames)
            if not sock.poll(int(self.timeout_s * 1000)):
                hint = "" if not self.endpoint.startswith("tcp://") or self.curve else \
                    "; a CURVE endpoint needs --key and --server-key"
                raise ControlError(f"no reply from {self.endpoint} within {self.timeout_s:g} s (is `menet run` "
                                   f"running there?{hint})")
            raw = sock.recv()
        finally:
            sock.close(0)
        try:
            reply = msgpack.unpackb(raw, raw=False)
        except Exception as exc:  # noqa: BLE001
            raise ControlError(f"reply from {self.endpoint} is not msgpack ({exc})") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise ControlError(f"reply from {self.endpoint} is not a control reply: {reply!r:.200}")
        return reply

    def request(self, op: str, id: str | None = None, uri: str | None = None) -> dict[str, Any]:  # noqa: A002
        req: dict[str, Any] = {"v": CONTROL_VERSION, "op": op}
        if id is not None:
            req["id"] = id
        if uri is not None:
            req["uri"] = uri
        return self.send_raw([encode(req)])

    def add(self, uri: str, id: str | None = None) -> dict[str, Any]:  # noqa: A002
        return self.request("add", id, uri)

    def remove(self, id: str) -> dict[str, Any]:  # noqa: A002
        return self.request("remove", id)

    def list(self) -> dict[str, Any]:
        return self.request("list")


def discover() -> list[str]:
    """Control endpoints of this user's running ``menet run`` processes with the default endpoint.

    They are ``ipc://<tmp>/menet-run-*/control`` sockets; a socket left by a killed run
    refuses connections and is skipped."""
    found = []
    for path in sorted(glob.glob(os.path.join(tempfile.gettempdir(), "menet-run-*", "control"))):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            continue
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            s.settimeout(1.0)
            s.connect(path)
        except OSError:
            continue
        finally:
            s.close()
        found.append(f"ipc://{path}")
    return found


def ipc_in_use(endpoint: str) -> bool:
    """True when ``endpoint`` is an ipc:// socket something is listening on (binding would steal it)."""
    if not endpoint.startswith("ipc://"):
        return False
    path = endpoint[6:]
    if not os.path.exists(path):
        return False
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


__all__ = ["CONTROL_VERSION", "ControlClient", "ControlError", "OPS", "discover", "encode", "ipc_in_use",
           "make_reply", "parse_request", "valid_stream_id"]
