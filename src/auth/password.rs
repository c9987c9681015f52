//! PBKDF2-HMAC-SHA256 password hashes with a random per-user salt (ring).
//!
//! The iteration count is stored with each hash, so raising the default only
//! affects new users and old hashes keep verifying.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use serde::{Deserialize, Serialize};

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = digest::SHA256_OUTPUT_LEN;

/// A stored password hash, as it appears in the `UserRegistered` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    /// Algorithm name, `pbkdf2-sha256`.
    pub algorithm: String,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Salt, base64.
    pub salt: String,
    /// Derived key, base64.
    pub hash: String,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn create(password: &str, iterations: NonZeroU32) -> PasswordHash {
        let mut salt = [0u8; SALT_LEN];
        SystemRandom::new()
            .fill(&mut salt)
            .expect("the operating system random source failed");
        let mut hash = [0u8; HASH_LEN];
        pbkdf2::derive(ALGORITHM, iterations, &salt, password.as_bytes(), &mut hash);
        PasswordHash {
            algorithm: "pbkdf2-sha256".into(),
            iterations: iterations.get(),
            salt: BASE64.encode(salt),
            hash: BASE64.encode(hash),
        }
    }

    /// Checks `password` against this hash in constant time. A malformed
    /// stored hash never verifies.
    pub fn verify(&self, password: &str) -> bool {
        let (Some(iterations), Ok(salt), Ok(hash)) = (
            NonZeroU32::new(self.iterations),
            BASE64.decode(&self.salt),
            BASE64.decode(&self.hash),
        ) else {
            return false;
        };
        self.algorithm == "pbkdf2-sha256"
            && pbkdf2::verify(ALGORITHM, iterations, &salt, password.as_bytes(), &hash).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_same_password() {
        let iterations = NonZeroU32::new(1000).unwrap();
        let hash = PasswordHash::create("correct horse", iterations);
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("correct hors"));
        assert!(!hash.verify(""));
    }

    #[test]
    fn salts_differ_per_hash() {
        let iterations = NonZeroU32::new(1000).unwrap();
        let first = PasswordHash::create("same", iterations);
        let second = PasswordHash::create("same", iterations);
        assert_ne!(first.salt, second.salt);
        assert_ne!(first.hash, second.hash);
    }
}
