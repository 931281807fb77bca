"""Leader election as a stream of events, held to the rule that the lease's confirmed
heartbeats are the authority."""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from typing import Iterator, Optional, Set, Tuple, Union

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import ZkcoordError
from zkcoord_client._lease import CONFIRMED, LOST, LeaseKeeper, LeaseStatus
from zkcoord_client._pb import election_pb2, election_pb2_grpc

_log = logging.getLogger("zkcoord_client")


@dataclasses.dataclass(frozen=True)
class BecameLeader:
    """This candidate leads `term`; pass `fencing_token` to whatever it writes, and check
    `LeaderElector.leadership()` right before each action."""

    term: int
    fencing_token: int


@dataclasses.dataclass(frozen=True)
class LostLeadership:
    """This candidate must stop acting as leader (of `term`) now. `reason` is one of:

    * zkcoord deposed it: "resigned", "lease-expired", "preempted", "unhealthy",
      "transferred" (or "deposed" for a reason this client does not know);
    * "unconfirmed": a confirmed heartbeat answer no longer lists the leadership;
    * "lease-unconfirmed": the last confirmed heartbeat's validity ran out (send time +
      ttl), or an answer was not confirmed (the lease's stream is moving, or its instance
      lost ZooKeeper); the leadership comes back with the next confirmed answer listing it;
    * "lease-lost": the lease has ended;
    * "closed": `LeaderElector.close()` stopped following the election.

    ("stream-broken" is no longer reported: a broken Campaign stream does not end a
    leadership, the heartbeats are the authority.)
    """

    reason: str
    term: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class Leadership:
    """A leadership this candidate may act on, and until when.

    `valid_until` is a `time.monotonic()` instant: the send time of the confirmed heartbeat
    whose answer listed the leadership + the lease's granted ttl. Stop acting by then at the
    latest (the next confirmed heartbeat usually moves it on)."""

    term: int
    fencing_token: int
    valid_until: float

    def remaining(self) -> float:
        """Seconds left until `valid_until` (0 when it has passed)."""
        return max(0.0, self.valid_until - time.monotonic())


LeadershipEvent = Union[BecameLeader, LostLeadership]

_DEPOSED_REASONS = {
    election_pb2.DEPOSED_REASON_RESIGNED: "resigned",
    election_pb2.DEPOSED_REASON_LEASE_EXPIRED: "lease-expired",
    election_pb2.DEPOSED_REASON_PREEMPTED: "preempted",
    election_pb2.DEPOSED_REASON_UNHEALTHY: "unhealthy",
    election_pb2.DEPOSED_REASON_TRANSFERRED: "transferred",
}
_FINAL_REASONS = ("resigned", "lease-expired")
_PREEMPT = {None: election_pb2.PREEMPT_POLICY_UNSPECIFIED, True: election_pb2.PREEMPT_POLICY_ON, False: election_pb2.PREEMPT_POLICY_OFF}
_END = object()  # closes the events queue
_OVER = "over"  # the candidacy ended
# How long a background acknowledgement is retried at most, beyond the lease's ttl (zkcoord
# completes an unacknowledged deposition after the ttl + about a second anyway).
_ACK_PATIENCE = 5.0
# When to look again while nothing happens and nothing runs out.
_IDLE_WAIT = 1.0


class LeaderElector:
    """A candidacy in `election`, bound to `lease`, and the events of its leadership.

    The constructor campaigns (on the current endpoint, then the next ones while they answer
    UNAVAILABLE) and raises ZkcoordError when the campaign is refused (INVALID_ARGUMENT,
    FAILED_PRECONDITION for another preemption policy or a candidate id taken by another
    lease, ...). A background thread then follows the Campaign stream, campaigning again on
    the next endpoint when it breaks (the same candidacy comes back).

    The safety rule: this candidate leads only while the lease's **last confirmed heartbeat**
    listed the leadership (the keeper names this election in every heartbeat), and only until
    that heartbeat's send time + the lease's granted ttl, on this process's monotonic clock.
    `leadership()` applies it at every call (and `leading()` / `is_leader()` on top of it);
    check it right before each action and pass its fencing token along. The events
    (`BecameLeader`, `LostLeadership`, see `next_event()` and iteration) report its changes,
    including a validity that runs out with no message at all (a timer).

    The Campaign stream only notifies: ELECTED makes the keeper send a heartbeat at once (to
    get the listing quickly); DEPOSED (other than resigned / lease-expired) gives that term up
    here first — it is never acted on again, even if a late answer lists it — and is then
    acknowledged to zkcoord (Resign with `stay_candidate`, retried in the background), so that
    the successor is elected at once instead of after this leadership's validity surely ran
    out (the ttl + about a second). A confirmed heartbeat that names the election but no longer
    lists a leadership held ends it at once: the term is given up and acknowledged the same
    way (its DEPOSED may never come, e.g. from a frozen instance).

    Automatic acknowledgement assumes that the application checks `leadership()` right before
    each action (so it has stopped when the leadership ends here). An application that needs
    time to stop (e.g. to finish or abort work in flight) passes `auto_acknowledge=False` and
    calls `acknowledge(event.term)` once it has stopped, after a `LostLeadership`; without it
    the successor waits for this term's validity to run out.

    `priority`: 0 (best) to 1000. `value`: what others see while it leads (e.g. its address).
    `preempt`: True/False require preemption on/off (the election's first campaign chooses);
    None accepts the election's policy. Health hysteresis (seconds, 0 to 3600; default 0: at
    once): `unhealthy_for` is how long zkcoord must have seen the lease NOT_SERVING before it
    deposes this candidate as leader for it; `healthy_for` is how long it must have seen it
    eligible before this candidate preempts a worse-priority leader. Closing the elector stops
    following the election; the candidacy itself lives with the lease until `resign()`.
    """

    def __init__(
        self,
        client: Client,
        lease: LeaseKeeper,
        election: str,
        candidate_id: str,
        *,
        priority: int = 0,
        value: Union[bytes, str] = b"",
        preempt: Optional[bool] = None,
        unhealthy_for: float = 0.0,
        healthy_for: float = 0.0,
        auto_acknowledge: bool = True,
    ):
        if isinstance(value, str):
            value = value.encode("utf-8")
        self._client = client
        self._lease = lease
        self._auto_acknowledge = auto_acknowledge
        self._key = election_pb2.CandidateKey(election=election, candidate_id=candidate_id, lease=lease.lease_ref())
        self._request = election_pb2.CampaignRequest(
            key=self._key,
            value=value,
            priority=priority,
            preempt=_PREEMPT[preempt],
            unhealthy_for_ms=round(unhealthy_for * 1000),
            healthy_for_ms=round(healthy_for * 1000),
        )
        self._lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._over = threading.Event()
        self._named = False
        # Terms up to this one were given up (deposed, acknowledged, resigned, closed): a late
        # heartbeat answer listing one of them is not acted on.
        self._renounced = 0
        # Terms given up by acknowledge() while zkcoord has not answered: given up for good
        # when it accepts, taken back when it answers that the term still leads undeposed.
        self._pending: Set[int] = set()
        self._leading: Optional[Tuple[int, int]] = None  # the leadership last reported
        self._deposed: Optional[str] = None  # why the last term ended, when a DEPOSED said so
        self._generation = 0
        self._call = None
        lease._name(election)
        self._named = True
        try:
            first = self._first_campaign()
        except BaseException:
            self._unname()
            raise
        lease.subscribe(self._on_lease)
        self._thread = threading.Thread(target=self._run, args=(first,), name=f"zkcoord-elector-{candidate_id}", daemon=True)
        self._thread.start()

    @property
    def election(self) -> str:
        """The election's name."""
        return self._key.election

    @property
    def candidate_id(self) -> str:
        """This candidate's id."""
        return self._key.candidate_id

    def candidate_key(self) -> election_pb2.CandidateKey:
        """The candidacy as a zkcoord.v1.CandidateKey, for raw calls."""
        return election_pb2.CandidateKey(election=self._key.election, candidate_id=self._key.candidate_id, lease=self._lease.lease_ref())

    def leadership(self) -> Optional[Leadership]:
        """The leadership this candidate may act on now (term, fencing token, valid until),
        or None: the safety rule. Check it right before each action; it can end (by time)
        before an event says so."""
        now = time.monotonic()
        status = self._lease.status()
        if status.state != CONFIRMED or status.until is None or now >= status.until:
            return None
        beat = self._lease.last_confirmed()
        if now >= beat.until or not beat.names(self._key.election):
            return None
        listed = beat.leadership(self._key.election, self._key.candidate_id)
        if listed is None:
            return None
        with self._lock:
            if self._stop.is_set() or listed.term <= self._renounced or listed.term in self._pending:
                return None
        return Leadership(term=listed.term, fencing_token=listed.fencing_token, valid_until=beat.until)

    def leading(self) -> Optional[Tuple[int, int]]:
        """(term, fencing token) while this candidate may act as leader, else None."""
        leadership = self.leadership()
        return None if leadership is None else (leadership.term, leadership.fencing_token)

    def is_leader(self) -> bool:
        """Whether this candidate may act as leader now (see `leadership()`)."""
        return self.leadership() is not None

    def next_event(self, timeout: Optional[float] = None) -> Optional[LeadershipEvent]:
        """The next event, waiting up to `timeout` seconds (None: as long as it takes).
        None on timeout, or once the candidacy has ended and every event was taken."""
        if self._over.is_set() and self._events.empty():
            return None
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is _END:
            self._events.put(_END)  # for later callers
            return None
        return event

    def __iter__(self) -> Iterator[LeadershipEvent]:
        """The events, until the candidacy ends (resigned, lease ended)."""
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    @property
    def over(self) -> bool:
        """Whether the candidacy has ended (resigned, lease expired or lost)."""
        return self._over.is_set()

    def acknowledge(self, term: int) -> None:
        """Tells zkcoord that this candidate has stopped acting as leader of `term` (Resign
        with `stay_candidate`): a deposition from `term` completes at once (the successor is
        elected). The term is given up here first and never acted on again. For applications
        that turned automatic acknowledgement off, after a `LostLeadership` (its `term`).

        Raises ZkcoordError: FAILED_PRECONDITION when the candidacy still leads `term`
        undeposed (then it is not given up: use `resign()` to step down); UNAVAILABLE when no
        instance answered (the term stays given up)."""
        with self._lock:
            tentative = term > self._renounced and term not in self._pending
            if tentative:
                self._pending.add(term)
        try:
            self._client.retrying(lambda ch: self._step_down(ch, term))
        except ZkcoordError as error:
            self._settle(term, tentative, error.code)
            raise
        self._settle(term, tentative, grpc.StatusCode.OK)

    def resign(self) -> None:
        """Withdraws the candidacy (a leader steps down; the next candidate is elected). A
        leader stops leading before the call is sent and gets LostLeadership("resigned").

        Raises ZkcoordError with the Resign call's status."""
        self._stop_following()
        self._report("resigned")
        request = election_pb2.ResignRequest(key=self.candidate_key())
        try:
            self._client.retrying(lambda ch: election_pb2_grpc.ElectionStub(ch).Resign(request, timeout=self._client.timeout))
        finally:
            self._finish()

    def transfer(self, target: Optional[str] = None) -> election_pb2.LeaderInfo:
        """Hands leadership to candidate `target` (or the next eligible one when None), if
        this candidate leads; returns the new leader once it is elected. This candidate's
        leadership ends when zkcoord deposes it (LostLeadership("transferred"), acknowledged
        at once unless automatic acknowledgement is off).

        Raises ZkcoordError: FAILED_PRECONDITION when it does not lead or the target is not
        eligible."""
        leading = self.leading()
        request = election_pb2.TransferRequest(
            election=self._key.election,
            target_candidate_id=target or "",
            term=leading[0] if leading else 0,
            **{"from": self.candidate_key()},
        )
        response = self._client.retrying(lambda ch: election_pb2_grpc.ElectionStub(ch).Transfer(request, timeout=self._client.timeout))
        return response.leader

    def close(self) -> None:
        """Stops following the election (the candidacy lives on with the lease, and the
        heartbeats stop naming the election); a leader stops leading
        (LostLeadership("closed"))."""
        self._stop_following()
        self._report("closed")
        self._finish()

    def __enter__(self) -> "LeaderElector":
        return self

    def __exit__(self, *exc) -> None:
        if self._over.is_set():
            return
        try:
            self.resign()
        except ZkcoordError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise

    def __repr__(self) -> str:
        return f"LeaderElector(election={self.election!r}, candidate_id={self.candidate_id!r}, leading={self.leading()})"

    # Internals.

    def _unname(self) -> None:
        with self._lock:
            named, self._named = self._named, False
        if named:
            self._lease._forget(self._key.election)

    def _stop_following(self) -> None:
        with self._lock:
            self._stop.set()  # leadership() is None from now on
            self._renounced = math.inf
        self._inbox.put(("stop",))
        call = self._call
        if call is not None:
            call.cancel()
        self._lease.unsubscribe(self._on_lease)
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _finish(self) -> None:
        self._unname()
        if not self._over.is_set():
            self._over.set()
            self._lease.unsubscribe(self._on_lease)
            self._events.put(_END)

    def _on_lease(self, status: LeaseStatus) -> None:
        self._inbox.put(("lease",))

    def _open(self, at: int) -> int:
        """Opens a Campaign stream on endpoint `at`; its messages arrive in the inbox tagged
        with the returned generation."""
        self._generation += 1
        generation = self._generation
        call = election_pb2_grpc.ElectionStub(self._client.channel(at)).Campaign(self._request)
        self._call = call
        inbox = self._inbox

        def read():
            try:
                for status in call:
                    inbox.put((generation, "status", status))
                inbox.put((generation, "end", None))
            except grpc.RpcError as error:
                inbox.put((generation, "error", error))

        threading.Thread(target=read, name=f"zkcoord-campaign-{self._key.candidate_id}", daemon=True).start()
        return generation

    def _first_campaign(self):
        """Campaigns until the first status arrives; raises when the campaign is refused."""
        at = self._client.current()
        last = None
        for _ in range(len(self._client.endpoints)):
            generation = self._open(at)
            deadline = time.monotonic() + self._client.timeout
            while True:
                try:
                    item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    return None  # no status yet: the thread goes on waiting for it
                if item[0] != generation:
                    continue
                _, kind, value = item
                if kind == "status":
                    return value
                break
            if kind == "error" and value.code() != grpc.StatusCode.UNAVAILABLE:
                raise ZkcoordError.from_rpc(value) from None
            last = value if kind == "error" else last
            at = self._client.rotate(at)
        if last is not None:
            raise ZkcoordError.from_rpc(last) from None
        raise ZkcoordError(grpc.StatusCode.UNAVAILABLE, "no zkcoord instance took the campaign")

    def _run(self, first) -> None:
        try:
            self._follow(first)
        except BaseException:  # noqa: BLE001 - never leave a leadership reported after a crash
            _log.exception("zkcoord elector %s/%s failed", self._key.election, self._key.candidate_id)
            with self._lock:
                self._stop.set()
                self._renounced = math.inf
            self._report("closed")
            self._finish()
            raise
        if self._over.is_set() or not self._stop.is_set():
            self._finish()

    def _follow(self, first) -> None:
        """Follows the Campaign stream (re-campaigning elsewhere when it breaks) together
        with the lease's heartbeats, until the candidacy ends or the elector stops."""
        if first is not None and self._on_status(first) == _OVER:
            return
        at = self._client.current()
        reopen_at: Optional[float] = None  # when to campaign again after a broken stream
        while not self._stop.is_set():
            if self._lease.status().state == LOST:
                self._report("lease-lost")
                return
            self._report(None)
            now = time.monotonic()
            leadership = self.leadership()
            wake = now + _IDLE_WAIT if leadership is None else leadership.valid_until + 0.001
            if reopen_at is not None:
                if now >= reopen_at:
                    reopen_at = None
                    self._open(at)
                    continue
                wake = min(wake, reopen_at)
            try:
                item = self._inbox.get(timeout=max(0.0, wake - now))
            except queue.Empty:
                continue  # a validity ran out, or time to campaign again
            if item[0] == "stop":
                return
            if item[0] == "lease" or item[0] != self._generation:
                continue
            _, kind, value = item
            if kind == "status":
                if self._on_status(value) == _OVER:
                    return
                continue
            # The stream broke, or could not be opened: campaign again elsewhere (the
            # leadership, if any, lives on with the heartbeats).
            if kind == "error" and value.code() == grpc.StatusCode.NOT_FOUND:
                self._report("lease-lost")
                return
            at = self._client.rotate(at)
            reopen_at = time.monotonic() + 0.1

    def _on_status(self, status: election_pb2.CampaignResponse) -> Optional[str]:
        """Applies one Campaign status; _OVER when the candidacy has ended."""
        state = status.state
        if state == election_pb2.CANDIDATE_STATE_ELECTED:
            # Only a confirmed heartbeat listing it makes it a leadership: ask for one now.
            self._lease.beat_now()
        elif state == election_pb2.CANDIDATE_STATE_DEPOSED:
            reason = _DEPOSED_REASONS.get(status.reason, "deposed")
            # Give the term up here first, then tell zkcoord (the successor is elected on that
            # acknowledgement instead of after this term's validity runs out).
            with self._lock:
                self._deposed = reason
                self._renounced = max(self._renounced, status.term)
            self._report(reason)
            if reason in _FINAL_REASONS:
                return _OVER
            if self._auto_acknowledge and status.term > 0:
                self._acknowledge_in_background(status.term)
        # UNCONFIRMED, QUEUED: nothing to do; the heartbeats decide.
        return None

    def _report(self, loss: Optional[str]) -> None:
        """Reports a change of leadership against the rule; `loss` is the reason to give if
        it ended (the rule's own reason otherwise)."""
        now = self.leading()
        withdrawn = None
        with self._lock:
            if now == self._leading:
                return
            previous, self._leading = self._leading, now
            if previous is not None and self._withdrawn(previous[0]):
                # zkcoord no longer lists it: deposed (its DEPOSED may never come, e.g. from a
                # frozen instance) or ended. Give it up for good, and say so below.
                self._renounced = max(self._renounced, previous[0])
                withdrawn = previous[0]
            if previous is not None:
                reason = loss or self._deposed or ("unconfirmed" if self._lease.is_confirmed() else "lease-unconfirmed")
                self._events.put(LostLeadership(reason=reason, term=previous[0]))
            if now is not None:
                self._deposed = None
                self._events.put(BecameLeader(term=now[0], fencing_token=now[1]))
        if withdrawn is not None and self._auto_acknowledge and not self._stop.is_set():
            self._acknowledge_in_background(withdrawn)

    def _withdrawn(self, term: int) -> bool:
        """Whether the last confirmed heartbeat, still valid, named this election without
        listing `term` for this candidate: zkcoord withdrew that leadership."""
        beat = self._lease.last_confirmed()
        if time.monotonic() >= beat.until or not beat.names(self._key.election):
            return False
        listed = beat.leadership(self._key.election, self._key.candidate_id)
        return listed is None or listed.term != term

    def _step_down(self, channel: grpc.Channel, term: int) -> None:
        request = election_pb2.ResignRequest(key=self.candidate_key(), term=term, stay_candidate=True)
        election_pb2_grpc.ElectionStub(channel).Resign(request, timeout=self._client.timeout)

    def _settle(self, term: int, tentative: bool, code: grpc.StatusCode) -> None:
        """Records zkcoord's answer to acknowledge(term); `tentative` when that call gave the
        term up (it was not given up before)."""
        with self._lock:
            if code == grpc.StatusCode.OK:
                self._renounced = max(self._renounced, term)
                self._pending.discard(term)
            elif tentative and code == grpc.StatusCode.FAILED_PRECONDITION:
                # It still leads that term undeposed (acknowledged too early): a confirmed
                # answer that lists it may be acted on again.
                self._pending.discard(term)
            # Otherwise (no answer): the term stays given up.
        self._inbox.put(("lease",))  # report the change, if any

    def _acknowledge_in_background(self, term: int) -> None:
        """Tells zkcoord, in a background thread and retrying (while no instance answers, up
        to the ttl + 5 s), that this candidate stopped leading `term`, already given up here
        (Resign with `stay_candidate`)."""
        deadline = time.monotonic() + self._lease.ttl_ms / 1000 + _ACK_PATIENCE

        def run() -> None:
            at = self._client.current()
            pause = 0.05
            while True:
                try:
                    self._step_down(self._client.channel(at), term)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    code = error.code()
                except Exception as error:  # noqa: BLE001 - e.g. the client was closed
                    _log.debug("deposition of term %s not acknowledged: %s", term, error)
                    code = grpc.StatusCode.CANCELLED
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or time.monotonic() >= deadline:
                    break
                at = self._client.rotate(at)
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
            if code != grpc.StatusCode.OK:
                _log.debug("deposition of term %s not acknowledged (%s); the successor waits for its validity to run out", term, code)

        threading.Thread(target=run, name=f"zkcoord-ack-{self._key.candidate_id}-{term}", daemon=True).start()
