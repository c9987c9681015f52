//! Login tokens: HS256-signed JWTs with an expiry and a unique id.
//!
//! The signing secret comes from a configured file or is generated once into
//! the data directory with mode 0600. Log-out revokes a token by its id
//! (`jti`); the catalog keeps revoked ids until they expire anyway.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const SECRET_LEN: usize = 32;

/// Claims carried by a Ferry token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token id, used to revoke this token.
    pub jti: String,
}

/// Why a token was rejected or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, malformed token or expired.
    #[error("invalid or expired token")]
    Invalid,
    /// The signing secret file could not be read or created.
    #[error("failed to load the token signing secret from {path}: {source}")]
    Secret {
        /// The secret file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The signing library failed.
    #[error("failed to sign token: {0}")]
    Sign(String),
}

/// Issues and verifies tokens with one secret.
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl TokenIssuer {
    /// Loads the secret from `secret_file`, or from (creating if missing)
    /// `<data_dir>/jwt-secret` when no file is configured.
    ///
    /// # Errors
    ///
    /// The file cannot be read or created, or is empty.
    pub fn load(
        secret_file: Option<&Path>,
        data_dir: &Path,
        ttl: Duration,
    ) -> Result<TokenIssuer, TokenError> {
        let secret = match secret_file {
            Some(path) => read_secret(path)?,
            None => load_or_create_secret(&data_dir.join("jwt-secret"))?,
        };
        Self::from_secret(&secret, ttl)
    }

    /// Builds an issuer from raw secret bytes.
    pub fn from_secret(secret: &[u8], ttl: Duration) -> Result<TokenIssuer, TokenError> {
        let encoding =
            EncodingKey::from_secret(secret).map_err(|err| TokenError::Sign(err.to_string()))?;
        let decoding =
            DecodingKey::from_secret(secret).map_err(|err| TokenError::Sign(err.to_string()))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(TokenIssuer {
            encoding,
            decoding,
            validation,
            ttl,
        })
    }

    /// Signs a new token for `username`; returns it with its claims.
    pub fn issue(&self, username: &str) -> Result<(String, Claims), TokenError> {
        let now = unix_seconds(SystemTime::now());
        let claims = Claims {
            sub: username.to_string(),
            iat: now,
            exp: now + self.ttl.as_secs().max(1),
            jti: random_id(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| TokenError::Sign(err.to_string()))?;
        Ok((token, claims))
    }

    /// Checks the signature and expiry of `token` and returns its claims.
    /// Revocation is checked by the caller against the catalog.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_secret(path: &Path) -> Result<Vec<u8>, TokenError> {
    let secret = std::fs::read(path).map_err(|source| TokenError::Secret {
        path: path.to_path_buf(),
        source,
    })?;
    let trimmed = secret.trim_ascii().to_vec();
    if trimmed.is_empty() {
        return Err(TokenError::Secret {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        });
    }
    Ok(trimmed)
}

fn load_or_create_secret(path: &Path) -> Result<Vec<u8>, TokenError> {
    if path.exists() {
        return read_secret(path);
    }
    let mut bytes = [0u8; SECRET_LEN];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system random source failed");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret_error = |source| TokenError::Secret {
        path: path.to_path_buf(),
        source,
    };
    // create_new: two brokers racing on one directory must not overwrite
    // each other's secret; the loser reads the winner's.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => return read_secret(path),
        Err(err) => return Err(secret_error(err)),
    };
    file.write_all(hex.as_bytes()).map_err(secret_error)?;
    file.sync_all().map_err(secret_error)?;
    Ok(hex.into_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn issued_token_verifies() {
        let issuer = TokenIssuer::from_secret(b"secret", Duration::from_secs(60)).unwrap();
        let (token, claims) = issuer.issue("alice").unwrap();
        let verified = issuer.verify(&token).unwrap();
        assert_eq!(verified.sub, "alice");
        assert_eq!(verified.jti, claims.jti);
    }

    #[test]
    fn token_from_other_secret_rejected() {
        let issuer = TokenIssuer::from_secret(b"secret", Duration::from_secs(60)).unwrap();
        let other = TokenIssuer::from_secret(b"other", Duration::from_secs(60)).unwrap();
        let (token, _) = other.issue("alice").unwrap();
        assert!(issuer.verify(&token).is_err());
        assert!(issuer.verify("not.a.token").is_err());
    }

    #[test]
    fn generated_secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let first = TokenIssuer::load(None, dir.path(), ttl).unwrap();
        let (token, _) = first.issue("bob").unwrap();
        let second = TokenIssuer::load(None, dir.path(), ttl).unwrap();
        assert!(second.verify(&token).is_ok());
        let mode = std::fs::metadata(dir.path().join("jwt-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
