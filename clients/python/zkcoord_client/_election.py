"""Leader election as a stream of events, with the lease's confirmation applied."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Iterator, Optional, Tuple, Union

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import ZkcoordError
from zkcoord_client._lease import LOST, LeaseKeeper, LeaseStatus
from zkcoord_client._pb import election_pb2, election_pb2_grpc


@dataclasses.dataclass(frozen=True)
class BecameLeader:
    """This candidate leads `term`; pass `fencing_token` to whatever it writes."""

    term: int
    fencing_token: int


@dataclasses.dataclass(frozen=True)
class LostLeadership:
    """This candidate must stop acting as leader now. `reason` is one of:

    * zkcoord deposed it: "resigned", "lease-expired", "preempted", "unhealthy",
      "transferred" (or "deposed" for a reason this client does not know);
    * "unconfirmed": the serving instance cannot confirm the leadership right now (it lost
      ZooKeeper);
    * "lease-unconfirmed": the lease is not confirmed any more (heartbeats unanswered past its
      ttl, or its stream is moving);
    * "lease-lost": the lease has ended;
    * "stream-broken": the Campaign stream broke; the elector campaigns again elsewhere;
    * "closed": `LeaderElector.close()` stopped following the election.
    """

    reason: str


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


class LeaderElector:
    """A candidacy in `election`, bound to `lease`, and the events of its leadership.

    The constructor campaigns (on the current endpoint, then the next ones while they answer
    UNAVAILABLE) and raises ZkcoordError when the campaign is refused (INVALID_ARGUMENT,
    FAILED_PRECONDITION for another preemption policy or a candidate id taken by another
    lease, ...). A background thread then follows the Campaign stream, campaigning again on
    the next endpoint when it breaks (the same candidacy comes back).

    This candidate leads only while the Campaign stream says ELECTED **and** the lease is
    confirmed: `is_leader()` applies that rule at every call, and the events (`BecameLeader`,
    `LostLeadership`, see `next_event()` and iteration) report it — a loss at the latest when
    the lease's confirmation runs out, before zkcoord could have elected anyone else.

    `priority`: 0 (best) to 1000. `value`: what others see while it leads (e.g. its address).
    `preempt`: True/False require preemption on/off (the election's first campaign chooses);
    None accepts the election's policy. Closing the elector (or dropping it) stops following
    the election; the candidacy itself lives with the lease until `resign()`.
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
    ):
        if isinstance(value, str):
            value = value.encode("utf-8")
        self._client = client
        self._lease = lease
        self._key = election_pb2.CandidateKey(election=election, candidate_id=candidate_id, lease=lease.lease_ref())
        self._request = election_pb2.CampaignRequest(key=self._key, value=value, priority=priority, preempt=_PREEMPT[preempt])
        self._lock = threading.Lock()
        self._inbox: queue.Queue = queue.Queue()
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._over = threading.Event()
        self._leading: Optional[Tuple[int, int]] = None  # what is_leader() reports, with the lease rule on top
        self._elected: Optional[Tuple[int, int]] = None  # what the Campaign stream last said
        self._generation = 0
        self._call = None
        first = self._first_campaign()
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

    def leading(self) -> Optional[Tuple[int, int]]:
        """(term, fencing token) while this candidate may act as leader, else None."""
        with self._lock:
            leading = self._leading
        return leading if leading is not None and self._lease.is_confirmed() else None

    def is_leader(self) -> bool:
        """Whether this candidate may act as leader now (ELECTED and the lease confirmed)."""
        return self.leading() is not None

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

    def resign(self) -> None:
        """Withdraws the candidacy (a leader steps down; the next candidate is elected). A
        leader stops leading before the call is sent and gets LostLeadership("resigned").

        Raises ZkcoordError with the Resign call's status."""
        self._stop_following()
        self._lose("resigned")
        request = election_pb2.ResignRequest(key=self.candidate_key())
        try:
            self._client.retrying(lambda ch: election_pb2_grpc.ElectionStub(ch).Resign(request, timeout=self._client.timeout))
        finally:
            self._finish()

    def transfer(self, target: Optional[str] = None) -> election_pb2.LeaderInfo:
        """Hands leadership to candidate `target` (or the next eligible one when None), if
        this candidate leads; returns the new leader once it is elected. This candidate hears
        LostLeadership("transferred") first.

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
        """Stops following the election (the candidacy lives on with the lease); a leader
        stops leading (LostLeadership("closed"))."""
        self._stop_following()
        self._lose("closed")
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

    def _stop_following(self) -> None:
        self._stop.set()
        self._inbox.put(("stop",))
        call = self._call
        if call is not None:
            call.cancel()
        self._lease.unsubscribe(self._on_lease)
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _finish(self) -> None:
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
        finally:
            if self._over.is_set() or not self._stop.is_set():
                self._finish()

    def _follow(self, first) -> None:
        if first is not None and self._on_status(first) == _OVER:
            return
        at = self._client.current()
        while not self._stop.is_set():
            status = self._apply_lease()
            if status is None:
                return
            # Wake up when the confirmation runs out, if nothing else happens first.
            confirmed = status.confirmed_now()
            wait = (status.until - time.monotonic() + 0.001) if confirmed else 1.0
            try:
                item = self._inbox.get(timeout=max(0.0, wait))
            except queue.Empty:
                continue
            if item[0] == "stop":
                return
            # A confirmation that ran out while this thread waited is reported first.
            if self._apply_lease() is None:
                return
            if item[0] == "lease" or item[0] != self._generation:
                continue
            _, kind, value = item
            if kind == "status":
                if self._on_status(value) == _OVER:
                    return
                continue
            # The stream broke, or could not be opened.
            if kind == "error" and value.code() == grpc.StatusCode.NOT_FOUND:
                self._lose("lease-lost")
                return
            self._elected = None
            self._lose("stream-broken")
            at = self._client.rotate(at)
            if self._stop.wait(0.1):
                return
            self._open(at)

    def _apply_lease(self) -> Optional[LeaseStatus]:
        """Applies the lease's status to what the Campaign stream said; None once the lease
        is lost."""
        status = self._lease.status()
        if status.state == LOST:
            self._lose("lease-lost")
            return None
        if self._elected is not None:
            if status.confirmed_now():
                self._lead(self._elected)
            else:
                self._lose("lease-unconfirmed")
        return status

    def _on_status(self, status: election_pb2.CampaignResponse) -> Optional[str]:
        """Applies one Campaign status; _OVER when the candidacy has ended."""
        state = status.state
        if state == election_pb2.CANDIDATE_STATE_ELECTED:
            self._elected = (status.term, status.fencing_token)
            if self._lease.is_confirmed():
                self._lead(self._elected)
        elif state == election_pb2.CANDIDATE_STATE_UNCONFIRMED:
            self._elected = None
            self._lose("unconfirmed")
        elif state == election_pb2.CANDIDATE_STATE_DEPOSED:
            self._elected = None
            reason = _DEPOSED_REASONS.get(status.reason, "deposed")
            self._lose(reason)
            if reason in _FINAL_REASONS:
                return _OVER
        else:  # QUEUED
            self._elected = None
            self._lose("stream-broken")
        return None

    def _lead(self, elected: Tuple[int, int]) -> None:
        with self._lock:
            if self._leading == elected or self._stop.is_set():
                return
            self._leading = elected
            self._events.put(BecameLeader(term=elected[0], fencing_token=elected[1]))

    def _lose(self, reason: str) -> None:
        with self._lock:
            if self._leading is None:
                return
            self._leading = None
            self._events.put(LostLeadership(reason=reason))
