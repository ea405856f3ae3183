"""How long a stop waits for a stage that is still working.

A stop (SIGINT/SIGTERM, or every file source ended) lets each stage finish what it holds:
grabbers their last snippets, the engine its queued windows, the detector its backlog and
its last events. A fixed budget kills a detector that is still working through a long
backlog (a file replayed after a worker restart, a busy host) with its last events
unpublished; no budget at all lets one stuck stage hold the stop up for ever. So a stop
gives up on a stage only after ``stream.supervisor.shutdown_timeout_s`` without progress, or
after ``stream.supervisor.shutdown_max_s`` in all.

Progress is what the waiting side can see without shared state: a message from the stage
(:meth:`DrainWatch.progress`), or CPU time used by its process (a stage draining a backlog
computes; one blocked on a socket, a lock or a dead peer does not). CPU time is read from
Linux's ``/proc``; elsewhere only messages count, and the stop is the plain idle timeout.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

try:
    _TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # not a POSIX system: no /proc either
    _TICKS = 100.0

# A process that used at least this share of one core between two samples counts as working.
# An idle worker polls its sockets every ~100 ms and stays far below it (well under 1 %).
BUSY_SHARE = 0.05
# CPU time is compared over at least this much wall time (/proc counts in 10-ms ticks).
SAMPLE_S = 0.5


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads), or None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        # the command name (field 2) is in parentheses and may hold spaces: split after its last ')'
        fields = stat[stat.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15
    except (ValueError, IndexError):
        return None


class DrainWatch:
    """Decides when waiting for stages to finish should end.

    ``expired(pids)`` is true once ``idle_s`` have passed without progress, or ``max_s`` since
    the watch started. Progress is a call to :meth:`progress` or, at each ``expired`` call,
    any of ``pids`` having used at least ``busy_share`` of a core since its previous sample.
    """

    def __init__(self, idle_s: float, max_s: float, *, busy_share: float = BUSY_SHARE,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_seconds: Callable[[int], float | None] = process_cpu_seconds) -> None:
        self.idle_s = idle_s
        self.max_s = max(max_s, idle_s)
        self.busy_share = busy_share
        self._clock = clock
        self._cpu_seconds = cpu_seconds
        self.started = self.last_progress = clock()
        self._samples: dict[int, tuple[float, float]] = {}  # pid -> (wall, cpu) of its last sample
        self._count: int | None = None

    def progress(self) -> None:
        """The stage showed progress some other way (it took or published a message)."""
        self.last_progress = self._clock()

    def observe(self, count: int) -> None:
        """A running count of the stage's messages: progress whenever it moved since the last call."""
        if self._count is not None and count != self._count:
            self.progress()
        self._count = count

    def _sample(self, pids: Iterable[int | None], now: float) -> None:
        for pid in pids:
            if pid is None:
                continue
            cpu = self._cpu_seconds(pid)
            if cpu is None:
                self._samples.pop(pid, None)
                continue
            last = self._samples.get(pid)
            if last is None:
                self._samples[pid] = (now, cpu)
                continue
            wall = now - last[0]
            if wall < SAMPLE_S:
                continue  # too short to tell work from tick rounding: compare over a longer span
            if cpu - last[1] >= self.busy_share * wall:
                self.last_progress = now
            self._samples[pid] = (now, cpu)

    def expired(self, pids: Iterable[int | None] = ()) -> bool:
        now = self._clock()
        self._sample(pids, now)
        return now - self.last_progress > self.idle_s or now - self.started > self.max_s

    def why(self) -> str:
        """Why the wait ended (for the log line of a stage that is killed)."""
        now = self._clock()
        if now - self.started > self.max_s:
            return f"still working after {self.max_s:g} s (stream.supervisor.shutdown_max_s)"
        return f"no progress for {now - self.last_progress:.0f} s (stream.supervisor.shutdown_timeout_s)"


__all__ = ["BUSY_SHARE", "DrainWatch", "process_cpu_seconds"]
