//! The ingest core, without any I/O: body → validated events → envelopes → Kinesis records.
//!
//! [`prepare`] is what the handler runs before PutRecords and what the benchmark measures. It
//! keeps one [`Slot`] per request item, in request order, so the receipt can report every item
//! whatever happened to its record.

use std::borrow::Cow;

use caudal_core::envelope::{self, RequestMeta};
use caudal_core::event::{
    self, BodyError, Event, ItemResult, MediaType, ParseOptions, RejectCode, Rejection,
};
use caudal_core::limits::KINESIS_RECORD_MAX_BYTES;
use caudal_core::pack::{PackPolicy, pack_records};
use caudal_core::stream::Record;

/// One request item on its way to the receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot<'a> {
    /// Valid; its envelope is `records[record]`.
    Send {
        /// Position in the request (array index, or NDJSON line number).
        index: usize,
        /// Event id (the client's or generated).
        id: Cow<'a, str>,
        /// Index into [`Prepared::records`].
        record: usize,
    },
    /// Refused before sending.
    Rejected(Rejection),
}

/// The outcome of [`prepare`].
#[derive(Debug, Default)]
pub struct Prepared<'a> {
    /// One slot per item, in request order.
    pub slots: Vec<Slot<'a>>,
    /// The records to send, in request order.
    pub records: Vec<Record>,
}

impl<'a> Prepared<'a> {
    /// Pack the records (one per event as [`prepare`] makes them) by `policy`
    /// ([`caudal_core::pack::pack_records`]); every slot then names the record that carries
    /// its event, so the receipt answers each event by its record's outcome.
    pub fn pack(self, policy: &PackPolicy) -> Self {
        let (records, of_event) = pack_records(self.records, policy);
        let slots = self
            .slots
            .into_iter()
            .map(|s| match s {
                Slot::Send { index, id, record } => Slot::Send {
                    index,
                    id,
                    record: of_event.get(record).copied().unwrap_or(record),
                },
                rejected => rejected,
            })
            .collect();
        Self { slots, records }
    }
}

/// A check applied to every valid event before it is enveloped (the optional schema validation).
/// Returns a rejection code and reason when the event must be refused.
pub type EventCheck<'f> = &'f (dyn Fn(&Event<'_>) -> Option<(RejectCode, String)> + Sync);

/// Parse, validate and envelope a decoded body. `check` runs on each valid event.
pub fn prepare<'a>(
    body: &'a [u8],
    media: MediaType,
    opts: &ParseOptions<'_>,
    meta: &RequestMeta,
    check: Option<EventCheck<'_>>,
) -> Result<Prepared<'a>, BodyError> {
    Ok(prepare_items(
        event::parse_events(body, media, opts)?,
        meta,
        check,
    ))
}

/// Envelope validated items (caudal's own from [`prepare`], or another protocol's such as
/// [`caudal_core::segment::parse`]). `check` runs on each valid event.
pub fn prepare_items<'a>(
    items: Vec<ItemResult<'a>>,
    meta: &RequestMeta,
    check: Option<EventCheck<'_>>,
) -> Prepared<'a> {
    let mut out = Prepared {
        slots: Vec::with_capacity(items.len()),
        records: Vec::with_capacity(items.len()),
    };
    let encoder = envelope::Encoder::new(meta);
    for item in items {
        let ev = match item {
            ItemResult::Rejected(r) => {
                out.slots.push(Slot::Rejected(r));
                continue;
            }
            ItemResult::Valid(ev) => ev,
        };
        if let Some((code, reason)) = check.and_then(|f| f(&ev)) {
            out.slots.push(Slot::Rejected(Rejection {
                index: ev.index,
                code,
                reason,
            }));
            continue;
        }
        let data = encoder.encode(&ev.as_ref());
        let partition_key = ev.partition_key().to_owned();
        // The event passed MAX_EVENT_BYTES, but its envelope (metadata, escaped text form) must
        // also fit one Kinesis record.
        if data.len() + partition_key.len() > KINESIS_RECORD_MAX_BYTES {
            out.slots.push(Slot::Rejected(Rejection {
                index: ev.index,
                code: RejectCode::TooLarge,
                reason: format!(
                    "event with its metadata is {} bytes, more than one {KINESIS_RECORD_MAX_BYTES}-byte record",
                    data.len() + partition_key.len()
                ),
            }));
            continue;
        }
        out.slots.push(Slot::Send {
            index: ev.index,
            id: ev.id,
            record: out.records.len(),
        });
        out.records.push(Record {
            data,
            partition_key,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use caudal_core::envelope::Envelope;

    fn meta() -> RequestMeta {
        RequestMeta {
            request_id: "r-1".into(),
            ..RequestMeta::default()
        }
    }

    #[test]
    fn slots_follow_request_order_and_records_carry_exact_bytes() {
        let body = br#"[{"type":"a","id":"x","user":"u1"},{"nope":1},{"type":"b","user":2}]"#;
        let opts = ParseOptions {
            partition_key_field: Some("user"),
            ..ParseOptions::default()
        };
        let p = prepare(body, MediaType::Json, &opts, &meta(), None).unwrap();
        assert_eq!(p.slots.len(), 3);
        assert_eq!(p.records.len(), 2);
        assert!(matches!(&p.slots[0], Slot::Send { index: 0, id, record: 0 } if id == "x"));
        assert!(
            matches!(&p.slots[1], Slot::Rejected(r) if r.index == 1 && r.code == RejectCode::MissingType)
        );
        assert!(matches!(
            &p.slots[2],
            Slot::Send {
                index: 2,
                record: 1,
                ..
            }
        ));
        assert_eq!(p.records[0].partition_key, "u1");
        assert_eq!(p.records[1].partition_key, "2");
        let env = Envelope::parse(&p.records[0].data).unwrap();
        assert_eq!(&*env.event_bytes(), br#"{"type":"a","id":"x","user":"u1"}"#);
        assert_eq!(env.request_id.as_deref(), Some("r-1"));
    }

    #[test]
    fn packed_slots_name_the_record_that_carries_their_event() {
        let body = br#"[{"type":"a","u":"1"},{"t":0},{"type":"a","u":"2"},{"type":"a","u":"1"}]"#;
        let opts = ParseOptions {
            partition_key_field: Some("u"),
            ..ParseOptions::default()
        };
        let p = prepare(body, MediaType::Json, &opts, &meta(), None).unwrap();
        let singles = p.records.clone();
        let by_key = PackPolicy {
            by_key: true,
            ..PackPolicy::default()
        };
        let p = p.pack(&by_key);
        let records: Vec<usize> = p
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Send { record, .. } => Some(*record),
                Slot::Rejected(_) => None,
            })
            .collect();
        assert_eq!(records, vec![0, 1, 0]);
        assert!(matches!(&p.slots[1], Slot::Rejected(r) if r.index == 1));
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[0].partition_key, "1");
        let users = caudal_core::pack::unpack(&p.records[0].data).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].data, &singles[2].data[..]);
        assert_eq!(
            p.records[1], singles[1],
            "a key alone keeps the single form"
        );
    }

    #[test]
    fn check_rejections_replace_sending() {
        let body = br#"[{"type":"a"},{"type":"b"}]"#;
        let check = |e: &Event<'_>| {
            (e.event_type == "b").then(|| (RejectCode::SchemaViolation, "no b".to_owned()))
        };
        let p = prepare(
            body,
            MediaType::Json,
            &ParseOptions::default(),
            &meta(),
            Some(&check),
        )
        .unwrap();
        assert_eq!(p.records.len(), 1);
        assert!(matches!(&p.slots[1], Slot::Rejected(r) if r.code == RejectCode::SchemaViolation));
    }

    #[test]
    fn an_envelope_over_one_record_is_rejected() {
        let opts = ParseOptions {
            limits: caudal_core::limits::Limits {
                max_event_bytes: 1000 * 1024,
                max_body_bytes: 2 << 20,
                ..Default::default()
            },
            partition_key_field: None,
        };
        // A line break makes the envelope carry the event as an escaped string: every `\"` of
        // the original becomes 4 bytes, so ~600 KiB of event needs ~1.2 MiB of envelope.
        let big = format!(
            "{{\"type\":\"a\",\n\"p\":\"{}\"}}",
            "\\\"".repeat(300 * 1024)
        );
        assert!(big.len() < 1000 * 1024);
        let fits = format!(r#"{{"type":"a","p":"{}"}}"#, "x".repeat(900 * 1024));
        let p = prepare(big.as_bytes(), MediaType::Json, &opts, &meta(), None).unwrap();
        assert!(matches!(&p.slots[0], Slot::Rejected(r) if r.code == RejectCode::TooLarge));
        let p = prepare(fits.as_bytes(), MediaType::Json, &opts, &meta(), None).unwrap();
        assert_eq!(p.records.len(), 1);
    }
}
