"""A flow worker, in Python (its twin in Rust is `rust_worker.rs`): it shares the steps of a
fixed set of flows with other workers through a zkcoord shard group, and writes each step to
one SQLite database in a transaction fenced by the shard's epoch, so that the database itself
refuses a write from an owner that lost the shard.

    python examples/flow-workers/python_worker.py --endpoints 127.0.0.1:7710 --id py-1 \\
        --db /tmp/flows.db --log /tmp/py-1.log

Flow `flow-<i>` (i < --flows) needs --steps steps; it belongs to shard FNV-1a-32(flow id) mod
--shards. The worker works only on flows of shards it owns, checking `member.owns(shard)` right
before each write (inside the write transaction), and every write first moves the shard's fence:
`UPDATE shard_fence SET epoch = E WHERE shard = S AND epoch <= E`; when that updates no row, a
newer owner has written, and the transaction is rolled back.

It prints `ready <lease id>` once it joined, and `bye` after a SIGTERM (or SIGINT) made it leave
the group (handing its shards off) and revoke its lease. Its log (--log, one line per record,
flushed at once; times are CLOCK_MONOTONIC nanoseconds, comparable between processes on one
machine) is what the test reads; the protocol is in README.md.

Uses the zkcoord_client package from clients/python (put on sys.path here; no install needed
beyond grpcio and protobuf) and the standard library's sqlite3.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import signal
import sqlite3
import sys
import threading
import time
from typing import Dict, Optional, Set, Tuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "clients" / "python"))

from zkcoord_client import Assigned, Client, LeaseKeeper, Revoked, ShardMember  # noqa: E402

#: How long to wait for a newer owner's first write before the stale-write probe gives up.
STALE_PROBE_PATIENCE = 15.0
#: Pause when there is nothing to do, in seconds.
IDLE = 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A flow worker sharing shards of flows through zkcoord.")
    parser.add_argument("--endpoints", required=True, help="zkcoord endpoints, comma-separated")
    parser.add_argument("--group", default="flows", help="the shard group")
    parser.add_argument("--id", required=True, help="this worker's member id (and lease owner)")
    parser.add_argument("--db", required=True, type=pathlib.Path, help="the SQLite database (created when missing)")
    parser.add_argument("--log", required=True, type=pathlib.Path, help="the worker's log")
    parser.add_argument("--flows", type=int, default=100, help="the number of flows")
    parser.add_argument("--steps", type=int, default=20, help="the steps each flow needs")
    parser.add_argument("--shards", type=int, default=64, help="the group's shard count")
    parser.add_argument("--ttl-ms", type=int, default=2000, help="the lease ttl in milliseconds")
    parser.add_argument("--step-ms", type=int, default=10, help="how long one step's work takes")
    parser.add_argument(
        "--stale-probe",
        action="store_true",
        help="after losing a shard, write to it once more with the old epoch (the database must refuse)",
    )
    return parser.parse_args()


def shard_of(flow: str, shards: int) -> int:
    """FNV-1a (32 bits) of the flow id's UTF-8 bytes, mod the shard count: the same in every
    worker, whatever its language."""
    h = 0x811C9DC5
    for byte in flow.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % shards


def now_ns() -> int:
    return time.monotonic_ns()


class Log:
    """The worker's log: one line per record, written and flushed at once (a kill -9 loses
    nothing written)."""

    def __init__(self, path: pathlib.Path):
        self._file = open(path, "a", buffering=1)
        self._lock = threading.Lock()

    def write(self, *fields: object) -> None:
        with self._lock:
            self._file.write(" ".join(str(f) for f in fields) + "\n")
            self._file.flush()


def connect(path: pathlib.Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), waiting up to 10 s for
    the database's write lock."""
    db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 10000")
    return db


def init(db: sqlite3.Connection, flows: int, shards: int) -> None:
    """Creates the tables, the shards' fences (epoch 0) and the flows (at position 0) unless
    they exist: every worker does it, the first one creates them."""
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS shard_fence (shard INTEGER PRIMARY KEY, epoch INTEGER NOT NULL)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS checkpoints (flow TEXT PRIMARY KEY, shard INTEGER NOT NULL,"
            " position INTEGER NOT NULL, epoch INTEGER NOT NULL, worker TEXT NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS steps (id INTEGER PRIMARY KEY AUTOINCREMENT, flow TEXT NOT NULL,"
            " step INTEGER NOT NULL, shard INTEGER NOT NULL, epoch INTEGER NOT NULL, worker TEXT NOT NULL)"
        )
        db.executemany("INSERT OR IGNORE INTO shard_fence (shard, epoch) VALUES (?, 0)", [(s,) for s in range(shards)])
        db.executemany(
            "INSERT OR IGNORE INTO checkpoints (flow, shard, position, epoch, worker) VALUES (?, ?, 0, 0, '')",
            [(f"flow-{i}", shard_of(f"flow-{i}", shards)) for i in range(flows)],
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def fence(db: sqlite3.Connection, shard: int, epoch: int) -> bool:
    """Within a transaction: moves the shard's fence to `epoch` unless a newer owner's epoch
    is there; False when it is (then the transaction must be rolled back)."""
    return db.execute("UPDATE shard_fence SET epoch = ? WHERE shard = ? AND epoch <= ?", (epoch, shard, epoch)).rowcount == 1


class Worker:
    def __init__(self, args: argparse.Namespace, member: ShardMember, db: sqlite3.Connection, log: Log):
        self.args = args
        self.member = member
        self.db = db
        self.log = log
        self.claimed: Set[Tuple[int, int]] = set()  # (shard, epoch) whose fence this worker moved
        self.refused: Set[Tuple[int, int]] = set()  # (shard, epoch) a newer owner has written

    def take_events(self) -> None:
        """Takes every pending event. A revoked shard is not worked on from its event on;
        asking for the next event releases it (the handling is over)."""
        revoked = []
        while True:
            event = self.member.next_event(timeout=0)
            if event is None:
                break
            if isinstance(event, Assigned):
                self.log.write("assigned", event.shard, event.epoch)
            elif isinstance(event, Revoked):
                self.log.write("gave-up", event.shard, event.epoch, now_ns())
                revoked.append((event.shard, event.epoch))
        if self.args.stale_probe:
            claimed = [r for r in revoked if r in self.claimed]
            if claimed:
                shard, epoch = claimed[0]
                threading.Thread(target=self.stale_probe, args=(shard, epoch), daemon=True).start()

    def claim(self, shard: int, epoch: int) -> None:
        """Moves the fence of a shard this worker now owns, before any work on it: from then on
        the database refuses the previous owners' writes."""
        self.db.execute("BEGIN IMMEDIATE")
        owned = self.member.owns(shard)
        if owned is None or owned.epoch != epoch:
            self.db.execute("ROLLBACK")
            return
        check, until = now_ns(), int(owned.valid_until * 1e9)
        if check >= until:  # ran out since owns() answered
            self.db.execute("ROLLBACK")
            return
        if not fence(self.db, shard, epoch):
            self.db.execute("ROLLBACK")
            self.refused.add((shard, epoch))
            self.log.write("refused", shard, epoch)
            return
        self.db.execute("COMMIT")
        self.claimed.add((shard, epoch))
        self.log.write("claim", shard, epoch, check, until)

    def step(self, flow: str, shard: int, epoch: int, position: int) -> None:
        """Does step `position + 1` of `flow` and records it, fenced by `epoch`."""
        time.sleep(self.args.step_ms / 1000)  # the work
        self.db.execute("BEGIN IMMEDIATE")
        # The client rule, right before the write (holding the database's write lock).
        owned = self.member.owns(shard)
        if owned is None or owned.epoch != epoch:
            self.db.execute("ROLLBACK")
            return
        check, until = now_ns(), int(owned.valid_until * 1e9)
        if check >= until:  # ran out since owns() answered
            self.db.execute("ROLLBACK")
            return
        if not fence(self.db, shard, epoch):
            self.db.execute("ROLLBACK")
            self.refused.add((shard, epoch))
            self.log.write("refused", shard, epoch)
            return
        (current,) = self.db.execute("SELECT position FROM checkpoints WHERE flow = ?", (flow,)).fetchone()
        if current != position:
            self.db.execute("ROLLBACK")
            self.log.write("conflict", flow, position, current)
            return
        self.db.execute(
            "INSERT INTO steps (flow, step, shard, epoch, worker) VALUES (?, ?, ?, ?, ?)",
            (flow, position + 1, shard, epoch, self.args.id),
        )
        self.db.execute(
            "UPDATE checkpoints SET position = ?, epoch = ?, worker = ? WHERE flow = ?", (position + 1, epoch, self.args.id, flow)
        )
        self.db.execute("COMMIT")
        self.log.write("step", flow, position + 1, shard, epoch, check, until)

    def stale_probe(self, shard: int, epoch: int) -> None:
        """Misbehaves on purpose: once a newer owner has written to `shard`, writes a step to
        it with the epoch this worker lost, without asking `owns()`. The fence must refuse it."""
        try:
            self._stale_probe(shard, epoch)
        except sqlite3.Error as error:
            self.log.write("db-error", str(error).replace(" ", "_"))

    def _stale_probe(self, shard: int, epoch: int) -> None:
        db = connect(self.args.db)
        deadline = time.monotonic() + STALE_PROBE_PATIENCE
        while True:
            (fenced,) = db.execute("SELECT epoch FROM shard_fence WHERE shard = ?", (shard,)).fetchone()
            if fenced > epoch:
                break
            if time.monotonic() >= deadline:
                self.log.write("stale", shard, epoch, "skipped")
                return
            time.sleep(0.05)
        db.execute("BEGIN IMMEDIATE")
        if not fence(db, shard, epoch):
            db.execute("ROLLBACK")
            self.log.write("stale", shard, epoch, "refused")
            return
        # Accepted: a broken fence. Recorded, so that the database shows it too.
        db.execute(
            "INSERT INTO steps (flow, step, shard, epoch, worker) VALUES (?, 0, ?, ?, 'stale-probe')",
            (f"stale-probe-{shard}", shard, epoch),
        )
        db.execute("COMMIT")
        self.log.write("stale", shard, epoch, "ACCEPTED")

    def work_once(self) -> bool:
        """Claims newly owned shards and does one step of a flow of an owned shard; False when
        there was nothing to do. A database error (e.g. its lock not had within 10 s) rolls
        back and is logged; the worker goes on."""
        try:
            return self._work_once()
        except sqlite3.OperationalError as error:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.log.write("db-error", str(error).replace(" ", "_"))
            return False

    def _work_once(self) -> bool:
        owned: Dict[int, int] = {o.shard: o.epoch for o in self.member.owned()}
        for shard, epoch in sorted(owned.items()):
            if (shard, epoch) not in self.claimed and (shard, epoch) not in self.refused:
                self.claim(shard, epoch)
        workable = {s: e for s, e in owned.items() if (s, e) in self.claimed}
        if not workable:
            return False
        pending = [
            (flow, shard, position)
            for flow, shard, position in self.db.execute(
                "SELECT flow, shard, position FROM checkpoints WHERE position < ?", (self.args.steps,)
            )
            if shard in workable
        ]
        if not pending:
            return False
        flow, shard, position = random.choice(pending)
        self.step(flow, shard, workable[shard], position)
        return True


def main() -> int:
    args = parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log = Log(args.log)
    db = connect(args.db)
    init(db, args.flows, args.shards)
    client = Client([e for e in args.endpoints.split(",") if e.strip()])
    lease = LeaseKeeper(client, args.id, args.ttl_ms)
    member = ShardMember(client, lease, args.group, args.id, args.shards)
    log.write("joined", args.id, lease.id)
    print(f"ready {lease.id}", flush=True)
    worker = Worker(args, member, db, log)
    while not stop.is_set():
        worker.take_events()
        if member.over:
            print("membership-ended", flush=True)
            return 1
        if not worker.work_once():
            stop.wait(IDLE)
    # Leaving gives every shard up at once: no work on any of them from here on.
    for shard, epoch in sorted(worker.claimed):
        log.write("gave-up", shard, epoch, now_ns())
    left: Optional[bool] = member.leave(10)
    log.write("left", left)
    lease.revoke()
    client.close()
    print("bye", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
