//! Writing data to standard output. Errors, including a closed pipe, are
//! returned rather than panicking as `println!` would.

use std::io::Write;

use serde::Serialize;

/// Writes `value` as indented JSON and a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_flushed(text.as_bytes())
}

/// Writes `value` as JSON on one line, for streams of messages, and flushes
/// so that a reader sees each line at once.
pub fn print_line<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string(value)?;
    text.push('\n');
    write_flushed(text.as_bytes())
}

/// Writes `text` as it is.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    write_flushed(text.as_bytes())
}

/// `1 message`, `2 messages`.
pub fn messages(count: u64) -> String {
    plural(count, "message")
}

/// `count` and `noun`, with an `s` unless `count` is 1.
pub fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

fn write_flushed(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}
