//! Generated protobuf and gRPC code for `zkcoord.v1` (see `proto/`).

#![allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]

/// The `zkcoord.v1` package.
pub mod v1 {
    tonic::include_proto!("zkcoord.v1");
}

/// The encoded file descriptor set of `proto/`, served by gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zkcoord_descriptor.bin"));

/// Fully qualified names of the zkcoord gRPC services.
pub const SERVICE_NAMES: [&str; 3] = ["zkcoord.v1.Lease", "zkcoord.v1.Election", "zkcoord.v1.Lock"];
