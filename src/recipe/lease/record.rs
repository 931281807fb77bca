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
    /// How many times the stored health turned eligible for leadership or not (see
    /// [`Health::is_eligible`]): with `health`, it tells an elector whether the stored
    /// eligibility held since it last read the record, even if it missed writes in between
    /// (health hysteresis, `docs/election.md`). Kept across claims.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eligibility_changes: u64,
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

    /// Stores `health`, counting a change of eligibility in
    /// [`LeaseRecord::eligibility_changes`]; returns whether anything changed.
    pub fn set_health(&mut self, health: &Health) -> bool {
        if self.health == *health {
            return false;
        }
        if self.health.is_eligible() != health.is_eligible() {
            self.eligibility_changes = self.eligibility_changes.wrapping_add(1);
        }
        self.health = health.clone();
        true
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

fn is_zero(n: &u64) -> bool {
    *n == 0
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
            eligibility_changes: 3,
            ending: false,
        };
        assert_eq!(LeaseRecord::decode(&record.encode()).expect("decodes"), record);
        assert!(LeaseRecord::decode(b"not json").is_err());
    }

    #[test]
    fn only_changes_of_eligibility_are_counted() {
        let mut record = LeaseRecord::decode(
            br#"{"owner":"o","ttl_ms":1000,"secret_sha256":"","granted_unix_ms":0,"home":"h","home_instance":"i"}"#,
        )
        .expect("a record without the newer fields decodes");
        let health = |status| Health { status, checks: vec![] };
        assert!(!record.set_health(&health(HealthStatus::Serving)), "unchanged");
        assert!(record.set_health(&health(HealthStatus::Degraded)));
        assert_eq!(record.eligibility_changes, 0, "DEGRADED is still eligible");
        assert!(record.set_health(&health(HealthStatus::NotServing)));
        assert!(record.set_health(&health(HealthStatus::Serving)));
        assert_eq!(record.eligibility_changes, 2);
        assert!(!String::from_utf8(record.encode()).expect("utf-8").contains("ending"));
    }
}
