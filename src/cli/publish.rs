//! `publish` (to a topic) and `send` (to a queue): messages from the
//! command line or from a JSON-lines file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::cli::context::Context;
use crate::cli::output::{self, print_json};
use crate::client::{Client, ClientError, NewMessage, Offsets, PartitionOffset};

/// Options of `ferry publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Topic to publish to
    topic: String,

    #[command(flatten)]
    messages: MessageArgs,
}

/// Options of `ferry send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Queue to send to
    queue: String,

    #[command(flatten)]
    messages: MessageArgs,
}

/// The messages and their fields, shared by `publish` and `send`.
#[derive(Debug, Args)]
pub struct MessageArgs {
    /// Message values, one message each. A value that parses as JSON is sent
    /// as that JSON (`42`, `{"a":1}`, `"quoted"`); anything else is sent as
    /// a JSON string
    #[arg(value_name = "VALUE", conflicts_with = "file")]
    values: Vec<String>,

    /// Partitioning key of every message; messages with one key go to one
    /// partition
    #[arg(long)]
    key: Option<String>,

    /// Dotted routing key of every message, e.g. orders.eu.created
    #[arg(long)]
    routing_key: Option<String>,

    /// Time to live of every message in milliseconds; the broker never
    /// delivers a message after it
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ttl_ms: Option<u64>,

    /// Header of every message as NAME=VALUE; repeat for more headers
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// JSON-lines file with one message value per line, `-` for standard
    /// input; blank lines are skipped
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,

    /// Messages per request when publishing a file
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,

    /// Send each value or line as a JSON string as it is, without parsing it
    /// as JSON
    #[arg(long, conflicts_with = "base64")]
    raw: bool,

    /// Treat each value or line as base64 and send the decoded bytes as a
    /// binary value (`value_b64`)
    #[arg(long)]
    base64: bool,
}

/// Destination of the messages.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Topic(&'a str),
    Queue(&'a str),
}

/// The summary printed after publishing a file.
#[derive(Debug, Serialize)]
struct FileSummary {
    messages: u64,
    /// Bytes of the values as read from the file, newlines excluded.
    bytes: u64,
    seconds: f64,
    messages_per_second: f64,
}

/// Publishes messages to a topic.
pub async fn publish(context: &Context, args: PublishArgs) -> anyhow::Result<()> {
    deliver(context, Target::Topic(&args.topic), &args.messages).await
}

/// Sends messages to a queue.
pub async fn send(context: &Context, args: SendArgs) -> anyhow::Result<()> {
    deliver(context, Target::Queue(&args.queue), &args.messages).await
}

async fn deliver(context: &Context, target: Target<'_>, args: &MessageArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    if let Some(path) = &args.file {
        return deliver_file(&client, target, args, path).await;
    }
    if args.values.is_empty() {
        bail!("no messages given: pass VALUE arguments or --file FILE (`--file -` reads standard input)");
    }

    let messages = args
        .values
        .iter()
        .map(|value| build_message(args, value))
        .collect::<anyhow::Result<Vec<NewMessage>>>()?;
    let offsets = send_batch(&client, target, &messages).await?;
    print_json(&Offsets { offsets })?;
    eprintln!(
        "{} {} to {}",
        target.verb(),
        output::messages(messages.len() as u64),
        target
    );
    Ok(())
}

/// Publishes a JSON-lines file in batches, one request at a time so that
/// messages keep the file's order.
async fn deliver_file(
    client: &Client,
    target: Target<'_>,
    args: &MessageArgs,
    path: &PathBuf,
) -> anyhow::Result<()> {
    let is_stdin = path.as_os_str() == "-";
    let (reader, total_bytes): (Box<dyn BufRead>, Option<u64>) = if is_stdin {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let file =
            File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
        let length = file.metadata().ok().map(|metadata| metadata.len());
        (Box::new(BufReader::new(file)), length)
    };
    let source = if is_stdin {
        "standard input".to_string()
    } else {
        path.display().to_string()
    };
    let progress = progress_bar(total_bytes);
    let started = Instant::now();
    let mut lines = reader.lines();
    let mut line_number = 0u64;
    let mut sent = 0u64;
    let mut sent_bytes = 0u64;

    loop {
        // Read the next batch, remembering the line it starts at for errors.
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut batch_read = 0u64;
        let first_line = line_number + 1;
        while (batch.len() as u64) < args.batch_size {
            let Some(line) = lines.next() else { break };
            line_number += 1;
            let line =
                line.with_context(|| format!("failed to read line {line_number} of {source}"))?;
            batch_read += line.len() as u64 + 1;
            let line = line.strip_suffix('\r').unwrap_or(&line);
            if line.trim().is_empty() {
                continue;
            }
            let message = build_message(args, line).with_context(|| {
                format!(
                    "{} {}, then line {line_number} of {source} was rejected",
                    target.verb(),
                    output::messages(sent)
                )
            })?;
            batch_bytes += line.len() as u64;
            batch.push(message);
        }
        if batch.is_empty() {
            break;
        }

        if let Err(err) = send_batch(client, target, &batch).await {
            progress.abandon();
            return Err(anyhow::Error::new(err).context(format!(
                "{} {}, then the batch starting at line {first_line} of {source} failed",
                target.verb(),
                output::messages(sent)
            )));
        }
        sent += batch.len() as u64;
        sent_bytes += batch_bytes;
        progress.inc(batch_read);
        progress.set_message(format!("{sent} messages"));
    }
    progress.finish_and_clear();

    let seconds = started.elapsed().as_secs_f64();
    let summary = FileSummary {
        messages: sent,
        bytes: sent_bytes,
        seconds,
        messages_per_second: if seconds > 0.0 {
            sent as f64 / seconds
        } else {
            0.0
        },
    };
    print_json(&summary)?;
    eprintln!(
        "{} {} ({} bytes) to {} in {:.2} s, {:.0} messages/s",
        target.verb(),
        output::messages(summary.messages),
        summary.bytes,
        target,
        summary.seconds,
        summary.messages_per_second
    );
    Ok(())
}

async fn send_batch(
    client: &Client,
    target: Target<'_>,
    messages: &[NewMessage],
) -> Result<Vec<PartitionOffset>, ClientError> {
    match target {
        Target::Topic(topic) => client.publish(topic, messages).await,
        Target::Queue(queue) => client.send(queue, messages).await,
    }
}

/// Creates a progress bar on standard error over the bytes of the input, hidden
/// when standard error is not a terminal.
fn progress_bar(total_bytes: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total_bytes {
        Some(total) => (
            ProgressBar::new(total),
            "{bar:40} {bytes}/{total_bytes} {msg} ({elapsed})",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {bytes} {msg} ({elapsed})",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Builds one message from a value as typed or read, with the shared fields.
fn build_message(args: &MessageArgs, text: &str) -> anyhow::Result<NewMessage> {
    let mut message = if args.base64 {
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text.trim())
            .map_err(|err| anyhow!("invalid base64: {err}"))?;
        NewMessage::binary(bytes)
    } else if args.raw {
        NewMessage::json(Value::String(text.to_string()))
    } else if args.file.is_some() {
        let value: Value = serde_json::from_str(text)
            .map_err(|err| anyhow!("invalid JSON ({err}); pass --raw to send lines as strings"))?;
        NewMessage::json(value)
    } else {
        NewMessage::json(parse_value(text))
    };
    message.key = args.key.clone();
    message.routing_key = args.routing_key.clone();
    message.ttl_ms = args.ttl_ms;
    message.headers = args.headers.iter().cloned().collect::<BTreeMap<_, _>>();
    Ok(message)
}

/// Parses a command-line value: its JSON if it parses, else the text as a
/// string.
fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not NAME=VALUE")),
    }
}

impl Target<'_> {
    fn verb(self) -> &'static str {
        match self {
            Target::Topic(_) => "published",
            Target::Queue(_) => "sent",
        }
    }
}

impl std::fmt::Display for Target<'_> {
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
    fn values_parse_as_json_or_string() {
        assert_eq!(parse_value("42"), Value::from(42));
        assert_eq!(parse_value(r#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(parse_value(r#""quoted""#), Value::from("quoted"));
        assert_eq!(parse_value("hello world"), Value::from("hello world"));
    }

    #[test]
    fn header_needs_name_and_equals() {
        assert_eq!(
            parse_header("trace=a=b").unwrap(),
            ("trace".to_string(), "a=b".to_string())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }
}
