//! zkcoord: a stateless gRPC coordination service in front of Apache ZooKeeper.
//!
//! The data flow is `api` (tonic services: validate → call → protobuf) over `recipe`
//! (coordination logic, no tonic types) over `zk` (the ZooKeeper session and the namespace
//! layout). Errors of every layer are one [`Error`] enum, mapped to `tonic::Status` in
//! [`error`]. [`ctl`] holds the client subcommands of the `zkcoord` binary.

pub mod api;
pub mod authz;
pub mod cli;
pub mod codec;
pub mod config;
pub mod ctl;
pub mod error;
pub mod file_change;
pub mod id;
pub mod limits;
pub mod metrics;
pub mod pb;
pub mod recipe;
pub mod server;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod validate;
pub mod zk;

pub use error::Error;
