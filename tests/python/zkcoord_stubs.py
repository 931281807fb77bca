"""Generates the zkcoord.v1 Python stubs from proto/ with grpcio-tools."""

import pathlib
import sys

from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
PROTOS = ["zkcoord/v1/common.proto", "zkcoord/v1/lease.proto", "zkcoord/v1/election.proto", "zkcoord/v1/lock.proto", "zkcoord/v1/shards.proto"]


def generate_stubs(out_dir: pathlib.Path) -> None:
    """Generates the zkcoord.v1 Python stubs into out_dir and makes them importable."""
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_DIR}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + PROTOS) != 0:
        raise SystemExit("grpcio-tools could not compile proto/")
    sys.path.insert(0, str(out_dir))
