//! The stored login: token, user and broker URLs written by `ferry login`
//! to `credentials.json` in the user's configuration directory, with mode
//! 0600 because the token grants the user's rights.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _};
use serde::{Deserialize, Serialize};

/// Environment variable naming the directory of `credentials.json`,
/// instead of `<config dir>/ferry`.
pub const CONFIG_DIR_ENV: &str = "FERRY_CONFIG_DIR";

const FILE_NAME: &str = "credentials.json";

/// Login data that `ferry login` stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLogin {
    /// Base URLs of the brokers logged in to, normalized; the token is sent
    /// only to these.
    pub brokers: Vec<String>,
    /// User name.
    pub username: String,
    /// Bearer token.
    pub token: String,
    /// Token expiry, RFC 3339.
    pub expires_at: String,
}

/// Returns the credentials file: `$FERRY_CONFIG_DIR/credentials.json`, else
/// `<config dir>/ferry/credentials.json` (`~/.config/ferry` on Linux).
pub fn path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CONFIG_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir).join(FILE_NAME));
    }
    let dir = dirs::config_dir().ok_or_else(|| {
        anyhow!("no configuration directory found for this user; set {CONFIG_DIR_ENV}")
    })?;
    Ok(dir.join("ferry").join(FILE_NAME))
}

/// Reads the stored login; `None` when there is no file.
pub fn load(path: &Path) -> anyhow::Result<Option<StoredLogin>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("failed to read {}", path.display())),
    };
    let login = serde_json::from_str(&text)
        .with_context(|| format!("invalid credentials file {}", path.display()))?;
    Ok(Some(login))
}

/// Writes the login, replacing any earlier one. The file is written under a
/// temporary name and renamed, so a crash leaves either the old file or the
/// new one. It is created with mode 0600, so the token is never readable by
/// others, not even for a moment.
pub fn save(path: &Path, login: &StoredLogin) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow!("credentials path {} has no directory", path.display()))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("failed to create {}", dir.display()))?;

    let temporary = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        // An older temporary file keeps its mode on open, so set it again.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        let mut text = serde_json::to_string_pretty(login).expect("a login always serializes");
        text.push('\n');
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    };
    write().with_context(|| format!("failed to write {}", path.display()))
}

/// Deletes the stored login; returns whether there was one.
pub fn remove(path: &Path) -> anyhow::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err).with_context(|| format!("failed to delete {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_login_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(FILE_NAME);
        let login = StoredLogin {
            brokers: vec!["http://127.0.0.1:1/".into()],
            username: "alice".into(),
            token: "secret".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
        };
        save(&path, &login).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.token, "secret");
        assert_eq!(loaded.brokers, login.brokers);

        assert!(remove(&path).unwrap());
        assert!(load(&path).unwrap().is_none());
        assert!(!remove(&path).unwrap());
    }
}
