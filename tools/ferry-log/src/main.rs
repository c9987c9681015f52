//! `ferry-log`: offline inspection of Ferry partition logs.
//!
//! Every file is opened read-only with plain reads, never through
//! `PartitionLog::open` (which recovers and so modifies the active segment),
//! so the tool is safe to run on the data directory of a live broker. On a
//! live directory the batch being written at that moment can show up as a
//! CRC mismatch or a batch that extends past the end of the file. The one
//! exception is `recover --apply`, which opens the partition as the broker
//! does and so needs the broker stopped.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ferry::log::reader::parse_log_file_name;

mod dump;
mod index;
mod indexes;
mod recover;
mod stats;
mod verify;

/// Maximum directory depth searched below each argument for partitions.
const MAX_DEPTH: usize = 16;

#[derive(Parser)]
#[command(
    name = "ferry-log",
    version,
    about = "Inspect Ferry partition logs; only `recover --apply` modifies them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every batch header and record of the partitions under DIR.
    Dump {
        /// Partition directory (containing .log files), or a directory
        /// searched for partition directories.
        dir: PathBuf,
        /// Print one JSON object per batch instead of text.
        #[arg(long)]
        json: bool,
        /// Start at the batch that contains this offset.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from_offset: u64,
        /// Start at the first record stored at or after this time, in ms
        /// since the Unix epoch.
        #[arg(long, value_name = "MS")]
        from_time: Option<i64>,
        /// Print only records with this key.
        #[arg(long)]
        key: Option<String>,
        /// Print record values and header values; without it a record
        /// shows only the size of its value.
        #[arg(long)]
        print_values: bool,
    },
    /// Summarize each partition under DIR: segments, bytes, batches,
    /// records, offsets and time range.
    Stats {
        /// Partition directory, or a directory searched for them.
        dir: PathBuf,
        /// Print one JSON object per partition instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check CRCs, offset order and continuity, leader epochs and the
    /// offset and time indexes. Exits with status 1 if any problem is found.
    Verify {
        /// Partition directories, or directories searched for them.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
    },
    /// Print the offset and time index entries of each segment and check
    /// them against its batches. Exits with status 1 if any is wrong.
    Index {
        /// Partition directory, or a directory searched for them.
        dir: PathBuf,
    },
    /// Report what opening each partition would cut from its active
    /// segment after a crash. Exits with status 1 if it would drop data.
    Recover {
        /// Partition directory, or a directory searched for them.
        dir: PathBuf,
        /// Make the cut: open and close each partition that needs it, as
        /// the broker would. The broker must be stopped.
        #[arg(long)]
        apply: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // A closed pipe, as in `ferry-log dump DIR | head`, is a normal end.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ferry-log: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one command and returns whether the data was free of problems.
fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Dump {
            dir,
            json,
            from_offset,
            from_time,
            key,
            print_values,
        } => {
            let filter = dump::Filter {
                from_offset,
                from_time,
                key,
                print_values,
            };
            let partitions = find_partitions(&dir)?;
            let mut clean = true;
            for partition in &partitions {
                clean &= dump::dump_partition(partition, &filter, json)?;
            }
            Ok(clean)
        }
        Command::Stats { dir, json } => {
            // Written with errors returned, so that a closed pipe ends the
            // command quietly instead of panicking in `println!`.
            let mut out = io::stdout().lock();
            let mut clean = true;
            for partition in find_partitions(&dir)? {
                let stats = stats::partition_stats(&partition)?;
                clean &= stats.is_clean();
                if json {
                    writeln!(out, "{}", stats.to_json(&partition))?;
                } else {
                    writeln!(out, "{}: {stats}", partition.display())?;
                }
            }
            Ok(clean)
        }
        Command::Verify { dirs } => {
            // A partition named twice, directly or through a parent, is
            // verified once.
            let mut partitions = BTreeSet::new();
            for dir in &dirs {
                for partition in find_partitions(dir)? {
                    let canonical = partition.canonicalize().unwrap_or(partition);
                    partitions.insert(canonical);
                }
            }
            let mut totals = verify::Totals::default();
            for partition in &partitions {
                totals.add(&verify::verify_partition(partition));
            }
            println!("{totals}");
            Ok(totals.problems == 0)
        }
        Command::Index { dir } => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let mut problems = 0;
            for partition in find_partitions(&dir)? {
                problems += index::index_partition(&partition, &mut out)?;
            }
            writeln!(out, "{problems} problems")?;
            out.flush()?;
            Ok(problems == 0)
        }
        Command::Recover { dir, apply } => {
            let mut clean = true;
            for partition in find_partitions(&dir)? {
                clean &= recover::recover_partition(&partition, apply)?;
            }
            Ok(clean)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Returns `dir` and every directory below it that contains segment files
/// (`.log` files with a 20-digit name), sorted, without following symbolic
/// links.
fn find_partitions(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        bail!(
            "{} not found; a topic partition is <data dir>/topics/<name>@<id>/<partition>, \
             see `ls <data dir>/topics`",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut partitions = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), 0)];
    while let Some((current, depth)) = pending.pop() {
        let entries = fs::read_dir(&current)
            .with_context(|| format!("failed to list {}", current.display()))?;
        let mut has_log = false;
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to list {}", current.display()))?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() && depth < MAX_DEPTH {
                pending.push((entry.path(), depth + 1));
            } else if file_type.is_file() {
                let name = entry.file_name();
                has_log |= name.to_str().and_then(parse_log_file_name).is_some();
            }
        }
        if has_log {
            partitions.push(current);
        }
    }
    partitions.sort();
    if partitions.is_empty() {
        bail!(
            "no segment .log files found in {} or below it",
            dir.display()
        );
    }
    Ok(partitions)
}
