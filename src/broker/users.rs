//! Accounts and sessions: register, log in, log out, authenticate, and the
//! owner's grants on private topics and queues.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use tracing::info;

use crate::auth::{PasswordHash, TokenError};
use crate::broker::error::{BrokerError, Result};
use crate::broker::{now_ms, read_lock, Broker};
use crate::meta::names::validate_name;
use crate::meta::{MetaEvent, Permission, ResourceKind};

/// Minimum password length, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Maximum password length, in bytes; bounds the hashing work per request.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most password hashes computed at once (registrations and log-ins).
pub const MAX_CONCURRENT_HASHES: usize = 4;

/// How long a registration or log-in waits for a hashing slot before it
/// is answered with 429.
pub const HASH_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User name.
    pub username: String,
    /// Id of the token the caller presented.
    pub token_id: String,
    /// Expiry of that token, seconds since the Unix epoch.
    pub expires_at: u64,
}

/// A new login token.
#[derive(Debug, Clone)]
pub struct Token {
    /// The bearer token.
    pub token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Broker {
    /// Registers a user.
    pub async fn register(&self, username: &str, password: &str) -> Result<()> {
        validate_name(username, false)
            .map_err(|message| BrokerError::invalid("username", message))?;
        check_password(password)?;
        if read_lock(&self.catalog).user(username).is_some() {
            return Err(BrokerError::AlreadyExists {
                kind: "user",
                name: username.to_string(),
            });
        }
        let iterations =
            NonZeroU32::new(self.config.password_iterations).expect("validated as non-zero");
        let password = password.to_string();
        let hash = self
            .hash_password(move || PasswordHash::create(&password, iterations))
            .await?;
        self.commit_meta(
            |_| MetaEvent::UserRegistered {
                username: username.to_string(),
                password: hash,
                created_ms: now_ms(),
            },
            |_| Ok(()),
        )
        .await?;
        info!(user = %username, "user registered");
        Ok(())
    }

    /// Checks a user's password and issues a token.
    pub async fn login(&self, username: &str, password: &str) -> Result<Token> {
        let stored = read_lock(&self.catalog)
            .user(username)
            .map(|user| user.password.clone());
        let known = stored.is_some();
        // An unknown user still costs one hash, so response times do not
        // tell which user names exist.
        let stored = stored.unwrap_or_else(|| dummy_hash(self.config.password_iterations).clone());
        let password = password.to_string();
        let valid = self.hash_password(move || stored.verify(&password)).await?;
        if !(known && valid) {
            return Err(BrokerError::Unauthenticated(
                "invalid user name or password".into(),
            ));
        }
        let (token, claims) = self
            .tokens
            .issue(username)
            .map_err(|err| BrokerError::Internal(err.to_string()))?;
        Ok(Token {
            token,
            expires_at: claims.exp,
        })
    }

    /// Runs password hashing work on the blocking pool, at most
    /// [`MAX_CONCURRENT_HASHES`] at a time. A request that cannot start
    /// within [`HASH_QUEUE_WAIT`] gets [`BrokerError::Throttled`], so a flood
    /// of registrations or log-ins cannot take every core and thread.
    async fn hash_password<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = tokio::time::timeout(HASH_QUEUE_WAIT, self.hash_permits.acquire())
            .await
            .map_err(|_| {
                BrokerError::Throttled(
                    "too many log-ins and registrations in progress; retry in a few seconds".into(),
                )
            })?
            .map_err(|_| BrokerError::Internal("password hashing is closed".into()))?;
        let result = tokio::task::spawn_blocking(work)
            .await
            .map_err(|err| BrokerError::Internal(format!("hashing task failed: {err}")))?;
        drop(permit);
        Ok(result)
    }

    /// Revokes the token `principal` authenticated with, everywhere.
    pub async fn logout(&self, principal: &Principal) -> Result<()> {
        self.commit_meta(
            |_| MetaEvent::TokenRevoked {
                token_id: principal.token_id.clone(),
                expires_at: principal.expires_at,
            },
            |_| Ok(()),
        )
        .await
    }

    /// Verifies a bearer token: signature, expiry, log-out, and that the
    /// user still exists.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let claims = self.tokens.verify(token).map_err(|err| match err {
            TokenError::Invalid => BrokerError::Unauthenticated(
                "invalid or expired token; log in again with POST /v1/tokens".into(),
            ),
            other => BrokerError::Internal(other.to_string()),
        })?;
        let catalog = read_lock(&self.catalog);
        if catalog.is_token_revoked(&claims.jti) {
            return Err(BrokerError::Unauthenticated(
                "token was logged out; log in again with POST /v1/tokens".into(),
            ));
        }
        if catalog.user(&claims.sub).is_none() {
            return Err(BrokerError::Unauthenticated(
                "token names an unknown user".into(),
            ));
        }
        Ok(Principal {
            username: claims.sub,
            token_id: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// Grants (`add`) or revokes `permission` on a topic or queue to `user`;
    /// only the owner may.
    pub async fn set_grant(
        &self,
        principal: &Principal,
        kind: ResourceKind,
        name: &str,
        user: &str,
        permission: Permission,
        add: bool,
    ) -> Result<()> {
        let owner = {
            let catalog = read_lock(&self.catalog);
            let username = &principal.username;
            match kind {
                ResourceKind::Topic => {
                    Broker::authorize(catalog.topic(name), "topic", name, username, None)?;
                    catalog.topic(name).map(|t| t.spec.owner.clone())
                }
                ResourceKind::Queue => {
                    Broker::authorize(catalog.queue(name), "queue", name, username, None)?;
                    catalog.queue(name).map(|q| q.spec.owner.clone())
                }
            }
        };
        if owner.as_deref() != Some(principal.username.as_str()) {
            return Err(BrokerError::Forbidden(format!(
                "only the owner may change grants on `{name}`"
            )));
        }
        let (name, user) = (name.to_string(), user.to_string());
        self.commit_meta(
            |_| {
                if add {
                    MetaEvent::GrantAdded {
                        kind,
                        name,
                        user,
                        permission,
                    }
                } else {
                    MetaEvent::GrantRevoked {
                        kind,
                        name,
                        user,
                        permission,
                    }
                }
            },
            |_| Ok(()),
        )
        .await
    }
}

fn check_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(BrokerError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_CHARS} characters long"),
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(BrokerError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_BYTES} bytes long"),
        ));
    }
    Ok(())
}

fn dummy_hash(iterations: u32) -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        PasswordHash::create("not a password of any user", iterations)
    })
}
