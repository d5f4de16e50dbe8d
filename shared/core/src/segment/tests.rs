//! The Segment reader's tests: routes, write keys, types, ids, clock skew, rejections.

use time::macros::datetime;

use super::*;

fn received() -> OffsetDateTime {
    datetime!(2026-12-03 12:00:10 UTC)
}

fn valid(items: &[ItemResult<'_>]) -> Vec<(String, String, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            ItemResult::Valid(e) => Some((
                e.event_type.to_string(),
                e.id.to_string(),
                e.event_time.clone().unwrap_or_default(),
            )),
            ItemResult::Rejected(_) => None,
        })
        .collect()
}

fn rejected(items: &[ItemResult<'_>]) -> Vec<(usize, RejectCode, String)> {
    items
        .iter()
        .filter_map(|i| match i {
            ItemResult::Rejected(r) => Some((r.index, r.code, r.reason.clone())),
            ItemResult::Valid(_) => None,
        })
        .collect()
}

#[test]
fn paths_name_the_calls() {
    assert_eq!(Call::from_path("/v1/batch"), Some(Call::Batch));
    assert_eq!(Call::from_path("/v1/track"), Some(Call::Single("track")));
    assert_eq!(Call::from_path("/v1/alias"), Some(Call::Single("alias")));
    assert_eq!(Call::from_path("/v1/events"), None);
    assert_eq!(Call::from_path("/v2/track"), None);
    assert_eq!(Call::from_path("/v1/trackx"), None);
    // analytics.js: the type's first letter, and `b` for a batch.
    for (short, t) in [
        ("t", "track"),
        ("i", "identify"),
        ("p", "page"),
        ("s", "screen"),
        ("g", "group"),
        ("a", "alias"),
    ] {
        assert_eq!(
            Call::from_path(&format!("/v1/{short}")),
            Some(Call::Single(t))
        );
    }
    assert_eq!(Call::from_path("/v1/b"), Some(Call::Batch));
    for none in ["/v1/e", "/v1/x", "/v1/", "/v1/tr", "/v1/ba", "/t"] {
        assert_eq!(Call::from_path(none), None, "{none}");
    }
}

#[test]
fn write_keys_are_checked_and_recorded_as_a_fingerprint() {
    let keys = WriteKeys::parse(" wk-live-1 ,, wk-live-2");
    assert!(!keys.is_empty());
    let p1 = keys.principal("wk-live-1").unwrap();
    assert!(
        p1.starts_with("segment:") && p1.len() == "segment:".len() + 16,
        "{p1}"
    );
    assert!(!p1.contains("wk-live"), "the key itself is never recorded");
    assert_ne!(Some(p1.clone()), keys.principal("wk-live-2"));
    assert_eq!(keys.principal("wk-live-1"), Some(p1));
    assert_eq!(keys.principal("wk-live-3"), None);
    assert_eq!(keys.principal(""), None);
    assert!(WriteKeys::parse(" , ").is_empty());
    assert_eq!(WriteKeys::parse("").principal(""), None);
}

#[test]
fn basic_auth_carries_the_key_as_the_user() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        basic_auth_key(&format!("Basic {}", b64("wk-1:"))).as_deref(),
        Some("wk-1")
    );
    assert_eq!(
        basic_auth_key(&format!("basic  {}", b64("wk-1"))).as_deref(),
        Some("wk-1")
    );
    assert_eq!(
        basic_auth_key(&format!("Basic {}", b64("wk-1:ignored"))).as_deref(),
        Some("wk-1")
    );
    assert_eq!(basic_auth_key(&format!("Basic {}", b64(":pw"))), None);
    assert_eq!(basic_auth_key("Bearer abc"), None);
    assert_eq!(basic_auth_key("Basic ***"), None);
    assert_eq!(basic_auth_key("Basic"), None);
}

#[test]
fn track_names_become_types() {
    assert_eq!(
        track_type("Order Completed"),
        "segment.track.order_completed"
    );
    assert_eq!(
        track_type("  checkout--Step 2 "),
        "segment.track.checkout_step_2"
    );
    assert_eq!(track_type("Ünïcode Thing"), "segment.track.n_code_thing");
    assert_eq!(track_type("注文"), "segment.track");
    assert_eq!(track_type("---"), "segment.track");
    let longest = "a".repeat(MAX_NAME_CHARS);
    assert_eq!(track_type(&longest), format!("segment.track.{longest}"));
    assert!(event::is_valid_type(&track_type(&longest)));
    assert_eq!(track_type(&format!("{longest}b")), "segment.track");
}

#[test]
fn clock_skew_is_corrected_by_sent_at() {
    let t = datetime!(2026-12-03 11:59:00 UTC);
    // The client's clock is 60 s behind: it sent at 12:00:00 (its time), we got it at 12:01:00.
    let sent = datetime!(2026-12-03 12:00:00 UTC);
    let got = datetime!(2026-12-03 12:01:00 UTC);
    assert_eq!(
        event::corrected_time(Some(t), Some(sent), got),
        datetime!(2026-12-03 12:00:00 UTC)
    );
    assert_eq!(event::corrected_time(Some(t), None, got), t);
    assert_eq!(event::corrected_time(None, Some(sent), got), got);
}

#[test]
fn a_batch_is_one_event_per_message_with_ids_types_and_times() {
    let body = br#"{"batch":[
        {"type":"track","event":"Order Completed","messageId":"m-1","timestamp":"2026-12-03T12:00:00.000Z","userId":"u-1","properties":{"revenue":12.5}},
        {"type":"identify","messageId":"m-2","timestamp":"2026-12-03T12:00:01Z","anonymousId":"a-9","traits":{"plan":"pro"}},
        {"type":"page","name":"Home","timestamp":"2026-12-03T12:00:02+01:00","sentAt":"2026-12-03T11:00:05Z"}
    ],"sentAt":"2026-12-03T12:00:05.000Z","writeKey":"wk-1","context":{"library":{"name":"x"}}}"#;
    let r = parse(body, Call::Batch, &ParseOptions::default(), received()).unwrap();
    assert_eq!(r.write_key.as_deref(), Some("wk-1"));
    let v = valid(&r.items);
    assert_eq!(v.len(), 3, "{:?}", rejected(&r.items));
    // Batch sentAt 12:00:05, received 12:00:10: +5 s.
    assert_eq!(
        v[0],
        (
            "segment.track.order_completed".into(),
            "m-1".into(),
            "2026-12-03T12:00:05.000Z".into()
        )
    );
    assert_eq!(v[1].0, "segment.identify");
    assert_eq!(v[1].2, "2026-12-03T12:00:06.000Z");
    // The message's own sentAt wins: 11:00:02Z sent 11:00:05Z, received 12:00:10 → 12:00:07.
    assert_eq!(v[2].0, "segment.page");
    assert_eq!(v[2].2, "2026-12-03T12:00:07.000Z");
    let ItemResult::Valid(first) = &r.items[0] else {
        unreachable!()
    };
    assert!(
        first
            .raw
            .starts_with(r#"{"type":"track","event":"Order Completed""#)
    );
    assert!(
        first.raw.ends_with(r#""properties":{"revenue":12.5}}"#),
        "byte for byte"
    );
    assert_eq!(first.partition_key(), "u-1");
    let ItemResult::Valid(second) = &r.items[1] else {
        unreachable!()
    };
    assert_eq!(second.partition_key(), "a-9", "anonymousId without userId");
    let ItemResult::Valid(third) = &r.items[2] else {
        unreachable!()
    };
    assert!(third.id_generated, "no messageId: one is generated");
    assert_eq!(third.partition_key(), third.id.as_ref());
}

#[test]
fn a_single_call_takes_its_type_from_the_route() {
    let body = br#"{"userId":"u-1","event":"Signed Up","messageId":"m-9","writeKey":"wk-2"}"#;
    let r = parse(
        body,
        Call::Single("track"),
        &ParseOptions::default(),
        received(),
    )
    .unwrap();
    assert_eq!(r.write_key.as_deref(), Some("wk-2"));
    assert_eq!(
        valid(&r.items),
        vec![(
            "segment.track.signed_up".into(),
            "m-9".into(),
            "2026-12-03T12:00:10.000Z".into()
        )],
        "no timestamp: the time we received it"
    );
    let r = parse(
        br#"{"userId":"u-1","type":"track"}"#,
        Call::Single("identify"),
        &ParseOptions::default(),
        received(),
    )
    .unwrap();
    assert_eq!(valid(&r.items)[0].0, "segment.identify");
}

#[test]
fn bad_messages_are_rejected_with_reasons_and_the_rest_go_through() {
    let body = br#"{"batch":[
        {"type":"track","messageId":"ok-1","event":"A"},
        {"type":"launch","messageId":"x-1"},
        {"messageId":"x-2"},
        {"type":"track","messageId":"x-3"},
        {"type":"track","messageId":"x-4","event":7},
        {"type":"page","messageId":42},
        {"type":"page","messageId":"x-6","timestamp":"yesterday"},
        {"type":"page","messageId":"x-7","a":1,"a":2},
        "not an object",
        {"type":"page","messageId":"ok-2","sentAt":"garbled","timestamp":"2026-12-03T12:00:00Z"},
        {"type":7},
        {"type":"track","messageId":"x-11","event":{"name":"A"}},
        {"type":"track","messageId":"x-12","event":["A"]},
        {"type":"page","messageId":null,"timestamp":null,"sentAt":null}
    ]}"#;
    let r = parse(body, Call::Batch, &ParseOptions::default(), received()).unwrap();
    let ids: Vec<String> = valid(&r.items).into_iter().map(|v| v.1).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[..2], ["ok-1", "ok-2"]);
    let ItemResult::Valid(nulls) = &r.items[13] else {
        unreachable!()
    };
    assert!(nulls.id_generated, "a null messageId is absent");
    assert_eq!(
        nulls.event_time.as_deref(),
        Some("2026-12-03T12:00:10.000Z"),
        "a null timestamp is absent"
    );
    let ItemResult::Valid(ok2) = &r.items[9] else {
        unreachable!()
    };
    assert_eq!(
        ok2.event_time.as_deref(),
        Some("2026-12-03T12:00:00.000Z"),
        "an unreadable sentAt is not used"
    );
    let codes: Vec<(usize, RejectCode)> = rejected(&r.items).iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(
        codes,
        vec![
            (1, RejectCode::InvalidType),
            (2, RejectCode::MissingType),
            (3, RejectCode::InvalidType),
            (4, RejectCode::InvalidType),
            (5, RejectCode::InvalidId),
            (6, RejectCode::InvalidTs),
            (7, RejectCode::DuplicateKey),
            (8, RejectCode::NotAnObject),
            (10, RejectCode::InvalidType),
            (11, RejectCode::InvalidType),
            (12, RejectCode::InvalidType),
        ]
    );
    let reasons = rejected(&r.items);
    assert!(
        reasons[0].2.contains("\"launch\" is not a Segment call"),
        "{}",
        reasons[0].2
    );
    assert!(reasons[2].2.contains("needs an \"event\" name"));
    assert!(reasons[3].2.contains("not a number"));
    assert!(
        reasons[4]
            .2
            .contains("\"messageId\" must be a string, not a number")
    );
    assert!(
        reasons[9]
            .2
            .contains("\"event\" must be a string, not an object"),
        "{}",
        reasons[9].2
    );
    assert!(
        reasons[10]
            .2
            .contains("\"event\" must be a string, not an array"),
        "{}",
        reasons[10].2
    );
}

#[test]
fn whole_body_errors() {
    let o = ParseOptions::default();
    let e = |b: &[u8], c| parse(b, c, &o, received()).unwrap_err().code();
    assert_eq!(e(b"", Call::Batch), "empty_body");
    assert_eq!(e(b"{", Call::Batch), "invalid_json");
    assert_eq!(e(br#"{"events":[]}"#, Call::Batch), "invalid_body");
    assert_eq!(e(br#"{"batch":[]}"#, Call::Batch), "no_events");
    assert_eq!(e(br#"[1]"#, Call::Batch), "invalid_json");
    assert_eq!(e(b"\xff", Call::Single("track")), "invalid_utf8");
    let many = format!(
        "{{\"batch\":[{}]}}",
        vec![r#"{"type":"page"}"#; o.limits.max_events + 1].join(",")
    );
    assert_eq!(e(many.as_bytes(), Call::Batch), "too_many_events");
    let small = ParseOptions {
        limits: crate::limits::Limits {
            max_body_bytes: 10,
            ..Default::default()
        },
        ..ParseOptions::default()
    };
    assert_eq!(
        parse(
            br#"{"batch":[{"type":"page"}]}"#,
            Call::Batch,
            &small,
            received()
        )
        .unwrap_err()
        .code(),
        "body_too_large"
    );
}

#[test]
fn partition_keys_come_from_user_id_then_anonymous_id_when_usable() {
    let long = "u".repeat(crate::limits::PARTITION_KEY_MAX_CHARS + 1);
    let body = format!(
        r#"{{"batch":[
        {{"type":"page","messageId":"k-1","userId":42,"anonymousId":"a-1"}},
        {{"type":"page","messageId":"k-2","userId":"","anonymousId":"a-2"}},
        {{"type":"page","messageId":"k-3","userId":"{long}","anonymousId":"a-3"}},
        {{"type":"page","messageId":"k-4","userId":true,"anonymousId":-7}},
        {{"type":"page","messageId":"k-5","userId":{{"id":1}}}},
        {{"type":"track","messageId":"k-6","event":true}}
    ]}}"#
    );
    let r = parse(
        body.as_bytes(),
        Call::Batch,
        &ParseOptions::default(),
        received(),
    )
    .unwrap();
    let keys: Vec<String> = r
        .items
        .iter()
        .filter_map(|i| match i {
            ItemResult::Valid(e) => Some(e.partition_key().to_owned()),
            ItemResult::Rejected(_) => None,
        })
        .collect();
    assert_eq!(keys, ["42", "a-2", "a-3", "-7", "k-5"]);
    let reasons = rejected(&r.items);
    assert!(
        reasons[0]
            .2
            .contains("\"event\" must be a string, not a boolean"),
        "{}",
        reasons[0].2
    );
}

#[test]
fn clocks_thousands_of_years_apart_do_not_panic() {
    let got = datetime!(2026-12-03 12:01:00 UTC);
    let first = datetime!(0000-01-01 00:00:00 UTC);
    let last = datetime!(9999-12-31 23:59:59 UTC);
    assert_eq!(event::corrected_time(Some(first), Some(last), got), got);
    assert_eq!(event::corrected_time(Some(last), Some(first), got), got);
}
