"""A lease owner process for failure tests: grants a lease, prints `lease <id>`, then
heartbeats every --interval-ms until it is killed, its lease is lost, or --max-seconds pass.

Exit codes: 0 after --max-seconds, 3 when zkcoord says the lease is gone (NOT_FOUND).
"""

import argparse
import pathlib
import sys
import tempfile
import time

import grpc

from zkcoord_stubs import generate_stubs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--ttl-ms", type=int, required=True)
    parser.add_argument("--interval-ms", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(pathlib.Path(out))
        from zkcoord.v1 import common_pb2, lease_pb2, lease_pb2_grpc

        with grpc.insecure_channel(args.addr) as channel:
            stub = lease_pb2_grpc.LeaseStub(channel)
            granted = stub.Grant(lease_pb2.GrantRequest(ttl_ms=args.ttl_ms, owner="python-owner"), timeout=10)
            print(f"lease {granted.lease_id} {granted.secret}", flush=True)
            ref = common_pb2.LeaseRef(id=granted.lease_id, secret=granted.secret)
            deadline = time.monotonic() + args.max_seconds

            def heartbeats():
                while time.monotonic() < deadline:
                    yield lease_pb2.KeepAliveRequest(lease=ref)
                    time.sleep(args.interval_ms / 1000)

            try:
                for answer in stub.KeepAlive(heartbeats()):
                    print(f"beat confirmed={answer.confirmed}", flush=True)
            except grpc.RpcError as err:
                print(f"lease lost: {err.code().name} {err.details()}", flush=True)
                return 3 if err.code() == grpc.StatusCode.NOT_FOUND else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
