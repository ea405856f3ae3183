"""The event lifecycle (engine/online/lifecycle.py): provisional / open -> updates -> final or retracted."""
from __future__ import annotations

import numpy as np

from engine.online.events import EventIdentity
from engine.online.lifecycle import FINAL, OPEN, PROVISIONAL, RETRACTED, EventLifecycle
from engine.postprocess.windows import Detections


def dets(*rows: tuple[float, float, float, int]) -> Detections:
    if not rows:
        return Detections.empty()
    a = np.array(rows, dtype=np.float64)
    return Detections(a[:, :2], a[:, 2], a[:, 3].astype(np.int64))


def life(**kw) -> EventLifecycle:
    return EventLifecycle(EventIdentity("cam"), **{"guard_s": 1.0, "min_score": 0.05, **kw})


def test_provisional_then_updated_then_final_under_one_id() -> None:
    ev = life()
    (u,) = ev.window(dets((10.0, 20.0, 0.6, 2)), edge_s=40.0, floor_s=0.0)
    assert (u.state, u.label, u.start, u.end) == (PROVISIONAL, 2, 10.0, 20.0)
    # the next window sees the same action a little differently: an update of the same id
    (v,) = ev.window(dets((10.5, 20.0, 0.7, 2), (10.0, 20.0, 0.6, 2)), edge_s=50.0, floor_s=5.0)
    assert (v.state, v.event_id, v.start, v.score) == (PROVISIONAL, u.event_id, 10.5, 0.7)
    assert ev.window(dets((10.5, 20.0, 0.7, 2)), edge_s=55.0, floor_s=6.0) == []  # nothing changed: silent
    (f,) = ev.final(dets((10.4, 20.1, 0.65, 2)))  # the merger's verdict, as it is
    assert (f.state, f.event_id, f.start, f.end, f.score) == (FINAL, u.event_id, 10.4, 20.1, 0.65)
    assert ev.tracked == {}


def test_open_until_its_end_is_seen() -> None:
    ev = life()
    (o,) = ev.window(dets((30.0, 39.6, 0.5, 0)), edge_s=40.0, floor_s=0.0)  # ends in the last guard_s
    assert o.state == OPEN
    (p,) = ev.window(dets((30.0, 44.0, 0.55, 0)), edge_s=60.0, floor_s=10.0)  # the end came into view
    assert (p.state, p.event_id, p.end) == (PROVISIONAL, o.event_id, 44.0)


def test_unconfirmed_event_is_retracted_once_the_merger_cannot_release_it() -> None:
    ev = life()
    (u,) = ev.window(dets((10.0, 20.0, 0.6, 1)), edge_s=40.0, floor_s=0.0)
    assert ev.final(dets((50.0, 60.0, 0.6, 1)))[0].event_id != u.event_id  # another action
    (r,) = ev.window(dets(), edge_s=80.0, floor_s=25.0)  # nothing can end before 25 s any more
    assert (r.state, r.event_id) == (RETRACTED, u.event_id) and ev.tracked == {}
    (k,) = life().window(dets((1.0, 2.0, 0.9, 0)), edge_s=40.0, floor_s=0.0)
    assert k.state == PROVISIONAL


def test_overlapping_versions_are_one_event_and_faint_ones_wait_for_final() -> None:
    ev = life()
    ups = ev.window(dets((10.0, 20.0, 0.8, 3), (11.0, 20.5, 0.5, 3), (10.0, 20.0, 0.7, 1), (50.0, 55.0, 0.01, 3)),
                    edge_s=60.0, floor_s=0.0)
    assert [(u.label, u.score) for u in ups] == [(3, 0.8), (1, 0.7)]  # one per action and class; 0.01 waits
    finals = ev.final(dets((10.0, 20.0, 0.8, 3), (11.0, 20.5, 0.4, 3), (50.0, 55.0, 0.01, 3)))
    assert finals[0].event_id == ups[0].event_id  # the best match takes the provisional id ...
    assert len({f.event_id for f in finals}) == 3  # ... and every final has its own
    (r,) = ev.flush()  # end of stream: the class-1 event never became final
    assert (r.state, r.event_id) == (RETRACTED, ups[1].event_id)


def test_same_inputs_same_ids() -> None:
    """A replayed file goes through the same windows: its events get the same ids."""
    def run() -> list[str]:
        ev = life()
        out = ev.window(dets((10.0, 20.0, 0.6, 2), (30.0, 39.8, 0.3, 0)), edge_s=40.0, floor_s=0.0)
        out += ev.final(dets((10.0, 20.0, 0.6, 2)))
        return [u.event_id for u in out]
    assert run() == run()


def test_subscriber_keeps_the_latest_message_per_event() -> None:
    """Over a real PUB socket: updates supersede, a replay's repeats are dropped, final_only gives v1's view."""
    import time

    import zmq

    from stream import protocol as P
    from stream.subscriber import Subscriber
    from stream_support import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    subs = [Subscriber(endpoint), Subscriber(endpoint, final_only=True)]
    time.sleep(0.5)  # both subscriptions reach the PUB socket

    def event(eid: str, state: str, start: float, score: float) -> list:
        h = P.make_header(P.EVENT, 0, stream="cam", event_id=eid, label="sway", class_id=0, score=score,
                          start=start, end=start + 5.0, start_wall=1e9, end_wall=1e9, window=0, t_capture=1e9,
                          t_engine_in=1e9, t_window=1e9, t_published=1e9, latency_s=0.0, state=state)
        return P.encode(h, topic="cam")

    sent = [event("a", "provisional", 10.0, 0.5), event("a", "provisional", 10.5, 0.6),
            event("a", "provisional", 10.5, 0.6),  # a repeat (replay)
            event("b", "open", 30.0, 0.4), event("a", "final", 10.4, 0.62), event("a", "provisional", 10.5, 0.6),
            event("b", "retracted", 30.0, 0.4), event("a", "final", 10.4, 0.62)]
    for frames in sent:
        pub.send_multipart(frames)
    got = [[], []]
    for sub, out in zip(subs, got):
        while (msg := sub.recv(1.0)) is not None:
            out.append((msg.header["event_id"], msg.header["state"], msg.header["start"]))
    try:
        assert got[0] == [("a", "provisional", 10.0), ("a", "provisional", 10.5), ("b", "open", 30.0),
                          ("a", "final", 10.4), ("b", "retracted", 30.0)]
        assert subs[0].duplicates == 3  # the repeat, and what came for "a" after its final
        assert {k: h["state"] for k, h in subs[0].latest.items()} == {("cam", "a"): "final", ("cam", "b"): "retracted"}
        assert got[1] == [("a", "final", 10.4)]
    finally:
        for sub in subs:
            sub.close()
        pub.close()
        ctx.term()


def test_subscribe_min_score_follows_an_event_once_shown() -> None:
    """``menet subscribe --min-score``: an event prints from its first message at the floor, then all of its
    messages (its final or retraction even when fainter); a faint event never shown stays hidden."""
    from stream.commands.subscribe import _passes

    shown: set[str] = set()
    seq = [("a", "provisional", 0.02), ("a", "provisional", 0.2), ("a", "provisional", 0.04), ("a", "final", 0.03),
           ("b", "provisional", 0.01), ("b", "retracted", 0.01), ("c", "final", 0.5)]
    printed = [(eid, state, score) for eid, state, score in seq
               if _passes({"event_id": eid, "state": state, "score": score}, 0.05, shown)]
    assert printed == [("a", "provisional", 0.2), ("a", "provisional", 0.04), ("a", "final", 0.03),
                       ("c", "final", 0.5)]
    assert shown == set()  # nothing in flight is remembered after its last message


def test_subscriber_counts_the_messages_it_lost() -> None:
    """Gaps in the detector's `seq` are counted (ZeroMQ drops silently for a subscriber that falls behind);
    seq going back is a new detector process, not a loss; a filtered subscription cannot tell."""
    import time

    import zmq

    from stream import protocol as P
    from stream.subscriber import Subscriber
    from stream_support import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    subs = [Subscriber(endpoint), Subscriber(endpoint, streams=["cam"])]
    time.sleep(0.5)
    for seq in (0, 1, 2, 5, 6, 0, 1, 3):  # 3 and 4 lost; a restart; 2 lost
        pub.send_multipart(P.encode(P.make_header(P.STATUS, seq, stream="cam", state="live", t=1e9), topic="cam"))
    try:
        for sub in subs:
            while sub.recv(1.0) is not None:
                pass
        assert (subs[0].lost, subs[0].publisher_restarts) == (3, 1)
        assert subs[1].tracks_losses is False and subs[1].lost == 0
    finally:
        for sub in subs:
            sub.close()
        pub.close()
        ctx.term()
