//! `register`, `login`, `logout` and `whoami`.

use std::io::{BufRead, IsTerminal};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Args;
use serde::Deserialize;
use serde_json::json;

use crate::cli::context::Context;
use crate::cli::credentials::{self, StoredLogin};
use crate::cli::output::print_json;

/// Password source of a command.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Password; it shows in the process list, so prefer FERRY_PASSWORD,
    /// --password-stdin or the prompt [default: prompt when standard input
    /// is a terminal]
    #[arg(long, env = "FERRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Read the password from the first line of standard input
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
}

/// Options of `ferry register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// User name, 1 to 200 characters of [A-Za-z0-9._-]
    username: String,

    #[command(flatten)]
    password: PasswordArgs,
}

/// Options of `ferry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name
    username: String,

    #[command(flatten)]
    password: PasswordArgs,

    /// Also print the token and its expiry as JSON on standard output, for
    /// FERRY_TOKEN in scripts
    #[arg(long)]
    print_token: bool,
}

/// The claims of a Ferry token that `whoami` shows.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// Creates a user account.
pub async fn register(context: &Context, args: RegisterArgs) -> anyhow::Result<()> {
    let password = read_password(&args.password, true)?;
    let user = context
        .anonymous_client()?
        .register(&args.username, &password)
        .await?;
    eprintln!(
        "registered user {}; log in with `ferry login {}`",
        user.username, user.username
    );
    Ok(())
}

/// Logs in and stores the token for the brokers in use.
pub async fn login(context: &Context, args: LoginArgs) -> anyhow::Result<()> {
    let password = read_password(&args.password, false)?;
    let token = context
        .anonymous_client()?
        .login(&args.username, &password)
        .await?;

    let path = context.credentials_path()?;
    credentials::save(
        path,
        &StoredLogin {
            brokers: context.brokers().to_vec(),
            username: args.username.clone(),
            token: token.token.clone(),
            expires_at: token.expires_at.clone(),
        },
    )?;
    if args.print_token {
        print_json(&token)?;
    }
    eprintln!(
        "logged in as {} at {}; the token expires at {} and is stored in {}",
        args.username,
        context.brokers().join(", "),
        token.expires_at,
        path.display()
    );
    Ok(())
}

/// Revokes the token and deletes the stored login when that is where the
/// token came from.
pub async fn logout(context: &Context) -> anyhow::Result<()> {
    if context.token().is_none() {
        bail!("not logged in: no stored login for these brokers and no --token");
    }
    let result = context.client()?.logout().await;
    if context.token_is_stored() {
        credentials::remove(context.credentials_path()?)?;
    }
    match result {
        Ok(()) => {
            eprintln!("logged out");
            Ok(())
        }
        Err(err) if err.status() == Some(reqwest::StatusCode::UNAUTHORIZED) => {
            eprintln!("logged out; the broker had already rejected the token ({err})");
            Ok(())
        }
        Err(err) => Err(err.into()),
    }
}

/// Prints who the current token belongs to, read from its claims without
/// checking the signature: only the broker can do that.
pub fn whoami(context: &Context) -> anyhow::Result<()> {
    let token = context.token().ok_or_else(|| {
        anyhow!("not logged in: no stored login for these brokers and no --token")
    })?;
    let claims = token_claims(token)?;
    let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp);
    let source = if context.token_is_stored() {
        "stored login"
    } else {
        "--token or FERRY_TOKEN"
    };
    print_json(&json!({
        "username": claims.sub,
        "expires_at": humantime::format_rfc3339_seconds(expires_at).to_string(),
        "brokers": context.brokers(),
        "token_source": source,
        "credentials_file": context
            .stored()
            .and(context.credentials_path().ok())
            .map(|path| path.display().to_string()),
    }))
}

/// Decodes the payload of a JWT.
fn token_claims(token: &str) -> anyhow::Result<Claims> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| anyhow!("the token is not a JWT: it has no payload part"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the token payload is not base64url")?;
    serde_json::from_slice(&bytes).context("the token payload has no `sub` and `exp` claims")
}

/// Reads the password from the option, standard input or a prompt. With
/// `confirm`, the prompt requests it twice.
fn read_password(args: &PasswordArgs, confirm: bool) -> anyhow::Result<String> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("failed to read the password from standard input")?;
        let password = line.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            bail!("standard input has no password on its first line");
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("missing password: pass --password-stdin, set FERRY_PASSWORD, or run in a terminal to be prompted");
    }
    let password =
        rpassword::prompt_password("Password: ").context("failed to read the password")?;
    if confirm {
        let again = rpassword::prompt_password("Repeat the password: ")
            .context("failed to read the password")?;
        if again != password {
            bail!("the two passwords differ");
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_come_from_the_payload() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1900000000,"iat":1}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{payload}.signature");
        let claims = token_claims(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.exp, 1_900_000_000);
        assert!(token_claims("opaque").is_err());
    }
}
