//! The result of a benchmark run, as text or as one JSON object.

use serde::Serialize;

use crate::cli::output::plural;

/// Reason a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// Every requested message was acknowledged.
    Messages,
    /// `--duration` ran out first.
    Duration,
    /// A request failed.
    Error,
}

/// Request latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest request.
    pub max: f64,
}

/// Everything `ferry bench` reports. Field names are stable, because
/// benchmark scripts read the `--json` form.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `broker` or `baseline`.
    pub target: &'static str,
    /// Base URL the load went to.
    pub url: String,
    /// `topic NAME` or `queue NAME`; the path used in baseline runs.
    pub resource: String,
    /// Partitions of the topic, and 1 for queues and baseline runs.
    pub partitions: u32,
    /// Messages requested with `--messages`.
    pub messages_requested: u64,
    /// Messages the target acknowledged.
    pub messages: u64,
    /// Bytes of each value's content (the JSON string has 2 more for its
    /// quotes).
    pub message_bytes: usize,
    /// Messages per request.
    pub batch: u64,
    /// Concurrent connections.
    pub connections: usize,
    /// Requests that succeeded.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time from the first request to the last response, in seconds.
    pub seconds: f64,
    /// Acknowledged messages per second.
    pub messages_per_second: f64,
    /// Acknowledged value bytes per second, in MB (10^6 bytes).
    pub megabytes_per_second: f64,
    /// Latency of successful requests.
    pub latency_ms: Latency,
    /// Reason the run ended.
    pub stopped_by: StopReason,
}

impl Report {
    /// Formats the report as a few aligned lines.
    pub fn to_text(&self) -> String {
        // Queues and the baseline have no partitions to speak of.
        let partitions = if self.resource.starts_with("topic ") && self.target == "broker" {
            format!(", {}", plural(self.partitions.into(), "partition"))
        } else {
            String::new()
        };
        let stopped_by = match self.stopped_by {
            StopReason::Messages => "all messages acknowledged",
            StopReason::Duration => "--duration reached",
            StopReason::Error => "a request failed",
        };
        let latency = self.latency_ms;
        format!(
            "target      {} {} ({}{partitions})\n\
             load        {} of {} messages of {} bytes, {} per request, {} connections\n\
             time        {:.3} s, {} requests, {} errors, stopped: {stopped_by}\n\
             throughput  {:.0} messages/s, {:.2} MB/s of values\n\
             latency     p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n",
            self.target,
            self.url,
            self.resource,
            self.messages,
            self.messages_requested,
            self.message_bytes,
            self.batch,
            self.connections,
            self.seconds,
            self.requests,
            self.errors,
            self.messages_per_second,
            self.megabytes_per_second,
            latency.p50,
            latency.p90,
            latency.p99,
            latency.max,
        )
    }
}

/// Computes percentiles of latencies in microseconds by the nearest-rank
/// method.
pub fn latency_percentiles(mut latencies_us: Vec<u64>) -> Latency {
    if latencies_us.is_empty() {
        return Latency::default();
    }
    latencies_us.sort_unstable();
    let rank = |quantile: f64| {
        let index = (quantile * latencies_us.len() as f64).ceil() as usize;
        latencies_us[index.clamp(1, latencies_us.len()) - 1] as f64 / 1000.0
    };
    Latency {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: rank(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        let latency = latency_percentiles(latencies);
        assert_eq!(latency.p50, 50.0);
        assert_eq!(latency.p90, 90.0);
        assert_eq!(latency.p99, 99.0);
        assert_eq!(latency.max, 100.0);
    }

    #[test]
    fn percentiles_of_one_sample() {
        let latency = latency_percentiles(vec![1500]);
        assert_eq!(latency.p50, 1.5);
        assert_eq!(latency.max, 1.5);
        assert_eq!(latency_percentiles(Vec::new()).max, 0.0);
    }
}
