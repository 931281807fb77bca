//! Validation of the protobuf types shared by several services. Every function names the
//! offending field in its [`Error::InvalidArgument`].

use crate::{
    error::{Error, Result},
    pb::v1 as pb,
    validate::{self, Name},
};

/// A validated lease reference: id and (shape-checked) secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseCredentials {
    /// The lease id.
    pub id: i64,
    /// The presented secret.
    pub secret: String,
}

/// Field names of one `LeaseRef` occurrence.
pub struct LeaseFields {
    pub missing: &'static str,
    pub id: &'static str,
    pub secret: &'static str,
}

/// `lease` at the top level of a request.
pub const LEASE: LeaseFields = LeaseFields { missing: "lease", id: "lease.id", secret: "lease.secret" };

/// Validates a `LeaseRef`.
pub fn lease_ref(lease: Option<&pb::LeaseRef>, fields: &LeaseFields) -> Result<LeaseCredentials> {
    let lease = lease.ok_or(Error::invalid(fields.missing, "is required"))?;
    let id = validate::lease_id(fields.id, lease.id)?;
    validate::secret(fields.secret, &lease.secret)?;
    Ok(LeaseCredentials { id, secret: lease.secret.clone() })
}

/// Validates a `Health`; an absent health is SERVING with no checks.
pub fn health(health: Option<&pb::Health>, field: &'static str) -> Result<()> {
    let Some(health) = health else { return Ok(()) };
    if pb::HealthStatus::try_from(health.status).is_err()
        || health.checks.iter().any(|c| pb::HealthStatus::try_from(c.status).is_err())
    {
        return Err(Error::invalid(field, "has an unknown health status"));
    }
    validate::health_checks(field, health.checks.iter().map(|c| (c.name.as_str(), c.message.as_str())))
}

/// A validated `CandidateKey`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The election.
    pub election: Name,
    /// The candidate id.
    pub candidate_id: Name,
    /// The candidacy's lease.
    pub lease: LeaseCredentials,
}

/// Field names of one `CandidateKey` occurrence.
pub struct CandidateFields {
    pub missing: &'static str,
    pub election: &'static str,
    pub candidate_id: &'static str,
    pub lease: LeaseFields,
}

/// `key` at the top level of a request.
pub const KEY: CandidateFields = CandidateFields {
    missing: "key",
    election: "key.election",
    candidate_id: "key.candidate_id",
    lease: LeaseFields { missing: "key.lease", id: "key.lease.id", secret: "key.lease.secret" },
};

/// `from` in a `TransferRequest`.
pub const FROM: CandidateFields = CandidateFields {
    missing: "from",
    election: "from.election",
    candidate_id: "from.candidate_id",
    lease: LeaseFields { missing: "from.lease", id: "from.lease.id", secret: "from.lease.secret" },
};

/// Validates a `CandidateKey`.
pub fn candidate_key(key: Option<&pb::CandidateKey>, fields: &CandidateFields) -> Result<Candidate> {
    let key = key.ok_or(Error::invalid(fields.missing, "is required"))?;
    Ok(Candidate {
        election: Name::parse(fields.election, &key.election)?,
        candidate_id: Name::parse(fields.candidate_id, &key.candidate_id)?,
        lease: lease_ref(key.lease.as_ref(), &fields.lease)?,
    })
}

/// Validates a lock mode.
pub fn lock_mode(mode: i32) -> Result<pb::LockMode> {
    match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Unspecified) | Err(_) => Err(Error::invalid("mode", "must be EXCLUSIVE or SHARED")),
        Ok(mode) => Ok(mode),
    }
}

/// Most elections one heartbeat may name.
pub const MAX_HEARTBEAT_ELECTIONS: usize = 64;

/// Validates the elections a heartbeat names (at most [`MAX_HEARTBEAT_ELECTIONS`] names;
/// duplicates are ignored).
pub fn elections(field: &'static str, names: &[String]) -> Result<Vec<Name>> {
    if names.len() > MAX_HEARTBEAT_ELECTIONS {
        return Err(Error::invalid(field, "names more than 64 elections"));
    }
    let mut parsed = Vec::with_capacity(names.len());
    for name in names {
        let name = Name::parse(field, name)?;
        if !parsed.contains(&name) {
            parsed.push(name);
        }
    }
    Ok(parsed)
}
