//! Opens partition logs once per directory, so that a log keeps its open
//! segments while this broker switches between leading and following it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::Notify;

use crate::broker::durable::DurableLog;
use crate::broker::error::Result;
use crate::log::{FsyncPolicy, LogConfig, PartitionLog};

/// The open partition logs of this broker.
pub struct Logs {
    fsync: FsyncPolicy,
    /// Whether new [`DurableLog`]s start as leader: true on a single
    /// broker, false in a cluster, where a log leads only once ZooKeeper
    /// names this broker its leader.
    leading_by_default: bool,
    open: Mutex<HashMap<PathBuf, Weak<PartitionLog>>>,
}

impl Logs {
    /// Creates an empty set of logs with the broker's flush policy.
    pub fn new(fsync: FsyncPolicy, leading_by_default: bool) -> Logs {
        Logs {
            fsync,
            leading_by_default,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Returns the flush policy of every log.
    pub fn fsync(&self) -> FsyncPolicy {
        self.fsync
    }

    /// Returns every log that is open now.
    pub fn open_logs(&self) -> Vec<Arc<PartitionLog>> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.values().filter_map(Weak::upgrade).collect()
    }

    /// Returns the log in `dir`, opening (and recovering) it unless it is
    /// open already.
    pub fn open_partition(&self, dir: &Path, config: LogConfig) -> Result<Arc<PartitionLog>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = open.get(dir).and_then(Weak::upgrade) {
            return Ok(log);
        }
        let log = Arc::new(PartitionLog::open(dir, config)?);
        open.retain(|_, log| log.strong_count() > 0);
        open.insert(dir.to_path_buf(), Arc::downgrade(&log));
        Ok(log)
    }

    /// Opens the log in `dir` with the broker's flush policy.
    pub fn open(
        &self,
        dir: &Path,
        config: LogConfig,
        appended: Arc<Notify>,
    ) -> Result<Arc<DurableLog>> {
        let log = self.open_partition(dir, config)?;
        Ok(Arc::new(DurableLog::new(
            log,
            self.fsync,
            appended,
            self.leading_by_default,
        )))
    }
}
