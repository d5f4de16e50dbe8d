//! Differential tests of the parsers of untrusted request bytes in `caudal_core::event`: the body
//! splitter ([`parse_events`]), the hand-written walk over each event ([`scan`]) and the content
//! decoding ([`decode_body`]), each against an oracle built on the libraries the rest of the
//! pipeline reads events with (serde_json, flate2).
//!
//! * The oracle restates the contract (module docs of `caudal_core::event`) on top of serde_json:
//!   the body's syntax and item boundaries come from serde_json, each item is read into a
//!   [`Value`] by a visitor that also counts depth and finds duplicate keys in document order,
//!   and the per-item rules (type, id, ts, partition key) are checked on that `Value`. The
//!   parser must agree on every item: the same rejection code, or a valid event whose raw text is
//!   the item's exact bytes and whose fields are the `Value`'s.
//! * Inputs are generated JSON (escapes, surrogate pairs, unicode, numbers at the edges of
//!   `f64`, every whitespace) assembled into every accepted body form, then corrupted.
//! * Cases the properties found are kept as plain tests at the end of each section.
//!
//! One rule is deliberately not "serde_json rejects the body ⇒ nothing is accepted": an array
//! whose items are all well-formed but one holds a lone surrogate or a number beyond `f64` is
//! refused item by item (the item boundaries are known), so the other items may be valid; the
//! property is that every *accepted* item reads as a `Value` on its own.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::LazyLock;

use caudal_core::event::{
    BodyError, ItemResult, MediaType, ParseOptions, RejectCode, Scalar, ScanError, Scanned,
    Scratch, decode_body, parse_events, scan, scan_value,
};
use caudal_core::limits::Limits;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::Config;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !is_ws(*c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !is_ws(*c)).map_or(start, |e| e + 1);
    &b[start..end]
}

/// What serde_json refuses, or the two checks it does not make itself.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    TooDeep,
    Duplicate(String),
    /// serde_json's own refusal (lone surrogate, number beyond f64) of grammatical JSON.
    Unreadable,
}

/// Reads one value like `serde_json::Value` does, and in the same document order as the scanner
/// fails on a container deeper than `max_depth` (the top level is depth 1) or an object whose
/// keys repeat (when it closes; reported as the smallest repeated key).
#[derive(Clone, Copy)]
struct Walk<'p> {
    depth: usize,
    max_depth: usize,
    problem: &'p RefCell<Option<Problem>>,
}

impl<'p> Walk<'p> {
    fn enter<E: de::Error>(&self) -> Result<Walk<'p>, E> {
        if self.depth > self.max_depth {
            return Err(self.fail(Problem::TooDeep));
        }
        Ok(Walk {
            depth: self.depth + 1,
            ..*self
        })
    }

    fn fail<E: de::Error>(&self, p: Problem) -> E {
        *self.problem.borrow_mut() = Some(p);
        E::custom("oracle")
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(child)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.enter()?;
        let mut members = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            members.push((k, map.next_value_seed(child)?));
        }
        let mut keys: Vec<&String> = members.iter().map(|(k, _)| k).collect();
        keys.sort();
        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
            return Err(self.fail(Problem::Duplicate(w[0].clone())));
        }
        Ok(Value::Object(members.into_iter().collect()))
    }
}

/// One syntactically valid JSON text read by [`Walk`].
fn walk(text: &str, max_depth: usize) -> Result<Value, Problem> {
    let problem = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = Walk {
        depth: 1,
        max_depth,
        problem: &problem,
    };
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(v) => Ok(v),
        Err(_) => Err(problem.into_inner().unwrap_or(Problem::Unreadable)),
    }
}

/// The top-level members of an object, in order, duplicates kept, values as written.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> de::Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    m.push((k, map.next_value::<&RawValue>()?));
                }
                Ok(Members(m))
            }
        }
        d.deserialize_map(V)
    }
}

fn elements(array: &str) -> Vec<&str> {
    serde_json::from_str::<Vec<&RawValue>>(array)
        .expect("a valid array")
        .into_iter()
        .map(RawValue::get)
        .collect()
}

/// The contract's items of a body: (index, exact text), or the body's error code.
fn want_body<'a>(
    body: &'a [u8],
    media: MediaType,
    opts: &ParseOptions<'_>,
) -> Result<Vec<(usize, &'a [u8])>, &'static str> {
    let limits = &opts.limits;
    if body.len() > limits.max_body_bytes {
        return Err("body_too_large");
    }
    let items: Vec<(usize, &[u8])> = match media {
        MediaType::Ndjson => body
            .split(|b| *b == b'\n')
            .map(trim_ws)
            .enumerate()
            .filter(|(_, line)| !line.is_empty())
            .collect(),
        MediaType::Json => {
            let text = std::str::from_utf8(body).map_err(|_| "invalid_utf8")?;
            let trimmed = std::str::from_utf8(trim_ws(body)).expect("ws is ASCII");
            if trimmed.is_empty() {
                return Err("empty_body");
            }
            if serde_json::from_str::<IgnoredAny>(text).is_err() {
                return Err("invalid_json");
            }
            let texts = if trimmed.starts_with('[') {
                elements(trimmed)
            } else if trimmed.starts_with('{') {
                let members = serde_json::from_str::<Members<'_>>(text)
                    .map_err(|_| "invalid_json")?
                    .0;
                let has_type = members.iter().any(|(k, _)| k == "type");
                match members.iter().find(|(k, _)| k == "events") {
                    Some(_) if !has_type && members.len() > 1 => return Err("invalid_body"),
                    Some((_, ev)) if !has_type && !ev.get().starts_with('[') => {
                        return Err("invalid_body");
                    }
                    Some((_, ev)) if !has_type => elements(ev.get()),
                    _ => vec![trimmed],
                }
            } else {
                vec![trimmed]
            };
            texts.into_iter().map(str::as_bytes).enumerate().collect()
        }
    };
    if items.len() > limits.max_events {
        return Err("too_many_events");
    }
    if items.is_empty() {
        return Err("no_events");
    }
    Ok(items)
}

/// What a valid event must carry.
#[derive(Debug, PartialEq)]
struct Fields {
    event_type: String,
    /// `None`: generated.
    id: Option<String>,
    ts: Option<OffsetDateTime>,
    partition: Option<String>,
}

static TYPE_RE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9_.-]{0,63}$").expect("regex"));

/// The contract's verdict on one item's exact text.
fn want_item(item: &[u8], media: MediaType, opts: &ParseOptions<'_>) -> Result<Fields, RejectCode> {
    let Ok(text) = std::str::from_utf8(item) else {
        return Err(RejectCode::InvalidUtf8);
    };
    if media == MediaType::Ndjson && serde_json::from_str::<IgnoredAny>(text).is_err() {
        return Err(RejectCode::InvalidJson);
    }
    let limits = &opts.limits;
    if text.len() > limits.max_event_bytes {
        return Err(RejectCode::TooLarge);
    }
    if !text.starts_with('{') {
        return Err(RejectCode::NotAnObject);
    }
    let value = walk(text, limits.max_depth).map_err(|p| match p {
        Problem::TooDeep => RejectCode::TooDeep,
        Problem::Duplicate(_) => RejectCode::DuplicateKey,
        Problem::Unreadable => RejectCode::InvalidJson,
    })?;
    let obj = value.as_object().expect("an object");
    let event_type = match obj.get("type") {
        None => return Err(RejectCode::MissingType),
        Some(Value::String(t)) if TYPE_RE.is_match(t) => t.clone(),
        Some(_) => return Err(RejectCode::InvalidType),
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id))
            if (1..=128).contains(&id.chars().count()) && !id.chars().any(char::is_control) =>
        {
            Some(id.clone())
        }
        Some(_) => return Err(RejectCode::InvalidId),
    };
    let ts = match obj.get("ts") {
        None | Some(Value::Null) => None,
        Some(Value::String(ts)) => {
            Some(OffsetDateTime::parse(ts, &Rfc3339).map_err(|_| RejectCode::InvalidTs)?)
        }
        Some(_) => return Err(RejectCode::InvalidTs),
    };
    let partition = opts.partition_key_field.and_then(|f| match obj.get(f)? {
        Value::String(s) => Some(s.clone()),
        // A number is kept as written, so read the member's text.
        Value::Number(_) => {
            let raw = serde_json::from_str::<BTreeMap<String, &RawValue>>(text).ok()?;
            Some(raw.get(f)?.get().to_owned())
        }
        _ => None,
    });
    Ok(Fields {
        event_type,
        id,
        ts,
        partition: partition.filter(|p| !p.is_empty() && p.chars().count() <= 256),
    })
}

fn first_non_ws(b: &[u8]) -> Option<u8> {
    trim_ws(b).first().copied()
}

/// Parse `body` and check every item against the oracle. Panics (so proptest shrinks) on any
/// disagreement.
fn check(body: &[u8], media: MediaType, opts: &ParseOptions<'_>) {
    let got = parse_events(body, media, opts);
    let want = want_body(body, media, opts);
    let (items, want) = match (got, want) {
        (Err(e), Err(code)) => {
            // The array reader stops at `max_events + 1` items before reading the rest, so a
            // long array broken further on is refused as too long: still a body error.
            let early_stop = code == "invalid_json"
                && e.code() == "too_many_events"
                && media == MediaType::Json
                && first_non_ws(body) == Some(b'[');
            assert!(e.code() == code || early_stop, "got {e:?}, want {code}");
            assert_eq!(e.status(), status_of(e.code()));
            return;
        }
        (Ok(items), Ok(want)) => (items, want),
        (got, want) => panic!("got {got:?}\nwant {want:?}"),
    };
    assert_eq!(items.len(), want.len(), "item count");
    let span = body.as_ptr_range();
    for (item, (index, text)) in items.iter().zip(&want) {
        assert_eq!(item.index(), *index);
        match (item, want_item(text, media, opts)) {
            (ItemResult::Rejected(r), Err(code)) => assert_eq!(r.code, code, "{r:?}"),
            (ItemResult::Valid(ev), Ok(f)) => {
                // The raw text is the item's bytes, in place in the body, byte for byte.
                assert_eq!(ev.raw.as_bytes(), *text);
                assert!(
                    span.start <= ev.raw.as_ptr()
                        && ev.raw.as_bytes().as_ptr_range().end <= span.end
                );
                assert_eq!(ev.event_type, f.event_type);
                match &f.id {
                    Some(id) => assert_eq!((&*ev.id, ev.id_generated), (id.as_str(), false)),
                    None => {
                        assert!(ev.id_generated);
                        let u = uuid::Uuid::parse_str(&ev.id).expect("a uuid");
                        assert_eq!(u.get_version_num(), 7);
                    }
                }
                assert_eq!(ev.ts, f.ts);
                assert_eq!(ev.partition_value.as_deref(), f.partition.as_deref());
            }
            (got, want) => panic!("item {index} {text:?}: got {got:?}, want {want:?}"),
        }
    }
    serde_json_agrees(body, media, &items);
}

/// The properties stated directly on `serde_json::Value`: an accepted event reads as a `Value`,
/// the same one serde_json finds at its place in the whole body (or its line).
fn serde_json_agrees(body: &[u8], media: MediaType, items: &[ItemResult<'_>]) {
    let whole = match media {
        MediaType::Json => serde_json::from_slice::<Value>(body).ok().map(|v| match v {
            Value::Array(a) => a,
            Value::Object(o) if !o.contains_key("type") && o.contains_key("events") => o["events"]
                .as_array()
                .cloned()
                .expect("the wrapper holds an array"),
            other => vec![other],
        }),
        MediaType::Ndjson => None,
    };
    if let Some(whole) = &whole {
        assert_eq!(whole.len(), items.len());
    }
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    for item in items {
        let ItemResult::Valid(ev) = item else {
            continue;
        };
        let own = serde_json::from_str::<Value>(ev.raw).expect("an accepted event reads as JSON");
        let there = match &whole {
            Some(whole) => whole[ev.index].clone(),
            None if media == MediaType::Ndjson => {
                serde_json::from_slice::<Value>(lines[ev.index]).expect("its line reads as JSON")
            }
            None => continue,
        };
        assert_eq!(own, there);
    }
}

fn status_of(code: &str) -> u16 {
    match code {
        "body_too_large" | "too_many_events" => 413,
        _ => 400,
    }
}

/// The scanner's answer, restated: the walk's problem, or the top-level members as written.
fn want_scan<'a>(
    text: &'a str,
    max_depth: usize,
    field: Option<&str>,
) -> Result<Scanned<'a>, String> {
    walk(text, max_depth).map_err(|p| match p {
        Problem::TooDeep => "too deep".to_owned(),
        Problem::Duplicate(k) => format!("duplicate {:?}", truncate(&k, 64)),
        Problem::Unreadable => "unreadable".to_owned(),
    })?;
    let mut out = Scanned::default();
    if !trim_ws(text.as_bytes()).starts_with(b"{") {
        return Ok(out);
    }
    let members = serde_json::from_str::<Members<'a>>(text)
        .expect("an object")
        .0;
    for (k, v) in members {
        let v = v.get();
        let scalar = match v.as_bytes()[0] {
            b'"' => Scalar::Str(&v[1..v.len() - 1], v.contains('\\')),
            b'{' => Scalar::Other("object"),
            b'[' => Scalar::Other("array"),
            b't' | b'f' => Scalar::Other("boolean"),
            b'n' => Scalar::Null,
            _ => Scalar::Number(v),
        };
        match k.as_str() {
            "type" => out.event_type = scalar,
            "id" => out.id = scalar,
            "ts" => out.ts = scalar,
            k if Some(k) == field => out.partition = scalar,
            _ => {}
        }
    }
    Ok(out)
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

fn scan_verdict<'a>(
    text: &'a str,
    max_depth: usize,
    field: Option<&str>,
) -> Result<Scanned<'a>, String> {
    scan(text, max_depth, field, &mut Scratch::default()).map_err(|e| verdict(&e))
}

/// `scan` never panics; on a syntactically valid value it agrees with [`want_scan`].
/// `scan_value` (which checks the grammar) never panics either; where it finds a value, serde_json
/// reads that value's text, and both walks agree on it; on a whole text serde_json reads, it
/// finds the value, all of it, or the same problem as `scan`.
fn check_scan(text: &str, max_depth: usize, field: Option<&str>) {
    let got = scan_verdict(text, max_depth, field);
    let json = serde_json::from_str::<IgnoredAny>(text).is_ok();
    if json {
        assert_eq!(got, want_scan(text, max_depth, field), "{text:?}");
    }
    let strict = scan_value(text, max_depth, field, &mut Scratch::default());
    match strict {
        Ok((scanned, len)) => {
            let value = &text[..len];
            assert!(
                serde_json::from_str::<&RawValue>(value).is_ok(),
                "scan_value took {value:?} of {text:?}, which is not JSON"
            );
            assert_eq!(
                Ok(scanned),
                scan_verdict(value, max_depth, field),
                "{text:?}"
            );
            if json {
                assert_eq!(len, text.trim_end_matches([' ', '\t', '\n', '\r']).len());
            }
        }
        Err(ScanError::Syntax) => assert!(!json, "{text:?} is JSON"),
        Err(e) => {
            if json {
                assert_eq!(got, Err(verdict(&e)), "{text:?}");
            }
        }
    }
}

fn verdict(e: &ScanError) -> String {
    match e {
        ScanError::TooDeep => "too deep".to_owned(),
        ScanError::DuplicateKey(k) => format!("duplicate {k:?}"),
        ScanError::Unreadable(_) => "unreadable".to_owned(),
        ScanError::Syntax => "syntax".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// A JSON value to write out; strings hold their contents as written (escapes included).
#[derive(Debug, Clone)]
enum G {
    Raw(String),
    Str(String),
    Arr(Vec<G>),
    Obj(Vec<(String, G)>),
}

const WS: &[&str] = &[
    "", "", "", "", " ", "  ", "\t", "\r", "\n", "\r\n", " \n\t ",
];

/// Whitespace between tokens, cycling through proptest's picks.
struct Ws<'a> {
    picks: &'a [u8],
    at: usize,
    one_line: bool,
}

impl Ws<'_> {
    fn put(&mut self, out: &mut String) {
        let Some(p) = self.picks.get(self.at % self.picks.len().max(1)) else {
            return;
        };
        self.at += 1;
        let ws = WS[usize::from(*p) % WS.len()];
        out.push_str(&if self.one_line {
            ws.replace('\n', " ")
        } else {
            ws.to_owned()
        });
    }
}

fn write(g: &G, ws: &mut Ws<'_>, out: &mut String) {
    let string = |s: &str, out: &mut String| {
        out.push('"');
        out.push_str(s);
        out.push('"');
    };
    match g {
        G::Raw(t) => out.push_str(t),
        G::Str(s) => string(s, out),
        G::Arr(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                ws.put(out);
                if i > 0 {
                    out.push(',');
                    ws.put(out);
                }
                write(item, ws, out);
            }
            ws.put(out);
            out.push(']');
        }
        G::Obj(members) => {
            out.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                ws.put(out);
                if i > 0 {
                    out.push(',');
                    ws.put(out);
                }
                string(k, out);
                ws.put(out);
                out.push(':');
                ws.put(out);
                write(v, ws, out);
            }
            ws.put(out);
            out.push('}');
        }
    }
}

fn to_text(g: &G, picks: &[u8], one_line: bool) -> String {
    let mut out = String::new();
    write(
        g,
        &mut Ws {
            picks,
            at: 0,
            one_line,
        },
        &mut out,
    );
    out
}

fn hex4(u: u32, upper: bool) -> String {
    if upper {
        format!("\\u{u:04X}")
    } else {
        format!("\\u{u:04x}")
    }
}

/// A piece of a string's contents as written. Mostly valid; some lone surrogates (grammatical
/// but unreadable) and rarely a syntax error.
fn str_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        120 => "[a-z0-9 _.-]{1,4}",
        20 => any::<char>()
            .prop_filter("needs escaping", |c| !matches!(c, '"' | '\\') && *c >= ' ')
            .prop_map(String::from),
        20 => select(&["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"][..]).prop_map(String::from),
        20 => (0u32..0x10000, any::<bool>())
            .prop_filter("surrogate", |(u, _)| !(0xD800..0xE000).contains(u))
            .prop_map(|(u, up)| hex4(u, up)),
        10 => (0x10000u32..0x110000, any::<bool>()).prop_map(|(c, up)| {
            let c = c - 0x10000;
            hex4(0xD800 + (c >> 10), up) + &hex4(0xDC00 + (c & 0x3ff), up)
        }),
        1 => select(&["\\ud800", "\\uDBFF", "\\udc00", "\\uDFFF", "\\udc00\\ud800", "\\ud800\\u0041", "\\uD800\\n", "\\ud83dx"][..]).prop_map(String::from),
        1 => select(&["\\x", "\\u12", "\\U0041", "\u{1}", "\t", "\\", "\n"][..]).prop_map(String::from),
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop::collection::vec(str_piece(), 0..4).prop_map(|p| p.concat())
}

const NUMBERS: &[&str] = &[
    "-0",
    "-0.0",
    "0e0",
    "0E-0",
    "1E+2",
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623159e308",
    "1e309",
    "-1e400",
    "1e-400",
    "4.9e-324",
    "0e999999",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
];

fn number() -> impl Strategy<Value = String> {
    let written = (
        any::<bool>(),
        "0|[1-9][0-9]{0,20}",
        prop::option::of("[0-9]{1,6}"),
        prop::option::weighted(0.3, ("[eE]", "[+-]?", "[0-9]{1,2}")),
    )
        .prop_map(|(neg, int, frac, exp)| {
            let mut n = String::from(if neg { "-" } else { "" });
            n += &int;
            if let Some(f) = frac {
                n = n + "." + &f;
            }
            if let Some((e, s, d)) = exp {
                n = n + &e + &s + &d;
            }
            n
        });
    prop_oneof![
        40 => written,
        3 => select(NUMBERS).prop_map(String::from),
        1 => Just(format!("9{}", "0".repeat(400))),
        1 => select(&["01", "1.", ".5", "+1", "1e", "--1", "0x10", "NaN", "1e+"][..]).prop_map(String::from),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(&["a", "b", "x", "\\u0078", "type", "events", "id", "ts", "pk", ""][..]).prop_map(String::from),
        1 => string(),
    ]
}

/// The decoded key, to tell duplicates apart the way a reader does.
fn decoded(k: &str) -> String {
    serde_json::from_str::<String>(&format!("\"{k}\"")).unwrap_or_else(|_| k.to_owned())
}

/// Members with distinct keys, unless `dups`.
fn object(members: Vec<(String, G)>, dups: bool) -> G {
    let mut seen = std::collections::HashSet::new();
    G::Obj(
        members
            .into_iter()
            .filter(|(k, _)| dups || seen.insert(decoded(k)))
            .collect(),
    )
}

fn value() -> impl Strategy<Value = G> {
    let leaf = prop_oneof![
        select(&["null", "true", "false"][..]).prop_map(|s| G::Raw(s.into())),
        number().prop_map(G::Raw),
        string().prop_map(G::Str),
    ];
    leaf.prop_recursive(6, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(G::Arr),
            (
                prop::collection::vec((key(), inner), 0..4),
                prop::bool::weighted(0.1)
            )
                .prop_map(|(m, dups)| object(m, dups)),
        ]
    })
}

fn raw(choices: &'static [&'static str]) -> impl Strategy<Value = G> {
    select(choices).prop_map(|s| G::Raw(s.into()))
}

/// An event object: mostly well-formed, with members at and past every per-item rule.
fn event() -> impl Strategy<Value = G> {
    let type_value = prop_oneof![
        6 => raw(&["\"page_view\"", "\"a\"", "\"a.b-c_9\"", "\"page\\u005fview\""]),
        1 => Just(G::Str(format!("a{}", "b".repeat(63)))),
        2 => raw(&["\"Page\"", "\"\"", "\"1a\"", "\"a b\"", "\"\\u00e9\"", "null", "1", "true", "[\"a\"]", "{}"]),
        1 => Just(G::Str(format!("a{}", "b".repeat(64)))),
    ];
    let id_value = prop_oneof![
        4 => string().prop_map(G::Str),
        1 => raw(&["null", "\"\"", "\"a\\u0001\"", "12", "{}"]),
        1 => Just(G::Str("i".repeat(128))),
        1 => Just(G::Str("é".repeat(129))),
    ];
    let ts_value = raw(&[
        "\"2026-11-25T19:55:17.5+02:00\"",
        "\"2026-11-25T19:55:17Z\"",
        "\"2026-11-25T19:55:17\\u002e25Z\"",
        "\"2026-13-01T00:00:00Z\"",
        "\"yesterday\"",
        "null",
        "1732564517",
    ]);
    let pk_value = prop_oneof![
        3 => string().prop_map(G::Str),
        2 => number().prop_map(G::Raw),
        1 => raw(&["{}", "[1]", "true", "null", "\"\""]),
        1 => Just(G::Str("u".repeat(257))),
    ];
    let named = |names: &'static [&'static str], v: BoxedStrategy<G>| {
        prop::option::weighted(0.5, (select(names).prop_map(String::from), v))
    };
    (
        prop::option::weighted(
            0.9,
            (
                select(&["type", "\\u0074ype", "typ\\u0065"][..]),
                type_value,
            ),
        ),
        named(&["id", "\\u0069d"], id_value.boxed()),
        named(&["ts", "t\\u0073"], ts_value.boxed()),
        named(&["pk", "p\\u006b"], pk_value.boxed()),
        prop::collection::vec((key(), value()), 0..4),
        prop::bool::weighted(0.1),
    )
        .prop_flat_map(|(t, id, ts, pk, rest, dups)| {
            let mut m: Vec<(String, G)> = t.map(|(k, v)| (k.to_owned(), v)).into_iter().collect();
            m.extend(id);
            m.extend(ts);
            m.extend(pk);
            m.extend(rest);
            (Just(m).prop_shuffle(), Just(dups))
        })
        .prop_map(|(m, dups)| object(m, dups))
}

#[derive(Debug, Clone)]
enum Form {
    Array,
    Single,
    Wrapper {
        extra: bool,
        escaped_key: bool,
    },
    Ndjson {
        crlf: bool,
        trailing: bool,
        blanks: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Case {
    form: Form,
    items: Vec<G>,
    ws: Vec<u8>,
    opts: (Limits, Option<&'static str>),
}

impl Case {
    fn media(&self) -> MediaType {
        match self.form {
            Form::Ndjson { .. } => MediaType::Ndjson,
            _ => MediaType::Json,
        }
    }

    fn body(&self) -> Vec<u8> {
        let pad = |i: usize| WS[usize::from(self.ws.get(i).copied().unwrap_or(0)) % WS.len()];
        let array = || {
            let texts: Vec<String> = self
                .items
                .iter()
                .map(|g| to_text(g, &self.ws, false))
                .collect();
            format!(
                "[{}{}{}]",
                pad(1),
                texts.join(&format!("{},{}", pad(2), pad(3))),
                pad(4)
            )
        };
        let out = match &self.form {
            Form::Array => format!("{}{}{}", pad(5), array(), pad(6)),
            Form::Single => match self.items.first() {
                Some(g) => format!("{}{}{}", pad(5), to_text(g, &self.ws, false), pad(6)),
                None => pad(5).to_owned(),
            },
            Form::Wrapper { extra, escaped_key } => format!(
                "{{{}\"{}\"{}:{}{}{}}}",
                pad(1),
                if *escaped_key {
                    "\\u0065vents"
                } else {
                    "events"
                },
                pad(2),
                array(),
                if *extra { ",\"n\":1" } else { "" },
                pad(3),
            ),
            Form::Ndjson {
                crlf,
                trailing,
                blanks,
            } => {
                let blank = ["", " ", "\t", "\r", " \t "];
                let mut lines = Vec::new();
                for (i, g) in self.items.iter().enumerate() {
                    if let Some(b) = blanks.get(i).filter(|b| **b % 3 == 0) {
                        lines.push(blank[usize::from(*b) % blank.len()].to_owned());
                    }
                    lines.push(to_text(g, &self.ws, true));
                }
                let nl = if *crlf { "\r\n" } else { "\n" };
                lines.join(nl) + if *trailing { nl } else { "" }
            }
        };
        out.into_bytes()
    }

    fn opts(&self) -> ParseOptions<'static> {
        ParseOptions {
            limits: self.opts.0,
            partition_key_field: self.opts.1,
        }
    }
}

fn limits() -> impl Strategy<Value = (Limits, Option<&'static str>)> {
    (
        prop_oneof![1 => Just(500), 2 => 1usize..=7],
        prop_oneof![3 => Just(256 * 1024), 1 => 8usize..300],
        prop_oneof![2 => Just(32), 1 => 1usize..=6],
        prop::option::of(select(&["pk", "type", "id", "ts", "a"][..])),
    )
        .prop_map(|(max_events, max_event_bytes, max_depth, field)| {
            let limits = Limits {
                max_events,
                max_event_bytes,
                max_depth,
                ..Limits::default()
            };
            (limits, field)
        })
}

fn case() -> impl Strategy<Value = Case> {
    let form = prop_oneof![
        3 => Just(Form::Array),
        2 => Just(Form::Single),
        1 => (prop::bool::weighted(0.2), any::<bool>())
            .prop_map(|(extra, escaped_key)| Form::Wrapper { extra, escaped_key }),
        3 => (any::<bool>(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..7))
            .prop_map(|(crlf, trailing, blanks)| Form::Ndjson { crlf, trailing, blanks }),
    ];
    let item = prop_oneof![8 => event(), 1 => value()];
    (
        form,
        prop::collection::vec(item, 0..7),
        prop::collection::vec(any::<u8>(), 0..12),
        limits(),
    )
        .prop_map(|(form, items, ws, opts)| Case {
            form,
            items,
            ws,
            opts,
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Flip(Index, u8),
    Insert(Index, &'static [u8]),
    Delete(Index),
    Bom,
    Append(&'static [u8]),
}

const INSERTS: &[&[u8]] = &[
    b",",
    b"]",
    b"}",
    b"[",
    b"{",
    b"\"",
    b"\\",
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xef\xbb\xbf",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"-",
    b"e",
    b"1",
    b"null",
    b",]",
    b"\\ud800",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
        (any::<Index>(), select(INSERTS)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
        Just(Mutation::Bom),
        select(INSERTS).prop_map(Mutation::Append),
    ]
}

fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let at = |i: &Index, len: usize| i.index(len + 1);
        match m {
            Mutation::Truncate(i) => body.truncate(at(i, body.len())),
            Mutation::Flip(i, mask) if !body.is_empty() => {
                let i = i.index(body.len());
                body[i] ^= mask;
            }
            Mutation::Insert(i, b) => {
                let i = at(i, body.len());
                body.splice(i..i, b.iter().copied());
            }
            Mutation::Delete(i) if !body.is_empty() => {
                body.remove(i.index(body.len()));
            }
            Mutation::Bom => {
                body.splice(0..0, *b"\xef\xbb\xbf");
            }
            Mutation::Append(b) => body.extend_from_slice(b),
            Mutation::Flip(..) | Mutation::Delete(_) => {}
        }
    }
    body
}

/// 512 cases per property keeps the file to a few seconds; `PROPTEST_CASES` searches longer.
fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_bodies_agree_with_the_oracle(case in case(), cap in 0u8..4) {
        let body = case.body();
        let mut opts = case.opts();
        // At and one byte past the body limit, sometimes.
        opts.limits.max_body_bytes = match cap {
            0 => body.len(),
            1 => body.len().saturating_sub(1),
            _ => opts.limits.max_body_bytes,
        };
        check(&body, case.media(), &opts);
    }

    #[test]
    fn corrupted_bodies_agree_with_the_oracle(
        case in case(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let body = mutate(case.body(), &mutations);
        for media in [MediaType::Json, MediaType::Ndjson] {
            check(&body, media, &case.opts());
        }
    }

    #[test]
    fn arbitrary_bytes_agree_with_the_oracle(body in prop::collection::vec(any::<u8>(), 0..64)) {
        for media in [MediaType::Json, MediaType::Ndjson] {
            check(&body, media, &ParseOptions::default());
        }
    }

    #[test]
    fn scan_agrees_with_the_oracle(
        g in prop_oneof![3 => event(), 1 => value()],
        ws in prop::collection::vec(any::<u8>(), 0..8),
        max_depth in 0usize..8,
        field in prop::option::of(select(&["pk", "type", "a", "x"][..])),
        mutations in prop::collection::vec(mutation(), 0..2),
    ) {
        let text = to_text(&g, &ws, false);
        check_scan(&text, max_depth, field);
        let broken = mutate(text.into_bytes(), &mutations);
        check_scan(&String::from_utf8_lossy(&broken), max_depth, field);
    }

    #[test]
    fn scan_never_panics(text in ".{0,40}", max_depth in 0usize..4) {
        check_scan(&text, max_depth, Some("pk"));
    }
}

fn items(body: &str, media: MediaType) -> Vec<ItemResult<'_>> {
    parse_events(body.as_bytes(), media, &ParseOptions::default()).expect("a body")
}

fn code(item: &ItemResult<'_>) -> Option<RejectCode> {
    match item {
        ItemResult::Valid(_) => None,
        ItemResult::Rejected(r) => Some(r.code),
    }
}

/// Found by the differential (without the check in `scan`, the generated-bodies property fails
/// within a handful of cases): serde_json's `RawValue` skips `\u` escapes without pairing
/// surrogates, so an event holding a lone one was accepted (and its `id` kept as the escape's
/// text) though serde_json, and so the loader, cannot read it.
#[test]
fn lone_surrogates_are_rejected_items() {
    for s in [
        r#""\ud800""#,
        r#""\uDBFF""#,
        r#""\udc00""#,
        r#""a\udc00\ud800""#,
        r#""\ud800\u0041""#,
        r#""\uD800\n""#,
        r#""\ud83dx""#,
    ] {
        for body in [
            format!(r#"[{{"type":"a","s":{s}}},{{"type":"b"}}]"#),
            format!(r#"[{{"type":"a","id":{s}}},{{"type":"b"}}]"#),
            format!(r#"[{{"type":"a","o":{{{s}:1}}}},{{"type":"b"}}]"#),
        ] {
            let got = items(&body, MediaType::Json);
            assert_eq!(code(&got[0]), Some(RejectCode::InvalidJson), "{body}");
            assert_eq!(code(&got[1]), None, "the other items go through");
            check(body.as_bytes(), MediaType::Json, &ParseOptions::default());
        }
        let single = format!(r#"{{"type":"a","s":[{s}]}}"#);
        assert_eq!(
            code(&items(&single, MediaType::Json)[0]),
            Some(RejectCode::InvalidJson)
        );
        let nd = format!("{{\"type\":\"a\"}}\n{{\"type\":\"a\",\"s\":{s}}}\n");
        let got = items(&nd, MediaType::Ndjson);
        assert_eq!(
            (code(&got[0]), code(&got[1])),
            (None, Some(RejectCode::InvalidJson))
        );
    }
    // A top-level key is read by the shape probe: there a lone surrogate fails the body.
    let e = parse_events(
        br#"{"type":"a","\ud800":1}"#,
        MediaType::Json,
        &ParseOptions::default(),
    );
    assert_eq!(e.unwrap_err().code(), "invalid_json");
    // Paired surrogates, either case, and an escaped backslash before `ud800` are fine.
    for s in [
        r#""\ud83d\ude00""#,
        r#""\uD83D\uDE00""#,
        r#""\\ud800""#,
        r#""\\uD800""#,
    ] {
        let body = format!(r#"{{"type":"a","id":{s},{s}:{s}}}"#);
        assert_eq!(code(&items(&body, MediaType::Json)[0]), None, "{body}");
        check(body.as_bytes(), MediaType::Json, &ParseOptions::default());
    }
}

/// Found by the differential, like the lone surrogates: `RawValue` checks a number's grammar but
/// not its range; serde_json refuses one beyond `f64` when it reads it.
#[test]
fn numbers_beyond_f64_are_rejected_items() {
    let huge = format!("9{}", "0".repeat(400));
    for n in ["1e400", "-1E+309", "1.7976931348623159e308", huge.as_str()] {
        let body = format!(r#"[{{"type":"a","n":[{n}]}},{{"type":"a","pk":{n}}}]"#);
        let got = items(&body, MediaType::Json);
        assert_eq!(code(&got[0]), Some(RejectCode::InvalidJson), "{n}");
        assert_eq!(code(&got[1]), Some(RejectCode::InvalidJson), "{n}");
    }
    let opts = ParseOptions {
        partition_key_field: Some("pk"),
        ..ParseOptions::default()
    };
    for n in [
        "1e-400",
        "1.7976931348623157e308",
        "-0",
        "18446744073709551616",
        "0e999999",
        "1E+2",
    ] {
        let body = format!(r#"{{"type":"a","pk":{n}}}"#);
        let got = parse_events(body.as_bytes(), MediaType::Json, &opts).expect("a body");
        let ItemResult::Valid(ev) = &got[0] else {
            panic!("{n}: {got:?}")
        };
        assert_eq!(ev.partition_value.as_deref(), Some(n), "kept as written");
    }
}

/// Every prefix of every form, and every single byte removed: never a panic, always the oracle.
#[test]
fn truncation_and_deletion_at_every_byte() {
    let event = r#"{"type":"a.b","id":"\u0069-\"1\"","ts":"2026-11-25T19:55:17Z","pk":-1.5e3,"x":[true,false,null,{"k":"\ud83d\ude00"}]}"#;
    let bodies = [
        (
            format!(" [{event} , {{\"type\":\"b\"}}]\n"),
            MediaType::Json,
        ),
        (format!("\t{event}\r\n"), MediaType::Json),
        (format!("{{\"events\":[{event}]}}"), MediaType::Json),
        (
            format!("{event}\r\n\n{{\"type\":\"b\"}}\n"),
            MediaType::Ndjson,
        ),
    ];
    let opts = ParseOptions {
        partition_key_field: Some("pk"),
        ..ParseOptions::default()
    };
    for (body, media) in &bodies {
        let b = body.as_bytes();
        for n in 0..=b.len() {
            check(&b[..n], *media, &opts);
            let mut cut = b.to_vec();
            if n < b.len() {
                cut.remove(n);
                check(&cut, *media, &opts);
            }
        }
    }
    for n in 0..=event.len() {
        if let Some(prefix) = event.get(..n) {
            for depth in [0, 1, 2, 32] {
                check_scan(prefix, depth, Some("pk"));
            }
        }
    }
}

/// The walk is only documented for valid JSON, but it is public and reads client bytes: it must
/// not panic or loop on anything.
#[test]
fn scan_survives_broken_text() {
    for text in [
        "",
        "\"",
        "\"abc",
        "\"a\\",
        "\"a\\\"",
        "{\"a",
        "{\"a\" ",
        "{\"a\":",
        "{\"a\" :",
        "1",
        "-",
        "1e",
        "tru",
        "n",
        "}",
        "]]]",
        "}{",
        "{\"\\u",
        "{\"\\ud800",
        "[\"\\ud800\":",
        "{\"a\":1",
        "{\"a\":1,\"a\"",
        "{\"type\":\"a\",\"type\":",
        ":::",
        "\"\\",
        "{\"a\":\"\\",
    ] {
        for depth in [0, 1, 32] {
            let _ = scan_verdict(text, depth, Some("a"));
        }
    }
}

/// The walk's own answers, where the oracle's `Value` cannot tell them apart.
#[test]
fn scan_reports_members_as_written() {
    let text = r#"{ "type" : "a\"b" , "id":{"type":"x"}, "ts":[1], "pk" :-0.0E+1,"q":true }"#;
    let got = scan(text, 4, Some("pk"), &mut Scratch::default()).expect("valid");
    assert_eq!(got.event_type, Scalar::Str(r#"a\"b"#, true));
    assert_eq!(got.id, Scalar::Other("object"));
    assert_eq!(got.ts, Scalar::Other("array"));
    assert_eq!(got.partition, Scalar::Number("-0.0E+1"));
    let got = scan(
        r#"{"id":null,"ts":false,"type":"t"}"#,
        1,
        None,
        &mut Scratch::default(),
    );
    let got = got.expect("valid");
    assert_eq!(
        (got.id, got.ts, got.event_type),
        (
            Scalar::Null,
            Scalar::Other("boolean"),
            Scalar::Str("t", false)
        )
    );
    // Depth is counted on both kinds of bracket; the limit itself is allowed.
    assert!(scan("[[{}]]", 3, None, &mut Scratch::default()).is_ok());
    assert_eq!(
        scan("[[{}]]", 2, None, &mut Scratch::default()),
        Err(ScanError::TooDeep)
    );
    assert_eq!(
        scan("{}", 0, None, &mut Scratch::default()),
        Err(ScanError::TooDeep)
    );
    // A duplicate is found in the object that holds it, whatever sits between.
    let dup = r#"{"k":[{"a":1,"b":{"a":2},"a":3}],"k2":1}"#;
    assert_eq!(
        scan(dup, 8, None, &mut Scratch::default()),
        Err(ScanError::DuplicateKey("a".into()))
    );
    let long = "é".repeat(70);
    let dup = format!(r#"{{"{long}":1,"{long}":2}}"#);
    let want = format!("{}…", "é".repeat(64));
    assert_eq!(
        scan(&dup, 8, None, &mut Scratch::default()),
        Err(ScanError::DuplicateKey(want))
    );
}

// ---------------------------------------------------------------------------------------------
// Content decoding
// ---------------------------------------------------------------------------------------------

/// Inflated bytes, or the `BodyError` code.
type Inflated = Result<Vec<u8>, &'static str>;

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    enc.write_all(bytes).expect("in memory");
    enc.finish().expect("in memory")
}

/// flate2 read to the end, outside the code under test: all members, the output measured as it
/// comes so the cap applies before an error further on.
fn flate2_says(compressed: &[u8], max: usize) -> Inflated {
    if compressed.len() > max {
        return Err("body_too_large");
    }
    let mut dec = flate2::read::MultiGzDecoder::new(compressed);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return Err("invalid_compression"),
        }
        if out.len() > max {
            return Err("body_too_large");
        }
    }
}

fn decode_says(compressed: &[u8], max: usize) -> Inflated {
    let limits = Limits {
        max_body_bytes: max,
        ..Limits::default()
    };
    decode_body(compressed, Some("gzip"), &limits)
        .map(|c| c.into_owned())
        .map_err(|e| e.code())
}

proptest! {
    #![proptest_config(Config { cases: config().cases / 2, ..config() })]

    #[test]
    fn gzip_agrees_with_flate2(
        case in case(),
        splits in prop::collection::vec(any::<Index>(), 0..3),
        level in 0u32..10,
        mutations in prop::collection::vec(mutation(), 0..2),
        cap in 0u8..3,
    ) {
        let payload = case.body();
        let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(payload.len() + 1)).collect();
        cuts.sort_unstable();
        let mut members = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([payload.len()]) {
            members.extend(gzip(&payload[from..cut], level));
            from = cut;
        }
        let compressed = mutate(members, &mutations);
        let max = match cap {
            0 => payload.len(),
            1 => payload.len().saturating_sub(1),
            _ => 1 << 20,
        };
        let got = decode_says(&compressed, max);
        prop_assert_eq!(&got, &flate2_says(&compressed, max));
        if mutations.is_empty() && max >= payload.len().max(compressed.len()) {
            prop_assert_eq!(got, Ok(payload));
        }
    }
}

#[test]
fn gzip_edge_cases() {
    let max = 1000;
    let nd = b"{\"type\":\"a\"}\n";
    let cases: Vec<(&str, Vec<u8>, Inflated)> = vec![
        ("no bytes at all", vec![], Err("invalid_compression")),
        ("an empty member", gzip(b"", 6), Ok(vec![])),
        (
            "two members",
            [gzip(nd, 1), gzip(nd, 9)].concat(),
            Ok(nd.repeat(2)),
        ),
        (
            "an empty member between",
            [gzip(nd, 6), gzip(b"", 6), gzip(nd, 0)].concat(),
            Ok(nd.repeat(2)),
        ),
        (
            "garbage after a member",
            [gzip(nd, 6), b"x".to_vec()].concat(),
            Err("invalid_compression"),
        ),
        (
            "zero padding after a member",
            [gzip(nd, 6), vec![0; 8]].concat(),
            Err("invalid_compression"),
        ),
        (
            "only the magic",
            b"\x1f\x8b".to_vec(),
            Err("invalid_compression"),
        ),
        ("plain JSON", nd.to_vec(), Err("invalid_compression")),
        (
            "over the cap",
            gzip(&vec![b' '; max + 1], 6),
            Err("body_too_large"),
        ),
        ("at the cap", gzip(&vec![b' '; max], 6), Ok(vec![b' '; max])),
        (
            "members adding up past the cap",
            [gzip(&[b' '; 600], 6), gzip(&[b' '; 401], 6)].concat(),
            Err("body_too_large"),
        ),
    ];
    for (what, compressed, want) in cases {
        assert_eq!(decode_says(&compressed, max), want, "{what}");
        assert_eq!(flate2_says(&compressed, max), want, "flate2: {what}");
    }
    // A gzip body that inflates to nothing is an empty body, not an error of its own.
    let empty = decode_says(&gzip(b"", 6), max).expect("inflates");
    let e = parse_events(&empty, MediaType::Json, &ParseOptions::default()).unwrap_err();
    assert_eq!(e, BodyError::Empty);
    // Concatenated members carry events from each.
    let two =
        decode_says(&[gzip(nd, 6), gzip(b"{\"type\":\"b\"}", 6)].concat(), max).expect("inflates");
    assert_eq!(
        items(std::str::from_utf8(&two).expect("utf8"), MediaType::Ndjson).len(),
        2
    );
}

#[test]
fn truncated_gzip_is_never_accepted() {
    let payload = br#"[{"type":"a","p":"some text to compress"}]"#;
    let whole = [gzip(payload, 6), gzip(payload, 6)].concat();
    let one = gzip(payload, 6).len();
    for n in 0..whole.len() {
        let got = decode_says(&whole[..n], 1 << 20);
        assert_eq!(got, flate2_says(&whole[..n], 1 << 20), "prefix {n}");
        // A cut exactly between members is a complete first member.
        if n == one {
            assert_eq!(got, Ok(payload.to_vec()));
        } else {
            assert_eq!(got, Err("invalid_compression"), "prefix {n}");
        }
    }
}

#[test]
fn gzip_bombs_stop_at_the_cap() {
    let limits = Limits {
        max_body_bytes: 1 << 20,
        ..Limits::default()
    };
    // 64 MiB of zeros in ~64 KiB; the cap must stop inflation, not allocate it.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        enc.write_all(&zeros).expect("in memory");
    }
    let bomb = enc.finish().expect("in memory");
    assert!(bomb.len() < 100 * 1024);
    let too_large = BodyError::TooLarge { max: 1 << 20 };
    assert_eq!(
        decode_body(&bomb, Some("gzip"), &limits),
        Err(too_large.clone())
    );
    // Many small members, and a bomb inside a bomb.
    let members = gzip(&vec![0u8; 64 * 1024], 9).repeat(20);
    assert_eq!(
        decode_body(&members, Some("x-gzip"), &limits),
        Err(too_large.clone())
    );
    let nested = gzip(&bomb, 9);
    assert_eq!(
        decode_body(&nested, Some("gzip, gzip"), &limits),
        Err(too_large.clone())
    );
    assert_eq!(too_large.status(), 413);
}

#[test]
fn content_encodings() {
    let limits = Limits::default();
    let body = br#"{"type":"a"}"#;
    let packed = gzip(body, 6);
    for enc in [None, Some(""), Some("identity"), Some(" Identity ")] {
        assert_eq!(
            decode_body(body, enc, &limits).as_deref(),
            Ok(&body[..]),
            "{enc:?}"
        );
    }
    for enc in [
        "gzip",
        "GZIP",
        " x-gzip ",
        "identity, gzip",
        "gzip,identity",
    ] {
        assert_eq!(
            decode_body(&packed, Some(enc), &limits).as_deref(),
            Ok(&body[..]),
            "{enc}"
        );
    }
    for enc in [
        "br",
        "deflate",
        "compress",
        "zstd",
        "gzip, br",
        "gzip;q=1.0",
        "gzip gzip",
    ] {
        let e = decode_body(&packed, Some(enc), &limits).unwrap_err();
        assert_eq!(
            (e.code(), e.status()),
            ("unsupported_content_encoding", 415),
            "{enc}"
        );
    }
    // Gzip bytes sent without saying so are a body that is not UTF-8, not something inflated.
    let raw = decode_body(&packed, None, &limits).expect("identity");
    let e = parse_events(&raw, MediaType::Json, &ParseOptions::default()).unwrap_err();
    assert_eq!(e.code(), "invalid_utf8");
    // Saying gzip over plain JSON is a compression error.
    let e = decode_body(body, Some("gzip"), &limits).unwrap_err();
    assert_eq!((e.code(), e.status()), ("invalid_compression", 400));
}

/// Kills a mutant the generators missed: a wrapper with `events` twice is ambiguous, not the
/// last (or first) batch.
#[test]
fn wrapper_with_events_twice_is_refused() {
    for body in [
        r#"{"events":[{"type":"a"}],"events":[{"type":"b"}]}"#,
        r#"{"events":[{"type":"a"}],"\u0065vents":[]}"#,
    ] {
        let e = parse_events(body.as_bytes(), MediaType::Json, &ParseOptions::default());
        assert_eq!(e.unwrap_err().code(), "invalid_body", "{body}");
        check(body.as_bytes(), MediaType::Json, &ParseOptions::default());
    }
}
