//! Lease ids and secrets: random, from the operating system's CSPRNG ([`crate::id`]). Only
//! the SHA-256 of a secret is stored in ZooKeeper.

use sha2::{Digest, Sha256};

use crate::id::{fill_random, hex, random_u64};

/// A random positive lease id (63 bits).
pub fn new_lease_id() -> i64 {
    let id = (random_u64() >> 1) as i64;
    id.max(1)
}

/// A new random attachment number (see `LeaseRecord::attachment`).
pub fn new_attachment() -> u64 {
    random_u64()
}

/// A new random secret: 32 bytes, hex-encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    hex(&bytes)
}

/// The hex SHA-256 of a secret, as stored in the lease record.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` matches `stored_digest`, compared in constant time.
pub fn matches(secret: &str, stored_digest: &str) -> bool {
    let presented = digest(secret);
    presented.len() == stored_digest.len()
        && presented.bytes().zip(stored_digest.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_and_secrets_verify() {
        for _ in 0..1000 {
            assert!(new_lease_id() > 0);
        }
        let secret = new_secret();
        assert_eq!(secret.len(), 64);
        let stored = digest(&secret);
        assert!(matches(&secret, &stored));
        assert!(!matches("guess", &stored));
        assert_ne!(new_secret(), secret);
    }
}
