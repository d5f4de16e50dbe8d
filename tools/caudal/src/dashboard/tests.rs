use super::*;

const T0: i64 = 1_796_400_000; // a whole minute

fn sample() -> Dashboard {
    Dashboard {
        stack: "shop<prod>".into(),
        at: T0 + 180,
        since: T0,
        minutes: minutes(
            T0,
            T0 + 180,
            &[(T0, 10.0), (T0 + 60, 5.0)],
            &[(T0 + 60, 15.0)],
            &[(T0 + 120, 14.0)],
        ),
        flow_source: "CloudWatch".into(),
        lag_s: Some(0.5),
        latency: Latency {
            events: 12,
            p50_ms: 1_250,
            p95_ms: 2_000,
            p99_ms: 31_000,
        },
        rejects: vec![RejectGroup {
            code: "schema".into(),
            rule: "page_view".into(),
            count: 1,
            samples: vec![(
                "/page/url: required".into(),
                "{\"type\":\"page_view\",\"x\":\"<script>alert(1)</script>\"}".into(),
            )],
        }],
        hourly: vec![("page_view".into(), T0 - 3600, 7), ("search".into(), T0, 3)],
        objects: vec![
            ObjectBalance {
                raw_key: "raw/a".into(),
                records: 10,
                rows_in_tables: 9,
                difference: 1,
                ..ObjectBalance::default()
            },
            ObjectBalance {
                raw_key: "raw/b".into(),
                records: 4,
                rows_in_tables: 4,
                ..ObjectBalance::default()
            },
        ],
        unbalanced: 1,
        objects_loaded: 2,
        queues: vec![
            (
                "loader queue".into(),
                Depth {
                    visible: 3,
                    ..Depth::default()
                },
            ),
            (
                "loader dead-letter queue".into(),
                Depth {
                    visible: 2,
                    ..Depth::default()
                },
            ),
            ("raw-writer on-failure queue".into(), Depth::default()),
        ],
        problems: vec!["2 message(s) in the loader dead-letter queue: look".into()],
        ..Dashboard::default()
    }
}

/// The text of the element carrying `data-figure="<id>"`.
fn figure(page: &str, id: &str) -> String {
    let at = page
        .find(&format!("data-figure=\"{id}\">"))
        .unwrap_or_else(|| panic!("no figure {id}"));
    let rest = &page[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find('<').unwrap();
    rest[start..end].to_owned()
}

#[test]
fn minutes_fill_the_window_and_keep_each_value_in_its_minute() {
    let m = minutes(
        T0,
        T0 + 150,
        &[(T0 - 60, 99.0), (T0, 1.0), (T0 + 59, 2.0), (T0 + 120, 4.0)],
        &[(T0 + 60, 3.0), (T0 + 181, 50.0)],
        &[],
    );
    assert_eq!(m.len(), 3, "{m:?}");
    assert_eq!(
        m.iter().map(|m| m.at).collect::<Vec<_>>(),
        vec![T0, T0 + 60, T0 + 120]
    );
    assert_eq!(
        m.iter().map(|m| m.accepted).collect::<Vec<_>>(),
        vec![3.0, 0.0, 4.0],
        "before the window: dropped; within a minute: summed"
    );
    assert_eq!(
        m.iter().map(|m| m.archived).collect::<Vec<_>>(),
        vec![0.0, 3.0, 0.0],
        "after the window: dropped"
    );
    assert_eq!(minutes(T0, T0, &[], &[], &[]).len(), 1);
    assert_eq!(minutes(T0, T0 - 60, &[], &[], &[]).len(), 1);
    assert_eq!(minutes(T0, T0 + 59, &[], &[], &[]).len(), 1);
    assert_eq!(minutes(T0, T0 + 60, &[], &[], &[]).len(), 2);
}

#[test]
fn the_page_shows_the_figures_and_highlights_what_is_off() {
    let d = sample();
    assert_eq!(d.totals(), (15.0, 15.0, 14.0));
    let page = render(&d, None);
    assert_eq!(figure(&page, "accepted"), "15");
    assert_eq!(figure(&page, "archived"), "15");
    assert_eq!(figure(&page, "loaded"), "14");
    assert_eq!(figure(&page, "rejected"), "1");
    assert_eq!(figure(&page, "p50"), "1.25 s");
    assert_eq!(figure(&page, "p99"), "31 s");
    assert_eq!(figure(&page, "lag"), "0.5 s");
    assert_eq!(figure(&page, "dlq"), "2");
    assert_eq!(figure(&page, "failures"), "0");
    assert_eq!(figure(&page, "off"), "1");
    assert!(page.contains("<div class=\"tile warn\"><div class=\"label\">loader dead letters"));
    assert!(page.contains("<div class=\"tile\"><div class=\"label\">raw-writer failures"));
    assert_eq!(
        page.matches("data-off=\"true\"").count(),
        1,
        "one object off"
    );
    assert!(page.contains("<tr class=\"off\" data-off=\"true\"><td><code>raw/a</code>"));
    assert!(page.contains("<tr><td><code>raw/b</code>"));
    assert!(page.contains("data-code=\"schema\" data-rule=\"page_view\""));
    assert!(page.contains("/page/url: required"));
    assert!(page.contains("Needs a person"));
    assert!(page.contains("<tr data-type=\"search\">"));
    // Raw lines and names are text, never markup.
    assert!(
        !page.contains("<script>alert"),
        "a raw line's markup is escaped"
    );
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("caudal — shop&lt;prod&gt;"));
    assert!(!page.contains("<script"), "a report has no script");
    let live = render(&d, Some(2));
    assert!(live.contains("<script>setInterval(") && live.contains("},2000);</script>"));
}

#[test]
fn an_empty_stack_renders_without_figures_it_does_not_have() {
    let d = Dashboard {
        stack: "local".into(),
        at: T0,
        since: T0,
        minutes: minutes(T0, T0, &[], &[], &[]),
        ..Dashboard::default()
    };
    let page = render(&d, None);
    assert_eq!(figure(&page, "p50"), "—");
    assert_eq!(figure(&page, "lag"), "—");
    assert_eq!(figure(&page, "health"), "OK: nothing needs a person");
    assert!(page.contains("No rejects in the window."));
    assert!(page.contains("No events in the last day."));
    let lagging = Dashboard {
        lag_s: Some(status::BEHIND_AFTER.whole_seconds() as f64 + 1.0),
        ..d.clone()
    };
    assert!(
        render(&lagging, None)
            .contains("<div class=\"tile warn\"><div class=\"label\">raw-writer behind by")
    );
    let at_limit = Dashboard {
        lag_s: Some(status::BEHIND_AFTER.whole_seconds() as f64),
        ..d
    };
    assert!(
        render(&at_limit, None)
            .contains("<div class=\"tile\"><div class=\"label\">raw-writer behind by")
    );
}

#[test]
fn the_window_comes_from_the_query_and_stays_within_a_day() {
    let now = OffsetDateTime::from_unix_timestamp(T0).unwrap();
    assert_eq!(window_from_query(None, now), now - WINDOW);
    assert_eq!(
        window_from_query(Some("minutes=5"), now),
        now - Duration::minutes(5)
    );
    assert_eq!(
        window_from_query(Some("minutes=100000"), now),
        now - MAX_WINDOW
    );
    assert_eq!(
        window_from_query(Some("minutes=0"), now),
        now - Duration::minutes(1)
    );
    assert_eq!(
        window_from_query(Some("x=1&since=2026-12-04T10%3A00%3A00Z"), now),
        OffsetDateTime::parse(
            "2026-12-04T10:00:00Z",
            &time::format_description::well_known::Rfc3339
        )
        .unwrap()
    );
    assert_eq!(
        window_from_query(Some("since=yesterday&minutes=x&="), now),
        now - WINDOW,
        "what it cannot read leaves the default"
    );
}

#[test]
fn text_is_escaped_and_cut_on_characters() {
    assert_eq!(esc("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&#39;");
    assert_eq!(shorten("héllo", 2), "hé…");
    assert_eq!(shorten("héllo", 5), "héllo");
    assert_eq!(secs(9_999), "10.00 s");
    assert_eq!(secs(10_000), "10 s");
    assert_eq!(hhmm(T0 + 3 * 3600 + 7 * 60), {
        let t = OffsetDateTime::from_unix_timestamp(T0 + 3 * 3600 + 7 * 60).unwrap();
        format!("{:02}:{:02}", t.hour(), t.minute())
    });
}

#[test]
fn a_sample_shows_the_client_event_byte_for_byte_and_else_the_line() {
    use caudal_core::envelope::{self, EventRef, RequestMeta};
    let sent = br#"{"type":"purchase","amount": -5,"x":"<b>"}"#;
    let env = envelope::encode(
        &EventRef {
            id: "e1",
            id_generated: false,
            event_type: "purchase",
            raw: sent,
            event_time: None,
        },
        &RequestMeta::default(),
    );
    let coords = caudal_core::raw::KinesisCoords {
        shard_id: "shardId-000000000000".into(),
        sequence_number: "1".into(),
        arrival: "2026-12-04T10:00:00.000Z".into(),
        partition_key: "k".into(),
        sub_sequence_number: Some(3),
    };
    let mut line = Vec::new();
    caudal_core::raw::write_line(&mut line, &coords, &env).unwrap();
    let line = String::from_utf8(line).unwrap();
    let line = line.trim_end();
    assert_eq!(client_event(line), std::str::from_utf8(sent).unwrap());
    let cut = &line[..line.len() - 10];
    assert_eq!(client_event(cut), cut, "a cut line is shown as it is");
    assert_eq!(client_event("not json"), "not json");
    let d = Dashboard {
        rejects: vec![RejectGroup {
            code: "schema".into(),
            rule: "purchase".into(),
            count: 1,
            samples: vec![("-5 is less than the minimum of 0".into(), line.to_owned())],
        }],
        ..Dashboard::default()
    };
    let page = render(&d, None);
    assert!(
        page.contains("<code>{&quot;type&quot;:&quot;purchase&quot;,&quot;amount&quot;: -5,&quot;x&quot;:&quot;&lt;b&gt;&quot;}</code><details>"),
        "{page}"
    );
    assert!(
        page.contains("shardId-000000000000"),
        "the whole line under it"
    );
}
