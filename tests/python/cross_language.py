"""Cross-language proof: a Python grpcio client, with stubs generated from proto/ by
grpcio-tools, talks to a running zkcoord.

Run by tests/python.rs against a real zkcoord and ZooKeeper:
    python tests/python/cross_language.py --addr 127.0.0.1:PORT

Exits 0 when every check passes; raises (exit 1) on the first that does not.
"""

import argparse
import pathlib
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
PROTOS = ["zkcoord/v1/common.proto", "zkcoord/v1/lease.proto", "zkcoord/v1/election.proto", "zkcoord/v1/lock.proto"]


def generate_stubs(out_dir: pathlib.Path) -> None:
    """Generates the zkcoord.v1 Python stubs into out_dir and makes them importable."""
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + PROTOS) != 0:
        raise SystemExit("grpcio-tools could not compile proto/")
    sys.path.insert(0, str(out_dir))


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
