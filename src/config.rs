//! Broker configuration: built-in defaults, then an optional TOML file, then
//! `FERRY_*` environment variables, then command-line flags, each layer
//! overriding the one before.
//!
//! clap merges the last two layers (a flag wins over its variable), so every
//! flag is an `Option` here and [`ServeArgs::resolve`] fills the gaps from the
//! file and the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::log::FsyncPolicy;

/// Default REST listen address: loopback, so a fresh broker is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Flags of `ferry serve`. Each one can also come from a `FERRY_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file; its keys are the flag names with `_` for `-`.
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory holding the logs, the signing key and the catalog [default: ./data].
    #[arg(long, env = "FERRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// REST address to listen on, host:port; port 0 picks a free port [default: 127.0.0.1:8080].
    #[arg(long, env = "FERRY_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// When appended records are made durable before the acknowledgement:
    /// `always` (msync before every response, with group commit), a number of
    /// milliseconds between background flushes, or `never` [default: always].
    #[arg(long, env = "FERRY_FSYNC")]
    pub fsync: Option<FsyncSetting>,

    /// PEM certificate chain for TLS on the REST listener.
    #[arg(long, env = "FERRY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for TLS on the REST listener.
    #[arg(long, env = "FERRY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow listening on a non-loopback address without TLS.
    #[arg(long, env = "FERRY_INSECURE")]
    pub insecure: bool,

    /// Size in bytes at which a partition rolls to a new segment [default: 134217728].
    #[arg(long, env = "FERRY_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,

    /// Milliseconds between retention passes over the topics' partitions
    /// [default: 10000].
    #[arg(long, env = "FERRY_RETENTION_CHECK_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_check_interval_ms: Option<u64>,

    /// Milliseconds between compaction passes over compacted topics,
    /// offsets logs and queue state logs [default: 30000].
    #[arg(long, env = "FERRY_COMPACTION_INTERVAL_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub compaction_interval_ms: Option<u64>,

    /// Milliseconds a tombstone stays in a compacted log before compaction
    /// may remove it [default: 86400000, one day].
    #[arg(long, env = "FERRY_TOMBSTONE_RETENTION_MS")]
    pub tombstone_retention_ms: Option<u64>,

    /// Maximum size in bytes of one message value [default: 1048576].
    #[arg(long, env = "FERRY_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Maximum size in bytes of one request body [default: 16777216].
    #[arg(long, env = "FERRY_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Lifetime of a login token in seconds [default: 86400].
    #[arg(long, env = "FERRY_TOKEN_TTL_SECS")]
    pub token_ttl_secs: Option<u64>,

    /// PBKDF2 iterations for new password hashes [default: 100000].
    #[arg(long, env = "FERRY_PASSWORD_ITERATIONS")]
    pub password_iterations: Option<u32>,

    /// File with the token signing secret; without it the broker generates
    /// one into `<data-dir>/jwt-secret` (mode 0600) on first start.
    #[arg(long, env = "FERRY_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// MySQL or MariaDB database to mirror the logs into,
    /// mysql://user:password@host:port/database. Without it there is no
    /// mirror. In a cluster, one of the brokers given a URL runs it.
    #[arg(long, env = "FERRY_MYSQL_URL")]
    pub mysql_url: Option<String>,

    /// ZooKeeper servers, host:port[,host:port]; turns on clustering.
    /// Without it the broker runs alone.
    #[arg(long, env = "FERRY_ZOOKEEPER", help_heading = "Cluster")]
    pub zookeeper: Option<String>,
    /// ZooKeeper path under which the cluster keeps its state [default: /ferry].
    #[arg(long, env = "FERRY_ZOOKEEPER_ROOT", help_heading = "Cluster")]
    pub zookeeper_root: Option<String>,
    /// ZooKeeper session timeout in milliseconds [default: 6000].
    #[arg(
        long,
        env = "FERRY_ZOOKEEPER_SESSION_TIMEOUT_MS",
        help_heading = "Cluster"
    )]
    pub zookeeper_session_timeout_ms: Option<u64>,
    /// This broker's id, unique in the cluster; required with --zookeeper.
    #[arg(long, env = "FERRY_BROKER_ID", help_heading = "Cluster")]
    pub broker_id: Option<u32>,
    /// gRPC address for the other brokers, host:port [default: 127.0.0.1:9090].
    #[arg(long, env = "FERRY_GRPC_LISTEN", help_heading = "Cluster")]
    pub grpc_listen: Option<SocketAddr>,
    /// gRPC address the other brokers use to reach this one [default: the bound --grpc-listen address].
    #[arg(long, env = "FERRY_ADVERTISE", help_heading = "Cluster")]
    pub advertise: Option<String>,
    /// File with the secret every broker of the cluster shares; it
    /// authenticates gRPC calls and signs login tokens. Required with --zookeeper.
    #[arg(long, env = "FERRY_CLUSTER_SECRET_FILE", help_heading = "Cluster")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Replicas of each new topic and queue, capped by the live brokers [default: 3].
    #[arg(long, env = "FERRY_REPLICATION_FACTOR", help_heading = "Cluster")]
    pub replication_factor: Option<u32>,
    /// In-sync replicas an `acks=all` write needs, capped by the replication factor [default: 2].
    #[arg(long, env = "FERRY_MIN_INSYNC_REPLICAS", help_heading = "Cluster")]
    pub min_insync_replicas: Option<u32>,
    /// Milliseconds a follower may stay behind before it leaves the in-sync replicas [default: 10000].
    #[arg(long, env = "FERRY_REPLICA_LAG_MAX_MS", help_heading = "Cluster")]
    pub replica_lag_max_ms: Option<u64>,
    /// Allow a replica outside the in-sync replicas to become leader when no
    /// in-sync replica is alive; acknowledged records can be lost.
    #[arg(long, env = "FERRY_UNCLEAN_LEADER_ELECTION", help_heading = "Cluster")]
    pub unclean_leader_election: bool,
}

/// The configuration file: the same settings as [`ServeArgs`], all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    fsync: Option<FileFsync>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    insecure: Option<bool>,
    segment_bytes: Option<u64>,
    retention_check_interval_ms: Option<u64>,
    compaction_interval_ms: Option<u64>,
    tombstone_retention_ms: Option<u64>,
    max_message_bytes: Option<usize>,
    max_request_bytes: Option<usize>,
    token_ttl_secs: Option<u64>,
    password_iterations: Option<u32>,
    jwt_secret_file: Option<PathBuf>,
    mysql_url: Option<String>,
    zookeeper: Option<String>,
    zookeeper_root: Option<String>,
    zookeeper_session_timeout_ms: Option<u64>,
    broker_id: Option<u32>,
    grpc_listen: Option<SocketAddr>,
    advertise: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    replication_factor: Option<u32>,
    min_insync_replicas: Option<u32>,
    replica_lag_max_ms: Option<u64>,
    unclean_leader_election: Option<bool>,
}

/// `fsync` in the file: `"always"`, `"never"`, or milliseconds as a number
/// or a string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileFsync {
    Millis(u64),
    Text(String),
}

/// The resolved configuration of one broker.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of every log and of the signing key.
    pub data_dir: PathBuf,
    /// REST listen address.
    pub listen: SocketAddr,
    /// Flush policy of every partition.
    pub fsync: FsyncPolicy,
    /// Certificate and key paths when the REST listener uses TLS.
    pub tls: Option<TlsFiles>,
    /// Whether a non-loopback listener without TLS is allowed.
    pub insecure: bool,
    /// Segment size at which partitions roll.
    pub segment_bytes: u64,
    /// Time between retention passes.
    pub retention_check_interval: Duration,
    /// Time between compaction passes.
    pub compaction_interval: Duration,
    /// How long a tombstone stays in a compacted log, in ms.
    pub tombstone_retention_ms: u64,
    /// Maximum size of one message value, in bytes.
    pub max_message_bytes: usize,
    /// Maximum size of one request body, in bytes.
    pub max_request_bytes: usize,
    /// Lifetime of login tokens.
    pub token_ttl: Duration,
    /// PBKDF2 iteration count for new password hashes.
    pub password_iterations: u32,
    /// Signing secret file; `None` means generated into the data directory.
    pub jwt_secret_file: Option<PathBuf>,
    /// Database of the MySQL mirror; `None` runs no mirror.
    pub mysql_url: Option<String>,
    /// Cluster settings; `None` runs a single broker.
    pub cluster: Option<ClusterConfig>,
}

/// Settings of a broker that is part of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// ZooKeeper connect string, host:port[,host:port].
    pub zookeeper: String,
    /// ZooKeeper path holding the cluster's state, for example `/ferry`.
    pub zookeeper_root: String,
    /// ZooKeeper session timeout.
    pub session_timeout: Duration,
    /// This broker's id.
    pub broker_id: u32,
    /// gRPC listen address.
    pub grpc_listen: SocketAddr,
    /// gRPC address announced to the other brokers; `None` means the bound
    /// listen address.
    pub advertise: Option<String>,
    /// File with the shared cluster secret.
    pub secret_file: PathBuf,
    /// Replicas of each new topic and queue.
    pub replication_factor: u32,
    /// In-sync replicas an `acks=all` write needs.
    pub min_insync_replicas: u32,
    /// How long a follower may lag before it leaves the in-sync replicas.
    pub replica_lag_max: Duration,
    /// Whether a replica outside the in-sync replicas may become leader.
    pub unclean_leader_election: bool,
}

/// Paths of the PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// The `--fsync` setting as typed by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsyncSetting(pub FsyncPolicyKind);

/// The parsed form of `--fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicyKind {
    /// Flush before every acknowledgement.
    Always,
    /// Flush in the background every so many milliseconds.
    IntervalMs(u64),
    /// Leave flushing to the operating system.
    Never,
}

/// Errors in the configuration, reported before the broker starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("failed to read configuration file {path}: {source}")]
    ReadFile {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for these settings.
    #[error("invalid configuration file {path}: {message}")]
    ParseFile {
        /// File that failed.
        path: PathBuf,
        /// What the parser reported, with the key and line.
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid value for {setting}: {message}")]
    InvalidValue {
        /// Name of the setting.
        setting: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A plain-text listener on a non-loopback address without `--insecure`.
    #[error(
        "refusing to listen on non-loopback address {listen} without TLS: \
         give --tls-cert and --tls-key, or --insecure to allow plain HTTP"
    )]
    InsecureListener {
        /// The rejected address.
        listen: SocketAddr,
    },
}

impl FromStr for FsyncSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let kind = match text {
            "always" => FsyncPolicyKind::Always,
            "never" => FsyncPolicyKind::Never,
            _ => {
                let digits = text.strip_suffix("ms").unwrap_or(text);
                match digits.parse::<u64>() {
                    Ok(ms) if ms > 0 => FsyncPolicyKind::IntervalMs(ms),
                    _ => {
                        return Err(format!(
                            "`{text}` is not `always`, `never` or a positive number of milliseconds"
                        ))
                    }
                }
            }
        };
        Ok(FsyncSetting(kind))
    }
}

impl FsyncSetting {
    fn policy(self) -> FsyncPolicy {
        match self.0 {
            FsyncPolicyKind::Always => FsyncPolicy::Always,
            FsyncPolicyKind::IntervalMs(ms) => FsyncPolicy::Interval(Duration::from_millis(ms)),
            FsyncPolicyKind::Never => FsyncPolicy::Never,
        }
    }
}

impl ServeArgs {
    /// Merges the flags and variables with the configuration file and the
    /// defaults, and checks the result.
    ///
    /// # Errors
    ///
    /// A configuration file that cannot be read or parsed, an invalid value,
    /// or a plain-text listener on a non-loopback address without
    /// `--insecure`.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let cluster = self.resolve_cluster(&file)?;
        let fsync = match (&self.fsync, &file.fsync) {
            (Some(setting), _) => *setting,
            (None, Some(value)) => {
                let text = match value {
                    FileFsync::Millis(ms) => ms.to_string(),
                    FileFsync::Text(text) => text.clone(),
                };
                text.parse().map_err(|message| ConfigError::InvalidValue {
                    setting: "fsync",
                    message,
                })?
            }
            (None, None) => FsyncSetting(FsyncPolicyKind::Always),
        };
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert),
            self.tls_key.clone().or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::InvalidValue {
                    setting: "tls_cert/tls_key",
                    message: "give both the certificate and the key, or neither".into(),
                })
            }
        };
        let config = Config {
            data_dir: self
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| "data".into()),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address is valid")),
            fsync: fsync.policy(),
            tls,
            insecure: self.insecure || file.insecure.unwrap_or(false),
            segment_bytes: self
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(128 << 20),
            retention_check_interval: Duration::from_millis(
                self.retention_check_interval_ms
                    .or(file.retention_check_interval_ms)
                    .unwrap_or(10_000),
            ),
            compaction_interval: Duration::from_millis(
                self.compaction_interval_ms
                    .or(file.compaction_interval_ms)
                    .unwrap_or(30_000),
            ),
            tombstone_retention_ms: self
                .tombstone_retention_ms
                .or(file.tombstone_retention_ms)
                .unwrap_or(86_400_000),
            max_message_bytes: self
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(1 << 20),
            max_request_bytes: self
                .max_request_bytes
                .or(file.max_request_bytes)
                .unwrap_or(16 << 20),
            token_ttl: Duration::from_secs(
                self.token_ttl_secs
                    .or(file.token_ttl_secs)
                    .unwrap_or(24 * 3600),
            ),
            password_iterations: self
                .password_iterations
                .or(file.password_iterations)
                .unwrap_or(100_000),
            jwt_secret_file: self.jwt_secret_file.clone().or(file.jwt_secret_file),
            mysql_url: self.mysql_url.clone().or(file.mysql_url),
            cluster,
        };
        config.validate()?;
        Ok(config)
    }
}

impl ServeArgs {
    fn resolve_cluster(&self, file: &FileConfig) -> Result<Option<ClusterConfig>, ConfigError> {
        let Some(zookeeper) = self.zookeeper.clone().or(file.zookeeper.clone()) else {
            return Ok(None);
        };
        let missing = |setting: &'static str| ConfigError::InvalidValue {
            setting,
            message: "required when --zookeeper is given".into(),
        };
        let zookeeper_root = self
            .zookeeper_root
            .clone()
            .or(file.zookeeper_root.clone())
            .unwrap_or_else(|| "/ferry".into());
        if !zookeeper_root.starts_with('/')
            || zookeeper_root.len() < 2
            || zookeeper_root.ends_with('/')
        {
            return Err(ConfigError::InvalidValue {
                setting: "zookeeper_root",
                message: format!(
                    "`{zookeeper_root}` is not an absolute ZooKeeper path such as /ferry"
                ),
            });
        }
        let cluster = ClusterConfig {
            zookeeper,
            zookeeper_root,
            session_timeout: Duration::from_millis(
                self.zookeeper_session_timeout_ms
                    .or(file.zookeeper_session_timeout_ms)
                    .unwrap_or(6000),
            ),
            broker_id: self
                .broker_id
                .or(file.broker_id)
                .ok_or_else(|| missing("broker_id"))?,
            grpc_listen: self
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or_else(|| "127.0.0.1:9090".parse().expect("default address is valid")),
            advertise: self.advertise.clone().or(file.advertise.clone()),
            secret_file: self
                .cluster_secret_file
                .clone()
                .or(file.cluster_secret_file.clone())
                .ok_or_else(|| missing("cluster_secret_file"))?,
            replication_factor: self
                .replication_factor
                .or(file.replication_factor)
                .unwrap_or(3),
            min_insync_replicas: self
                .min_insync_replicas
                .or(file.min_insync_replicas)
                .unwrap_or(2),
            replica_lag_max: Duration::from_millis(
                self.replica_lag_max_ms
                    .or(file.replica_lag_max_ms)
                    .unwrap_or(10_000),
            ),
            unclean_leader_election: self.unclean_leader_election
                || file.unclean_leader_election.unwrap_or(false),
        };
        if cluster.replication_factor == 0 || cluster.min_insync_replicas == 0 {
            return Err(ConfigError::InvalidValue {
                setting: "replication_factor/min_insync_replicas",
                message: "both must be at least 1".into(),
            });
        }
        if cluster.session_timeout < Duration::from_secs(2) {
            return Err(ConfigError::InvalidValue {
                setting: "zookeeper_session_timeout_ms",
                message: "must be at least 2000 (ZooKeeper's usual minimum)".into(),
            });
        }
        Ok(Some(cluster))
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.mysql_url {
            let problem = match mysql_async::Opts::from_url(url) {
                Err(err) => Some(err.to_string()),
                Ok(opts) if opts.db_name().is_none_or(str::is_empty) => {
                    Some("the URL names no database".to_string())
                }
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                return Err(ConfigError::InvalidValue {
                    setting: "mysql_url",
                    message: format!(
                        "{problem}; expected mysql://user:password@host:port/database"
                    ),
                });
            }
        }
        if self.tls.is_none() && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::InsecureListener {
                listen: self.listen,
            });
        }
        // The gRPC port has no TLS yet and carries the cluster secret in
        // clear text.
        if let Some(cluster) = &self.cluster {
            if !cluster.grpc_listen.ip().is_loopback() && !self.insecure {
                return Err(ConfigError::InvalidValue {
                    setting: "grpc_listen",
                    message: format!(
                        "{} is not a loopback address; gRPC between brokers is plain text, \
                         so give --insecure to allow it on a trusted network",
                        cluster.grpc_listen
                    ),
                });
            }
        }
        // A segment must hold at least one maximum-size request, with room
        // for batch and record headers.
        if self.segment_bytes < 4096 || self.segment_bytes > u32::MAX as u64 {
            return Err(ConfigError::InvalidValue {
                setting: "segment_bytes",
                message: format!(
                    "{} is outside 4096..={} (positions in a segment are 32-bit)",
                    self.segment_bytes,
                    u32::MAX
                ),
            });
        }
        if self.max_message_bytes == 0 || self.max_request_bytes == 0 {
            return Err(ConfigError::InvalidValue {
                setting: "max_message_bytes/max_request_bytes",
                message: "must be greater than 0".into(),
            });
        }
        if self.password_iterations == 0 {
            return Err(ConfigError::InvalidValue {
                setting: "password_iterations",
                message: "must be greater than 0".into(),
            });
        }
        Ok(())
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_setting_parses() {
        let always: FsyncSetting = "always".parse().unwrap();
        assert_eq!(always.0, FsyncPolicyKind::Always);
        let never: FsyncSetting = "never".parse().unwrap();
        assert_eq!(never.0, FsyncPolicyKind::Never);
        let interval: FsyncSetting = "250".parse().unwrap();
        assert_eq!(interval.0, FsyncPolicyKind::IntervalMs(250));
        let with_unit: FsyncSetting = "5ms".parse().unwrap();
        assert_eq!(with_unit.0, FsyncPolicyKind::IntervalMs(5));
        assert!("0".parse::<FsyncSetting>().is_err());
        assert!("sometimes".parse::<FsyncSetting>().is_err());
    }

    #[test]
    fn non_loopback_without_tls_rejected() {
        let args = ServeArgs {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..ServeArgs::default()
        };
        assert!(matches!(
            args.resolve(),
            Err(ConfigError::InsecureListener { .. })
        ));
        let insecure = ServeArgs {
            insecure: true,
            ..args
        };
        assert!(insecure.resolve().is_ok());
    }

    #[test]
    fn file_layer_below_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\nfsync = \"never\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            fsync: Some("always".parse().unwrap()),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert!(matches!(config.fsync, FsyncPolicy::Always));

        std::fs::write(&path, "fsync = 250\n").unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert!(matches!(config.fsync, FsyncPolicy::Interval(d) if d.as_millis() == 250));

        std::fs::write(&path, "data_dirr = \"x\"\n").unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("data_dirr"), "{err}");
    }
}
