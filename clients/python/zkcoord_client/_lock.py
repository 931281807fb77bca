"""Soft locks held by a guard, released by `unlock()` or on leaving its `with` block."""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Union

import grpc

from zkcoord_client._client import Client
from zkcoord_client._errors import LockBusy, ZkcoordError
from zkcoord_client._lease import LeaseKeeper
from zkcoord_client._pb import common_pb2, lock_pb2, lock_pb2_grpc

#: One holder per key.
EXCLUSIVE = "exclusive"
#: Any number of shared holders, while no exclusive one holds the key.
SHARED = "shared"

_MODES = {EXCLUSIVE: lock_pb2.LOCK_MODE_EXCLUSIVE, SHARED: lock_pb2.LOCK_MODE_SHARED}
# How much longer than the wait a Lock call's own deadline is.
_CALL_MARGIN = 10.0


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
    end with the lease. A hold is only as good as its lease: stop working on the records when
    `lease.is_confirmed()` turns false, and pass `token(key)` with every write.
    """

    def __init__(self, client: Client, lease: common_pb2.LeaseRef, handle: str, tokens: Iterable):
        self._client = client
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

    def unlock(self) -> None:
        """Releases the locks now (once; later calls do nothing).

        Raises ZkcoordError: NOT_FOUND when they were already released (the lease ended);
        UNAVAILABLE when no instance answered (they are then released when the lease ends)."""
        if self._released:
            return
        self._released = True
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

    Raises ZkcoordError: DEADLINE_EXCEEDED when the timeout passed (nothing stays held or
    queued), INVALID_ARGUMENT for bad keys, PERMISSION_DENIED / NOT_FOUND for a bad or ended
    lease. Keys are not re-entrant: asking again for a key the lease holds waits for itself.
    """
    if timeout is None:
        wait_ms = 0  # 0 means "no timeout" on the wire
    else:
        wait_ms = max(1, int(timeout * 1000))  # a zero timeout is 1 ms, not forever
    request = lock_pb2.LockRequest(keys=_keys(keys), lease=lease.lease_ref(), mode=_mode(mode), wait_timeout_ms=wait_ms)
    deadline = None if timeout is None else timeout + _CALL_MARGIN
    # Repeated on UNAVAILABLE: the instance that answered so withdrew the request, or died
    # holding it queued (then the lease's end, or Unlock by handle, clears it).
    response = client.retrying(lambda ch: lock_pb2_grpc.LockStub(ch).Lock(request, timeout=deadline))
    return LockGuard(client, lease.lease_ref(), response.handle, response.tokens)


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
    response = client.retrying(lambda ch: lock_pb2_grpc.LockStub(ch).TryLock(request, timeout=client.timeout))
    if not response.acquired:
        raise LockBusy(response.blocked)
    return LockGuard(client, lease.lease_ref(), response.handle, response.tokens)
