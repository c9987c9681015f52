//! Which brokers a client command talks to and which token it sends.
//!
//! Brokers come from `--broker`/`FERRY_BROKER`, else from the stored login,
//! else the local default. The token comes from `--token`/`FERRY_TOKEN`,
//! else from the stored login. The stored token is sent only when every
//! broker in use is one the login was made with, because another server
//! could use the token to act as this user.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::credentials::{self, StoredLogin};
use crate::cli::{ConnectionArgs, DEFAULT_BROKER};
use crate::client::{Client, ClientError, ClientOptions};

/// Origin of a command's token, for the hint after a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenSource {
    /// `--token` or `FERRY_TOKEN`.
    Option,
    /// The stored login.
    Stored,
    /// A stored login exists but for other brokers, so no token was sent.
    StoredForOtherBrokers,
    /// No token anywhere.
    Missing,
}

/// Connection settings of one command.
pub struct Context {
    /// Normalized broker base URLs, in failover order.
    brokers: Vec<String>,
    token: Option<String>,
    token_source: TokenSource,
    options: ClientOptions,
    /// The credentials file, or why there is none: the user may have no
    /// configuration directory.
    credentials_path: Result<PathBuf, String>,
    stored: Option<StoredLogin>,
}

impl Context {
    /// Resolves brokers and token from the options and the stored login.
    pub fn new(connection: ConnectionArgs) -> anyhow::Result<Context> {
        // Commands that need no login still work without a configuration
        // directory, so a missing one is an error only for login and logout.
        let credentials_path = credentials::path().map_err(|err| err.to_string());
        let stored = match credentials_path.as_deref().map(credentials::load) {
            Err(_) | Ok(Ok(None)) => None,
            Ok(Ok(Some(stored))) => Some(stored),
            Ok(Err(err)) => {
                eprintln!("warning: ignoring the stored login: {err:#}; `ferry login` replaces it");
                None
            }
        };

        let mut options = ClientOptions::default();
        if let Some(path) = &connection.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("failed to read CA certificates {}", path.display()))?;
            options.ca_certificates_pem = Some(pem);
        }

        let given: Vec<String> = connection
            .brokers
            .iter()
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect();
        let brokers = match (&stored, given.is_empty()) {
            (_, false) => given,
            (Some(stored), true) => stored.brokers.clone(),
            (None, true) => vec![DEFAULT_BROKER.to_string()],
        };
        let brokers = normalize(&brokers)?;

        let flag_token = connection.token.filter(|token| !token.is_empty());
        let (token, token_source) = match (flag_token, &stored) {
            (Some(token), _) => (Some(token), TokenSource::Option),
            (None, Some(stored)) if brokers.iter().all(|url| stored.brokers.contains(url)) => {
                (Some(stored.token.clone()), TokenSource::Stored)
            }
            (None, Some(_)) => (None, TokenSource::StoredForOtherBrokers),
            (None, None) => (None, TokenSource::Missing),
        };

        Ok(Context {
            brokers,
            token,
            token_source,
            options,
            credentials_path,
            stored,
        })
    }

    /// Creates a client of the brokers that sends the token, if there is
    /// one.
    pub fn client(&self) -> anyhow::Result<Client> {
        let client = self.anonymous_client()?;
        Ok(match &self.token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        })
    }

    /// Creates a client of the brokers that sends no token.
    pub fn anonymous_client(&self) -> anyhow::Result<Client> {
        Ok(Client::with_options(&self.brokers, &self.options)?)
    }

    /// Returns the normalized broker base URLs.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// Returns the token that commands send, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Returns whether the token came from the stored login.
    pub fn token_is_stored(&self) -> bool {
        self.token_source == TokenSource::Stored
    }

    /// Returns the stored login, if there is one.
    pub fn stored(&self) -> Option<&StoredLogin> {
        self.stored.as_ref()
    }

    /// Returns the path where `ferry login` stores the token.
    ///
    /// # Errors
    ///
    /// The user has no configuration directory and `FERRY_CONFIG_DIR` is
    /// not set.
    pub fn credentials_path(&self) -> anyhow::Result<&Path> {
        self.credentials_path
            .as_deref()
            .map_err(|message| anyhow::anyhow!("{message}"))
    }

    /// Suggests what to do about `err` when there is a likely fix.
    pub fn hint(&self, err: &anyhow::Error) -> Option<String> {
        let client_error = err.downcast_ref::<ClientError>()?;
        if let ClientError::Unreachable { failures } = client_error {
            if failures
                .iter()
                .any(|failure| failure.error.contains("certificate"))
            {
                return Some(
                    "the broker's TLS certificate is not trusted; pass the CA that signed it with --ca-cert FILE"
                        .to_string(),
                );
            }
            return Some(format!(
                "is a broker running at {}? Start one with `ferry serve` or pass --broker URL",
                self.brokers.join(", ")
            ));
        }
        if client_error.status() != Some(reqwest::StatusCode::UNAUTHORIZED) {
            return None;
        }
        let hint = match self.token_source {
            TokenSource::Missing => {
                "log in with `ferry login USERNAME`, or pass a token with --token".to_string()
            }
            TokenSource::Stored => {
                "the stored token expired or was revoked; log in again with `ferry login USERNAME`"
                    .to_string()
            }
            TokenSource::StoredForOtherBrokers => format!(
                "the stored login is for {}, so no token was sent to {}; log in to these brokers with `ferry login USERNAME`",
                self.stored
                    .as_ref()
                    .map(|stored| stored.brokers.join(", "))
                    .unwrap_or_default(),
                self.brokers.join(", ")
            ),
            TokenSource::Option => {
                "the broker rejected the token given by --token or FERRY_TOKEN".to_string()
            }
        };
        Some(hint)
    }
}

/// Parses the URLs the way the client does and returns their text, so
/// that `127.0.0.1:8080` and `http://127.0.0.1:8080/` compare equal.
fn normalize(brokers: &[String]) -> anyhow::Result<Vec<String>> {
    let client = Client::new(brokers)?;
    Ok(client.brokers().iter().map(|url| url.to_string()).collect())
}
