//! ZooKeeper access: the session zkcoord keeps (re-established after expiry), its credentials,
//! the ACL of what it creates, the layout of zkcoord's znodes under its namespace, and the one
//! typed, traced way to send requests ([`ops::Zk`]).

pub mod acl;
pub mod auth;
pub mod foreign;
pub mod layout;
pub mod ops;
pub mod proof;
pub mod proven;
pub mod session;

pub use auth::ZkAuth;
pub use ops::{OpFailed, RETRY_PAUSE, Zk, ZkResult};
pub use proof::{Proof, ProofTiming};
pub use session::{SessionStatus, ZkConfig, ZkSession};
