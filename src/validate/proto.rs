//! The rules of protobuf messages: the types several services share (`LeaseRef`,
//! `CandidateKey`, `Health`, enums) and the rules that relate fields of one request. Every
//! function names the offending field in its [`Error::InvalidArgument`]. The services in
//! `api` only translate what passed into recipe types.

use crate::{
    error::{Error, REQUIRED, Result},
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
#[derive(Clone, Copy, Debug)]
pub struct LeaseFields {
    /// The `LeaseRef` itself.
    pub missing: &'static str,
    /// Its `id`.
    pub id: &'static str,
    /// Its `secret`.
    pub secret: &'static str,
}

/// `lease` at the top level of a request.
pub const LEASE: LeaseFields = LeaseFields { missing: "lease", id: "lease.id", secret: "lease.secret" };

/// Validates a `LeaseRef`.
pub fn lease_ref(lease: Option<&pb::LeaseRef>, fields: &LeaseFields) -> Result<LeaseCredentials> {
    let lease = lease.ok_or(Error::invalid(fields.missing, REQUIRED))?;
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
#[derive(Clone, Copy, Debug)]
pub struct CandidateFields {
    /// The `CandidateKey` itself.
    pub missing: &'static str,
    /// Its `election`.
    pub election: &'static str,
    /// Its `candidate_id`.
    pub candidate_id: &'static str,
    /// Its `lease`.
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
    let key = key.ok_or(Error::invalid(fields.missing, REQUIRED))?;
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

/// Validates a preemption policy: `None` for UNSPECIFIED (accept the election's).
pub fn preempt(policy: i32) -> Result<Option<bool>> {
    match pb::PreemptPolicy::try_from(policy) {
        Ok(pb::PreemptPolicy::Unspecified) => Ok(None),
        Ok(pb::PreemptPolicy::Off) => Ok(Some(false)),
        Ok(pb::PreemptPolicy::On) => Ok(Some(true)),
        Err(_) => Err(Error::invalid("preempt", "is not a known policy")),
    }
}

/// Validates the term of a Resign that stays a candidate (`stay_candidate`): it is required.
pub fn step_down_term(term: i64) -> Result<i64> {
    if term == 0 {
        return Err(Error::invalid("term", "is required with stay_candidate"));
    }
    Ok(term)
}

/// Validates the `from` of a Transfer of election `election`: absent, or a key of that election.
pub fn transfer_from(from: Option<&pb::CandidateKey>, election: &Name) -> Result<Option<Candidate>> {
    let Some(from) = from else { return Ok(None) };
    let from = candidate_key(Some(from), &FROM)?;
    if from.election != *election {
        return Err(Error::invalid("from.election", "must equal election"));
    }
    Ok(Some(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(election: &str) -> pb::CandidateKey {
        pb::CandidateKey {
            election: election.into(),
            candidate_id: "c".into(),
            lease: Some(pb::LeaseRef { id: 1, secret: "s".into() }),
        }
    }

    #[test]
    fn request_rules() {
        assert_eq!(preempt(pb::PreemptPolicy::Unspecified.into()).ok(), Some(None));
        assert_eq!(preempt(pb::PreemptPolicy::On.into()).ok(), Some(Some(true)));
        assert!(matches!(preempt(99), Err(Error::InvalidArgument { field: "preempt", .. })));
        assert!(matches!(step_down_term(0), Err(Error::InvalidArgument { field: "term", .. })));
        assert_eq!(step_down_term(3).ok(), Some(3));
        let election = Name::parse("election", "e").expect("valid");
        assert!(matches!(transfer_from(None, &election), Ok(None)));
        assert!(matches!(transfer_from(Some(&key("e")), &election), Ok(Some(_))));
        let other = transfer_from(Some(&key("f")), &election);
        assert!(matches!(other, Err(Error::InvalidArgument { field: "from.election", .. })));
        let missing = candidate_key(None, &KEY);
        assert!(matches!(missing, Err(Error::InvalidArgument { field: "key", reason: "is required" })));
        assert!(lock_mode(pb::LockMode::Unspecified.into()).is_err());
    }
}
