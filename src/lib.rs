//! zkcoord: a stateless gRPC coordination service in front of Apache ZooKeeper.
//!
//! The data flow is `api` (tonic services: validate → call → protobuf) over `recipe`
//! (coordination logic, no tonic types) over `zk` (the ZooKeeper session and the namespace
//! layout). Errors of every layer are one [`Error`] enum, mapped to `tonic::Status` in
//! `error`.
//!
//! The public modules are what the `zkcoord` binary, the bench and the integration tests
//! build on: [`cli`] and [`ctl`] (the command line and its client subcommands), [`config`],
//! [`server`] (start an instance, shut it down), [`telemetry`] and [`pb`]. Everything else is
//! private to the crate.

pub mod cli;
pub mod config;
pub mod ctl;
mod id;
pub mod pb;
pub mod server;
mod sync_util;
pub mod telemetry;

mod api;
mod authz;
mod codec;
mod error;
mod file_change;
mod limits;
mod metrics;
mod recipe;
mod tenant;
mod tls;
mod validate;
mod zk;

pub use error::Error;

/// zkcoord's state in ZooKeeper as the integration tests read and write it behind zkcoord's
/// back: znode paths, their ACL, the election records and the rules of names. Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::{validate::Name, zk::acl::world_writable};

    /// Znode paths (see `zk::layout`).
    pub mod layout {
        pub use crate::zk::layout::{candidacy_binding, candidate, election, lease};
    }

    /// The records of an election's znodes.
    pub mod record {
        pub use crate::recipe::election::record::{CandidateRecord, ElectionRecord, LeaderRecord, decode, encode};
    }
}
