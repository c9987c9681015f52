//! `ferry admin`: operations on a broker's surroundings rather than through
//! its REST API.

use clap::{Args, Subcommand};

/// The admin subcommands.
#[derive(Subcommand)]
pub enum AdminCommand {
    /// Manage the MySQL mirror of the logs.
    #[command(subcommand)]
    Mirror(MirrorCommand),
}

/// The mirror subcommands.
#[derive(Subcommand)]
pub enum MirrorCommand {
    /// Drop the mirror's tables, so that the running mirror creates them
    /// again and writes every log again from its start offset.
    Rebuild(RebuildArgs),
}

/// Flags of `ferry admin mirror rebuild`.
#[derive(Args)]
pub struct RebuildArgs {
    /// The mirror's database, as given to `ferry serve --mysql-url`.
    #[arg(long, env = "FERRY_MYSQL_URL")]
    pub mysql_url: String,
}

/// Runs an admin command.
pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Mirror(MirrorCommand::Rebuild(args)) => {
            let runtime = tokio::runtime::Runtime::new()?;
            // The error's own text already quotes its causes.
            runtime
                .block_on(ferry::mirror::rebuild(&args.mysql_url))
                .map_err(|err| anyhow::anyhow!("{err}"))?;
            println!(
                "dropped the mirror tables; the broker that runs the mirror creates them again \
                 and writes every log again from its start offset"
            );
            Ok(())
        }
    }
}
