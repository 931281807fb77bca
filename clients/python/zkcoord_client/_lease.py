"""A lease kept alive in a background thread, with health checks riding on its heartbeats."""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import ZkcoordError
from zkcoord_client._pb import common_pb2, lease_pb2, lease_pb2_grpc

#: A health check: returns None or True when OK; returns an error string (or False), or
#: raises, when failing.
Check = Callable[[], object]

CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"
LOST = "lost"

_MAX_MESSAGE_BYTES = 256


@dataclasses.dataclass(frozen=True)
class LeaseStatus:
    """What the keeper knows about its lease.

    * `state == "confirmed"`: zkcoord confirmed the lease until `until`, a `time.monotonic()`
      instant (send time of the last confirmed heartbeat + the granted ttl). It silently stops
      being true at `until`: use `LeaseKeeper.is_confirmed()` / `valid_until()`.
    * `state == "unconfirmed"`: zkcoord cannot vouch for the lease right now (the stream is
      moving, or the instance lost ZooKeeper); the lease may still be alive.
    * `state == "lost"`: the lease has ended. Final.
    """

    state: str
    until: Optional[float] = None

    def confirmed_now(self) -> bool:
        """Whether this status confirms the lease at this moment."""
        return self.state == CONFIRMED and self.until is not None and time.monotonic() < self.until

    def __str__(self) -> str:
        if self.state == CONFIRMED and self.until is not None:
            return f"confirmed for {max(0.0, self.until - time.monotonic()) * 1000:.0f} ms"
        return self.state


@dataclasses.dataclass(frozen=True)
class ConfirmedBeat:
    """The answer to the lease's last confirmed heartbeat: the authority for every ownership
    (see the package's safety rule).

    * `until`: the heartbeat's send time + the lease's granted ttl, a `time.monotonic()`
      instant: nothing this heartbeat covered may be acted on from then on;
    * `elections`: the elections the heartbeat named;
    * `leaderships`: the leaderships its answer listed (zkcoord.v1.Leadership: `election`,
      `candidate_id`, `term`, `fencing_token`), among `elections`;
    * `shard_groups`: the shard groups the heartbeat named;
    * `shards`: the shard ownerships its answer listed (zkcoord.v1.ShardOwnership: `group`,
      `member_id`, `ranges` of `first`, `last`, `epoch`), in `shard_groups`.
    """

    until: float
    elections: Tuple[str, ...] = ()
    leaderships: Tuple[lease_pb2.Leadership, ...] = ()
    shard_groups: Tuple[str, ...] = ()
    shards: Tuple[lease_pb2.ShardOwnership, ...] = ()

    def names(self, election: str) -> bool:
        """Whether the heartbeat named `election`."""
        return election in self.elections

    def names_group(self, group: str) -> bool:
        """Whether the heartbeat named shard group `group`."""
        return group in self.shard_groups

    def owned_shards(self, group: str, member_id: str) -> Dict[int, int]:
        """The shards the answer listed for `member_id` in `group`, as {shard: epoch}."""
        owned: Dict[int, int] = {}
        for listed in self.shards:
            if listed.group == group and listed.member_id == member_id:
                for run in listed.ranges:
                    for shard in range(run.first, run.last + 1):
                        owned[shard] = run.epoch
        return owned

    def leadership(self, election: str, candidate_id: str) -> Optional[lease_pb2.Leadership]:
        """The listed leadership of `candidate_id` in `election`, if any."""
        for listed in self.leaderships:
            if listed.election == election and listed.candidate_id == candidate_id:
                return listed
        return None


#: How long heartbeats may go unconfirmed on one instance before the keeper moves to another,
#: as a fraction of the ttl: long enough not to move during a ZooKeeper leader election (every
#: instance answers unconfirmed then), short enough to move before the last confirmation runs
#: out.
UNCONFIRMED_PATIENCE_DIVISOR = 3


def _truncate(message: str) -> str:
    return message.encode("utf-8")[:_MAX_MESSAGE_BYTES].decode("utf-8", "ignore")


def _outcome(result: object) -> Optional[str]:
    """None for a passing check, else why it fails."""
    if result is None or result is True:
        return None
    if result is False:
        return "check failed"
    if isinstance(result, str):
        return result or "check failed"
    return repr(result)


class _Checks:
    """Runs the health checks, each in its own thread, each bounded by a timeout. A check
    still running from an earlier heartbeat is not started again; it counts as failing."""

    def __init__(self, checks: Mapping[str, Check]):
        self._checks = list(checks.items())
        self._running: Dict[str, threading.Thread] = {}

    def run(self, timeout: float) -> common_pb2.Health:
        if not self._checks:
            return common_pb2.Health(status=common_pb2.HEALTH_STATUS_SERVING)
        started = []
        outcomes: Dict[str, Optional[str]] = {}
        for name, check in self._checks:
            previous = self._running.get(name)
            if previous is not None and previous.is_alive():
                outcomes[name] = f"no answer within {timeout * 1000:.0f} ms"
                continue
            box: dict = {}

            def run_one(check=check, box=box):
                try:
                    box["outcome"] = _outcome(check())
                except BaseException as error:  # noqa: BLE001 - a failing check, whatever it raised
                    box["outcome"] = f"{type(error).__name__}: {error}"

            thread = threading.Thread(target=run_one, name=f"zkcoord-check-{name}", daemon=True)
            thread.start()
            self._running[name] = thread
            started.append((name, thread, box))
        deadline = time.monotonic() + timeout
        for name, thread, box in started:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive() or "outcome" not in box:
                outcomes[name] = f"no answer within {timeout * 1000:.0f} ms"
            else:
                outcomes[name] = box["outcome"]
        checks = []
        for name, _ in self._checks:
            why = outcomes[name]
            if why is None:
                checks.append(common_pb2.HealthCheck(name=name, status=common_pb2.HEALTH_STATUS_SERVING))
            else:
                checks.append(
                    common_pb2.HealthCheck(
                        name=name, status=common_pb2.HEALTH_STATUS_NOT_SERVING, message=_truncate(why)
                    )
                )
        serving = all(c.status == common_pb2.HEALTH_STATUS_SERVING for c in checks)
        status = common_pb2.HEALTH_STATUS_SERVING if serving else common_pb2.HEALTH_STATUS_NOT_SERVING
        return common_pb2.Health(status=status, checks=checks)


# How one KeepAlive stream ended.
_MOVE, _LOST, _STOPPED = "move", "lost", "stopped"


class LeaseKeeper:
    """Grants a lease and keeps it alive in a background thread until it is revoked or closed.

    One KeepAlive stream at a time carries a heartbeat every ttl/3 with the health checks'
    results (each check bounded by ttl/6; a failing or slow check makes the lease report
    NOT_SERVING, which deposes a leader but keeps the lease alive), the names of the
    elections its `LeaderElector`s campaign in and the names of the shard groups its
    `ShardMember`s belong to. When the stream breaks, or its answers stay `confirmed=false`
    for a third of the ttl, the keeper moves to the next endpoint; NOT_FOUND means the lease
    has ended (`status().state == "lost"`).

    Safety rule: act on what the lease covers only while its last confirmed heartbeat covered
    it, and only until that heartbeat's send time + the granted ttl (`valid_until()`; for a
    leadership use `LeaderElector.leadership()`, for a shard `ShardMember.owns()`). An
    unconfirmed answer suspends acting until the next confirmed one.

    `checks` maps check names (e.g. "database") to callables: None/True means OK; a string
    (the reason), False, or an exception means failing. `close()` stops the heartbeats (the
    lease then expires after its ttl); `revoke()` ends the lease at once. As a context manager
    the keeper revokes its lease on exit.
    """

    def __init__(
        self,
        client: Client,
        owner: str,
        ttl_ms: int,
        *,
        metadata: Optional[Mapping[str, str]] = None,
        checks: Optional[Mapping[str, Check]] = None,
    ):
        self._client = client
        self._checks = _Checks(checks or {})
        self._lock = threading.Lock()
        self._listeners: list = []
        self._stop = threading.Event()
        self._inbox: Optional[queue.Queue] = None
        self._call = None
        self._elections: collections.Counter = collections.Counter()  # named in every heartbeat
        self._shard_groups: collections.Counter = collections.Counter()  # named in every heartbeat
        self._beat_wanted = False  # a heartbeat asked for while no stream was open
        #: The health sent with the last heartbeat (zkcoord.v1.Health).
        self.last_health = self._checks.run(ttl_ms / 6000)
        request = lease_pb2.GrantRequest(ttl_ms=ttl_ms, owner=owner, metadata=dict(metadata or {}), health=self.last_health)
        sent = time.monotonic()
        # Repeated on UNAVAILABLE: a grant that happened anyway expires after its ttl, as
        # nobody keeps it alive.
        granted = client.retrying(lambda ch: lease_pb2_grpc.LeaseStub(ch).Grant(request, timeout=client.timeout))
        self._id = granted.lease_id
        self._secret = granted.secret
        self._ttl_ms = granted.ttl_ms
        self._owner = owner
        self._status = LeaseStatus(CONFIRMED, sent + granted.ttl_ms / 1000)
        self._last = ConfirmedBeat(sent + granted.ttl_ms / 1000)
        #: The id of the zkcoord instance that answered the last heartbeat.
        self.instance = granted.instance
        self._thread = threading.Thread(target=self._keep, name=f"zkcoord-lease-{self._id}", daemon=True)
        self._thread.start()

    @property
    def id(self) -> int:
        """The lease id."""
        return self._id

    @property
    def secret(self) -> str:
        """The lease secret (every call acting for the lease needs it). Keep it private."""
        return self._secret

    @property
    def owner(self) -> str:
        """The owner named at grant."""
        return self._owner

    @property
    def ttl_ms(self) -> int:
        """The granted ttl in milliseconds."""
        return self._ttl_ms

    def lease_ref(self) -> common_pb2.LeaseRef:
        """The lease as a zkcoord.v1.LeaseRef, for raw calls."""
        return common_pb2.LeaseRef(id=self._id, secret=self._secret)

    def status(self) -> LeaseStatus:
        """The current status (confirmed until / unconfirmed / lost)."""
        with self._lock:
            return self._status

    def is_confirmed(self) -> bool:
        """Whether the lease is confirmed now: the safety rule (send time of the last
        confirmed heartbeat + the granted ttl, on the monotonic clock)."""
        return self.status().confirmed_now()

    def valid_until(self) -> Optional[float]:
        """Until when what the lease covers (its lock holds) may be acted on: the send time
        of the last confirmed heartbeat + the granted ttl, a `time.monotonic()` instant, if
        that is still ahead and no unconfirmed answer came since; None when nothing may be
        acted on now."""
        status = self.status()
        return status.until if status.confirmed_now() else None

    def last_confirmed(self) -> ConfirmedBeat:
        """The answer to the last confirmed heartbeat (at first: the grant, naming nothing)."""
        with self._lock:
            return self._last

    def beat_now(self) -> None:
        """Asks for a heartbeat now rather than at the next ttl/3 tick (an elector asks when
        it is told ELECTED, a shard member when it is told ASSIGNED: only a confirmed answer
        listing the leadership or the shard lets it act)."""
        with self._lock:
            inbox = self._inbox
            if inbox is None:
                self._beat_wanted = True
        if inbox is not None:
            inbox.put(("beat", None))

    def _name(self, election: str) -> None:
        """Names `election` in every heartbeat from now on (once per call; see _forget)."""
        with self._lock:
            self._elections[election] += 1

    def _forget(self, election: str) -> None:
        """Undoes one _name(election)."""
        with self._lock:
            self._elections[election] -= 1
            if self._elections[election] <= 0:
                del self._elections[election]

    def _name_group(self, group: str) -> None:
        """Names shard group `group` in every heartbeat from now on (once per call; see
        _forget_group)."""
        with self._lock:
            self._shard_groups[group] += 1

    def _forget_group(self, group: str) -> None:
        """Undoes one _name_group(group)."""
        with self._lock:
            self._shard_groups[group] -= 1
            if self._shard_groups[group] <= 0:
                del self._shard_groups[group]

    def _named(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """The elections and the shard groups to name in the next heartbeat."""
        with self._lock:
            return tuple(sorted(self._elections)), tuple(sorted(self._shard_groups))

    def is_lost(self) -> bool:
        """Whether the lease has ended."""
        return self.status().state == LOST

    def wait_confirmed(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds until the lease is confirmed; returns whether it is."""
        deadline = time.monotonic() + timeout
        while not self.is_confirmed():
            if self.is_lost() or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def subscribe(self, listener: Callable[[LeaseStatus], None]) -> None:
        """Calls `listener(status)` from the keeper's thread on every status change and every
        confirmed heartbeat (after `last_confirmed()` shows it). It must return quickly."""
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[LeaseStatus], None]) -> None:
        """Stops calling `listener`."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def close(self) -> None:
        """Stops the heartbeats without revoking: the lease expires after its ttl."""
        self._stop.set()
        inbox = self._inbox
        if inbox is not None:
            inbox.put(("stop", None))
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=self._ttl_ms / 1000 + 1)

    def revoke(self) -> None:
        """Ends the lease now, releasing everything bound to it (candidacies, locks).

        Raises ZkcoordError: NOT_FOUND when it had already ended."""
        self.close()
        self._set_status(LeaseStatus(LOST))
        request = lease_pb2.RevokeRequest(lease=self.lease_ref())
        retried = []

        def revoke(channel):
            first = not retried
            retried.append(True)
            try:
                lease_pb2_grpc.LeaseStub(channel).Revoke(request, timeout=self._client.timeout)
            except grpc.RpcError as error:
                # After an UNAVAILABLE, the first attempt may have gone through.
                if error.code() != grpc.StatusCode.NOT_FOUND or first:
                    raise

        self._client.retrying(revoke)

    def __enter__(self) -> "LeaseKeeper":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.revoke()
        except ZkcoordError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise

    def __repr__(self) -> str:
        return f"LeaseKeeper(id={self._id}, owner={self._owner!r}, ttl_ms={self._ttl_ms}, status={self.status()})"

    # The background thread.

    def _set_status(self, status: LeaseStatus) -> None:
        with self._lock:
            if self._status == status or self._status.state == LOST:
                return
            self._status = status
            listeners = list(self._listeners)
        for listener in listeners:
            listener(status)

    def _confirm(self, beat: ConfirmedBeat) -> None:
        """Records a confirmed answer and tells the listeners."""
        status = LeaseStatus(CONFIRMED, beat.until)
        with self._lock:
            if self._status.state == LOST:
                return
            self._last = beat
            self._status = status
            listeners = list(self._listeners)
        for listener in listeners:
            listener(status)

    def _keep(self) -> None:
        """Keeps one KeepAlive stream at a time, moving to the next endpoint when it breaks,
        until zkcoord says the lease has ended or the keeper is closed."""
        at = self._client.current()
        failures = 0
        endpoints = len(self._client.endpoints)
        while not self._stop.is_set():
            outcome = self._stream(at)
            if outcome == _LOST:
                self._set_status(LeaseStatus(LOST))
                return
            if outcome == _STOPPED or self._stop.is_set():
                return
            # Not confirmed until a heartbeat on the next stream is.
            with self._lock:
                moving = self._status.state == CONFIRMED
            if moving:
                self._set_status(LeaseStatus(UNCONFIRMED))
            at = self._client.rotate(at)
            failures += 1
            if failures % endpoints == 0 and self._stop.wait(0.1):
                return  # every endpoint failed once: do not spin

    def _stream(self, at: int) -> str:
        """One KeepAlive stream on endpoint `at`: a heartbeat every ttl/3 (and whenever one is
        asked for) with the checks' health and the named elections, until it breaks, its
        answers stay unconfirmed for ttl/3, or the lease ends."""
        ttl = self._ttl_ms / 1000
        interval = ttl / 3
        patience = ttl / UNCONFIRMED_PATIENCE_DIVISOR
        requests: queue.Queue = queue.Queue()
        inbox: queue.Queue = queue.Queue()
        sent: collections.deque = collections.deque()  # (send time, elections named, groups named)
        ref = self.lease_ref()

        def heartbeats():
            while True:
                request = requests.get()
                if request is None:
                    return
                yield request

        def beat() -> None:
            self.last_health = self._checks.run(ttl / 6)
            elections, groups = self._named()
            sent.append((time.monotonic(), elections, groups))
            requests.put(
                lease_pb2.KeepAliveRequest(
                    lease=ref, health=self.last_health, elections=list(elections), shard_groups=list(groups)
                )
            )

        # The first heartbeat goes out with the stream.
        with self._lock:
            self._beat_wanted = False
        beat()
        if self._stop.is_set():
            return _STOPPED
        call = lease_pb2_grpc.LeaseStub(self._client.channel(at)).KeepAlive(heartbeats())
        with self._lock:
            self._inbox, self._call = inbox, call
            if self._beat_wanted:
                self._beat_wanted = False
                inbox.put(("beat", None))

        def read():
            try:
                for answer in call:
                    inbox.put(("answer", answer))
                inbox.put(("end", None))
            except grpc.RpcError as error:
                inbox.put(("error", error))

        threading.Thread(target=read, name=f"zkcoord-lease-{self._id}-reader", daemon=True).start()
        next_beat = time.monotonic() + interval
        # Since when (send time) heartbeats here have been answered unconfirmed; None while
        # the last answer was confirmed.
        unconfirmed_since: Optional[float] = None
        try:
            while True:
                if self._stop.is_set():
                    return _STOPPED
                try:
                    kind, value = inbox.get(timeout=max(0.0, next_beat - time.monotonic()))
                except queue.Empty:
                    kind, value = "tick", None
                if kind in ("tick", "beat"):
                    if len(sent) >= 2:
                        return _MOVE  # two heartbeats unanswered: this instance is not keeping up
                    beat()
                    if kind == "tick":
                        next_beat = max(next_beat + interval, time.monotonic())
                    continue
                if kind == "stop":
                    return _STOPPED
                if kind == "answer":
                    if not sent:
                        continue
                    sent_at, elections, groups = sent.popleft()
                    self.instance = value.instance
                    if value.confirmed:
                        unconfirmed_since = None
                        # The granted ttl from the send time (the answer's ttl_ms counts from
                        # receipt, which is later).
                        self._confirm(
                            ConfirmedBeat(sent_at + ttl, elections, tuple(value.leaderships), groups, tuple(value.shards))
                        )
                    else:
                        self._set_status(LeaseStatus(UNCONFIRMED))
                        # Move to an instance that can vouch for the lease, unless this one may
                        # soon again (during a ZooKeeper leader election every instance answers
                        # unconfirmed for a moment).
                        if unconfirmed_since is None:
                            unconfirmed_since = sent_at
                        if time.monotonic() >= unconfirmed_since + patience:
                            return _MOVE
                elif kind == "end":
                    return _MOVE
                else:
                    return _LOST if value.code() == grpc.StatusCode.NOT_FOUND else _MOVE
        finally:
            with self._lock:
                self._inbox = self._call = None
            requests.put(None)
            call.cancel()
