//! `topic create|list|describe|delete` and `consume` (fetch by offset).

use clap::{Args, Subcommand};

use crate::cli::args::{AccessArg, CleanupArg};
use crate::cli::context::Context;
use crate::cli::output::{plural, print_json, print_line};
use crate::client::{CreateTopic, FetchParams};

/// Maximum wait the broker allows for one fetch, in milliseconds.
const MAX_WAIT_MS: u64 = 30_000;

/// `ferry topic ...`.
#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateTopicArgs),
    /// List the topics you can see.
    List,
    /// Show a topic's settings, partitions and offsets.
    Describe {
        /// Topic name
        name: String,
    },
    /// Delete a topic and all its messages; only its owner may.
    Delete {
        /// Topic name
        name: String,
    },
}

/// Options of `ferry topic create`. Unset options take the broker's
/// defaults.
#[derive(Debug, Args)]
pub struct CreateTopicArgs {
    /// Topic name, 1 to 200 characters of [A-Za-z0-9._-]
    name: String,

    /// Number of partitions [default: 1]
    #[arg(long)]
    partitions: Option<u32>,

    /// Visibility to other users: who may see, publish and consume
    #[arg(long, value_enum)]
    access: Option<AccessArg>,

    /// Copies of each partition across brokers; a single-node broker takes
    /// only 1
    #[arg(long)]
    replication_factor: Option<u32>,

    /// Size in bytes at which a partition rolls to a new segment, at least
    /// 1048576 [default: the broker's --segment-bytes]
    #[arg(long)]
    segment_bytes: Option<u64>,

    /// Age in milliseconds after which old segments are deleted
    #[arg(long)]
    retention_ms: Option<u64>,

    /// Size in bytes per partition above which old segments are deleted
    #[arg(long)]
    retention_bytes: Option<u64>,

    /// Cleanup policy: `delete` (old segments go by retention) or `compact`
    /// (the latest message per key stays; every message needs a key)
    #[arg(long, value_enum)]
    cleanup: Option<CleanupArg>,

    /// Default time to live of messages, in milliseconds
    #[arg(long)]
    message_ttl_ms: Option<u64>,
}

/// Options of `ferry consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read
    topic: String,

    /// Partition to read
    #[arg(long, default_value_t = 0)]
    partition: u32,

    /// First offset to read [default: the partition's first retained
    /// offset]
    #[arg(long)]
    offset: Option<u64>,

    /// Maximum messages per request [default: the broker's, 100]
    #[arg(long)]
    max_messages: Option<u32>,

    /// Maximum bytes of messages per request [default: the broker's, 1 MiB]
    #[arg(long)]
    max_bytes: Option<u64>,

    /// Milliseconds a request waits for a message when none is there yet
    /// [default: 0, or 30000 with --follow]
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_MS))]
    wait_ms: Option<u64>,

    /// Keep fetching new messages until interrupted or --count is reached
    #[arg(long)]
    follow: bool,

    /// Stop after printing this many messages
    #[arg(long)]
    count: Option<u64>,
}

/// Runs a `topic` subcommand.
pub async fn run(context: &Context, command: TopicCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        TopicCommand::Create(args) => {
            let request = CreateTopic {
                name: args.name,
                access: args.access.map(Into::into),
                partitions: args.partitions,
                replication_factor: args.replication_factor,
                retention_ms: args.retention_ms,
                retention_bytes: args.retention_bytes,
                segment_bytes: args.segment_bytes,
                cleanup: args.cleanup.map(Into::into),
                message_ttl_ms: args.message_ttl_ms,
            };
            let topic = client.create_topic(&request).await?;
            print_json(&topic)?;
            eprintln!(
                "created topic {} with {}",
                topic.name,
                plural(topic.partition_count.into(), "partition")
            );
        }
        TopicCommand::List => print_json(&client.list_topics().await?)?,
        TopicCommand::Describe { name } => print_json(&client.describe_topic(&name).await?)?,
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            eprintln!("deleted topic {name}");
        }
    }
    Ok(())
}

/// Fetches one partition by offset and prints one message per line.
pub async fn consume(context: &Context, args: ConsumeArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let default_wait = if args.follow { MAX_WAIT_MS } else { 0 };
    let mut params = FetchParams {
        offset: args.offset,
        max_messages: args.max_messages,
        max_bytes: args.max_bytes,
        wait_ms: Some(args.wait_ms.unwrap_or(default_wait)),
    };
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);

    loop {
        let fetched = tokio::select! {
            fetched = client.fetch(&args.topic, args.partition, params) => fetched?,
            _ = &mut interrupted => break,
        };
        // With --count the last batch may be printed only in part, and the
        // next offset is then that of the first message left unprinted.
        let mut next_offset = fetched.next_offset;
        for message in &fetched.messages {
            if args.count.is_some_and(|count| printed >= count) {
                next_offset = message.offset;
                break;
            }
            print_line(message)?;
            printed += 1;
        }
        params.offset = Some(next_offset);

        let done = args.count.is_some_and(|count| printed >= count);
        if done || !args.follow {
            eprintln!(
                "next offset {next_offset}, high watermark {}",
                fetched.high_watermark
            );
            break;
        }
    }
    Ok(())
}
