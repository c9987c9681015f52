//! The secret every broker of a cluster shares, and the keys derived from
//! it: one authenticates gRPC calls between brokers, the other signs login
//! tokens, so a token from any broker works on every broker. Deriving two
//! keys keeps the signing key off the network.

use std::path::Path;

use ring::hmac;

use crate::cluster::ClusterError;

/// Minimum secret length in bytes.
const MIN_SECRET_BYTES: usize = 16;

/// Keys derived from the cluster secret.
#[derive(Clone)]
pub struct ClusterSecret {
    /// Sent by every gRPC call in the `x-ferry-cluster-secret` metadata entry.
    pub grpc_token: String,
    /// HS256 key for login tokens.
    pub token_key: Vec<u8>,
    /// Stored in ZooKeeper by the first broker, so that a broker started
    /// with another secret finds out at start instead of failing every
    /// call. It reveals nothing about the secret.
    pub verifier: String,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// Reads the secret from `path`; surrounding whitespace is ignored.
    pub fn load(path: &Path) -> Result<ClusterSecret, ClusterError> {
        let text = std::fs::read(path).map_err(|err| {
            ClusterError::Secret(format!("failed to read {}: {err}", path.display()))
        })?;
        let secret = text.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ClusterError::Secret(format!(
                "{} holds {} bytes; a cluster secret needs at least {MIN_SECRET_BYTES}",
                path.display(),
                secret.len()
            )));
        }
        Ok(ClusterSecret::from_bytes(secret))
    }

    /// Derives the keys from the secret's bytes.
    pub fn from_bytes(secret: &[u8]) -> ClusterSecret {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let grpc = hmac::sign(&key, b"ferry grpc token");
        let token = hmac::sign(&key, b"ferry login token key");
        let verifier = hmac::sign(&key, b"ferry cluster secret check");
        ClusterSecret {
            grpc_token: hex(grpc.as_ref()),
            token_key: token.as_ref().to_vec(),
            verifier: hex(verifier.as_ref()),
        }
    }

    /// Compares a received gRPC token with ours in constant time.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let expected = self.grpc_token.as_bytes();
        token.len() == expected.len()
            && token
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
