//! Runs the built `ferry-log` binary on logs written by `PartitionLog`.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use ferry::log::{LogConfig, PartitionLog, ProducerInfo, Record, SegmentInfo};

const BATCHES: usize = 30;

fn ferry_log(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry-log"))
        .args(args)
        .output()
        .expect("failed to run ferry-log")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 64,
    }
}

/// Writes a log of several segments. Batch `i` contains `1 + i % 3` records,
/// and batch 1 has a value that is not UTF-8.
fn write_log(log: &PartitionLog) {
    for i in 0..BATCHES {
        let records: Vec<Record> = (0..1 + i % 3)
            .map(|j| Record {
                timestamp_ms: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("key-{i}"))),
                producer: Some(Bytes::from_static(b"alice")),
                value: Some(if i == 1 {
                    Bytes::from_static(&[0xff, 0xfe, 0x00])
                } else {
                    Bytes::from(format!("value-{i}-{j}"))
                }),
                headers: vec![("trace".to_owned(), Bytes::from_static(b"t1"))],
                ..Record::default()
            })
            .collect();
        log.append(&records, 0, ProducerInfo::default()).unwrap();
    }
}

/// Writes and closes a log in `dir`, returning its segments.
fn closed_log(dir: &Path) -> Vec<SegmentInfo> {
    let log = PartitionLog::open(dir, config()).unwrap();
    write_log(&log);
    log.close().unwrap();
    log.segments()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn index_path(segment: &SegmentInfo) -> PathBuf {
    segment.path.with_extension("index")
}

#[test]
fn verify_clean_log_passes() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    assert!(segments.len() > 2);

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let expected = format!(
        "verified 1 partitions, {} segments, {BATCHES} batches: 0 problems",
        segments.len()
    );
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
}

#[test]
fn verify_live_log_with_preallocated_tail_passes() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    write_log(&log);
    let active = log.segments().pop().unwrap();
    let before = fs::read(&active.path).unwrap();
    assert!(
        before.len() as u64 > active.size_bytes,
        "no preallocated tail"
    );

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = ferry_log(&["dump", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(
        fs::read(&active.path).unwrap(),
        before,
        "the tool changed the segment"
    );
}

#[test]
fn verify_reports_flipped_byte_with_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(&dir.path().join("original"));
    let copy = dir.path().join("copy");
    copy_dir(&dir.path().join("original"), &copy);

    // Damage a record of the second batch of the first (sealed) segment.
    let log = PartitionLog::open(&dir.path().join("original"), config()).unwrap();
    let first_len = log.read_raw(0, 1, u64::MAX).unwrap()[0].len() as u64;
    drop(log);
    let segment = copy.join(segments[0].path.file_name().unwrap());
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let mut byte = [0];
    file.read_exact_at(&mut byte, first_len + 70).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], first_len + 70)
        .unwrap();

    let output = ferry_log(&["verify", copy.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = format!("{}:{first_len}: CRC mismatch", segment.display());
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
    assert!(
        stdout(&output).contains(": 1 problems"),
        "{}",
        describe(&output)
    );
}

#[test]
fn verify_reports_damaged_base_offset() {
    // The CRC does not cover the base offset, so only the offset check can
    // find this damage.
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    let file = OpenOptions::new()
        .write(true)
        .open(&segments[0].path)
        .unwrap();
    file.write_all_at(&[0x01], 3).unwrap();

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = format!(
        "{}:0: base offset 4294967296 does not follow the previous batch, expected 0",
        segments[0].path.display()
    );
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
    assert!(
        stdout(&output).contains(": 1 problems"),
        "{}",
        describe(&output)
    );
}

#[test]
fn verify_reports_bad_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    let index = index_path(&segments[0]);
    let mut bytes = fs::read(&index).unwrap();
    assert!(bytes.len() >= 8, "first segment has no index entry");
    // Move the first entry's position one byte forward.
    let position = u32::from_be_bytes(bytes[4..8].try_into().unwrap()) + 1;
    bytes[4..8].copy_from_slice(&position.to_be_bytes());
    fs::write(&index, bytes).unwrap();

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = format!("{}:0: index entry 0", index.display());
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
    assert!(
        stdout(&output).contains("not the start of a batch"),
        "{}",
        describe(&output)
    );
}

#[test]
fn verify_reports_missing_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    fs::remove_file(&segments[1].path).unwrap();
    fs::remove_file(index_path(&segments[1])).unwrap();

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = format!(
        "{}:0: segment base offset {} does not follow the previous segment, which ends before \
         offset {}",
        segments[2].path.display(),
        segments[2].base_offset,
        segments[1].base_offset
    );
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
}

#[test]
fn verify_and_dump_recurse_into_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(&dir.path().join("orders").join("0"));
    closed_log(&dir.path().join("orders").join("1"));
    fs::create_dir_all(dir.path().join("empty")).unwrap();

    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("verified 2 partitions"),
        "{}",
        describe(&output)
    );

    let output = ferry_log(&["dump", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let partitions = stdout(&output)
        .lines()
        .filter(|l| l.starts_with("partition "))
        .count();
    assert_eq!(partitions, 2);
}

#[test]
fn dump_text_shows_headers_and_records() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());

    let output = ferry_log(&["dump", dir.path().to_str().unwrap(), "--print-values"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.contains("segment 00000000000000000000.log"), "{text}");
    assert!(
        text.contains("batch position=0 base_offset=0 last_offset=0"),
        "{text}"
    );
    assert!(text.contains("magic=1"), "{text}");
    assert!(text.contains("producer_id=-1"), "{text}");
    assert!(
        text.contains(
            "record offset=0 timestamp=1700000000000 attributes=0 ttl_ms=0 \
             key=\"key-0\" routing_key=null producer=\"alice\" value=\"value-0-0\" \
             headers={\"trace\": \"t1\"}"
        ),
        "{text}"
    );
    // Batch 1 starts at offset 1 and its value is not UTF-8.
    assert!(
        text.contains("offset=1 ") && text.contains("value=base64://4A"),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("batch ")).count(),
        BATCHES
    );
}

#[test]
fn dump_hides_values_without_print_values() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());

    let output = ferry_log(&["dump", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains(
            "record offset=0 timestamp=1700000000000 attributes=0 ttl_ms=0 \
             key=\"key-0\" routing_key=null producer=\"alice\" value_size=9 \
             headers=[\"trace\"]"
        ),
        "{text}"
    );
    assert!(
        !text.contains("value-0-0") && !text.contains("t1"),
        "{text}"
    );

    let output = ferry_log(&["dump", dir.path().to_str().unwrap(), "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(stdout(&output).lines().next().unwrap()).unwrap();
    let record = &first["records"][0];
    assert_eq!(record["value_size"], 9);
    assert_eq!(record["value"], serde_json::Value::Null);
    assert_eq!(record["headers"][0]["value_size"], 2);
}

#[test]
fn dump_json_from_offset() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());

    let output = ferry_log(&[
        "dump",
        dir.path().to_str().unwrap(),
        "--json",
        "--from-offset",
        "7",
        "--print-values",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let batches: Vec<serde_json::Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();

    // Batch i contains 1 + i % 3 records: offsets 0, 1-2, 3-5, 6, 7-8, ...
    let first = &batches[0];
    assert_eq!(first["header"]["base_offset"], 7);
    assert_eq!(first["header"]["last_offset"], 8);
    assert_eq!(first["records"][0]["offset"], 7);
    assert_eq!(first["records"][0]["value"]["utf8"], "value-4-0");
    assert_eq!(first["records"][0]["routing_key"], serde_json::Value::Null);
    assert_eq!(first["records"][0]["headers"][0]["key"], "trace");
    assert_eq!(batches.len(), BATCHES - 4);
    let last = batches.last().unwrap();
    assert_eq!(last["header"]["record_count"], 3);
}

#[test]
fn dump_json_shows_binary_value_as_base64() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());

    let output = ferry_log(&[
        "dump",
        dir.path().to_str().unwrap(),
        "--json",
        "--from-offset",
        "1",
        "--print-values",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let first: serde_json::Value =
        serde_json::from_str(stdout(&output).lines().next().unwrap()).unwrap();
    assert_eq!(first["records"][0]["value"]["base64"], "//4A");
}

#[test]
fn missing_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let output = ferry_log(&["verify", missing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn stats_summarize_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    let records: usize = (0..BATCHES).map(|i| 1 + i % 3).sum();

    let output = ferry_log(&["stats", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "{} segments, {} bytes, {BATCHES} batches, {records} records, offsets 0 to {}, times 1700000000000 to {} ms",
            segments.len(),
            segments.iter().map(|s| s.size_bytes).sum::<u64>(),
            records - 1,
            1_700_000_000_000i64 + BATCHES as i64 - 1
        )),
        "{text}"
    );

    let output = ferry_log(&["stats", "--json", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let json: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(json["records"], records as u64);
    assert_eq!(json["start_offset"], 0);
    assert_eq!(json["end_offset"], records as u64);
    assert_eq!(json["unreadable_batches"], 0);
}

#[test]
fn dump_filters_by_time_and_key() {
    let dir = tempfile::tempdir().unwrap();
    closed_log(dir.path());
    let path = dir.path().to_str().unwrap();
    let offsets = |output: &Output| -> Vec<u64> {
        stdout(output)
            .lines()
            .filter_map(|line| line.trim().strip_prefix("record offset="))
            .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };

    // Batch i has time 1700000000000 + i and 1 + i % 3 records.
    let first_of_batch = |batch: usize| -> u64 { (0..batch).map(|i| 1 + i as u64 % 3).sum() };
    let output = ferry_log(&["dump", path, "--from-time", "1700000000010"]);
    assert!(output.status.success(), "{}", describe(&output));
    let from_time = offsets(&output);
    assert_eq!(from_time.first(), Some(&first_of_batch(10)));
    assert_eq!(from_time.last(), Some(&(first_of_batch(BATCHES) - 1)));

    let output = ferry_log(&["dump", path, "--key", "key-7"]);
    assert!(output.status.success(), "{}", describe(&output));
    let keyed = offsets(&output);
    let start = first_of_batch(7);
    assert_eq!(keyed, (start..start + 2).collect::<Vec<_>>());

    let output = ferry_log(&["dump", path, "--from-time", "1800000000000"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(offsets(&output).is_empty());
}

#[test]
fn index_prints_and_checks_both_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());

    let output = ferry_log(&["index", dir.path().to_str().unwrap()]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.ends_with("0 problems\n"), "{text}");
    assert!(
        text.contains(&format!(
            "segment {} (sealed): ",
            segments[0].path.display()
        )),
        "{text}"
    );
    let last = segments.last().unwrap();
    assert!(
        text.contains(&format!("segment {} (active): ", last.path.display())),
        "{text}"
    );
    assert!(text.contains("  offset index: "), "{text}");
    assert!(text.contains("    offset="), "{text}");
    assert!(text.contains("  time index: "), "{text}");
    assert!(text.contains("    timestamp="), "{text}");

    // A time index entry that promises too early a time is found, at the
    // byte of the entry.
    let time_index = segments[0].path.with_extension("timeindex");
    let entries = fs::read(&time_index).unwrap();
    assert!(
        entries.len() >= 12,
        "no time index entry in the first segment"
    );
    let at = entries.len() - 12;
    let file = OpenOptions::new().write(true).open(&time_index).unwrap();
    file.write_all_at(&1_600_000_000_000_i64.to_be_bytes(), at as u64)
        .unwrap();
    let output = ferry_log(&["index", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let expected = format!("{}:{at}: ", time_index.display());
    let text = stdout(&output);
    assert!(text.contains(&expected), "{text}");
    assert!(
        text.contains("but one is at") || text.contains("newest record"),
        "{text}"
    );

    // verify finds the same problem.
    let output = ferry_log(&["verify", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stdout(&output).contains(&expected), "{}", describe(&output));
}

#[test]
fn recover_reports_then_applies_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    let partition = dir.path().to_str().unwrap();

    let output = ferry_log(&["recover", partition]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("nothing to cut"),
        "{}",
        describe(&output)
    );

    // Flip a byte in the last batch of the active segment. Recovery trusts
    // what the recovery checkpoint covers, so it is removed to have the
    // whole segment scanned.
    fs::remove_file(dir.path().join(ferry::log::CHECKPOINT_FILE_NAME)).unwrap();
    let active = segments.last().unwrap();
    let size = active.size_bytes;
    let file = OpenOptions::new().write(true).open(&active.path).unwrap();
    file.write_all_at(&[0x5a], size - 2).unwrap();
    let before = fs::read(&active.path).unwrap();

    let output = ferry_log(&["recover", partition]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stdout(&output);
    assert!(text.contains("scan starts at byte 0"), "{text}");
    assert!(text.contains("recovery would cut here"), "{text}");
    assert!(text.contains("--apply"), "{text}");
    assert_eq!(
        fs::read(&active.path).unwrap(),
        before,
        "the report changed the file"
    );

    // While a log has the partition open (here after its own recovery),
    // --apply rejects it. Stray bytes after the data make the
    // report ask for a cut.
    let open = PartitionLog::open(dir.path(), config()).unwrap();
    let data_end = open.segments().last().unwrap().size_bytes;
    let file = OpenOptions::new().write(true).open(&active.path).unwrap();
    file.write_all_at(b"stray", data_end + 100).unwrap();
    let output = ferry_log(&["recover", partition, "--apply"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("stop it and run again"),
        "{}",
        describe(&output)
    );
    drop(open);
}

#[test]
fn recover_apply_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segments = closed_log(dir.path());
    let partition = dir.path().to_str().unwrap();
    let active = segments.last().unwrap();
    // A torn write: half a batch after the data.
    let tail = &fs::read(&active.path).unwrap()[..40];
    let file = OpenOptions::new().write(true).open(&active.path).unwrap();
    file.write_all_at(tail, active.size_bytes).unwrap();
    drop(file);

    let output = ferry_log(&["recover", partition, "--apply"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "{}:{}: recovery would cut here",
            active.path.display(),
            active.size_bytes
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "applied: the log ends before offset {}",
            active.next_offset
        )),
        "{text}"
    );

    let output = ferry_log(&["recover", partition]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = ferry_log(&["verify", partition]);
    assert!(output.status.success(), "{}", describe(&output));
}
