//! Writes the seed corpora of the fuzz targets.
//!
//! This is an example rather than a `[[bin]]`, because `cargo fuzz` treats
//! every binary of the package as a fuzz target.
//!
//! Usage: `cargo run --example seeds -- CORPUS_DIR`. Creates
//! `CORPUS_DIR/batch_decode` and `CORPUS_DIR/recovery_scan` and writes one
//! file per seed into each, replacing seeds of the same name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::{env, fs, io};

use ferry_fuzz::seeds::{batch_seeds, segment_seeds};

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let (Some(corpus_dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: seeds CORPUS_DIR");
        return ExitCode::from(2);
    };
    let corpus_dir = PathBuf::from(corpus_dir);

    let targets = [
        ("batch_decode", batch_seeds()),
        ("recovery_scan", segment_seeds()),
    ];
    for (target, seeds) in targets {
        let dir = corpus_dir.join(target);
        if let Err(error) = write_seeds(&dir, &seeds) {
            eprintln!("error: failed to write seeds to {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {} seeds to {}", seeds.len(), dir.display());
    }
    ExitCode::SUCCESS
}

fn write_seeds(dir: &Path, seeds: &[(&str, Vec<u8>)]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}
