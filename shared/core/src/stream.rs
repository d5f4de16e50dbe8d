//! The Kinesis stream's plain data: a record to write, where Kinesis stored it, the per-record
//! outcomes of a PutRecords request and its request limits. The adapter (`caudal-aws`'s
//! `kinesis`) speaks in these types, so code that only builds or reads records (ingest's core,
//! receipts, benchmarks) needs no SDK.

use crate::batching::ChunkLimits;
use crate::limits::{PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_RECORDS};
use crate::retry::EntryOutcome;

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record data (an envelope).
    pub data: Vec<u8>,
    /// The partition key (1–256 characters).
    pub partition_key: String,
}

impl Record {
    /// What the record counts against the PutRecords size limits: data plus partition key bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Where Kinesis stored a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The shard.
    pub shard_id: String,
    /// The record's sequence number.
    pub sequence_number: String,
}

/// Per-record outcomes of a PutRecords request (the adapter's `put_records`), in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// One outcome per input record. An error is final for this request: retryable errors ran
    /// out of attempts or time, the others were permanent.
    pub results: Vec<EntryOutcome<Written>>,
    /// PutRecords calls made, over all chunks.
    pub calls: u32,
}

/// The PutRecords request limits (500 records, 5 MiB including partition keys).
pub const PUT_RECORDS_LIMITS: ChunkLimits = ChunkLimits {
    max_items: PUT_RECORDS_MAX_RECORDS,
    max_bytes: PUT_RECORDS_MAX_BYTES,
};
