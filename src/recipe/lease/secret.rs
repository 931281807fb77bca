//! Lease ids and secrets: random, from the operating system's CSPRNG. Only the SHA-256 of a
//! secret is stored in ZooKeeper.

use sha2::{Digest, Sha256};

/// Fills `buf` with random bytes.
///
/// # Panics
/// When the operating system has no randomness to give, which zkcoord cannot work without.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator");
}

/// A random positive lease id (63 bits).
pub fn new_lease_id() -> i64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    let id = (u64::from_le_bytes(bytes) >> 1) as i64;
    id.max(1)
}

/// A new random attachment number (see `LeaseRecord::attachment`).
pub fn new_attachment() -> u64 {
    let mut buf = [0u8; 8];
    fill_random(&mut buf);
    u64::from_le_bytes(buf)
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

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
