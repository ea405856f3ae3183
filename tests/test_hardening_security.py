"""Security: CURVE encryption + allow-listed client keys on tcp endpoints, `menet keys`, loopback-only
binds unless configured, no pickle on the wire or in user-supplied checkpoints."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from stream import protocol as P
from stream.cli import main
from stream.settings import SecuritySettings
from stream.security import SecurityError, Transport, check_bind, is_loopback, load_keypair
from stream.subscriber import Subscriber
from hardening_results import record
from stream_support import REPO, free_port, make_video


def scfg(**kw) -> SecuritySettings:
    return SecuritySettings(**kw)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    for name, folder in (("server", "server"), ("alice", "clients"), ("mallory", "other")):
        assert main(["keys", "--out", str(root / folder), "--name", name]) == 0
    # the allow-list holds only public keys
    (root / "allowed").mkdir()
    (root / "allowed" / "alice.key").write_bytes((root / "clients" / "alice.key").read_bytes())
    return {"root": root, "server": root / "server" / "server.key_secret",
            "server_pub": root / "server" / "server.key", "alice": root / "clients" / "alice.key_secret",
            "mallory": root / "other" / "mallory.key_secret", "allowed": root / "allowed"}


def test_keys_command_writes_a_pair_and_refuses_overwrite(tmp_path: Path, capsys) -> None:
    assert main(["keys", "--out", str(tmp_path), "--name", "cam-box"]) == 0
    pub, sec = load_keypair(tmp_path / "cam-box.key_secret")
    assert len(pub) == 40 and sec is not None and len(sec) == 40
    assert load_keypair(tmp_path / "cam-box.key")[1] is None  # the public file has no secret
    assert (tmp_path / "cam-box.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", "--out", str(tmp_path), "--name", "cam-box"]) == 2
    assert main(["keys", "--out", str(tmp_path), "--name", "../evil"]) == 2
    assert "exists" in capsys.readouterr().err


def _pub_server(keys, endpoint):
    ctx = zmq.Context()
    t = Transport(scfg(curve_server_secret_file=str(keys["server"]), curve_clients_dir=str(keys["allowed"])), ctx)
    pub = t.socket(zmq.PUB, endpoint, bind=True, hwm=1000)
    return ctx, t, pub


def _client(keys, key_file):
    pub, sec = load_keypair(key_file)
    return (pub, sec, load_keypair(keys["server_pub"])[0])


def test_curve_allowed_key_receives_unknown_key_and_plain_get_nothing(keys) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx, t, pub = _pub_server(keys, endpoint)
    alice = Subscriber(endpoint, curve=_client(keys, keys["alice"]))
    mallory = Subscriber(endpoint, curve=_client(keys, keys["mallory"]))
    plain = Subscriber(endpoint)
    try:
        ev = P.make_header(P.EVENT, 0, stream="cam1", event_id="x", label="a", class_id=0, score=0.5, start=0.0,
                           end=1.0, start_wall=0.0, end_wall=1.0, window=0, t_capture=0.0, t_engine_in=0.0,
                           t_window=0.0, t_published=0.0, latency_s=0.0)
        got = None
        deadline = time.monotonic() + 10
        k = 0
        while got is None and time.monotonic() < deadline:  # slow joiner: publish until alice hears
            pub.send_multipart(P.encode({**ev, "event_id": f"e{k}"}, topic="cam1"))
            k += 1
            got = alice.recv(0.1)
        assert got is not None and got.header["label"] == "a"
        for _ in range(20):
            pub.send_multipart(P.encode({**ev, "event_id": f"late{_}"}, topic="cam1"))
        assert alice.recv(2.0) is not None
        assert mallory.recv(2.0) is None, "an unknown client key must receive nothing"
        assert plain.recv(0.5) is None, "a client without CURVE must receive nothing"
    finally:
        for s in (alice, mallory, plain):
            s.close()
        pub.close(0)
        t.close()
        ctx.term()
    record("fault", "CURVE: unknown client key / no key subscribes", source="tcp PUB", survived=True,
           recovery_s=None, events_lost=0, duplicates=0,
           notes="allowed key receives; unknown key and plain client receive nothing")


def test_a_refused_client_key_is_logged_not_silent(keys, caplog) -> None:
    """A grabber (a connecting pipeline socket) whose key the server does not allow used to wait
    "for the engine" forever without a word: the refusal is now an ERROR naming the endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx, t, pull = _pub_server(keys, endpoint)  # a CURVE server allowing alice only
    cctx = zmq.Context()
    client = Transport(scfg(curve_client_secret_file=str(keys["mallory"]),
                            curve_server_public_file=str(keys["server_pub"])), cctx)
    push = client.socket(zmq.SUB, endpoint, bind=False, hwm=10)
    try:
        deadline = time.monotonic() + 10
        with caplog.at_level("ERROR", logger="stream.security"):
            while time.monotonic() < deadline and not any("refused this client's key" in r.message
                                                          for r in caplog.records):
                time.sleep(0.05)
        refused = [r.message for r in caplog.records if "refused this client's key" in r.message]
        assert refused and refused[0].startswith(endpoint), caplog.text
    finally:
        push.close(0)
        client.close()
        cctx.term()
        pull.close(0)
        t.close()
        ctx.term()


def test_non_loopback_bind_needs_curve_or_explicit_opt_in(keys) -> None:
    assert is_loopback("tcp://127.0.0.1:1") and is_loopback("tcp://[::1]:1") and is_loopback("ipc:///tmp/x")
    assert not is_loopback("tcp://0.0.0.0:1") and not is_loopback("tcp://*:1") and not is_loopback("tcp://10.0.0.5:1")
    with pytest.raises(SecurityError, match="without CURVE"):
        check_bind(scfg(), "tcp://0.0.0.0:5560")
    check_bind(scfg(allow_insecure_remote=True), "tcp://0.0.0.0:5560")
    check_bind(scfg(curve_server_secret_file=str(keys["server"])), "tcp://0.0.0.0:5560")
    ctx = zmq.Context()
    with pytest.raises(SecurityError):
        Transport(scfg(), ctx).socket(zmq.PUB, f"tcp://0.0.0.0:{free_port()}", bind=True, hwm=10)
    with pytest.raises(SecurityError, match="no secret"):
        Transport(scfg(curve_server_secret_file=str(keys["server_pub"])), ctx)
    ctx.term()


def test_menet_run_refuses_a_public_event_endpoint_without_curve(stream_setup, tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", 1, 2.0)
    out = subprocess.run([sys.executable, "-m", "stream", "run", "--config", str(stream_setup["cfg_path"]),
                          "--source", str(video), "--event-endpoint", f"tcp://0.0.0.0:{free_port()}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "without CURVE" in out.stderr


NO_PICKLE_ALLOWED = re.compile(r"\bpickle\b|cPickle|dill\b|\bjoblib\b|allow_pickle\s*=\s*True|"
                               r"torch\.load\((?![^)]*weights_only\s*=\s*True)")


def test_no_pickle_on_the_wire_or_in_user_checkpoints() -> None:
    """Grep the shipped code: no pickle/dill/joblib, np.load(allow_pickle=True) or torch.load without
    weights_only=True. (multiprocessing pickles the workers' start arguments between our own processes
    at spawn; nothing from the network or a user file is unpickled.)"""
    offenders = []
    for folder in ("stream", "engine", "build_engine"):
        for path in (REPO / folder).rglob("*.py"):
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if NO_PICKLE_ALLOWED.search(code):
                    offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    # msgpack on the wire: unpacking never builds objects (no ext hooks), and a pickle blob is just bytes
    import pickle  # noqa: S403 - building the hostile payload only
    blob = pickle.dumps(SimpleNamespace(x=1))
    with pytest.raises(P.ProtocolError):
        P.decode([blob])


@pytest.mark.slow
def test_menet_run_with_curve_end_to_end(stream_setup, keys, tmp_path: Path) -> None:
    """`menet run` with CURVE on a tcp event endpoint (and tcp internal endpoints): the allowed client gets
    events, the unknown key gets nothing."""
    from test_stream_e2e import Run

    cfg = tmp_path / "curve.yaml"
    cfg.write_text(f"extends: {stream_setup['cfg_path']}\nstream:\n"
                   f"  security:\n    curve_server_secret_file: {keys['server']}\n    curve_clients_dir: {keys['allowed']}\n")
    video = make_video(tmp_path / "v.mp4", 3, 8.0)
    setup = {**stream_setup, "cfg_path": cfg}
    run = Run(setup, tmp_path, [f"cam={video}"],
              ["--snippet-endpoint", f"tcp://127.0.0.1:{free_port()}",
               "--window-endpoint", f"tcp://127.0.0.1:{free_port()}"])
    run.sub.close()
    run.sub = Subscriber(run.endpoint, curve=_client(keys, keys["alice"]))
    mallory = Subscriber(run.endpoint, curve=_client(keys, keys["mallory"]))
    try:
        run.collect({"cam"}, timeout=120)
        assert run.wait() == 0, run.output()
        assert run.events("cam")
        assert mallory.recv(0.5) is None
    finally:
        run.close()
        mallory.close()
