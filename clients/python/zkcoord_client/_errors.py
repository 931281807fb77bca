"""Errors raised by the zkcoord client."""

from __future__ import annotations

from typing import Optional

import grpc


class ZkcoordError(Exception):
    """A zkcoord call failed: `code` is the gRPC status code, `details` zkcoord's message
    (stable, see the README's error table), e.g. NOT_FOUND / "lease not found"."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ZkcoordError":
        """Wraps a grpc.RpcError raised by a stub call."""
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else None
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(error))


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
