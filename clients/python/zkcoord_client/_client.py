"""Endpoints and calls: a Client knows several zkcoord instances and moves to the next one
when the current one answers UNAVAILABLE."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, TypeVar, Union

import grpc

from zkcoord_client._errors import ZkcoordError
from zkcoord_client._pb import (
    election_pb2,
    election_pb2_grpc,
    lease_pb2,
    lease_pb2_grpc,
    lock_pb2,
    lock_pb2_grpc,
    shards_pb2,
    shards_pb2_grpc,
)

T = TypeVar("T")

#: Deadline of unary calls, in seconds, unless a call says otherwise.
DEFAULT_TIMEOUT = 10.0
# The page size of the list calls: the server's maximum (each call pages through every page).
PAGE_SIZE = 1000

_CHANNEL_OPTIONS = [
    # Notice a dead peer on an idle stream, as the Rust client does.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Come back quickly to an instance that restarted.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # The client decides itself what to repeat, and where.
    ("grpc.enable_retries", 0),
]


#: The gRPC metadata header naming the tenant of a call (see the README's Tenants section).
TENANT_HEADER = "zkcoord-tenant"


@dataclass(frozen=True)
class Tls:
    """How to reach zkcoord instances that serve TLS: the CA certificate(s) to trust (PEM)
    and, for mTLS, this client's certificate chain and private key (PEM). `server_name` is the
    name the server certificate must carry, when it is not the endpoint's host."""

    ca_pem: bytes
    cert_pem: Optional[bytes] = None
    key_pem: Optional[bytes] = None
    server_name: Optional[str] = None


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _TenantHeader(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds the tenant header to every call."""

    def __init__(self, tenant: str):
        self._header = (TENANT_HEADER, tenant)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def _channel(name: str, tls: Optional[Tls], tenant: Optional[str]) -> grpc.Channel:
    options = list(_CHANNEL_OPTIONS)
    if tls is None:
        channel = grpc.insecure_channel(name, options=options)
    else:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem, private_key=tls.key_pem, certificate_chain=tls.cert_pem
        )
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(name, credentials, options=options)
    return grpc.intercept_channel(channel, _TenantHeader(tenant)) if tenant else channel


class Client:
    """A handle on a set of zkcoord instances; any of them serves any call.

    `endpoints` are `host:port` strings (a comma-separated string is accepted too). Calls go
    to the current endpoint; a call that is safe to repeat and answers UNAVAILABLE is repeated
    on the next endpoints (each once), and the next endpoint becomes the current one.
    Connections are made lazily. Thread-safe; close it (or use `with`) when done.

    `tls` connects over TLS (and mTLS when it carries a client certificate); `tenant` sends
    every call to that tenant (the `zkcoord-tenant` header).
    """

    def __init__(
        self,
        endpoints: Union[str, Iterable[str]],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: Optional[Tls] = None,
        tenant: Optional[str] = None,
    ):
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        names = []
        for endpoint in endpoints:
            endpoint = endpoint.strip()
            for scheme in ("http://", "https://", "grpc://"):
                if endpoint.startswith(scheme):
                    endpoint = endpoint[len(scheme) :]
            if endpoint:
                names.append(endpoint.rstrip("/"))
        if not names:
            raise ValueError("no zkcoord endpoints given")
        self._names = names
        self._channels = [_channel(name, tls, tenant) for name in names]
        self._current = 0
        self._lock = threading.Lock()
        #: Deadline of unary calls, in seconds.
        self.timeout = timeout

    @property
    def endpoints(self) -> list:
        """The endpoints, as given."""
        return list(self._names)

    def current(self) -> int:
        """The index of the endpoint currently preferred."""
        with self._lock:
            return self._current

    def rotate(self, failed: int) -> int:
        """Moves the preference past endpoint `failed` (unless another caller already moved
        it) and returns the endpoint now preferred."""
        with self._lock:
            if self._current == failed % len(self._names):
                self._current = (failed + 1) % len(self._names)
            return self._current

    def channel(self, index: Union[int, None] = None) -> grpc.Channel:
        """The channel of endpoint `index` (default: the current one)."""
        return self._channels[(self.current() if index is None else index) % len(self._channels)]

    def leases(self, index: Union[int, None] = None) -> lease_pb2_grpc.LeaseStub:
        """A raw zkcoord.v1.Lease stub on endpoint `index` (default: the current one)."""
        return lease_pb2_grpc.LeaseStub(self.channel(index))

    def elections(self, index: Union[int, None] = None) -> election_pb2_grpc.ElectionStub:
        """A raw zkcoord.v1.Election stub on endpoint `index` (default: the current one)."""
        return election_pb2_grpc.ElectionStub(self.channel(index))

    def locks(self, index: Union[int, None] = None) -> lock_pb2_grpc.LockStub:
        """A raw zkcoord.v1.Lock stub on endpoint `index` (default: the current one)."""
        return lock_pb2_grpc.LockStub(self.channel(index))

    def shards(self, index: Union[int, None] = None) -> shards_pb2_grpc.ShardsStub:
        """A raw zkcoord.v1.Shards stub on endpoint `index` (default: the current one)."""
        return shards_pb2_grpc.ShardsStub(self.channel(index))

    def retrying(self, call: Callable[[grpc.Channel], T]) -> T:
        """Runs `call(channel)` on the current endpoint and, while it raises UNAVAILABLE, on
        each next one (every endpoint once). Only for calls that are safe to repeat.

        Raises ZkcoordError with the status of the last attempt."""
        at = self.current()
        last = None
        for _ in range(len(self._channels)):
            try:
                return call(self.channel(at))
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise ZkcoordError.from_rpc(error) from None
                last = error
                at = self.rotate(at)
        raise ZkcoordError.from_rpc(last) from None

    # Read-only calls, for convenience (each retried on UNAVAILABLE).

    def time_to_live(self, lease_id: int) -> lease_pb2.TimeToLiveResponse:
        """Lease.TimeToLive: the lease's owner, ttl, health and bindings."""
        request = lease_pb2.TimeToLiveRequest(lease_id=lease_id)
        return self.retrying(lambda ch: lease_pb2_grpc.LeaseStub(ch).TimeToLive(request, timeout=self.timeout))

    def leader(self, election: str):
        """Election.Leader: the current leader (zkcoord.v1.LeaderInfo), or None."""
        request = election_pb2.LeaderRequest(election=election)
        response = self.retrying(lambda ch: election_pb2_grpc.ElectionStub(ch).Leader(request, timeout=self.timeout))
        return response.leader if response.HasField("leader") else None

    def list_leases(self) -> list:
        """Lease.List: every live lease (zkcoord.v1.LeaseInfo) in lease id order, all pages.

        zkcoord keeps no snapshot between pages: a lease that lives throughout is listed
        exactly once; one granted or ended meanwhile may or may not be."""
        leases = []
        token = ""
        while True:
            request = lease_pb2.ListRequest(page_size=PAGE_SIZE, page_token=token)
            page = self.retrying(lambda ch: lease_pb2_grpc.LeaseStub(ch).List(request, timeout=self.timeout))
            leases.extend(page.leases)
            token = page.next_page_token
            if not token:
                return leases

    def candidates(self, election: str) -> election_pb2.CandidatesResponse:
        """Election.Candidates: the candidates in election order, all pages (the policy and
        term are the last page's)."""
        candidates = []
        token = ""
        while True:
            request = election_pb2.CandidatesRequest(election=election, page_size=PAGE_SIZE, page_token=token)
            page = self.retrying(lambda ch: election_pb2_grpc.ElectionStub(ch).Candidates(request, timeout=self.timeout))
            candidates.extend(page.candidates)
            token = page.next_page_token
            if not token:
                return election_pb2.CandidatesResponse(candidates=candidates, preempt=page.preempt, term=page.term)

    def holders(self, key: str, prefix: bool = False) -> list:
        """Lock.Holders: the holders and waiter counts (zkcoord.v1.KeyHolders) of `key`, or
        of every key starting with `key` when `prefix` (all pages, in key order)."""
        keys = []
        token = ""
        while True:
            request = lock_pb2.HoldersRequest(key=key, prefix=prefix, page_size=PAGE_SIZE, page_token=token)
            page = self.retrying(lambda ch: lock_pb2_grpc.LockStub(ch).Holders(request, timeout=self.timeout))
            keys.extend(page.keys)
            token = page.next_page_token
            if not token:
                return keys

    def shard_members(self, group: str) -> shards_pb2.MembersResponse:
        """Shards.Members: a shard group's members (and its drained member ids), all pages."""
        members = []
        token = ""
        while True:
            request = shards_pb2.MembersRequest(group=group, page_size=PAGE_SIZE, page_token=token)
            page = self.retrying(lambda ch: shards_pb2_grpc.ShardsStub(ch).Members(request, timeout=self.timeout))
            members.extend(page.members)
            token = page.next_page_token
            if not token:
                return shards_pb2.MembersResponse(
                    shard_count=page.shard_count, members=members, drained=list(page.drained)
                )

    def shard_assignment(self, group: str) -> shards_pb2.AssignmentResponse:
        """Shards.Assignment: a shard group's table, as ranges (zkcoord.v1.ShardRange)."""
        request = shards_pb2.AssignmentRequest(group=group)
        return self.retrying(lambda ch: shards_pb2_grpc.ShardsStub(ch).Assignment(request, timeout=self.timeout))

    def drain(self, group: str, member_id: str) -> None:
        """Shards.Drain: takes every shard away from `member_id` and gives it none until
        `undrain` (idempotent)."""
        request = shards_pb2.DrainRequest(group=group, member_id=member_id)
        self.retrying(lambda ch: shards_pb2_grpc.ShardsStub(ch).Drain(request, timeout=self.timeout))

    def undrain(self, group: str, member_id: str) -> None:
        """Shards.Undrain: undoes `drain` (idempotent)."""
        request = shards_pb2.UndrainRequest(group=group, member_id=member_id)
        self.retrying(lambda ch: shards_pb2_grpc.ShardsStub(ch).Undrain(request, timeout=self.timeout))

    def close(self) -> None:
        """Closes the channels (calls in flight fail with CANCELLED)."""
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._names!r})"
