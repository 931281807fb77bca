//! Coordination recipes over ZooKeeper. Nothing here knows about gRPC: inputs are validated
//! domain values, outputs plain structs, failures [`crate::Error`].
//!
//! Imports go one way: [`instance`] and [`health`] (over [`crate::zk`]) → [`lease`], with its
//! bindings ([`lease::binding`]) → [`election`], [`lock`]. A recipe that ends with a lease
//! binds its znodes with a binding record; the lease never imports it.

pub mod election;
pub mod health;
pub mod instance;
pub mod lease;
pub mod lock;
pub mod shards;
