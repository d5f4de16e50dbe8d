use super::*;
use time::macros::datetime;

const RECEIVED: OffsetDateTime = datetime!(2026-12-03 12:00:10 UTC);

fn any() -> AppIds {
    AppIds::parse("*")
}

fn opts() -> ParseOptions<'static> {
    ParseOptions::default()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

const LINK_CLICK: &str = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1","data":{"targetUrl":"https://x.example/a"}}}"#;
const CONTEXTS: &str = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[{"schema":"iglu:com.acme/user/jsonschema/1-0-0","data":{"plan":"pro"}}]}"#;

fn post(events: &[String]) -> String {
    format!(
        r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4","data":[{}]}}"#,
        events.join(",")
    )
}

fn valid<'i, 'a>(items: &'i [ItemResult<'a>], i: usize) -> &'i Event<'a> {
    match &items[i] {
        ItemResult::Valid(e) => e,
        ItemResult::Rejected(r) => panic!("item {i} rejected: {r:?}"),
    }
}

fn rejected(items: &[ItemResult<'_>], i: usize) -> (RejectCode, String) {
    match &items[i] {
        ItemResult::Rejected(r) => {
            assert_eq!(r.index, i);
            (r.code, r.reason.clone())
        }
        ItemResult::Valid(e) => panic!("item {i} valid: {e:?}"),
    }
}

#[test]
fn routes_are_the_collector_paths() {
    assert_eq!(Route::from_path(POST_PATH), Some(Route::Post));
    assert_eq!(Route::from_path("/i"), Some(Route::Pixel));
    assert_eq!(
        Route::from_path("/com.snowplowanalytics.snowplow/i"),
        Some(Route::Pixel)
    );
    assert_eq!(Route::from_path("/v1/events"), None);
    assert_eq!(Route::from_path("/i/"), None);
    assert_eq!(
        Route::from_path("/com.snowplowanalytics.snowplow/tp1"),
        None
    );
}

#[test]
fn app_ids_list_star_and_empty() {
    let none = AppIds::parse(" , ");
    assert!(none.is_empty());
    assert!(!none.allows(Some("shop")));
    assert!(!none.allows(None));
    let star = AppIds::parse("*");
    assert!(!star.is_empty());
    assert!(star.allows(Some("x")) && star.allows(None));
    let listed = AppIds::parse(" shop , app ");
    assert!(!listed.is_empty());
    assert!(listed.allows(Some("shop")) && listed.allows(Some("app")));
    assert!(!listed.allows(Some("sho")) && !listed.allows(None));
}

#[test]
fn a_post_batch_is_one_event_per_element_byte_for_byte() {
    let pv = r#"{"e":"pv","eid":"5a1f0c1e-0000-4000-8000-000000000001","aid":"shop","url":"https://shop.example/?q=a b","duid":"d-1","uid":"u-1","dtm":"1796299205000","stm":"1796299207000","tv":"py-1.1.0"}"#;
    let se = format!(
        r#"{{"e":"se","eid":"e-2","se_ca":"cart","se_ac":"add","se_va":"1.5","uid":"u-9","cx":"{}"}}"#,
        b64(CONTEXTS)
    );
    let ue = format!(r#"{{"e":"ue","eid":"e-3","ue_px":"{}"}}"#, b64(LINK_CLICK));
    let body = post(&[pv.to_owned(), se.clone(), ue.clone()]);
    let items = parse_post(body.as_bytes(), &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(items.len(), 3);
    let a = valid(&items, 0);
    assert_eq!(a.raw, pv);
    assert_eq!(a.event_type, "snowplow.page_view");
    assert_eq!(a.id, "5a1f0c1e-0000-4000-8000-000000000001");
    assert!(!a.id_generated);
    assert_eq!(a.partition_value.as_deref(), Some("d-1"), "duid before uid");
    // Created 5 s before it was sent (device clock): received − 2 s.
    assert_eq!(a.ts, Some(datetime!(2026-12-03 12:00:08 UTC)));
    assert_eq!(a.event_time.as_deref(), Some("2026-12-03T12:00:08.000Z"));
    let b = valid(&items, 1);
    assert_eq!(b.raw, se);
    assert_eq!(b.event_type, "snowplow.struct");
    assert_eq!(b.partition_value.as_deref(), Some("u-9"));
    assert_eq!(b.ts, Some(RECEIVED), "no dtm: received");
    let c = valid(&items, 2);
    assert_eq!(c.event_type, "snowplow.unstruct.link_click");
    assert_eq!(c.index, 2);
    assert_eq!(c.partition_value, None);
}

#[test]
fn every_event_kind_has_its_type() {
    for (e, t) in [
        ("pv", "snowplow.page_view"),
        ("pp", "snowplow.page_ping"),
        ("se", "snowplow.struct"),
        ("tr", "snowplow.transaction"),
        ("ti", "snowplow.transaction_item"),
    ] {
        let q = format!("e={e}&eid=x");
        let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
        assert_eq!(valid(&items, 0).event_type, t);
    }
    // A schema name that gives no usable type falls back to the prefix.
    let odd = LINK_CLICK.replace("link_click", "---");
    let body = post(&[format!(
        r#"{{"e":"ue","ue_pr":{}}}"#,
        serde_json::to_string(&odd).unwrap()
    )]);
    let items = parse_post(body.as_bytes(), &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(valid(&items, 0).event_type, "snowplow.unstruct");
}

#[test]
fn bad_events_are_rejected_with_reasons_and_the_rest_pass() {
    let cases: Vec<(String, RejectCode, &str)> = vec![
        (r#"{"eid":"a"}"#.into(), RejectCode::MissingType, "needs \"e\""),
        (r#"{"e":""}"#.into(), RejectCode::MissingType, "needs \"e\""),
        (r#"{"e":"xx"}"#.into(), RejectCode::InvalidType, "not a Snowplow event"),
        (r#"{"e":"ue"}"#.into(), RejectCode::InvalidType, "needs \"ue_pr\""),
        (r#"{"e":"ue","ue_px":"%%%"}"#.into(), RejectCode::InvalidJson, "not base64"),
        (
            format!(r#"{{"e":"ue","ue_px":"{}"}}"#, b64("{nope")),
            RejectCode::InvalidJson,
            "is not JSON",
        ),
        (
            format!(r#"{{"e":"ue","ue_px":"{}"}}"#, b64(r#"{"schema":"iglu:x/y/jsonschema/1-0-0","data":{}}"#)),
            RejectCode::InvalidJson,
            "unstruct_event/jsonschema/1-",
        ),
        (
            format!(
                r#"{{"e":"ue","ue_px":"{}"}}"#,
                b64(r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"data":{}}}"#)
            ),
            RejectCode::InvalidJson,
            "data must be",
        ),
        (
            format!(r#"{{"e":"pv","cx":"{}"}}"#, b64(r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":{}}"#)),
            RejectCode::InvalidJson,
            "must be an array",
        ),
        (
            format!(r#"{{"e":"pv","cx":"{}"}}"#, b64(r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[{"data":{}}]}"#)),
            RejectCode::InvalidJson,
            "each context",
        ),
        (
            format!(r#"{{"e":"pv","cx":"{}"}}"#, b64(r#"["not","self-describing"]"#)),
            RejectCode::InvalidJson,
            "self-describing JSON object",
        ),
        (r#"{"e":"pv","co":"{\"schema\":\"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1\"}"}"#.into(), RejectCode::InvalidJson, "needs \"data\""),
        (r#"{"e":"pv","dtm":"12:00"}"#.into(), RejectCode::InvalidTs, "\"dtm\""),
        (r#"{"e":"pv","stm":"-"}"#.into(), RejectCode::InvalidTs, "\"stm\""),
        (r#"{"e":"pv","ttm":"1e3"}"#.into(), RejectCode::InvalidTs, "\"ttm\""),
        (format!(r#"{{"e":"pv","eid":"{}"}}"#, "x".repeat(129)), RejectCode::InvalidId, "\"eid\""),
        (r#"{"e":"pv","eid":"a\u0001"}"#.into(), RejectCode::InvalidId, "\"eid\""),
        (r#"{"e":"pv","tv":1}"#.into(), RejectCode::InvalidJson, "must be a string"),
        (r#"{"e":"pv","e":"pv"}"#.into(), RejectCode::DuplicateKey, "duplicate"),
        (r#"["e","pv"]"#.into(), RejectCode::NotAnObject, "JSON object"),
    ];
    let mut events: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    events.push(r#"{"e":"pv","eid":"fine"}"#.into());
    let body = post(&events);
    let items = parse_post(body.as_bytes(), &opts(), &any(), RECEIVED).unwrap();
    for (i, (event, code, reason)) in cases.iter().enumerate() {
        let (got, why) = rejected(&items, i);
        assert_eq!(got, *code, "{event}: {why}");
        assert!(
            why.contains(reason),
            "{event}: {why:?} should say {reason:?}"
        );
    }
    assert_eq!(valid(&items, cases.len()).id, "fine");
}

#[test]
fn the_plain_forms_of_ue_and_contexts_are_read_too() {
    let ev = format!(
        r#"{{"e":"ue","ue_pr":{},"co":{}}}"#,
        serde_json::to_string(LINK_CLICK).unwrap(),
        serde_json::to_string(CONTEXTS).unwrap()
    );
    let body = post(std::slice::from_ref(&ev));
    let items = parse_post(body.as_bytes(), &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(valid(&items, 0).event_type, "snowplow.unstruct.link_click");
    let v = view(ev.as_bytes()).unwrap();
    assert_eq!(
        v["unstruct_event"]["data"]["targetUrl"],
        "https://x.example/a"
    );
    assert_eq!(v["contexts"][0]["data"]["plan"], "pro");
}

#[test]
fn base64_in_either_alphabet_with_or_without_padding_is_read() {
    // `>>>?` encodes to bytes whose base64 has `+`/`/` in the standard alphabet.
    let text = CONTEXTS.replace("pro", ">>>?>>>?");
    for engine in [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ] {
        let cx = engine.encode(&text);
        let ev = format!(r#"{{"e":"pv","cx":"{cx}"}}"#);
        assert_eq!(
            view(ev.as_bytes()).unwrap()["contexts"][0]["data"]["plan"],
            ">>>?>>>?",
            "{cx}"
        );
    }
}

#[test]
fn the_time_is_derived_as_snowplow_derives_it() {
    let ts = |q: &str| {
        let items = parse_pixel(q, &opts(), &any(), RECEIVED).unwrap();
        valid(&items, 0).ts
    };
    // The true timestamp wins.
    assert_eq!(
        ts("e=pv&dtm=1796299205000&stm=1796299207000&ttm=1796299000000"),
        Some(datetime!(2026-12-03 11:56:40 UTC))
    );
    // Created 2 s before it was sent: received − 2 s, to the millisecond.
    assert_eq!(
        ts("e=pv&dtm=1796299205123&stm=1796299207000"),
        Some(datetime!(2026-12-03 12:00:08.123 UTC))
    );
    assert_eq!(
        ts("e=pv&dtm=1796299207000&stm=1796299207000"),
        Some(RECEIVED),
        "sent as it was created"
    );
    // A device clock alone, or created after it was sent, is not trusted: received.
    assert_eq!(ts("e=pv&dtm=1796299205123"), Some(RECEIVED));
    assert_eq!(ts("e=pv&stm=1796299205123"), Some(RECEIVED));
    assert_eq!(
        ts("e=pv&dtm=1796299207001&stm=1796299207000"),
        Some(RECEIVED)
    );
    // Clocks thousands of years apart: no panic, received.
    assert_eq!(ts("e=pv&dtm=0&stm=253402300799000"), Some(RECEIVED));
    assert_eq!(ts("e=pv&dtm=253402300799000&stm=0"), Some(RECEIVED));
    let items = parse_pixel(
        "e=pv&dtm=1796299205123&stm=1796299207000",
        &opts(),
        &any(),
        RECEIVED,
    )
    .unwrap();
    assert_eq!(
        valid(&items, 0).event_time.as_deref(),
        Some("2026-12-03T12:00:08.123Z")
    );
    // Only digits, and only years the warehouse holds.
    for bad in [
        "dtm=%2B5",
        "dtm=-5",
        "ttm=253402300800000",
        "stm=99999999999999999999",
    ] {
        let q = format!("e=pv&{bad}");
        let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
        assert_eq!(rejected(&items, 0).0, RejectCode::InvalidTs, "{bad}");
    }
    assert_eq!(
        ts("e=pv&ttm=253402300799999"),
        Some(datetime!(9999-12-31 23:59:59.999 UTC))
    );
}

#[test]
fn derived_time_stays_in_range() {
    let far = datetime!(0001-01-01 00:00:00 UTC);
    let late = datetime!(9999-12-31 23:59:59 UTC);
    assert_eq!(
        derived_time(None, Some(far), Some(late), RECEIVED),
        RECEIVED
    );
    assert_eq!(derived_time(Some(far), None, None, RECEIVED), far);
}

#[test]
fn the_pixel_keeps_the_query_string_and_decodes_its_pairs() {
    let cx = base64::engine::general_purpose::URL_SAFE.encode(CONTEXTS);
    let q = format!(
        "e=pv&url=https%3A%2F%2Fshop.example%2Fa%3Fb%3Dc&page=Hello+w%C3%B6rld&eid=p-1&aid=shop&uid=u+1&cx={cx}&empty="
    );
    let items = parse_pixel(&q, &opts(), &AppIds::parse("shop"), RECEIVED).unwrap();
    let ev = valid(&items, 0);
    assert_eq!(ev.raw, q, "the query string byte for byte");
    assert_eq!(ev.id, "p-1");
    assert_eq!(ev.partition_value.as_deref(), Some("u 1"));
    let v = view(q.as_bytes()).unwrap();
    assert_eq!(v["url"], "https://shop.example/a?b=c");
    assert_eq!(v["page"], "Hello wörld");
    assert_eq!(v["empty"], "");
    assert_eq!(
        v["contexts"][0]["schema"],
        "iglu:com.acme/user/jsonschema/1-0-0"
    );
    assert!(v.get("unstruct_event").is_none());
}

#[test]
fn bad_pixels_are_rejections_and_an_empty_one_is_refused() {
    assert_eq!(
        parse_pixel("", &opts(), &any(), RECEIVED).unwrap_err(),
        BodyError::NoEvents
    );
    for (q, code, why) in [
        ("e=pv&e=pp", RejectCode::DuplicateKey, "duplicate key \"e\""),
        ("e=pv&url=%FF", RejectCode::InvalidUtf8, "UTF-8"),
        ("e%FF=pv", RejectCode::InvalidUtf8, "UTF-8"),
        ("{\"e\":\"pv\"}&e=pv", RejectCode::InvalidJson, "%7B"),
        ("url=x", RejectCode::MissingType, "needs \"e\""),
    ] {
        let items = parse_pixel(q, &opts(), &any(), RECEIVED).unwrap();
        let (c, reason) = rejected(&items, 0);
        assert_eq!(c, code, "{q}");
        assert!(reason.contains(why), "{q}: {reason}");
    }
    let limits = crate::limits::Limits {
        max_event_bytes: 20,
        ..Default::default()
    };
    let small = ParseOptions {
        limits,
        partition_key_field: None,
    };
    let items = parse_pixel("e=pv&url=123456789012", &small, &any(), RECEIVED).unwrap();
    assert_eq!(rejected(&items, 0).0, RejectCode::TooLarge);
    let items = parse_pixel("e=pv&url=12345678901", &small, &any(), RECEIVED).unwrap();
    valid(&items, 0);
}

#[test]
fn app_ids_gate_each_event() {
    let ids = AppIds::parse("shop");
    let body = post(&[
        r#"{"e":"pv","aid":"shop"}"#.into(),
        r#"{"e":"pv","aid":"other"}"#.into(),
        r#"{"e":"pv"}"#.into(),
    ]);
    let items = parse_post(body.as_bytes(), &opts(), &ids, RECEIVED).unwrap();
    valid(&items, 0);
    let (c, why) = rejected(&items, 1);
    assert_eq!((c, c.as_str()), (RejectCode::UnknownApp, "unknown_app_id"));
    assert!(why.contains("\"other\""), "{why}");
    let (c, why) = rejected(&items, 2);
    assert_eq!(c, RejectCode::UnknownApp);
    assert!(why.contains("no app id"), "{why}");
}

#[test]
fn post_bodies_that_are_not_tp2_are_refused_whole() {
    let o = opts();
    let p = |b: &str| parse_post(b.as_bytes(), &o, &any(), RECEIVED).unwrap_err();
    assert_eq!(p("  "), BodyError::Empty);
    assert!(matches!(p("{"), BodyError::InvalidJson(_)));
    assert!(matches!(p(r#"{"data":[]}"#), BodyError::InvalidShape(_)));
    assert!(matches!(
        p(r#"{"schema":"iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4"}"#),
        BodyError::InvalidShape(_)
    ));
    assert!(matches!(
        p(r#"{"schema":"iglu:com.acme/payload_data/jsonschema/1-0-4","data":[{"e":"pv"}]}"#),
        BodyError::InvalidShape(m) if m.contains("schema must be")
    ));
    assert_eq!(p(&post(&[])), BodyError::NoEvents);
    assert_eq!(
        parse_post(&[0xff, b'{'], &o, &any(), RECEIVED).unwrap_err(),
        BodyError::InvalidUtf8
    );
    let limits = crate::limits::Limits {
        max_events: 2,
        max_body_bytes: 200,
        ..Default::default()
    };
    let small = ParseOptions {
        limits,
        partition_key_field: None,
    };
    let three = post(&[
        r#"{"e":"pv"}"#.into(),
        r#"{"e":"pv"}"#.into(),
        r#"{"e":"pv"}"#.into(),
    ]);
    assert_eq!(
        parse_post(three.as_bytes(), &small, &any(), RECEIVED).unwrap_err(),
        BodyError::TooManyEvents { max: 2 }
    );
    let two = post(&[r#"{"e":"pv"}"#.into(), r#"{"e":"pv"}"#.into()]);
    assert_eq!(
        parse_post(two.as_bytes(), &small, &any(), RECEIVED)
            .unwrap()
            .len(),
        2
    );
    let big = post(&[format!(r#"{{"e":"pv","url":"{}"}}"#, "x".repeat(200))]);
    assert_eq!(
        parse_post(big.as_bytes(), &small, &any(), RECEIVED).unwrap_err(),
        BodyError::TooLarge { max: 200 }
    );
}

#[test]
fn an_event_over_the_size_limit_is_rejected_alone() {
    let limits = crate::limits::Limits {
        max_event_bytes: 30,
        ..Default::default()
    };
    let small = ParseOptions {
        limits,
        partition_key_field: None,
    };
    let exact = r#"{"e":"pv","url":"1234567890a"}"#;
    assert_eq!(exact.len(), 30);
    let body = post(&[exact.into(), r#"{"e":"pv","url":"1234567890ab"}"#.into()]);
    let items = parse_post(body.as_bytes(), &small, &any(), RECEIVED).unwrap();
    valid(&items, 0);
    assert_eq!(rejected(&items, 1).0, RejectCode::TooLarge);
}

#[test]
fn a_generated_id_when_eid_is_missing_and_long_keys_do_not_partition() {
    let long = "d".repeat(crate::limits::PARTITION_KEY_MAX_CHARS + 1);
    let q = format!("e=pv&duid={long}");
    let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
    let ev = valid(&items, 0);
    assert!(ev.id_generated);
    assert!(event::is_valid_id(&ev.id));
    assert_eq!(ev.partition_value, None);
    let fits = "d".repeat(crate::limits::PARTITION_KEY_MAX_CHARS);
    let q = format!("e=pv&duid={fits}");
    let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(
        valid(&items, 0).partition_value.as_deref(),
        Some(fits.as_str())
    );
}

#[test]
fn the_view_of_something_else_is_an_error() {
    assert!(view(b"\xff").is_err());
    assert!(view(br#"{"e":1}"#).is_err());
    assert!(view(b"e=pv&e=pp").is_err());
    assert!(view(br#"{"e":"ue","ue_px":"!"}"#).is_err());
    assert!(view(br#"{"e":"pv","cx":"!"}"#).is_err());
    let v = view(b"e=pv&tv=js-3").unwrap();
    assert_eq!(v, serde_json::json!({"e": "pv", "tv": "js-3"}));
}

#[test]
fn what_view_decodes_is_checked_at_ingest_for_every_type() {
    // A page view with a self-describing event that is not one: rejected, not accepted and
    // then refused by the loader.
    let items = parse_pixel("e=pv&ue_px=!", &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(rejected(&items, 0).0, RejectCode::InvalidJson);
    let inner_not_iglu = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"com.acme/x","data":{}}}"#;
    let q = format!("e=ue&ue_px={}", b64(inner_not_iglu));
    let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
    assert!(rejected(&items, 0).1.contains("data must be"));
    // The decoded JSON passes the scanner: nesting and names sent twice.
    let deep = format!(
        r#"{{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[{{"schema":"iglu:a/b/jsonschema/1-0-0","data":{}1{}}}]}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let twice = r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[],"data":[]}"#;
    for (text, why) in [(deep.as_str(), "deeper"), (twice, "duplicate")] {
        let q = format!("e=pv&cx={}", b64(text));
        let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
        let (code, reason) = rejected(&items, 0);
        assert_eq!(code, RejectCode::InvalidJson);
        assert!(reason.contains(why), "{reason}");
    }
    // Every event accepted here can be read back by the loader.
    let accepted = [
        format!("e=ue&ue_px={}&cx={}", b64(LINK_CLICK), b64(CONTEXTS)),
        "e=pv&url=%E2%82%AC+x".to_owned(),
        format!("e=se&se_ca=a&se_ac=b&co={}", urlencode(CONTEXTS)),
    ];
    for q in &accepted {
        let items = parse_pixel(q, &opts(), &any(), RECEIVED).unwrap();
        valid(&items, 0);
        assert!(view(q.as_bytes()).is_ok(), "{q}");
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn a_schema_name_fits_the_type_up_to_46_characters() {
    let named = |n: usize| {
        let ue = LINK_CLICK.replace("link_click", &"n".repeat(n));
        let q = format!("e=ue&ue_px={}", b64(&ue));
        let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
        valid(&items, 0).event_type.to_string()
    };
    assert_eq!(named(46), format!("snowplow.unstruct.{}", "n".repeat(46)));
    assert!(event::is_valid_type(&named(46)));
    assert_eq!(named(47), "snowplow.unstruct");
}

#[test]
fn an_over_long_duid_falls_back_to_uid() {
    let q = format!(
        "e=pv&duid={}&uid=u-1",
        "d".repeat(crate::limits::PARTITION_KEY_MAX_CHARS + 1)
    );
    let items = parse_pixel(&q, &opts(), &any(), RECEIVED).unwrap();
    assert_eq!(valid(&items, 0).partition_value.as_deref(), Some("u-1"));
}

#[test]
fn a_body_of_exactly_the_limit_is_read() {
    let body = post(&[r#"{"e":"pv"}"#.into()]);
    let limits = crate::limits::Limits {
        max_body_bytes: body.len(),
        ..Default::default()
    };
    let exact = ParseOptions {
        limits,
        partition_key_field: None,
    };
    assert_eq!(
        parse_post(body.as_bytes(), &exact, &any(), RECEIVED)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_pixel_is_a_gif() {
    assert_eq!(&PIXEL_GIF[..6], b"GIF89a");
    assert_eq!(PIXEL_GIF[PIXEL_GIF.len() - 1], 0x3b);
}
