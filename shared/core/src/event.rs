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
//!    with [`serde_json::value::RawValue`]) or a [`Rejection`] with a stable code.
//!
//! Failures of the body as a whole are a [`BodyError`] with a stable [`BodyError::code`] and an
//! HTTP [`BodyError::status`] (400/413/415). They are all permanent: the same body will fail the
//! same way, so clients must not retry them.
//!
//! ## Per-item checks (each one a [`RejectCode`])
//! Size (`max_event_bytes`, on the original bytes), object-ness, nesting depth and duplicate keys
//! (one iterative walk, [`scan`]; no recursion on input), `type` matching
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

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::codec::{Codec, DecodeError};
use crate::envelope::EventRef;
use crate::limits::{Limits, PARTITION_KEY_MAX_CHARS};

/// The accepted request media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/json`: an object, an array, or `{"events":[…]}`.
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
            "application/json" => MediaType::Json,
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
    #[error("unsupported media type {0:?}: send application/json or application/x-ndjson (UTF-8)")]
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
            Ok(text) => match serde_json::from_str::<&RawValue>(text) {
                Ok(raw) => validate(index, raw.get(), opts, &mut scratch),
                Err(e) => reject(
                    index,
                    RejectCode::InvalidJson,
                    format!("line is not valid JSON: {e}"),
                ),
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

/// JSON whitespace (RFC 8259) — also what NDJSON treats as a blank line.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
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

/// The top-level members validation looks at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'a> {
    /// Not present.
    #[default]
    Absent,
    /// A string: its text between the quotes, and whether that contains escapes.
    Str(&'a str, bool),
    /// A number, as written.
    Number(&'a str),
    /// `null`.
    Null,
    /// Something else (named for messages: "boolean", "object", "array").
    Other(&'static str),
}

impl<'a> Scalar<'a> {
    /// The string value (unescaped), if this is a string.
    fn string(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s, false) => Some(Cow::Borrowed(s)),
            Scalar::Str(s, true) => Some(Cow::Owned(unescape(s))),
            _ => None,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Scalar::Absent => "absent",
            Scalar::Str(..) => "string",
            Scalar::Number(_) => "number",
            Scalar::Null => "null",
            Scalar::Other(k) => k,
        }
    }
}

/// What [`scan`] found in an event object.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned<'a> {
    /// Top-level `type`.
    pub event_type: Scalar<'a>,
    /// Top-level `id`.
    pub id: Scalar<'a>,
    /// Top-level `ts`.
    pub ts: Scalar<'a>,
    /// Top-level partition-key field.
    pub partition: Scalar<'a>,
}

/// A structural problem [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Nesting deeper than allowed.
    TooDeep,
    /// A key repeated within one object (unescaped value).
    DuplicateKey(String),
    /// Grammatical JSON that serde_json refuses to read into a value (what, for the message).
    Unreadable(&'static str),
}

/// Reusable buffers for [`scan`], so validating many events allocates once.
#[derive(Debug, Default)]
pub struct Scratch<'a> {
    keys: Vec<Cow<'a, str>>,
    frames: Vec<usize>,
}

/// Walk one **syntactically valid** JSON value (as produced by serde_json) once, iteratively:
/// count nesting depth (stopping as soon as it exceeds `max_depth`), find duplicate keys in every
/// object and strings or numbers serde_json cannot read, and pick up the top-level members
/// `type`, `id`, `ts` and `partition_field`. The first problem in document order is returned.
pub fn scan<'a>(
    raw: &'a str,
    max_depth: usize,
    partition_field: Option<&str>,
    scratch: &mut Scratch<'a>,
) -> Result<Scanned<'a>, ScanError> {
    #[derive(Clone, Copy)]
    enum Slot {
        Type,
        Id,
        Ts,
        Partition,
    }
    let b = raw.as_bytes();
    let mut out = Scanned::default();
    let mut pending: Option<Slot> = None;
    scratch.keys.clear();
    scratch.frames.clear();
    let mut i = 0;
    let set = |out: &mut Scanned<'a>, slot: Option<Slot>, v: Scalar<'a>| match slot {
        Some(Slot::Type) => out.event_type = v,
        Some(Slot::Id) => out.id = v,
        Some(Slot::Ts) => out.ts = v,
        Some(Slot::Partition) => out.partition = v,
        None => {}
    };
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        escaped = true;
                        j += 1;
                    }
                    j += 1;
                }
                let s = raw.get(start..j.min(b.len())).unwrap_or_default();
                // RawValue skips `\u` escapes without pairing surrogates; reading the string
                // refuses a lone one. Only `\ud…`/`\uD…` can be a surrogate.
                if (s.contains("\\ud") || s.contains("\\uD")) && unescape_strict(s).is_none() {
                    return Err(ScanError::Unreadable("a lone UTF-16 surrogate escape"));
                }
                i = j + 1;
                let mut k = i;
                while k < b.len() && is_ws(b[k]) {
                    k += 1;
                }
                if k < b.len() && b[k] == b':' {
                    i = k + 1;
                    let key = if escaped {
                        Cow::Owned(unescape(s))
                    } else {
                        Cow::Borrowed(s)
                    };
                    if scratch.frames.len() == 1 {
                        pending = match key.as_ref() {
                            "type" => Some(Slot::Type),
                            "id" => Some(Slot::Id),
                            "ts" => Some(Slot::Ts),
                            k if Some(k) == partition_field => Some(Slot::Partition),
                            _ => None,
                        };
                    }
                    scratch.keys.push(key);
                } else {
                    set(&mut out, pending.take(), Scalar::Str(s, escaped));
                }
            }
            c @ (b'{' | b'[') => {
                let kind = if c == b'{' { "object" } else { "array" };
                set(&mut out, pending.take(), Scalar::Other(kind));
                if scratch.frames.len() >= max_depth {
                    return Err(ScanError::TooDeep);
                }
                scratch.frames.push(scratch.keys.len());
                i += 1;
            }
            c @ (b'}' | b']') => {
                let start = scratch.frames.pop().unwrap_or(0);
                if c == b'}' {
                    let from = start.min(scratch.keys.len());
                    let keys = &mut scratch.keys[from..];
                    if keys.len() > 1 {
                        keys.sort_unstable();
                        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                            return Err(ScanError::DuplicateKey(truncate(&w[0], 64)));
                        }
                    }
                }
                scratch.keys.truncate(start);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let n = raw.get(start..i).unwrap_or_default();
                // RawValue checks only the grammar; reading the number refuses one beyond f64.
                if serde_json::from_str::<f64>(n).is_err() {
                    return Err(ScanError::Unreadable("a number beyond the range of an f64"));
                }
                set(&mut out, pending.take(), Scalar::Number(n));
            }
            b't' | b'f' | b'n' => {
                let v = if b[i] == b'n' {
                    Scalar::Null
                } else {
                    Scalar::Other("boolean")
                };
                set(&mut out, pending.take(), v);
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// Decode the escapes of a JSON string's contents ([`scan`] has refused lone surrogates, so this
/// does not fail; if it somehow did, the raw text is kept).
fn unescape(s: &str) -> String {
    unescape_strict(s).unwrap_or_else(|| s.to_owned())
}

/// Decode the escapes of a JSON string's contents; `None` when serde_json refuses them.
fn unescape_strict(s: &str) -> Option<String> {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    quoted.push_str(s);
    quoted.push('"');
    serde_json::from_str::<String>(&quoted).ok()
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

/// Longest event id, in bytes of UTF-8: the warehouse's `event_id` is a `VARCHAR(128)` and
/// Redshift counts `VARCHAR` lengths in bytes (ingest and loader check the same number).
pub const MAX_EVENT_ID_BYTES: usize = 128;

/// 1–[`MAX_EVENT_ID_BYTES`] bytes of UTF-8, none of them a control character, and not the
/// loader's NULL marker (which would load as NULL): every id accepted here fits the warehouse.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_EVENT_ID_BYTES
        && !id.chars().any(char::is_control)
        && id != crate::rules::NULL_MARKER
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// Validate one item given its exact text.
fn validate<'a>(
    index: usize,
    raw: &'a str,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> ItemResult<'a> {
    let limits = &opts.limits;
    if raw.len() > limits.max_event_bytes {
        return reject(
            index,
            RejectCode::TooLarge,
            format!(
                "event is {} bytes, more than {}",
                raw.len(),
                limits.max_event_bytes
            ),
        );
    }
    if !raw.starts_with('{') {
        return reject(
            index,
            RejectCode::NotAnObject,
            "event must be a JSON object".into(),
        );
    }
    let scanned = match scan(raw, limits.max_depth, opts.partition_key_field, scratch) {
        Ok(s) => s,
        Err(ScanError::TooDeep) => {
            return reject(
                index,
                RejectCode::TooDeep,
                format!("event nests deeper than {} levels", limits.max_depth),
            );
        }
        Err(ScanError::DuplicateKey(k)) => {
            return reject(
                index,
                RejectCode::DuplicateKey,
                format!("duplicate key {k:?}"),
            );
        }
        Err(ScanError::Unreadable(what)) => {
            return reject(
                index,
                RejectCode::InvalidJson,
                format!("event has {what}, which JSON readers refuse"),
            );
        }
    };
    let event_type = match scanned.event_type {
        Scalar::Absent => {
            return reject(
                index,
                RejectCode::MissingType,
                "\"type\" is required".into(),
            );
        }
        v => match v.string() {
            Some(t) if is_valid_type(&t) => t,
            Some(t) => {
                return reject(
                    index,
                    RejectCode::InvalidType,
                    format!(
                        "\"type\" {:?} does not match ^[a-z][a-z0-9_.-]{{0,63}}$",
                        truncate(&t, 70)
                    ),
                );
            }
            None => {
                return reject(
                    index,
                    RejectCode::InvalidType,
                    format!("\"type\" must be a string, not {}", v.kind()),
                );
            }
        },
    };
    let (id, id_generated) = match scanned.id {
        Scalar::Absent | Scalar::Null => (Cow::Owned(new_event_id()), true),
        v => match v.string() {
            Some(id) if is_valid_id(&id) => (id, false),
            Some(_) => {
                return reject(
                    index,
                    RejectCode::InvalidId,
                    format!(
                        "\"id\" must be 1–{MAX_EVENT_ID_BYTES} bytes of UTF-8 without control characters, \
                         and not the reserved {:?}",
                        crate::rules::NULL_MARKER
                    ),
                );
            }
            None => {
                return reject(
                    index,
                    RejectCode::InvalidId,
                    format!("\"id\" must be a string, not {}", v.kind()),
                );
            }
        },
    };
    let ts = match scanned.ts {
        Scalar::Absent | Scalar::Null => None,
        v => match v.string().map(|s| OffsetDateTime::parse(&s, &Rfc3339)) {
            Some(Ok(ts)) => Some(ts),
            Some(Err(_)) => {
                return reject(
                    index,
                    RejectCode::InvalidTs,
                    "\"ts\" must be an RFC 3339 timestamp such as 2026-11-25T19:55:17.123Z".into(),
                );
            }
            None => {
                return reject(
                    index,
                    RejectCode::InvalidTs,
                    format!("\"ts\" must be a string, not {}", v.kind()),
                );
            }
        },
    };
    let partition = match opts.partition_key_field {
        Some("type") => scanned.event_type,
        Some("id") => scanned.id,
        Some("ts") => scanned.ts,
        _ => scanned.partition,
    };
    let partition_value = match partition {
        Scalar::Str(..) => partition.string(),
        Scalar::Number(n) => Some(Cow::Borrowed(n)),
        _ => None,
    }
    .filter(|v| !v.is_empty() && v.chars().count() <= PARTITION_KEY_MAX_CHARS);
    ItemResult::Valid(Event {
        index,
        event_type,
        id,
        id_generated,
        ts,
        raw,
        partition_value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn opts() -> ParseOptions<'static> {
        ParseOptions::default()
    }

    fn parse(body: &str, media: MediaType) -> Result<Vec<ItemResult<'_>>, BodyError> {
        parse_events(body.as_bytes(), media, &opts())
    }

    fn one(body: &str) -> ItemResult<'_> {
        let mut items = parse(body, MediaType::Json).unwrap();
        assert_eq!(items.len(), 1);
        items.remove(0)
    }

    fn code(item: &ItemResult<'_>) -> Option<RejectCode> {
        match item {
            ItemResult::Valid(_) => None,
            ItemResult::Rejected(r) => Some(r.code),
        }
    }

    fn valid<'a>(item: &'a ItemResult<'a>) -> &'a Event<'a> {
        match item {
            ItemResult::Valid(e) => e,
            ItemResult::Rejected(r) => panic!("rejected: {r:?}"),
        }
    }

    #[test]
    fn single_event_keeps_exact_bytes_and_fields() {
        let body =
            r#"  {"type":"page_view", "id":"e-1","ts":"2026-11-25T19:55:17.5+02:00","x": 1.50}  "#;
        let item = one(body);
        let e = valid(&item);
        assert_eq!(e.raw, body.trim());
        assert_eq!(e.event_type, "page_view");
        assert_eq!(e.id, "e-1");
        assert!(!e.id_generated);
        assert_eq!(
            e.ts,
            Some(time::macros::datetime!(2026-11-25 17:55:17.5 UTC))
        );
        assert_eq!(e.partition_key(), "e-1");
    }

    #[test]
    fn missing_or_null_id_gets_a_uuid_v7() {
        for body in [r#"{"type":"signup"}"#, r#"{"type":"signup","id":null}"#] {
            let item = one(body);
            let e = valid(&item);
            assert!(e.id_generated);
            let u = uuid::Uuid::parse_str(&e.id).unwrap();
            assert_eq!(u.get_version_num(), 7);
        }
        let a = one(r#"{"type":"a"}"#);
        let b = one(r#"{"type":"a"}"#);
        assert!(valid(&a).id < valid(&b).id, "v7 ids are time ordered");
    }

    #[test]
    fn generated_ids_are_strictly_ordered_v7_uuids() {
        let ids: Vec<String> = (0..20_000).map(|_| new_event_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        let u = uuid::Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(u.get_version(), Some(uuid::Version::SortRand));
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        let (secs, _) = u.get_timestamp().unwrap().to_unix();
        let now = OffsetDateTime::now_utc().unix_timestamp() as u64;
        assert!(secs.abs_diff(now) < 5, "timestamp is now");
    }

    #[test]
    fn array_and_wrapper_forms() {
        let arr = r#"[{"type":"a"}, 7, {"type":"b","id":"x"}]"#;
        let items = parse(arr, MediaType::Json).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(valid(&items[0]).raw, r#"{"type":"a"}"#);
        assert_eq!(code(&items[1]), Some(RejectCode::NotAnObject));
        assert_eq!(items[1].index(), 1);
        assert_eq!(valid(&items[2]).index, 2);

        let wrapped = r#"{"events":[{"type":"a"},{"type":"b"}]}"#;
        let items = parse(wrapped, MediaType::Json).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(valid(&items[1]).raw, r#"{"type":"b"}"#);

        // An event that merely has an `events` member is an event.
        let item = one(r#"{"type":"cart","events":[1,2]}"#);
        assert_eq!(valid(&item).event_type, "cart");

        assert_eq!(
            parse(r#"{"events":[{"type":"a"}],"extra":1}"#, MediaType::Json)
                .unwrap_err()
                .code(),
            "invalid_body"
        );
        assert_eq!(
            parse(r#"{"events":{"type":"a"}}"#, MediaType::Json)
                .unwrap_err()
                .code(),
            "invalid_body"
        );
    }

    #[test]
    fn body_level_errors() {
        let cases: &[(&str, &str, u16)] = &[
            ("", "empty_body", 400),
            ("  \n ", "empty_body", 400),
            ("[]", "no_events", 400),
            (r#"{"events":[]}"#, "no_events", 400),
            ("[{\"type\":\"a\"}", "invalid_json", 400),
            ("{\"type\":\"a\"} x", "invalid_json", 400),
            ("nope", "invalid_json", 400),
        ];
        for (body, c, status) in cases {
            let err = parse(body, MediaType::Json).unwrap_err();
            assert_eq!((err.code(), err.status()), (*c, *status), "{body:?}");
            assert!(!err.is_retryable());
        }
        let scalar = one("42");
        assert_eq!(code(&scalar), Some(RejectCode::NotAnObject));
    }

    #[test]
    fn invalid_utf8_json_body_is_400_but_ndjson_line_is_rejected_alone() {
        let mut body = br#"[{"type":"a","s":""#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#""}]"#);
        let err = parse_events(&body, MediaType::Json, &opts()).unwrap_err();
        assert_eq!(err, BodyError::InvalidUtf8);

        let mut nd = b"{\"type\":\"a\"}\n{\"type\":\"b\",\"s\":\"".to_vec();
        nd.extend_from_slice(&[0xc3, 0x28]);
        nd.extend_from_slice(b"\"}\n{\"type\":\"c\"}\n");
        let items = parse_events(&nd, MediaType::Ndjson, &opts()).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(code(&items[1]), Some(RejectCode::InvalidUtf8));
        assert_eq!(valid(&items[2]).event_type, "c");
    }

    #[test]
    fn ndjson_blank_and_broken_lines() {
        let body =
            "{\"type\":\"a\"}\r\n\n   \n{\"type\":\"b\"\n\t\n{\"type\":\"c\",\"id\":\"3\"}\n";
        let items = parse(body, MediaType::Ndjson).unwrap();
        assert_eq!(items.len(), 3, "blank lines are not events");
        assert_eq!(valid(&items[0]).raw, "{\"type\":\"a\"}");
        assert_eq!(items[1].index(), 3, "index is the line number");
        assert_eq!(code(&items[1]), Some(RejectCode::InvalidJson));
        assert_eq!(valid(&items[2]).index, 5);
        assert_eq!(
            parse("\n \n", MediaType::Ndjson).unwrap_err(),
            BodyError::NoEvents
        );
        // Two objects on one line are not one event.
        let items = parse("{\"type\":\"a\"} {\"type\":\"b\"}", MediaType::Ndjson).unwrap();
        assert_eq!(code(&items[0]), Some(RejectCode::InvalidJson));
    }

    #[test]
    fn event_count_at_and_over_the_limit() {
        let o = ParseOptions {
            limits: Limits {
                max_events: 3,
                ..Limits::default()
            },
            partition_key_field: None,
        };
        let ev = r#"{"type":"a"}"#;
        for (n, ok) in [(3, true), (4, false)] {
            let arr = format!("[{}]", vec![ev; n].join(","));
            let wrapped = format!("{{\"events\":{arr}}}");
            let nd = vec![ev; n].join("\n\n");
            for (body, media) in [
                (&arr, MediaType::Json),
                (&wrapped, MediaType::Json),
                (&nd, MediaType::Ndjson),
            ] {
                let r = parse_events(body.as_bytes(), media, &o);
                if ok {
                    assert_eq!(r.unwrap().len(), n);
                } else {
                    let e = r.unwrap_err();
                    assert_eq!((e.code(), e.status()), ("too_many_events", 413), "{body}");
                }
            }
        }
    }

    #[test]
    fn event_size_at_and_over_the_limit() {
        let o = ParseOptions {
            limits: Limits {
                max_event_bytes: 40,
                ..Limits::default()
            },
            partition_key_field: None,
        };
        let base = r#"{"type":"a","p":""}"#; // 19 bytes
        let at = base.replace("\"\"", &format!("\"{}\"", "x".repeat(40 - 19)));
        let over = base.replace("\"\"", &format!("\"{}\"", "x".repeat(41 - 19)));
        assert_eq!(at.len(), 40);
        let body = format!("[{at},{over}]");
        let items = parse_events(body.as_bytes(), MediaType::Json, &o).unwrap();
        assert!(matches!(items[0], ItemResult::Valid(_)));
        assert_eq!(code(&items[1]), Some(RejectCode::TooLarge));
    }

    #[test]
    fn body_size_at_and_over_the_limit() {
        let limits = Limits {
            max_body_bytes: 100,
            ..Limits::default()
        };
        let o = ParseOptions {
            limits,
            partition_key_field: None,
        };
        let at = format!(r#"{{"type":"a","p":"{}"}}"#, "x".repeat(100 - 19));
        assert_eq!(at.len(), 100);
        let over = format!("{at} ");
        assert_eq!(
            decode_body(at.as_bytes(), None, &limits).unwrap().len(),
            100
        );
        assert!(parse_events(at.as_bytes(), MediaType::Json, &o).is_ok());
        let e = decode_body(over.as_bytes(), None, &limits).unwrap_err();
        assert_eq!((e.code(), e.status()), ("body_too_large", 413));
        assert_eq!(
            parse_events(over.as_bytes(), MediaType::Json, &o)
                .unwrap_err()
                .status(),
            413
        );
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        Codec::Gzip { level: 6 }.compress(bytes).unwrap()
    }

    #[test]
    fn gzip_bodies_are_inflated_with_a_cap() {
        let limits = Limits {
            max_body_bytes: 1000,
            ..Limits::default()
        };
        let body = format!(r#"[{{"type":"a","p":"{}"}}]"#, "x".repeat(1000 - 21));
        assert_eq!(body.len(), 1000);
        let packed = gzip(body.as_bytes());
        assert_eq!(
            &*decode_body(&packed, Some("gzip"), &limits).unwrap(),
            body.as_bytes()
        );
        assert_eq!(
            &*decode_body(&packed, Some(" GZIP , identity"), &limits).unwrap(),
            body.as_bytes()
        );
        let over = gzip(format!("{body} ").as_bytes());
        assert_eq!(
            decode_body(&over, Some("gzip"), &limits)
                .unwrap_err()
                .status(),
            413
        );
        // gzip applied twice is undone twice.
        let twice = gzip(&packed);
        assert_eq!(
            &*decode_body(&twice, Some("gzip, gzip"), &limits).unwrap(),
            body.as_bytes()
        );
        assert_eq!(
            decode_body(b"\x1f\x8b\x08junk", Some("gzip"), &limits)
                .unwrap_err()
                .code(),
            "invalid_compression"
        );
        let e = decode_body(b"x", Some("br"), &limits).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("unsupported_content_encoding", 415)
        );
    }

    #[test]
    fn gzip_bomb_is_refused() {
        // 1 GiB of zeros would be ~1 MiB compressed; 64 MiB keeps the test fast and still shows
        // the cap stops inflation at max_body_bytes.
        let mut enc = Codec::Gzip { level: 9 }.encoder(Vec::new()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 200 * 1024);
        let e = decode_body(&bomb, Some("gzip"), &Limits::default()).unwrap_err();
        assert_eq!(
            e,
            BodyError::TooLarge {
                max: 5 * 1024 * 1024
            }
        );
    }

    #[test]
    fn media_types() {
        assert_eq!(
            MediaType::from_content_type(Some("application/json")),
            Ok(MediaType::Json)
        );
        assert_eq!(
            MediaType::from_content_type(Some("Application/JSON; charset=\"UTF-8\"")),
            Ok(MediaType::Json)
        );
        assert_eq!(
            MediaType::from_content_type(Some("application/x-ndjson")),
            Ok(MediaType::Ndjson)
        );
        assert_eq!(
            MediaType::from_content_type(Some("application/ndjson;charset=utf-8")),
            Ok(MediaType::Ndjson)
        );
        for bad in [
            None,
            Some(""),
            Some("text/plain"),
            Some("application/json; charset=latin1"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let e = MediaType::from_content_type(bad).unwrap_err();
            assert_eq!(
                (e.code(), e.status()),
                ("unsupported_media_type", 415),
                "{bad:?}"
            );
        }
    }

    fn nested(depth: usize) -> String {
        // depth 1 = the event object itself.
        let inner = depth - 1;
        format!(
            r#"{{"type":"a","n":{}1{}}}"#,
            "[".repeat(inner),
            "]".repeat(inner)
        )
    }

    #[test]
    fn depth_at_and_over_the_limit() {
        let at = nested(32);
        let over = nested(33);
        assert!(matches!(one(&at), ItemResult::Valid(_)));
        assert_eq!(code(&one(&over)), Some(RejectCode::TooDeep));
        let mixed = format!(
            r#"{{"type":"a","o":{}1{}}}"#,
            "{\"k\":[".repeat(15),
            "]}".repeat(15)
        );
        assert!(matches!(one(&mixed), ItemResult::Valid(_)), "31 levels");
    }

    #[test]
    fn very_deep_input_does_not_overflow_the_stack() {
        // 100k levels inside one event: serde_json skips it iteratively and the walk stops at the
        // limit, so this is a rejection, not a crash.
        let deep = nested(100_000);
        assert_eq!(code(&one(&deep)), Some(RejectCode::TooDeep));
        let body = format!("[{deep}]");
        let items = parse(&body, MediaType::Json).unwrap();
        assert_eq!(code(&items[0]), Some(RejectCode::TooDeep));
    }

    #[test]
    fn duplicate_keys_anywhere_reject_the_event() {
        for body in [
            r#"{"type":"a","type":"b"}"#,
            r#"{"type":"a","x":{"k":1,"j":2,"k":3}}"#,
            r#"{"type":"a","x":[{"k":1},{"q":1,"q":1}]}"#,
            r#"{"type":"a","\u0078":1,"x":2}"#,
        ] {
            assert_eq!(code(&one(body)), Some(RejectCode::DuplicateKey), "{body}");
        }
        // The same key in sibling objects is fine.
        assert!(matches!(
            one(r#"{"type":"a","x":[{"k":1},{"k":2}],"k":{"k":{"k":1}}}"#),
            ItemResult::Valid(_)
        ));
        // Keys that only look alike inside string values are not keys.
        assert!(matches!(
            one(r#"{"type":"a","s":"\"type\":","t":"type"}"#),
            ItemResult::Valid(_)
        ));
    }

    #[test]
    fn type_rules() {
        assert_eq!(code(&one(r#"{"x":1}"#)), Some(RejectCode::MissingType));
        for bad in [
            r#""""#,
            r#""Page""#,
            r#""1a""#,
            r#""a b""#,
            "1",
            "null",
            r#"["a"]"#,
            r#""é""#,
        ] {
            let body = format!(r#"{{"type":{bad}}}"#);
            assert_eq!(code(&one(&body)), Some(RejectCode::InvalidType), "{body}");
        }
        let max = format!("a{}", "b".repeat(63));
        assert!(matches!(
            one(&format!(r#"{{"type":"{max}"}}"#)),
            ItemResult::Valid(_)
        ));
        assert_eq!(
            code(&one(&format!(r#"{{"type":"{max}b"}}"#))),
            Some(RejectCode::InvalidType)
        );
        // Escaped but valid.
        let item = one(r#"{"type":"page\u005fview"}"#);
        assert_eq!(valid(&item).event_type, "page_view");
        // A nested `type` is not the event's type.
        assert_eq!(
            code(&one(r#"{"x":{"type":"a"}}"#)),
            Some(RejectCode::MissingType)
        );
    }

    #[test]
    fn type_check_equals_the_regex() {
        let re = regex::Regex::new(r"^[a-z][a-z0-9_.-]{0,63}$").unwrap();
        let alphabet = ['a', 'z', '0', '9', '_', '.', '-', 'A', ' ', 'é', '\n', '/'];
        let mut n = 0u64;
        for len in 0..=66usize {
            for seed in 0..40u64 {
                let s: String = (0..len)
                    .map(|i| {
                        alphabet[((seed * 31 + i as u64 * 7 + n) % alphabet.len() as u64) as usize]
                    })
                    .collect();
                n += 1;
                assert_eq!(is_valid_type(&s), re.is_match(&s), "{s:?}");
            }
            let s = format!("a{}", "b".repeat(len.saturating_sub(1)));
            assert_eq!(is_valid_type(&s), re.is_match(&s), "{s:?}");
        }
    }

    #[test]
    fn id_rules() {
        let max = "i".repeat(128);
        assert_eq!(
            valid(&one(&format!(r#"{{"type":"a","id":"{max}"}}"#))).id,
            max.as_str()
        );
        for bad in [
            r#""""#,
            &format!("\"{max}i\""),
            r#""a\u0001""#,
            r#""a\nb""#,
            "12",
            "true",
        ] {
            let body = format!(r#"{{"type":"a","id":{bad}}}"#);
            assert_eq!(code(&one(&body)), Some(RejectCode::InvalidId), "{body}");
        }
        // Bytes of UTF-8, not characters: the warehouse column is VARCHAR(128) (bytes).
        for (id, ok) in [
            ("é".repeat(64), true),
            ("é".repeat(65), false),
            ("€".repeat(42), true),
            (format!("{}ab", "€".repeat(42)), true),
            (format!("{}abc", "€".repeat(42)), false),
            ("\\u00e9".repeat(64), true),
            ("\\u00e9".repeat(65), false),
            ("~caudal~null~".into(), false),
            ("~caudal~null~x".into(), true),
        ] {
            let body = format!(r#"{{"type":"a","id":"{id}"}}"#);
            assert_eq!(matches!(one(&body), ItemResult::Valid(_)), ok, "{body}");
        }
        assert!(is_valid_id(&"x".repeat(MAX_EVENT_ID_BYTES)));
        assert!(!is_valid_id(&"x".repeat(MAX_EVENT_ID_BYTES + 1)));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn ts_rules() {
        assert_eq!(valid(&one(r#"{"type":"a","ts":null}"#)).ts, None);
        for bad in [
            r#""yesterday""#,
            r#""2026-11-25""#,
            r#""2026-13-01T00:00:00Z""#,
            "1732564517",
        ] {
            let body = format!(r#"{{"type":"a","ts":{bad}}}"#);
            assert_eq!(code(&one(&body)), Some(RejectCode::InvalidTs), "{body}");
        }
    }

    #[test]
    fn partition_key_field() {
        let o = ParseOptions {
            limits: Limits::default(),
            partition_key_field: Some("user_id"),
        };
        let body = format!(
            r#"[{{"type":"a","id":"1","user_id":"u-7"}},{{"type":"a","id":"2","user_id":42}},{{"type":"a","id":"3","user_id":{{"x":1}}}},{{"type":"a","id":"4","user_id":""}},{{"type":"a","id":"5","user_id":"{}"}},{{"type":"a","id":"6","x":{{"user_id":"nested"}}}}]"#,
            "u".repeat(257)
        );
        let items = parse_events(body.as_bytes(), MediaType::Json, &o).unwrap();
        let keys: Vec<&str> = items.iter().map(|i| valid(i).partition_key()).collect();
        assert_eq!(keys, ["u-7", "42", "3", "4", "5", "6"]);
    }

    #[test]
    fn line_breaks_inside_an_event_are_kept() {
        let body = "[{\r\n \"type\": \"signup\"\n}]";
        let items = parse(body, MediaType::Json).unwrap();
        assert_eq!(valid(&items[0]).raw, "{\r\n \"type\": \"signup\"\n}");
    }
}
