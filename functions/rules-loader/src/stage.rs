//! Turning raw objects into staging files (pure: no AWS).
//!
//! [`Stager`] runs every line of each raw object through the rules and writes
//!
//! * per table, CSV parts ([`STAGING_CODEC`], zstd) in the encoding of [`caudal_core::rules::write_csv_row`] (a new part
//!   when the compressed part reaches [`PART_TARGET_BYTES`], so memory stays bounded and COPY
//!   gets several files to spread over slices);
//! * the rejects twice: as CSV rows of `caudal_rejects` (COPYed, so dashboards show reasons) and
//!   as one NDJSON document with the reasons for people and tools (`rejected/<load-id>/…`);
//! * per raw object an [`ObjectStats`]: records, rows per table, filtered per rule, rejected.
//!
//! A raw object is processed whole or not at all: it is decompressed (capped) before any of its
//! lines is written, so a corrupt object never leaves half its rows in a part.

use std::collections::BTreeMap;

use crate::latency::Arrivals;

use caudal_core::codec::{Codec, DecodeError, Encoder};
use caudal_core::rules::{Cell, Lineage, Outcome, Reject, RuleSet, STAGING_CODEC};
use serde::Serialize;
use time::OffsetDateTime;

use crate::sql::ObjectStats;

/// A part is closed once its compressed size reaches this.
pub const PART_TARGET_BYTES: usize = 32 * 1024 * 1024;
/// Largest raw object accepted after decompression (a bigger one is a poison object).
pub const MAX_RAW_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;

/// The rejects NDJSON is for people and tools (`zcat`, `caudal`): gzip, which everything reads.
pub const REJECTS_CODEC: Codec = Codec::Gzip { level: 6 };

/// Why a raw object cannot be staged. Permanent: the same bytes fail the same way.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The key's suffix names no codec this loader reads.
    #[error("unsupported raw object suffix (expected .gz, .zst or .ndjson): {0}")]
    Suffix(String),
    /// Corrupt, truncated or too large after decompression.
    #[error("cannot decompress raw object: {0}")]
    Decode(#[from] DecodeError),
    /// Writing to an in-memory encoder failed (out of memory or a codec bug).
    #[error("staging encoder failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One finished staging file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Index into [`RuleSet::tables`], or `None` for the rejects CSV.
    pub table: Option<usize>,
    /// Part number within its table (0-based).
    pub number: u32,
    /// CSV bytes in [`STAGING_CODEC`].
    pub bytes: Vec<u8>,
    /// Rows in the part.
    pub rows: u64,
}

struct Sink {
    table: Option<usize>,
    encoder: Option<Encoder<Vec<u8>>>,
    rows_in_part: u64,
    next_part: u32,
    rows_total: u64,
}

impl Sink {
    fn new(table: Option<usize>) -> Sink {
        Sink {
            table,
            encoder: None,
            rows_in_part: 0,
            next_part: 0,
            rows_total: 0,
        }
    }

    fn writer(&mut self) -> Result<&mut Encoder<Vec<u8>>, std::io::Error> {
        if self.encoder.is_none() {
            self.encoder = Some(STAGING_CODEC.encoder(Vec::new())?);
        }
        self.encoder
            .as_mut()
            .ok_or_else(|| std::io::Error::other("encoder vanished"))
    }

    fn close(&mut self) -> Result<Option<Part>, std::io::Error> {
        let Some(enc) = self.encoder.take() else {
            return Ok(None);
        };
        let bytes = enc.finish()?;
        let part = Part {
            table: self.table,
            number: self.next_part,
            bytes,
            rows: self.rows_in_part,
        };
        self.next_part += 1;
        self.rows_in_part = 0;
        Ok(Some(part))
    }

    fn close_if_full(&mut self) -> Result<Option<Part>, std::io::Error> {
        let full = self
            .encoder
            .as_ref()
            .is_some_and(|e| e.get_ref().len() >= PART_TARGET_BYTES);
        if full { self.close() } else { Ok(None) }
    }
}

/// One line of the human-readable rejects file.
#[derive(Serialize)]
struct RejectLine<'a> {
    raw_key: &'a str,
    raw_line: u64,
    code: &'a str,
    rule: Option<&'a str>,
    path: Option<&'a str>,
    message: &'a str,
    event_id: Option<&'a str>,
    event_type: Option<&'a str>,
    principal: Option<&'a str>,
    rule_version: &'a str,
}

/// Builds the staging files of one load.
pub struct Stager<'r> {
    rules: &'r RuleSet,
    loaded_at: OffsetDateTime,
    tables: Vec<Sink>,
    /// Per table: the position of `received_at` among its columns.
    received_at: Vec<Option<usize>>,
    min_received_at: BTreeMap<usize, OffsetDateTime>,
    arrivals: Arrivals,
    rejects: Sink,
    rejects_ndjson: Vec<u8>,
    ready: Vec<Part>,
}

/// Everything a finished stager produced.
#[derive(Debug)]
pub struct Staged {
    /// Parts not yet taken with [`Stager::take_ready`].
    pub parts: Vec<Part>,
    /// Part numbers per table index (all parts ever produced), for the manifests.
    pub parts_per_table: BTreeMap<usize, u32>,
    /// Number of rejects CSV parts.
    pub reject_parts: u32,
    /// Rows staged per table index.
    pub rows_per_table: BTreeMap<usize, u64>,
    /// Earliest `received_at` staged per table index (tables whose rows all lack one are
    /// absent): where the load's de-duplication window is anchored.
    pub min_received_at: BTreeMap<usize, OffsetDateTime>,
    /// When the staged rows' events were received (the load's latency metric).
    pub arrivals: Arrivals,
    /// The rejects NDJSON, gzip-compressed (`None` when nothing was rejected).
    pub rejects_ndjson_gz: Option<Vec<u8>>,
}

impl<'r> Stager<'r> {
    /// A stager for one load; `loaded_at` is written into every row.
    pub fn new(rules: &'r RuleSet, loaded_at: OffsetDateTime) -> Self {
        Self {
            rules,
            loaded_at,
            tables: (0..rules.tables().len())
                .map(|i| Sink::new(Some(i)))
                .collect(),
            received_at: rules
                .tables()
                .iter()
                .map(|t| {
                    t.columns
                        .iter()
                        .position(|c| c.name.as_str() == caudal_core::rules::RECEIVED_AT_COLUMN)
                })
                .collect(),
            min_received_at: BTreeMap::new(),
            arrivals: Arrivals::default(),
            rejects: Sink::new(None),
            rejects_ndjson: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Decompress a raw object as its key's suffix says (capped).
    pub fn decode(raw_key: &str, body: &[u8]) -> Result<Vec<u8>, StageError> {
        match Codec::from_key(raw_key) {
            Some(codec) => Ok(codec.decompress_capped(body, MAX_RAW_DECOMPRESSED_BYTES)?),
            None if raw_key.ends_with(".ndjson") => {
                if body.len() > MAX_RAW_DECOMPRESSED_BYTES {
                    Err(StageError::Decode(DecodeError::TooLarge {
                        cap: MAX_RAW_DECOMPRESSED_BYTES,
                    }))
                } else {
                    Ok(body.to_vec())
                }
            }
            None => Err(StageError::Suffix(raw_key.to_owned())),
        }
    }

    /// Run every line of one raw object through the rules and stage the results.
    pub fn add_object(
        &mut self,
        raw_key: &str,
        etag: &str,
        body: &[u8],
    ) -> Result<ObjectStats, StageError> {
        let data = Self::decode(raw_key, body)?;
        let mut stats = ObjectStats {
            raw_key: raw_key.to_owned(),
            etag: etag.to_owned(),
            records: 0,
            valid: 0,
            filtered: BTreeMap::new(),
            rejected: 0,
            rows: BTreeMap::new(),
        };
        for (n, line) in raw_lines(&data) {
            let lineage = Lineage {
                raw_key,
                line: n,
                loaded_at: self.loaded_at,
            };
            stats.records += 1;
            match self.rules.apply_line(line, &lineage) {
                Outcome::Rows(rows) => {
                    for row in rows {
                        let name = self
                            .rules
                            .tables()
                            .get(row.table)
                            .map(|t| t.name.to_string())
                            .unwrap_or_default();
                        let Some(sink) = self.tables.get_mut(row.table) else {
                            continue;
                        };
                        caudal_core::rules::write_csv_row(sink.writer()?, &row)?;
                        if let Some(Cell::Timestamp(t)) = self
                            .received_at
                            .get(row.table)
                            .copied()
                            .flatten()
                            .and_then(|c| row.values.get(c))
                        {
                            self.min_received_at
                                .entry(row.table)
                                .and_modify(|m| *m = (*m).min(*t))
                                .or_insert(*t);
                            self.arrivals.add(*t);
                        }
                        sink.rows_in_part += 1;
                        sink.rows_total += 1;
                        stats.valid += 1;
                        *stats.rows.entry(name).or_default() += 1;
                    }
                }
                Outcome::Filtered { rule } => *stats.filtered.entry(rule).or_default() += 1,
                Outcome::Rejected(reject) => {
                    stats.rejected += 1;
                    self.reject(&reject, line, &lineage)?;
                }
            }
        }
        for sink in self
            .tables
            .iter_mut()
            .chain(std::iter::once(&mut self.rejects))
        {
            if let Some(part) = sink.close_if_full()? {
                self.ready.push(part);
            }
        }
        Ok(stats)
    }

    fn reject(
        &mut self,
        reject: &Reject,
        line: &[u8],
        lineage: &Lineage<'_>,
    ) -> Result<(), StageError> {
        let cells = self.rules.reject_cells(reject, line, lineage);
        caudal_core::rules::write_csv_cells(self.rejects.writer()?, &cells)?;
        self.rejects.rows_in_part += 1;
        self.rejects.rows_total += 1;
        serde_json::to_writer(
            &mut self.rejects_ndjson,
            &RejectLine {
                raw_key: lineage.raw_key,
                raw_line: lineage.line,
                code: &reject.code,
                rule: reject.rule.as_deref(),
                path: reject.path.as_deref(),
                message: &reject.message,
                event_id: reject.event_id.as_deref(),
                event_type: reject.event_type.as_deref(),
                principal: reject.principal.as_deref(),
                rule_version: self.rules.version(),
            },
        )
        .map_err(std::io::Error::from)?;
        self.rejects_ndjson.push(b'\n');
        Ok(())
    }

    /// Parts that are complete and can be uploaded now.
    pub fn take_ready(&mut self) -> Vec<Part> {
        std::mem::take(&mut self.ready)
    }

    /// Close every open part.
    pub fn finish(mut self) -> Result<Staged, StageError> {
        let mut parts = std::mem::take(&mut self.ready);
        let mut parts_per_table = BTreeMap::new();
        let mut rows_per_table = BTreeMap::new();
        for sink in &mut self.tables {
            if let Some(p) = sink.close()? {
                parts.push(p);
            }
            if let Some(t) = sink.table
                && sink.next_part > 0
            {
                parts_per_table.insert(t, sink.next_part);
                rows_per_table.insert(t, sink.rows_total);
            }
        }
        if let Some(p) = self.rejects.close()? {
            parts.push(p);
        }
        let rejects_ndjson_gz = if self.rejects_ndjson.is_empty() {
            None
        } else {
            Some(REJECTS_CODEC.compress(&self.rejects_ndjson)?)
        };
        Ok(Staged {
            parts,
            parts_per_table,
            reject_parts: self.rejects.next_part,
            rows_per_table,
            min_received_at: self.min_received_at,
            arrivals: self.arrivals,
            rejects_ndjson_gz,
        })
    }
}

/// The lines of a decompressed raw object with their 1-based numbers. A trailing newline ends
/// the last line; it does not start an empty one, and an empty object has no line.
fn raw_lines(data: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let content = data.strip_suffix(b"\n").unwrap_or(data);
    content
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(move |_| !data.is_empty())
        .map(|(i, line)| (i as u64 + 1, line))
}

/// The tables (indexes into [`RuleSet::tables`]) that a raw object's lines have rows for — the
/// rules run without staging anything (used only while a migration conflict holds a table).
pub fn tables_of(
    rules: &RuleSet,
    raw_key: &str,
    body: &[u8],
) -> Result<std::collections::BTreeSet<usize>, StageError> {
    let data = Stager::decode(raw_key, body)?;
    let mut tables = std::collections::BTreeSet::new();
    for (n, line) in raw_lines(&data) {
        let lineage = Lineage {
            raw_key,
            line: n,
            loaded_at: OffsetDateTime::UNIX_EPOCH,
        };
        if let Outcome::Rows(rows) = rules.apply_line(line, &lineage) {
            tables.extend(rows.iter().map(|r| r.table));
        }
    }
    Ok(tables)
}

/// A Redshift COPY manifest listing `urls` (all mandatory, with their sizes).
pub fn manifest(entries: &[(String, usize)]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|(url, len)| {
            serde_json::json!({"url": url, "mandatory": true, "meta": {"content_length": len}})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "entries": entries })).unwrap_or_default()
}
