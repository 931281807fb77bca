//! Validation of everything a client sends, done before anything reaches ZooKeeper.
//!
//! Names (election names, lock keys, owner and candidate ids, metadata keys, health check
//! names) become znode path segments, so they are restricted to a charset that contains no
//! `/`, no control characters and cannot spell `.` or `..`: 1 to [`MAX_NAME_LEN`] bytes of
//! ASCII letters, digits and `. _ - : @`, starting with a letter or a digit. A validated
//! [`Name`] is therefore always exactly one path segment inside zkcoord's namespace.
//!
//! This module holds the rules of single values; [`proto`] those of protobuf messages. The
//! gRPC services apply them and only translate what passed.

pub mod page;
pub mod proto;

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::error::{AT_MOST_128_BYTES, EMPTY, Error, Result};

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// The longest election value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// The most metadata entries on a lease.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// The longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// The most metadata bytes (keys and values) on a lease.
pub const MAX_METADATA_TOTAL_LEN: usize = 8 * 1024;
/// The most health checks on one heartbeat.
pub const MAX_HEALTH_CHECKS: usize = 32;
/// The longest health check message, in bytes.
pub const MAX_HEALTH_MESSAGE_LEN: usize = 256;
/// The shortest lease ttl.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest lease ttl.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The longest health hysteresis of a campaign (`unhealthy_for_ms`, `healthy_for_ms`).
pub const MAX_HYSTERESIS: Duration = Duration::from_secs(3600);
/// The best (numerically lowest) election priority.
pub const MIN_PRIORITY: i32 = 0;
/// The worst (numerically highest) election priority.
pub const MAX_PRIORITY: i32 = 1000;
/// The most keys in one lock request.
pub const MAX_LOCK_KEYS: usize = 1000;
/// The longest lease secret, in bytes.
pub const MAX_SECRET_LEN: usize = 128;
/// The longest hold id (lock handle) looked up, in bytes.
pub const MAX_HOLD_LEN: usize = 256;
/// Most elections one heartbeat may name.
pub const MAX_HEARTBEAT_ELECTIONS: usize = 64;

/// A validated name: exactly one safe znode path segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Validates `value` as the name in request field `field`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `field` when the name is empty, too long, or has a
    /// character outside the allowed set.
    pub fn parse(field: &'static str, value: &str) -> Result<Self> {
        check_name(field, value)?;
        Ok(Self(value.to_owned()))
    }

    /// The name as a string (also its znode path segment).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_name(field: &'static str, value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(Error::invalid(field, EMPTY));
    };
    if bytes.len() > MAX_NAME_LEN {
        return Err(Error::invalid(field, AT_MOST_128_BYTES));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(Error::invalid(field, "must start with an ASCII letter or digit"));
    }
    if !bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@')) {
        return Err(Error::invalid(field, "may contain only ASCII letters, digits and . _ - : @"));
    }
    Ok(())
}

/// Validates a lease ttl given in milliseconds.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is outside [`MIN_TTL`]..=[`MAX_TTL`].
pub fn ttl(field: &'static str, ttl_ms: i64) -> Result<Duration> {
    let min = MIN_TTL.as_millis() as i64;
    let max = MAX_TTL.as_millis() as i64;
    if !(min..=max).contains(&ttl_ms) {
        return Err(Error::invalid(field, "must be from 1000 (1 s) to 3600000 (1 h)"));
    }
    Ok(Duration::from_millis(ttl_ms as u64))
}

/// Validates a lease id.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is not positive.
pub fn lease_id(field: &'static str, id: i64) -> Result<i64> {
    if id <= 0 {
        return Err(Error::invalid(field, "must be a positive lease id"));
    }
    Ok(id)
}

/// Validates the shape of a lease secret (whether it is the right one is the lease recipe's
/// business).
///
/// # Errors
/// [`Error::InvalidArgument`] when it is empty or too long.
pub fn secret(field: &'static str, secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(Error::invalid(field, EMPTY));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(Error::invalid(field, AT_MOST_128_BYTES));
    }
    Ok(())
}

/// Validates lease metadata.
///
/// # Errors
/// [`Error::InvalidArgument`] when there are too many entries, a key is not a valid name, a
/// value is too long, or the whole is too large.
pub fn metadata(field: &'static str, metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(field, "must have at most 64 entries"));
    }
    let mut total = 0;
    for (key, value) in metadata {
        check_name(field, key)?;
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(Error::invalid(field, "values must be at most 1024 bytes"));
        }
        total += key.len() + value.len();
    }
    if total > MAX_METADATA_TOTAL_LEN {
        return Err(Error::invalid(field, "must be at most 8192 bytes in all"));
    }
    Ok(())
}

/// Validates an election value.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is larger than [`MAX_VALUE_LEN`].
pub fn value(field: &'static str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::invalid(field, "must be at most 65536 bytes"));
    }
    Ok(())
}

/// Validates an election priority.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is outside [`MIN_PRIORITY`]..=[`MAX_PRIORITY`].
pub fn priority(field: &'static str, priority: i32) -> Result<i32> {
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(Error::invalid(field, "must be from 0 (best) to 1000 (worst)"));
    }
    Ok(priority)
}

/// Validates a health hysteresis duration of a campaign (`unhealthy_for_ms`,
/// `healthy_for_ms`).
///
/// # Errors
/// [`Error::InvalidArgument`] when it is outside 0..=[`MAX_HYSTERESIS`].
pub fn hysteresis(field: &'static str, ms: i64) -> Result<Duration> {
    let max = MAX_HYSTERESIS.as_millis() as i64;
    if !(0..=max).contains(&ms) {
        return Err(Error::invalid(field, "must be from 0 to 3600000 (1 h)"));
    }
    Ok(Duration::from_millis(ms as u64))
}

/// Validates a health check list: names, message lengths, count and uniqueness.
///
/// # Errors
/// [`Error::InvalidArgument`] on the first violation.
pub fn health_checks<'a>(field: &'static str, checks: impl ExactSizeIterator<Item = (&'a str, &'a str)>) -> Result<()> {
    if checks.len() > MAX_HEALTH_CHECKS {
        return Err(Error::invalid(field, "must have at most 32 checks"));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, message) in checks {
        check_name(field, name)?;
        if message.len() > MAX_HEALTH_MESSAGE_LEN {
            return Err(Error::invalid(field, "messages must be at most 256 bytes"));
        }
        if !seen.insert(name) {
            return Err(Error::invalid(field, "check names must be unique"));
        }
    }
    Ok(())
}

/// Validates the key set of a lock request: 1 to [`MAX_LOCK_KEYS`] distinct names.
///
/// # Errors
/// [`Error::InvalidArgument`] when the list is empty, too long, has an invalid or a duplicate
/// key.
pub fn lock_keys(field: &'static str, keys: &[String]) -> Result<Vec<Name>> {
    if keys.is_empty() {
        return Err(Error::invalid(field, "must name at least one key"));
    }
    if keys.len() > MAX_LOCK_KEYS {
        return Err(Error::invalid(field, "must name at most 1000 keys"));
    }
    let names = keys.iter().map(|k| Name::parse(field, k)).collect::<Result<Vec<_>>>()?;
    let mut sorted: Vec<&Name> = names.iter().collect();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid(field, "must not repeat a key"));
    }
    Ok(names)
}

/// Validates a wait timeout in milliseconds; `0` means no timeout.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is negative.
pub fn wait_timeout(field: &'static str, timeout_ms: i64) -> Result<Option<Duration>> {
    match timeout_ms {
        ..0 => Err(Error::invalid(field, "must not be negative")),
        0 => Ok(None),
        ms => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

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

/// Validates a hold id (the handle of Unlock) to look up.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is empty; [`Error::HoldNotFound`] when it is too long or
/// has a character other than printable ASCII (no such hold can exist).
pub fn hold(field: &'static str, hold: &str) -> Result<()> {
    if hold.is_empty() {
        return Err(Error::invalid(field, EMPTY));
    }
    if hold.len() > MAX_HOLD_LEN || !hold.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::HoldNotFound);
    }
    Ok(())
}

/// Validates the key of a Holders call: a name, or with `prefix` the start of one; an empty
/// prefix lists every key.
///
/// # Errors
/// [`Error::InvalidArgument`] when it is neither.
pub fn holders_key(field: &'static str, key: &str, prefix: bool) -> Result<()> {
    // A non-empty prefix must itself be a valid name start.
    if !(prefix && key.is_empty()) {
        Name::parse(field, key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["a", "ledger-node-1", "orders:42", "node@host.example", "A_b.c-d:e@f", &"x".repeat(128)] {
            assert!(Name::parse("f", name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_names_that_could_escape_or_confuse() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "/",
            "a/b",
            "/abs",
            "-lead",
            ".hidden",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            "a\\b",
            "zookeeper/quota",
            &"x".repeat(129),
        ] {
            let err = Name::parse("key", name).expect_err(name);
            assert!(matches!(err, Error::InvalidArgument { field: "key", .. }), "{name}: {err}");
        }
    }

    #[test]
    fn ttl_bounds() {
        assert!(ttl("ttl_ms", 999).is_err());
        assert_eq!(ttl("ttl_ms", 1000).ok(), Some(Duration::from_secs(1)));
        assert_eq!(ttl("ttl_ms", 3_600_000).ok(), Some(Duration::from_secs(3600)));
        assert!(ttl("ttl_ms", 3_600_001).is_err());
        assert!(ttl("ttl_ms", -5).is_err());
    }

    #[test]
    fn lock_keys_rules() {
        let keys = |ks: &[&str]| ks.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(lock_keys("keys", &[]).is_err());
        assert!(lock_keys("keys", &keys(&["a", "b", "a"])).is_err());
        assert!(lock_keys("keys", &keys(&["a", "../b"])).is_err());
        assert_eq!(lock_keys("keys", &keys(&["z", "y", "x"])).map(|v| v.len()).ok(), Some(3));
        let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
        assert!(lock_keys("keys", &many).is_err());
        assert!(lock_keys("keys", &many[..1000]).is_ok());
    }

    #[test]
    fn metadata_limits() {
        let mut md = BTreeMap::new();
        md.insert("zone".to_string(), "eu-1".to_string());
        assert!(metadata("metadata", &md).is_ok());
        md.insert("bad/key".to_string(), String::new());
        assert!(metadata("metadata", &md).is_err());
        md.remove("bad/key");
        md.insert("big".to_string(), "x".repeat(1025));
        assert!(metadata("metadata", &md).is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(metadata("metadata", &many).is_err());
        let large: BTreeMap<_, _> = (0..10).map(|i| (format!("k{i}"), "x".repeat(1000))).collect();
        assert!(metadata("metadata", &large).is_err());
    }

    #[test]
    fn other_limits() {
        assert!(priority("priority", -1).is_err());
        assert!(priority("priority", 1001).is_err());
        assert!(priority("priority", 0).is_ok());
        assert!(value("value", &vec![0; MAX_VALUE_LEN]).is_ok());
        assert!(value("value", &vec![0; MAX_VALUE_LEN + 1]).is_err());
        assert!(wait_timeout("t", -1).is_err());
        assert_eq!(wait_timeout("t", 0).ok(), Some(None));
        assert!(lease_id("id", 0).is_err());
        assert!(secret("s", "").is_err());
        let dup = [("db", ""), ("db", "")];
        assert!(health_checks("checks", dup.into_iter()).is_err());
        assert!(matches!(hold("handle", ""), Err(Error::InvalidArgument { field: "handle", .. })));
        assert!(matches!(hold("handle", "a b"), Err(Error::HoldNotFound)));
        assert!(matches!(hold("handle", &"0".repeat(MAX_HOLD_LEN + 1)), Err(Error::HoldNotFound)));
        assert!(hold("handle", "00000000000000ff").is_ok());
        assert!(holders_key("key", "", true).is_ok(), "an empty prefix lists every key");
        assert!(holders_key("key", "", false).is_err());
        assert!(holders_key("key", "../", true).is_err());
        assert_eq!(elections("elections", &["a".into(), "a".into()]).map(|v| v.len()).ok(), Some(1));
        assert!(elections("elections", &vec!["a".to_owned(); MAX_HEARTBEAT_ELECTIONS + 1]).is_err());
    }
}
