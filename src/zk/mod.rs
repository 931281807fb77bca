//! ZooKeeper access: the session zkcoord keeps (re-established after expiry) and the layout
//! of zkcoord's znodes under its namespace.

pub mod layout;
pub mod session;

pub use session::{SessionStatus, ZkSession};
