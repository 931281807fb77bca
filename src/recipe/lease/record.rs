//! The lease record: a persistent znode `/leases/<id>` holding JSON. Only grants, revokes,
//! expiries, claims (a lease moving to another instance) and health changes write it;
//! heartbeats never do.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    recipe::health::Health,
};

/// What ZooKeeper stores about a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The owner named at grant.
    pub owner: String,
    /// The granted ttl in milliseconds.
    pub ttl_ms: u64,
    /// Owner metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Hex SHA-256 of the lease secret.
    pub secret_sha256: String,
    /// When the lease was granted, Unix epoch milliseconds.
    pub granted_unix_ms: i64,
    /// The incarnation of the instance the lease is attached to (its liveness lives there).
    pub home: String,
    /// That instance's id.
    pub home_instance: String,
    /// Which attachment at `home` the lease belongs to: a random number each grant and claim
    /// writes. An instance can attach the same lease twice (the client left and came back);
    /// the older attachment's task must not act on the newer one's record (expire it, write
    /// health into it) just because it names the same instance.
    #[serde(default)]
    pub attachment: u64,
    /// The owner's health as of its last change.
    #[serde(default)]
    pub health: Health,
    /// The lease is being deleted in several transactions (a lease too large for one): no
    /// instance may claim it any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ending: bool,
}

impl LeaseRecord {
    /// The granted ttl.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// The znode data.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses znode data.
    ///
    /// # Errors
    /// [`Error::Internal`] when the data is not a lease record (someone else wrote it).
    pub fn decode(data: &[u8]) -> Result<Self> {
        serde_json::from_slice(data).map_err(|e| Error::Internal(format!("undecodable lease record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::health::{HealthCheck, HealthStatus};

    #[test]
    fn round_trips() {
        let record = LeaseRecord {
            owner: "node-a".into(),
            ttl_ms: 3000,
            metadata: [("zone".to_string(), "eu".to_string())].into(),
            secret_sha256: "ab".repeat(32),
            granted_unix_ms: 1,
            home: "i~1".into(),
            home_instance: "i".into(),
            attachment: 7,
            health: Health {
                status: HealthStatus::Degraded,
                checks: vec![HealthCheck {
                    name: "database".into(),
                    status: HealthStatus::NotServing,
                    message: "down".into(),
                }],
            },
            ending: false,
        };
        assert_eq!(LeaseRecord::decode(&record.encode()).expect("decodes"), record);
        assert!(LeaseRecord::decode(b"not json").is_err());
    }
}
