//! The owner name a mirror writes into `ferry_schema`, so that two brokers
//! or clusters never mirror into one database without noticing.
//!
//! A broker alone is named by a random id kept in its data directory
//! (`mirror-owner`), created on first use. The brokers of a cluster share
//! one name, derived from the cluster secret's verifier, which reveals
//! nothing about the secret.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

/// File in the data directory that contains a lone broker's owner id.
const OWNER_FILE: &str = "mirror-owner";

/// Returns the owner name of a broker that runs alone with `data_dir`,
/// creating its id on first use.
///
/// # Errors
///
/// The file cannot be read or created.
pub fn broker_owner(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(OWNER_FILE);
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(format!("broker {}", id.trim())),
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| io::Error::other("the system random generator failed"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    Ok(format!("broker {id}"))
}

/// Returns the owner name of every broker of the cluster whose secret has
/// `verifier`.
pub fn cluster_owner(verifier: &str) -> String {
    let short: String = verifier.chars().take(32).collect();
    format!("cluster {short}")
}
