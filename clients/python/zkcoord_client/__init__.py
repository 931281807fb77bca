"""A Python client for zkcoord: leases kept alive in the background with health checks riding
on the heartbeats, leader election as events, and soft locks held by a guard.

    from zkcoord_client import Client, LeaseKeeper, LeaderElector, BecameLeader, lock

    client = Client(["127.0.0.1:7710", "127.0.0.1:7711"])
    lease = LeaseKeeper(client, "ledger-node-a", ttl_ms=3000, checks={"database": ping_db})
    with lock(client, lease, ["order-17", "order-18"], timeout=5) as guard:
        write(guard.token("order-17"))
    elector = LeaderElector(client, lease, "ledger-master", "node-a", priority=0)
    for event in elector:
        ...  # BecameLeader(term, fencing_token) / LostLeadership(reason)

Safety rule: act as leader (or on locked records) only while the lease is **confirmed**:
until the send time of its last confirmed heartbeat plus its ttl, on this process's
monotonic clock. `LeaseKeeper.is_confirmed()` and `LeaderElector.is_leader()` apply it.
"""

from zkcoord_client._client import DEFAULT_TIMEOUT, TENANT_HEADER, Client, Tls
from zkcoord_client._election import BecameLeader, LeaderElector, LeadershipEvent, LostLeadership
from zkcoord_client._errors import LOCK_WAIT_TIMEOUT, REASON_METADATA, LockBusy, LockWaitTimeout, ZkcoordError
from zkcoord_client._lease import CONFIRMED, LOST, UNCONFIRMED, Check, LeaseKeeper, LeaseStatus
from zkcoord_client._lock import EXCLUSIVE, SHARED, LockGuard, lock, try_lock
from zkcoord_client._pb import common_pb2, election_pb2, lease_pb2, lock_pb2

__all__ = [
    "BecameLeader",
    "CONFIRMED",
    "Check",
    "Client",
    "DEFAULT_TIMEOUT",
    "EXCLUSIVE",
    "LOST",
    "LeaderElector",
    "LeadershipEvent",
    "LeaseKeeper",
    "LeaseStatus",
    "LockBusy",
    "LockGuard",
    "LOCK_WAIT_TIMEOUT",
    "LockWaitTimeout",
    "LostLeadership",
    "REASON_METADATA",
    "SHARED",
    "TENANT_HEADER",
    "Tls",
    "UNCONFIRMED",
    "ZkcoordError",
    "common_pb2",
    "election_pb2",
    "lease_pb2",
    "lock_pb2",
    "lock",
    "try_lock",
]
