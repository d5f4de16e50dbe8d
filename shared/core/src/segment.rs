//! Segment's HTTP tracking API (also spoken by RudderStack's SDKs): the calls Segment's SDKs
//! make, unchanged but for the host they send to, read into caudal events.
//!
//! - **Routes.** `POST /v1/batch` (`{"batch":[message, …], "sentAt": …}`, what the server SDKs
//!   send) and the single calls `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`,
//!   `/v1/group`, `/v1/alias` (one message; its type is the route's), and the short forms the
//!   browser library analytics.js sends to: `/v1/b` (a batch) and `/v1/t`, `/v1/i`, `/v1/p`,
//!   `/v1/s`, `/v1/g`, `/v1/a` (the type's first letter).
//! - **Write keys.** HTTP Basic (user = write key, empty password) or a `writeKey` member, checked
//!   against the configured keys ([`WriteKeys`]). The envelope's principal is the key's
//!   fingerprint (`segment:` + 16 hex digits of its SHA-256), never the key itself, so
//!   de-duplication is per source and the archive holds no key.
//! - **Each message is one event**, kept byte for byte as the SDK sent it (batch-level members
//!   such as `sentAt` are read, not stored). Its caudal type is `segment.<type>`; a `track`
//!   message's is `segment.track.<event name in snake case>` (`Order Completed` →
//!   `segment.track.order_completed`), or `segment.track` when the name has no letter or digit
//!   or is longer than the type allows. `messageId` is the event id (generated when absent).
//! - **Event time.** `timestamp` corrected for the client's clock as Segment's spec says:
//!   `receivedAt − (sentAt − timestamp)` when the request or the message has `sentAt`;
//!   `timestamp` alone without it; `receivedAt` when the message has no `timestamp`
//!   ([`crate::event::corrected_time`]).
//! - **Validation** is caudal's own: each message passes the scanner (size, nesting, duplicate
//!   keys, unreadable values) and the checks above; a refused message is a rejection with its
//!   reason, and the others go through.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::{
    self, BodyError, Event, ItemResult, ParseOptions, RejectCode, Rejection, Scratch,
};

/// The protocol name on the envelope.
pub const PROTOCOL: &str = "segment";

/// The longest track-event part of a type: `segment.track.` takes 14 of the type's 64.
const MAX_NAME_CHARS: usize = 64 - "segment.track.".len();

/// One route of Segment's tracking API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `/v1/batch`: messages of any type.
    Batch,
    /// A single call: one message of this type (`track`, `identify`, …).
    Single(&'static str),
}

/// The message types Segment's spec defines.
pub const TYPES: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

impl Call {
    /// The call a path names (`/v1/batch`, `/v1/track`, …, or analytics.js's `/v1/b`,
    /// `/v1/t`, …), or `None`.
    pub fn from_path(path: &str) -> Option<Call> {
        let name = path.strip_prefix("/v1/")?;
        if name == "batch" || name == "b" {
            return Some(Call::Batch);
        }
        TYPES
            .into_iter()
            .find(|t| *t == name || (name.len() == 1 && t.starts_with(name)))
            .map(Call::Single)
    }
}

/// The configured write keys (`SEGMENT_WRITE_KEYS`).
#[derive(Debug, Clone, Default)]
pub struct WriteKeys {
    /// SHA-256 of each key.
    digests: Vec<[u8; 32]>,
}

impl WriteKeys {
    /// Keys from a comma-separated list (blanks ignored).
    pub fn parse(list: &str) -> Self {
        Self {
            digests: list
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        }
    }

    /// Whether no key is configured (the Segment routes then refuse every request).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The principal of `key` (`segment:` + 16 hex digits of its SHA-256) when it is one of
    /// the configured keys.
    pub fn principal(&self, key: &str) -> Option<String> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.digests
            .contains(&digest)
            .then(|| format!("segment:{}", hex::encode(&digest[..8])))
    }
}

/// The write key of an `Authorization: Basic base64(key:)` header.
pub fn basic_auth_key(header: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let key = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!key.is_empty()).then(|| key.to_owned())
}

/// A Segment request read into events.
#[derive(Debug)]
pub struct Request<'a> {
    /// One item per message, in order (valid events carry their caudal type, `messageId` and
    /// event time).
    pub items: Vec<ItemResult<'a>>,
    /// The `writeKey` member of the body (the batch's, or the single message's), if any.
    pub write_key: Option<String>,
}

/// The top level of a `/v1/batch` body.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "sentAt", default, borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default, borrow)]
    write_key: Option<&'a RawValue>,
}

/// The members of one message this module reads.
#[derive(Deserialize, Default)]
struct Message<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "messageId", default, borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "sentAt", default, borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "userId", default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", default, borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default, borrow)]
    write_key: Option<&'a RawValue>,
}

/// A JSON string member's value; `Err` names what it is instead. Absent is `Ok(None)`, and so
/// is `null`: serde reads a `null` member into `None` before this sees it.
fn string<'a>(v: Option<&'a RawValue>) -> Result<Option<Cow<'a, str>>, &'static str> {
    let Some(v) = v else { return Ok(None) };
    let text = v.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'a, str>>(text)
            .map(Some)
            .map_err(|_| "an unreadable string"),
        Some(b'{') => Err("an object"),
        Some(b'[') => Err("an array"),
        Some(b't' | b'f') => Err("a boolean"),
        _ => Err("a number"),
    }
}

/// A user id or anonymous id as a partition value: a string, or a number as written.
fn key_value(v: Option<&RawValue>) -> Option<String> {
    let text = v?.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'-' | b'0'..=b'9') => Some(text.to_owned()),
        _ => None,
    }
    .filter(|s| !s.is_empty() && s.chars().count() <= crate::limits::PARTITION_KEY_MAX_CHARS)
}

/// `segment.track.<name>` for a track event's name, or `segment.track` when the name gives no
/// usable type.
pub fn track_type(name: &str) -> String {
    event::typed_name("segment.track", name, MAX_NAME_CHARS)
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// A `sentAt` member, when it is a readable timestamp (one that is not is not used).
fn sent_at(v: Option<&RawValue>) -> Option<OffsetDateTime> {
    string(v).ok().flatten().and_then(|s| parse_time(&s))
}

fn refuse(code: RejectCode, reason: impl Into<String>) -> (RejectCode, String) {
    (code, reason.into())
}

/// Read one message (its exact text `raw`) into an event.
fn message<'a>(
    index: usize,
    raw: &'a str,
    call: Call,
    batch_sent_at: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
    opts: &ParseOptions<'_>,
    scratch: &mut Scratch<'a>,
) -> Result<Event<'a>, (RejectCode, String)> {
    let limits = &opts.limits;
    if raw.len() > limits.max_event_bytes {
        return Err(refuse(
            RejectCode::TooLarge,
            format!(
                "message is {} bytes, more than {}",
                raw.len(),
                limits.max_event_bytes
            ),
        ));
    }
    if !raw.starts_with('{') {
        return Err(refuse(
            RejectCode::NotAnObject,
            "a Segment message must be a JSON object",
        ));
    }
    // The scanner's checks (depth, duplicate keys, values readers refuse); its members are
    // caudal's, not Segment's.
    event::scan(raw, limits.max_depth, None, scratch)
        .map_err(|e| event::scan_refusal(e, limits.max_depth))?;
    let m: Message<'a> = serde_json::from_str(raw).map_err(|e| {
        refuse(
            RejectCode::InvalidJson,
            format!("message is not readable: {e}"),
        )
    })?;
    let kind = match call {
        Call::Single(t) => t.to_owned(),
        Call::Batch => match string(m.kind) {
            Ok(Some(t)) if TYPES.contains(&t.as_ref()) => t.into_owned(),
            Ok(Some(t)) => {
                return Err(refuse(
                    RejectCode::InvalidType,
                    format!(
                        "\"type\" {:?} is not a Segment call (track, identify, page, screen, group, alias)",
                        event::truncate(&t, 70)
                    ),
                ));
            }
            Ok(None) => {
                return Err(refuse(
                    RejectCode::MissingType,
                    "a batch message needs \"type\" (track, identify, page, screen, group, alias)",
                ));
            }
            Err(what) => {
                return Err(refuse(
                    RejectCode::InvalidType,
                    format!("\"type\" must be a string, not {what}"),
                ));
            }
        },
    };
    let event_type = if kind == "track" {
        match string(m.event) {
            Ok(Some(name)) if !name.trim().is_empty() => track_type(&name),
            Ok(_) => {
                return Err(refuse(
                    RejectCode::InvalidType,
                    "a track call needs an \"event\" name",
                ));
            }
            Err(what) => {
                return Err(refuse(
                    RejectCode::InvalidType,
                    format!("\"event\" must be a string, not {what}"),
                ));
            }
        }
    } else {
        format!("segment.{kind}")
    };
    let (id, id_generated) = match string(m.message_id) {
        Ok(None) => (Cow::Owned(event::new_event_id()), true),
        Ok(Some(id)) if event::is_valid_id(&id) => (id, false),
        Ok(Some(_)) => {
            return Err(refuse(
                RejectCode::InvalidId,
                format!(
                    "\"messageId\" must be 1–{} bytes of UTF-8 without control characters",
                    event::MAX_EVENT_ID_BYTES
                ),
            ));
        }
        Err(what) => {
            return Err(refuse(
                RejectCode::InvalidId,
                format!("\"messageId\" must be a string, not {what}"),
            ));
        }
    };
    let bad_ts = |what: &str| {
        refuse(
            RejectCode::InvalidTs,
            format!("\"{what}\" must be an ISO 8601 / RFC 3339 timestamp string"),
        )
    };
    let timestamp = string(m.timestamp)
        .map_err(|_| bad_ts("timestamp"))?
        .map(|s| parse_time(&s).ok_or_else(|| bad_ts("timestamp")))
        .transpose()?;
    // A message's own sentAt wins over the batch's.
    let sent_at = sent_at(m.sent_at).or(batch_sent_at);
    let when = event::corrected_time(timestamp, sent_at, received_at);
    let partition_value = key_value(m.user_id)
        .or_else(|| key_value(m.anonymous_id))
        .map(Cow::Owned);
    Ok(Event {
        index,
        event_type: Cow::Owned(event_type),
        id,
        id_generated,
        ts: Some(when),
        raw,
        partition_value,
        event_time: Some(crate::envelope::format_timestamp(when)),
    })
}

/// Read a decoded Segment body for `call`, received at `received_at`.
pub fn parse<'a>(
    body: &'a [u8],
    call: Call,
    opts: &ParseOptions<'_>,
    received_at: OffsetDateTime,
) -> Result<Request<'a>, BodyError> {
    if body.len() > opts.limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            max: opts.limits.max_body_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    let json_error = |e: serde_json::Error| BodyError::InvalidJson(e.to_string());
    let (raws, sent_at, write_key): (Vec<&'a str>, _, _) = match call {
        Call::Batch => {
            let b: BatchBody<'a> = serde_json::from_str(text).map_err(json_error)?;
            let Some(batch) = b.batch else {
                return Err(BodyError::InvalidShape(
                    "a Segment batch is {\"batch\":[message, …]}",
                ));
            };
            if batch.len() > opts.limits.max_events {
                return Err(BodyError::TooManyEvents {
                    max: opts.limits.max_events,
                });
            }
            let sent_at = sent_at(b.sent_at);
            let key = string(b.write_key).ok().flatten().map(Cow::into_owned);
            (batch.into_iter().map(RawValue::get).collect(), sent_at, key)
        }
        Call::Single(_) => {
            let raw: &'a RawValue = serde_json::from_str(text).map_err(json_error)?;
            let key = serde_json::from_str::<Message<'a>>(raw.get())
                .ok()
                .and_then(|m| string(m.write_key).ok().flatten())
                .map(Cow::into_owned);
            (vec![raw.get()], None, key)
        }
    };
    if raws.is_empty() {
        return Err(BodyError::NoEvents);
    }
    let mut scratch = Scratch::default();
    let items = raws
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            match message(index, raw, call, sent_at, received_at, opts, &mut scratch) {
                Ok(ev) => ItemResult::Valid(ev),
                Err((code, reason)) => ItemResult::Rejected(Rejection {
                    index,
                    code,
                    reason,
                }),
            }
        })
        .collect();
    Ok(Request { items, write_key })
}

#[cfg(test)]
mod tests;
