"""Fault injection over the real processes (`menet run` + subscribers), slow.

* engine / detector worker SIGKILLed mid-stream on a file source: restarted by the supervisor, the
  file replayed from snippet 0 (epoch), no event lost or duplicated after subscriber dedup (stable
  event ids) vs the offline reference;
* the same once events have been published (lag merge: events final mid-file): a restarted detector
  republishes them with the same ids (seen twice by a raw subscriber), and after dedup the events are
  exactly those of an undisturbed run with the same settings;
* a subscriber that stops reading: the pipeline finishes, the detector's memory stays bounded;
* RTSP server SIGSTOPped (hung), killed and restarted on the same port while another stream runs:
  recovery time measured;
* a source removed and re-added at runtime (`menet sources`, control socket) while two others run.

Each test records its row for docs/reliability.md (tests/hardening_results.py).
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import zmq

from stream import protocol as P
from stream.subscriber import Subscriber
from hardening_results import record
from stream_support import assert_same_detections, make_video, offline_detections, top_events
from test_stream_e2e import Run

pytestmark = pytest.mark.slow


def _pid(run: Run, name: str, nth: int = 1) -> int:
    pids = re.findall(rf"started {name} \(pid (\d+)\)", run.output())
    assert len(pids) >= nth, run.output()
    return int(pids[nth - 1])


def rss_mb(pid: int) -> float | None:
    """Resident memory of a live process; None once it has exited (gone, or a zombie without VmRSS)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def _compare(run: Run, cfg, offline, sid="cam"):
    online_all = run.events(sid)
    online = top_events(online_all, cfg.inference.max_detections)
    assert_same_detections(online, offline, cfg.data.sigma / 10.0)
    ids = [e["event_id"] for e in online_all]
    assert len(ids) == len(set(ids))
    return len(online_all)


def _log_time(line: str) -> float:
    import datetime as dt
    stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line).group(1)
    return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


READY = {"engine": "engine: snippets on", "detector": "detector: windows from"}

# The stop's idle limit in these runs: half the 30-s default. Their detector has random weights: flat
# boundary curves make nearly every snippet a candidate, so each window decodes at the pair cap's
# worst case. With a fixed 30-s stop budget a replayed 300-s file once got its detector killed at
# shutdown with the last events unpublished (a quiet CI-sized machine, session 11). The stop now waits
# while the detector works (stream/drain.py; the busy-process case itself is tests/test_stream_drain.py):
# with an idle limit of 15 s every event must still arrive. The record notes how long the run went on
# after the file's last snippet (2-3 s on a quiet machine).
DRAIN = """extends: {base}
stream:
  supervisor:
    shutdown_timeout_s: 15.0
"""


@pytest.fixture(scope="module")
def drain_setup(stream_setup, tmp_path_factory) -> dict:
    """``stream_setup`` with the short stop idle limit of :data:`DRAIN` (same checkpoint)."""
    cfg_path = tmp_path_factory.mktemp("drain") / "drain.yaml"
    cfg_path.write_text(DRAIN.format(base=stream_setup["cfg_path"]))
    return {**stream_setup, "cfg_path": cfg_path}


@pytest.mark.parametrize("worker", ["engine", "detector"])
def test_worker_sigkill_mid_file_loses_and_duplicates_nothing(drain_setup, tmp_path: Path, worker: str) -> None:
    cfg = drain_setup["cfg"]
    video = make_video(tmp_path / "long.mp4", seed=31, seconds=300.0)
    offline = offline_detections(cfg, drain_setup["ckpt"], video)
    run = Run(drain_setup, tmp_path, [f"cam={video}"])
    try:
        # the file streams as fast as the engine goes (~750 snippets): kill the worker while it streams
        run.collect(set(), timeout=90, until=lambda ms: any(h.get("state") == "live" for h in ms))
        time.sleep(1.5)
        t_kill = time.time()
        os.kill(_pid(run, worker), signal.SIGKILL)
        run.collect({"cam"}, timeout=400)  # the replay's drain can take minutes on 2 busy cores
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    out = run.output()
    assert f"{worker} exited with status -9; restarting in" in out and "replaying" in out, out
    ready = [_log_time(ln) for ln in out.splitlines() if READY[worker] in ln]
    assert len(ready) == 2, out
    n_events = _compare(run, cfg, offline)  # asserts the full offline set arrived: nothing lost
    stamped = [ln for ln in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", ln)]
    sent = [_log_time(ln) for ln in stamped if "grabber:cam finished" in ln]
    drain = f"{_log_time(stamped[-1]) - sent[-1]:.0f} s" if sent else "?"
    record("fault", f"{worker} worker SIGKILL mid-stream", source="file (300 s, 750 snippets)", survived=True,
           recovery_s=round(ready[1] - t_kill, 2), events_lost=0, duplicates=run.sub.duplicates,
           notes=f"file replayed from snippet 0 (epoch 1); {n_events} events = offline after dedup by event_id "
                 f"({run.sub.duplicates} repeats dropped by the subscriber); recovery = kill to the restarted "
                 f"worker ready (1 s backoff + model load); the run ended {drain} after the file's last snippet "
                 "was sent (the detector's backlog; stop idle limit 15 s)")


# ---------------------------------------------------------------- SIGKILL after events went out (lag merge)


LAG_FILE = """extends: {base}
stream:
  supervisor:
    shutdown_timeout_s: 15.0  # as DRAIN: the stop waits while the detector works
  detector:
    merge: lag
    max_lag_s: 2.0
"""


def _final(h: dict) -> bool:
    """A final event (the lifecycle's provisional, open and retracted messages come before it)."""
    return h["type"] == P.EVENT and h.get("state", "final") == "final"


def _lag_capture(setup: dict, tmp: Path, video: Path, kill: str | None = None) -> dict:
    """`menet run` on one file with ``merge: lag`` (events final mid-stream, also for files), received by a
    deduplicating subscriber (``Run.sub``, what `menet subscribe` does) and a raw one (``dedup=False``: what
    is on the wire). With ``kill``, that worker is SIGKILLed as soon as both have received an event."""
    tmp.mkdir(parents=True, exist_ok=True)
    # both subscribers must be in before the detector publishes, at the start and after its restart
    run = Run(setup, tmp, [f"cam={video}"], ["--wait-subscribers", "2"])
    raw = Subscriber(run.endpoint, dedup=False)
    raw_msgs: list[dict] = []
    t_kill = None

    def pump(until, timeout: float) -> None:
        # read both subscribers all along: a SUB resubscribes to a restarted publisher only while it is used
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, f"timed out; log:\n{run.output()}"
            msg = run.sub.recv(0.1)
            if msg is not None:
                run.messages.append(msg.header)
            while (msg := raw.recv(0)) is not None:
                raw_msgs.append(msg.header)

    def has_eos(ms: list[dict]) -> bool:
        return any(h["type"] == P.EOS for h in ms)
    try:
        # both have received final events (the detector's I/O thread writes to one connection, then the
        # other; provisional ones come first, and a kill before any final would test nothing of the dedup)
        pump(lambda: any(_final(h) for h in run.messages) and any(_final(h) for h in raw_msgs), 120)
        n_before = len([h for h in raw_msgs if _final(h)])
        if kill is not None:
            t_kill = time.time()
            os.kill(_pid(run, kill), signal.SIGKILL)
        pump(lambda: has_eos(run.messages) and has_eos(raw_msgs), 180)
        assert run.wait() == 0, run.output()
    finally:
        raw.close()
        run.close()
    return {"run": run, "dedup": run.events("cam"), "raw": [h for h in raw_msgs if _final(h)],
            "t_kill": t_kill, "n_before": n_before}


@pytest.fixture(scope="module")
def lag_reference(stream_setup, tmp_path_factory) -> dict:
    """The undisturbed run with the same settings (lag merge differs from the offline result)."""
    root = tmp_path_factory.mktemp("lagref")
    cfg_path = root / "lag.yaml"
    cfg_path.write_text(LAG_FILE.format(base=stream_setup["cfg_path"]))
    setup = {**stream_setup, "cfg_path": cfg_path}
    video = make_video(root / "lag.mp4", seed=43, seconds=120.0)
    ref = _lag_capture(setup, root / "ref", video)
    ids = [e["event_id"] for e in ref["raw"]]
    assert ids and len(ids) == len(set(ids)), "an undisturbed run publishes each event once"
    assert sorted(ids) == sorted(e["event_id"] for e in ref["dedup"])
    return {"setup": setup, "video": video, "events": ref["dedup"]}


def _same_events(got: list[dict], ref: list[dict], tol: float = 1e-6) -> None:
    """Same event ids, each once, with the same label, segment and score (within ``tol``)."""
    ids = [e["event_id"] for e in got]
    assert len(ids) == len(set(ids)), "an event id delivered twice after dedup"
    by_id = {e["event_id"]: e for e in got}
    ref_by_id = {e["event_id"]: e for e in ref}
    lost, extra = sorted(set(ref_by_id) - set(by_id)), sorted(set(by_id) - set(ref_by_id))
    assert not lost and not extra, f"{len(lost)} events lost, {len(extra)} not in the reference"
    for eid, r in ref_by_id.items():
        e = by_id[eid]
        assert (e["class_id"], e["label"]) == (r["class_id"], r["label"]), (e, r)
        for k in ("start", "end", "score"):
            assert abs(e[k] - r[k]) <= tol, (k, e, r)


@pytest.mark.parametrize("worker", ["detector", "engine"])
def test_worker_sigkill_after_events_published_dedup_restores_exactly_once(
        lag_reference, tmp_path: Path, worker: str) -> None:
    """SIGKILL a worker once events have gone out (lag merge makes them final mid-file): the file is
    replayed from snippet 0. A restarted detector rebuilds its merger from window 0 and publishes the
    events it had published again, with the same ids (the raw subscriber sees them twice); a restarted
    engine leaves the detector's state alone (it skips the windows it has, nothing is republished). After
    dedup by event id the events are exactly those of the undisturbed run: none lost, none twice."""
    t0 = time.monotonic()
    got = _lag_capture(lag_reference["setup"], tmp_path, lag_reference["video"], kill=worker)
    out, t_kill, ref = got["run"].output(), got["t_kill"], lag_reference["events"]
    assert f"{worker} exited with status -9; restarting in" in out and "replaying file stream(s) cam" in out, out
    ready = [_log_time(ln) for ln in out.splitlines() if READY[worker] in ln]
    assert len(ready) == 2, out
    before = got["raw"][:got["n_before"]]  # received by both subscribers before the kill
    assert before and all(e["t_published"] < t_kill for e in before)
    raw_ids = [e["event_id"] for e in got["raw"]]
    repeats = len(raw_ids) - len(set(raw_ids))
    if worker == "detector":
        # every event out before the kill was published again, with the same id
        after_ids = {e["event_id"] for e in got["raw"] if e["t_published"] > t_kill}
        assert {e["event_id"] for e in before} <= after_ids
        assert repeats >= len(before), "the restarted detector did not republish the events out before the kill"
    else:
        assert repeats == 0, "the detector kept its state across the engine restart: nothing is republished"
    if worker == "detector":
        # the dedup subscriber dropped the repeats it saw. Not always exactly the raw one's count: a SIGKILL
        # can land between the detector's writes of one event to the two connections, so one subscriber has
        # a first copy the other never got (seen in 1 of 3 runs on a quiet machine); the exact-once claim is
        # the comparison with the undisturbed run below
        assert got["run"].sub.duplicates >= 1
    else:
        assert got["run"].sub.duplicates == repeats == 0
    _same_events(got["dedup"], ref)
    # on the wire too: first copies == the reference, and every repeat is the same event again
    first = list({e["event_id"]: e for e in reversed(got["raw"])}.values())
    _same_events(first, ref)
    ref_by_id = {r["event_id"]: r for r in ref}
    for e in got["raw"]:
        _same_events([e], [ref_by_id[e["event_id"]]])
    lost = len({e["event_id"] for e in ref} - {e["event_id"] for e in got["dedup"]})
    delivered_twice = len(got["dedup"]) - len({e["event_id"] for e in got["dedup"]})
    seconds = time.monotonic() - t0
    why = ("the restarted detector rebuilt its merger from window 0 and republished them" if worker == "detector"
           else "the detector kept its merger and skipped the replayed windows it had")
    record("fault", f"{worker} worker SIGKILL after events were published (lag merge)",
           source="file (120 s, 300 snippets)", survived=True, recovery_s=round(ready[1] - t_kill, 2),
           events_lost=lost, duplicates=f"{repeats} raw / {delivered_twice} after dedup",
           notes=f"killed once events were received ({len(before)} by then); file replayed from "
                 f"snippet 0 (epoch 1); on the wire {len(raw_ids)} events, {repeats} of them repeats with the "
                 f"same id ({why}); after dedup by event_id {len(got['dedup'])} events == the undisturbed run "
                 f"with the same settings (ids, labels, segments, scores within 1e-6); the faulted run took "
                 f"{seconds:.0f} s")


def test_subscriber_that_stops_reading_does_not_stall_the_pipeline(drain_setup, tmp_path: Path) -> None:
    src = "syn=synthetic://syn?seed=7&duration=300&fps=10&width=48&height=48&rate=max"
    run = Run(drain_setup, tmp_path, [src], checkpoint=False)
    ctx = zmq.Context()
    stuck = ctx.socket(zmq.SUB)  # subscribes to everything and never reads
    stuck.setsockopt(zmq.RCVHWM, 10)
    stuck.setsockopt(zmq.RCVBUF, 4096)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(run.endpoint)
    samples = []
    try:
        t0 = time.monotonic()
        run.collect(set(), timeout=60, until=lambda ms: any(h["type"] == P.EVENT for h in ms))
        det = _pid(run, "detector")
        deadline = time.monotonic() + 240

        def done(ms):
            # the detector exits right after the stream's end; on a busy host this reader can still be
            # draining the messages before it, so sample only while the process lives
            rss = rss_mb(det)
            if rss is not None:
                samples.append(rss)
            return any(h["type"] == P.EOS for h in ms) or time.monotonic() > deadline
        run.collect(set(), timeout=250, until=done)
        assert any(h["type"] == P.EOS for h in run.messages), "the pipeline stalled behind a stuck subscriber"
        assert run.wait() == 0, run.output()
        elapsed = time.monotonic() - t0
    finally:
        stuck.close(0)
        ctx.term()
        run.close()
    n = len(run.events("syn"))
    assert len(samples) >= 2, "the detector exited before its memory could be sampled twice"
    growth = max(samples) - samples[0]
    assert growth < 50, f"detector RSS grew {growth:.1f} MB with a stuck subscriber"
    record("fault", "subscriber stops reading (never calls recv)", source="synthetic rate=max, 300 s",
           survived=True, recovery_s=None, events_lost=0, duplicates=0,
           notes=f"pipeline finished in {elapsed:.0f} s; {n} events to the live subscriber; detector RSS "
                 f"{samples[0]:.0f} -> {max(samples):.0f} MB (PUB drops at HWM for the stuck one)")


# ---------------------------------------------------------------- a hung stage at stop


HUNG = """extends: {base}
stream:
  supervisor:
    shutdown_timeout_s: 3.0
    shutdown_max_s: 600.0
"""


def test_hung_detector_does_not_hold_the_stop_up(stream_setup, tmp_path: Path) -> None:
    """A stop waits while a stage works (the SIGKILL tests above), but not for a stage that has stopped
    moving: a SIGSTOPped detector uses no CPU and publishes nothing, so it is killed once the idle
    limit has passed, far before shutdown_max_s."""
    cfg_path = tmp_path / "hung.yaml"
    cfg_path.write_text(HUNG.format(base=stream_setup["cfg_path"]))
    video = make_video(tmp_path / "v.mp4", seed=3, seconds=120.0)
    run = Run({**stream_setup, "cfg_path": cfg_path}, tmp_path, [f"cam={video}"])
    detector: int | None = None
    try:
        run.collect(set(), timeout=90, until=lambda ms: any(h.get("state") == "live" for h in ms))
        detector = _pid(run, "detector")
        os.kill(detector, signal.SIGSTOP)
        t_stop = time.monotonic()
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
        run.wait(timeout=120)
        took = time.monotonic() - t_stop
    finally:
        if detector is not None:
            try:
                os.kill(detector, signal.SIGKILL)  # never leave a stopped process behind
            except ProcessLookupError:
                pass
        run.close()
    out = run.output()
    assert "detector did not stop: no progress for" in out, out
    assert took < 90, f"the stop took {took:.0f} s with a hung detector (idle limit 3 s)"
    record("fault", "detector hung (SIGSTOP) when the run is stopped", source="file (120 s)", survived=True,
           recovery_s=None, events_lost=None, duplicates=0,
           notes=f"SIGTERM to menet run: the hung detector was killed after the 3-s idle limit "
                 f"(stream.supervisor.shutdown_timeout_s), the run exited {took:.0f} s after the SIGSTOP")


# ---------------------------------------------------------------- RTSP outages


def _rtsp_or_skip():
    from test_stream_rtsp import gst_rtsp_available
    why = gst_rtsp_available()
    if why:
        pytest.skip(why)


RTSP_FAST = """extends: {base}
stream:
  detector:
    merge: lag
    max_lag_s: 2.0
  sources:
    open_timeout_s: 2.0
    read_timeout_s: 1.5
    stall_timeout_s: 1.5
    reconnect_min_s: 0.2
    reconnect_max_s: 1.0
  supervisor:
    shutdown_timeout_s: 20.0
"""


def _live_after(run: Run, t: float, sid: str = "cam") -> float | None:
    for h in run.messages:
        if h["type"] == P.STATUS and h["stream"] == sid and h["state"] == "live" and h["t"] > t:
            return h["t"]
    return None


@pytest.mark.parametrize("fault", ["sigstop", "kill-restart"])
def test_rtsp_outage_recovery_while_another_stream_runs(stream_setup, tmp_path: Path, fault: str) -> None:
    """The RTSP source disappears (server hung by SIGSTOP, or killed) and comes back on the same port;
    a synthetic live stream keeps running meanwhile. Recovery = server back -> the grabber live again."""
    _rtsp_or_skip()
    from stream_support import free_port
    from test_stream_rtsp import Server

    cfg_path = tmp_path / "rtsp.yaml"
    cfg_path.write_text(RTSP_FAST.format(base=stream_setup["cfg_path"]))
    setup = {**stream_setup, "cfg_path": cfg_path}
    video = make_video(tmp_path / "cam.mp4", seed=5, seconds=120.0, fps=25.0, size=64)
    port = free_port()
    server = Server(video, port)
    server.start()
    other = "other=synthetic://other?seed=2&duration=600&fps=10&width=48&height=48&rate=realtime"
    run = Run(setup, tmp_path, [f"cam=rtsp://127.0.0.1:{port}/test", other])
    try:
        run.collect(set(), timeout=90, until=lambda ms: any(h["type"] == P.EVENT and h["stream"] == "cam" for h in ms)
                    and _live_after(run, 0, "other") is not None)
        t_out = time.time()
        if fault == "sigstop":
            server.proc.send_signal(signal.SIGSTOP)
        else:
            server.kill()
        run.collect(set(), timeout=30, until=lambda ms: any(
            h["type"] == P.STATUS and h["stream"] == "cam" and h["state"] in ("stalled", "reconnecting")
            and h["t"] > t_out for h in ms))
        time.sleep(3.0)
        other_during = [h for h in run.messages if h["stream"] == "other" and h["type"] == P.EVENT
                        and h["t_published"] > t_out]
        t_back = time.time()
        if fault == "sigstop":
            server.proc.send_signal(signal.SIGCONT)
        else:
            server.start()
        run.collect(set(), timeout=60, until=lambda ms: _live_after(run, t_back) is not None)
        recovery = _live_after(run, t_back) - t_back
        run.collect(set(), timeout=60, until=lambda ms: any(
            h["type"] == P.EVENT and h["stream"] == "cam" and h["t_published"] > t_back for h in ms))
        t_event = next(h["t_published"] for h in run.messages
                       if h["type"] == P.EVENT and h["stream"] == "cam" and h["t_published"] > t_back)
        gaps = [h for h in run.messages if h["type"] == P.GAP and h["stream"] == "cam"]
        run.proc.send_signal(signal.SIGINT)
        run.collect({"cam", "other"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.send_signal(signal.SIGCONT)
        server.kill()
    assert recovery < 10.0, f"recovery took {recovery:.1f} s"
    assert gaps and gaps[-1]["reason"] == "reconnect"
    other_after = [h for h in run.events("other") if h["t_published"] > t_out]
    assert other_after, "the other stream stopped while the RTSP source was away"
    name = "RTSP server hung (SIGSTOP), then SIGCONT" if fault == "sigstop" else \
        "RTSP server killed, restarted on the same port"
    record("fault", name, source="rtsp + synthetic live", survived=True, recovery_s=round(recovery, 2),
           events_lost=None, duplicates=0,
           notes=f"outage announced as a gap of {gaps[-1]['count']} snippets; first event after the return "
                 f"{t_event - t_back:.1f} s; the other stream kept running ({len(other_during)} events in the "
                 f"outage's first seconds, {len(other_after)} after it began; a window every 6.4 s)")


# ---------------------------------------------------------------- runtime remove / re-add


LIVE_RT = "synthetic://{sid}?seed={seed}&duration=600&fps=25&width=48&height=48&rate=realtime"

QUEUE_64 = """extends: {base}
stream:
  transport:
    queue_size: 64
  detector:
    merge: lag
    max_lag_s: 2.0
"""


def _dropped_gaps(messages, sid: str) -> int:
    return sum(h["count"] for h in messages if h["type"] == P.GAP and h["stream"] == sid and h["reason"] == "dropped")


def test_source_removed_and_readded_while_others_run(stream_setup, tmp_path: Path) -> None:
    """Three live sources; `b` is removed over the control socket mid-run (its grabber stops, its last window
    and end of stream are published, it is not restarted), bad control requests are refused, `b` is added
    again (a new instance: events flow again with new ids). `a` and `c` run on meanwhile: events keep
    coming, no snippet of theirs is dropped, no stall."""
    from stream.control import ControlClient

    cfg_path = tmp_path / "q64.yaml"
    cfg_path.write_text(QUEUE_64.format(base=stream_setup["cfg_path"]))
    control = f"ipc://{tmp_path}/control"
    sources = {sid: LIVE_RT.format(sid=sid, seed=seed) for sid, seed in (("a", 1), ("b", 2), ("c", 3))}
    run = Run({**stream_setup, "cfg_path": cfg_path}, tmp_path, [f"{k}={v}" for k, v in sources.items()],
              ["--control", control], checkpoint=False)
    client = ControlClient(control, timeout_s=60)

    def event_of(sid, after=0.0, instance=0):
        return lambda ms: any(h["type"] == P.EVENT and h["stream"] == sid and h["t_published"] > after
                              and h.get("instance", 0) == instance for h in ms)
    try:
        run.collect(set(), timeout=90, until=lambda ms: all(event_of(s)(ms) for s in sources))
        assert f"control {control}" in run.output()  # the startup line names the control endpoint
        listed = client.list()
        assert listed["ok"] and sorted(s["id"] for s in listed["sources"]) == ["a", "b", "c"]
        assert all(s["state"] == "running" for s in listed["sources"])
        # --- remove b
        mark = len(run.messages)
        t_remove = time.time()
        rep = client.remove("b")
        remove_s = time.time() - t_remove
        assert rep["ok"] and "published" in rep["message"], rep
        assert sorted(s["id"] for s in rep["sources"]) == ["a", "c"]
        run.collect({"b"}, timeout=30)
        i_eos = next(i for i in range(mark, len(run.messages))
                     if run.messages[i]["type"] == P.EOS and run.messages[i]["stream"] == "b")
        eos_b = run.messages[i_eos]
        assert eos_b["reason"] == "removed" and eos_b["n_snippets"] > 0
        # --- bad requests: refused with a reason, the supervisor lives on
        bad = {
            "malformed msgpack": client.send_raw([b"\xc1 not msgpack"]),
            "two frames": client.send_raw([b"\x80", b"\x80"]),
            "unknown op": client.request("restart", "a"),
            "duplicate id": client.add(sources["a"], "a"),
            "unknown id": client.remove("b"),
            "bad uri": client.add(str(tmp_path / "missing.mp4"), "x"),
            "bad synthetic uri": client.add("synthetic://x?nonsense=1", "x"),
            "bad id": client.add(sources["b"], "../b"),
        }
        for what, r in bad.items():
            assert not r["ok"] and r["error"], (what, r)
        assert "duplicate id" in bad["duplicate id"]["error"] and "unknown source id" in bad["unknown id"]["error"]
        assert "missing.mp4" in bad["bad uri"]["error"] and run.proc.poll() is None
        time.sleep(3.0)  # a window of the others (hop 16 snippets = 2.56 s at 25 fps, sigma 4)
        run.collect(set(), timeout=30, until=lambda ms: event_of("a", t_remove)(ms) and event_of("c", t_remove)(ms))
        assert not [h for h in run.messages[i_eos + 1:] if h["stream"] == "b"], "b messages after its removal"
        # --- add b again
        t_add = time.time()
        rep = client.add(sources["b"], "b")
        assert rep["ok"] and rep["instance"] == 1, rep
        run.collect(set(), timeout=90, until=event_of("b", t_add, instance=1))
        first_new = next(h for h in run.messages if h["type"] == P.EVENT and h["stream"] == "b"
                         and h.get("instance") == 1)
        readd_s = first_new["t_published"] - t_add
        live_s = next(h["t"] for h in run.messages if h["type"] == P.STATUS and h["stream"] == "b"
                      and h.get("instance") == 1 and h["state"] == "live") - t_add
        run.proc.send_signal(signal.SIGINT)
        run.collect({"a", "b", "c"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    out = run.output()
    assert "restarting" not in out, out  # the removed grabber was not restarted
    after = run.messages[mark:]
    stall = 0.0
    for sid in ("a", "c"):
        assert _dropped_gaps(after, sid) == 0, f"{sid} dropped snippets while b was removed / re-added"
        times = [h["t_published"] for h in after if h["type"] == P.EVENT and h["stream"] == sid]
        stall = max([stall] + [t1 - t0 for t0, t1 in zip(times, times[1:])])
    assert stall < 10.0, f"no event of a or c for {stall:.1f} s"
    old_ids = {h["event_id"] for h in run.messages if h["type"] == P.EVENT and h["stream"] == "b"
               and not h.get("instance")}
    new = [h for h in run.messages if h["type"] == P.EVENT and h["stream"] == "b" and h.get("instance") == 1]
    assert new and old_ids.isdisjoint(h["event_id"] for h in new)
    ends = [h for h in run.messages if h["type"] == P.STATUS and h["state"] == "ended"]
    dropped_total = {h["stream"]: h["counters"]["dropped_snippets"] for h in ends}
    record("fault", "source removed and re-added (menet sources) while others run", source="3 synthetic live",
           survived=True, recovery_s=round(live_s, 2), events_lost=None, duplicates=0,
           notes=f"remove answered in {remove_s:.2f} s, after b's last window, events and EOS (reason removed) were "
                 f"published; not restarted; {len(bad)} bad requests refused (malformed msgpack, unknown op, "
                 f"duplicate/unknown id, bad uri/id); recovery = add -> the new instance's grabber live; its first "
                 f"event {readd_s:.1f} s after the add (a 32-snippet window, 5.1 s, then the lag merge's "
                 f"max_lag_s, 2 s here), ids new; a and c: 0 snippets dropped from the removal on, "
                 f"longest event silence {stall:.1f} s (whole run: a dropped {dropped_total.get('a')}, "
                 f"c {dropped_total.get('c')})")
    record("input", "control socket: bad requests to a running menet run", tried=len(bad), counted=len(bad),
           crashed=False, outcome="error reply saying why (" + "; ".join(bad) + "); the pipeline ran on; "
                                  "18 more malformed requests in tests/test_stream_control.py")


def test_file_source_removed_mid_stream_and_readded(stream_setup, tmp_path: Path) -> None:
    """A file removed while it streams ends there (EOS reason removed, the snippets sent so far flushed); added
    again with the same id it is a new instance that streams the whole file: its events are the offline ones
    (new ids). A live source runs beside it."""
    from stream.control import ControlClient

    cfg = stream_setup["cfg"]
    video = make_video(tmp_path / "f.mp4", seed=31, seconds=240.0)  # 600 snippets: a few seconds of streaming
    offline = offline_detections(cfg, stream_setup["ckpt"], video)
    control = f"ipc://{tmp_path}/control"
    live = "a=" + LIVE_RT.format(sid="a", seed=1)
    run = Run(stream_setup, tmp_path, [f"f={video}", live], ["--control", control])
    client = ControlClient(control, timeout_s=60)
    try:
        # the file streams as fast as the engine goes: remove it as soon as the pipeline takes it
        run.collect(set(), timeout=90, until=lambda ms: any(h.get("state") == "live" and h["stream"] == "f"
                                                            for h in ms))
        time.sleep(0.5)
        t_remove = time.time()
        rep = client.remove("f")
        remove_s = time.time() - t_remove
        assert rep["ok"], rep
        run.collect({"f"}, timeout=30, until=lambda ms: any(h["type"] == P.EOS and h["stream"] == "f" for h in ms))
        eos = next(h for h in run.messages if h["type"] == P.EOS and h["stream"] == "f")
        n_first = len(run.events("f"))
        rep = client.add(str(video), "f")
        assert rep["ok"] and rep["instance"] == 1, rep
        run.collect(set(), timeout=120, until=lambda ms: any(
            h["type"] == P.EOS and h["stream"] == "f" and h.get("instance") == 1 for h in ms))
        listed = {s["id"]: s["state"] for s in client.list()["sources"]}
        run.proc.send_signal(signal.SIGINT)
        run.collect({"a"}, timeout=60)
        assert run.wait() == 0, run.output()
    finally:
        run.close()
    assert eos["reason"] == "removed" and 0 < eos["n_snippets"] < 600, eos
    assert listed == {"f": "ended", "a": "running"}
    # the file's last window releases its finals and retractions at once: none may be dropped on the way
    # (a 1000-message event socket lost the tail and the eos behind it, one run in a few)
    assert run.sub.lost == 0
    new = [e for e in run.events("f") if e.get("instance") == 1]
    assert_same_detections(top_events(new, cfg.inference.max_detections), offline, cfg.data.sigma / 10.0)
    assert {e["event_id"] for e in new}.isdisjoint(e["event_id"] for e in run.events("f") if not e.get("instance"))
    assert [h for h in run.events("a") if h["t_published"] > t_remove]
    record("fault", "file source removed mid-stream, re-added (menet sources)", source="file (240 s) + synthetic live",
           survived=True, recovery_s=None, events_lost=0, duplicates=0,
           notes=f"removed at snippet {eos['n_snippets']} of 600: answered in {remove_s:.2f} s with its last windows "
                 f"and "
                 f"EOS (reason removed) published ({n_first} events); re-added: a new instance streamed the whole "
                 f"file, {len(new)} events = offline (segments within a snippet, scores within 1e-3), ids new; "
                 "the live source kept producing events")
