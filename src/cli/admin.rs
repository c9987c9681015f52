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
    /// Drop and recreate the mirror's tables, so that the running mirror
    /// writes every log again from offset 0.
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
            runtime.block_on(ferry::mirror::rebuild(&args.mysql_url))?;
            println!(
                "dropped and recreated the mirror tables; the broker running the mirror \
                 writes every log again from offset 0"
            );
            Ok(())
        }
    }
}
