"""Soft locks held by a guard, released by `unlock()` or on leaving its `with` block.

After an ambiguous answer to a Lock (UNAVAILABLE: the instance may have died with the request
queued; or the call's own deadline) the request may still be queued, or granted, under the
lease. Retrying blindly would wait behind that orphan forever (it is the lease's own), so
`lock()` first releases it: it lists the lease's lock bindings (Lease.TimeToLive) and Unlocks
every request on exactly the call's keys that no guard of this process holds, retrying until
that succeeds or the lease is gone. A concurrent `lock()` of the same keys under the same lease
in this process cannot be told from the orphan: its request may be released too, and that call
then queues again.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, FrozenSet, Iterable, Optional, Union

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import LockBusy, LockWaitTimeout, ZkcoordError
from zkcoord_client._lease import LeaseKeeper
from zkcoord_client._pb import common_pb2, lease_pb2, lease_pb2_grpc, lock_pb2, lock_pb2_grpc

#: One holder per key.
EXCLUSIVE = "exclusive"
#: Any number of shared holders, while no exclusive one holds the key.
SHARED = "shared"

_MODES = {EXCLUSIVE: lock_pb2.LOCK_MODE_EXCLUSIVE, SHARED: lock_pb2.LOCK_MODE_SHARED}
# How much longer than the wait a Lock call's own deadline is.
_CALL_MARGIN = 10.0
# Pause between attempts to release an orphaned request while no instance answers.
_RELEASE_PAUSE = 0.2
# The message of a Lock whose queued request was released by an Unlock with its handle.
_RELEASED = "lock request was released"

# The handles held by this process's guards, per lease id: never taken for orphans; and how
# many orphan clean-ups released something (a Lock released while it waited queues again if
# one did meanwhile: it was taken for an orphan).
_held_lock = threading.Lock()
_held: Dict[int, set] = {}
_cleanups = 0


def _remember(lease_id: int, handle: str) -> None:
    with _held_lock:
        _held.setdefault(lease_id, set()).add(handle)


def _forget(lease_id: int, handle: str) -> None:
    with _held_lock:
        handles = _held.get(lease_id)
        if handles is not None:
            handles.discard(handle)
            if not handles:
                del _held[lease_id]


def _cleanup_count() -> int:
    with _held_lock:
        return _cleanups


def _release_orphans(client: Client, lease: common_pb2.LeaseRef, keys: FrozenSet[str]) -> None:
    """Releases the lease's lock requests on exactly `keys` that no guard of this process
    holds (what a Lock answered UNAVAILABLE or cut short by its deadline may have left), retrying
    through every instance until that succeeds or the lease is gone.

    Raises ZkcoordError: NOT_FOUND when the lease is gone (nothing is left then either)."""
    global _cleanups
    request = lease_pb2.TimeToLiveRequest(lease_id=lease.id)
    while True:
        try:
            listed = client.retrying(
                lambda ch: lease_pb2_grpc.LeaseStub(ch).TimeToLive(request, timeout=client.timeout)
            )
        except ZkcoordError as error:
            if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                time.sleep(_RELEASE_PAUSE)
                continue
            raise
        requests: Dict[str, set] = {}
        for binding in listed.bindings:
            if binding.kind == lease_pb2.Binding.KIND_LOCK:
                requests.setdefault(binding.id, set()).add(binding.name)
        with _held_lock:
            held = set(_held.get(lease.id, ()))
        orphans = [handle for handle, on in requests.items() if on == keys and handle not in held]
        for handle in orphans:
            unlock = lock_pb2.UnlockRequest(handle=handle, lease=lease)
            while True:
                try:
                    client.retrying(lambda ch: lock_pb2_grpc.LockStub(ch).Unlock(unlock, timeout=client.timeout))
                    break
                except ZkcoordError as error:
                    if error.code == grpc.StatusCode.NOT_FOUND:
                        break  # gone already (withdrawn, or with its lease)
                    if error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        time.sleep(_RELEASE_PAUSE)
                        continue
                    raise
        if orphans:
            with _held_lock:
                _cleanups += 1
        return


def _mode(mode: str) -> int:
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"lock mode must be {EXCLUSIVE!r} or {SHARED!r}, not {mode!r}") from None


def _keys(keys: Union[str, Iterable[str]]) -> list:
    return [keys] if isinstance(keys, str) else list(keys)


class LockGuard:
    """Held locks on a set of keys (all or nothing), with a fencing token per key.

    Release them with `unlock()` or by leaving the guard's `with` block; either way they also
    end with the lease. A hold is covered by its lease's confirmed heartbeats (the client rule):
    act on the records only while `valid_until()` is not None, until that moment at the latest,
    and pass `token(key)` with every write.
    """

    def __init__(
        self, client: Client, lease: common_pb2.LeaseRef, handle: str, tokens: Iterable, keeper: Optional[LeaseKeeper] = None
    ):
        _remember(lease.id, handle)
        self._client = client
        self._keeper = keeper
        self._lease = lease
        self._handle = handle
        self._tokens = {t.key: t.fencing_token for t in tokens}
        self._released = False

    @property
    def handle(self) -> str:
        """The lock handle (what Lock.Unlock takes)."""
        return self._handle

    @property
    def tokens(self) -> Dict[str, int]:
        """Every key with its fencing token."""
        return dict(self._tokens)

    def token(self, key: str) -> Optional[int]:
        """The fencing token of `key`: pass it with every write to the guarded records and
        have the store reject tokens lower than the highest it has seen."""
        return self._tokens.get(key)

    @property
    def released(self) -> bool:
        """Whether unlock() was called."""
        return self._released

    def valid_until(self) -> Optional[float]:
        """Until when (time.monotonic()) the holds may be acted on: the send time of the lease's
        last confirmed heartbeat + ttl, if still ahead; None when nothing may be done with them
        now (or they were released, or the guard was made without its LeaseKeeper)."""
        if self._released or self._keeper is None:
            return None
        return self._keeper.valid_until()

    def unlock(self) -> None:
        """Releases the locks now (once; later calls do nothing).

        Raises ZkcoordError: NOT_FOUND when they were already released (the lease ended);
        UNAVAILABLE when no instance answered (they are then released when the lease ends)."""
        if self._released:
            return
        self._released = True
        _forget(self._lease.id, self._handle)
        request = lock_pb2.UnlockRequest(handle=self._handle, lease=self._lease)
        attempts = []

        def unlock(channel):
            first = not attempts
            attempts.append(True)
            try:
                lock_pb2_grpc.LockStub(channel).Unlock(request, timeout=self._client.timeout)
            except grpc.RpcError as error:
                # After an UNAVAILABLE, the first attempt may have gone through.
                if error.code() != grpc.StatusCode.NOT_FOUND or first:
                    raise

        self._client.retrying(unlock)

    def __enter__(self) -> "LockGuard":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.unlock()
        except ZkcoordError as error:
            if error.code != grpc.StatusCode.NOT_FOUND:
                raise

    def __repr__(self) -> str:
        return f"LockGuard(handle={self._handle!r}, tokens={self._tokens!r}, released={self._released})"


def lock(
    client: Client,
    lease: LeaseKeeper,
    keys: Union[str, Iterable[str]],
    *,
    mode: str = EXCLUSIVE,
    timeout: Optional[float] = None,
) -> LockGuard:
    """Acquires `keys` (all or nothing) for `lease`, waiting up to `timeout` seconds (None:
    as long as it takes), and returns the guard; use it as `with lock(...) as guard:`.

    Raises LockWaitTimeout when the timeout passed (nothing stays held or queued), or
    ZkcoordError: INVALID_ARGUMENT for bad keys, PERMISSION_DENIED / NOT_FOUND for a bad or
    ended lease, DEADLINE_EXCEEDED when the call's own deadline (timeout + 10 s) passed, or
    UNAVAILABLE from every instance (in both cases after the request left behind, if any, was
    released). Keys are not re-entrant: asking again for a key the lease holds waits for itself.
    """
    if timeout is None:
        wait_ms = 0  # 0 means "no timeout" on the wire
    else:
        wait_ms = max(1, int(timeout * 1000))  # a zero timeout is 1 ms, not forever
    request = lock_pb2.LockRequest(keys=_keys(keys), lease=lease.lease_ref(), mode=_mode(mode), wait_timeout_ms=wait_ms)
    deadline = None if timeout is None else timeout + _CALL_MARGIN
    lease_ref = lease.lease_ref()
    wanted = frozenset(request.keys)
    at = client.current()
    unavailable = 0
    while True:
        cleanups = _cleanup_count()
        try:
            response = lock_pb2_grpc.LockStub(client.channel(at)).Lock(request, timeout=deadline)
        except grpc.RpcError as rpc_error:
            error = ZkcoordError.from_rpc(rpc_error)
            if error.code == grpc.StatusCode.UNAVAILABLE:
                # The instance may have died with the request queued: release it, then try the
                # next instance (every one once).
                _release_orphans(client, lease_ref, wanted)
                unavailable += 1
                if unavailable >= len(client.endpoints):
                    raise error from None
                at = client.rotate(at)
                continue
            if error.code == grpc.StatusCode.DEADLINE_EXCEEDED and not isinstance(error, LockWaitTimeout):
                # The call's own deadline, not the server's wait: the request may be queued.
                _release_orphans(client, lease_ref, wanted)
                raise error from None
            if (
                error.code == grpc.StatusCode.FAILED_PRECONDITION
                and error.details == _RELEASED
                and _cleanup_count() != cleanups
            ):
                continue  # taken for an orphan by a concurrent clean-up: queue again
            raise error from None
        return LockGuard(client, lease_ref, response.handle, response.tokens, lease)


def try_lock(
    client: Client,
    lease: LeaseKeeper,
    keys: Union[str, Iterable[str]],
    *,
    mode: str = EXCLUSIVE,
) -> LockGuard:
    """Acquires `keys` (all or nothing) for `lease` only if that needs no waiting.

    Raises LockBusy (with `.blocked`, who holds each key that was in the way) when not
    acquired (nothing stays held or queued), or ZkcoordError as `lock()`."""
    request = lock_pb2.TryLockRequest(keys=_keys(keys), lease=lease.lease_ref(), mode=_mode(mode))
    lease_ref = lease.lease_ref()
    at = client.current()
    unavailable = 0
    while True:
        try:
            response = lock_pb2_grpc.LockStub(client.channel(at)).TryLock(request, timeout=client.timeout)
            break
        except grpc.RpcError as rpc_error:
            error = ZkcoordError.from_rpc(rpc_error)
            if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise error from None
            # The instance may have died between queueing and withdrawing the request.
            _release_orphans(client, lease_ref, frozenset(request.keys))
            unavailable += 1
            if error.code == grpc.StatusCode.DEADLINE_EXCEEDED or unavailable >= len(client.endpoints):
                raise error from None
            at = client.rotate(at)
    if not response.acquired:
        raise LockBusy(response.blocked)
    return LockGuard(client, lease.lease_ref(), response.handle, response.tokens, lease)
