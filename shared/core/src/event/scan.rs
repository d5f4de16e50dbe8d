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
    /// Not JSON ([`scan_value`] only; [`scan`] does not check the grammar).
    Syntax,
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
/// The grammar is not checked: text that is not JSON gets some answer, never a panic (use
/// [`scan_value`] when it is not known to be JSON).
pub fn scan<'a>(
    raw: &'a str,
    max_depth: usize,
    partition_field: Option<&str>,
    scratch: &mut Scratch<'a>,
) -> Result<Scanned<'a>, ScanError> {
    walk::<false>(raw, max_depth, partition_field, scratch).map(|(scanned, _)| scanned)
}

/// [`scan`] for text **not yet known to be JSON**: the same walk, checking RFC 8259's grammar
/// as serde_json does (strings without control characters and with valid escapes, number
/// syntax, the literals, commas and colons in their places), and stopping at the end of the
/// first value, whose length it returns beside what [`scan`] finds. Text after that value is not
/// looked at. Whatever is not JSON is a [`ScanError::Syntax`] (which says nothing of where or
/// why: a reader that must explain asks serde_json). On any text, `Ok` means serde_json reads
/// `raw[..len]` as a `RawValue`, and [`scan`] of that text answers the same.
pub fn scan_value<'a>(
    raw: &'a str,
    max_depth: usize,
    partition_field: Option<&str>,
    scratch: &mut Scratch<'a>,
) -> Result<(Scanned<'a>, usize), ScanError> {
    walk::<true>(raw, max_depth, partition_field, scratch)
}

/// What may come next in [`walk`]'s grammar check.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (at the start, after a colon, after a comma in an array).
    Value,
    /// A key (after a comma in an object).
    Key,
    /// Just after `{` or `[`: a key or value, or the closing bracket.
    FirstOrClose,
    /// After a value inside a container: a comma or the closing bracket.
    CommaOrClose,
}

/// Tag of an object in [`Scratch::frames`] (the low bit; the rest is the frame's first key).
const OBJECT: usize = 1;

/// The walk of [`scan`] (`STRICT` false) and [`scan_value`] (`STRICT` true). Returns where the
/// value ends (strict; the text's length otherwise).
// Long on purpose: one byte loop; its state (frames, keys, pending slot) would cross any cut.
fn walk<'a, const STRICT: bool>(
    raw: &'a str,
    max_depth: usize,
    partition_field: Option<&str>,
    scratch: &mut Scratch<'a>,
) -> Result<(Scanned<'a>, usize), ScanError> {
    #[derive(Clone, Copy)]
    enum Slot {
        Type,
        Id,
        Ts,
        Partition,
    }
    const SYNTAX: ScanError = ScanError::Syntax;
    let b = raw.as_bytes();
    let mut out = Scanned::default();
    let mut pending: Option<Slot> = None;
    let mut expect = Expect::Value;
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
    // (Strict.) Whether the innermost container is an object.
    let in_object = |frames: &[usize]| frames.last().is_some_and(|f| f & OBJECT != 0);
    // (Strict.) Whether a value may start here.
    let value_ok = |expect: Expect, frames: &[usize]| {
        expect == Expect::Value || (expect == Expect::FirstOrClose && !in_object(frames))
    };
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                let (j, escapes) = if STRICT {
                    string_end_strict(b, start).ok_or(SYNTAX)?
                } else {
                    string_end(b, start)
                };
                let s = raw.get(start..j.min(b.len())).unwrap_or_default();
                // RawValue skips `\u` escapes without pairing surrogates; reading the string
                // refuses a lone one.
                if escapes == Escapes::MaybeSurrogate && unescape_strict(s).is_none() {
                    return Err(ScanError::Unreadable("a lone UTF-16 surrogate escape"));
                }
                let escaped = escapes != Escapes::None;
                i = j + 1;
                let k = skip_ws(b, i);
                let is_key = k < b.len() && b[k] == b':';
                if STRICT {
                    let key_ok = expect == Expect::Key
                        || (expect == Expect::FirstOrClose && in_object(&scratch.frames));
                    if is_key != key_ok || !(is_key || value_ok(expect, &scratch.frames)) {
                        return Err(SYNTAX);
                    }
                }
                if is_key {
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
                    // Past the colon. (After a value, the whitespace is left to the catch-all
                    // arm: a top-level value ends at its closing quote.)
                    i = k + 1;
                    expect = Expect::Value;
                } else {
                    set(&mut out, pending.take(), Scalar::Str(s, escaped));
                    if STRICT {
                        if scratch.frames.is_empty() {
                            return Ok((out, i));
                        }
                        expect = Expect::CommaOrClose;
                    }
                }
            }
            c @ (b'{' | b'[') => {
                if STRICT && !value_ok(expect, &scratch.frames) {
                    return Err(SYNTAX);
                }
                let kind = if c == b'{' { "object" } else { "array" };
                set(&mut out, pending.take(), Scalar::Other(kind));
                if scratch.frames.len() >= max_depth {
                    return Err(ScanError::TooDeep);
                }
                let tag = if c == b'{' { OBJECT } else { 0 };
                scratch.frames.push(scratch.keys.len() << 1 | tag);
                expect = Expect::FirstOrClose;
                i += 1;
            }
            c @ (b'}' | b']') => {
                if STRICT
                    && (in_object(&scratch.frames) != (c == b'}')
                        || scratch.frames.is_empty()
                        || !matches!(expect, Expect::FirstOrClose | Expect::CommaOrClose))
                {
                    return Err(SYNTAX);
                }
                let start = scratch.frames.pop().unwrap_or(0) >> 1;
                if c == b'}' {
                    let from = start.min(scratch.keys.len());
                    let keys = &mut scratch.keys[from..];
                    if may_repeat(keys) {
                        keys.sort_unstable();
                        if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
                            return Err(ScanError::DuplicateKey(truncate(&w[0], 64)));
                        }
                    }
                }
                scratch.keys.truncate(start);
                i += 1;
                if STRICT {
                    if scratch.frames.is_empty() {
                        return Ok((out, i));
                    }
                    expect = Expect::CommaOrClose;
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let n = raw.get(start..i).unwrap_or_default();
                if STRICT && (!value_ok(expect, &scratch.frames) || !is_number(n.as_bytes())) {
                    return Err(SYNTAX);
                }
                // RawValue checks only the grammar; reading the number refuses one beyond f64.
                if may_overflow(n) && serde_json::from_str::<f64>(n).is_err() {
                    return Err(ScanError::Unreadable("a number beyond the range of an f64"));
                }
                set(&mut out, pending.take(), Scalar::Number(n));
                if STRICT {
                    if scratch.frames.is_empty() {
                        return Ok((out, i));
                    }
                    expect = Expect::CommaOrClose;
                }
            }
            b't' | b'f' | b'n' => {
                let v = if b[i] == b'n' {
                    Scalar::Null
                } else {
                    Scalar::Other("boolean")
                };
                set(&mut out, pending.take(), v);
                let start = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                if STRICT {
                    let word = &b[start..i];
                    if !value_ok(expect, &scratch.frames)
                        || !matches!(word, b"true" | b"false" | b"null")
                    {
                        return Err(SYNTAX);
                    }
                    if scratch.frames.is_empty() {
                        return Ok((out, i));
                    }
                    expect = Expect::CommaOrClose;
                }
            }
            c => {
                if STRICT {
                    if c == b',' && expect == Expect::CommaOrClose {
                        expect = if in_object(&scratch.frames) {
                            Expect::Key
                        } else {
                            Expect::Value
                        };
                    } else if !is_ws(c) {
                        return Err(SYNTAX);
                    }
                }
                i += 1;
            }
        }
    }
    if STRICT {
        // The text ended inside the value (or held none).
        return Err(SYNTAX);
    }
    Ok((out, b.len()))
}

/// Whether the keys of one object may hold one twice: a pairwise look for up to
/// [`PAIRWISE_KEYS`] keys (no allocation, lengths compared first), always for more (the caller
/// then sorts, which answers in O(n log n) where pairs would cost O(n²)).
fn may_repeat(keys: &[Cow<'_, str>]) -> bool {
    if keys.len() > PAIRWISE_KEYS {
        return true;
    }
    keys.iter()
        .enumerate()
        .any(|(i, k)| keys[..i].iter().any(|e| e.len() == k.len() && e == k))
}

/// Objects with up to this many keys are checked for repeats pair by pair ([`may_repeat`]).
const PAIRWISE_KEYS: usize = 16;

/// RFC 8259's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_number(n: &[u8]) -> bool {
    let digits = |at: usize| {
        n[at.min(n.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let mut i = usize::from(n.first() == Some(&b'-'));
    match n.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i += digits(i),
        _ => return false,
    }
    if n.get(i) == Some(&b'.') {
        let d = digits(i + 1);
        if d == 0 {
            return false;
        }
        i += 1 + d;
    }
    if matches!(n.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(n.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let d = digits(i);
        if d == 0 {
            return false;
        }
        i += d;
    }
    i == n.len()
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

/// [`string_end`] for text not known to be JSON: the closing quote and the escapes, or `None`
/// when the string is not one serde_json reads (unterminated, a control character, an escape
/// other than `\" \\ \/ \b \f \n \r \t` or `\u` with four hex digits). Skips eight bytes at a time
/// while none of them is a quote, a backslash or a control character.
fn string_end_strict(b: &[u8], start: usize) -> Option<(usize, Escapes)> {
    let mut j = start;
    let mut escapes = Escapes::None;
    loop {
        while let Some(word) = b.get(j..j + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            let hits = special_bytes(u64::from_le_bytes(word));
            if hits != 0 {
                j += (hits.trailing_zeros() / 8) as usize;
                break;
            }
            j += 8;
        }
        match *b.get(j)? {
            b'"' => return Some((j, escapes)),
            b'\\' => {
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        let hex = b.get(j + 2..j + 6)?;
                        if !hex.iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        if matches!(hex.first(), Some(b'd' | b'D')) {
                            escapes = Escapes::MaybeSurrogate;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
                if escapes == Escapes::None {
                    escapes = Escapes::Some;
                }
            }
            c if c < 0x20 => return None,
            _ => j += 1,
        }
    }
}

/// The high bit of every byte of `w` (little-endian) that is a quote, a backslash or below
/// 0x20, and possibly of bytes above the first such one (borrows); 0 when there is none. The
/// lowest set bit is always the first such byte.
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    let quote = zero(w ^ (ONES * u64::from(b'"')));
    let backslash = zero(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    (quote | backslash | control) & HIGH
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

/// The index of the first byte at or after `i` that is not JSON whitespace (`b.len()` when
/// there is none).
pub(super) fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| is_ws(*c)) {
        i += 1;
    }
    i
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
    fn strict_strings_are_found_at_every_offset_of_the_word_skip() {
        // The closing quote, a backslash or a control character at each position of a word (and
        // of the byte-wise tail): always found there.
        let end = |text: &str| string_end_strict(text.as_bytes(), 0);
        for at in 0..40 {
            let pad = "é".repeat(at / 2) + &"a".repeat(at % 2);
            assert_eq!(pad.len(), at);
            let closed = format!("{pad}\"tail");
            assert_eq!(end(&closed), Some((at, Escapes::None)), "{closed:?}");
            let escaped = format!("{pad}\\n\"");
            assert_eq!(end(&escaped), Some((at + 2, Escapes::Some)));
            let pair = format!("{pad}\\ud83d\\ude00\"");
            assert_eq!(end(&pair), Some((at + 12, Escapes::MaybeSurrogate)));
            for control in ['\u{0}', '\u{1f}', '\t', '\n'] {
                let bad = format!("{pad}{control}\"");
                assert_eq!(end(&bad), None, "{bad:?}");
            }
            // Bytes next to the special ones are plain text.
            let plain = format!("{pad} !#[]\u{7f}~\"");
            assert_eq!(end(&plain), Some((at + 7, Escapes::None)));
            assert_eq!(end(&pad), None, "unterminated");
        }
    }

    #[test]
    fn special_bytes_finds_the_first_quote_backslash_or_control_character_of_a_word() {
        let fillers = [
            b'a', b' ', b'!', b'#', b'[', b']', b'~', 0x7f, 0x80, 0xc3, 0xff,
        ];
        for filler in fillers {
            assert_eq!(
                special_bytes(u64::from_le_bytes([filler; 8])),
                0,
                "{filler:#x}"
            );
            for special in [b'"', b'\\', 0x00, 0x01, 0x0a, 0x1f] {
                for at in 0..8 {
                    let mut word = [filler; 8];
                    word[at] = special;
                    let hits = special_bytes(u64::from_le_bytes(word));
                    assert_eq!(hits.trailing_zeros() as usize, 8 * at + 7, "{word:?}");
                }
            }
        }
    }

    #[test]
    fn small_objects_are_looked_at_pair_by_pair_and_larger_ones_sorted() {
        let keys = |n: usize| -> Vec<Cow<'static, str>> {
            (0..n).map(|i| Cow::Owned(format!("k{i:02}"))).collect()
        };
        assert!(!may_repeat(&[]));
        assert!(!may_repeat(&keys(PAIRWISE_KEYS)), "distinct: no sort");
        assert!(may_repeat(&keys(PAIRWISE_KEYS + 1)), "too many to pair up");
        let same_length = [
            Cow::Borrowed("ab"),
            Cow::Borrowed("cd"),
            Cow::Borrowed("abc"),
        ];
        assert!(!may_repeat(&same_length));
        let twice = [
            Cow::Borrowed("ab"),
            Cow::Borrowed("cd"),
            Cow::Owned("ab".into()),
        ];
        assert!(may_repeat(&twice));
        assert!(may_repeat(&twice[..]) && !may_repeat(&twice[1..]));
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
