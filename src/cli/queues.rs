//! `queue create|list|describe|delete`, `receive`, `ack` and `nack`.

use anyhow::bail;
use clap::{Args, Subcommand};

use crate::cli::args::AccessArg;
use crate::cli::context::Context;
use crate::cli::output::{messages, print_json, print_line};
use crate::client::{Client, CreateQueue, FailedId, Message, ReceiveParams};

/// `ferry queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue.
    Create(CreateQueueArgs),
    /// List the queues you can see.
    List,
    /// Show a queue's depth, in-flight count and settings.
    Describe {
        /// Queue name
        name: String,
    },
    /// Delete a queue and all its messages; only its owner may.
    Delete {
        /// Queue name
        name: String,
    },
}

/// Options of `ferry queue create`. Unset options take the broker's
/// defaults.
#[derive(Debug, Args)]
pub struct CreateQueueArgs {
    /// Queue name, 1 to 200 characters of [A-Za-z0-9._-]
    name: String,

    /// Visibility to other users: who may see, send and receive
    #[arg(long, value_enum)]
    access: Option<AccessArg>,

    /// Milliseconds a received message stays leased before the queue hands
    /// it out again [default: the broker's, 30000]
    #[arg(long)]
    visibility_timeout_ms: Option<u64>,

    /// Deliveries after which a message moves to the dead-letter queue, or
    /// is dropped without one
    #[arg(long)]
    max_deliveries: Option<u32>,

    /// Queue that receives messages delivered --max-deliveries times,
    /// expired ones, and those nacked with --no-requeue
    #[arg(long, value_name = "QUEUE")]
    dead_letter_queue: Option<String>,

    /// Default time to live of messages, in milliseconds
    #[arg(long)]
    message_ttl_ms: Option<u64>,
}

/// Options of `ferry receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Queue name
    queue: String,

    /// Maximum messages leased by the request [default: 1]; not used with
    /// --follow
    #[arg(long, conflicts_with = "follow")]
    max_messages: Option<u32>,

    /// Milliseconds to wait for a message when none is ready [default: 0];
    /// not used with --follow
    #[arg(long, conflicts_with = "follow", value_parser = clap::value_parser!(u64).range(0..=30_000))]
    wait_ms: Option<u64>,

    /// Lease length in milliseconds, instead of the queue's visibility
    /// timeout; not used with --follow
    #[arg(long, conflicts_with = "follow")]
    visibility_timeout_ms: Option<u64>,

    /// Ack each message after printing it. Without this, the messages stay
    /// leased until their visibility timeout (with --follow, until the
    /// stream closes) and are then delivered again
    #[arg(long)]
    ack: bool,

    /// Stream deliveries over a WebSocket until interrupted or --count is
    /// reached
    #[arg(long)]
    follow: bool,

    /// With --follow, messages the broker may push ahead of the ones printed
    #[arg(long, default_value_t = 100, requires = "follow", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    credits: u64,

    /// With --follow, stop after printing this many messages
    #[arg(long, requires = "follow")]
    count: Option<u64>,
}

/// Options of `ferry ack`.
#[derive(Debug, Args)]
pub struct AckArgs {
    /// Queue name
    queue: String,

    /// Delivery ids, as `receive` prints them in `id`
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
}

/// Options of `ferry nack`.
#[derive(Debug, Args)]
pub struct NackArgs {
    /// Queue name
    queue: String,

    /// Delivery ids, as `receive` prints them in `id`
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,

    /// Do not requeue: the messages are not delivered again
    #[arg(long)]
    no_requeue: bool,
}

/// Runs a `queue` subcommand.
pub async fn run(context: &Context, command: QueueCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        QueueCommand::Create(args) => {
            let request = CreateQueue {
                name: args.name,
                access: args.access.map(Into::into),
                visibility_timeout_ms: args.visibility_timeout_ms,
                max_deliveries: args.max_deliveries,
                dead_letter_queue: args.dead_letter_queue,
                message_ttl_ms: args.message_ttl_ms,
            };
            let queue = client.create_queue(&request).await?;
            print_json(&queue)?;
            eprintln!("created queue {}", queue.name);
        }
        QueueCommand::List => print_json(&client.list_queues().await?)?,
        QueueCommand::Describe { name } => print_json(&client.describe_queue(&name).await?)?,
        QueueCommand::Delete { name } => {
            client.delete_queue(&name).await?;
            eprintln!("deleted queue {name}");
        }
    }
    Ok(())
}

/// Leases messages and prints one delivery per line, acking them with
/// --ack.
pub async fn receive(context: &Context, args: ReceiveArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    if args.follow {
        return receive_stream(&client, &args).await;
    }

    let params = ReceiveParams {
        max_messages: args.max_messages,
        wait_ms: args.wait_ms,
        visibility_timeout_ms: args.visibility_timeout_ms,
    };
    let deliveries = client.receive(&args.queue, params).await?;
    for delivery in &deliveries {
        print_line(delivery)?;
    }
    if args.ack && !deliveries.is_empty() {
        let ids = delivery_ids(&deliveries)?;
        let outcome = client.ack(&args.queue, &ids).await?;
        check_settled("acked", outcome.acked.len(), &outcome.failed)?;
        eprintln!("acked {}", messages(outcome.acked.len() as u64));
    }
    Ok(())
}

/// `receive --follow`: the queue's WebSocket stream.
async fn receive_stream(client: &Client, args: &ReceiveArgs) -> anyhow::Result<()> {
    let mut stream = client.stream_queue(&args.queue).await?;
    // As in `subscribe`, credit never goes past what --count still needs.
    let mut granted = args
        .count
        .map_or(args.credits, |count| count.min(args.credits));
    stream.credit(granted).await?;
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);

    while args.count.is_none_or(|count| printed < count) {
        let next = tokio::select! {
            next = stream.next_message() => next?,
            _ = &mut interrupted => break,
        };
        let Some(delivery) = next else {
            eprintln!("the broker closed the stream");
            break;
        };
        print_line(&delivery)?;
        printed += 1;
        if args.ack {
            let ids = delivery_ids(std::slice::from_ref(&delivery))?;
            let outcome = stream.ack_ids(&ids).await?;
            check_settled("acked", outcome.acked.len(), &outcome.failed)?;
        }
        if args.count.is_none_or(|count| granted < count) {
            stream.credit(1).await?;
            granted += 1;
        }
    }
    stream.close().await?;
    Ok(())
}

/// Acks deliveries by id.
pub async fn ack(context: &Context, args: AckArgs) -> anyhow::Result<()> {
    let outcome = context.client()?.ack(&args.queue, &args.ids).await?;
    print_json(&outcome)?;
    check_settled("acked", outcome.acked.len(), &outcome.failed)?;
    eprintln!("acked {}", messages(outcome.acked.len() as u64));
    Ok(())
}

/// Nacks deliveries by id.
pub async fn nack(context: &Context, args: NackArgs) -> anyhow::Result<()> {
    let outcome = context
        .client()?
        .nack(&args.queue, &args.ids, !args.no_requeue)
        .await?;
    print_json(&outcome)?;
    check_settled("nacked", outcome.nacked.len(), &outcome.failed)?;
    eprintln!("nacked {}", messages(outcome.nacked.len() as u64));
    Ok(())
}

fn delivery_ids(deliveries: &[Message]) -> anyhow::Result<Vec<String>> {
    deliveries
        .iter()
        .map(|delivery| {
            delivery.id.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "the broker sent a delivery without an id (offset {})",
                    delivery.offset
                )
            })
        })
        .collect()
}

/// Fails when some ids were not settled, naming each with its reason.
fn check_settled(verb: &str, settled: usize, failed: &[FailedId]) -> anyhow::Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    let reasons: Vec<String> = failed
        .iter()
        .map(|failure| format!("{}: {}", failure.id, failure.reason))
        .collect();
    bail!(
        "{verb} {}, {} failed: {}",
        messages(settled as u64),
        failed.len(),
        reasons.join("; ")
    )
}
