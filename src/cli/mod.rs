//! The `ferry` command line: `serve` runs a broker, and every other
//! subcommand is a client of one REST route (or, for `bench`, a load
//! generator).
//!
//! Data goes to standard output as JSON: one document, or one message per
//! line where messages stream. Confirmations and progress go to standard
//! error, so the output can be piped. A failure prints `error: <message>` to
//! standard error and exits with status 1.

mod account;
pub mod admin;
mod args;
mod bench;
mod bindings;
mod context;
mod credentials;
mod output;
mod publish;
mod queues;
mod shell;
mod subscriptions;
mod system;
mod topics;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use ferry::config::ServeArgs;

use crate::client::ClientError;
use context::Context;

/// Default broker when neither `--broker` nor a stored login names one.
pub const DEFAULT_BROKER: &str = "http://127.0.0.1:8080";

/// The whole command line.
#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry message broker: `ferry serve` runs a broker, the other commands are its client"
)]
pub struct Cli {
    /// Connection settings of the client commands.
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every client command; `serve` ignores them.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Broker base URL, e.g. http://127.0.0.1:8080. Repeat the option or
    /// separate URLs with commas to list brokers to fail over between
    /// [default: the brokers stored by `ferry login`, else
    /// http://127.0.0.1:8080]
    #[arg(
        long = "broker",
        env = "FERRY_BROKER",
        value_delimiter = ',',
        value_name = "URL",
        global = true,
        help_heading = "Client connection options"
    )]
    pub brokers: Vec<String>,

    /// Bearer token to send [default: the token stored by `ferry login`]
    #[arg(
        long,
        env = "FERRY_TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Client connection options"
    )]
    pub token: Option<String>,

    /// PEM file with the CA certificates to trust for https brokers; they
    /// replace the built-in web PKI roots
    #[arg(
        long,
        env = "FERRY_CA_CERT",
        value_name = "FILE",
        global = true,
        help_heading = "Client connection options"
    )]
    pub ca_cert: Option<PathBuf>,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Run a broker.
    Serve(Box<ServeArgs>),

    /// Create a user account.
    Register(account::RegisterArgs),
    /// Log in and store the token and broker URLs for later commands.
    Login(account::LoginArgs),
    /// Revoke the current token and delete the stored login.
    Logout,
    /// Show the user and expiry of the current token.
    Whoami,

    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topic(topics::TopicCommand),
    /// Publish messages to a topic.
    Publish(publish::PublishArgs),
    /// Read one partition of a topic by offset.
    Consume(topics::ConsumeArgs),

    /// Create, list and delete subscriptions (consumer groups) of a topic.
    #[command(subcommand)]
    Subscription(subscriptions::SubscriptionCommand),
    /// Stream a subscription's messages over a WebSocket, acking each one.
    Subscribe(subscriptions::SubscribeArgs),
    /// Take the next messages of a subscription with one request.
    Pull(subscriptions::PullArgs),
    /// Commit a subscription's offsets.
    Commit(subscriptions::CommitArgs),

    /// Create, list, describe and delete queues.
    #[command(subcommand)]
    Queue(queues::QueueCommand),
    /// Bind queues to topics with routing-key patterns.
    #[command(subcommand)]
    Binding(bindings::BindingCommand),
    /// Send messages to a queue.
    Send(publish::SendArgs),
    /// Lease messages from a queue, with one request or as a WebSocket
    /// stream.
    Receive(queues::ReceiveArgs),
    /// Ack queue deliveries by id, removing their messages.
    Ack(queues::AckArgs),
    /// Nack queue deliveries by id, requeueing their messages unless
    /// --no-requeue is given.
    Nack(queues::NackArgs),

    /// Give a user a permission on a private topic or queue.
    Grant(system::GrantArgs),
    /// Take back a permission given by `grant`.
    Revoke(system::GrantArgs),

    /// Show the brokers of the cluster and the partition leaders.
    Cluster,
    /// Move the replicas of a topic or queue to other brokers of a
    /// cluster, switching once the new replicas caught up.
    Reassign(system::ReassignArgs),
    /// Check that the broker serves requests.
    Health,
    /// Print the broker's counters in the Prometheus text format.
    Metrics,
    /// Print the OpenAPI description of the REST API.
    Openapi,

    /// Measure publish throughput and latency over REST.
    Bench(bench::BenchArgs),

    /// Operate on the broker's surroundings: the MySQL mirror.
    #[command(subcommand)]
    Admin(admin::AdminCommand),

    /// Open a menu-driven console: accounts, queues, topics, and
    /// subscriptions that deliver while the menu is open.
    Shell,
}

/// Runs a client command and maps its outcome to the exit status.
pub fn run(connection: ConnectionArgs, command: Command) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let context = Context::new(connection).map_err(|err| (err, None))?;
        dispatch(&context, command).await.map_err(|err| {
            let hint = context.hint(&err);
            (err, hint)
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((err, _)) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err((err, hint)) => {
            eprintln!("error: {}", error_message(&err));
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(context: &Context, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) | Command::Admin(_) => {
            unreachable!("main runs `serve` and `admin` without the client")
        }
        Command::Register(args) => account::register(context, args).await,
        Command::Login(args) => account::login(context, args).await,
        Command::Logout => account::logout(context).await,
        Command::Whoami => account::whoami(context),
        Command::Topic(command) => topics::run(context, command).await,
        Command::Publish(args) => publish::publish(context, args).await,
        Command::Consume(args) => topics::consume(context, args).await,
        Command::Subscription(command) => subscriptions::run(context, command).await,
        Command::Subscribe(args) => subscriptions::subscribe(context, args).await,
        Command::Pull(args) => subscriptions::pull(context, args).await,
        Command::Commit(args) => subscriptions::commit(context, args).await,
        Command::Queue(command) => queues::run(context, command).await,
        Command::Binding(command) => bindings::run(context, command).await,
        Command::Send(args) => publish::send(context, args).await,
        Command::Receive(args) => queues::receive(context, args).await,
        Command::Ack(args) => queues::ack(context, args).await,
        Command::Nack(args) => queues::nack(context, args).await,
        Command::Grant(args) => system::grant(context, args, true).await,
        Command::Revoke(args) => system::grant(context, args, false).await,
        Command::Cluster => system::cluster(context).await,
        Command::Reassign(args) => system::reassign(context, args).await,
        Command::Health => system::health(context).await,
        Command::Metrics => system::metrics(context).await,
        Command::Openapi => system::openapi(context).await,
        Command::Bench(args) => bench::run(context, args).await,
        Command::Shell => shell::run(context).await,
    }
}

/// Formats the error and its causes on one line. A [`ClientError`] already names
/// its cause, so only other errors get their chain appended.
fn error_message(err: &anyhow::Error) -> String {
    if err.downcast_ref::<ClientError>().is_some() {
        return err.to_string();
    }
    format!("{err:#}")
}

/// Returns whether writing to standard output failed because the reader left,
/// as with `ferry consume ... | head`; that ends the command quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
