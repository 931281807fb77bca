"""A Python client for zkcoord: leases kept alive in the background with health checks riding
on the heartbeats, leader election as events, soft locks held by a guard, and shard group
membership as events.

    from zkcoord_client import Client, LeaseKeeper, LeaderElector, BecameLeader, ShardMember, lock

    client = Client(["127.0.0.1:7710", "127.0.0.1:7711"])
    lease = LeaseKeeper(client, "ledger-node-a", ttl_ms=3000, checks={"database": ping_db})
    with lock(client, lease, ["order-17", "order-18"], timeout=5) as guard:
        write(guard.token("order-17"))
    elector = LeaderElector(client, lease, "ledger-master", "node-a", priority=0)
    for event in elector:
        ...  # BecameLeader(term, fencing_token) / LostLeadership(reason, term)
    member = ShardMember(client, lease, "flow-workers", "node-a", shard_count=64)
    for event in member:  # Assigned(shard, epoch) / Revoked(shard, epoch)
        ...  # advancing the iterator releases the shards revoked before

Safety rule, one for every ownership: act as the owner of something (the leader of a term,
the holder of a lock, the owner of a shard) only while the lease's **last confirmed
heartbeat** covered it, and only until that heartbeat's send time + the lease's granted ttl,
on this process's monotonic clock. A leadership or a shard (with its epoch) is covered only by
a confirmed answer that lists it; a lock hold by every confirmed heartbeat from its grant until
it is unlocked; a released shard never again. `LeaderElector.leadership()`,
`ShardMember.owns()` and `LeaseKeeper.valid_until()` apply it: check them right before each
action and pass the fencing token (or the shard's epoch) along.
"""

from zkcoord_client._client import DEFAULT_TIMEOUT, TENANT_HEADER, Client, Tls
from zkcoord_client._election import BecameLeader, LeaderElector, Leadership, LeadershipEvent, LostLeadership
from zkcoord_client._errors import LOCK_WAIT_TIMEOUT, REASON_METADATA, LockBusy, LockWaitTimeout, ZkcoordError
from zkcoord_client._lease import CONFIRMED, LOST, UNCONFIRMED, Check, ConfirmedBeat, LeaseKeeper, LeaseStatus
from zkcoord_client._lock import EXCLUSIVE, SHARED, LockGuard, lock, try_lock
from zkcoord_client._pb import common_pb2, election_pb2, lease_pb2, lock_pb2, shards_pb2
from zkcoord_client._shards import Assigned, OwnedShard, Revoked, ShardEvent, ShardMember

__all__ = [
    "Assigned",
    "BecameLeader",
    "CONFIRMED",
    "Check",
    "Client",
    "ConfirmedBeat",
    "DEFAULT_TIMEOUT",
    "EXCLUSIVE",
    "LOST",
    "LeaderElector",
    "Leadership",
    "LeadershipEvent",
    "LeaseKeeper",
    "LeaseStatus",
    "LockBusy",
    "LockGuard",
    "LOCK_WAIT_TIMEOUT",
    "LockWaitTimeout",
    "LostLeadership",
    "OwnedShard",
    "REASON_METADATA",
    "Revoked",
    "SHARED",
    "ShardEvent",
    "ShardMember",
    "TENANT_HEADER",
    "Tls",
    "UNCONFIRMED",
    "ZkcoordError",
    "common_pb2",
    "election_pb2",
    "lease_pb2",
    "lock_pb2",
    "shards_pb2",
    "lock",
    "try_lock",
]
