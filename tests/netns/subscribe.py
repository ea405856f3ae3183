"""Subscribe to a detector's event endpoint and write every message header as a JSON line.

Run inside a network namespace by tests/test_multihost_netns.py (the test process stays in the
root namespace, so it cannot connect itself):

    ip netns exec NS python tests/netns/subscribe.py --endpoint tcp://ADDR:5560 \
        --key client.key_secret --server-key server.key --out messages.jsonl

Each line is one message header (stream.subscriber.Subscriber: validated, events deduplicated) with
``_t_recv`` (the receiver's clock) added. Lines of type ``_socket`` are the SUB socket's ZeroMQ
monitor events (``HANDSHAKE_SUCCEEDED``, ``HANDSHAKE_FAILED_AUTH``, ...): what happened to the
CURVE handshake, for the test's failure messages. Every line is flushed at once. Runs until
SIGTERM/SIGINT or ``--seconds``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (run as a script from anywhere)

import zmq
from zmq.utils.monitor import recv_monitor_message

from stream.security import load_client_curve
from stream.subscriber import Subscriber

EVENT_NAMES = {getattr(zmq, name): name[len("EVENT_"):] for name in dir(zmq)
               if name.startswith("EVENT_") and isinstance(getattr(zmq, name), int)
               and name not in ("EVENT_ALL", "EVENT_ALL_V1", "EVENT_ALL_V2")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", action="append", required=True)
    p.add_argument("--key", default=None, help="client NAME.key_secret")
    p.add_argument("--server-key", default=None, help="server NAME.key")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=None)
    args = p.parse_args(argv)

    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    curve = load_client_curve(args.key, args.server_key)
    sub = Subscriber(args.endpoint, curve=curve)
    # the handshake runs after connect returns, in libzmq's I/O thread: a monitor attached now still sees it
    monitor = sub.sock.get_monitor_socket()
    deadline = None if args.seconds is None else time.monotonic() + args.seconds
    with open(args.out, "a", buffering=1) as out:
        out.write(json.dumps({"type": "_socket", "event": "STARTED", "_t_recv": time.time()}) + "\n")
        while not stop and (deadline is None or time.monotonic() < deadline):
            while monitor.poll(0):
                event = recv_monitor_message(monitor)
                name = EVENT_NAMES.get(event["event"], str(event["event"]))
                out.write(json.dumps({"type": "_socket", "event": name, "value": event.get("value"),
                                      "_t_recv": time.time()}) + "\n")
            msg = sub.recv(0.2)
            if msg is not None:
                out.write(json.dumps({**msg.header, "_t_recv": time.time()}, default=repr) + "\n")
    sub.sock.disable_monitor()
    monitor.close(0)
    sub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
