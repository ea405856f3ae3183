"""A fleet on two hosts: network namespaces joined by a veth pair, tcp with CURVE between them.

The "camera host" namespace runs the grabbers (and the subscribers: a remote consumer); the
"GPU host" namespace runs the engine and its detector (``menet engine``, ``menet detector``,
``menet grabber``: stream/roles.py, docs/deployment.md). Each run picks its own namespace names
and a random private /30, and a fixture removes the processes and namespaces whatever happens.

- a file's final events, sent from the camera host, equal offline inference;
- the link goes down for 10 s during a live stream: the stream recovers, the outage reaches the
  subscriber as a ``gap``, the grabber's and engine's memory stays bounded;
- a key the detector does not list receives nothing, a grabber key the engine does not list
  gets no snippet in.

Needs root and ``ip netns`` (iproute2): skipped, saying so, without them; CI runs as root. The
test process stays in the root namespace: subscribers and /metrics reads run inside a namespace
through the helpers in tests/netns/.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream import protocol as P
from stream.security import generate_keypair
from stream_support import REPO, assert_same_detections, make_video, offline_detections, top_events

HELPERS = Path(__file__).resolve().parent / "netns"
PY = sys.executable
# fixed ports: every run has namespaces of its own, so nothing else listens there
SNIPPETS, WINDOWS, EVENTS = 5555, 5556, 5560
ENGINE_METRICS, DETECTOR_METRICS, GRABBER_METRICS, ROGUE_METRICS = 9100, 9101, 9100, 9200
OUTAGE_S = 10.0
FPS = 25  # the live cameras'
RSS_GROWTH_BOUND = 16 * 2**20  # bytes: far above what a 10 s outage legitimately holds (~1 MB of snippets)


def netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns); CI runs this as root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"menet-probe-{uuid.uuid4().hex[:8]}"
    out = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if out.returncode != 0:
        return f"`ip netns add` does not work here: {out.stderr.strip() or out.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert out.returncode == 0, f"`ip {' '.join(args)}` failed: {out.stderr.strip()}"


class NsProcess:
    """One command inside a namespace (``ip netns exec`` execs it: the pid is the command's),
    in a session of its own so that whatever it spawns can be ended with it."""

    def __init__(self, ns: str, name: str, argv: list[str], log_path: Path) -> None:
        self.ns, self.name, self.log_path = ns, name, log_path
        self.log = open(log_path, "w+")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 25) -> str:
        return f"--- {self.name} ({self.ns}), last lines of its log:\n" + "\n".join(
            self.output().splitlines()[-lines:])

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def finish(self, deadline: float) -> None:
        """Wait for the exit until ``deadline``, then kill the whole process group."""
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group: children a killed parent would orphan
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log.close()


class TwoHosts:
    """The camera host and the GPU host: two namespaces, a veth pair, a random private /30.

    A context manager: on exit every process started here is stopped (SIGTERM, then SIGKILL of its
    group), anything still in the namespaces is killed by pid, and the namespaces are deleted
    (which removes the veth pair)."""

    def __init__(self, tmp: Path) -> None:
        reason = netns_unavailable()
        if reason:
            pytest.skip(reason)
        self.tmp = tmp
        tag = uuid.uuid4().hex[:8]
        self.cam, self.gpu = f"menet-cam-{tag}", f"menet-gpu-{tag}"
        self.cam_if, self.gpu_if = f"mc{tag}", f"mg{tag}"  # 10 characters: under IFNAMSIZ
        rng = random.SystemRandom()
        net = f"10.{rng.randrange(64, 255)}.{rng.randrange(0, 256)}.{4 * rng.randrange(0, 64)}"
        base = net.rsplit(".", 1)
        self.cam_addr = f"{base[0]}.{int(base[1]) + 1}"
        self.gpu_addr = f"{base[0]}.{int(base[1]) + 2}"
        self.procs: list[NsProcess] = []
        self.created: list[str] = []

    def __enter__(self) -> TwoHosts:
        try:
            for ns in (self.cam, self.gpu):
                ip("netns", "add", ns)
                self.created.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", self.cam_if, "netns", self.cam, "type", "veth", "peer", "name", self.gpu_if,
               "netns", self.gpu)
            ip("-n", self.cam, "addr", "add", f"{self.cam_addr}/30", "dev", self.cam_if)
            ip("-n", self.gpu, "addr", "add", f"{self.gpu_addr}/30", "dev", self.gpu_if)
            ip("-n", self.cam, "link", "set", self.cam_if, "up")
            ip("-n", self.gpu, "link", "set", self.gpu_if, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        deadline = time.monotonic() + 20
        for p in self.procs:
            p.finish(deadline)
        for ns in self.created:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # only ever processes this test started: the namespace is this run's own
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = []

    # ------------------------------------------------------------ processes

    def start(self, ns: str, name: str, argv: list[str]) -> NsProcess:
        p = NsProcess(ns, name, argv, self.tmp / f"{name}.log")
        self.procs.append(p)
        return p

    def role(self, ns: str, name: str, *args: str) -> NsProcess:
        return self.start(ns, name, [PY, "-m", "stream", *args])

    def subscriber(self, ns: str, name: str, key: Path, server_key: Path) -> SubscriberFile:
        out = self.tmp / f"{name}.jsonl"
        proc = self.start(ns, name, [PY, str(HELPERS / "subscribe.py"), "--endpoint",
                                     f"tcp://{self.gpu_addr}:{EVENTS}", "--key", str(key), "--server-key",
                                     str(server_key), "--out", str(out)])
        return SubscriberFile(proc, out)

    def metrics(self, ns: str, *ports: int) -> dict[int, str | None]:
        """Each port's /metrics text (None: no answer), read inside ``ns``."""
        urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]
        out = subprocess.run(["ip", "netns", "exec", ns, PY, str(HELPERS / "http_get.py"), *urls],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"reading /metrics in {ns} failed: {out.stderr[-2000:]}"
        got = json.loads(out.stdout)
        return {p: (got[u]["body"] if got[u]["status"] == 200 else None) for p, u in zip(ports, urls)}

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def check_alive(self, *procs: NsProcess) -> None:
        for p in procs:
            assert p.proc.poll() is None, (f"{p.name} exited with status {p.proc.returncode} while the fleet "
                                           f"should be running:\n{self.logs()}")


class SubscriberFile:
    """What tests/netns/subscribe.py wrote so far: message headers and its socket's monitor events."""

    def __init__(self, proc: NsProcess, path: Path) -> None:
        self.proc, self.path = proc, path

    def lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line being written
        return out

    def messages(self) -> list[dict[str, Any]]:
        return [h for h in self.lines() if not h["type"].startswith("_")]

    def socket_events(self) -> list[str]:
        return [h["event"] for h in self.lines() if h["type"] == "_socket"]


def counter(text: str | None, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` (e.g. ``menet_snippets_total``) whose labels include ``labels``."""
    if text is None:
        return 0.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def poll(what: str, until: Callable[[], Any], timeout: float, net: TwoHosts, *alive: NsProcess,
         every: float = 0.5) -> Any:
    """``until()`` once it is truthy; fails after ``timeout`` s (or when a process of ``alive`` exits)."""
    deadline = time.monotonic() + timeout
    while True:
        got = until()
        if got:
            return got
        net.check_alive(*alive)
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{net.logs()}"
        time.sleep(every)


@pytest.fixture(scope="module", autouse=True)
def _netns_available() -> None:
    """Skip the module, saying why, before any fixture builds a checkpoint or a video."""
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)


# ---------------------------------------------------------------- keys and configs


def make_keys(root: Path) -> dict[str, Path]:
    """server (engine + detector), camera (the camera host's grabbers), ops (the subscriber), rogue
    (nobody's); the engine's allow-list holds camera.key, the detector's ops.key."""
    keys: dict[str, Path] = {}
    for name in ("server", "camera", "ops", "rogue"):
        public, secret = generate_keypair(root / name, name)
        keys[name], keys[f"{name}_secret"] = public, secret
    for folder, client in (("engine-clients", "camera"), ("detector-clients", "ops")):
        (root / folder).mkdir()
        shutil.copy(keys[client], root / folder / keys[client].name)
        keys[folder] = root / folder
    return keys


def write_configs(root: Path, base: Path, keys: dict[str, Path]) -> dict[str, Path]:
    head = f"extends: {base}\nstream:\n  supervisor:\n    shutdown_timeout_s: 5\n  security:\n"
    texts = {
        "engine": f"    curve_server_secret_file: {keys['server_secret']}\n"
                  f"    curve_clients_dir: {keys['engine-clients']}\n",
        "detector": f"    curve_server_secret_file: {keys['server_secret']}\n"
                    f"    curve_clients_dir: {keys['detector-clients']}\n",
        "grabber": f"    curve_client_secret_file: {keys['camera_secret']}\n"
                   f"    curve_server_public_file: {keys['server']}\n",
        # the subscriber's key pair, valid on the detector, is not on the engine's allow-list
        "rogue-grabber": f"    curve_client_secret_file: {keys['ops_secret']}\n"
                         f"    curve_server_public_file: {keys['server']}\n",
    }
    paths = {}
    for name, text in texts.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_text(head + text)
    return paths


def start_gpu_host(net: TwoHosts, cfgs: dict[str, Path], ckpt: Path) -> tuple[NsProcess, NsProcess]:
    g = net.gpu_addr
    engine = net.role(net.gpu, "engine", "engine", "--config", str(cfgs["engine"]), "--checkpoint", str(ckpt),
                      "--snippets", f"tcp://{g}:{SNIPPETS}", "--windows", f"tcp://{g}:{WINDOWS}",
                      "--metrics-port", str(ENGINE_METRICS))
    detector = net.role(net.gpu, "detector", "detector", "--config", str(cfgs["detector"]), "--checkpoint",
                        str(ckpt), "--windows", f"tcp://{g}:{WINDOWS}", "--events", f"tcp://{g}:{EVENTS}",
                        "--wait-subscribers", "1", "--metrics-port", str(DETECTOR_METRICS))
    return engine, detector


def live_uri(name: str, seed: int, seconds: float) -> str:
    # 64x64 frames: the test network resizes the short side to 36 and crops 32x32
    return (f"synthetic://{name}?seed={seed}&duration={seconds:g}&fps={FPS}&width=64&height=64&classes=5"
            f"&rate=realtime")


# ---------------------------------------------------------------- a file, and keys that are not allowed


@pytest.fixture(scope="module")
def file_run(stream_setup, tmp_path_factory) -> dict[str, Any]:
    """One fleet run: a file from the camera host, the allowed subscriber and a subscriber with an
    unknown key on the camera host, and a grabber whose key the engine does not list. Everything
    is stopped and removed before the tests look at what was collected."""
    tmp = tmp_path_factory.mktemp("netns-file")
    cfg, ckpt = stream_setup["cfg"], stream_setup["ckpt"]
    with TwoHosts(tmp) as net:  # skips here, before any work, without root or ip netns
        keys = make_keys(tmp / "keys")
        cfgs = write_configs(tmp, stream_setup["cfg_path"], keys)
        video = make_video(tmp / "file.mp4", seed=61, seconds=20.0)  # 50 snippets: three windows to merge
        offline = offline_detections(cfg, ckpt, video)  # before the fleet starts: the cores are few
        engine, detector = start_gpu_host(net, cfgs, ckpt)
        allowed = net.subscriber(net.cam, "sub-ops", keys["ops_secret"], keys["server"])
        denied = net.subscriber(net.cam, "sub-rogue", keys["rogue_secret"], keys["server"])
        grabber = net.role(net.cam, "grabber", "grabber", "--config", str(cfgs["grabber"]), "--source",
                           f"file={video}", "--engine", f"tcp://{net.gpu_addr}:{SNIPPETS}")
        rogue = net.role(net.cam, "rogue-grabber", "grabber", "--config", str(cfgs["rogue-grabber"]), "--source",
                         f"rogue={live_uri('rogue', 3, 120)}", "--engine", f"tcp://{net.gpu_addr}:{SNIPPETS}",
                         "--metrics-port", str(ROGUE_METRICS))
        t0 = time.monotonic()
        poll("the file's end of stream reaching the allowed subscriber on the camera host (nothing crossed "
             "the link, or the fleet is stuck)",
             lambda: any(h["type"] == P.EOS and h.get("stream") == "file" for h in allowed.messages()),
             180, net, engine, detector, allowed.proc, denied.proc)
        # the refused parties had a fair chance: a few seconds with the fleet publishing
        first = min(h["_t_recv"] for h in allowed.messages())
        time.sleep(max(0.0, first + 5.0 - time.time()))
        engine_metrics = net.metrics(net.gpu, ENGINE_METRICS)[ENGINE_METRICS]
        grabber_code = grabber.proc.wait(60)
        result = {"offline": offline, "allowed": allowed.messages(), "allowed_socket": allowed.socket_events(),
                  "denied": denied.messages(), "denied_socket": denied.socket_events(),
                  "engine_metrics": engine_metrics, "grabber_code": grabber_code, "elapsed_s": time.monotonic() - t0}
        # read before the stop: a grabber stopped while it waits for its engine logs "engine connected"
        result.update(rogue_alive=rogue.proc.poll() is None, rogue_log=rogue.output())
    result["grabber_log"] = grabber.output()
    return result


@pytest.mark.slow
def test_a_file_from_the_camera_host_equals_offline_over_curve(stream_setup, file_run) -> None:
    cfg = stream_setup["cfg"]
    assert file_run["grabber_code"] == 0, ("the camera host's `menet grabber` did not end cleanly after sending "
                                           f"the file:\n{file_run['grabber_log']}")
    msgs = [h for h in file_run["allowed"] if h.get("stream") == "file"]
    online = top_events([h for h in msgs if h["type"] == P.EVENT and h.get("state", "final") == "final"],
                        cfg.inference.max_detections)
    print(f"file: {len(online)} final events over CURVE across the hosts, {len(file_run['offline'])} offline; "
          f"run took {file_run['elapsed_s']:.1f} s")
    assert_same_detections(online, file_run["offline"], cfg.data.sigma / 10.0)


@pytest.mark.slow
def test_keys_not_on_the_allow_lists_get_nothing(file_run) -> None:
    allowed, denied = file_run["allowed"], file_run["denied"]
    assert allowed, "the allowed subscriber received nothing: the comparison below would prove nothing"
    assert "HANDSHAKE_SUCCEEDED" in file_run["allowed_socket"], file_run["allowed_socket"]
    assert not denied, (f"a subscriber whose key is not on the detector's allow-list received {len(denied)} "
                        f"message(s), e.g. {denied[:3]}")
    assert "HANDSHAKE_FAILED_AUTH" in file_run["denied_socket"], (
        "the subscriber with an unknown key got nothing, but not because the detector refused its key: its socket "
        f"saw {sorted(set(file_run['denied_socket']))}")
    print(f"allowed subscriber: {len(allowed)} messages; unknown key: 0 messages, socket events "
          f"{sorted(set(file_run['denied_socket']))}")
    engine = file_run["engine_metrics"]
    assert engine is not None, "the engine's /metrics did not answer"
    assert counter(engine, "menet_snippets_total", stream="file") > 0, "the allowed grabber's snippets never arrived"
    rogue = counter(engine, "menet_snippets_total", stream="rogue")
    assert rogue == 0, (f"the engine took {rogue:.0f} snippet(s) from a grabber whose key (the subscriber's) "
                        "is not on the engine's allow-list")
    assert file_run["rogue_alive"], f"the refused grabber exited instead of waiting:\n{file_run['rogue_log']}"
    assert "waiting for the engine" in file_run["rogue_log"] and "engine connected" not in file_run["rogue_log"], (
        f"the refused grabber should wait for an engine it can never reach:\n{file_run['rogue_log']}")


# ---------------------------------------------------------------- the link goes down


@pytest.fixture
def two_hosts(tmp_path: Path):
    with TwoHosts(tmp_path) as net:
        yield net


def grabber_worker(grabber: NsProcess) -> psutil.Process:
    """The process `menet grabber` spawned for the source (not its resource tracker)."""
    for child in psutil.Process(grabber.pid).children(recursive=True):
        cmd = " ".join(child.cmdline())
        if "multiprocessing" in cmd and "resource_tracker" not in cmd:
            return child
    raise AssertionError(f"no grabber worker process under `menet grabber` (pid {grabber.pid})")


@pytest.mark.slow
def test_a_ten_second_link_outage_is_announced_and_the_stream_recovers(stream_setup, two_hosts: TwoHosts,
                                                                       tmp_path: Path) -> None:
    net = two_hosts
    keys = make_keys(tmp_path / "keys")
    cfgs = write_configs(tmp_path, stream_setup["cfg_path"], keys)
    engine, detector = start_gpu_host(net, cfgs, stream_setup["ckpt"])
    sub = net.subscriber(net.cam, "sub-ops", keys["ops_secret"], keys["server"])
    grabber = net.role(net.cam, "grabber", "grabber", "--config", str(cfgs["grabber"]), "--source",
                       f"cam={live_uri('cam', 0, 300)}", "--engine", f"tcp://{net.gpu_addr}:{SNIPPETS}",
                       "--metrics-port", str(GRABBER_METRICS))
    everyone = (engine, detector, sub.proc, grabber)
    samples: list[tuple[float, float, float]] = []  # (time, engine snippets, detector windows) of stream cam

    def sample() -> tuple[float, float, float]:
        m = net.metrics(net.gpu, ENGINE_METRICS, DETECTOR_METRICS)
        s = (time.time(), counter(m[ENGINE_METRICS], "menet_snippets_total", stream="cam"),
             counter(m[DETECTOR_METRICS], "menet_windows_total", stream="cam"))
        samples.append(s)
        return s

    poll("the live camera's windows reaching the detector before the outage", lambda: sample()[2] >= 2, 180,
         net, *everyone)
    worker, engine_ps = grabber_worker(grabber), psutil.Process(engine.pid)
    rss_before = {"grabber": worker.memory_info().rss, "engine": engine_ps.memory_info().rss}

    t_down = time.time()
    ip("-n", net.cam, "link", "set", net.cam_if, "down")
    try:
        while time.time() < t_down + OUTAGE_S:
            sample()
            net.check_alive(*everyone)
            time.sleep(max(0.0, min(0.5, t_down + OUTAGE_S - time.time())))
    finally:
        ip("-n", net.cam, "link", "set", net.cam_if, "up")
    t_up = time.time()
    settled = [s for s in samples if t_down + 1.5 <= s[0] <= t_up]
    assert settled, f"no /metrics sample while the link was down: {samples}"
    assert settled[-1][1] - settled[0][1] <= 2, (
        f"snippets kept reaching the engine while the link was down ({settled[0][1]:.0f} -> {settled[-1][1]:.0f}): "
        "the outage did not happen")
    snippets_up, windows_up = sample()[1:]

    def outage_gaps() -> list[dict[str, Any]]:
        # a gap's t_capture: the first stale snippet's capture (engine), or the capture when it was sent (grabber)
        return [h for h in sub.messages() if h["type"] == P.GAP and h.get("stream") == "cam"
                and h["t_capture"] >= t_down - 3]

    def recovered() -> bool:
        return sample()[2] >= windows_up + 2 and bool(outage_gaps())

    poll("after the link came back: two more windows of the camera and a gap message at the subscriber "
         "(the stream did not recover, or the outage was not announced)", recovered, 90, net, *everyone)
    rss_after = {"grabber": worker.memory_info().rss, "engine": engine_ps.memory_info().rss}
    first_snippet = next((s[0] for s in samples if s[0] > t_up and s[1] > snippets_up), None)
    first_window = next((s[0] for s in samples if s[0] > t_up and s[2] > windows_up), None)
    assert first_snippet is not None and first_window is not None, (
        f"two more windows came after the outage, but the samples show no snippet or window after it: {samples}")
    gaps = outage_gaps()
    before = [h for h in sub.messages() if h["type"] == P.GAP and h.get("stream") == "cam" and h not in gaps]
    m = net.metrics(net.gpu, ENGINE_METRICS)[ENGINE_METRICS]
    g = net.metrics(net.cam, GRABBER_METRICS)[GRABBER_METRICS]
    report = {
        "outage_s": round(t_up - t_down, 2),
        "gaps": [{k: h.get(k) for k in ("reason", "first", "count")} for h in gaps],
        "gaps_before_the_outage": len(before),
        "engine_gaps_total": {r: counter(m, "menet_gaps_total", stream="cam", reason=r)
                              for r in ("dropped", "stale", "reconnect", "missing")},
        "engine_stale_snippets": counter(m, "menet_snippets_stale_total", stream="cam"),
        "grabber_dropped_snippets": counter(g, "menet_snippets_dropped_total", stream="cam"),
        "announced_gap_s": round(sum(h["count"] for h in gaps) * stream_setup["cfg"].data.sigma / FPS, 2),
        "first_snippet_after_up_s": round(first_snippet - t_up, 2),
        "first_window_after_up_s": round(first_window - t_up, 2),
        "rss_mib_before": {k: round(v / 2**20, 1) for k, v in rss_before.items()},
        "rss_mib_after": {k: round(v / 2**20, 1) for k, v in rss_after.items()},
    }
    print("outage:", json.dumps(report))
    (tmp_path / "outage.json").write_text(json.dumps(report, indent=1))
    # the subscriber is told how long the hole is: the gaps' snippets cover the outage, and not much more
    announced = sum(h["count"] for h in gaps) * stream_setup["cfg"].data.sigma / FPS
    assert OUTAGE_S - 1 <= announced <= first_snippet - t_down + 3, (
        f"the gap messages announce {announced:.1f} s of missing video for a {OUTAGE_S:.0f} s outage that ended "
        f"{first_snippet - t_up:.1f} s before the snippets came back: {report['gaps']}")
    assert first_snippet - t_up < 30, f"snippets reached the engine only {first_snippet - t_up:.1f} s after the link"
    for role in ("grabber", "engine"):
        growth = rss_after[role] - rss_before[role]
        assert growth < RSS_GROWTH_BOUND, (
            f"the {role}'s memory grew by {growth / 2**20:.1f} MiB across a {OUTAGE_S:.0f} s outage "
            f"(bound {RSS_GROWTH_BOUND / 2**20:.0f} MiB): it buffers what it cannot send")
