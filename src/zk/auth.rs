//! The credentials zkcoord's ZooKeeper session authenticates with (`zookeeper_auth`).
//!
//! Only ZooKeeper's `digest` scheme is supported: `digest:<user>:<password>`, the same string
//! `zkCli.sh`'s `addauth digest <user>:<password>` takes. The session sends it on every
//! (re)connection, and a new session after an expiry sends it again (see
//! [`crate::zk::session`]). The password never appears in `Debug` output, logs or errors.

use std::fmt;

/// The only supported authentication scheme.
pub const DIGEST: &str = "digest";

/// Digest credentials for ZooKeeper.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkAuth {
    user: String,
    password: String,
}

impl ZkAuth {
    /// Parses `digest:<user>:<password>` (surrounding whitespace, e.g. a file's trailing
    /// newline, is ignored). The user may not contain `:`; the password may.
    ///
    /// # Errors
    /// A message that never contains the value (it is a secret).
    pub fn parse(value: &str) -> Result<Self, String> {
        let bad = || "must be digest:<user>:<password> (only the digest scheme is supported)".to_owned();
        let rest = value.trim().strip_prefix("digest:").ok_or_else(bad)?;
        let (user, password) = rest.split_once(':').ok_or_else(bad)?;
        if user.is_empty() || password.is_empty() {
            return Err(bad());
        }
        if user.chars().chain(password.chars()).any(char::is_control) {
            return Err("user and password must not contain control characters".into());
        }
        Ok(Self { user: user.to_owned(), password: password.to_owned() })
    }

    /// The authentication scheme (`digest`).
    pub fn scheme(&self) -> &'static str {
        DIGEST
    }

    /// The user name (not secret; it names zkcoord's identity in ACLs).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// What the `auth` request carries: `<user>:<password>`.
    pub(crate) fn credentials(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }
}

impl fmt::Debug for ZkAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkAuth").field("scheme", &DIGEST).field("user", &self.user).field("password", &"***").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digest_and_hides_the_password() {
        let auth = ZkAuth::parse("digest:zkcoord:s3cr:et\n").expect("valid");
        assert_eq!((auth.scheme(), auth.user()), ("digest", "zkcoord"));
        assert_eq!(auth.credentials(), b"zkcoord:s3cr:et");
        let debug = format!("{auth:?}");
        assert!(debug.contains("zkcoord") && !debug.contains("s3cr"), "{debug}");
        for bad in
            ["", "digest:", "digest:user", "digest::pw", "digest:user:", "sasl:user:pw", "user:pw", "digest:u\0:p"]
        {
            let err = ZkAuth::parse(bad).expect_err(bad);
            assert!(!err.contains("pw"), "{err}");
        }
    }
}
