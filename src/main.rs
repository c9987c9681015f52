//! The `ferry` command line: `ferry serve` runs a broker, and the other
//! subcommands are clients of its REST API (see `cli`).

mod cli;

use ferry::client;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use ferry::config::ServeArgs;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(*args) {
            Ok(()) => ExitCode::SUCCESS,
            // One line with the causes, like the client commands print;
            // the debug form would add a backtrace under RUST_BACKTRACE.
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Admin(command) => match cli::admin::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        },
        command => cli::run(cli.connection, command),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = args.resolve()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| anyhow::anyhow!("failed to listen on {}: {err}", config.listen))?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = ferry::server::Server::open(config, listener).await?;
        // Tests and scripts wait for this line: print it only once the data
        // directory is open and requests can be served.
        println!("ferry listening on {scheme}://{}", server.local_addr());
        let shutdown = async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler cannot fail at start");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        };
        server.run(shutdown).await?;
        Ok(())
    })
}
