//! `ferry bench`: a REST load generator for publish (or queue send).
//!
//! `--connections` workers each hold one HTTP connection and send one
//! request at a time. A request carries `--batch` messages whose value is
//! the same JSON string of `--size` ASCII characters. The body is encoded
//! once and reused, so the client spends its time on HTTP, not on JSON. The
//! run ends when `--messages` messages are acknowledged or `--duration`
//! runs out, whichever comes first, or at the first failed request.
//!
//! Without a token the benchmark registers and logs in a throwaway user.
//! It creates the topic (or queue) unless `--topic` names an existing one,
//! and deletes what it created unless `--keep` is given.
//!
//! The client runs on the same machine as the broker, so both share its
//! cores; the numbers are for the pair, not for the broker alone.

mod baseline;
mod report;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use ring::rand::{SecureRandom, SystemRandom};

use crate::cli::context::Context;
use crate::cli::output::{print_line, print_text};
use crate::client::{Client, CreateQueue, CreateTopic};
use baseline::BaselineServer;
use report::{latency_percentiles, Report, StopReason};

/// How long a request may still run after `--duration` ends before it
/// counts as failed, so that a stalled broker cannot hold the run open.
const REQUEST_GRACE: Duration = Duration::from_secs(10);

/// Options of `ferry bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Messages to publish in total
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,

    /// Bytes of each message value: a JSON string of this many ASCII
    /// characters
    #[arg(long, default_value_t = 100)]
    size: usize,

    /// Concurrent connections, each with one request in flight
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    connections: u64,

    /// Messages per request
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,

    /// Topic to publish to, created when missing; with --queue, the queue
    /// to send to [default: a new one named bench-<random>, deleted
    /// afterwards]
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,

    /// Partitions of a topic the benchmark creates
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,

    /// Replication factor of a topic the benchmark creates, for a cluster
    /// [default: the broker's]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=7))]
    replication_factor: Option<u32>,

    /// When each request is acknowledged: `all`, `leader` or `none`
    /// [default: the broker's, `all`]
    #[arg(long, value_parser = ["all", "leader", "none"])]
    acks: Option<String>,

    /// Send to a queue instead of publishing to a topic
    #[arg(long)]
    queue: bool,

    /// Maximum run time in seconds; the run stops at --messages or here,
    /// whichever comes first
    #[arg(long, default_value_t = 60.0, value_parser = parse_duration_secs)]
    duration: f64,

    /// Print the result as one JSON object on standard output
    #[arg(long)]
    json: bool,

    /// Instead of a broker, load an in-process HTTP server on the broker's
    /// HTTP stack that reads each body and responds {"offsets":[]};
    /// --broker is not used
    #[arg(long, conflicts_with_all = ["topic", "queue", "keep"])]
    baseline: bool,

    /// Keep the topic or queue the benchmark created
    #[arg(long)]
    keep: bool,
}

/// The resource the load goes to.
#[derive(Debug, Clone)]
enum Target {
    Topic(String),
    Queue(String),
}

/// Measurements of one worker.
#[derive(Debug, Default)]
struct WorkerResult {
    latencies_us: Vec<u64>,
    messages: u64,
    requests: u64,
    errors: u64,
    error: Option<anyhow::Error>,
}

/// Runs the benchmark and prints the report.
pub async fn run(context: &Context, args: BenchArgs) -> anyhow::Result<()> {
    let run_id = random_id()?;

    // Set up the target: the baseline server, or a broker user and resource.
    let baseline_server;
    let (client, url, target, created) = if args.baseline {
        baseline_server = BaselineServer::start()
            .await
            .context("failed to start the baseline server")?;
        let url = baseline_server.url();
        let client = Client::new([url.as_str()])?;
        (client, url, Target::Topic("baseline".into()), false)
    } else {
        let client = authenticated_client(context, &run_id).await?;
        let url = client.current_broker().to_string();
        let name = args
            .topic
            .clone()
            .unwrap_or_else(|| format!("bench-{run_id}"));
        let (target, created) = create_target(&client, &args, name).await?;
        (client, url, target, created)
    };

    let (report, error) = measure(&client, &args, &target, url).await;

    if created && !args.keep {
        let deleted = match &target {
            Target::Topic(name) => client.delete_topic(name).await,
            Target::Queue(name) => client.delete_queue(name).await,
        };
        if let Err(err) = deleted {
            eprintln!("warning: failed to delete the benchmark's {target}: {err}");
        }
    }

    if args.json {
        print_line(&report)?;
    } else {
        print_text(&report.to_text())?;
    }
    match error {
        // The cause goes into the message: the error printer shows only the
        // top message of a client error, and this one wraps it.
        Some(err) => Err(anyhow::anyhow!("a benchmark request failed: {err:#}")),
        None => Ok(()),
    }
}

/// Creates a client with the command's token or, without one, with a
/// throwaway user's.
async fn authenticated_client(context: &Context, run_id: &str) -> anyhow::Result<Client> {
    let client = context.client()?;
    if client.token().is_some() {
        return Ok(client);
    }
    let username = format!("bench-{run_id}");
    let password = random_id()?;
    client
        .register(&username, &password)
        .await
        .context("failed to register the benchmark user")?;
    let token = client.login(&username, &password).await?;
    eprintln!("registered and logged in throwaway user {username}");
    Ok(client.with_token(token.token))
}

/// Creates the topic or queue; an existing one is used when named by
/// `--topic`. Returns whether the benchmark created it.
async fn create_target(
    client: &Client,
    args: &BenchArgs,
    name: String,
) -> anyhow::Result<(Target, bool)> {
    let result = if args.queue {
        client
            .create_queue(&CreateQueue::named(&name))
            .await
            .map(|_| ())
    } else {
        let request = CreateTopic {
            partitions: Some(args.partitions),
            replication_factor: args.replication_factor,
            ..CreateTopic::named(&name)
        };
        client.create_topic(&request).await.map(|_| ())
    };
    let created = match result {
        Ok(()) => true,
        Err(err) if err.code() == Some("already_exists") && args.topic.is_some() => false,
        Err(err) => return Err(err.into()),
    };
    let target = if args.queue {
        Target::Queue(name)
    } else {
        Target::Topic(name)
    };
    Ok((target, created))
}

/// Runs the workers and builds the report, with the first error if a
/// request failed.
async fn measure(
    client: &Client,
    args: &BenchArgs,
    target: &Target,
    url: String,
) -> (Report, Option<anyhow::Error>) {
    let remaining = Arc::new(AtomicU64::new(args.messages));
    let failed = Arc::new(AtomicBool::new(false));
    let full_body = batch_body(args.batch, args.size);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);

    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        // A connection pool per worker, so each has its own connection.
        let worker_client = match client.with_separate_pool() {
            Ok(worker_client) => worker_client,
            Err(err) => {
                failed.store(true, Ordering::Relaxed);
                return (empty_report(args, target, url), Some(err.into()));
            }
        };
        let work = Work {
            client: worker_client,
            target: target.clone(),
            remaining: Arc::clone(&remaining),
            failed: Arc::clone(&failed),
            full_body: full_body.clone(),
            batch: args.batch,
            size: args.size,
            deadline,
            acks: args.acks.clone(),
        };
        workers.spawn(work.run());
    }

    let mut latencies_us = Vec::new();
    let mut totals = WorkerResult::default();
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|err| WorkerResult {
            errors: 1,
            error: Some(anyhow::anyhow!("worker task failed: {err}")),
            ..WorkerResult::default()
        });
        latencies_us.extend(result.latencies_us);
        totals.messages += result.messages;
        totals.requests += result.requests;
        totals.errors += result.errors;
        if totals.error.is_none() {
            totals.error = result.error;
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    let stopped_by = if totals.error.is_some() {
        StopReason::Error
    } else if totals.messages >= args.messages {
        StopReason::Messages
    } else {
        StopReason::Duration
    };
    let report = Report {
        messages: totals.messages,
        requests: totals.requests,
        errors: totals.errors,
        seconds,
        messages_per_second: totals.messages as f64 / seconds,
        megabytes_per_second: (totals.messages as f64 * args.size as f64) / 1e6 / seconds,
        latency_ms: latency_percentiles(latencies_us),
        stopped_by,
        ..empty_report(args, target, url)
    };
    (report, totals.error)
}

/// One worker's share of the load.
struct Work {
    client: Client,
    target: Target,
    remaining: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
    full_body: Bytes,
    batch: u64,
    size: usize,
    deadline: Instant,
    /// The `acks` query parameter, if given.
    acks: Option<String>,
}

impl Work {
    /// Claims batches until no messages remain, the deadline passes or a
    /// worker fails.
    async fn run(self) -> WorkerResult {
        let mut result = WorkerResult::default();
        while Instant::now() < self.deadline && !self.failed.load(Ordering::Relaxed) {
            let claimed =
                self.remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        if left == 0 {
                            None
                        } else {
                            Some(left - left.min(self.batch))
                        }
                    });
            let count = match claimed {
                Ok(left) => left.min(self.batch),
                Err(_) => break,
            };
            let body = if count == self.batch {
                self.full_body.clone()
            } else {
                batch_body(count, self.size)
            };

            let sent = Instant::now();
            let request = async {
                match &self.target {
                    Target::Topic(topic) => {
                        self.client
                            .publish_body(topic, body, self.acks.as_deref())
                            .await
                    }
                    Target::Queue(queue) => {
                        self.client
                            .send_body(queue, body, self.acks.as_deref())
                            .await
                    }
                }
            };
            let timeout_at = tokio::time::Instant::from_std(self.deadline + REQUEST_GRACE);
            let outcome = match tokio::time::timeout_at(timeout_at, request).await {
                Ok(outcome) => outcome.map_err(anyhow::Error::from),
                Err(_) => Err(anyhow::anyhow!(
                    "request timed out {} s after the end of --duration",
                    REQUEST_GRACE.as_secs()
                )),
            };
            let latency = sent.elapsed();
            match outcome {
                Ok(_) => {
                    result.latencies_us.push(latency.as_micros() as u64);
                    result.messages += count;
                    result.requests += 1;
                }
                Err(err) => {
                    result.errors += 1;
                    result.error = Some(err);
                    self.failed.store(true, Ordering::Relaxed);
                    break;
                }
            }
        }
        result
    }
}

/// Builds a report with the settings filled in and nothing measured.
fn empty_report(args: &BenchArgs, target: &Target, url: String) -> Report {
    Report {
        target: if args.baseline { "baseline" } else { "broker" },
        url,
        resource: target.to_string(),
        partitions: match target {
            Target::Topic(_) if !args.baseline => args.partitions,
            _ => 1,
        },
        messages_requested: args.messages,
        messages: 0,
        message_bytes: args.size,
        batch: args.batch,
        connections: args.connections as usize,
        requests: 0,
        errors: 0,
        seconds: 0.0,
        messages_per_second: 0.0,
        megabytes_per_second: 0.0,
        latency_ms: report::Latency::default(),
        stopped_by: StopReason::Messages,
    }
}

/// `{"messages":[{"value":"xxx…"}, …]}` with `count` messages whose value
/// has `size` characters.
fn batch_body(count: u64, size: usize) -> Bytes {
    let message = format!("{{\"value\":\"{}\"}}", "x".repeat(size));
    let mut body = String::with_capacity(16 + (message.len() + 1) * count as usize);
    body.push_str("{\"messages\":[");
    for index in 0..count {
        if index > 0 {
            body.push(',');
        }
        body.push_str(&message);
    }
    body.push_str("]}");
    Bytes::from(body)
}

/// Generates 16 random hex characters, for names and the throwaway
/// password.
fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn parse_duration_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(seconds),
        _ => Err(format!("`{text}` is not a number of seconds in (0, 86400]")),
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Topic(name) => write!(formatter, "topic {name}"),
            Target::Queue(name) => write!(formatter, "queue {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_body_has_count_values_of_size() {
        let body = batch_body(3, 5);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let messages = parsed["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[2]["value"], "xxxxx");
    }

    #[test]
    fn duration_must_be_positive() {
        assert_eq!(parse_duration_secs("2.5").unwrap(), 2.5);
        assert!(parse_duration_secs("0").is_err());
        assert!(parse_duration_secs("soon").is_err());
    }
}
