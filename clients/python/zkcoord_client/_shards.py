"""Shard group membership: the member's shards as events, held to the rule that the lease's
confirmed heartbeats are the authority, and revoked shards released once the application has
stopped working on them."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Set, Tuple, Union

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import ZkcoordError
from zkcoord_client._lease import CONFIRMED, LeaseKeeper
from zkcoord_client._pb import shards_pb2, shards_pb2_grpc

_log = logging.getLogger("zkcoord_client")


@dataclasses.dataclass(frozen=True)
class Assigned:
    """The member owns `shard` with `epoch` (greater than every earlier epoch of the shard): it
    may work on it while `ShardMember.owns(shard)` says so (a heartbeat that can list it is
    sent at once), writing `epoch` with the shard's data."""

    shard: int
    epoch: int


@dataclasses.dataclass(frozen=True)
class Revoked:
    """The member must stop working on `shard` (owned with `epoch`) now. Unless the member
    releases manually, the shard is released when the application asks for the next event
    (its handling of the revocation is over)."""

    shard: int
    epoch: int


ShardEvent = Union[Assigned, Revoked]


@dataclasses.dataclass(frozen=True)
class OwnedShard:
    """A shard the member may work on now: write `epoch` with its data (and let the database
    refuse older epochs), and stop by `valid_until`, a `time.monotonic()` instant (the send
    time of the last confirmed heartbeat that listed it + the lease's granted ttl)."""

    shard: int
    epoch: int
    valid_until: float

    def remaining(self) -> float:
        """Seconds left until `valid_until` (0 when it has passed)."""
        return max(0.0, self.valid_until - time.monotonic())


_END = object()  # closes the events queue
# How long a background release is retried at most while no instance answers, beyond the
# lease's ttl (after that the shard has moved on without it anyway).
_RELEASE_PATIENCE = 5.0
# Pause before opening the Watch stream again after it broke.
_REOPEN_PAUSE = 0.2


class ShardMember:
    """A membership of shard group `group` as `member_id`, bound to `lease`, and the events of
    its shards.

    The constructor joins (on the current endpoint, then the next ones while they answer
    UNAVAILABLE) and raises ZkcoordError when the join is refused (INVALID_ARGUMENT;
    FAILED_PRECONDITION for another shard count or a member id bound to another lease). The
    group has `shard_count` shards (1 to 65,536; the first member sets it); `weight` (1 to
    1,000) is the member's capacity relative to the others; `labels` describe it. A
    background thread follows the member's Watch stream, opening it again on the next endpoint
    when it breaks, and turns it into events: `Assigned(shard, epoch)` and
    `Revoked(shard, epoch)` (also for shards a new stream's snapshot no longer assigns).

    The safety rule: the member may act as a shard's owner only while the lease's **last
    confirmed heartbeat** listed that shard with that epoch (the keeper names the group in
    every heartbeat), only until that heartbeat's send time + the lease's granted ttl, on this
    process's monotonic clock, and never after it released (shard, epoch). `owns(shard)` and
    `owned()` apply it at every call: check `owns()` right before each action and write its
    epoch with the data. The events only notify; a validity that runs out sends none.

    Release: unless `manual_release`, a shard revoked by an event `next_event()` returned is
    given up here and released to zkcoord (in the background, the shards of one batch of
    events together) when the application asks for the next event: its handling of the
    revocation is over. With `manual_release` the application calls `release()` itself.

    `close()` stops following the group (the membership lives on with the lease; its shards
    are not acted on here any more); `leave()` hands every shard off gracefully and ends the
    membership. As a context manager the member leaves on exit. `next_event()` is for one
    consumer thread; `owns()` / `owned()` may be called from any thread.
    """

    def __init__(
        self,
        client: Client,
        lease: LeaseKeeper,
        group: str,
        member_id: str,
        shard_count: int,
        *,
        weight: int = 1,
        labels: Optional[Mapping[str, str]] = None,
        manual_release: bool = False,
    ):
        self._client = client
        self._lease = lease
        self._group = group
        self._member_id = member_id
        self._manual_release = manual_release
        self._key = shards_pb2.MemberKey(group=group, member_id=member_id, lease=lease.lease_ref())
        self._lock = threading.Lock()
        self._events: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._over = threading.Event()
        self._leaving = False
        self._named = False
        self._call = None
        # (shard, epoch) given up here: never acted on again.
        self._released: Set[Tuple[int, int]] = set()
        # Revocations returned by next_event(), whose handling is over at the next call.
        self._handed: List[Tuple[int, int]] = []
        # Revocations handled, to release together.
        self._to_release: List[Tuple[int, int]] = []
        request = shards_pb2.JoinRequest(key=self._key, shard_count=shard_count, weight=weight, labels=dict(labels or {}))
        lease._name_group(group)
        self._named = True
        try:
            joined = client.retrying(lambda ch: shards_pb2_grpc.ShardsStub(ch).Join(request, timeout=client.timeout))
        except BaseException:
            self._unname()
            raise
        self._shard_count = joined.shard_count
        self._thread = threading.Thread(target=self._run, name=f"zkcoord-shards-{group}-{member_id}", daemon=True)
        self._thread.start()

    @property
    def group(self) -> str:
        """The group's name."""
        return self._group

    @property
    def member_id(self) -> str:
        """This member's id."""
        return self._member_id

    @property
    def shard_count(self) -> int:
        """The group's number of shards."""
        return self._shard_count

    def member_key(self) -> shards_pb2.MemberKey:
        """The membership as a zkcoord.v1.MemberKey, for raw calls."""
        return shards_pb2.MemberKey(group=self._group, member_id=self._member_id, lease=self._lease.lease_ref())

    @property
    def over(self) -> bool:
        """Whether the membership has ended (or this member stopped following it) and every
        event was taken."""
        return self._over.is_set() and self._events.empty()

    # The safety rule.

    def owned(self) -> List[OwnedShard]:
        """Every shard the member may work on now (the safety rule), in shard order."""
        now = time.monotonic()
        status = self._lease.status()
        if status.state != CONFIRMED or status.until is None or now >= status.until:
            return []
        beat = self._lease.last_confirmed()
        if now >= beat.until or not beat.names_group(self._group):
            return []
        listed = beat.owned_shards(self._group, self._member_id)
        with self._lock:
            if self._stop.is_set():
                return []
            return [
                OwnedShard(shard, epoch, beat.until)
                for shard, epoch in sorted(listed.items())
                if (shard, epoch) not in self._released
            ]

    def owns(self, shard: int) -> Optional[OwnedShard]:
        """The ownership of `shard` the member may act on now (epoch, valid until), or None:
        the safety rule. Check it right before each action; it can end (by time) before an
        event says so."""
        for owned in self.owned():
            if owned.shard == shard:
                return owned
        return None

    # Events.

    def next_event(self, timeout: Optional[float] = None) -> Optional[ShardEvent]:
        """The next event, waiting up to `timeout` seconds (None: as long as it takes). None
        on timeout, or once the membership has ended (or `close()`) and every event was taken.

        Unless `manual_release`, calling it again releases the shards that earlier calls
        revoked (their handling is over): they are given up here at once and released to
        zkcoord in the background, together."""
        if not self._manual_release:
            self._to_release.extend(self._handed)
            self._handed.clear()
        try:
            event = self._events.get_nowait()
        except queue.Empty:
            self._flush()
            if self._over.is_set() and self._events.empty():
                return None
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                return None
        if event is _END:
            self._events.put(_END)  # for later callers
            self._flush()
            return None
        if isinstance(event, Revoked):
            if not self._manual_release:
                self._handed.append((event.shard, event.epoch))
        else:
            self._flush()
        return event

    def __iter__(self) -> Iterator[ShardEvent]:
        """The events, until the membership ends (or `close()`); advancing the iterator
        releases the shards revoked before (see `next_event()`)."""
        while True:
            event = self.next_event()
            if event is None:
                return
            yield event

    def release(self, shards: Iterable[Tuple[int, int]]) -> None:
        """Gives up `shards` ((shard, epoch) pairs; never acted on here again) and tells
        zkcoord in one Release call, so that their next owners are assigned at once (together,
        with one epoch). Needed only with `manual_release`.

        Raises ZkcoordError: FAILED_PRECONDITION when a shard is not being revoked from this
        member with that epoch (then none is released by zkcoord: release the others again);
        UNAVAILABLE when no instance answered (the shards stay given up here; zkcoord hands
        them off once their validity ran out)."""
        shards = list(shards)
        self._give_up(shards)
        self._release_once(self._client.channel(), shards, retry=True)

    def leave(self, wait: float = 30.0) -> bool:
        """Leaves the group gracefully: gives up every shard here at once, releases every
        shard zkcoord revokes meanwhile, and waits up to `wait` seconds (at most 30) for
        zkcoord to hand them off and end the membership. Returns whether it has ended (when
        not, it ends later by itself). Stops following the group either way.

        Raises ZkcoordError with the Leave call's status."""
        with self._lock:
            self._leaving = True
            owned = list(self._handed) + list(self._to_release)
            self._handed.clear()
            self._to_release.clear()
        owned += [(o.shard, o.epoch) for o in self.owned()]
        self._give_up(owned)
        # Revocations queued but not taken: released now (the application stops anyway).
        revoked = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event is _END:
                self._events.put(_END)
                break
            if isinstance(event, Revoked):
                revoked.append((event.shard, event.epoch))
        if revoked:
            self._release_in_background(revoked)
        wait_ms = max(1, int(wait * 1000))
        request = shards_pb2.LeaveRequest(key=self.member_key(), wait_ms=wait_ms)
        try:
            answer = self._client.retrying(
                lambda ch: shards_pb2_grpc.ShardsStub(ch).Leave(request, timeout=wait + self._client.timeout)
            )
        finally:
            self.close()
        return answer.left

    def close(self) -> None:
        """Stops following the group: nothing is acted on here any more (`owned()` is empty),
        the heartbeats stop naming the group, and the events end. The membership lives on with
        the lease (its shards move when the lease ends; use `leave()` to hand them off now)."""
        with self._lock:
            self._stop.set()
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._finish()

    def __enter__(self) -> "ShardMember":
        return self

    def __exit__(self, *exc) -> None:
        if self._stop.is_set():
            return
        try:
            self.leave()
        except ZkcoordError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise

    def __repr__(self) -> str:
        owned = [o.shard for o in self.owned()]
        return f"ShardMember(group={self._group!r}, member_id={self._member_id!r}, owned={owned})"

    # Internals.

    def _unname(self) -> None:
        with self._lock:
            named, self._named = self._named, False
        if named:
            self._lease._forget_group(self._group)

    def _finish(self) -> None:
        self._unname()
        with self._lock:
            if self._over.is_set():
                return
            self._over.set()
        self._events.put(_END)

    def _give_up(self, shards: Iterable[Tuple[int, int]]) -> None:
        """Marks `shards` given up: `owned()` never lists them again."""
        with self._lock:
            self._released.update(shards)

    def _flush(self) -> None:
        """Gives up the revocations whose handling is over and releases them in the
        background, together."""
        if not self._to_release:
            return
        shards, self._to_release = self._to_release, []
        self._give_up(shards)
        self._release_in_background(shards)

    def _release_once(self, channel: Optional[grpc.Channel], shards: List[Tuple[int, int]], retry: bool = False) -> None:
        request = shards_pb2.ReleaseRequest(
            key=self.member_key(), shards=[shards_pb2.ReleasedShard(shard=s, epoch=e) for s, e in shards]
        )

        def call(ch: grpc.Channel) -> None:
            shards_pb2_grpc.ShardsStub(ch).Release(request, timeout=self._client.timeout)

        if retry:
            self._client.retrying(call)
        else:
            call(channel)

    def _release_in_background(self, shards: List[Tuple[int, int]]) -> None:
        """Releases `shards` (already given up) in a background thread: retried on the next
        endpoints while none answers (up to the lease's ttl + 5 s); when zkcoord refuses the
        batch (a shard moved on meanwhile, e.g. its validity ran out), each shard alone."""
        deadline = time.monotonic() + self._lease.ttl_ms / 1000 + _RELEASE_PATIENCE

        def run() -> None:
            at = self._client.current()
            pause = 0.05
            while True:
                try:
                    self._release_once(self._client.channel(at), shards)
                    return
                except grpc.RpcError as error:
                    code = error.code()
                except Exception as error:  # noqa: BLE001 - e.g. the client was closed
                    _log.debug("shards %s not released: %s", shards, error)
                    return
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    if len(shards) > 1:
                        for one in shards:
                            try:
                                self._release_once(self._client.channel(at), [one])
                            except grpc.RpcError:
                                pass  # moved on already: nothing to release
                    return
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) or time.monotonic() >= deadline:
                    _log.debug("shards %s not released (%s); they move on when their validity has run out", shards, code)
                    return
                at = self._client.rotate(at)
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

        threading.Thread(target=run, name=f"zkcoord-release-{self._member_id}", daemon=True).start()

    def _deliver(self, events: List[ShardEvent]) -> None:
        """Hands events to the application; while leaving, releases revoked shards at once."""
        with self._lock:
            leaving = self._leaving
            if not leaving:
                for event in events:
                    self._events.put(event)
        if leaving:
            revoked = [(e.shard, e.epoch) for e in events if isinstance(e, Revoked)]
            if revoked:
                self._give_up(revoked)
                self._release_in_background(revoked)

    def _run(self) -> None:
        try:
            self._follow()
        except BaseException:  # noqa: BLE001 - never leave shards acted on after a crash
            _log.exception("zkcoord shard member %s/%s failed", self._group, self._member_id)
            with self._lock:
                self._stop.set()
            raise
        finally:
            self._finish()

    def _follow(self) -> None:
        """Follows the member's Watch stream, opening it again on the next endpoint when it
        breaks, until the membership ends or the member stops following."""
        told: Dict[int, int] = {}  # what the application was told it owns
        at = self._client.current()
        request = shards_pb2.WatchRequest(key=self._key)
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                call = shards_pb2_grpc.ShardsStub(self._client.channel(at)).Watch(request)
                self._call = call
            try:
                for message in call:
                    events = self._changes(message, told)
                    if any(isinstance(e, Assigned) for e in events):
                        # Only a confirmed heartbeat listing the shard lets the member act.
                        self._lease.beat_now()
                    self._deliver(events)
            except grpc.RpcError as error:
                if self._stop.is_set():
                    return
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    # The membership has ended (its lease ended, or it left).
                    self._deliver([Revoked(shard, epoch) for shard, epoch in sorted(told.items())])
                    return
            at = self._client.rotate(at)
            if self._stop.wait(_REOPEN_PAUSE):
                return

    @staticmethod
    def _changes(message: shards_pb2.WatchResponse, told: Dict[int, int]) -> List[ShardEvent]:
        """The events one Watch message means for the application, updating `told` (what it
        was told it owns). A snapshot (the first message of a stream) is compared with `told`:
        shards it no longer assigns are revoked, shards being revoked that were never told are
        revoked too (so that they are released), new ones assigned."""
        out: List[ShardEvent] = []
        if message.snapshot:
            assigned = {e.shard: e.epoch for e in message.events if e.kind == shards_pb2.ShardEvent.KIND_ASSIGNED}
            revoking = {e.shard: e.epoch for e in message.events if e.kind == shards_pb2.ShardEvent.KIND_REVOKE}
            for shard, epoch in sorted(told.items()):
                if assigned.get(shard) != epoch:
                    out.append(Revoked(shard, epoch))
            for shard, epoch in sorted(revoking.items()):
                if told.get(shard) != epoch:
                    out.append(Revoked(shard, epoch))
            for shard, epoch in sorted(assigned.items()):
                if told.get(shard) != epoch:
                    out.append(Assigned(shard, epoch))
            told.clear()
            told.update(assigned)
            return out
        for event in message.events:
            if event.kind == shards_pb2.ShardEvent.KIND_ASSIGNED:
                told[event.shard] = event.epoch
                out.append(Assigned(event.shard, event.epoch))
            elif event.kind == shards_pb2.ShardEvent.KIND_REVOKE:
                if told.get(event.shard) == event.epoch:
                    del told[event.shard]
                out.append(Revoked(event.shard, event.epoch))
        return out
