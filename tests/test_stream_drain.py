"""The stop's drain rule (stream/drain.py): a stage that works is waited for, a stuck one is not.

The pipeline-level check is in tests/test_hardening_faults.py: its 300-s file replayed after a
SIGKILL leaves the detector a backlog longer than the stop's idle limit, and every event must
still arrive."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.drain import DrainWatch, process_cpu_seconds
from stream.settings import load_config

LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="CPU time is read from Linux /proc, absent here")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_idle_stage_expires_after_the_idle_limit() -> None:
    clock = FakeClock()
    watch = DrainWatch(10.0, 600.0, clock=clock, cpu_seconds=lambda pid: 5.0)  # CPU time never moves
    for _ in range(9):
        clock.now += 1.0
        assert not watch.expired([1234])
    clock.now += 1.5
    assert watch.expired([1234])
    assert "no progress for 10 s" in watch.why() and "shutdown_timeout_s" in watch.why()


def test_busy_stage_is_waited_for_until_the_hard_limit() -> None:
    clock = FakeClock()
    cpu = {"t": 0.0}

    def cpu_seconds(pid: int) -> float:
        return cpu["t"]

    watch = DrainWatch(10.0, 60.0, clock=clock, cpu_seconds=cpu_seconds)
    for _ in range(59):  # 59 s, each second 0.5 s of CPU: far past the idle limit, never idle
        clock.now += 1.0
        cpu["t"] += 0.5
        assert not watch.expired([7])
    clock.now += 1.5
    cpu["t"] += 0.5
    assert watch.expired([7])
    assert "still working after 60 s" in watch.why() and "shutdown_max_s" in watch.why()


def test_a_trickle_of_cpu_below_the_busy_share_is_idle() -> None:
    clock = FakeClock()
    cpu = {"t": 0.0}
    watch = DrainWatch(5.0, 600.0, clock=clock, cpu_seconds=lambda pid: cpu["t"])
    expired_at = None
    for step in range(20):
        clock.now += 1.0
        cpu["t"] += 0.01  # 1 % of a core: a worker polling its sockets
        if watch.expired([7]):
            expired_at = step + 1
            break
    assert expired_at == 6


def test_messages_count_as_progress() -> None:
    clock = FakeClock()
    watch = DrainWatch(5.0, 600.0, clock=clock, cpu_seconds=lambda pid: None)  # no /proc
    watch.observe(0)
    for n in range(1, 30):  # a message every 4 s, no CPU figures at all
        clock.now += 4.0
        watch.observe(n)
        assert not watch.expired([7])
    clock.now += 5.5
    watch.observe(29)  # nothing new
    assert watch.expired([7])


@LINUX_PROC
def test_cpu_seconds_of_a_real_process() -> None:
    before = process_cpu_seconds(os.getpid())
    assert before is not None
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    after = process_cpu_seconds(os.getpid())
    assert after is not None and after - before >= 0.2
    assert process_cpu_seconds(2 ** 22 + 1) is None  # beyond pid_max's default: no such process


@LINUX_PROC
def test_real_process_is_waited_for_while_it_computes_then_given_up_on() -> None:
    # a child that computes for 3 s (three times the idle limit), says so, then blocks
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import time, sys\nt0 = time.process_time()\nwhile time.process_time() - t0 < 3.0: pass\n"
         "print('idle', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        os.set_blocking(child.stdout.fileno(), False)
        watch = DrainWatch(1.0, 120.0)
        went_idle = None
        while not watch.expired([child.pid]):
            if went_idle is None and (child.stdout.readline() or "").strip() == "idle":
                went_idle = time.monotonic()
            assert time.monotonic() - watch.started < 60, "the watch never gave up on a sleeping process"
            time.sleep(0.05)
        gave_up = time.monotonic()
        assert went_idle is not None, "given up on while the child was still computing"
        assert gave_up - went_idle < 5.0  # the idle limit (1 s) plus a sample or two
    finally:
        child.kill()
        child.wait()


def test_max_below_the_idle_limit_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("extends: stream\nstream:\n  supervisor:\n    shutdown_timeout_s: 30\n    shutdown_max_s: 10\n")
    with pytest.raises(ValueError, match=r"stream.supervisor.shutdown_max_s: must be >= shutdown_timeout_s \(30\)"):
        load_config(cfg)
