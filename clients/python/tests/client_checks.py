"""Checks of the zkcoord_client package against running zkcoord instances (and ZooKeeper).

Run by tests/it/python_client.rs:
    python clients/python/tests/client_checks.py --endpoints HOST:PORT,HOST:PORT --scenario lease

Scenarios: lease, election, transfer, lock (two instances or more), failover (three
instances: the first a process the driver kills on the cue `cue kill-first`, the second one it
shuts down gracefully on `cue shutdown-second`), frozen (two instances: the first a process the
driver freezes with SIGSTOP on `cue freeze-first` and kills on `cue kill-first`), lock_crash
and shards (two instances: the first a process the driver kills on `cue kill-first`); the
driver answers each cue with a line `done` on stdin.

Prints `ok <scenario>` per scenario and `python client checks passed` at the end; any failed
check raises (exit 1).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from zkcoord_client import (  # noqa: E402
    CONFIRMED,
    EXCLUSIVE,
    LOST,
    SHARED,
    BecameLeader,
    Assigned,
    Client,
    LeaderElector,
    LeaseKeeper,
    LockBusy,
    LockWaitTimeout,
    LostLeadership,
    Revoked,
    ShardMember,
    Tls,
    ZkcoordError,
    common_pb2,
    election_pb2,
    lease_pb2,
    lock,
    lock_pb2,
    shards_pb2,
    try_lock,
)

TTL_MS = 1000
SERVING = common_pb2.HEALTH_STATUS_SERVING
NOT_SERVING = common_pb2.HEALTH_STATUS_NOT_SERVING


def check(condition: object, *what: object) -> None:
    """Raises AssertionError (even under python -O) when condition is false."""
    if not condition:
        raise AssertionError(" ".join(str(w) for w in what) or "check failed")


def eventually(probe, what: str, timeout: float = 5.0):
    """Polls probe() every 20 ms until it returns something truthy, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        check(time.monotonic() < deadline, f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.02)


def expect_error(call, code: grpc.StatusCode) -> ZkcoordError:
    try:
        call()
    except ZkcoordError as error:
        check(error.code == code, f"expected {code.name}, got", error)
        return error
    raise AssertionError(f"expected {code.name}, the call succeeded")


def expect_event(elector: LeaderElector, kind, reason: str = None, timeout: float = 5.0):
    """The elector's next event, which must be `kind` (with `reason`). A suspension in between
    -- LostLeadership("lease-unconfirmed") and BecameLeader of the same term again: zkcoord
    could not confirm one heartbeat, e.g. on a loaded machine -- is skipped (and printed),
    unless that loss is what is expected."""
    deadline = time.monotonic() + timeout
    while True:
        event = elector.next_event(max(0.0, deadline - time.monotonic()))
        suspended = isinstance(event, LostLeadership) and event.reason == "lease-unconfirmed"
        if not suspended or (kind is LostLeadership and reason in (None, "lease-unconfirmed")):
            break
        again = elector.next_event(max(0.0, deadline - time.monotonic()))
        check(
            isinstance(again, BecameLeader) and again.term == event.term,
            f"{elector.candidate_id}: expected {kind.__name__}, got {event!r} then {again!r}",
        )
        print(f"  {elector.candidate_id}: (suspended: {event}, then {again})", flush=True)
    check(isinstance(event, kind), f"{elector.candidate_id}: expected {kind.__name__}, got {event!r}")
    if reason is not None:
        check(event.reason == reason, f"{elector.candidate_id}: expected reason {reason}, got {event!r}")
    print(f"  {elector.candidate_id}: {event}", flush=True)
    return event


def no_event(elector: LeaderElector, within: float) -> None:
    event = elector.next_event(within)
    check(event is None, f"{elector.candidate_id}: unexpected {event!r}")


def stays_confirmed(keeper: LeaseKeeper, seconds: float, what: str) -> None:
    """Samples the keeper for `seconds`: its heartbeats keep their pace (a confirmation never
    runs out while answers come: that would be a "confirmed" status past its `until`) and the
    lease is never lost. An answer that is not confirmed (an instance that could not prove its
    ZooKeeper session fresh in time, e.g. on a loaded machine) rightly suspends the lease until
    the next confirmed one; it is tolerated, counted, and must not last a ttl."""
    started = time.monotonic()
    unconfirmed = 0
    unconfirmed_since = None
    while time.monotonic() - started < seconds:
        status = keeper.status()
        check(status.state != LOST, what, "lost", keeper)
        if status.state == CONFIRMED:
            check(status.confirmed_now(), what, "a confirmation ran out while heartbeats were answered", keeper)
            unconfirmed_since = None
        else:
            unconfirmed += 1
            unconfirmed_since = unconfirmed_since or time.monotonic()
            check(time.monotonic() - unconfirmed_since < keeper.ttl_ms / 1000, what, "unconfirmed for a ttl", keeper)
        time.sleep(0.05)
    eventually(keeper.is_confirmed, f"{what}: confirmed at the end", timeout=keeper.ttl_ms / 1000)
    if unconfirmed:
        print(f"  ({what}: {unconfirmed} samples unconfirmed by zkcoord)", flush=True)


def lease_info(client: Client, lease_id: int):
    return client.time_to_live(lease_id).lease


def check_health(client: Client, lease_id: int, status: int, checks: dict) -> bool:
    """Whether TimeToLive shows `status` and the checks {name: (status, message)}."""
    health = lease_info(client, lease_id).health
    seen = {c.name: (c.status, c.message) for c in health.checks}
    return health.status == status and seen == checks


def cue(what: str) -> None:
    """Asks the driver to do `what` and waits until it says it is done."""
    print(f"cue {what}", flush=True)
    answer = sys.stdin.readline().strip()
    check(answer == "done", f"driver answered {answer!r} to {what}")


def scenario_lease(endpoints: list) -> None:
    client = Client(endpoints)
    other = Client(list(reversed(endpoints)))  # reads through another instance
    database = {"ok": True, "hang": False}

    def database_check():
        if database["hang"]:
            time.sleep(2)
        return None if database["ok"] else "connection refused"

    def bus_check():
        if database.get("bus_down"):
            raise RuntimeError("bus down")
        return True

    checks = {"database": database_check, "message-bus": bus_check}
    keeper = LeaseKeeper(client, "py-owner", TTL_MS, metadata={"zone": "eu-1"}, checks=checks)
    check(keeper.id > 0 and keeper.secret and keeper.ttl_ms == TTL_MS, keeper)
    check(keeper.is_confirmed(), "confirmed right after the grant", keeper)

    # Kept alive past several ttls, confirmed all along, health visible from another instance.
    stays_confirmed(keeper, 3.5 * TTL_MS / 1000, "kept alive")
    info = lease_info(other, keeper.id)
    check(info.owner == "py-owner" and dict(info.metadata) == {"zone": "eu-1"}, info)
    check(info.granted_ttl_ms == TTL_MS, info)
    ok = {"database": (SERVING, ""), "message-bus": (SERVING, "")}
    check(check_health(other, keeper.id, SERVING, ok), info)
    print(f"  lease {keeper.id} alive after 3.5 ttls: {keeper.status()}, health SERVING", flush=True)

    # A failing check reports NOT_SERVING with its reason; the lease lives on.
    database["ok"] = False
    down = {"database": (NOT_SERVING, "connection refused"), "message-bus": (SERVING, "")}
    eventually(lambda: check_health(other, keeper.id, NOT_SERVING, down), "NOT_SERVING is visible")
    eventually(keeper.is_confirmed, "confirmed while NOT_SERVING")
    print("  failing check: NOT_SERVING (connection refused)", flush=True)

    # A check that raises, and one that does not answer within ttl/6, fail too; the
    # heartbeats keep their pace meanwhile.
    database.update(ok=True, hang=True, bus_down=True)
    hung = {
        "database": (NOT_SERVING, f"no answer within {TTL_MS / 6:.0f} ms"),
        "message-bus": (NOT_SERVING, "RuntimeError: bus down"),
    }
    eventually(lambda: check_health(other, keeper.id, NOT_SERVING, hung), "hung and raising checks fail")
    stays_confirmed(keeper, 2.5 * TTL_MS / 1000, "kept alive while a check hangs")
    print("  hanging and raising checks: NOT_SERVING, lease still confirmed", flush=True)

    database.update(hang=False, bus_down=False)
    eventually(lambda: check_health(other, keeper.id, SERVING, ok), "SERVING again", timeout=8)

    # Revoke ends it everywhere.
    keeper.revoke()
    check(keeper.status().state == LOST and not keeper.is_confirmed(), keeper)
    expect_error(lambda: other.time_to_live(keeper.id), grpc.StatusCode.NOT_FOUND)

    # A lease ended by someone else (here: a raw Revoke) is noticed as lost.
    second = LeaseKeeper(client, "py-owner-2", TTL_MS)
    other.leases().Revoke(lease_pb2.RevokeRequest(lease=second.lease_ref()), timeout=10)
    eventually(lambda: second.is_lost(), "the keeper notices its lease ended", timeout=3)
    check(not second.is_confirmed(), second)
    print("  revoked elsewhere: the keeper reports lost", flush=True)

    # Closing stops the heartbeats: the lease expires after its ttl (+ 200 ms).
    with LeaseKeeper(client, "py-owner-3", TTL_MS) as third:
        third.close()
        closed = time.monotonic()
        until = third.last_confirmed().until
        check(until <= closed + TTL_MS / 1000, "confirmed at most one ttl after the last heartbeat", until - closed)
        eventually(lambda: not third.is_confirmed(), "confirmation runs out", timeout=2)
        check(time.monotonic() >= until, "confirmed until then", until)
        expect_error(lambda: eventually(lambda: other.time_to_live(third.id) and False, "", 3), grpc.StatusCode.NOT_FOUND)
    print("  closed: unconfirmed within a ttl, then expired", flush=True)
    client.close()
    other.close()


def scenario_election(endpoints: list) -> None:
    on_a = Client(endpoints)
    on_b = Client(list(reversed(endpoints)))  # the two candidates talk to different instances
    health_a = {"ok": True}
    lease_a = LeaseKeeper(on_a, "node-a", TTL_MS, checks={"database": lambda: health_a["ok"] or "db down"})
    lease_b = LeaseKeeper(on_b, "node-b", TTL_MS)
    name = "py-election"
    a = LeaderElector(on_a, lease_a, name, "a", priority=0, value=b"10.0.0.1:9000")
    first = expect_event(a, BecameLeader)
    check(a.is_leader() and a.leading() == (first.term, first.fencing_token), a)
    # The leadership comes from the last confirmed heartbeat: it listed this term, and it is
    # valid until that heartbeat's send time + the granted ttl.
    leadership = a.leadership()
    beat = lease_a.last_confirmed()
    check(leadership.term == first.term and leadership.fencing_token == first.fencing_token, leadership)
    check(leadership.valid_until == beat.until and name in beat.elections, leadership, beat)
    check(time.monotonic() < leadership.valid_until <= time.monotonic() + TTL_MS / 1000, leadership)
    check([(l.election, l.candidate_id, l.term) for l in beat.leaderships] == [(name, "a", first.term)], beat)
    b = LeaderElector(on_b, lease_b, name, "b", priority=1, value="10.0.0.2:9000")
    no_event(b, 0.5)
    check(not b.is_leader(), b)
    leader = on_b.leader(name)
    check(leader.candidate_id == "a" and leader.value == b"10.0.0.1:9000" and leader.term == first.term, leader)
    check([c.candidate_id for c in on_a.candidates(name).candidates] == ["a", "b"], "election order")

    # Transfer: a hears it lost first, then b is elected with a greater term and token.
    new = a.transfer("b")
    check(new.candidate_id == "b", new)
    lost = expect_event(a, LostLeadership, "transferred")
    check(lost.term == first.term, lost)
    check(not a.is_leader() and a.leadership() is None, a)
    second = expect_event(b, BecameLeader)
    check(second.term > first.term and second.fencing_token > first.fencing_token, first, second)
    check(b.is_leader() and not a.is_leader(), a, b)
    expect_error(lambda: a.transfer(), grpc.StatusCode.FAILED_PRECONDITION)  # a does not lead

    # Resign: b steps down, a (still a candidate after the transfer) is elected.
    b.resign()
    expect_event(b, LostLeadership, "resigned")
    check(b.next_event(1) is None and b.over, "b's events end after resigning")
    third = expect_event(a, BecameLeader)
    check(third.term > second.term and third.fencing_token > second.fencing_token, second, third)
    check(a.is_leader() and not b.is_leader(), a, b)
    expect_error(lambda: a.transfer(), grpc.StatusCode.FAILED_PRECONDITION)  # nobody to take over

    # An unhealthy leader is deposed, and elected again when healthy (no one else is there).
    health_a["ok"] = False
    expect_event(a, LostLeadership, "unhealthy")
    health_a["ok"] = True
    fourth = expect_event(a, BecameLeader)
    check(fourth.term > third.term, third, fourth)

    # The safety rule: a leader whose heartbeats stop stops leading when its lease's
    # confirmation runs out (at most one ttl after the last confirmed heartbeat was sent),
    # before zkcoord may expire the lease (ttl + 200 ms) and elect anyone else.
    lease_b2 = LeaseKeeper(on_b, "node-b", TTL_MS)
    b2 = LeaderElector(on_b, lease_b2, name, "b2", priority=1)
    no_event(b2, 0.3)
    lease_a.close()
    stopped = time.monotonic()
    until = lease_a.last_confirmed().until
    check(until <= stopped + TTL_MS / 1000, "confirmed at most one ttl after the last heartbeat", until - stopped)
    while time.monotonic() < until - 0.05:
        check(a.is_leader(), "a leads while its lease is confirmed", a)
        time.sleep(0.02)
    eventually(lambda: time.monotonic() >= until and not a.is_leader(), "a stops leading", timeout=2)
    lost = expect_event(a, LostLeadership, "lease-unconfirmed", timeout=3)
    gone = until - stopped
    fifth = expect_event(b2, BecameLeader, timeout=5)
    check(fifth.term > fourth.term, fourth, fifth)
    check(a.next_event(3) is None and a.over, "a's candidacy ended with its lease", lost)
    print(f"  heartbeats stopped: a stopped leading {gone:.3f} s later, then b2 was elected", flush=True)

    # Preemption: a better candidate takes over a preemptive election.
    lease_c = LeaseKeeper(on_a, "node-c", TTL_MS)
    lease_d = LeaseKeeper(on_b, "node-d", TTL_MS)
    c = LeaderElector(on_a, lease_c, "py-preempt", "c", priority=5, preempt=True)
    expect_event(c, BecameLeader)
    expect_error(lambda: LeaderElector(on_b, lease_d, "py-preempt", "x", preempt=False), grpc.StatusCode.FAILED_PRECONDITION)
    expect_error(lambda: LeaderElector(on_b, lease_d, "py-preempt", "x", unhealthy_for=-1), grpc.StatusCode.INVALID_ARGUMENT)
    # Health hysteresis: d preempts only once zkcoord has seen it healthy for healthy_for.
    d = LeaderElector(on_b, lease_d, "py-preempt", "d", priority=0, healthy_for=0.5)
    expect_event(c, LostLeadership, "preempted")
    expect_event(d, BecameLeader)
    check(d.is_leader() and not c.is_leader(), c, d)

    # A revoked lease ends the candidacy: the leader loses at once.
    lease_d.revoke()
    expect_event(d, LostLeadership, "lease-lost")
    expect_event(c, BecameLeader)
    with c:
        pass  # leaving the block resigns
    check(c.over and not c.is_leader(), c)
    eventually(lambda: on_a.leader("py-preempt") is None, "no leader after c resigned")
    for lease in (lease_b, lease_b2, lease_c):
        lease.revoke()
    on_a.close()
    on_b.close()


class Overlap:
    """Samples two electors' `leadership()` in one process, new leader first, until stopped:
    when each was last / first seen leading, and whether both ever were at once."""

    def __init__(self, old: LeaderElector, new: LeaderElector):
        self.old, self.new = old, new
        self.old_last = None  # the last sample at which the old leader's leadership was valid
        self.new_first = None  # the first sample at which the new leader's was
        self.both = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            new = self.new.leadership()  # first: if the old one is still valid afterwards, both were
            old = self.old.leadership()
            now = time.monotonic()
            if old is not None:
                self.old_last = now
                check(now < old.valid_until, "leadership() past its validity", old)
            if new is not None and self.new_first is None:
                self.new_first = now
            if old is not None and new is not None and self.both is None:
                self.both = (old, new)
            time.sleep(0.0005)

    def stop(self) -> "Overlap":
        eventually(lambda: self.new_first is not None, "the new leader's leadership() is valid")
        self._stop.set()
        self._thread.join()
        check(self.both is None, "two leaderships valid at once", self.both)
        check(self.old_last is None or self.old_last < self.new_first, "the old leadership ended first", self.old_last, self.new_first)
        return self


def timed_transfer(elector: LeaderElector, target: str, result: dict) -> threading.Thread:
    """Runs elector.transfer(target) in a thread; result gets "took" (seconds) and "leader"."""

    def run():
        started = time.monotonic()
        result["leader"] = elector.transfer(target)
        result["took"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def scenario_transfer(endpoints: list) -> None:
    """Transfer with the deposed leader's acknowledgement (automatic, then by the application)
    completes at once, and without it only after the deposed leader's validity ran out; the
    old leader's leadership() always ends before the new leader's begins."""
    ttl_ms = 3000  # without acknowledgement a transfer takes the ttl + about a second
    ttl = ttl_ms / 1000
    on_a = Client(endpoints)
    on_b = Client(list(reversed(endpoints)))
    lease_a = LeaseKeeper(on_a, "xfer-a", ttl_ms)
    lease_b = LeaseKeeper(on_b, "xfer-b", ttl_ms)
    lease_c = LeaseKeeper(on_a, "xfer-c", ttl_ms)
    name = "py-transfer"
    a = LeaderElector(on_a, lease_a, name, "a", priority=0)
    first = expect_event(a, BecameLeader)
    b = LeaderElector(on_b, lease_b, name, "b", priority=1)
    c = LeaderElector(on_a, lease_c, name, "c", priority=2, auto_acknowledge=False)
    no_event(b, 0.3)

    # Acknowledged automatically: a's leadership ends (DEPOSED), a tells zkcoord, b is elected
    # at once.
    overlap = Overlap(a, b)
    started = time.monotonic()
    new = a.transfer("b")
    took = time.monotonic() - started
    check(new.candidate_id == "b" and new.term > first.term, new)
    lost = expect_event(a, LostLeadership, "transferred")
    check(lost.term == first.term, lost)
    second = expect_event(b, BecameLeader)
    check(second.term == new.term and second.fencing_token == new.fencing_token, second, new)
    overlap.stop()
    gap = overlap.new_first - overlap.old_last
    check(took < ttl, f"an acknowledged transfer takes less than the ttl ({took:.3f} s)")
    print(f"  acknowledged transfer a -> b: {took:.3f} s; a's leadership ended {gap * 1000:.1f} ms before b's began", flush=True)

    # b hands over to c, which acknowledges nothing by itself.
    new = b.transfer("c")
    expect_event(b, LostLeadership, "transferred")
    third = expect_event(c, BecameLeader)
    check(third.term == new.term, third, new)

    # c is transferred away and needs time to stop: it acknowledges after half a second, and
    # b is elected then, not before.
    overlap = Overlap(c, b)
    result: dict = {}
    thread = timed_transfer(c, "b", result)
    lost = expect_event(c, LostLeadership, "transferred")
    check(lost.term == third.term and c.leadership() is None, lost)
    time.sleep(0.5)
    check(b.leadership() is None and thread.is_alive(), "no successor before the acknowledgement")
    acknowledged = time.monotonic()
    c.acknowledge(lost.term)
    thread.join(ttl + 5)
    check("took" in result and result["leader"].candidate_id == "b", result)
    fourth = expect_event(b, BecameLeader)
    overlap.stop()
    after = overlap.new_first - acknowledged
    check(0.5 <= result["took"] < ttl, f"the transfer waited for the acknowledgement ({result['took']:.3f} s)")
    print(f"  transfer c -> b acknowledged by the application after 0.5 s: {result['took']:.3f} s, b leading {after * 1000:.0f} ms after the acknowledgement", flush=True)

    # Without any acknowledgement, the successor waits for the deposed leader's validity to
    # run out (its ttl + about a second).
    b.transfer("c")
    expect_event(b, LostLeadership, "transferred")
    fifth = expect_event(c, BecameLeader)
    check(fifth.term > fourth.term, fourth, fifth)
    overlap = Overlap(c, b)
    result = {}
    thread = timed_transfer(c, "b", result)
    lost = expect_event(c, LostLeadership, "transferred")
    thread.join(ttl + 5)
    check("took" in result and result["took"] >= ttl, f"an unacknowledged transfer waits the ttl ({result.get('took')})")
    expect_event(b, BecameLeader)
    overlap.stop()
    c.acknowledge(lost.term)  # late: the term is over, nothing to do
    print(f"  unacknowledged transfer c -> b: {result['took']:.3f} s", flush=True)

    # Acknowledging a term still led undeposed is refused, and that term is not given up.
    led = eventually(b.leadership, "b leads")
    expect_error(lambda: b.acknowledge(led.term), grpc.StatusCode.FAILED_PRECONDITION)
    eventually(lambda: b.leading() == (led.term, led.fencing_token), "b leads that term again")

    for elector in (a, b, c):
        elector.resign()
    for lease in (lease_a, lease_b, lease_c):
        lease.revoke()
    on_a.close()
    on_b.close()


def scenario_frozen(endpoints: list) -> None:
    """A leader whose instance freezes (no answer, no message at all) stops acting by the send
    time of its last confirmed heartbeat + ttl, reported by a timer; the successor leads only
    after that. Then a leader whose Campaign stream is on the frozen instance (its heartbeats
    go elsewhere) is transferred away: it never hears DEPOSED, but its next confirmed heartbeat
    no longer lists the leadership, which ends it at once, and its acknowledgement lets the
    successor lead at once."""
    check(len(endpoints) == 2, "frozen needs two endpoints", endpoints)
    on_first = Client(endpoints[:1])  # the leader can reach only the instance that freezes
    on_second = Client(endpoints[1:])
    lease_a = LeaseKeeper(on_first, "frozen-a", TTL_MS)
    lease_b = LeaseKeeper(on_second, "frozen-b", TTL_MS)
    name = "py-frozen"
    a = LeaderElector(on_first, lease_a, name, "a", priority=0)
    first = expect_event(a, BecameLeader)
    b = LeaderElector(on_second, lease_b, name, "b", priority=1)
    no_event(b, 0.3)
    eventually(a.is_leader, "a leads")
    # c's Campaign stream is on the first instance, its heartbeats on the second; short call
    # deadlines let its acknowledgement move on from the frozen instance quickly.
    c_ttl = 3
    on_both = Client(endpoints, timeout=0.5)
    lease_c = LeaseKeeper(on_second, "frozen-c", c_ttl * 1000)
    lease_d = LeaseKeeper(on_second, "frozen-d", c_ttl * 1000)
    other = "py-silent"
    c = LeaderElector(on_both, lease_c, other, "c", priority=0)
    c_first = expect_event(c, BecameLeader)
    d = LeaderElector(on_second, lease_d, other, "d", priority=1)
    no_event(d, 0.3)

    cue("freeze-first")
    frozen = time.monotonic()
    beat = lease_a.last_confirmed()
    check(beat.until - TTL_MS / 1000 <= frozen, "the last confirmed heartbeat was sent before the freeze", beat)
    last_valid = None
    valid_until = 0.0
    lost = lost_at = None
    elected = None
    deadline = time.monotonic() + 30
    while elected is None:
        check(time.monotonic() < deadline, "b is elected within 30 s of the freeze")
        new = b.leadership()
        old = a.leadership()
        now = time.monotonic()
        if old is not None:
            check(new is None, "two leaderships valid at once", old, new)
            check(now < old.valid_until, "leadership() past its validity", old)
            last_valid, valid_until = now, max(valid_until, old.valid_until)
        if lost is None:
            lost = a.next_event(0)
            lost_at = time.monotonic() if lost is not None else None
        if new is not None:
            elected = now
        time.sleep(0.001)
    beat = lease_a.last_confirmed()  # nothing was confirmed after the freeze
    check(lease_a.valid_until() is None and a.leadership() is None, lease_a)
    check(last_valid is not None and last_valid < beat.until and valid_until <= beat.until, last_valid, valid_until, beat)
    check(isinstance(lost, LostLeadership) and lost.reason == "lease-unconfirmed" and lost.term == first.term, lost)
    check(lost_at <= beat.until + 0.5, "the loss is reported when the validity runs out", lost_at - beat.until)
    check(elected > beat.until, "b leads only after a's validity ran out")
    print(
        f"  frozen instance: a's last confirmed heartbeat sent {(frozen - (beat.until - TTL_MS / 1000)) * 1000:.0f} ms before the freeze, "
        f"a stopped {(beat.until - frozen) * 1000:.0f} ms after it (reported {(lost_at - beat.until) * 1000:+.0f} ms), "
        f"b leading {(elected - frozen):.2f} s after it",
        flush=True,
    )

    overlap = Overlap(c, d)
    started = time.monotonic()
    request = election_pb2.TransferRequest(election=other, target_candidate_id="d")
    new = on_second.elections().Transfer(request, timeout=10).leader
    took = time.monotonic() - started
    check(new.candidate_id == "d" and new.term > c_first.term, new)
    lost = expect_event(c, LostLeadership, "unconfirmed")
    check(lost.term == c_first.term, lost)
    expect_event(d, BecameLeader)
    overlap.stop()
    check(took < c_ttl, f"the silent leader's acknowledgement made the transfer fast ({took:.3f} s)")
    print(f"  transfer away from a leader whose Campaign stream is frozen: {took:.3f} s (ttl {c_ttl} s)", flush=True)

    cue("kill-first")
    a.close()
    lease_a.close()
    for elector in (b, c, d):
        elector.resign()
    for lease in (lease_b, lease_c, lease_d):
        lease.revoke()
    for client in (on_first, on_second, on_both):
        client.close()


def scenario_lock(endpoints: list) -> None:
    on_a = Client(endpoints)
    on_b = Client(list(reversed(endpoints)))
    a = LeaseKeeper(on_a, "job-a", TTL_MS)
    b = LeaseKeeper(on_b, "job-b", TTL_MS)

    guard = lock(on_a, a, ["order-1", "order-2"], timeout=2)
    check(set(guard.tokens) == {"order-1", "order-2"} and guard.token("order-1") > 0, guard)
    check(guard.token("order-1") == guard.token("order-2"), "one request, one token", guard)
    until = guard.valid_until()
    check(until is not None and until == a.valid_until() and time.monotonic() < until, "a hold is covered by its lease", until)

    # Exclusive: b cannot have either key.
    try:
        try_lock(on_b, b, ["order-2", "order-3"])
        raise AssertionError("try_lock succeeded on a held key")
    except LockBusy as busy:
        holders = busy.holders("order-2")
        check(holders and len(holders) == 1, busy.blocked)
        check(holders[0].owner == "job-a" and holders[0].lease_id == a.id, holders)
        check(holders[0].mode == lock_pb2.LOCK_MODE_EXCLUSIVE and holders[0].fencing_token == guard.token("order-2"), holders)
        check(busy.holders("order-3") is None, busy.blocked)
    check(on_b.holders("order-3") == [], "a failed try_lock holds nothing")
    started = time.monotonic()
    timed_out = expect_error(lambda: lock(on_b, b, "order-1", timeout=0.3), grpc.StatusCode.DEADLINE_EXCEEDED)
    # The server's wait ran out (nothing queued), told apart from a deadline of the call's own.
    check(isinstance(timed_out, LockWaitTimeout), repr(timed_out))
    check(0.25 <= time.monotonic() - started < 3, "timed out after about 0.3 s")
    print("  exclusive: try_lock blocked by job-a, lock timed out", flush=True)

    # A waiter gets the key when it is unlocked, with a greater token.
    got = {}

    def wait_for_it():
        got["guard"] = lock(on_b, b, ["order-1"], timeout=10)

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    eventually(lambda: [k.waiters for k in on_a.holders("order-1")] == [1], "b waits for order-1")
    time.sleep(0.3)
    check(waiter.is_alive() and "guard" not in got, "b still waits while a holds the key")
    guard.unlock()
    guard.unlock()  # once is enough; later calls do nothing
    check(guard.valid_until() is None, "a released hold covers nothing")
    waiter.join(5)
    check(not waiter.is_alive() and "guard" in got, "b acquired after the unlock")
    check(got["guard"].token("order-1") > guard.token("order-1"), got["guard"], guard)
    check(on_a.holders("order-2") == [], "order-2 was released too")
    with got["guard"] as held:
        check([h.lease_id for k in on_a.holders("order-1") for h in k.holders] == [b.id], held)
    check(on_a.holders("order-1") == [], "released on leaving the with block")
    print("  unlock hands the key to the waiter, with a greater token", flush=True)

    # Shared: both at once; exclusive blocked meanwhile.
    with try_lock(on_a, a, "catalog", mode=SHARED), lock(on_b, b, ["catalog"], mode=SHARED, timeout=2):
        holders = [h.owner for k in on_a.holders("catalog") for h in k.holders]
        check(sorted(holders) == ["job-a", "job-b"], holders)
        c = LeaseKeeper(on_a, "job-c", TTL_MS)
        busy = expect_error(lambda: try_lock(on_a, c, "catalog", mode=EXCLUSIVE), grpc.StatusCode.FAILED_PRECONDITION)
        check(isinstance(busy, LockBusy) and len(busy.holders("catalog")) == 2, busy)
    with try_lock(on_a, c, "catalog"):
        pass
    print("  shared: two holders, exclusive blocked", flush=True)

    # Locks end with their lease.
    held = lock(on_a, a, "order-9")
    a.revoke()
    eventually(lambda: on_b.holders("order-9") == [], "the hold ended with the lease")
    expect_error(held.unlock, grpc.StatusCode.NOT_FOUND)
    for lease in (b, c):
        lease.revoke()
    on_a.close()
    on_b.close()


def scenario_failover(endpoints: list) -> None:
    check(len(endpoints) == 3, "failover needs three endpoints", endpoints)
    client = Client(endpoints)
    keeper = LeaseKeeper(client, "py-failover", TTL_MS, checks={"database": lambda: None})
    elector = LeaderElector(client, keeper, "py-failover", "only", priority=0)
    first = expect_event(elector, BecameLeader)
    eventually(lambda: keeper.instance and keeper.is_confirmed(), "a confirmed heartbeat")
    instances = [keeper.instance]
    on_last = Client(endpoints[2:])

    for step, (what, endpoint) in enumerate([("kill-first", 1), ("shutdown-second", 2)]):
        check(client.current() == step, "the stream is on endpoint", step, client.current())
        cue(what)
        cut = time.monotonic()
        # The elector loses leadership when its heartbeat stream breaks, then campaigns again
        # elsewhere and gets the same term back once a confirmed heartbeat there lists it.
        # (its heartbeats are unconfirmed while the keeper moves; the broken Campaign stream
        # alone would not end the leadership)
        lost = expect_event(elector, LostLeadership, "lease-unconfirmed", timeout=5)
        check(lost.term == first.term, lost)
        again = expect_event(elector, BecameLeader, timeout=10)
        check(again == first, "the same term comes back", first, again)
        eventually(lambda: keeper.is_confirmed() and keeper.instance not in instances, "heartbeats confirmed elsewhere")
        print(f"  {what}: moved in {time.monotonic() - cut:.2f} s to {keeper.instance}", flush=True)
        instances.append(keeper.instance)
        check(client.current() == endpoint, "moved to the next endpoint", client.current())
        info = lease_info(on_last, keeper.id)
        check(info.instance == keeper.instance and info.health.status == SERVING, info)

    # Still alive and leading several ttls later, on the last instance.
    stays_confirmed(keeper, 3 * TTL_MS / 1000, "on the last instance")
    eventually(lambda: elector.leading() == (first.term, first.fencing_token), "still leading the same term")
    check(on_last.leader("py-failover").candidate_id == "only", "still the leader")
    elector.resign()
    keeper.revoke()
    expect_error(lambda: on_last.time_to_live(keeper.id), grpc.StatusCode.NOT_FOUND)
    client.close()
    on_last.close()


def scenario_lock_crash(endpoints: list) -> None:
    """The instance serving a waiting lock() is killed (cue kill-first): lock() releases the
    request it left queued under the lease, retries on the other instance, and gets the key
    once its holder lets go, leaving no orphan hold."""
    check(len(endpoints) == 2, "lock_crash needs two endpoints", endpoints)
    client = Client(endpoints)
    keeper = LeaseKeeper(client, "py-lock-crash", ttl_ms=5000)
    on_second = Client(endpoints[1:])
    holder = LeaseKeeper(on_second, "py-lock-holder", ttl_ms=5000)
    held = lock(on_second, holder, ["crash-1", "crash-2"], timeout=2)
    got = {}

    def acquire():
        try:
            got["guard"] = lock(client, keeper, ["crash-2", "crash-1"])
        except Exception as error:  # reported by the checks below
            got["error"] = error

    waiter = threading.Thread(target=acquire, daemon=True)
    waiter.start()
    eventually(lambda: any(k.waiters == 1 for k in on_second.holders("crash-1")), "the request is queued")
    cue("kill-first")
    time.sleep(1.0)
    check(waiter.is_alive(), "lock() waits while the keys are held", got)
    held.unlock()
    waiter.join(15)
    check(not waiter.is_alive() and "guard" in got, "lock() completed on the other instance", got)
    guard = got["guard"]
    bindings = on_second.time_to_live(keeper.id).bindings
    handles = {b.id for b in bindings if b.kind == lease_pb2.Binding.KIND_LOCK}
    check(handles == {guard.handle}, "no orphan hold is left", handles, guard)
    guard.unlock()
    print("  the orphan was released; the retry got the keys", flush=True)
    keeper.revoke()
    holder.revoke()
    client.close()
    on_second.close()


def scenario_tls(endpoints: list) -> None:
    """mTLS and a tenant: the certificates are in $ZKCOORD_TEST_TLS_DIR (ca.crt, client.crt,
    client.key); the instances serve mTLS with tenant "a" configured."""
    certs = pathlib.Path(os.environ["ZKCOORD_TEST_TLS_DIR"])
    ca = (certs / "ca.crt").read_bytes()
    tls = Tls(ca, (certs / "client.crt").read_bytes(), (certs / "client.key").read_bytes(), server_name="localhost")
    client = Client(endpoints, tls=tls, tenant="a")
    keeper = LeaseKeeper(client, "py-tls", ttl_ms=1000)
    stays_confirmed(keeper, 2.5, "heartbeats over mTLS")
    check(client.time_to_live(keeper.id).lease.owner == "py-tls", "the lease is in tenant a")
    with lock(client, keeper, ["k"], timeout=5) as guard:
        check(guard.token("k") > 0, "a fencing token")
    elector = LeaderElector(client, keeper, "py-tls-master", "only")
    expect_event(elector, BecameLeader)
    # The default tenant does not see tenant a's lease.
    default_tenant = Client(endpoints, tls=tls)
    expect_error(lambda: default_tenant.time_to_live(keeper.id), grpc.StatusCode.NOT_FOUND)
    # Without a client certificate, the handshake is refused.
    no_cert = Client(endpoints, tls=Tls(ca, server_name="localhost"), timeout=3)
    expect_error(lambda: no_cert.time_to_live(keeper.id), grpc.StatusCode.UNAVAILABLE)
    elector.resign()
    keeper.revoke()
    for c in (client, default_tenant, no_cert):
        c.close()


class Pump:
    """Takes a ShardMember's events in a thread, as an application does (so that, unless the
    member releases manually, revoked shards are released when the next event is asked for),
    and keeps them."""

    def __init__(self, member: ShardMember):
        self.member = member
        self.events: list = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.member.over:
            event = self.member.next_event(0.01)
            if event is not None:
                self.events.append(event)

    def revoked(self) -> set:
        return {(e.shard, e.epoch) for e in self.events if isinstance(e, Revoked)}

    def assigned(self) -> dict:
        """{shard: epoch} of the Assigned events, the last per shard."""
        return {e.shard: e.epoch for e in self.events if isinstance(e, Assigned)}


class Exclusive:
    """Samples the `owned()` of every member added, one after the other, every millisecond,
    until stopped, and fails on a shard valid for two members at once: member X's ownership
    sampled at t1 (valid until u1) and member Y's sampled later at t2 overlap when u1 > t2.
    Also checks that a shard's epoch grows whenever its owner changes."""

    def __init__(self):
        self.members: list = []
        self.samples = 0
        self.failure = None
        self._last: dict = {}  # shard -> (member id, epoch) last seen owning it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add(self, member: ShardMember) -> None:
        self.members = self.members + [member]

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                seen: dict = {}  # shard -> (member id, sampled at, valid until)
                for member in self.members:
                    at = time.monotonic()
                    for owned in member.owned():
                        check(at < owned.valid_until, "owned() past its validity", member.member_id, owned)
                        other = seen.get(owned.shard)
                        if other is not None:
                            check(
                                other[2] <= at,
                                f"shard {owned.shard} valid for {other[0]} (until {other[2]:.3f}) and {member.member_id} (at {at:.3f})",
                            )
                        seen[owned.shard] = (member.member_id, at, owned.valid_until)
                        last = self._last.get(owned.shard)
                        if last is not None and last[0] != member.member_id:
                            check(owned.epoch > last[1], f"shard {owned.shard} moved from {last} to {member.member_id} with epoch {owned.epoch}")
                        self._last[owned.shard] = (member.member_id, owned.epoch)
                self.samples += 1
                time.sleep(0.001)
        except AssertionError as error:
            self.failure = error

    def stop(self) -> int:
        """Stops sampling; raises the first failure; returns the number of samples."""
        self._stop.set()
        self._thread.join()
        if self.failure is not None:
            raise self.failure
        return self.samples


def counts(*members: ShardMember) -> list:
    return [len(m.owned()) for m in members]


def scenario_shards(endpoints: list) -> None:
    """ShardMember: one member owns every shard; a second gets half at once (the first
    released them automatically, with newer epochs for the mover); joins refused for another
    shard count or a taken member id; a manually releasing member that is drained keeps its
    shards handing off until it releases them, gets its share back when undrained, and leaves;
    the first instance is killed (cue kill-first) and nothing moves; a member whose heartbeats
    stop stops owning by its validity, and only then do its shards move. Every member's
    owned() is sampled all along: no shard valid for two members at once."""
    check(len(endpoints) == 2, "shards needs two endpoints", endpoints)
    ttl_ms = 2000
    ttl = ttl_ms / 1000
    n = 12
    group = "py-shards"
    on_a = Client(endpoints)  # the first instance, killed on the cue
    on_b = Client(list(reversed(endpoints)))
    lease_a = LeaseKeeper(on_a, "shard-a", ttl_ms)
    a = ShardMember(on_a, lease_a, group, "a", n)
    check(a.shard_count == n and a.group == group and a.member_id == "a", a)
    pump_a = Pump(a)
    exclusive = Exclusive()
    exclusive.add(a)
    eventually(lambda: len(a.owned()) == n, "a owns every shard")
    first = {o.shard: o.epoch for o in a.owned()}
    eventually(lambda: pump_a.assigned() == first, "the events say what a owns")
    beat = lease_a.last_confirmed()
    check(beat.names_group(group) and beat.owned_shards(group, "a") == first, beat)
    check(a.owns(3).epoch == first[3] and a.owns(3).valid_until <= time.monotonic() + ttl, a.owns(3))
    check(a.owns(n) is None, "no shard beyond the count")
    print(f"  a owns {n} shards, epochs {sorted(set(first.values()))}", flush=True)

    # Refused joins name nothing in the heartbeats; a release of a shard not being revoked
    # is refused (here with a wrong epoch, which gives nothing real up).
    lease_x = LeaseKeeper(on_b, "shard-x", ttl_ms)
    expect_error(lambda: ShardMember(on_b, lease_x, group, "x", n + 1), grpc.StatusCode.FAILED_PRECONDITION)
    expect_error(lambda: ShardMember(on_b, lease_x, group, "a", n), grpc.StatusCode.FAILED_PRECONDITION)
    expect_error(lambda: ShardMember(on_b, lease_x, group, "x", 0), grpc.StatusCode.INVALID_ARGUMENT)
    check(lease_x._named() == ((), ()), "refused joins name no group", lease_x._named())
    lease_x.revoke()
    expect_error(lambda: a.release([(0, first[0] + 1)]), grpc.StatusCode.FAILED_PRECONDITION)
    check(a.owns(0) is not None, "a still owns shard 0")

    # b joins through the other instance: half the shards move at once (released
    # automatically, not after a's validity ran out), with newer epochs; a keeps the others.
    lease_b = LeaseKeeper(on_b, "shard-b", ttl_ms)
    started = time.monotonic()
    b = ShardMember(on_b, lease_b, group, "b", n)
    pump_b = Pump(b)
    exclusive.add(b)
    eventually(lambda: counts(a, b) == [6, 6], "a and b own 6 each", timeout=10)
    took = time.monotonic() - started
    check(took < ttl, f"the handoff took {took:.3f} s: a released at once")
    moved = {o.shard: o.epoch for o in b.owned()}
    check(all(moved[s] > first[s] for s in moved), "moved shards have newer epochs", first, moved)
    check(len(set(moved.values())) == 1, "released together, assigned together with one epoch", moved)
    check({(s, first[s]) for s in moved} <= pump_a.revoked(), "a was told", pump_a.events)
    check(all(o.epoch == first[o.shard] for o in a.owned()), "a's other shards kept their epochs", a.owned())
    print(f"  b joined: 6 shards moved in {took:.3f} s", flush=True)

    # c releases manually. Drained, it is told to give its shards up and the heartbeats stop
    # listing them at once, but they move only when it releases them.
    lease_c = LeaseKeeper(on_a, "shard-c", ttl_ms)
    c = ShardMember(on_a, lease_c, group, "c", n, manual_release=True)
    pump_c = Pump(c)
    exclusive.add(c)
    eventually(lambda: counts(a, b, c) == [4, 4, 4], "4 each", timeout=10)
    held = {o.shard: o.epoch for o in c.owned()}
    on_b.drain(group, "c")
    eventually(lambda: set(held.items()) <= pump_c.revoked(), "c is told to give its shards up")
    eventually(lambda: not c.owned(), "c's heartbeats stop listing them")
    time.sleep(ttl / 4)
    check(counts(a, b) == [4, 4], "nothing moves before c releases", counts(a, b))
    table = on_b.shard_assignment(group)
    handing = {s for r in table.ranges if r.state == shards_pb2.SHARD_STATE_HANDING_OFF and r.owner == "c" for s in range(r.first, r.last + 1)}
    check(handing == set(held), "c's shards are handing off", table)
    released = time.monotonic()
    c.release(sorted(held.items()))
    eventually(lambda: counts(a, b) == [6, 6], "c's shards moved", timeout=ttl)
    took = time.monotonic() - released
    info = {m.member_id: m for m in on_b.shard_members(group).members}
    check(info["c"].drained and info["c"].owned == 0 and list(on_b.shard_members(group).drained) == ["c"], info)
    print(f"  c drained: its shards moved {took:.3f} s after its release", flush=True)
    on_b.undrain(group, "c")
    eventually(lambda: counts(a, b, c) == [4, 4, 4], "c gets its share back", timeout=10)
    check(c.leave(10), "c left")
    check(c.owned() == [], c)
    eventually(lambda: c.over, "c's events end")
    eventually(lambda: counts(a, b) == [6, 6], "a and b own everything again", timeout=10)
    check("c" not in {m.member_id for m in on_b.shard_members(group).members}, "c is no member")
    print("  c undrained, got 4 shards back, left", flush=True)

    # The first instance dies: memberships and assignments live in ZooKeeper; a's heartbeats
    # and Watch stream move to the other instance, and nothing moves.
    before = [{o.shard: o.epoch for o in m.owned()} for m in (a, b)]
    cue("kill-first")
    eventually(lambda: lease_a.instance != "" and on_a.current() == 1 and lease_a.is_confirmed(), "a's heartbeats moved", timeout=10)
    eventually(lambda: [{o.shard: o.epoch for o in m.owned()} for m in (a, b)] == before, "a and b own the same shards", timeout=10)
    events = len(pump_a.events)
    time.sleep(0.5)
    check(len(pump_a.events) == events, "no event after the move", pump_a.events[events:])
    print("  first instance killed: nothing moved", flush=True)

    # a's heartbeats stop (a stuck process): a stops owning by its last confirmed heartbeat's
    # send time + ttl, and its shards move only after that.
    lease_a.close()
    until = lease_a.last_confirmed().until
    eventually(lambda: not a.owned(), "a stops owning", timeout=ttl + 1)
    check(time.monotonic() >= until - 0.05 or not lease_a.is_confirmed(), "a owned until its validity ran out")
    eventually(lambda: len(b.owned()) == n, "b owns every shard", timeout=3 * ttl + 5)
    moved_at = time.monotonic()
    check(moved_at > until, "b got a's shards after a's validity ran out")
    print(f"  a's heartbeats stopped: b got its shards {moved_at - until:.2f} s after a's validity ran out", flush=True)
    samples = exclusive.stop()
    check(samples > 100, "sampled", samples)
    check(b.leave(10), "b left")
    lease_b.revoke()
    lease_c.revoke()
    a.close()
    print(f"  {samples} samples of every member's owned(): never two owners at once", flush=True)
    for client in (on_a, on_b):
        client.close()


SCENARIOS = {
    "lease": scenario_lease,
    "election": scenario_election,
    "transfer": scenario_transfer,
    "frozen": scenario_frozen,
    "lock": scenario_lock,
    "failover": scenario_failover,
    "lock_crash": scenario_lock_crash,
    "tls": scenario_tls,
    "shards": scenario_shards,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", required=True, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), required=True)
    args = parser.parse_args()
    endpoints = args.endpoints.split(",")
    for name in args.scenario:
        started = time.monotonic()
        print(f"scenario {name}", flush=True)
        SCENARIOS[name](endpoints)
        print(f"ok {name} ({time.monotonic() - started:.1f} s)", flush=True)
    print("python client checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
