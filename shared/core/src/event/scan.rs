//! The event scanner: one iterative walk over an event's JSON text that measures nesting depth,
//! finds duplicate keys and values serde_json would refuse to read, and picks up the top-level
//! members validation needs (`type`, `id`, `ts`, the partition-key field) — all without
//! recursion on client input and without building a `Value`.

use std::borrow::Cow;

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
    pub(super) fn string(self) -> Option<Cow<'a, str>> {
        match self {
            Scalar::Str(s, false) => Some(Cow::Borrowed(s)),
            Scalar::Str(s, true) => Some(Cow::Owned(unescape(s))),
            _ => None,
        }
    }

    /// What the value is, for messages ("string", "number", "null", …).
    pub(super) fn kind(self) -> &'static str {
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
// Long on purpose: one byte loop; its state (frames, keys, pending slot) would cross any cut.
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

/// `s` cut to `max_chars` characters, with `…` when cut (for values quoted in messages).
pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// JSON whitespace (RFC 8259) — also what NDJSON treats as a blank line.
pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}
