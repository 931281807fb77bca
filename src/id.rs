//! Random identifiers and their hex encoding: lease ids and secrets, incarnation suffixes,
//! attachment numbers, lock hold ids, election values. All randomness comes from the
//! operating system's CSPRNG.

/// Fills `buf` with random bytes.
///
/// # Panics
/// When the operating system has no randomness to give, which zkcoord cannot work without.
pub fn fill_random(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator");
}

/// A random 64-bit number.
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill_random(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        let mut buf = [0u8; 32];
        fill_random(&mut buf);
        assert_eq!(hex(&buf).len(), 64);
        assert_ne!(random_u64(), random_u64());
    }
}
