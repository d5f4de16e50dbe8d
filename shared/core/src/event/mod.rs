//! Client bodies → validated events (pure; no AWS types).
//!
//! Two steps, so the decompressed buffer outlives the events that borrow from it:
//!
//! 1. [`decode_body`] checks the media type and content coding and inflates gzip with an output
//!    cap ([`crate::codec::read_capped`]): a gzip bomb is refused after `max_body_bytes + 1`
//!    bytes, never allocated whole.
//! 2. [`parse_events`] splits the body into items — one object, an array, `{"events":[…]}`, or
//!    NDJSON lines — and validates each item on its own. The result is one [`ItemResult`] per item,
//!    in request order: a validated [`Event`] (borrowing the item's **exact original bytes**, found
//!    with [`serde_json::value::RawValue`]) or a [`Rejection`] with a stable code. A body whose
//!    items are all valid events is read in one pass instead ([`scan_value`] checks the grammar
//!    while it walks each item); the first sign of anything else sends the body the serde_json
//!    way, so the answers (and every error's wording) are those of the serde_json path.
//!
//! Failures of the body as a whole are a [`BodyError`] with a stable [`BodyError::code`] and an
//! HTTP [`BodyError::status`] (400/413/415). They are all permanent: the same body will fail the
//! same way, so clients must not retry them.
//!
//! ## Per-item checks (each one a [`RejectCode`])
//! Size (`max_event_bytes`, on the original bytes), object-ness, nesting depth and duplicate keys
//! (one iterative walk, [`scan()`]; no recursion on input), `type` matching
//! `^[a-z][a-z0-9_.-]{0,63}$`, `id` 1–128 bytes of UTF-8 with no control characters, `ts` RFC 3339.
//! Duplicate keys reject the event: readers disagree on which value wins, so the event is
//! ambiguous. A lone UTF-16 surrogate escape (`"\ud800"`) or a number beyond an `f64` (`1e400`)
//! rejects it as `invalid_json`: [`RawValue`] lets both through (they fit the RFC 8259 grammar),
//! but serde_json refuses them when it reads the value, as the loader does with every event.
//! A missing or `null` `id` is replaced by a time-ordered UUIDv7.
//!
//! ## Forms
//! * `application/json`: an object is one event — unless it has no `type` member and has an
//!   `events` member, which makes it the batch wrapper `{"events":[…]}` (its only allowed member);
//!   an array is a batch. The whole body must be valid UTF-8 JSON (otherwise 400): without valid
//!   syntax there are no item boundaries to reject individually.
//! * `application/x-ndjson` (or `application/ndjson`): one event per line; blank lines are
//!   skipped; a line that is not valid UTF-8 JSON is a rejected item and the other lines still go
//!   through. An item's `index` is its 0-based **line number**.
//!
//! ## Layout
//! The per-item walk ([`scan()`], with [`Scanned`], [`Scalar`], [`ScanError`], [`Scratch`]) is
//! the submodule `scan`; this module splits bodies into items and turns what the walk found into
//! an [`Event`] or a [`Rejection`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::codec::{Codec, DecodeError};
use crate::envelope::EventRef;
use crate::limits::{Limits, PARTITION_KEY_MAX_CHARS};

mod scan;

pub use self::scan::{Scalar, ScanError, Scanned, Scratch, scan, scan_value, truncate};
use self::scan::{is_ws, skip_ws};

/// The accepted request media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`: an object, an array, or `{"events":[…]}`. `text/plain` bodies are
    /// read the same way: browsers send JSON as `text/plain` (`navigator.sendBeacon` with a
    /// string, `fetch` without a preflight), because `application/json` is not a CORS-safelisted
    /// content type.
    Json,
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
}

impl MediaType {
    /// Parse a `Content-Type` header value. Parameters other than `charset` are ignored; a charset
    /// other than UTF-8 is refused (JSON is UTF-8, RFC 8259 §8.1).
    pub fn from_content_type(value: Option<&str>) -> Result<Self, BodyError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Err(BodyError::UnsupportedMediaType("(none)".into()));
        };
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let media = match essence.as_str() {
            "application/json" | "text/plain" => MediaType::Json,
            "application/x-ndjson" | "application/ndjson" => MediaType::Ndjson,
            _ => return Err(BodyError::UnsupportedMediaType(truncate(value, 100))),
        };
        for param in parts {
            if let Some((name, val)) = param.split_once('=')
                && name.trim().eq_ignore_ascii_case("charset")
            {
                let val = val.trim().trim_matches('"');
                if !val.eq_ignore_ascii_case("utf-8") && !val.eq_ignore_ascii_case("utf8") {
                    return Err(BodyError::UnsupportedMediaType(truncate(value, 100)));
                }
            }
        }
        Ok(media)
    }
}

/// Why a whole body was refused. All variants are permanent client errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The `Content-Type` is not one we accept (415).
    #[error(
        "unsupported media type {0:?}: send application/json, text/plain (JSON, from browsers) or application/x-ndjson (UTF-8)"
    )]
    UnsupportedMediaType(String),
    /// The `Content-Encoding` is not `gzip` or `identity` (415).
    #[error("unsupported content encoding {0:?}: send gzip or no encoding")]
    UnsupportedEncoding(String),
    /// The body (compressed, or after decompression) is larger than allowed (413).
    #[error("body exceeds {max} bytes (after decompression)")]
    TooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// More events than allowed in one request (413).
    #[error("more than {max} events in one request")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
    /// The gzip stream is corrupt or truncated (400).
    #[error("the gzip body is corrupt or truncated")]
    InvalidCompression,
    /// The JSON body is not valid UTF-8 (400).
    #[error("the body is not valid UTF-8")]
    InvalidUtf8,
    /// The JSON body is not valid JSON (400). The message is serde_json's, about the client's
    /// own input (line and column).
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not one of the accepted shapes (400).
    #[error("invalid body: {0}")]
    InvalidShape(&'static str),
    /// Nothing but whitespace (400).
    #[error("the body is empty")]
    Empty,
    /// An empty batch (`[]`, `{"events":[]}`, only blank NDJSON lines) (400).
    #[error("the body contains no events")]
    NoEvents,
}

impl BodyError {
    /// Stable machine-readable code for API clients.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::UnsupportedMediaType(_) => "unsupported_media_type",
            BodyError::UnsupportedEncoding(_) => "unsupported_content_encoding",
            BodyError::TooLarge { .. } => "body_too_large",
            BodyError::TooManyEvents { .. } => "too_many_events",
            BodyError::InvalidCompression => "invalid_compression",
            BodyError::InvalidUtf8 => "invalid_utf8",
            BodyError::InvalidJson(_) => "invalid_json",
            BodyError::InvalidShape(_) => "invalid_body",
            BodyError::Empty => "empty_body",
            BodyError::NoEvents => "no_events",
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::UnsupportedMediaType(_) | BodyError::UnsupportedEncoding(_) => 415,
            BodyError::TooLarge { .. } | BodyError::TooManyEvents { .. } => 413,
            _ => 400,
        }
    }

    /// Always false: the same body fails the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Undo the `Content-Encoding` (a comma-separated list, applied in order, so undone in reverse)
/// with every inflation capped at `limits.max_body_bytes`. An identity body is borrowed.
pub fn decode_body<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limits: &Limits,
) -> Result<Cow<'a, [u8]>, BodyError> {
    let max = limits.max_body_bytes;
    if body.len() > max {
        return Err(BodyError::TooLarge { max });
    }
    let mut codings = Vec::new();
    for coding in content_encoding.unwrap_or_default().split(',') {
        match coding.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => {}
            "gzip" | "x-gzip" => codings.push(Codec::Gzip { level: 6 }),
            _ => {
                return Err(BodyError::UnsupportedEncoding(truncate(
                    content_encoding.unwrap_or_default(),
                    100,
                )));
            }
        }
    }
    let mut out = Cow::Borrowed(body);
    for codec in codings.into_iter().rev() {
        let inflated = codec.decompress_capped(&out, max).map_err(|e| match e {
            DecodeError::TooLarge { .. } => BodyError::TooLarge { max },
            DecodeError::Corrupt(_) => BodyError::InvalidCompression,
        })?;
        out = Cow::Owned(inflated);
    }
    Ok(out)
}

/// Stable codes of per-event rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// NDJSON line that is not valid JSON, or an item with a lone surrogate escape or a number
    /// beyond an `f64` (no JSON reader downstream accepts those).
    InvalidJson,
    /// NDJSON line that is not valid UTF-8.
    InvalidUtf8,
    /// The item is not a JSON object.
    NotAnObject,
    /// The item's bytes (or its envelope) exceed the size limit.
    TooLarge,
    /// The item nests deeper than the depth limit.
    TooDeep,
    /// An object in the item has the same key twice.
    DuplicateKey,
    /// No `type` member.
    MissingType,
    /// `type` is not a string matching `^[a-z][a-z0-9_.-]{0,63}$`.
    InvalidType,
    /// `id` is not a string of 1–128 bytes of UTF-8 without control characters.
    InvalidId,
    /// `ts` is not an RFC 3339 timestamp string.
    InvalidTs,
    /// The event does not satisfy its type's JSON Schema (optional ingest validation).
    SchemaViolation,
    /// The rules file has no rule for this type and no catch-all (optional ingest validation).
    UnknownType,
    /// A Snowplow event whose app id (`aid`) is not one the stack takes ([`crate::snowplow`]).
    UnknownApp,
}

impl RejectCode {
    /// Stable machine-readable code for API clients.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::InvalidUtf8 => "invalid_utf8",
            RejectCode::NotAnObject => "not_an_object",
            RejectCode::TooLarge => "event_too_large",
            RejectCode::TooDeep => "too_deep",
            RejectCode::DuplicateKey => "duplicate_key",
            RejectCode::MissingType => "missing_type",
            RejectCode::InvalidType => "invalid_type",
            RejectCode::InvalidId => "invalid_id",
            RejectCode::InvalidTs => "invalid_ts",
            RejectCode::SchemaViolation => "schema_violation",
            RejectCode::UnknownType => "unknown_type",
            RejectCode::UnknownApp => "unknown_app_id",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused item: never written, never worth retrying unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Position of the item in the request (array index, or NDJSON line number).
    pub index: usize,
    /// Stable code.
    pub code: RejectCode,
    /// Human-readable reason (never longer than a short sentence plus a truncated value).
    pub reason: String,
}

/// A validated event, borrowing from the (decoded) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Position of the item in the request (array index, or NDJSON line number).
    pub index: usize,
    /// The validated `type`.
    pub event_type: Cow<'a, str>,
    /// The client's `id`, or a generated UUIDv7.
    pub id: Cow<'a, str>,
    /// True when `id` was generated here.
    pub id_generated: bool,
    /// The client's `ts`, when present.
    pub ts: Option<OffsetDateTime>,
    /// The item's exact original text.
    pub raw: &'a str,
    /// The value of the configured partition-key field, when the event has it as a string or
    /// number of 1–256 characters.
    pub partition_value: Option<Cow<'a, str>>,
    /// The envelope's `event_time`, for events of another protocol ([`crate::segment`]).
    pub event_time: Option<String>,
}

impl<'a> Event<'a> {
    /// The Kinesis partition key: the configured field's value, or else the event id.
    pub fn partition_key(&self) -> &str {
        self.partition_value.as_deref().unwrap_or(&self.id)
    }

    /// The view [`crate::envelope::encode`] takes.
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            id: &self.id,
            id_generated: self.id_generated,
            event_type: &self.event_type,
            raw: self.raw.as_bytes(),
            event_time: self.event_time.as_deref(),
        }
    }
}

/// The outcome of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult<'a> {
    /// Valid, ready to be enveloped.
    Valid(Event<'a>),
    /// Refused, with the reason.
    Rejected(Rejection),
}

impl ItemResult<'_> {
    /// The item's position in the request.
    pub fn index(&self) -> usize {
        match self {
            ItemResult::Valid(e) => e.index,
            ItemResult::Rejected(r) => r.index,
        }
    }
}

/// What [`parse_events`] needs besides the body.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'c> {
    /// Limits to enforce.
    pub limits: Limits,
    /// Top-level field whose value becomes the partition key (`PARTITION_KEY_FIELD`).
    pub partition_key_field: Option<&'c str>,
}

/// Split a decoded body into items and validate each one. See the module docs for the forms.
pub fn parse_events<'a>(
    body: &'a [u8],
    media: MediaType,
    opts: &ParseOptions<'_>,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    if body.len() > opts.limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            max: opts.limits.max_body_bytes,
        });
    }
    let items = match media {
        MediaType::Json => parse_json(body, opts)?,
        MediaType::Ndjson => parse_ndjson(body, opts)?,
    };
    if items.is_empty() {
        return Err(BodyError::NoEvents);
    }
    Ok(items)
}

fn parse_json<'a>(
    body: &'a [u8],
    opts: &ParseOptions<'_>,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    let text = std::str::from_utf8(body).map_err(|_| BodyError::InvalidUtf8)?;
    match all_valid(text, opts) {
        Some(items) => Ok(items),
        None => reference_json(text, opts),
    }
}

/// A JSON body read the reference way: serde_json finds the form and the items (and says what
/// is wrong with a body that is not JSON), then each item is validated on its own.
fn reference_json<'a>(
    text: &'a str,
    opts: &ParseOptions<'_>,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    let first = text.bytes().find(|b| !is_ws(*b)).ok_or(BodyError::Empty)?;
    let raws: Vec<&'a str> = match first {
        b'[' => read_array(text, opts.limits.max_events)?,
        b'{' => {
            let probe = read_probe(text)?;
            match probe.events {
                Some(events) if !probe.has_type => {
                    if probe.other_members {
                        return Err(BodyError::InvalidShape(
                            "the batch wrapper {\"events\":[…]} must have no other member",
                        ));
                    }
                    if !events.get().starts_with('[') {
                        return Err(BodyError::InvalidShape(
                            "\"events\" must be an array of event objects",
                        ));
                    }
                    read_array(events.get(), opts.limits.max_events)?
                }
                _ => vec![text.trim_matches(|c: char| c.is_ascii() && is_ws(c as u8))],
            }
        }
        _ => {
            // A scalar: valid JSON is a (rejected) non-object item, anything else is unparseable.
            vec![
                serde_json::from_str::<&RawValue>(text)
                    .map_err(json_error)?
                    .get(),
            ]
        }
    };
    let mut scratch = Scratch::default();
    Ok(raws
        .into_iter()
        .enumerate()
        .map(|(index, raw)| validate(index, raw, opts, &mut scratch))
        .collect())
}

fn parse_ndjson<'a>(
    body: &'a [u8],
    opts: &ParseOptions<'_>,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    let mut out = Vec::new();
    let mut scratch = Scratch::default();
    for (index, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(|b| is_ws(*b)) {
            continue;
        }
        if out.len() == opts.limits.max_events {
            return Err(BodyError::TooManyEvents {
                max: opts.limits.max_events,
            });
        }
        let item = match std::str::from_utf8(line) {
            Err(e) => reject(
                index,
                RejectCode::InvalidUtf8,
                format!("line is not valid UTF-8 (byte {})", e.valid_up_to()),
            ),
            Ok(text) => match one_valid(index, text, opts, &mut scratch) {
                Some(event) => ItemResult::Valid(event),
                None => match serde_json::from_str::<&RawValue>(text) {
                    Ok(raw) => validate(index, raw.get(), opts, &mut scratch),
                    Err(e) => reject(
                        index,
                        RejectCode::InvalidJson,
                        format!("line is not valid JSON: {e}"),
                    ),
                },
            },
        };
        out.push(item);
    }
    Ok(out)
}

fn reject<'a>(index: usize, code: RejectCode, reason: String) -> ItemResult<'a> {
    ItemResult::Rejected(Rejection {
        index,
        code,
        reason,
    })
}

/// The fast path of a JSON body: when it is an array of events, the batch wrapper or one event
/// object, and its events are **all** valid, those events, found in one pass of [`scan_value`]
/// over each item (no serde_json pass to find the items first). `None` whenever anything is
/// off — not JSON, another form, an empty or over-long batch, a single rejected item — and the
/// reference path ([`reference_json`]: serde_json's split, then [`validate`]) then answers, with
/// its exact errors and reasons. So the fast path changes the cost of a body, never its answer.
fn all_valid<'a>(text: &'a str, opts: &ParseOptions<'_>) -> Option<Vec<ItemResult<'a>>> {
    let b = text.as_bytes();
    let mut scratch = Scratch::default();
    let i = skip_ws(b, 0);
    if b.get(i) == Some(&b'[') {
        let (items, end) = all_valid_array(text, i, opts, &mut scratch)?;
        return (skip_ws(b, end) == b.len()).then_some(items);
    }
    // `{"events":[…]}` (nothing else in it), read from its text as written; any other spelling
    // of the wrapper takes the reference path.
    const WRAPPER: &[u8] = b"\"events\"";
    let after_key = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'{') && b.get(after_key..after_key + WRAPPER.len()) == Some(WRAPPER) {
        let colon = skip_ws(b, after_key + WRAPPER.len());
        if b.get(colon) != Some(&b':') {
            return None;
        }
        let (items, end) = all_valid_array(text, skip_ws(b, colon + 1), opts, &mut scratch)?;
        let close = skip_ws(b, end);
        return (b.get(close) == Some(&b'}') && skip_ws(b, close + 1) == b.len()).then_some(items);
    }
    let event = one_valid(0, text, opts, &mut scratch)?;
    Some(vec![ItemResult::Valid(event)])
}

/// [`all_valid`]'s array at `text[at..]`: its events and the index just past its `]`, when it
/// holds 1–`max_events` items and all are valid events.
fn all_valid_array<'a>(
    text: &'a str,
    at: usize,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> Option<(Vec<ItemResult<'a>>, usize)> {
    let b = text.as_bytes();
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let mut items = Vec::new();
    let mut i = skip_ws(b, at + 1);
    loop {
        if items.len() == opts.limits.max_events {
            return None;
        }
        let (event, len) = valid_at(items.len(), text.get(i..)?, opts, scratch)?;
        items.push(ItemResult::Valid(event));
        i = skip_ws(b, i + len);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b']') => return Some((items, i + 1)),
            _ => return None,
        }
    }
}

/// One event object alone in `text` (whitespace around it allowed), valid: its event, as item
/// `index`; `None` when it is anything else, for the reference path to say what.
fn one_valid<'a>(
    index: usize,
    text: &'a str,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> Option<Event<'a>> {
    let rest = text.get(skip_ws(text.as_bytes(), 0)..)?;
    let (event, len) = valid_at(index, rest, opts, scratch)?;
    rest.get(len..)?.bytes().all(is_ws).then_some(event)
}

/// The event object at the start of `text` (what follows it is not looked at), when it is
/// valid: its event, as item `index`, and its length.
fn valid_at<'a>(
    index: usize,
    text: &'a str,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> Option<(Event<'a>, usize)> {
    if !text.starts_with('{') {
        return None;
    }
    let limits = &opts.limits;
    let (scanned, len) =
        scan_value(text, limits.max_depth, opts.partition_key_field, scratch).ok()?;
    let raw = text.get(..len)?;
    if raw.len() > limits.max_event_bytes {
        return None;
    }
    Some((event_of(index, raw, &scanned, opts).ok()?, len))
}

fn json_error(e: serde_json::Error) -> BodyError {
    BodyError::InvalidJson(e.to_string())
}

/// Deserialize a JSON array of raw items, stopping as soon as there are more than `max`.
fn read_array(text: &str, max: usize) -> Result<Vec<&str>, BodyError> {
    struct Items<'s> {
        max: usize,
        over: &'s mut bool,
    }
    impl<'de> DeserializeSeed<'de> for Items<'_> {
        type Value = Vec<&'de str>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Items<'_> {
        type Value = Vec<&'de str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if items.len() == self.max {
                    *self.over = true;
                    return Err(de::Error::custom("too many events"));
                }
                items.push(item.get());
            }
            Ok(items)
        }
    }
    let mut over = false;
    let mut de = serde_json::Deserializer::from_str(text);
    let items = Items {
        max,
        over: &mut over,
    }
    .deserialize(&mut de);
    if over {
        return Err(BodyError::TooManyEvents { max });
    }
    let items = items.map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(items)
}

/// What the top-level members of an object body say about its shape.
struct Probe<'a> {
    events: Option<&'a RawValue>,
    has_type: bool,
    other_members: bool,
}

/// Read the top-level members of an object body (values skipped iteratively, so nesting inside
/// them costs no stack), checking the whole body is valid JSON.
fn read_probe(text: &str) -> Result<Probe<'_>, BodyError> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Probe<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an event object or {\"events\":[…]}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut m = Probe {
                events: None,
                has_type: false,
                other_members: false,
            };
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match key.as_ref() {
                    // A second `events` would make the wrapper ambiguous: refuse it as a shape
                    // error (an event object with two `events` is rejected by the walk).
                    "events" if m.events.is_some() => {
                        m.other_members = true;
                        map.next_value::<IgnoredAny>()?;
                    }
                    "events" => m.events = Some(map.next_value::<&'de RawValue>()?),
                    "type" => {
                        m.has_type = true;
                        map.next_value::<IgnoredAny>()?;
                    }
                    _ => {
                        m.other_members = true;
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(m)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let probe = de::Deserializer::deserialize_map(&mut de, V).map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(probe)
}

/// A new time-ordered UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter that
/// keeps ids generated in the same millisecond in order (method 1 of RFC 9562 §6.2), then 62
/// random bits. Process-wide monotonic, like `Uuid::now_v7`, but the random bits come from the
/// thread-local generator instead of one `getrandom` system call per id (a large share of the
/// per-event cost in the ingest benchmark).
pub fn new_event_id() -> String {
    static LAST: std::sync::Mutex<(u64, u16)> = std::sync::Mutex::new((0, 0));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let (ms, counter) = {
        // A poisoned lock only means another thread panicked mid-update of two integers.
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms > last.0 {
            // Start each millisecond at a random point in the lower half so the counter has room.
            *last = (now_ms, rand::random::<u16>() & 0x07ff);
        } else if last.1 >= 0x0fff {
            // Counter exhausted (or the clock went back): borrow the next millisecond.
            *last = (last.0 + 1, 0);
        } else {
            last.1 += 1;
        }
        *last
    };
    let mut bytes = [0u8; 10];
    bytes[..2].copy_from_slice(&counter.to_be_bytes());
    bytes[2..].copy_from_slice(&rand::random::<[u8; 8]>());
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes)
        .into_uuid()
        .to_string()
}

/// `^[a-z][a-z0-9_.-]{0,63}$`, without a regex engine on the hot path.
pub fn is_valid_type(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}

/// `<prefix>.<name in snake case>` (`Order Completed` → `order_completed`), or `prefix` alone
/// when the name has no letter or digit or its snake form is longer than `max_chars`: the type
/// of another protocol's event named by the client (a Segment track call, a Snowplow
/// self-describing event).
pub fn typed_name(prefix: &str, name: &str, max_chars: usize) -> String {
    let mut snake = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            snake.push(c.to_ascii_lowercase());
        } else if !snake.ends_with('_') && !snake.is_empty() {
            snake.push('_');
        }
    }
    let snake = snake.trim_end_matches('_');
    if snake.is_empty() || snake.len() > max_chars {
        prefix.to_owned()
    } else {
        format!("{prefix}.{snake}")
    }
}

/// When an event happened, from the client's clock corrected by how far it was off when it
/// sent (Segment's rule): `received_at − (sent_at − created)` with both, else `created`, else
/// `received_at`. A correction that leaves years 1–9999 (clocks that make no sense) gives
/// `received_at`.
pub fn corrected_time(
    created: Option<OffsetDateTime>,
    sent_at: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
) -> OffsetDateTime {
    match (created, sent_at) {
        (Some(t), Some(s)) => received_at
            .checked_sub(s - t)
            .filter(|w| (1..=9999).contains(&w.year()))
            .unwrap_or(received_at),
        (Some(t), None) => t,
        (None, _) => received_at,
    }
}

/// Longest event id, in bytes of UTF-8: the warehouse's `event_id` is a `VARCHAR(128)` and
/// Redshift counts `VARCHAR` lengths in bytes (ingest and loader check the same number).
pub const MAX_EVENT_ID_BYTES: usize = 128;

/// 1–[`MAX_EVENT_ID_BYTES`] bytes of UTF-8, none of them a control character, and not the
/// loader's NULL marker (which would load as NULL): every id accepted here fits the warehouse.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_EVENT_ID_BYTES
        && !id.chars().any(char::is_control)
        && id != crate::null_marker::NULL_MARKER
}

/// Why one item is refused: its code and the reason for the client.
type Refusal = (RejectCode, String);

/// Validate one item given its exact text.
fn validate<'a>(
    index: usize,
    raw: &'a str,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> ItemResult<'a> {
    match read_event(index, raw, opts, scratch) {
        Ok(event) => ItemResult::Valid(event),
        Err((code, reason)) => reject(index, code, reason),
    }
}

/// The checks of one item in order: size, object-ness, the [`scan()`] walk, `type`, `id`, `ts`,
/// then the partition key. The first failing check refuses the item.
fn read_event<'a>(
    index: usize,
    raw: &'a str,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> Result<Event<'a>, Refusal> {
    let limits = &opts.limits;
    if raw.len() > limits.max_event_bytes {
        return Err((
            RejectCode::TooLarge,
            format!(
                "event is {} bytes, more than {}",
                raw.len(),
                limits.max_event_bytes
            ),
        ));
    }
    if !raw.starts_with('{') {
        return Err((
            RejectCode::NotAnObject,
            "event must be a JSON object".into(),
        ));
    }
    let scanned = scan(raw, limits.max_depth, opts.partition_key_field, scratch)
        .map_err(|e| scan_refusal(e, limits.max_depth))?;
    event_of(index, raw, &scanned, opts)
}

/// The checks of one item after the walk (`type`, `id`, `ts`, then the partition key), and the
/// event they make.
fn event_of<'a>(
    index: usize,
    raw: &'a str,
    scanned: &Scanned<'a>,
    opts: &ParseOptions<'_>,
) -> Result<Event<'a>, Refusal> {
    let event_type = event_type_of(scanned.event_type)?;
    let (id, id_generated) = id_of(scanned.id)?;
    let ts = ts_of(scanned.ts)?;
    let partition_value = partition_value_of(scanned, opts.partition_key_field);
    Ok(Event {
        index,
        event_type,
        id,
        id_generated,
        ts,
        raw,
        partition_value,
        event_time: None,
    })
}

/// The rejection for a scanner finding.
pub(crate) fn scan_refusal(e: ScanError, max_depth: usize) -> Refusal {
    match e {
        ScanError::TooDeep => (
            RejectCode::TooDeep,
            format!("event nests deeper than {max_depth} levels"),
        ),
        ScanError::DuplicateKey(k) => (RejectCode::DuplicateKey, format!("duplicate key {k:?}")),
        ScanError::Unreadable(what) => (
            RejectCode::InvalidJson,
            format!("event has {what}, which JSON readers refuse"),
        ),
        ScanError::Syntax => (RejectCode::InvalidJson, "event is not valid JSON".into()),
    }
}

/// The validated `type`: required, a string matching [`is_valid_type`].
fn event_type_of(v: Scalar<'_>) -> Result<Cow<'_, str>, Refusal> {
    match v {
        Scalar::Absent => Err((RejectCode::MissingType, "\"type\" is required".into())),
        v => match v.string() {
            Some(t) if is_valid_type(&t) => Ok(t),
            Some(t) => Err((
                RejectCode::InvalidType,
                format!(
                    "\"type\" {:?} does not match ^[a-z][a-z0-9_.-]{{0,63}}$",
                    truncate(&t, 70)
                ),
            )),
            None => Err((
                RejectCode::InvalidType,
                format!("\"type\" must be a string, not {}", v.kind()),
            )),
        },
    }
}

/// The client's `id` (a string passing [`is_valid_id`]), or a new UUIDv7 when it is missing or
/// `null`; and whether it was generated.
fn id_of(v: Scalar<'_>) -> Result<(Cow<'_, str>, bool), Refusal> {
    match v {
        Scalar::Absent | Scalar::Null => Ok((Cow::Owned(new_event_id()), true)),
        v => match v.string() {
            Some(id) if is_valid_id(&id) => Ok((id, false)),
            Some(_) => Err((
                RejectCode::InvalidId,
                format!(
                    "\"id\" must be 1–{MAX_EVENT_ID_BYTES} bytes of UTF-8 without control characters, \
                     and not the reserved {:?}",
                    crate::null_marker::NULL_MARKER
                ),
            )),
            None => Err((
                RejectCode::InvalidId,
                format!("\"id\" must be a string, not {}", v.kind()),
            )),
        },
    }
}

/// The client's `ts` when present and not `null`: an RFC 3339 string.
fn ts_of(v: Scalar<'_>) -> Result<Option<OffsetDateTime>, Refusal> {
    match v {
        Scalar::Absent | Scalar::Null => Ok(None),
        v => match v.string().map(|s| OffsetDateTime::parse(&s, &Rfc3339)) {
            Some(Ok(ts)) => Ok(Some(ts)),
            Some(Err(_)) => Err((
                RejectCode::InvalidTs,
                "\"ts\" must be an RFC 3339 timestamp such as 2026-11-25T19:55:17.123Z".into(),
            )),
            None => Err((
                RejectCode::InvalidTs,
                format!("\"ts\" must be a string, not {}", v.kind()),
            )),
        },
    }
}

/// The partition-key field's value, when it is a string or number of 1–256 characters.
fn partition_value_of<'a>(
    scanned: &Scanned<'a>,
    partition_key_field: Option<&str>,
) -> Option<Cow<'a, str>> {
    let partition = match partition_key_field {
        Some("type") => scanned.event_type,
        Some("id") => scanned.id,
        Some("ts") => scanned.ts,
        _ => scanned.partition,
    };
    match partition {
        Scalar::Str(..) => partition.string(),
        Scalar::Number(n) => Some(Cow::Borrowed(n)),
        _ => None,
    }
    .filter(|v| !v.is_empty() && v.chars().count() <= PARTITION_KEY_MAX_CHARS)
}

#[cfg(test)]
mod tests;
