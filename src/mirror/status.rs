//! The mirror's state for `/metrics` and `GET /v1/cluster`: whether it
//! runs here, its lag per log, and its counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde_json::{json, Value};

use super::source::{LogKind, MirroredLog};

/// The lag of one mirrored log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLag {
    /// The log, as `topics/orders@3/0`.
    pub log: String,
    /// The log's key in `mirror_checkpoints`, as `topic/3/0`. Metrics use
    /// it, because it names no private topic or queue.
    pub key: String,
    /// The log itself, to read it again while the database is down.
    #[serde(skip)]
    pub mirrored: MirroredLog,
    /// First offset not yet in the database.
    pub mirrored_offset: u64,
    /// The log's high watermark when it was last read.
    pub high_watermark: u64,
    /// Records readable in the log but not yet in the database.
    pub records: u64,
    /// Age of the newest mirrored record while records wait, 0 when none
    /// wait: about how far behind the database is.
    pub seconds: f64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Whether this broker runs the mirror now.
    active: bool,
    connected: bool,
    lags: BTreeMap<String, LogLag>,
    rows: u64,
    transactions: u64,
    errors: u64,
}

/// Shared state of the mirror task.
#[derive(Debug, Default)]
pub struct MirrorStatus {
    inner: Mutex<Inner>,
}

impl MirrorStatus {
    pub(crate) fn set_active(&self, active: bool) {
        let mut inner = self.lock();
        inner.active = active;
        if !active {
            inner.connected = false;
            inner.lags.clear();
        }
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }

    pub(crate) fn record_lag(&self, lag: LogLag) {
        self.lock().lags.insert(lag.log.clone(), lag);
    }

    /// Keeps only the lags of `logs`, after topics or queues went away.
    pub(crate) fn retain_lags(&self, logs: &[String]) {
        self.lock().lags.retain(|log, _| logs.contains(log));
    }

    pub(crate) fn count_transaction(&self, rows: u64) {
        let mut inner = self.lock();
        inner.transactions += 1;
        inner.rows += rows;
    }

    /// Counts a session that ended with an error. The error itself goes
    /// to the log only: it can quote another user's data.
    pub(crate) fn count_error(&self) {
        let mut inner = self.lock();
        inner.errors += 1;
        inner.connected = false;
    }

    /// Returns the rows written since start.
    pub fn rows(&self) -> u64 {
        self.lock().rows
    }

    /// Returns the lag of every log, by log name.
    pub fn lags(&self) -> Vec<LogLag> {
        self.lock().lags.values().cloned().collect()
    }

    /// Describes the mirror for `GET /v1/cluster`, with the lag of the
    /// logs whose resource id passes `visible` (0 is `__meta`).
    pub fn describe(&self, visible: impl Fn(u64) -> bool) -> Value {
        let inner = self.lock();
        let logs: Vec<&LogLag> = inner
            .lags
            .values()
            .filter(|lag| lag.mirrored.kind == LogKind::Meta || visible(lag.mirrored.resource_id))
            .collect();
        json!({
            "active": inner.active,
            "connected": inner.connected,
            "rows": inner.rows,
            "transactions": inner.transactions,
            "errors": inner.errors,
            "lag_records": inner.lags.values().map(|l| l.records).sum::<u64>(),
            "lag_seconds": inner.lags.values().map(|l| l.seconds).fold(0.0, f64::max),
            "logs": logs,
        })
    }

    /// Renders the mirror's metrics in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        scalar(
            "ferry_mirror_active",
            "gauge",
            "1 when this broker runs the MySQL mirror.",
            u8::from(inner.active).to_string(),
        );
        scalar(
            "ferry_mirror_connected",
            "gauge",
            "1 while the mirror has a working database connection.",
            u8::from(inner.connected).to_string(),
        );
        scalar(
            "ferry_mirror_rows_total",
            "counter",
            "Rows the mirror wrote or deleted.",
            inner.rows.to_string(),
        );
        scalar(
            "ferry_mirror_transactions_total",
            "counter",
            "Transactions the mirror committed.",
            inner.transactions.to_string(),
        );
        scalar(
            "ferry_mirror_errors_total",
            "counter",
            "Mirror sessions that ended with an error.",
            inner.errors.to_string(),
        );
        let mut labeled = |name: &str, help: &str, value: &dyn Fn(&LogLag) -> String| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for lag in inner.lags.values() {
                let _ = writeln!(out, "{name}{{log=\"{}\"}} {}", lag.key, value(lag));
            }
        };
        labeled(
            "ferry_mirror_lag_records",
            "Records readable in the log but not yet in the database.",
            &|lag| lag.records.to_string(),
        );
        labeled(
            "ferry_mirror_lag_seconds",
            "Age of the newest mirrored record while records wait, else 0.",
            &|lag| format!("{:.3}", lag.seconds),
        );
        out
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
