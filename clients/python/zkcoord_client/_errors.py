"""Errors raised by the zkcoord client."""

from __future__ import annotations

from typing import Optional

import grpc


#: The response metadata key (a trailer) with which zkcoord tells why a call failed where the
#: status code alone cannot.
REASON_METADATA = "zkcoord-reason"
#: REASON_METADATA of a Lock call whose wait ran out on the server (see LockWaitTimeout).
LOCK_WAIT_TIMEOUT = "lock-wait-timeout"


def _reason(error: grpc.RpcError) -> Optional[str]:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == REASON_METADATA:
            return value
    return None


class ZkcoordError(Exception):
    """A zkcoord call failed: `code` is the gRPC status code, `details` zkcoord's message
    (stable, see the README's error table), e.g. NOT_FOUND / "lease not found"."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ZkcoordError":
        """Wraps a grpc.RpcError raised by a stub call (LockWaitTimeout when zkcoord's reason
        says so)."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and _reason(error) == LOCK_WAIT_TIMEOUT:
            return LockWaitTimeout(details or "lock wait timed out")
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(error))


class LockWaitTimeout(ZkcoordError):
    """A lock's wait ran out on the server (DEADLINE_EXCEEDED with zkcoord-reason
    lock-wait-timeout): nothing was acquired and nothing is left queued.

    A deadline of the call itself is a plain ZkcoordError with DEADLINE_EXCEEDED: then the
    request may still be queued, or even granted."""

    def __init__(self, details: str = "lock wait timed out"):
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, details)


class LockBusy(ZkcoordError):
    """try_lock could not take every key without waiting; nothing is held or queued.

    `blocked` lists, per key that was in the way, its holders (zkcoord.v1.KeyHolders)."""

    def __init__(self, blocked: list):
        self.blocked = list(blocked)
        keys = ", ".join(b.key for b in self.blocked)
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, f"keys held by others: {keys}")

    def holders(self, key: str) -> Optional[list]:
        """The holders (zkcoord.v1.Holder) of `key`, when it was in the way."""
        for blocked in self.blocked:
            if blocked.key == key:
                return list(blocked.holders)
        return None
