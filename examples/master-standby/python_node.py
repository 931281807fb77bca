"""One node of a master/standby pair, in Python (its twin in Rust is `rust_node.rs`): it
campaigns for mastership and does "work" -- appends `<fencing token> <id>` to a shared file
every 50 ms -- only while it leads: right before each unit of work it asks
`elector.leadership()`, which is valid only while the lease's last confirmed heartbeat listed
the leadership and only until that heartbeat's send time + the lease's ttl, and it writes with
that leadership's fencing token.

    python examples/master-standby/python_node.py --endpoints 127.0.0.1:7710 --election ledger \\
        --id node-b --priority 1 --ttl-ms 2000 --work-file /tmp/work.log --preempt

It prints one line per event on stdout: `ready <lease id>` once it campaigns,
`elected <term> <fencing token>`, `lost <reason>`, and `bye` after a SIGTERM (or SIGINT) made
it resign and revoke its lease. When its candidacy ends (its lease ended) it prints
`lost candidacy-ended` and exits with status 1.

Uses the zkcoord_client package from clients/python (put on sys.path here; no install
needed beyond grpcio and protobuf).
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python"))

from zkcoord_client import BecameLeader, Client, LeaderElector, LeaseKeeper, LostLeadership  # noqa: E402

#: How often a leader does a unit of work, in seconds.
WORK_INTERVAL = 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One node of a master/standby pair.")
    parser.add_argument("--endpoints", required=True, help="zkcoord endpoints, comma-separated")
    parser.add_argument("--election", required=True, help="the election")
    parser.add_argument("--id", required=True, help="this node's candidate id (and lease owner)")
    parser.add_argument("--priority", type=int, default=0, help="0 is best")
    parser.add_argument("--ttl-ms", type=int, default=2000, help="the lease ttl in milliseconds")
    parser.add_argument("--work-file", required=True, type=pathlib.Path, help="the file work is appended to")
    parser.add_argument("--preempt", action="store_true", help="require preemption (a better candidate takes over)")
    return parser.parse_args()


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    args = parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    client = Client([e for e in args.endpoints.split(",") if e.strip()])
    lease = LeaseKeeper(client, args.id, args.ttl_ms)
    elector = LeaderElector(
        client, lease, args.election, args.id, priority=args.priority, preempt=True if args.preempt else None
    )
    say(f"ready {lease.id}")

    announced = None  # the (term, fencing token) last printed as `elected`
    next_work = time.monotonic()
    while not stop.is_set():
        event = elector.next_event(timeout=max(0.0, next_work - time.monotonic()))
        if isinstance(event, BecameLeader):
            announced = (event.term, event.fencing_token)
            say(f"elected {event.term} {event.fencing_token}")
            continue
        if isinstance(event, LostLeadership):
            announced = None
            say(f"lost {event.reason}")
            continue
        if elector.over:
            say("lost candidacy-ended")
            client.close()
            return 1
        if time.monotonic() < next_work:
            continue
        next_work += WORK_INTERVAL
        if next_work < time.monotonic():
            next_work = time.monotonic() + WORK_INTERVAL  # fell behind: do not catch up in a burst
        # The safety rule: work only while the leadership is valid, checked right before each
        # unit of work, with its own fencing token (and only once it was announced). Longer
        # units of work would also make sure to end before `leadership.valid_until`.
        leadership = elector.leadership()
        if (
            leadership is not None
            and (leadership.term, leadership.fencing_token) == announced
            and not stop.is_set()
        ):
            with open(args.work_file, "a") as work:
                work.write(f"{leadership.fencing_token} {args.id}\n")
                work.flush()

    elector.resign()
    lease.revoke()
    client.close()
    say("bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
