//! TEMPORARY in-memory stand-in with the storage API, replaced by the real engine.
#![allow(missing_docs, dead_code, unused)]
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub attributes: u8,
    pub ttl_ms: u64,
    pub key: Option<Bytes>,
    pub routing_key: Option<Bytes>,
    pub producer: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
}
#[derive(Debug, Clone, Default)]
pub struct BatchHeader {
    pub base_offset: u64,
    pub leader_epoch: u32,
    pub max_timestamp: i64,
    pub first_timestamp: i64,
    pub record_count: u32,
}
#[derive(Debug, Clone)]
pub struct RecordBatch {
    pub header: BatchHeader,
    pub records: Vec<Record>,
}
#[derive(Debug, Clone, Copy)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}
impl Default for ProducerInfo {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }
}
#[derive(Debug, Clone, Copy)]
pub enum FsyncPolicy {
    Always,
    Interval(Duration),
    Never,
}
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub index_interval_bytes: u32,
}
impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 128 << 20,
            index_interval_bytes: 4096,
        }
    }
}
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub timestamp_ms: i64,
}
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: u64,
        log_start_offset: u64,
        log_end_offset: u64,
    },
    #[error("disk full at {path}")]
    DiskFull { path: PathBuf },
}
pub struct PartitionLog {
    batches: Mutex<Vec<RecordBatch>>,
    leo: Mutex<u64>,
}
impl PartitionLog {
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        std::fs::create_dir_all(dir).unwrap();
        Ok(Self {
            batches: Mutex::new(vec![]),
            leo: Mutex::new(0),
        })
    }
    pub fn append(
        &self,
        records: &[Record],
        leader_epoch: u32,
        producer: ProducerInfo,
    ) -> Result<AppendInfo, LogError> {
        let mut leo = self.leo.lock().unwrap();
        let base = *leo;
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut r = r.clone();
                r.offset = base + i as u64;
                r
            })
            .collect();
        let ts = records.first().map(|r| r.timestamp_ms).unwrap_or(0);
        self.batches.lock().unwrap().push(RecordBatch {
            header: BatchHeader {
                base_offset: base,
                leader_epoch,
                max_timestamp: ts,
                first_timestamp: ts,
                record_count: recs.len() as u32,
            },
            records: recs,
        });
        *leo += records.len() as u64;
        Ok(AppendInfo {
            base_offset: base,
            last_offset: *leo - 1,
            timestamp_ms: ts,
        })
    }
    pub fn flush_to(&self, offset: u64) -> Result<(), LogError> {
        Ok(())
    }
    pub fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
    pub fn read(
        &self,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Vec<RecordBatch>, LogError> {
        let b = self.batches.lock().unwrap();
        Ok(b.iter()
            .filter(|x| {
                x.header.base_offset + x.header.record_count as u64 > offset
                    && x.header.base_offset < max_offset
            })
            .take(50)
            .cloned()
            .collect())
    }
    pub fn log_start_offset(&self) -> u64 {
        0
    }
    pub fn log_end_offset(&self) -> u64 {
        *self.leo.lock().unwrap()
    }
    pub fn flushed_offset(&self) -> u64 {
        *self.leo.lock().unwrap()
    }
    pub fn close(&self) -> Result<(), LogError> {
        Ok(())
    }
}
