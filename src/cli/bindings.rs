//! `binding add|list|remove`: bind queues to topics with routing-key
//! patterns.

use clap::Subcommand;

use crate::cli::context::Context;
use crate::cli::output::print_json;

/// `ferry binding ...`.
#[derive(Debug, Subcommand)]
pub enum BindingCommand {
    /// Bind a queue to a topic: messages published there whose routing key
    /// matches the pattern are also sent to the queue.
    Add {
        /// Queue name
        queue: String,
        /// Topic name
        #[arg(long)]
        topic: String,
        /// Routing-key pattern: `*` matches one word, `#` zero or more,
        /// e.g. orders.*.created or orders.#
        #[arg(long)]
        pattern: String,
    },
    /// List a queue's bindings.
    List {
        /// Queue name
        queue: String,
    },
    /// Remove a binding by id; its creator or the queue's owner may.
    Remove {
        /// Queue name
        queue: String,
        /// Binding id, as `add` and `list` print it
        id: u64,
    },
}

/// Runs a `ferry binding` command.
pub async fn run(context: &Context, command: BindingCommand) -> anyhow::Result<()> {
    let client = context.client()?;
    match command {
        BindingCommand::Add {
            queue,
            topic,
            pattern,
        } => {
            let binding = client.create_binding(&queue, &topic, &pattern).await?;
            print_json(&binding)?;
            eprintln!("bound queue {queue} to topic {topic} with pattern `{pattern}`");
        }
        BindingCommand::List { queue } => print_json(&client.list_bindings(&queue).await?)?,
        BindingCommand::Remove { queue, id } => {
            client.delete_binding(&queue, id).await?;
            eprintln!("removed binding {id} of queue {queue}");
        }
    }
    Ok(())
}
