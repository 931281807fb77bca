//! Generates the zkcoord.v1 gRPC client code from the repository's `proto/` with protox (pure
//! Rust, no protoc needed) and tonic-prost-build.

const PROTOS: &[&str] = &[
    "../../proto/zkcoord/v1/common.proto",
    "../../proto/zkcoord/v1/lease.proto",
    "../../proto/zkcoord/v1/election.proto",
    "../../proto/zkcoord/v1/lock.proto",
    "../../proto/zkcoord/v1/shards.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(PROTOS, ["../../proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(false).btree_map(".").compile_fds(fds)?;
    Ok(())
}
