"""Transport security for MENet-stream sockets (docs/security.md).

* Endpoints bind to loopback or ``ipc://`` unless configured otherwise; a ``tcp://``
  bind on another address is refused unless CURVE is configured
  (``stream.security.curve_server_secret_file``) or ``stream.security.allow_insecure_remote: true``.
* CURVE (ZeroMQ's elliptic-curve encryption + authentication) on every ``tcp://``
  socket when ``stream.security.curve_server_secret_file`` is set: binding sockets are CURVE
  servers with that key pair; a ZAP authenticator (one thread per process) accepts
  only the client public keys found in ``stream.security.curve_clients_dir`` (``*.key`` files
  written by ``menet keys``) plus the server's own key (the pipeline's internal
  connections use it). An unknown key completes no handshake and receives nothing.
* Connecting sockets (``menet subscribe``, internal connects over tcp) use
  ``stream.security.curve_client_secret_file`` (default: the server key pair when the process
  has it) and the server's public key (``stream.security.curve_server_public_file``, default:
  read from the server key pair).

Key files are ZeroMQ certificates (``zmq.auth.create_certificates``): ``NAME.key``
(public) and ``NAME.key_secret`` (public + secret; keep it private). Nothing here
unpickles anything: keys are Z85 text.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .settings import SecuritySettings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class SecurityError(RuntimeError):
    """An endpoint or key configuration is unsafe or unusable; the message says why."""


def generate_keypair(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (secret, mode 0600) into ``out_dir``."""
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise SecurityError("this libzmq has no CURVE support (built without libsodium)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(out), name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_keypair(path: str | Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file written by :func:`generate_keypair`."""
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise SecurityError(f"{p}: key file not found")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except Exception as exc:  # noqa: BLE001 - malformed file
        raise SecurityError(f"{p}: not a ZeroMQ certificate ({exc})") from exc
    if not public or len(public) != 40:
        raise SecurityError(f"{p}: no valid public key")
    return public, secret



def load_client_curve(key: str | Path | None, server_key: str | Path | None) -> tuple[bytes, bytes, bytes] | None:
    """(client public, client secret, server public) for a CURVE client; None when neither file is given.

    ``key``: the client's ``NAME.key_secret``; ``server_key``: the server's ``NAME.key``.
    Raises :class:`SecurityError` naming what is missing or wrong.
    """
    if not key and not server_key:
        return None
    if not (key and server_key):
        raise SecurityError("CURVE needs both --key (client NAME.key_secret) and --server-key (server NAME.key)")
    pub, sec = load_keypair(key)
    if sec is None:
        raise SecurityError(f"{key}: holds no secret key (give the NAME.key_secret file)")
    return pub, sec, load_keypair(server_key)[0]

def endpoint_host(endpoint: str) -> str | None:
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[6:]
    if rest.startswith("["):
        return rest[1:rest.index("]")]
    return urlsplit(endpoint).hostname or rest.rsplit(":", 1)[0]


def is_loopback(endpoint: str) -> bool:
    """True for ipc/inproc endpoints and tcp endpoints on a loopback address."""
    host = endpoint_host(endpoint)
    if host is None:
        return True
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: not provably loopback


def check_bind(scfg: SecuritySettings, endpoint: str) -> None:
    """Refuse a non-loopback tcp bind without CURVE unless ``allow_insecure_remote``."""
    if is_loopback(endpoint) or scfg.curve_server_secret_file or scfg.allow_insecure_remote:
        return
    raise SecurityError(f"refusing to bind {endpoint} without CURVE: it is not a loopback address. Set "
                        "stream.security.curve_server_secret_file (see `menet keys`, docs/security.md), or "
                        "stream.security.allow_insecure_remote: true to accept unauthenticated clients")


class Transport:
    """Socket factory for one process: applies the bind check and CURVE to tcp:// sockets."""

    def __init__(self, scfg: SecuritySettings, ctx: Any) -> None:
        self.scfg = scfg
        self.ctx = ctx
        self.auth: Any = None
        self.server: tuple[bytes, bytes] | None = None
        if scfg.curve_server_secret_file:
            public, secret = load_keypair(scfg.curve_server_secret_file)
            if secret is None:
                raise SecurityError(f"{scfg.curve_server_secret_file}: holds no secret key "
                                    "(give the NAME.key_secret file)")
            self.server = (public, secret)

    @property
    def curve(self) -> bool:
        return self.server is not None or bool(self.scfg.curve_client_secret_file)

    def _start_auth(self) -> None:
        if self.auth is not None:
            return
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        self.auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("stream.security.zap"))
        self.auth.start()
        self.auth.allow()  # any address: the key decides
        certs: dict[bytes, Any] = {}
        folder = self.scfg.curve_clients_dir
        if folder:
            if not Path(folder).is_dir():
                raise SecurityError(f"stream.security.curve_clients_dir {folder}: no such directory")
            certs.update(zmq.auth.load_certificates(folder))
        assert self.server is not None
        certs[self.server[0]] = True  # the pipeline's own processes
        self.auth.certs["*"] = certs
        log.info("CURVE: %d client key(s) allowed (%s)", len(certs) - 1, folder or "no clients dir")

    def client_keys(self) -> tuple[bytes, bytes, bytes]:
        """(client public, client secret, server public) for a connecting socket."""
        s = self.scfg
        if s.curve_client_secret_file:
            pub, sec = load_keypair(s.curve_client_secret_file)
            if sec is None:
                raise SecurityError(f"{s.curve_client_secret_file}: holds no secret key")
        elif self.server is not None:
            pub, sec = self.server
        else:
            raise SecurityError("CURVE client needs stream.security.curve_client_secret_file")
        if s.curve_server_public_file:
            server_pub = load_keypair(s.curve_server_public_file)[0]
        elif self.server is not None:
            server_pub = self.server[0]
        else:
            raise SecurityError("CURVE client needs stream.security.curve_server_public_file (the server's NAME.key)")
        return pub, sec, server_pub

    def secure(self, sock: Any, endpoint: str, bind: bool) -> None:
        """Apply the bind check and CURVE options to ``sock`` (before bind/connect)."""
        if bind:
            check_bind(self.scfg, endpoint)
        if not endpoint.startswith("tcp://") or not self.curve:
            return
        if bind:
            if self.server is None:
                raise SecurityError(f"{endpoint}: CURVE server needs stream.security.curve_server_secret_file")
            self._start_auth()
            sock.curve_secretkey = self.server[1]
            sock.curve_publickey = self.server[0]
            sock.curve_server = True
        else:
            pub, sec, server_pub = self.client_keys()
            sock.curve_publickey = pub
            sock.curve_secretkey = sec
            sock.curve_serverkey = server_pub

    def socket(self, kind: int, endpoint: str, *, bind: bool, hwm: int, linger_ms: int = 2000,
               options: dict[int, Any] | None = None) -> Any:
        """THE socket setup of every process: bounded queues (SNDHWM = RCVHWM = ``hwm``), linger,
        any extra ``options`` (e.g. ``{zmq.XPUB_VERBOSE: 1}``), the bind check and CURVE
        (:meth:`secure`), then bind or connect."""
        import zmq

        from . import protocol as P

        s = self.ctx.socket(kind)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        s.setsockopt(zmq.LINGER, linger_ms)
        for opt, value in (options or {}).items():
            s.setsockopt(opt, value)
        try:
            self.secure(s, endpoint, bind)
            if not bind and endpoint.startswith("tcp://") and self.curve:
                watch_handshakes(s, endpoint)
            if bind:
                P.ensure_ipc_dir(endpoint)
                s.bind(endpoint)
            else:
                s.connect(endpoint)
        except Exception:
            s.close(0)
            raise
        return s

    def close(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def watch_handshakes(sock: Any, endpoint: str) -> None:
    """Log a CURVE connection's refusals, which ZeroMQ otherwise keeps to itself.

    A client whose key the server does not allow (or that has the wrong server key) just never
    connects: a grabber waits "for the engine" forever, a subscriber hears nothing. A daemon
    thread reads the socket's monitor and logs each refusal as an ERROR naming the endpoint and
    the likely cause (at most once a minute per kind), and the first success after one."""
    import threading

    import zmq
    from zmq.utils.monitor import recv_monitor_message

    failures = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the server refused this client's key (not in its "
                                                 "curve_clients_dir allow-list?)",
                zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "CURVE handshake failed (wrong curve_server_public_file, "
                                                     "or the server does not use CURVE?)",
                zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "CURVE handshake failed (wrong curve_server_public_file?)"}
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_MONITOR_STOPPED
                                      | sum(failures))
    where = endpoint.split("@")[-1]

    def run() -> None:
        last: dict[int, float] = {}
        failed = False
        try:
            while True:
                try:
                    event = recv_monitor_message(monitor)
                except zmq.ZMQError:
                    return
                kind = event["event"]
                if kind == zmq.EVENT_MONITOR_STOPPED:
                    return
                if kind in failures:
                    import time
                    now = time.monotonic()
                    if now - last.get(kind, -1e9) >= 60.0:
                        last[kind] = now
                        log.error("%s: %s; nothing is sent or received on this connection", where, failures[kind])
                    failed = True
                elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and failed:
                    log.info("%s: CURVE handshake succeeded", where)
                    failed = False
        finally:
            monitor.close(0)

    threading.Thread(target=run, name=f"curve-watch {where}", daemon=True).start()


__all__ = ["SecurityError", "Transport", "check_bind", "watch_handshakes", "generate_keypair", "is_loopback", "load_keypair"]
