//! Packed Kinesis records: many events in one record, in the KPL aggregated-record format
//! (docs/CONTRACTS.md §1a).
//!
//! Kinesis limits a shard to 1,000 records/s and bills every record rounded up (1 KB on-demand,
//! a 25 KB PUT payload unit provisioned), so one event per record makes shard count and cost
//! follow event count instead of bytes. Ingest therefore packs the events of a request into as
//! few records as [`PackLimits`] allow, and the raw-writer unpacks them.
//!
//! The format is the Kinesis Producer Library's, so any KCL application, Firehose with a
//! Kinesis source or the `kinesis-aggregation` libraries read caudal's stream too:
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf AggregatedRecord)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! A user record's position in `records` is its *sub-sequence number* (the KCL's name): the
//! raw archive names it next to the record's shard and sequence number. [`unpack`] reads
//! records from any producer strictly: a bad magic, digest, protobuf or index is a
//! [`PackError`], and the caller keeps the whole record as foreign.

use std::collections::HashMap;

use md5::{Digest, Md5};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// Length of the trailing MD5 digest.
const DIGEST_LEN: usize = 16;
/// Bytes an aggregate adds around its protobuf: the magic and the digest.
pub const FRAME_BYTES: usize = MAGIC.len() + DIGEST_LEN;

/// The tag bytes the packer writes: field number << 3 | wire type.
const TAG_KEY_TABLE: u8 = 0x0a; // 1, length-delimited
const TAG_RECORD: u8 = 0x1a; // 3, length-delimited
const TAG_KEY_INDEX: u8 = 0x08; // 1, varint
const TAG_DATA: u8 = 0x1a; // 3, length-delimited

/// Field numbers and wire types of the format.
const FIELD_KEY_TABLE: u64 = 1;
const FIELD_HASH_KEY_TABLE: u64 = 2;
const FIELD_RECORDS: u64 = 3;
const FIELD_KEY_INDEX: u64 = 1;
const FIELD_HASH_KEY_INDEX: u64 = 2;
const FIELD_DATA: u64 = 3;
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// One user record: an event's envelope (for caudal's producer) and its partition key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// The user record's own partition key (the aggregate's record carries the first one).
    pub partition_key: &'a str,
    /// Its data.
    pub data: &'a [u8],
}

/// Why a record that starts with [`MAGIC`] is not a readable aggregate. Permanent: the bytes
/// are what the stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// Shorter than the magic and the digest.
    #[error("aggregated record of {0} bytes is shorter than its magic and MD5 digest")]
    TooShort(usize),
    /// The MD5 digest does not match the protobuf.
    #[error("aggregated record's MD5 digest does not match its contents")]
    Digest,
    /// The protobuf cannot be read at this byte offset (of the protobuf).
    #[error("aggregated record is not a valid AggregatedRecord protobuf at byte {0}")]
    Malformed(usize),
    /// A user record lacks a required field (`partition_key_index` = 1, `data` = 3).
    #[error("user record {record} lacks required field {field}")]
    MissingField {
        /// Sub-sequence number.
        record: usize,
        /// Field number.
        field: u64,
    },
    /// A user record names a partition key the table does not have.
    #[error("user record {record} names partition key {index}, but the table has {table}")]
    KeyIndex {
        /// Sub-sequence number.
        record: usize,
        /// The index named.
        index: u64,
        /// Entries in the table.
        table: usize,
    },
    /// A partition key table entry is not UTF-8.
    #[error("partition key {0} of the aggregated record is not UTF-8")]
    KeyUtf8(usize),
    /// No user records.
    #[error("aggregated record holds no user records")]
    Empty,
}

/// Whether `data` is in the aggregated form (starts with [`MAGIC`]). An envelope starts with
/// `{`, so the two forms never overlap.
pub fn is_aggregate(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Bytes of a protobuf varint.
fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of a length-delimited field of `len` bytes with a one-byte tag.
fn len_field(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Builds one aggregated record. Partition keys are written once each, in the order first
/// seen; user records keep the order they are pushed in.
#[derive(Debug, Default)]
pub struct Packer {
    keys: Vec<String>,
    table: Vec<u8>,
    records: Vec<u8>,
}

impl Packer {
    /// An empty packer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the finished record's data now.
    pub fn size(&self) -> usize {
        FRAME_BYTES + self.table.len() + self.records.len()
    }

    fn key_index(&self, key: &str) -> Option<usize> {
        // Keys of one pack are few (one, or one per event with the event id as key, where
        // the newest is the likely match); search from the end.
        self.keys.iter().rposition(|k| k == key)
    }

    /// How many bytes pushing `record` would add to [`Packer::size`].
    pub fn added_size(&self, record: &UserRecord<'_>) -> usize {
        let (index, new_key) = match self.key_index(record.partition_key) {
            Some(i) => (i, 0),
            None => (
                self.keys.len(),
                Self::key_entry_size(record.partition_key.len()),
            ),
        };
        new_key + Self::record_entry_size(index, record.data.len())
    }

    /// Bytes a partition key of `key_len` bytes adds to the key table.
    fn key_entry_size(key_len: usize) -> usize {
        len_field(key_len)
    }

    /// Bytes a user record of key index `index` and `data_len` bytes adds.
    fn record_entry_size(index: usize, data_len: usize) -> usize {
        len_field(Self::inner_len(index, data_len))
    }

    fn inner_len(index: usize, data_len: usize) -> usize {
        1 + varint_len(index as u64) + len_field(data_len)
    }

    /// Append a user record.
    pub fn push(&mut self, record: &UserRecord<'_>) {
        let index = match self.key_index(record.partition_key) {
            Some(i) => i,
            None => {
                self.table.push(TAG_KEY_TABLE);
                put_varint(&mut self.table, record.partition_key.len() as u64);
                self.table
                    .extend_from_slice(record.partition_key.as_bytes());
                self.keys.push(record.partition_key.to_owned());
                self.keys.len() - 1
            }
        };
        let out = &mut self.records;
        out.push(TAG_RECORD);
        put_varint(out, Self::inner_len(index, record.data.len()) as u64);
        out.push(TAG_KEY_INDEX);
        put_varint(out, index as u64);
        out.push(TAG_DATA);
        put_varint(out, record.data.len() as u64);
        out.extend_from_slice(record.data);
    }

    /// The record data: magic, protobuf, digest.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.table);
        out.extend_from_slice(&self.records);
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        out
    }
}

/// How ingest packs a request's events into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackPolicy {
    /// Largest packed record (data + partition key), bytes; 0 = one event per record. A lone
    /// event larger than this still gets a record of its own.
    pub target_bytes: usize,
    /// Pack only events of one partition key together (a partition key field is configured, so
    /// per-key order and shard affinity matter); otherwise any events of the request share a
    /// record under the first one's key.
    pub by_key: bool,
}

/// The default target: one provisioned PUT payload unit (25 KB). Below it, records/s and PUT
/// units follow the event count; above it, cost and shard capacity follow bytes alone, and a
/// bigger record only makes each retry and each Lambda batch coarser (docs/COST.md).
pub const DEFAULT_TARGET_BYTES: usize = 25_000;

impl Default for PackPolicy {
    fn default() -> Self {
        Self {
            target_bytes: DEFAULT_TARGET_BYTES,
            by_key: false,
        }
    }
}

/// Pack `events` (each a single-event record: envelope + its partition key, in request order)
/// into as few records as `policy` allows. Returns the records and, for each event, the index
/// of the record that carries it.
///
/// Every user record of a pack has the pack's partition key, so its table holds one entry. A
/// pack of one event is written in the single-event form (the envelope itself), as before
/// packing existed. Records come out in the order their packs filled; events keep request order
/// inside a pack.
pub fn pack_records(
    events: Vec<crate::stream::Record>,
    policy: &PackPolicy,
) -> (Vec<crate::stream::Record>, Vec<usize>) {
    if policy.target_bytes == 0 {
        let n = events.len();
        return (events, (0..n).collect());
    }
    let plan = plan_packs(&events, policy);
    let mut of_event = vec![0usize; events.len()];
    let mut slots: Vec<Option<crate::stream::Record>> = events.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(plan.len());
    for members in plan {
        for &m in &members {
            of_event[m] = out.len();
        }
        if let [only] = members[..] {
            out.extend(slots[only].take());
            continue;
        }
        let mut packer = Packer::new();
        let mut key = None;
        for &m in &members {
            let Some(event) = &slots[m] else { continue };
            let key = key.get_or_insert_with(|| event.partition_key.clone());
            packer.push(&UserRecord {
                partition_key: key,
                data: &event.data,
            });
        }
        out.push(crate::stream::Record {
            data: packer.finish(),
            partition_key: key.unwrap_or_default(),
        });
    }
    (out, of_event)
}

/// The packs [`pack_records`] makes, as the indices of their events, in output order. Sizes are
/// counted, not written: an event that ends up alone in its record is never copied.
fn plan_packs(events: &[crate::stream::Record], policy: &PackPolicy) -> Vec<Vec<usize>> {
    /// A pack being filled: its events and the size its record would have now.
    struct Open {
        members: Vec<usize>,
        size: usize,
        key_len: usize,
    }
    let mut open: Vec<Option<Open>> = Vec::new();
    // The open pack of each key (or of all events, under "").
    let mut by_key: HashMap<&str, usize> = HashMap::new();
    let mut plan = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let key = if policy.by_key {
            event.partition_key.as_str()
        } else {
            ""
        };
        // A user record of the pack's one key (index 0).
        let added = Packer::record_entry_size(0, event.data.len());
        if let Some(&g) = by_key.get(key)
            && let Some(o) = &mut open[g]
        {
            // The pack's key is sent with its record too.
            if o.size + added + o.key_len <= policy.target_bytes {
                o.members.push(i);
                o.size += added;
                continue;
            }
            plan.extend(open[g].take().map(|full| full.members));
        }
        let key_len = event.partition_key.len();
        open.push(Some(Open {
            members: vec![i],
            size: FRAME_BYTES + Packer::key_entry_size(key_len) + added,
            key_len,
        }));
        by_key.insert(key, open.len() - 1);
    }
    plan.extend(open.into_iter().flatten().map(|o| o.members));
    plan
}

/// What a stream record holds, classified as the raw-writer archives it: events that go to
/// `raw/` (valid envelopes) and items that go to `raw-invalid/` (anything else: a foreign
/// record, a foreign user record of a packed one, or a packed record that cannot be read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contents {
    /// Valid envelopes.
    pub events: usize,
    /// Lines for `raw-invalid/`.
    pub invalid: usize,
}

/// Classify one record's data ([`Contents`]).
pub fn contents(data: &[u8]) -> Contents {
    let one = |d: &[u8]| match crate::envelope::Envelope::parse(d) {
        Ok(_) => Contents {
            events: 1,
            invalid: 0,
        },
        Err(_) => Contents {
            events: 0,
            invalid: 1,
        },
    };
    if !is_aggregate(data) {
        return one(data);
    }
    match unpack(data) {
        Ok(users) => users.iter().fold(Contents::default(), |acc, u| {
            let c = one(u.data);
            Contents {
                events: acc.events + c.events,
                invalid: acc.invalid + c.invalid,
            }
        }),
        Err(_) => Contents {
            events: 0,
            invalid: 1,
        },
    }
}

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` inside the whole protobuf, for error positions.
    base: usize,
}

impl<'a> Reader<'a> {
    fn err(&self) -> PackError {
        PackError::Malformed(self.base + self.pos)
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, PackError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let &b = self.bytes.get(self.pos).ok_or_else(|| self.err())?;
            // The tenth byte may carry only the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(self.err());
            }
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err())
    }

    fn take(&mut self, n: usize) -> Result<Reader<'a>, PackError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err())?;
        let sub = Reader {
            bytes: &self.bytes[self.pos..end],
            pos: 0,
            base: self.base + self.pos,
        };
        self.pos = end;
        Ok(sub)
    }

    fn len_delimited(&mut self) -> Result<Reader<'a>, PackError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| self.err())?;
        self.take(n)
    }

    /// Skip a field of an unknown number (protobuf readers ignore those).
    fn skip(&mut self, wire: u64) -> Result<(), PackError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            // Groups (3, 4) are deprecated and never in this format; 6 and 7 do not exist.
            _ => Err(self.err()),
        }
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u64, u64), PackError> {
        let at = self.pos;
        let k = self.varint()?;
        let (field, wire) = (k >> 3, k & 7);
        if field == 0 {
            self.pos = at;
            return Err(self.err());
        }
        Ok((field, wire))
    }
}

/// The user records of an aggregated record, in order (index = sub-sequence number).
pub fn unpack(data: &[u8]) -> Result<Vec<UserRecord<'_>>, PackError> {
    if data.len() < FRAME_BYTES {
        return Err(PackError::TooShort(data.len()));
    }
    if !is_aggregate(data) {
        return Err(PackError::Malformed(0));
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - FRAME_BYTES);
    if Md5::digest(body).as_slice() != digest {
        return Err(PackError::Digest);
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
        base: 0,
    };
    let mut keys: Vec<&str> = Vec::new();
    let mut records: Vec<(u64, &[u8])> = Vec::new();
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (FIELD_KEY_TABLE, WIRE_LEN) => {
                let s = r.len_delimited()?;
                let key =
                    std::str::from_utf8(s.bytes).map_err(|_| PackError::KeyUtf8(keys.len()))?;
                keys.push(key);
            }
            (FIELD_HASH_KEY_TABLE, WIRE_LEN) => r.skip(WIRE_LEN)?,
            (FIELD_RECORDS, WIRE_LEN) => {
                let mut m = r.len_delimited()?;
                records.push(read_user_record(&mut m, records.len())?);
            }
            (FIELD_KEY_TABLE | FIELD_HASH_KEY_TABLE | FIELD_RECORDS, _) => return Err(r.err()),
            (_, wire) => r.skip(wire)?,
        }
    }
    if records.is_empty() {
        return Err(PackError::Empty);
    }
    records
        .into_iter()
        .enumerate()
        .map(|(record, (index, data))| {
            let key = usize::try_from(index)
                .ok()
                .and_then(|i| keys.get(i))
                .ok_or(PackError::KeyIndex {
                    record,
                    index,
                    table: keys.len(),
                })?;
            Ok(UserRecord {
                partition_key: key,
                data,
            })
        })
        .collect()
}

/// One `Record` message: (partition key index, data).
fn read_user_record<'a>(m: &mut Reader<'a>, record: usize) -> Result<(u64, &'a [u8]), PackError> {
    let mut index = None;
    let mut data = None;
    while !m.done() {
        match m.key()? {
            (FIELD_KEY_INDEX, WIRE_VARINT) if index.is_none() => index = Some(m.varint()?),
            (FIELD_HASH_KEY_INDEX, WIRE_VARINT) => m.skip(WIRE_VARINT)?,
            (FIELD_DATA, WIRE_LEN) if data.is_none() => data = Some(m.len_delimited()?.bytes),
            // A known field twice or with another wire type: not what any producer writes.
            (FIELD_KEY_INDEX | FIELD_HASH_KEY_INDEX | FIELD_DATA, _) => return Err(m.err()),
            (_, wire) => m.skip(wire)?,
        }
    }
    let index = index.ok_or(PackError::MissingField {
        record,
        field: FIELD_KEY_INDEX,
    })?;
    let data = data.ok_or(PackError::MissingField {
        record,
        field: FIELD_DATA,
    })?;
    Ok((index, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec<'a>(key: &'a str, data: &'a [u8]) -> UserRecord<'a> {
        UserRecord {
            partition_key: key,
            data,
        }
    }

    fn pack(records: &[UserRecord<'_>]) -> Vec<u8> {
        let mut p = Packer::new();
        for r in records {
            let before = p.size();
            let added = p.added_size(r);
            p.push(r);
            assert_eq!(p.size(), before + added, "added_size is exact");
        }
        let size = p.size();
        let out = p.finish();
        assert_eq!(out.len(), size, "size is exact");
        out
    }

    /// An aggregate as the KPL writes it, built by hand: the reference for the byte layout.
    fn by_hand(keys: &[&str], records: &[(u8, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for k in keys {
            body.push(0x0a);
            body.push(k.len() as u8);
            body.extend_from_slice(k.as_bytes());
        }
        for (i, d) in records {
            body.push(0x1a);
            body.push((4 + d.len()) as u8);
            body.extend_from_slice(&[0x08, *i, 0x1a, d.len() as u8]);
            body.extend_from_slice(d);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    fn reframe(body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out
    }

    fn event(key: &str, n: usize, len: usize) -> crate::stream::Record {
        let mut data = format!("{{\"v\":1,\"id\":\"{key}-{n}\",\"p\":\"").into_bytes();
        data.resize(len.saturating_sub(2).max(data.len()), b'x');
        data.extend_from_slice(b"\"}");
        crate::stream::Record {
            data,
            partition_key: key.to_owned(),
        }
    }

    /// The events each record carries, in order, as (partition key of the user record, data).
    fn carried(records: &[crate::stream::Record]) -> Vec<Vec<(String, Vec<u8>)>> {
        records
            .iter()
            .map(|r| {
                if is_aggregate(&r.data) {
                    let users = unpack(&r.data).unwrap();
                    assert!(users.len() > 1, "a pack of one is written single");
                    users
                        .iter()
                        .map(|u| {
                            assert_eq!(u.partition_key, r.partition_key);
                            (u.partition_key.to_owned(), u.data.to_vec())
                        })
                        .collect()
                } else {
                    vec![(r.partition_key.clone(), r.data.clone())]
                }
            })
            .collect()
    }

    #[test]
    fn packing_off_or_one_event_leaves_single_records() {
        let events: Vec<_> = (0..3).map(|n| event("k", n, 100)).collect();
        let off = PackPolicy {
            target_bytes: 0,
            by_key: false,
        };
        let (records, of) = pack_records(events.clone(), &off);
        assert_eq!((records, of), (events.clone(), vec![0, 1, 2]));
        let one = vec![events[0].clone()];
        let (records, of) = pack_records(one.clone(), &PackPolicy::default());
        assert_eq!((records, of), (one, vec![0]));
        assert_eq!(
            pack_records(Vec::new(), &PackPolicy::default()),
            (Vec::new(), Vec::new())
        );
    }

    #[test]
    fn a_request_fills_records_up_to_the_target_in_order() {
        let events: Vec<_> = (0..50).map(|n| event(&format!("id{n}"), n, 750)).collect();
        let policy = PackPolicy::default();
        let (records, of) = pack_records(events.clone(), &policy);
        assert_eq!(records.len(), 2, "50 × 750 B in 25,000 B records");
        for r in &records {
            assert!(r.size() <= policy.target_bytes, "{}", r.size());
        }
        // Every event once, in request order, under the key of its pack's first event.
        let flat: Vec<Vec<u8>> = carried(&records)
            .into_iter()
            .flatten()
            .map(|c| c.1)
            .collect();
        let want: Vec<Vec<u8>> = events.iter().map(|e| e.data.clone()).collect();
        assert_eq!(flat, want);
        assert_eq!(records[0].partition_key, "id0");
        let first = carried(&records)[0].len();
        assert_eq!(records[1].partition_key, format!("id{first}"));
        assert!(of[..first].iter().all(|&r| r == 0));
        assert!(of[first..].iter().all(|&r| r == 1));
    }

    #[test]
    fn the_target_is_a_ceiling_that_may_be_met() {
        let events: Vec<_> = (0..3).map(|n| event("k", n, 300)).collect();
        let mut exact = Packer::new();
        for e in &events[..2] {
            exact.push(&UserRecord {
                partition_key: "k",
                data: &e.data,
            });
        }
        let two = exact.size() + 1;
        let fits = PackPolicy {
            target_bytes: two,
            by_key: false,
        };
        let (records, of) = pack_records(events.clone(), &fits);
        assert_eq!(of, vec![0, 0, 1]);
        assert_eq!(records[0].size(), two);
        assert_eq!(records[1], events[2]);
        let under = PackPolicy {
            target_bytes: two - 1,
            ..fits
        };
        let (records, of) = pack_records(events.clone(), &under);
        assert_eq!(of, vec![0, 1, 2]);
        assert_eq!(records, events);
    }

    #[test]
    fn by_key_packs_keep_each_key_apart_and_in_order() {
        let events = vec![
            event("a", 0, 200),
            event("b", 1, 200),
            event("a", 2, 200),
            event("c", 3, 200),
            event("b", 4, 200),
            event("a", 5, 40_000),
            event("a", 6, 200),
        ];
        let policy = PackPolicy {
            by_key: true,
            ..PackPolicy::default()
        };
        let (records, of) = pack_records(events.clone(), &policy);
        let carried = carried(&records);
        // "a" fills when the big event comes: a(0,2) is emitted; the big one fits nothing and
        // goes alone (single form) when a(6) arrives; b(1,4), c(3) and a(6) close at the end.
        let keys: Vec<(&str, usize)> = records
            .iter()
            .zip(&carried)
            .map(|(r, c)| (r.partition_key.as_str(), c.len()))
            .collect();
        assert_eq!(keys, vec![("a", 2), ("a", 1), ("b", 2), ("c", 1), ("a", 1)]);
        assert_eq!(carried[0][1].1, events[2].data);
        assert_eq!(carried[2][1].1, events[4].data);
        assert_eq!(of, vec![0, 2, 0, 3, 2, 1, 4]);
        assert_eq!(records[1], events[5]);
        assert_eq!(records[4], events[6]);
    }

    #[test]
    fn contents_count_what_the_archive_will_hold() {
        let env = br#"{"v":1,"id":"a","type":"t","event":{}}"#;
        let c = |events, invalid| Contents { events, invalid };
        assert_eq!(contents(env), c(1, 0));
        assert_eq!(contents(b"hello"), c(0, 1));
        let packed = pack(&[rec("k", env), rec("k", b"x"), rec("k", env)]);
        assert_eq!(contents(&packed), c(2, 1));
        let mut broken = packed.clone();
        broken[5] ^= 1;
        assert_eq!(contents(&broken), c(0, 1));
    }

    #[test]
    fn packs_in_the_kpl_layout_and_unpacks_in_order() {
        let recs = [rec("u1", b"{\"a\":1}"), rec("u2", b"{}"), rec("u1", b"x")];
        let out = pack(&recs);
        assert_eq!(
            out,
            by_hand(&["u1", "u2"], &[(0, b"{\"a\":1}"), (1, b"{}"), (0, b"x")])
        );
        assert!(is_aggregate(&out));
        assert_eq!(unpack(&out).unwrap(), recs);
        assert!(!is_aggregate(b"{\"v\":1}"));
        assert!(!is_aggregate(&MAGIC[..3]));
    }

    #[test]
    fn sizes_are_exact_across_varint_boundaries() {
        // 127/128 and 16383/16384 bytes change the length varints' width; 128 keys change the
        // index varint's.
        let big = vec![b'x'; 20_000];
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for len in [
            0, 1, 120, 123, 124, 127, 128, 16_380, 16_383, 16_384, 20_000,
        ] {
            let recs: Vec<UserRecord<'_>> =
                keys.iter().take(130).map(|k| rec(k, &big[..len])).collect();
            let out = pack(&recs);
            let back = unpack(&out).unwrap();
            assert_eq!(back.len(), 130);
            assert_eq!(back[129], rec("k129", &big[..len]));
        }
        let long_key = "k".repeat(256);
        let out = pack(&[rec(&long_key, b"1"), rec(&long_key, b"2")]);
        assert_eq!(unpack(&out).unwrap()[1], rec(&long_key, b"2"));
    }

    #[test]
    fn reads_what_other_producers_may_write() {
        // Records before the key table, an explicit hash key table and index, tags, an unknown
        // field of every wire type: all ignored as protobuf readers do.
        let mut body = vec![
            0x1a, 12, 0x08, 0, 0x10, 0, 0x1a, 2, b'h', b'i', 0x22, 2, 0x0a, 0,
        ];
        body.extend_from_slice(&[0x0a, 1, b'p', 0x12, 2, b'4', b'2']);
        body.extend_from_slice(&[0x28, 0x96, 0x01]); // field 5, varint
        body.extend_from_slice(&[0x31, 0, 0, 0, 0, 0, 0, 0, 0]); // field 6, fixed64
        body.extend_from_slice(&[0x3d, 0, 0, 0, 0]); // field 7, fixed32
        body.extend_from_slice(&[0x42, 1, 0]); // field 8, bytes
        let framed = reframe(&body);
        let back = unpack(&framed).unwrap();
        assert_eq!(back, vec![rec("p", b"hi")]);
    }

    #[test]
    fn refuses_what_is_not_an_aggregate() {
        let good = pack(&[rec("p", b"data")]);
        assert_eq!(unpack(&good[..19]), Err(PackError::TooShort(19)));
        assert_eq!(unpack(&[0u8; 20]), Err(PackError::Malformed(0)));
        let mut flipped = good.clone();
        flipped[8] ^= 1;
        assert_eq!(unpack(&flipped), Err(PackError::Digest));
        let mut bad_digest = good.clone();
        *bad_digest.last_mut().unwrap() ^= 1;
        assert_eq!(unpack(&bad_digest), Err(PackError::Digest));
        assert_eq!(unpack(&reframe(&[])), Err(PackError::Empty));
        assert_eq!(unpack(&reframe(&[0x0a, 1, b'p'])), Err(PackError::Empty));
        let cases: [(&[u8], PackError); 13] = [
            // Truncated length, truncated varint, a field number 0, a group.
            (&[0x0a, 5, b'p'], PackError::Malformed(2)),
            (&[0x0a, 0x80], PackError::Malformed(2)),
            (&[0x02, 0], PackError::Malformed(0)),
            (&[0x0b], PackError::Malformed(1)),
            // Known fields with the wrong wire type.
            (&[0x08, 1], PackError::Malformed(1)),
            (&[0x18, 1], PackError::Malformed(1)),
            (&[0x10, 1], PackError::Malformed(1)),
            // A record without data, without a key index, with an index out of the table.
            (
                &[0x0a, 1, b'p', 0x1a, 2, 0x08, 0],
                PackError::MissingField {
                    record: 0,
                    field: 3,
                },
            ),
            (
                &[0x0a, 1, b'p', 0x1a, 2, 0x1a, 0],
                PackError::MissingField {
                    record: 0,
                    field: 1,
                },
            ),
            (
                &[0x0a, 1, b'p', 0x1a, 4, 0x08, 1, 0x1a, 0],
                PackError::KeyIndex {
                    record: 0,
                    index: 1,
                    table: 1,
                },
            ),
            // A known field twice in a record (the index, the data); a key that is not UTF-8.
            (
                &[0x0a, 1, b'p', 0x1a, 6, 0x08, 0, 0x08, 0, 0x1a, 0],
                PackError::Malformed(8),
            ),
            (
                &[0x0a, 1, b'p', 0x1a, 6, 0x08, 0, 0x1a, 0, 0x1a, 0],
                PackError::Malformed(10),
            ),
            (&[0x0a, 1, 0xff], PackError::KeyUtf8(0)),
        ];
        for (body, want) in cases {
            assert_eq!(unpack(&reframe(body)), Err(want), "{body:?}");
        }
        // Varints: ten bytes with only the top bit in the last are u64::MAX; more is too long.
        let max = [
            0x1a, 12, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        let mut body = vec![0x0a, 1, b'p'];
        body.extend_from_slice(&max);
        body.push(0x1a);
        assert_eq!(unpack(&reframe(&body)), Err(PackError::Malformed(17)));
        let mut over = vec![0x0a, 1, b'p', 0x1a, 13, 0x08];
        over.extend_from_slice(&[0xff; 9]);
        over.extend_from_slice(&[0x02, 0x1a, 0]);
        assert_eq!(unpack(&reframe(&over)), Err(PackError::Malformed(15)));
        let mut huge = vec![0x0a, 1, b'p', 0x1a, 13, 0x08];
        huge.extend_from_slice(&[0xff; 9]);
        huge.extend_from_slice(&[0x01, 0x1a, 0]);
        assert!(matches!(
            unpack(&reframe(&huge)),
            Err(PackError::KeyIndex {
                index: u64::MAX,
                ..
            })
        ));
    }
}
