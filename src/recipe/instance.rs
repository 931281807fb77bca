//! Registration of zkcoord instances: each process registers an ephemeral znode named by its
//! *incarnation* (instance id plus a random suffix, new for every process), so that a lease
//! attached to a crashed process is recognisably orphaned even if a new process reuses the
//! instance id.

use serde::{Deserialize, Serialize};

use crate::zk::{layout, session::Registration};

/// What an instance writes into its registration znode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The configured (or generated) instance id.
    pub instance_id: String,
    /// The gRPC address the instance listens on.
    pub addr: String,
    /// When the process started, Unix epoch milliseconds.
    pub started_unix_ms: i64,
    /// The ZooKeeper session timeout its current session negotiated (stamped by the session
    /// when it registers; absent in registrations of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
}

/// The identity of one zkcoord process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// `<instance id>~<random hex>`: the registration znode's name and a lease's `home`.
    pub name: String,
    /// The instance id.
    pub instance_id: String,
}

impl Incarnation {
    /// A fresh incarnation of `instance_id`.
    pub fn new(instance_id: &str) -> Self {
        let mut suffix = [0u8; 6];
        crate::id::fill_random(&mut suffix);
        Self { name: format!("{instance_id}~{}", crate::id::hex(&suffix)), instance_id: instance_id.into() }
    }

    /// The registration to create with every new session.
    pub fn registration(&self, addr: &str) -> Registration {
        let info = InstanceInfo {
            instance_id: self.instance_id.clone(),
            addr: addr.into(),
            started_unix_ms: now_unix_ms(),
            session_timeout_ms: None,
        };
        Registration { path: layout::instance(&self.name), data: serde_json::to_vec(&info).unwrap_or_default() }
    }
}

/// The current time in Unix epoch milliseconds.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
