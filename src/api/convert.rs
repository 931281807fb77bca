//! Conversions between protobuf and recipe types shared by several services.

use crate::{
    pb::v1 as pb,
    recipe::health::{Health, HealthCheck, HealthStatus},
};

/// A (validated) protobuf status; UNSPECIFIED counts as SERVING.
pub fn health_status_from_pb(status: i32) -> HealthStatus {
    match pb::HealthStatus::try_from(status) {
        Ok(pb::HealthStatus::Degraded) => HealthStatus::Degraded,
        Ok(pb::HealthStatus::NotServing) => HealthStatus::NotServing,
        _ => HealthStatus::Serving,
    }
}

/// The protobuf status.
pub fn health_status_to_pb(status: HealthStatus) -> pb::HealthStatus {
    match status {
        HealthStatus::Serving => pb::HealthStatus::Serving,
        HealthStatus::Degraded => pb::HealthStatus::Degraded,
        HealthStatus::NotServing => pb::HealthStatus::NotServing,
    }
}

/// A (validated) protobuf health; absent means SERVING with no checks.
pub fn health_from_pb(health: Option<&pb::Health>) -> Health {
    let Some(health) = health else { return Health::default() };
    Health {
        status: health_status_from_pb(health.status),
        checks: health
            .checks
            .iter()
            .map(|c| HealthCheck {
                name: c.name.clone(),
                status: health_status_from_pb(c.status),
                message: c.message.clone(),
            })
            .collect(),
    }
}

/// The protobuf health.
pub fn health_to_pb(health: &Health) -> pb::Health {
    pb::Health {
        status: health_status_to_pb(health.status).into(),
        checks: health
            .checks
            .iter()
            .map(|c| pb::HealthCheck {
                name: c.name.clone(),
                status: health_status_to_pb(c.status).into(),
                message: c.message.clone(),
            })
            .collect(),
    }
}

/// Milliseconds as the protobuf's signed integer.
pub fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
