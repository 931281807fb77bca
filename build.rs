//! Generates the zkcoord.v1 gRPC code from `proto/` with protox (pure Rust, no protoc needed)
//! and tonic-prost-build, and writes the encoded file descriptor set used by server reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "proto/zkcoord/v1/common.proto",
    "proto/zkcoord/v1/lease.proto",
    "proto/zkcoord/v1/election.proto",
    "proto/zkcoord/v1/lock.proto",
    "proto/zkcoord/v1/shards.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("zkcoord_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .btree_map(".")
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    Ok(())
}
