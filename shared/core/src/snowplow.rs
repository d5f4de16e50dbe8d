//! Snowplow's tracker protocol: what Snowplow's trackers (web, mobile, server) send to a
//! collector, unchanged but for the host, read into caudal events.
//!
//! - **Routes.** `POST /com.snowplowanalytics.snowplow/tp2` with a `payload_data`
//!   self-describing JSON (`{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/…",
//!   "data":[event, …]}`), and the pixel `GET /i` (also `/com.snowplowanalytics.snowplow/i`)
//!   with one event as its query string.
//! - **An event** is the tracker's name → value pairs: a JSON object of strings in a POST, the
//!   query string's pairs in a pixel. It is kept **byte for byte as the tracker sent it** (the
//!   object's text, or the whole query string). Its caudal type follows `e`: `pv` →
//!   `snowplow.page_view`, `pp` → `snowplow.page_ping`, `se` → `snowplow.struct`, `tr` →
//!   `snowplow.transaction`, `ti` → `snowplow.transaction_item`, and a self-describing event
//!   (`ue`) → `snowplow.unstruct.<schema name in snake case>`. `eid` is the event id.
//! - **Base64.** `ue_px` and `cx` (URL-safe or standard base64, padded or not) and their plain
//!   forms `ue_pr` and `co` must hold the self-describing JSON Snowplow defines, within the
//!   event scanner's limits; an event whose don't is rejected with the reason, whatever its
//!   type. [`view`] decodes them for the rules.
//! - **Event time**: Snowplow's `derived_tstamp` ([`derived_time`]): `ttm` when set, else the
//!   receive time less how long the device held it (`stm − dtm`), else the receive time.
//! - **Ordering**: an event's partition key is `duid` (the browser's cookie id), else `uid`,
//!   so one browser's events stay in order.
//! - **App ids.** Snowplow's routes carry no credential; the stack's `SnowplowAppIds` lists the
//!   `aid` values it takes ([`AppIds`]), and an event of another app is rejected.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::event::{
    self, BodyError, Event, ItemResult, ParseOptions, RejectCode, Rejection, Scratch,
};

/// The protocol name on the envelope.
pub const PROTOCOL: &str = "snowplow";

/// The route of the POST form (tp2).
pub const POST_PATH: &str = "/com.snowplowanalytics.snowplow/tp2";

/// The routes of the pixel (GET) form.
pub const PIXEL_PATHS: [&str; 2] = ["/i", "/com.snowplowanalytics.snowplow/i"];

/// The schema of a POST body, without its version's last two parts.
const PAYLOAD_SCHEMA: &str = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-";
/// The schema wrapping a self-describing event (`ue_pr` / `ue_px`).
const UNSTRUCT_SCHEMA: &str = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-";
/// The schema wrapping an event's contexts (`co` / `cx`).
const CONTEXTS_SCHEMA: &str = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-";

/// The longest schema-name part of a type: `snowplow.unstruct.` takes 18 of the type's 64.
const MAX_NAME_CHARS: usize = 64 - "snowplow.unstruct.".len();

/// The 1×1 transparent GIF the pixel route answers with (what Snowplow's collector sends).
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// One of Snowplow's routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /com.snowplowanalytics.snowplow/tp2`: a batch of events.
    Post,
    /// `GET /i`: one event in the query string.
    Pixel,
}

impl Route {
    /// The route a path names, or `None`.
    pub fn from_path(path: &str) -> Option<Route> {
        if path == POST_PATH {
            Some(Route::Post)
        } else if PIXEL_PATHS.contains(&path) {
            Some(Route::Pixel)
        } else {
            None
        }
    }
}

/// The app ids (`aid`) a stack takes on Snowplow's routes (`SNOWPLOW_APP_IDS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppIds {
    /// `*` was listed: any app id, and events without one.
    any: bool,
    /// The listed ids.
    ids: Vec<String>,
}

impl AppIds {
    /// App ids from a comma-separated list (blanks ignored; `*` = any).
    pub fn parse(list: &str) -> Self {
        let ids: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        Self {
            any: ids.iter().any(|i| i == "*"),
            ids: ids.into_iter().filter(|i| i != "*").collect(),
        }
    }

    /// Whether none is configured (Snowplow's routes are then off).
    pub fn is_empty(&self) -> bool {
        !self.any && self.ids.is_empty()
    }

    /// Whether an event with app id `aid` is taken.
    pub fn allows(&self, aid: Option<&str>) -> bool {
        self.any || aid.is_some_and(|a| self.ids.iter().any(|i| i == a))
    }
}

/// Why one event is refused.
type Refusal = (RejectCode, String);

fn refuse(code: RejectCode, reason: impl Into<String>) -> Refusal {
    (code, reason.into())
}

/// An event's name → value pairs, in the order sent.
type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The pairs of a POST event (a JSON object whose values are strings; the scanner has refused
/// a name sent twice).
fn json_pairs<'a>(raw: &'a str) -> Result<Pairs<'a>, Refusal> {
    let members: BTreeMap<Cow<'a, str>, &'a RawValue> = serde_json::from_str(raw).map_err(|e| {
        refuse(
            RejectCode::InvalidJson,
            format!("event is not readable: {e}"),
        )
    })?;
    members
        .into_iter()
        .map(|(k, v)| {
            let text = v.get();
            if !text.starts_with('"') {
                return Err(refuse(
                    RejectCode::InvalidJson,
                    format!(
                        "{:?} must be a string (Snowplow's payload_data has string values only)",
                        event::truncate(&k, 40)
                    ),
                ));
            }
            serde_json::from_str::<Cow<'a, str>>(text)
                .map(|s| (k, s))
                .map_err(|_| refuse(RejectCode::InvalidJson, "an unreadable string"))
        })
        .collect()
}

/// The pairs of a query string (`+` is a space; percent escapes must decode to UTF-8; a name
/// sent twice is refused).
fn query_pairs(query: &str) -> Result<Pairs<'_>, Refusal> {
    let decode = |part: &str| {
        crate::keys::form_decode(part)
            .map(Cow::<str>::Owned)
            .ok_or_else(|| {
                refuse(
                    RejectCode::InvalidUtf8,
                    format!("{:?} does not decode to UTF-8", event::truncate(part, 40)),
                )
            })
    };
    let mut out: Pairs<'_> = Vec::new();
    let mut names = HashSet::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let name = decode(name)?;
        if !names.insert(name.clone()) {
            return Err(refuse(
                RejectCode::DuplicateKey,
                format!("duplicate key {:?}", event::truncate(&name, 40)),
            ));
        }
        let value = decode(value)?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value of `name`, when sent and not empty (trackers leave empty values out).
fn get<'p>(pairs: &'p Pairs<'_>, name: &str) -> Option<&'p str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_ref())
        .filter(|v| !v.is_empty())
}

/// The JSON text of a self-describing member sent plain (`plain`, e.g. `ue_pr`) or in base64
/// (`encoded`, e.g. `ue_px`); `Ok(None)` when neither is sent.
fn embedded(pairs: &Pairs<'_>, plain: &str, encoded: &str) -> Result<Option<String>, String> {
    if let Some(p) = get(pairs, plain) {
        return Ok(Some(p.to_owned()));
    }
    let Some(b64) = get(pairs, encoded) else {
        return Ok(None);
    };
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let url = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let std = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let bytes = url
        .decode(b64.trim())
        .or_else(|_| std.decode(b64.trim()))
        .map_err(|_| format!("\"{encoded}\" is not base64"))?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("\"{encoded}\" does not decode to UTF-8"))
}

/// A self-describing JSON `{"schema": …, "data": …}` whose schema starts with `prefix`: its
/// data. The text passes the event scanner first (nesting within `max_depth`, no name twice,
/// no value JSON readers refuse), as a client's event does.
fn self_describing(
    text: &str,
    prefix: &str,
    what: &str,
    max_depth: usize,
) -> Result<Value, String> {
    let mut scratch = Scratch::default();
    event::scan(text, max_depth, None, &mut scratch)
        .map_err(|e| format!("{what}: {}", event::scan_refusal(e, max_depth).1))?;
    let v: Value = serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))?;
    let Value::Object(mut m) = v else {
        return Err(format!("{what} must be a self-describing JSON object"));
    };
    match m.get("schema") {
        Some(Value::String(s)) if s.starts_with(prefix) => {}
        _ => return Err(format!("{what} needs \"schema\": \"{prefix}…\"")),
    }
    m.remove("data")
        .ok_or_else(|| format!("{what} needs \"data\""))
}

/// The decoded self-describing event (`ue_pr` / `ue_px`): `{"schema": <its schema>, "data": …}`.
fn unstruct_event(pairs: &Pairs<'_>, max_depth: usize) -> Result<Option<Value>, String> {
    let Some(text) = embedded(pairs, "ue_pr", "ue_px")? else {
        return Ok(None);
    };
    let inner = self_describing(
        &text,
        UNSTRUCT_SCHEMA,
        "the self-describing event",
        max_depth,
    )?;
    let Value::Object(m) = &inner else {
        return Err("the self-describing event's data must be {\"schema\":…,\"data\":…}".into());
    };
    match (m.get("schema"), m.get("data")) {
        (Some(Value::String(s)), Some(_)) if s.starts_with("iglu:") => Ok(Some(inner)),
        _ => Err(
            "the self-describing event's data must be {\"schema\":\"iglu:…\",\"data\":…}".into(),
        ),
    }
}

/// The decoded contexts (`co` / `cx`): the array of self-describing entities.
fn contexts(pairs: &Pairs<'_>, max_depth: usize) -> Result<Option<Value>, String> {
    let Some(text) = embedded(pairs, "co", "cx")? else {
        return Ok(None);
    };
    let data = self_describing(&text, CONTEXTS_SCHEMA, "the contexts", max_depth)?;
    let Value::Array(entities) = &data else {
        return Err("the contexts' data must be an array".into());
    };
    for e in entities {
        let ok = e.as_object().is_some_and(|m| {
            m.get("schema")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("iglu:"))
                && m.contains_key("data")
        });
        if !ok {
            return Err("each context must be {\"schema\":\"iglu:…\",\"data\":…}".into());
        }
    }
    Ok(Some(data))
}

/// The name part of an Iglu URI (`iglu:com.acme/link_click/jsonschema/1-0-0` → `link_click`).
fn schema_name(uri: &str) -> Option<&str> {
    uri.strip_prefix("iglu:")?.split('/').nth(1)
}

/// A millisecond timestamp member (`dtm`, `stm`, `ttm`).
fn millis(pairs: &Pairs<'_>, name: &str) -> Result<Option<OffsetDateTime>, Refusal> {
    let Some(v) = get(pairs, name) else {
        return Ok(None);
    };
    // Digits only (no sign), and a time the warehouse's TIMESTAMPTZ holds (years 1–9999).
    v.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| v.parse::<i64>().ok())
        .flatten()
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .filter(|t| t.year() <= 9999)
        .map(Some)
        .ok_or_else(|| {
            refuse(
                RejectCode::InvalidTs,
                format!(
                    "\"{name}\" must be milliseconds since 1970 as digits, not {:?}",
                    event::truncate(v, 30)
                ),
            )
        })
}

/// When the event happened, as Snowplow's enrichment derives `derived_tstamp`: the true
/// timestamp `ttm` when sent; else, with both device times and `dtm` not after `stm`, the
/// receive time less how long the device held the event (`received − (stm − dtm)`); else the
/// receive time (a device clock alone is not trusted). A result outside years 1–9999 is the
/// receive time too.
pub fn derived_time(
    true_time: Option<OffsetDateTime>,
    created: Option<OffsetDateTime>,
    sent: Option<OffsetDateTime>,
    received_at: OffsetDateTime,
) -> OffsetDateTime {
    if let Some(t) = true_time {
        return t;
    }
    match (created, sent) {
        (Some(c), Some(s)) if c <= s => received_at
            .checked_sub(s - c)
            .filter(|t| t.year() >= 1)
            .unwrap_or(received_at),
        _ => received_at,
    }
}

/// The caudal type of an event (`e`, and the self-describing event's schema for `ue`).
fn event_type(pairs: &Pairs<'_>, max_depth: usize) -> Result<String, Refusal> {
    let e = get(pairs, "e").ok_or_else(|| {
        refuse(
            RejectCode::MissingType,
            "a Snowplow event needs \"e\" (pv, pp, se, ue, tr, ti)",
        )
    })?;
    let kind = match e {
        "pv" => "page_view",
        "pp" => "page_ping",
        "se" => "struct",
        "tr" => "transaction",
        "ti" => "transaction_item",
        "ue" => {
            let ue = unstruct_event(pairs, max_depth)
                .map_err(|m| refuse(RejectCode::InvalidJson, m))?
                .ok_or_else(|| {
                    refuse(
                        RejectCode::InvalidType,
                        "a self-describing event (e=ue) needs \"ue_pr\" or \"ue_px\"",
                    )
                })?;
            let name = ue
                .get("schema")
                .and_then(Value::as_str)
                .and_then(schema_name)
                .unwrap_or_default();
            return Ok(event::typed_name("snowplow.unstruct", name, MAX_NAME_CHARS));
        }
        other => {
            return Err(refuse(
                RejectCode::InvalidType,
                format!(
                    "\"e\" {:?} is not a Snowplow event (pv, pp, se, ue, tr, ti)",
                    event::truncate(other, 20)
                ),
            ));
        }
    };
    Ok(format!("snowplow.{kind}"))
}

/// Read one event (its exact text `raw`, its pairs) into a caudal event.
fn read<'a>(
    index: usize,
    raw: &'a str,
    pairs: &Pairs<'_>,
    opts: &ParseOptions<'_>,
    app_ids: &AppIds,
    received_at: OffsetDateTime,
) -> Result<Event<'a>, Refusal> {
    let max_depth = opts.limits.max_depth;
    let event_type = event_type(pairs, max_depth)?;
    // Whatever [`view`] decodes for the rules is checked here, for every type, so an accepted
    // event never becomes a loader reject.
    unstruct_event(pairs, max_depth).map_err(|m| refuse(RejectCode::InvalidJson, m))?;
    contexts(pairs, max_depth).map_err(|m| refuse(RejectCode::InvalidJson, m))?;
    let aid = get(pairs, "aid");
    if !app_ids.allows(aid) {
        return Err(refuse(
            RejectCode::UnknownApp,
            match aid {
                Some(a) => format!(
                    "app id {:?} is not one of this stack's SnowplowAppIds",
                    event::truncate(a, 60)
                ),
                None => "the event has no app id (\"aid\"), and this stack takes only listed ones"
                    .into(),
            },
        ));
    }
    let (id, id_generated) = match get(pairs, "eid") {
        None => (Cow::Owned(event::new_event_id()), true),
        Some(id) if event::is_valid_id(id) => (Cow::Owned(id.to_owned()), false),
        Some(_) => {
            return Err(refuse(
                RejectCode::InvalidId,
                format!(
                    "\"eid\" must be 1–{} bytes of UTF-8 without control characters",
                    event::MAX_EVENT_ID_BYTES
                ),
            ));
        }
    };
    let when = derived_time(
        millis(pairs, "ttm")?,
        millis(pairs, "dtm")?,
        millis(pairs, "stm")?,
        received_at,
    );
    let fits = |k: &&str| k.chars().count() <= crate::limits::PARTITION_KEY_MAX_CHARS;
    let partition_value = get(pairs, "duid")
        .filter(fits)
        .or_else(|| get(pairs, "uid").filter(fits))
        .map(|k| Cow::Owned(k.to_owned()));
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

/// The top level of a POST body.
#[derive(Deserialize)]
struct PostBody<'a> {
    #[serde(default, borrow)]
    schema: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<Vec<&'a RawValue>>,
}

/// One POST event: the scanner's checks, then its pairs.
fn post_event<'a>(
    index: usize,
    raw: &'a str,
    opts: &ParseOptions<'_>,
    app_ids: &AppIds,
    received_at: OffsetDateTime,
    scratch: &mut Scratch<'a>,
) -> Result<Event<'a>, Refusal> {
    let limits = &opts.limits;
    if raw.len() > limits.max_event_bytes {
        return Err(refuse(
            RejectCode::TooLarge,
            format!(
                "event is {} bytes, more than {}",
                raw.len(),
                limits.max_event_bytes
            ),
        ));
    }
    if !raw.starts_with('{') {
        return Err(refuse(
            RejectCode::NotAnObject,
            "a Snowplow event must be a JSON object",
        ));
    }
    event::scan(raw, limits.max_depth, None, scratch)
        .map_err(|e| event::scan_refusal(e, limits.max_depth))?;
    let pairs = json_pairs(raw)?;
    read(index, raw, &pairs, opts, app_ids, received_at)
}

fn item(index: usize, r: Result<Event<'_>, Refusal>) -> ItemResult<'_> {
    match r {
        Ok(ev) => ItemResult::Valid(ev),
        Err((code, reason)) => ItemResult::Rejected(Rejection {
            index,
            code,
            reason,
        }),
    }
}

/// Read a decoded tp2 POST body, received at `received_at`.
pub fn parse_post<'a>(
    body: &'a [u8],
    opts: &ParseOptions<'_>,
    app_ids: &AppIds,
    received_at: OffsetDateTime,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    if body.len() > opts.limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            max: opts.limits.max_body_bytes,
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::InvalidUtf8)?;
    if text.trim().is_empty() {
        return Err(BodyError::Empty);
    }
    let b: PostBody<'a> =
        serde_json::from_str(text).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    let (Some(schema), Some(data)) = (b.schema, b.data) else {
        return Err(BodyError::InvalidShape(
            "a tp2 body is {\"schema\":\"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4\",\"data\":[event, …]}",
        ));
    };
    if !schema.starts_with(PAYLOAD_SCHEMA) {
        return Err(BodyError::InvalidShape(
            "a tp2 body's schema must be iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-…",
        ));
    }
    if data.len() > opts.limits.max_events {
        return Err(BodyError::TooManyEvents {
            max: opts.limits.max_events,
        });
    }
    if data.is_empty() {
        return Err(BodyError::NoEvents);
    }
    let mut scratch = Scratch::default();
    Ok(data
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            item(
                index,
                post_event(index, raw.get(), opts, app_ids, received_at, &mut scratch),
            )
        })
        .collect())
}

/// Read a pixel request's query string (as sent, still percent-encoded) into its one event.
pub fn parse_pixel<'a>(
    query: &'a str,
    opts: &ParseOptions<'_>,
    app_ids: &AppIds,
    received_at: OffsetDateTime,
) -> Result<Vec<ItemResult<'a>>, BodyError> {
    if query.is_empty() {
        return Err(BodyError::NoEvents);
    }
    let read_pixel = || {
        if query.len() > opts.limits.max_event_bytes {
            return Err(refuse(
                RejectCode::TooLarge,
                format!(
                    "the query string is {} bytes, more than {}",
                    query.len(),
                    opts.limits.max_event_bytes
                ),
            ));
        }
        // The envelope carries a query string as text and a JSON object as JSON; a query that
        // looked like one would be taken for JSON downstream.
        if query.starts_with('{') {
            return Err(refuse(
                RejectCode::InvalidJson,
                "a query string must not start with '{' (percent-encode it as %7B)",
            ));
        }
        let pairs = query_pairs(query)?;
        read(0, query, &pairs, opts, app_ids, received_at)
    };
    Ok(vec![item(0, read_pixel())])
}

/// Why [`view`] cannot read an archived Snowplow event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Snowplow event: {0}")]
pub struct ViewError(String);

/// The event as the rules see it (`/event/…`): a JSON object of its name → value pairs (all
/// strings, as sent), plus `unstruct_event` (the decoded `ue_pr`/`ue_px`:
/// `{"schema": "iglu:…", "data": {…}}`) and `contexts` (the decoded `co`/`cx`: an array of
/// `{"schema", "data"}`) when the event has them. `raw` is the archived event: a JSON object
/// (POST) or a query string (pixel).
pub fn view(raw: &[u8]) -> Result<Value, ViewError> {
    let text = std::str::from_utf8(raw).map_err(|_| ViewError("not UTF-8".into()))?;
    let pairs = if text.starts_with('{') {
        json_pairs(text)
    } else {
        query_pairs(text)
    }
    .map_err(|(_, m)| ViewError(m))?;
    // Ingest checked the nesting against its limit; reading back takes any depth it took.
    let unstruct = unstruct_event(&pairs, usize::MAX).map_err(ViewError)?;
    let contexts = contexts(&pairs, usize::MAX).map_err(ViewError)?;
    let mut m = Map::with_capacity(pairs.len() + 2);
    for (k, v) in pairs {
        m.insert(k.into_owned(), Value::String(v.into_owned()));
    }
    if let Some(u) = unstruct {
        m.insert("unstruct_event".into(), u);
    }
    if let Some(c) = contexts {
        m.insert("contexts".into(), c);
    }
    Ok(Value::Object(m))
}

#[cfg(test)]
mod tests;
