//! Generates etcd's gRPC client code (KV, Lease, Maintenance, Lock, Election) from the vendored
//! `proto/` with protox (pure Rust, no protoc needed) and tonic-prost-build.

const PROTOS: &[&str] = &[
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
