"""A restarted detector waits, for a bounded time, for its subscribers to reconnect before it publishes.

* :class:`stream.detector_worker.PublishGate` (pure): no hold at a first start, a hold of
  ``stream.detector.resubscribe_s`` after a restart, ended early once ``wait_subscribers`` are back;
* the supervisor's ``control`` message says which core workers it has restarted (``restarted``,
  optional: older senders omit it);
* the setting is validated;
* slow, real processes: `menet run` on a live source, the detector SIGKILLed while a raw SUB receives;
  the SUB comes back 1 s after the restarted detector has bound (later than the supervisor's own SUB)
  and still gets its first message (``seq`` 0: a new process numbers its messages from 0) and every
  one after it. With ``resubscribe_s: 0`` (set ``RESUBSCRIBE_S`` below) it fails.
"""
from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.config import ConfigError
from stream import protocol as P
from stream.detector_worker import PublishGate
from stream.settings import load_config
from stream.worker import SupervisorState

# ---------------------------------------------------------------- the gate (pure)


def test_first_start_opens_as_soon_as_the_internal_subscription_is_in() -> None:
    gate = PublishGate(1, 2.0, restarted=False, internal=1, since=100.0)
    assert not gate.open(0, 100.0) and not gate.open(0, 500.0)  # the supervisor's own SUB is awaited, unbounded
    assert gate.open(1, 100.1)
    assert gate.waited() == pytest.approx(0.1)


def test_restart_holds_until_the_grace_ends() -> None:
    gate = PublishGate(1, 2.0, restarted=True, internal=1, since=100.0)
    assert not gate.open(0, 105.0)  # the internal subscription is still awaited, grace or not
    assert not gate.open(1, 100.1)
    assert not gate.open(3, 101.99)  # subscribers coming back do not end the hold without wait_subscribers
    assert gate.open(1, 102.0)
    assert gate.waited() == pytest.approx(2.0)
    assert gate.open(0, 102.1)  # once open it stays open: unsubscriptions never hold the pipeline


def test_restart_opens_early_once_wait_subscribers_are_back() -> None:
    gate = PublishGate(1 + 2, 2.0, restarted=True, internal=1, since=100.0)  # wait_subscribers 2
    assert not gate.open(2, 100.5)
    assert gate.open(3, 100.6)
    assert gate.waited() == pytest.approx(0.6)
    # wait_subscribers is awaited at every start, as before: the grace does not cut that wait short
    late = PublishGate(3, 2.0, restarted=True, internal=1, since=100.0)
    assert not late.open(2, 200.0)
    assert late.open(3, 200.0)


def test_grace_zero_is_the_old_behaviour() -> None:
    for want, internal in ((1, 1), (3, 1), (0, 0)):
        for subs in range(4):
            old = subs >= want
            assert PublishGate(want, 0.0, True, internal, since=5.0).open(subs, 5.0) == old
            assert PublishGate(want, 2.0, False, internal, since=5.0).open(subs, 5.0) == old  # first start


# ---------------------------------------------------------------- the supervisor's state


def test_restarted_travels_in_the_control_message_and_is_optional() -> None:
    state = SupervisorState(2, frozenset(), frozenset(), frozenset(), frozenset({"detector", "engine"}))
    h = state.to_header()
    assert h["restarted"] == ["detector", "engine"]
    msg = P.decode(P.encode(h))
    assert SupervisorState.from_header(msg.header) == dataclasses.replace(state, received=True)
    older = {k: v for k, v in h.items() if k != "restarted"}  # a sender from before the field
    assert SupervisorState.from_header(P.decode(P.encode(older)).header).restarted == frozenset()
    with pytest.raises(P.ProtocolError, match="restarted"):
        P.decode(P.encode({**h, "restarted": "detector"}))


def test_resubscribe_s_setting(tmp_path: Path) -> None:
    assert load_config("stream").stream.detector.resubscribe_s == 2.0
    path = tmp_path / "bad.yaml"
    path.write_text("extends: stream.yaml\nstream:\n  detector:\n    resubscribe_s: -1\n")
    with pytest.raises(ConfigError, match=r"stream.detector.resubscribe_s: must be >= 0 seconds .*got -1"):
        load_config(path)


# ---------------------------------------------------------------- real processes (slow)

# None: the default (2 s). Set 0.0 to see the test fail: the restarted detector then publishes as soon as
# the supervisor's own subscription is back, before the late subscriber has reconnected.
RESUBSCRIBE_S: float | None = None
# the subscriber reconnects this long after the restarted detector has bound its socket: later than the
# supervisor's own SUB (it retries every 100-200 ms), well within the default hold of 2 s
LATE_S = 1.0

LIVE_CONFIG = """extends: {base}
stream:
  detector:
    merge: lag
    max_lag_s: 2.0
{grace}  supervisor:
    restart_min_s: 0.5
    shutdown_timeout_s: 15.0
"""

# 25 fps, 4 frames per snippet and --hop 4: a window every 0.64 s, and events after most of them; the
# windows that queue while the detector is dead make the restarted one publish at once
LIVE_SOURCE = "syn=synthetic://syn?seed=3&duration=600&fps=25&width=48&height=48&rate=realtime"


class _LateSubscriber:
    """A raw SUB (no dedup, no filtering) keeping every message in arrival order.

    ZeroMQ retries a lost connection after ``RECONNECT_IVL`` to twice that (random), which makes the moment
    a subscriber comes back random; here it never reconnects on its own (60 s), the test reconnects it at
    a set time instead, so the test fails every time a restarted detector publishes before then."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self.endpoint = endpoint
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 60_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.got: list[dict[str, Any]] = []

    def connect(self) -> None:
        self.sock.connect(self.endpoint)

    def reconnect(self) -> None:
        """What ZeroMQ does when the retry timer fires: a new connection, the subscriptions sent again."""
        import zmq

        try:
            self.sock.disconnect(self.endpoint)
        except zmq.ZMQError:
            pass
        self.sock.connect(self.endpoint)

    def pump(self, seconds: float) -> None:
        """Read for ``seconds`` (a SUB sends its subscriptions on a new connection only while its thread
        handles the socket: it must be used all along)."""
        import zmq

        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.sock.poll(int(min(left, 0.1) * 1000) + 1):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.got.append(P.decode(frames, with_topic=True).header)

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _pids(log: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"started {name} \(pid (\d+)\)", log)]


def _kill_if_ours(pid: int, group: int) -> None:
    """SIGKILL ``pid`` if it is still in the process group ``menet run`` was started in (not a reused pid)."""
    try:
        if os.getpgid(pid) == group:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_restarted_detector_waits_for_a_late_subscriber(stream_setup, tmp_path: Path) -> None:
    """SIGKILL the detector of a live run while a subscriber receives; the subscriber comes back 1 s after
    the restarted detector has bound its socket and must still get everything the new process published:
    its messages are numbered from 0 (``seq``: one ``protocol.Sequencer`` per detector process), so the
    first one received on the new connection has ``seq`` 0 and the rest follow without a hole."""
    from stream_support import free_port

    grace = "" if RESUBSCRIBE_S is None else f"    resubscribe_s: {RESUBSCRIBE_S}\n"
    cfg_path = tmp_path / "live.yaml"
    cfg_path.write_text(LIVE_CONFIG.format(base=stream_setup["cfg_path"], grace=grace))
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "stream", "run", "--config", str(cfg_path), "--checkpoint", str(stream_setup["ckpt"]),
           "--event-endpoint", endpoint, "--snippet-endpoint", f"ipc://{tmp_path}/snippets",
           "--window-endpoint", f"ipc://{tmp_path}/windows", "--hop", "4", "--source", LIVE_SOURCE]
    log_file = open(tmp_path / "run.log", "w+")
    sub = _LateSubscriber(endpoint)
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: its workers are found by it

    def output() -> str:
        log_file.flush()
        log_file.seek(0)
        return log_file.read()

    def pump_until(done, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert proc.poll() is None, f"menet run exited ({proc.returncode}); log:\n{output()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}; log:\n{output()}"
            sub.pump(0.1)

    def bound() -> int:  # detector processes that have bound the event endpoint
        return output().count("detector: windows from")

    try:
        pump_until(lambda: bound() == 1, 90, "the detector")
        sub.connect()
        pump_until(lambda: len(sub.got) >= 5, 60, "5 messages before the kill")  # a subscriber the detector had
        os.kill(_pids(output(), "detector")[0], signal.SIGKILL)
        pump_until(lambda: bound() == 2, 60, "the restarted detector")
        sub.pump(LATE_S)  # everything of the dead connection is read by now
        n_old = len(sub.got)
        sub.reconnect()
        pump_until(lambda: "detector: restarted; publishing" in output() and len(sub.got) >= n_old + 5, 30,
                   "the restarted detector's messages")
        sub.pump(1.0)
        out = output()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # a clean stop: the supervisor stops its workers
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in _pids(output(), r"\S+"):  # a worker the supervisor left behind
            _kill_if_ours(pid, proc.pid)
        sub.close()
        log_file.close()
    assert "detector exited with status -9; restarting in" in out, out
    assert len(_pids(out, "detector")) == 2, out
    old = [h["seq"] for h in sub.got[:n_old]]
    assert old == list(range(old[0], old[0] + len(old))), "one process numbers its messages without a hole"
    new = [h["seq"] for h in sub.got[n_old:]]  # only the new process publishes on the new connection
    held = re.search(r"restarted; publishing with \d+ subscription\(s\) after holding windows ([\d.]+) s", out)
    assert new[0] == 0, (f"the late subscriber missed the restarted detector's first {new[0]} message(s) (it "
                         f"reconnected {LATE_S} s after the bind; the detector held windows {held and held[1]} s)")
    assert new == list(range(len(new))), new
