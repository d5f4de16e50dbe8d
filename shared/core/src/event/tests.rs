//! Body and item tests: every form, limit and per-item check through [`parse_events`] and
//! [`decode_body`].

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
    let body = "{\"type\":\"a\"}\r\n\n   \n{\"type\":\"b\"\n\t\n{\"type\":\"c\",\"id\":\"3\"}\n";
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
    // Browsers send JSON as text/plain (sendBeacon, fetch without a preflight).
    assert_eq!(
        MediaType::from_content_type(Some("text/plain;charset=UTF-8")),
        Ok(MediaType::Json)
    );
    for bad in [
        None,
        Some(""),
        Some("text/html"),
        Some("text/plain; charset=windows-1252"),
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

/// The scanner on `raw` with a fresh scratch (its boundaries, without `parse_events`' checks).
fn scanned(raw: &str, max_depth: usize) -> Result<Scanned<'_>, ScanError> {
    let mut scratch = Scratch::default();
    scan(raw, max_depth, Some("user"), &mut scratch)
}

#[test]
fn the_scanner_reads_keys_with_whitespace_before_their_colon() {
    let s = scanned("{\"type\" : \"a\", \"id\"\n:\t\"x\", \"user\"\r\n :7}", 8).unwrap();
    assert_eq!(s.event_type, Scalar::Str("a", false));
    assert_eq!(s.id, Scalar::Str("x", false));
    assert_eq!(s.partition, Scalar::Number("7"));
    assert_eq!(
        scanned("{\"a\" :1,\"a\"  :2}", 8).unwrap_err(),
        ScanError::DuplicateKey("a".into())
    );
    // A value followed by whitespace is a value, not a key.
    let s = scanned("{\"k\":\"type\" , \"type\":\"b\"}", 8).unwrap();
    assert_eq!(s.event_type, Scalar::Str("b", false));
}

#[test]
fn the_scanner_never_reads_past_the_end() {
    // Untrusted text the scanner may see before a JSON reader does (a decoded Snowplow
    // context): a string or a number last, with or without whitespace after it.
    for raw in [
        "\"abc\"",
        "\"abc\"   ",
        "{\"a\":\"b\"",
        "{\"a\"",
        "{\"a\"  ",
        "\"unterminated",
        "\"esc\\",
        "12",
        "{\"a\":-1e",
        "tru",
        "}}]]",
        "",
    ] {
        let _ = scanned(raw, 8);
    }
    assert!(scanned("{\"a\"  ", 8).is_ok());
}

/// Events compared without their generated ids (which differ from one call to the next).
fn same_events(a: &[ItemResult<'_>], b: &[ItemResult<'_>]) -> bool {
    let strip = |items: &[ItemResult<'_>]| -> Vec<ItemResult<'static>> {
        items
            .iter()
            .map(|item| match item {
                ItemResult::Valid(e) => ItemResult::Rejected(Rejection {
                    index: e.index,
                    code: RejectCode::InvalidJson,
                    reason: format!(
                        "{} {:?} {} {:?} {:?} {:?}",
                        e.event_type,
                        (!e.id_generated).then_some(&e.id),
                        e.raw,
                        e.ts,
                        e.partition_value,
                        e.raw.as_ptr()
                    ),
                }),
                ItemResult::Rejected(r) => ItemResult::Rejected(r.clone()),
            })
            .collect()
    };
    strip(a) == strip(b)
}

#[test]
fn the_fast_path_takes_bodies_of_valid_events_and_agrees_with_the_reference() {
    let opts = ParseOptions {
        partition_key_field: Some("user"),
        ..ParseOptions::default()
    };
    for body in [
        r#"[{"type":"a"}]"#,
        " \r\n\t[ {\"type\":\"a\",\"id\":\"x\"} ,\n{\"type\":\"b\",\"user\":7} ] \n",
        r#"[{"type":"a","n":[0,-0,1.5,-2e10,3E+2,4e-1,{}],"o":{"k":{"z":[true,false,null]}}}]"#,
        r#"[{"type":"a","s":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00","ts":"2026-11-25T19:55:17Z"}]"#,
        r#"[{"type":"a","ty\u0070e2":1,"user":"u\u0031"},{"type":"a","e":{},"f":[]}]"#,
        "{\"type\":\"a\",\"user\":\"u\"}",
        "  {\"type\":\"a\",\"é\":\"ü\u{7f}\"}\n",
        r#"{"events":[{"type":"a"},{"type":"b","user":"u"}]}"#,
        " { \"events\" :\n[ {\"type\":\"a\"} ] } ",
        // An event with an `events` member is an event.
        r#"{"type":"a","events":[{"type":"b"}]}"#,
    ] {
        let fast = all_valid(body, &opts).unwrap_or_else(|| panic!("fast path on {body:?}"));
        let reference = reference_json(body, &opts).unwrap();
        assert!(same_events(&fast, &reference), "{body:?}");
        assert!(fast.iter().all(|i| matches!(i, ItemResult::Valid(_))));
    }
    // NDJSON lines take it one by one.
    let lines = "{\"type\":\"a\"}\n {\"type\":\"b\",\"user\":\"u\"} \r\n";
    let mut scratch = Scratch::default();
    let e = one_valid(
        3,
        " {\"type\":\"b\",\"user\":\"u\"} \r",
        &opts,
        &mut scratch,
    )
    .unwrap();
    assert_eq!(
        (e.index, &*e.event_type, e.raw),
        (3, "b", "{\"type\":\"b\",\"user\":\"u\"}")
    );
    let items = parse_events(lines.as_bytes(), MediaType::Ndjson, &opts).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(valid(&items[1]).partition_value.as_deref(), Some("u"));
}

#[test]
fn the_fast_path_leaves_every_other_body_to_the_reference() {
    let limits = Limits {
        max_events: 2,
        max_event_bytes: 40,
        max_depth: 3,
        ..Limits::default()
    };
    let opts = ParseOptions {
        limits,
        partition_key_field: None,
    };
    let tab = "[{\"type\":\"a\",\"s\":\"a\tb\"}]";
    let nul = "[{\"type\":\"a\",\"s\":\"a\u{0}b\"}]";
    for body in [
        // Not JSON.
        r#"[{"type":"a"},]"#,
        r#"[{"type":"a"} {"type":"b"}]"#,
        r#"[{"type":"a"}"#,
        r#"[{"type":"a"}]x"#,
        r#"[{"type":"a"}]]"#,
        r#"[{"type":"a",}]"#,
        r#"[{"type":"a" "b":1}]"#,
        r#"[{"type" "a"}]"#,
        r#"[{"type"::"a"}]"#,
        r#"[{"type":"a":1}]"#,
        r#"[{,"type":"a"}]"#,
        r#"[{"type":"a",1:2}]"#,
        r#"[{"type":"a"}}]"#,
        r#"[{"type":"a"]]"#,
        r#"[{"type":"a","n":01}]"#,
        r#"[{"type":"a","n":-}]"#,
        r#"[{"type":"a","n":1.}]"#,
        r#"[{"type":"a","n":.5}]"#,
        r#"[{"type":"a","n":1e}]"#,
        r#"[{"type":"a","n":1e+}]"#,
        r#"[{"type":"a","n":+1}]"#,
        r#"[{"type":"a","n":1-2}]"#,
        r#"[{"type":"a","n":1 2}]"#,
        r#"[{"type":"a","b":tru}]"#,
        r#"[{"type":"a","b":nulll}]"#,
        r#"[{"type":"a","b":true"x"}]"#,
        r#"[{"type":"a","s":"\x"}]"#,
        r#"[{"type":"a","s":"\u12g4"}]"#,
        r#"[{"type":"a","s":"\u12"}]"#,
        r#"[{"type":"a","s":"open}]"#,
        tab,
        nul,
        r#"[{"type":"a","k":[1,]}]"#,
        r#"[{"type":"a","k":[,1]}]"#,
        r#"[{"type":"a","k":["x":1]}]"#,
        r#"[{"type":"a","k":{"x"}}]"#,
        r#"[{"type":"a","k":{"x":}}]"#,
        "",
        "  ",
        "[",
        "[]",
        "{}",
        "null",
        r#""a""#,
        // The wrapper, as written, with anything else about it.
        r#"{"events":[{"type":"a"}],"x":1}"#,
        r#"{"x":1,"events":[{"type":"a"}]}"#,
        r#"{"events":[]}"#,
        r#"{"events":{"type":"a"}}"#,
        r#"{"events" [{"type":"a"}]}"#,
        r#"{"events":[{"type":"a"}]"#,
        r#"{"events":[{"type":"a"}]]"#,
        r#"{"events":[{"type":"a"}]}}"#,
        r#"{"events":[{"type":"a"}]} x"#,
        r#"{"events":[{"type":"a"},{"type":"B"}]}"#,
        // JSON, but not all valid events (or not the array or event form).
        r#"[{"type":"a"},1]"#,
        r#"[1,{"type":"a"}]"#,
        r#"[{"type":"A"}]"#,
        r#"[{"id":"x"}]"#,
        r#"[{"type":"a","id":""}]"#,
        r#"[{"type":"a","ts":"yesterday"}]"#,
        r#"[{"type":"a"},{"type":"a"},{"type":"a"}]"#,
        r#"[{"type":"a","pad":"0123456789012345678901234"}]"#,
        r#"[{"type":"a","d":[[[]]]}]"#,
        r#"[{"type":"a","type":"a"}]"#,
        r#"[{"type":"a","s":"\ud800"}]"#,
        r#"[{"type":"a","n":1e400}]"#,
    ] {
        assert!(all_valid(body, &opts).is_none(), "{body:?}");
    }
    // At the limits, still taken (one event alone, or an NDJSON line, too).
    let at_limit = r#" {"type":"a","pad":"0123456789012345678"} "#;
    let mut scratch = Scratch::default();
    assert!(one_valid(0, at_limit, &opts, &mut scratch).is_some());
    let over = r#" {"type":"a","pad":"01234567890123456789"} "#;
    assert!(one_valid(0, over, &opts, &mut scratch).is_none());
    for body in [
        r#"[{"type":"a"},{"type":"a"}]"#,
        r#"[{"type":"a","pad":"0123456789012345678"}]"#,
        r#"[{"type":"a","d":[[]]}]"#,
    ] {
        assert!(all_valid(body, &opts).is_some(), "{body:?}");
    }
}

fn strict(text: &str) -> Result<usize, ScanError> {
    scan_value(text, 8, None, &mut Scratch::default()).map(|(_, len)| len)
}

#[test]
fn scan_value_ends_at_the_end_of_the_first_value() {
    assert_eq!(strict("{} ,x"), Ok(2));
    assert_eq!(strict("  [1, {\"a\": [ ]} ]x"), Ok(18));
    assert_eq!(strict("\"ab\\\"c\"d"), Ok(7));
    assert_eq!(strict("-1.5e3,"), Ok(6));
    assert_eq!(strict("true]"), Ok(4));
    assert_eq!(strict("null}"), Ok(4));
    assert_eq!(strict("false"), Ok(5));
    for text in [
        "", " ", "{", "[1", "\"ab", "}", "]", ",", ":", "x", "{\"a\":1", "[1,",
    ] {
        assert_eq!(strict(text), Err(ScanError::Syntax), "{text:?}");
    }
    // The walk's own problems come as they do from `scan`.
    assert_eq!(
        strict(r#"{"a":1,"a":2}"#),
        Err(ScanError::DuplicateKey("a".into()))
    );
    assert_eq!(
        scan_value("[[[", 2, None, &mut Scratch::default()).map(|(_, n)| n),
        Err(ScanError::TooDeep)
    );
}
