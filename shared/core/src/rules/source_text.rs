//! The source text of a JSON number inside an event, found by JSON pointer.
//!
//! `serde_json` (without `arbitrary_precision`, which would change number handling everywhere)
//! parses a number with a fraction or exponent into an `f64`, and `f64` keeps about 17
//! significant digits: `12345678901234567.89` would come back as `12345678901234568`. A
//! `DECIMAL` column must get exactly the digits the client sent, so the engine re-reads the
//! number's text from the event's bytes — only for `DECIMAL` mappings, the rest never pay.

use serde_json::value::RawValue;
use std::collections::HashMap;

/// The text of the JSON number at `pointer` (RFC 6901, `""` = the whole document) in `json`,
/// or `None` when there is no number there (missing, another kind of value, unreadable JSON).
pub(crate) fn number_at<'a>(json: &'a [u8], pointer: &str) -> Option<&'a str> {
    let mut cur: &'a RawValue = serde_json::from_slice(json).ok()?;
    if !pointer.is_empty() {
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            let text = cur.get();
            cur = match text.as_bytes().first()? {
                b'{' => {
                    let members: HashMap<String, &'a RawValue> = serde_json::from_str(text).ok()?;
                    *members.get(&token)?
                }
                b'[' => {
                    // RFC 6901: decimal digits without leading zeros ("0" itself excepted).
                    if token.is_empty()
                        || !token.bytes().all(|b| b.is_ascii_digit())
                        || (token.len() > 1 && token.starts_with('0'))
                    {
                        return None;
                    }
                    let items: Vec<&'a RawValue> = serde_json::from_str(text).ok()?;
                    *items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
    }
    let text = cur.get();
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::number_at;

    const DOC: &[u8] = br#" {"a": {"b/c": [1, 12345678901234567.89, {"x~y": -1.5e-3}]},
        "s": "12.5", "n": null, "a ": 7, "01": 3} "#;

    #[test]
    fn finds_numbers_by_pointer_verbatim() {
        assert_eq!(number_at(DOC, "/a/b~1c/1"), Some("12345678901234567.89"));
        assert_eq!(number_at(DOC, "/a/b~1c/0"), Some("1"));
        assert_eq!(number_at(DOC, "/a/b~1c/2/x~0y"), Some("-1.5e-3"));
        assert_eq!(number_at(DOC, "/a "), Some("7"));
        assert_eq!(
            number_at(DOC, "/01"),
            Some("3"),
            "object keys are not indexes"
        );
        assert_eq!(number_at(b"42", ""), Some("42"));
        assert_eq!(number_at(b" -0.0 ", ""), Some("-0.0"));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(number_at(DOC, "/s"), None, "a string is not a number");
        assert_eq!(number_at(DOC, "/n"), None);
        assert_eq!(number_at(DOC, "/a"), None, "an object is not a number");
        assert_eq!(number_at(DOC, "/a/b~1c"), None, "an array is not a number");
        assert_eq!(number_at(DOC, "/missing"), None);
        assert_eq!(number_at(DOC, "/a/b~1c/3"), None, "past the end");
        assert_eq!(number_at(DOC, "/a/b~1c/01"), None, "leading zero");
        assert_eq!(number_at(DOC, "/a/b~1c/-"), None);
        assert_eq!(number_at(DOC, "/a/b~1c/"), None);
        assert_eq!(number_at(DOC, "/a/b~1c/+1"), None);
        assert_eq!(
            number_at(DOC, "/a/b~1c/0/x"),
            None,
            "a number has no members"
        );
        assert_eq!(number_at(DOC, "a"), None, "a pointer starts with /");
        assert_eq!(number_at(DOC, ""), None, "the root is an object");
        assert_eq!(number_at(b"{\"a\": 1", "/a"), None, "unreadable JSON");
        assert_eq!(number_at(b"true", ""), None);
    }
}
