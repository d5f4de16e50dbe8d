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
                let (j, escapes) = string_end(b, start);
                let s = raw.get(start..j.min(b.len())).unwrap_or_default();
                // RawValue skips `\u` escapes without pairing surrogates; reading the string
                // refuses a lone one.
                if escapes == Escapes::MaybeSurrogate && unescape_strict(s).is_none() {
                    return Err(ScanError::Unreadable("a lone UTF-16 surrogate escape"));
                }
                let escaped = escapes != Escapes::None;
                i = j + 1;
                let mut k = i;
                while k < b.len() && is_ws(b[k]) {
                    k += 1;
                }
                // (The whitespace and the colon are then skipped by the catch-all arm.)
                if k < b.len() && b[k] == b':' {
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
                    keys.sort_unstable();
                    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                        return Err(ScanError::DuplicateKey(truncate(&w[0], 64)));
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
                if may_overflow(n) && serde_json::from_str::<f64>(n).is_err() {
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

/// What the escapes of one string are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escapes {
    /// No backslash: the text is the value.
    None,
    /// Escapes, none of them `\uD…` (so no surrogate half).
    Some,
    /// A `\uD…` escape, which may be half of a UTF-16 surrogate pair.
    MaybeSurrogate,
}

/// The index of the quote closing the string whose text starts at `start` (or past the end when
/// it is unterminated), and what escapes it holds. Jumps from quote or backslash to the next
/// with `memchr`, since most of an event's bytes are string text.
fn string_end(b: &[u8], start: usize) -> (usize, Escapes) {
    let mut j = start;
    let mut escapes = Escapes::None;
    while let Some(at) = b
        .get(j..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        j += at;
        if b[j] == b'"' {
            return (j, escapes);
        }
        // Only `\uD800`–`\uDFFF` are surrogate halves; all start `\ud` or `\uD`.
        if b.get(j + 1) == Some(&b'u') && matches!(b.get(j + 2), Some(b'd' | b'D')) {
            escapes = Escapes::MaybeSurrogate;
        } else if escapes == Escapes::None {
            escapes = Escapes::Some;
        }
        j += 2;
    }
    (b.len(), escapes)
}

/// Longest number text that needs no range check without an exponent: its integer part has at
/// most this many digits, so it is below 1e308 < `f64::MAX`.
const SAFE_NUMBER_CHARS: usize = 308;

/// Whether the number text `n` might lie beyond an `f64` (so serde_json must be asked): it has
/// an exponent or is too long to be safe.
fn may_overflow(n: &str) -> bool {
    n.len() > SAFE_NUMBER_CHARS || n.bytes().any(|c| matches!(c, b'e' | b'E'))
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
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}

/// JSON whitespace (RFC 8259) — also what NDJSON treats as a blank line.
pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(text: &str) -> (usize, Escapes) {
        string_end(text.as_bytes(), 0)
    }

    #[test]
    fn string_end_finds_the_closing_quote_past_escapes() {
        assert_eq!(end(r#"abc""#), (3, Escapes::None));
        assert_eq!(end(r#"""#), (0, Escapes::None));
        assert_eq!(end(r#"a\"b"x"#), (4, Escapes::Some));
        assert_eq!(end(r#"a\\"x"#), (3, Escapes::Some));
        assert_eq!(end(r#"\n\t\u0041""#), (10, Escapes::Some));
        // Text before `start` is not looked at.
        assert_eq!(string_end(br#""ab"cd""#, 4), (6, Escapes::None));
    }

    #[test]
    fn string_end_names_possible_surrogate_halves() {
        assert_eq!(end(r#"\ud800""#), (6, Escapes::MaybeSurrogate));
        assert_eq!(end(r#"\uDC00""#), (6, Escapes::MaybeSurrogate));
        assert_eq!(end(r#"\n\ud83d\ude00\t""#), (16, Escapes::MaybeSurrogate));
        // An escaped backslash before `ud800` is text, not an escape.
        assert_eq!(end(r#"\\ud800""#), (7, Escapes::Some));
        assert_eq!(end(r#"\u00d8""#), (6, Escapes::Some));
        assert_eq!(end(r#"\d""#), (2, Escapes::Some));
    }

    #[test]
    fn string_end_of_unterminated_text_is_the_end() {
        assert_eq!(end("abc"), (3, Escapes::None));
        assert_eq!(end(r"abc\"), (4, Escapes::Some));
        assert_eq!(end(r#"ab\""#), (4, Escapes::Some));
        assert_eq!(end(r"\u"), (2, Escapes::Some));
        assert_eq!(end(r"\ud"), (3, Escapes::MaybeSurrogate));
        assert_eq!(end(""), (0, Escapes::None));
        assert_eq!(string_end(b"ab", 5), (2, Escapes::None));
    }

    #[test]
    fn only_exponents_and_long_numbers_need_the_range_check() {
        for n in ["0", "-1", "123.456", "-0.0", "18446744073709551616"] {
            assert!(!may_overflow(n), "{n}");
        }
        for n in ["1e400", "1E400", "1e5", "-2.5E-3", "1e+0"] {
            assert!(may_overflow(n), "{n}");
        }
        let nines = |k: usize| "9".repeat(k);
        assert!(!may_overflow(&nines(SAFE_NUMBER_CHARS)));
        assert!(may_overflow(&nines(SAFE_NUMBER_CHARS + 1)));
    }

    #[test]
    fn scalars_name_their_kind_and_give_their_string() {
        let kinds = [
            (Scalar::Absent, "absent"),
            (Scalar::Str("a", false), "string"),
            (Scalar::Number("1"), "number"),
            (Scalar::Null, "null"),
            (Scalar::Other("boolean"), "boolean"),
        ];
        for (scalar, kind) in kinds {
            assert_eq!(scalar.kind(), kind);
        }
        assert_eq!(
            Scalar::Str(r"a\nb", false).string().as_deref(),
            Some(r"a\nb")
        );
        assert_eq!(Scalar::Str(r"a\nb", true).string().as_deref(), Some("a\nb"));
        assert_eq!(Scalar::Number("1").string(), None);
    }

    fn scanned(text: &str) -> Result<Scanned<'_>, ScanError> {
        scan(text, 8, None, &mut Scratch::default())
    }

    #[test]
    fn numbers_beyond_an_f64_are_unreadable_and_others_are_not() {
        let unreadable = Err(ScanError::Unreadable("a number beyond the range of an f64"));
        assert_eq!(scanned(r#"{"a":1e400}"#), unreadable);
        assert_eq!(scanned(r#"{"a":-1E309}"#), unreadable);
        let long = format!(r#"{{"a":{}}}"#, "9".repeat(SAFE_NUMBER_CHARS + 1));
        assert_eq!(scanned(&long), unreadable);
        let safe = format!(r#"{{"a":{}}}"#, "9".repeat(SAFE_NUMBER_CHARS));
        assert!(scanned(&safe).is_ok());
        assert!(scanned(r#"{"a":1e308,"b":-1.7e308,"c":1e-400}"#).is_ok());
    }

    #[test]
    fn lone_surrogates_are_unreadable_and_pairs_are_not() {
        let unreadable = Err(ScanError::Unreadable("a lone UTF-16 surrogate escape"));
        assert_eq!(scanned(r#"{"a":"\ud800"}"#), unreadable);
        assert_eq!(scanned(r#"{"a":"x\uDFFFy"}"#), unreadable);
        assert_eq!(scanned(r#"{"\ud800":1}"#), unreadable);
        assert_eq!(scanned(r#"{"a":"\n\ude00\ud83d"}"#), unreadable);
        let pair = scanned(r#"{"type":"\ud83d\ude00","b":"\\ud800"}"#).expect("a pair");
        assert_eq!(pair.event_type, Scalar::Str(r"\ud83d\ude00", true));
        assert_eq!(
            pair.event_type.string().as_deref(),
            Some("\u{1f600}"),
            "unescaped"
        );
    }

    #[test]
    fn members_after_escaped_strings_are_still_found() {
        let got =
            scanned(r#"{"a":"x\\","b\"":"\"","ty\u0070e":"t","id" :"\u0069"}"#).expect("valid");
        assert_eq!(got.event_type, Scalar::Str("t", false));
        assert_eq!(got.id, Scalar::Str(r"\u0069", true));
        assert_eq!(got.id.string().as_deref(), Some("i"));
        let dup = scanned(r#"{"a":1,"\u0061":2}"#);
        assert_eq!(dup, Err(ScanError::DuplicateKey("a".into())));
    }
}
