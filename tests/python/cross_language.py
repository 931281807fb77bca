"""Cross-language proof: a Python grpcio client, with stubs generated from proto/ by
grpcio-tools, talks to a running zkcoord.

Run by tests/it/python.rs against a real zkcoord and ZooKeeper:
    python tests/python/cross_language.py --addr 127.0.0.1:PORT

Exits 0 when every check passes; raises (exit 1) on the first that does not.
"""

import argparse
import pathlib
import tempfile
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from zkcoord_stubs import generate_stubs


def check_health(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", "zkcoord.v1.Lease"]:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, (service, response)
    print("health: SERVING")


def check_reflection(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
    names = {s.name for s in responses[0].list_services_response.service}
    for expected in ["zkcoord.v1.Lease", "zkcoord.v1.Election", "zkcoord.v1.Lock"]:
        assert expected in names, (expected, names)
    print("reflection v1alpha:", ", ".join(sorted(names)))


def expect_status(call, code: grpc.StatusCode, prefix: str) -> str:
    """Calls call(), which must fail with code and a message starting with prefix."""
    try:
        call()
    except grpc.RpcError as err:
        assert err.code() == code, (err.code(), err.details())
        assert err.details().startswith(prefix), err.details()
        return err.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def check_zkcoord_rpcs(channel: grpc.Channel) -> None:
    from zkcoord.v1 import election_pb2, election_pb2_grpc, lease_pb2, lease_pb2_grpc

    election = election_pb2_grpc.ElectionStub(channel)
    details = expect_status(
        lambda: election.Leader(election_pb2.LeaderRequest(election="../escape"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "election: ",
    )
    print("Election.Leader(invalid name): INVALID_ARGUMENT", repr(details))

    lease = lease_pb2_grpc.LeaseStub(channel)
    details = expect_status(
        lambda: lease.Grant(lease_pb2.GrantRequest(ttl_ms=500, owner="python-node"), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ttl_ms: ",
    )
    print("Lease.Grant(ttl 500 ms): INVALID_ARGUMENT", repr(details))

    from zkcoord.v1 import common_pb2

    granted = lease.Grant(lease_pb2.GrantRequest(ttl_ms=5000, owner="python-node"), timeout=10)
    ref = common_pb2.LeaseRef(id=granted.lease_id, secret=granted.secret)
    health = common_pb2.Health(
        status=common_pb2.HEALTH_STATUS_DEGRADED,
        checks=[common_pb2.HealthCheck(name="database", status=common_pb2.HEALTH_STATUS_SERVING)],
    )
    answers = list(lease.KeepAlive(iter([lease_pb2.KeepAliveRequest(lease=ref, health=health)] * 2), timeout=10))
    assert len(answers) == 2 and all(a.confirmed and a.lease_id == granted.lease_id for a in answers), answers
    info = lease.TimeToLive(lease_pb2.TimeToLiveRequest(lease_id=granted.lease_id), timeout=10).lease
    assert info.owner == "python-node" and info.health.status == common_pb2.HEALTH_STATUS_DEGRADED, info

    # The leadership is what a confirmed heartbeat naming the election lists.
    key = election_pb2.CandidateKey(election="py-raw", candidate_id="python-node", lease=ref)
    campaign = election.Campaign(election_pb2.CampaignRequest(key=key), timeout=30)
    status = next(campaign)
    while status.state == election_pb2.CANDIDATE_STATE_QUEUED:  # the first status may come before the election
        status = next(campaign)
    assert status.state == election_pb2.CANDIDATE_STATE_ELECTED and status.term > 0, status
    wanted = [("py-raw", "python-node", status.term, status.fencing_token)]
    listed = []
    for _ in range(30):
        beat = lease_pb2.KeepAliveRequest(lease=ref, health=health, elections=["py-raw"])
        (answer,) = list(lease.KeepAlive(iter([beat]), timeout=10))
        listed = [(l.election, l.candidate_id, l.term, l.fencing_token) for l in answer.leaderships]
        if answer.confirmed and listed == wanted:
            break
        time.sleep(0.1)
    assert listed == wanted, (listed, wanted)
    # Acknowledging a deposition needs a term, and a term still led undeposed is refused.
    expect_status(
        lambda: election.Resign(election_pb2.ResignRequest(key=key, stay_candidate=True), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "term: ",
    )
    expect_status(
        lambda: election.Resign(election_pb2.ResignRequest(key=key, term=status.term, stay_candidate=True), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
        "",
    )
    campaign.cancel()
    print(f"KeepAlive(elections=[py-raw]) lists term {status.term}; Resign(stay_candidate) refused while it leads")
    lease.Revoke(lease_pb2.RevokeRequest(lease=ref), timeout=10)
    expect_status(
        lambda: lease.TimeToLive(lease_pb2.TimeToLiveRequest(lease_id=granted.lease_id), timeout=10),
        grpc.StatusCode.NOT_FOUND,
        "lease not found",
    )
    print(f"Lease.Grant/KeepAlive/TimeToLive/Revoke: lease {granted.lease_id} confirmed, then revoked")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True, help="zkcoord gRPC address, host:port")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(pathlib.Path(out))
        with grpc.insecure_channel(args.addr) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            check_health(channel)
            check_reflection(channel)
            check_zkcoord_rpcs(channel)
    print("cross-language checks passed")


if __name__ == "__main__":
    main()
