//! Coordination recipes over ZooKeeper. Nothing here knows about gRPC: inputs are validated
//! domain values, outputs plain structs, failures [`crate::Error`].

pub mod election;
pub mod health;
pub mod instance;
pub mod lease;
pub mod lock;
pub mod shards;
