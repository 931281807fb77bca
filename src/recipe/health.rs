//! The health a lease owner reports on its heartbeats.

use serde::{Deserialize, Serialize};

/// Overall or per-check health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// Works normally.
    #[default]
    Serving,
    /// Works with reduced capacity; still eligible for leadership.
    Degraded,
    /// Cannot do its work; not eligible for leadership.
    NotServing,
}

/// One named check, e.g. `database`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The check's name.
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// A short explanation.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// What an owner reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The overall status.
    pub status: HealthStatus,
    /// The checks behind it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<HealthCheck>,
}

impl Health {
    /// True unless the owner reports NOT_SERVING.
    pub fn is_eligible(&self) -> bool {
        self.status != HealthStatus::NotServing
    }
}
