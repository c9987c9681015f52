//! `subscription create|list|delete`, `subscribe` (WebSocket push),
//! `pull` and `commit`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};

use crate::cli::args::StartArg;
use crate::cli::context::Context;
use crate::cli::output::{print_json, print_line};
use crate::client::{CreateSubscription, PartitionOffset, PullParams};

/// `ferry subscription ...`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Create a subscription (consumer group) on a topic.
    Create(CreateSubscriptionArgs),
    /// List a topic's subscriptions with their committed offsets.
    List {
        /// Topic name
        topic: String,
    },
    /// Delete a subscription and its committed offsets.
    Delete {
        /// Topic name
        topic: String,
        /// Subscription name
        name: String,
    },
}

/// Options of `ferry subscription create`.
#[derive(Debug, Args)]
pub struct CreateSubscriptionArgs {
    /// Topic to subscribe to
    topic: String,

    /// Subscription name, unique within the topic
    name: String,

    /// Start position [default: the broker's, latest]
    #[arg(long, value_enum)]
    start: Option<StartArg>,

    /// Routing key pattern; only matching messages are delivered
    #[arg(long)]
    pattern: Option<String>,
}

/// Options of `ferry subscribe`.
#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Topic name
    topic: String,

    /// Subscription name
    subscription: String,

    /// Messages the broker may push ahead of the ones printed
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    credits: u64,

    /// Stop after printing this many messages [default: run until
    /// interrupted]
    #[arg(long)]
    count: Option<u64>,

    /// Do not ack messages; the broker then delivers them again after the
    /// stream closes
    #[arg(long)]
    no_ack: bool,
}

/// Options of `ferry pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Topic name
    topic: String,

    /// Subscription name
    subscription: String,

    /// Maximum messages returned [default: the broker's, 100]
    #[arg(long)]
    max_messages: Option<u32>,

    /// Milliseconds to wait for a message when none is there yet
    /// [default: 0]
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=30_000))]
    wait_ms: Option<u64>,

    /// Commit the offsets after the printed messages
    #[arg(long)]
    commit: bool,
}

/// Options of `ferry commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Topic name
    topic: String,

    /// Subscription name
    subscription: String,

    /// Offsets as PARTITION:OFFSET, where OFFSET is the next one to read
    /// (one past the last processed message), e.g. 0:42 1:17
    #[arg(value_name = "PARTITION:OFFSET", required = true, value_parser = parse_partition_offset)]
    offsets: Vec<PartitionOffset>,
}

/// Runs a `subscription` subcommand.
pub async fn run(context: &Context, command: SubscriptionCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        SubscriptionCommand::Create(args) => {
            let request = CreateSubscription {
                name: args.name,
                pattern: args.pattern,
                start: args.start.map(Into::into),
            };
            let subscription = client.create_subscription(&args.topic, &request).await?;
            print_json(&subscription)?;
            eprintln!(
                "created subscription {} on topic {}",
                subscription.name, subscription.topic
            );
        }
        SubscriptionCommand::List { topic } => {
            print_json(&client.list_subscriptions(&topic).await?)?;
        }
        SubscriptionCommand::Delete { topic, name } => {
            client.delete_subscription(&topic, &name).await?;
            eprintln!("deleted subscription {name} of topic {topic}");
        }
    }
    Ok(())
}

/// Streams a subscription, printing each message and acking it after it is
/// printed.
pub async fn subscribe(context: &Context, args: SubscribeArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let mut stream = client.subscribe(&args.topic, &args.subscription).await?;
    // Never grant more credit than --count still needs, so the broker does
    // not push messages this command would leave unacked.
    let mut granted = args
        .count
        .map_or(args.credits, |count| count.min(args.credits));
    if granted > 0 {
        stream.credit(granted).await?;
    }
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);

    while args.count.is_none_or(|count| printed < count) {
        let next = tokio::select! {
            next = stream.next_message() => next?,
            _ = &mut interrupted => break,
        };
        let Some(message) = next else {
            eprintln!("the broker closed the stream");
            break;
        };
        print_line(&message)?;
        printed += 1;
        if !args.no_ack {
            stream
                .ack_offsets(&[PartitionOffset {
                    partition: message.partition,
                    offset: message.offset,
                }])
                .await?;
        }
        if args.count.is_none_or(|count| granted < count) {
            stream.credit(1).await?;
            granted += 1;
        }
    }
    stream.close().await?;
    Ok(())
}

/// Pulls once and prints one message per line.
pub async fn pull(context: &Context, args: PullArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let params = PullParams {
        max_messages: args.max_messages,
        wait_ms: args.wait_ms,
    };
    let messages = client.pull(&args.topic, &args.subscription, params).await?;
    let mut next_offsets: BTreeMap<u32, u64> = BTreeMap::new();
    for message in &messages {
        print_line(message)?;
        let next = next_offsets.entry(message.partition).or_default();
        *next = (*next).max(message.offset + 1);
    }

    if args.commit && !next_offsets.is_empty() {
        let offsets: Vec<PartitionOffset> = next_offsets
            .into_iter()
            .map(|(partition, offset)| PartitionOffset { partition, offset })
            .collect();
        client
            .commit(&args.topic, &args.subscription, &offsets)
            .await?;
        eprintln!("committed {}", describe_offsets(&offsets));
    }
    Ok(())
}

/// Commits offsets given on the command line.
pub async fn commit(context: &Context, args: CommitArgs) -> anyhow::Result<()> {
    context
        .client()?
        .commit(&args.topic, &args.subscription, &args.offsets)
        .await?;
    eprintln!(
        "committed {} for subscription {} of topic {}",
        describe_offsets(&args.offsets),
        args.subscription,
        args.topic
    );
    Ok(())
}

fn describe_offsets(offsets: &[PartitionOffset]) -> String {
    offsets
        .iter()
        .map(|entry| format!("partition {} offset {}", entry.partition, entry.offset))
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_partition_offset(text: &str) -> Result<PartitionOffset, String> {
    let invalid = || format!("`{text}` is not PARTITION:OFFSET, e.g. 0:42");
    let (partition, offset) = text.split_once(':').ok_or_else(invalid)?;
    Ok(PartitionOffset {
        partition: partition.trim().parse().map_err(|_| invalid())?,
        offset: offset.trim().parse().map_err(|_| invalid())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_offset_parses() {
        let parsed = parse_partition_offset("1:42").unwrap();
        assert_eq!(
            parsed,
            PartitionOffset {
                partition: 1,
                offset: 42
            }
        );
        assert!(parse_partition_offset("42").is_err());
        assert!(parse_partition_offset("a:1").is_err());
    }
}
