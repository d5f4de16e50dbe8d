//! Engine tests: the bundled example file end to end, then each rule feature on small files.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::*;
use crate::raw::KinesisCoords;

fn now() -> OffsetDateTime {
    time::macros::datetime!(2026-11-25 20:00:00 UTC)
}

fn lineage() -> Lineage<'static> {
    Lineage {
        raw_key: "raw/dt=2026-11-25/hr=19/shardId-000000000000/a-b.ndjson.gz",
        line: 7,
        loaded_at: now(),
    }
}

/// A raw-archive line for `event` with the given user agent and source IP.
fn raw(event: &Value, ua: Option<&str>, ip: Option<&str>) -> Vec<u8> {
    raw_text(&serde_json::to_vec(event).unwrap(), ua, ip)
}

/// [`raw`] for an event given by its exact bytes (as a client sent them).
fn raw_text(bytes: &[u8], ua: Option<&str>, ip: Option<&str>) -> Vec<u8> {
    raw_from(bytes, ua, ip, None)
}

/// [`raw_text`] for an event sent by `principal`.
fn raw_from(bytes: &[u8], ua: Option<&str>, ip: Option<&str>, principal: Option<&str>) -> Vec<u8> {
    let event: Value = serde_json::from_slice(bytes).unwrap();
    let ty = event.get("type").and_then(Value::as_str).unwrap_or("x");
    let id = event.get("id").and_then(Value::as_str).unwrap_or("ev-1");
    let env = crate::envelope::encode(
        &crate::envelope::EventRef {
            id,
            id_generated: false,
            event_type: ty,
            raw: bytes,
            event_time: None,
        },
        &crate::envelope::RequestMeta {
            request_id: "req-1".into(),
            received_at: Some(crate::envelope::format_timestamp(
                time::macros::datetime!(2026-11-25 19:55:17.123 UTC),
            )),
            source_ip: ip.map(str::to_owned),
            user_agent: ua.map(str::to_owned),
            principal: principal.map(str::to_owned),
            stage: Some("$default".into()),
            protocol: None,
        },
    );
    let coords = KinesisCoords {
        shard_id: "shardId-000000000003".into(),
        sequence_number: "4959".into(),
        arrival: "2026-11-25T19:55:18.000Z".into(),
        partition_key: "pk".into(),
        sub_sequence_number: None,
    };
    let mut out = Vec::new();
    crate::raw::write_line(&mut out, &coords, &env).unwrap();
    out.pop();
    out
}

fn bundled() -> RuleSet {
    RuleSet::from_yaml(BUNDLED_RULES_YAML).unwrap()
}

fn row_of(rs: &RuleSet, out: &Outcome) -> Map<String, Value> {
    match out {
        Outcome::Rows(rows) => {
            assert_eq!(rows.len(), 1);
            rs.row_json(&rows[0])["values"].as_object().unwrap().clone()
        }
        other => panic!("expected a row, got {other:?}"),
    }
}

fn table_of(rs: &RuleSet, out: &Outcome) -> String {
    match out {
        Outcome::Rows(rows) => rs.tables()[rows[0].table].name.to_string(),
        other => panic!("expected a row, got {other:?}"),
    }
}

fn reject_of(out: Outcome) -> Reject {
    match out {
        Outcome::Rejected(r) => r,
        other => panic!("expected a reject, got {other:?}"),
    }
}

const UA: Option<&str> = Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile/15E148");
const IP: Option<&str> = Some("203.0.113.77");

#[test]
fn ruleset_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RuleSet>();
}

#[test]
fn bundled_page_view_maps_every_column() {
    let rs = bundled();
    let ev = json!({"type":"page_view","id":"pv-1","ts":"2026-11-27T23:30:00-02:00","session_id":"s1",
        "page":{"url":"  https://shop.example/p/1?x=1#top ","title":" Shoes ","referrer":"https://google.com/"}});
    let out = rs.apply_line(&raw(&ev, UA, IP), &lineage());
    assert_eq!(table_of(&rs, &out), "page_views");
    let r = row_of(&rs, &out);
    assert_eq!(r["event_time"], "2026-11-28T01:30:00.000000Z");
    assert_eq!(r["event_date"], "2026-11-28");
    assert_eq!(r["event_hour"], 1);
    assert_eq!(r["day_of_week"], 6);
    assert_eq!(r["user_id"], Value::Null);
    assert_eq!(r["session_id"], "s1");
    assert_eq!(r["url"], "https://shop.example/p/1?x=1#top");
    assert_eq!(r["page_path"], "  https://shop.example/p/1");
    assert_eq!(r["title"], "Shoes");
    assert_eq!(r["ip_prefix"], "203.0.113.0");
    assert_eq!(r["is_mobile"], true);
    // lineage
    assert_eq!(r["event_id"], "pv-1");
    assert_eq!(r["event_type"], "page_view");
    assert_eq!(r["received_at"], "2026-11-25T19:55:17.123000Z");
    assert_eq!(r["raw_key"], lineage().raw_key);
    assert_eq!(r["raw_line"], 7);
    assert_eq!(r["rule_version"], rs.version());
    assert_eq!(r["loaded_at"], "2026-11-25T20:00:00.000000Z");
}

#[test]
fn bundled_purchase_hashes_email_and_keeps_decimal() {
    let rs = bundled();
    let ev = json!({"type":"purchase","ts":"2026-11-25T19:00:00Z","order_id":"o-9","email":" Ann@Example.COM ",
        "currency":"eur","amount":612.5,"coupon":" bf24 ","items":[{"sku":"a","qty":2,"price":300},{"sku":"b","qty":1}]});
    let out = rs.apply_line(&raw(&ev, UA, Some("2001:db8:abcd:12::1")), &lineage());
    let r = row_of(&rs, &out);
    let expected = hex::encode(Sha256::digest(b"caudal-example-salt-7f3a9cann@example.com"));
    assert_eq!(r["email_hash"], expected);
    assert_eq!(r["currency"], "EUR");
    assert_eq!(r["amount"], "612.50");
    assert_eq!(r["item_count"], 2);
    assert_eq!(r["items"][0]["sku"], "a");
    assert_eq!(r["coupon"], "BF24");
    assert_eq!(r["is_large_order"], true);
    assert_eq!(r["ip_prefix"], "2001:db8:abcd::");
    assert_eq!(r["user_id"], Value::Null);
}

#[test]
fn bundled_signup_defaults_and_coalesce() {
    let rs = bundled();
    let ev = json!({"type":"signup","ts":"2026-11-25T08:00:00Z","user_id":"u1","email":"Bob@Mail.Example.org","country":"de"});
    let r = row_of(&rs, &rs.apply_line(&raw(&ev, UA, IP), &lineage()));
    assert_eq!(r["plan"], "free");
    assert_eq!(r["marketing_opt_in"], false);
    assert_eq!(r["email_domain"], "mail.example.org");
    assert_eq!(r["country"], "DE");
    assert_eq!(r["signup_date"], "2026-11-25");
    assert_eq!(r["referral_code"], Value::Null);
}

#[test]
fn global_and_type_filters_name_their_rule() {
    let rs = bundled();
    let pv = json!({"type":"page_view","ts":"2026-11-25T19:00:00Z","page":{"url":"https://x/"}});
    let out = rs.apply_line(
        &raw(
            &pv,
            Some("Googlebot/2.1 (+http://www.google.com/bot.html)"),
            IP,
        ),
        &lineage(),
    );
    assert_eq!(
        out,
        Outcome::Filtered {
            rule: "drop_bots".into()
        }
    );
    // no user agent at all: not a bot
    assert!(matches!(
        rs.apply_line(&raw(&pv, None, None), &lineage()),
        Outcome::Rows(_)
    ));
    let test = json!({"type":"signup","test":true});
    // global filters run before the schema: an internal test event is filtered, not rejected
    assert_eq!(
        rs.apply_line(&raw(&test, UA, IP), &lineage()),
        Outcome::Filtered {
            rule: "drop_internal_test".into()
        }
    );
    let hc =
        json!({"type":"page_view","ts":"2026-11-25T19:00:00Z","page":{"url":"https://x/healthz"}});
    assert_eq!(
        rs.apply_line(&raw(&hc, UA, IP), &lineage()),
        Outcome::Filtered {
            rule: "drop_health_checks".into()
        }
    );
    assert_eq!(
        rs.filter_names(),
        vec!["drop_bots", "drop_internal_test", "drop_health_checks"]
    );
}

#[test]
fn schema_failures_carry_the_json_pointer() {
    let rs = bundled();
    let ev = json!({"type":"purchase","id":"p-bad","ts":"2026-11-25T19:00:00Z","order_id":"o","currency":"EUR","amount":10,
        "items":[{"sku":"a","qty":0}]});
    let r = reject_of(rs.apply_line(&raw(&ev, UA, IP), &lineage()));
    assert_eq!(r.code, "schema");
    assert_eq!(r.rule.as_deref(), Some("purchase"));
    assert_eq!(r.path.as_deref(), Some("/items/0/qty"));
    assert_eq!(r.event_id.as_deref(), Some("p-bad"));
    assert_eq!(r.event_type.as_deref(), Some("purchase"));
    let missing = json!({"type":"signup","ts":"2026-11-25T19:00:00Z","user_id":"u"});
    let r = reject_of(rs.apply_line(&raw(&missing, UA, IP), &lineage()));
    assert_eq!((r.code.as_str(), r.path.as_deref()), ("schema", Some("")));
    assert!(r.message.contains("email"), "{}", r.message);
    let bad_format = json!({"type":"signup","ts":"yesterday","user_id":"u","email":"a@b.co"});
    let r = reject_of(rs.apply_line(&raw(&bad_format, UA, IP), &lineage()));
    assert_eq!(r.path.as_deref(), Some("/ts"));
}

#[test]
fn check_event_applies_schema_and_known_types_only() {
    let rs = bundled();
    assert_eq!(
        rs.check_event(
            "search",
            &json!({"type":"search","ts":"2026-11-25T19:00:00Z","query":"x"})
        ),
        Ok(())
    );
    let r = rs
        .check_event(
            "search",
            &json!({"type":"search","ts":"2026-11-25T19:00:00Z","query":""}),
        )
        .unwrap_err();
    assert_eq!(
        (r.code.as_str(), r.path.as_deref()),
        ("schema", Some("/query"))
    );
    // catch_all mode: unknown types are fine at ingest
    assert_eq!(rs.check_event("newsletter_open", &json!({})), Ok(()));
    let strict = RuleSet::from_yaml(MINI).unwrap();
    assert_eq!(
        strict.check_event("nope", &json!({})).unwrap_err().code,
        "unknown_type"
    );
}

#[test]
fn unknown_types_go_to_catch_all_verbatim() {
    let rs = bundled();
    assert!(rs.has_catch_all());
    let ev = json!({"type":"newsletter_open","campaign":"nov","n":[1,2]});
    let out = rs.apply_line(&raw(&ev, UA, IP), &lineage());
    assert_eq!(table_of(&rs, &out), "unknown_events");
    let Outcome::Rows(rows) = &out else {
        unreachable!()
    };
    assert_eq!(
        rows[0].values[0],
        Cell::Super(serde_json::to_string(&ev).unwrap())
    );
    let r = row_of(&rs, &out);
    assert_eq!(r["event_type"], "newsletter_open");
    let t = rs.tables().iter().find(|t| t.catch_all).unwrap();
    assert_eq!(t.columns[0].ty, ColumnType::Super);
}

const MINI: &str = r#"
version: 1
tables:
  t:
    columns:
      - {name: a, type: VARCHAR(5)}
      - {name: n, type: BIGINT}
      - {name: s, type: SUPER}
      - {name: k, type: VARCHAR(10), nullable: false}
events:
  e:
    table: t
    columns:
      a: /event/a
      n: /event/n
      s: /event/s
      k: {const: fixed}
"#;

#[test]
fn unknown_types_rejected_when_configured() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    assert!(!rs.has_catch_all());
    let r = reject_of(rs.apply_line(&raw(&json!({"type":"zzz"}), None, None), &lineage()));
    assert_eq!(r.code, "unknown_type");
    assert_eq!(r.event_type.as_deref(), Some("zzz"));
    assert_eq!(rs.tables().len(), 1);
}

#[test]
fn mapping_errors_name_the_column_and_never_truncate() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    let r = reject_of(rs.apply_line(
        &raw(&json!({"type":"e","a":"toolong"}), None, None),
        &lineage(),
    ));
    assert_eq!(r.code, "mapping");
    assert_eq!(r.rule.as_deref(), Some("e.a"));
    assert_eq!(r.path.as_deref(), Some("/event/a"));
    assert!(r.message.contains("VARCHAR(5)"), "{}", r.message);
    let r = reject_of(rs.apply_line(&raw(&json!({"type":"e","n":1.5}), None, None), &lineage()));
    assert_eq!(r.rule.as_deref(), Some("e.n"));
    assert!(r.message.contains("not an integer"));
    // nulls: SUPER null becomes JSON null, other columns NULL
    let out = rs.apply_line(&raw(&json!({"type":"e"}), None, None), &lineage());
    let Outcome::Rows(rows) = out else { panic!() };
    assert_eq!(
        rows[0].values[..4],
        [
            Cell::Null,
            Cell::Null,
            Cell::Super("null".into()),
            Cell::Text("fixed".into())
        ]
    );
}

#[test]
fn parse_rejects() {
    let rs = bundled();
    for bad in [&b"not json"[..], b"{\"kinesis\":{}}", b"{\"kinesis\":{\"shard_id\":\"s\",\"sequence_number\":\"1\",\"arrival\":\"x\",\"partition_key\":\"p\"},\"envelope\":{\"v\":1}}"] {
        let r = reject_of(rs.apply_line(bad, &lineage()));
        assert_eq!(r.code, "parse", "{}", String::from_utf8_lossy(bad));
        assert!(r.event_id.is_none());
    }
}

#[test]
fn cel_runtime_failure_in_a_filter_is_a_filter_reject() {
    let yaml = r#"
version: 1
filters:
  - {name: needs_flag, drop_if: "event.flag == 'x'"}
  - {name: not_bool, drop_if: "'yes'"}
tables:
  t: {columns: [{name: a, type: BIGINT}]}
events:
  e: {table: t, columns: {a: /event/a}}
"#;
    let rs = RuleSet::from_yaml(yaml).unwrap();
    let r = reject_of(rs.apply_line(&raw(&json!({"type":"e"}), None, None), &lineage()));
    assert_eq!(
        (r.code.as_str(), r.rule.as_deref()),
        ("filter", Some("needs_flag"))
    );
    let r = reject_of(rs.apply_line(
        &raw(&json!({"type":"e","flag":"y"}), None, None),
        &lineage(),
    ));
    assert_eq!(
        (r.code.as_str(), r.rule.as_deref()),
        ("filter", Some("not_bool"))
    );
    assert!(r.message.contains("not a boolean"));
}

#[test]
fn expressions_see_envelope_and_kinesis() {
    let yaml = r#"
version: 1
tables:
  t:
    columns:
      - {name: shard, type: VARCHAR(40)}
      - {name: arrival, type: TIMESTAMPTZ}
      - {name: ua_len, type: INTEGER}
      - {name: first, type: VARCHAR(10)}
      - {name: whole, type: SUPER}
events:
  e:
    table: t
    columns:
      shard: {expr: "kinesis.shard_id"}
      arrival: /kinesis/arrival
      ua_len: {expr: "size(envelope.user_agent)"}
      first: {coalesce: [/event/missing, {expr: "event.b"}, {const: never}]}
      whole: /event
"#;
    let rs = RuleSet::from_yaml(yaml).unwrap();
    let r = row_of(
        &rs,
        &rs.apply_line(
            &raw(&json!({"type":"e","b":"bee"}), Some("abc"), None),
            &lineage(),
        ),
    );
    assert_eq!(r["shard"], "shardId-000000000003");
    assert_eq!(r["arrival"], "2026-11-25T19:55:18.000000Z");
    assert_eq!(r["ua_len"], 3);
    assert_eq!(r["first"], "bee");
    assert_eq!(r["whole"], json!({"type":"e","b":"bee"}));
}

#[test]
fn decimals_take_the_clients_digits_never_an_f64() {
    let yaml = r#"
version: 1
tables:
  t:
    columns:
      - {name: exact, type: "DECIMAL(38,2)"}
      - {name: nested, type: "DECIMAL(38,4)"}
      - {name: first, type: "DECIMAL(38,2)"}
      - {name: too_fine, type: "DECIMAL(38,2)", nullable: true}
events:
  e:
    table: t
    columns:
      exact: /event/amount
      nested: /event/lines/1/p~1q
      first: {coalesce: [/event/missing, /event/amount]}
      too_fine: /event/fine
"#;
    let rs = RuleSet::from_yaml(yaml).unwrap();
    // 17+ significant digits: an f64 would make these 12345678901234568.00 and 0.1000.
    let ev = br#"{"type":"e","amount":12345678901234567.89,"lines":[0,{"p/q":1000000000000000000.0001}]}"#;
    let r = row_of(&rs, &rs.apply_line(&raw_text(ev, UA, IP), &lineage()));
    assert_eq!(r["exact"], "12345678901234567.89");
    assert_eq!(r["nested"], "1000000000000000000.0001");
    assert_eq!(r["first"], "12345678901234567.89");
    assert_eq!(r["too_fine"], Value::Null);
    // Digits the column cannot hold are a reject, not a rounding (as an f64, 0.1000000000000000055
    // prints as 0.1 and would have passed).
    let ev = br#"{"type":"e","amount":1,"lines":[0,{"p/q":1}],"fine":0.1000000000000000055}"#;
    match rs.apply_line(&raw_text(ev, UA, IP), &lineage()) {
        Outcome::Rejected(r) => {
            assert_eq!(r.rule.as_deref(), Some("e.too_fine"));
            assert!(r.message.contains("rounding"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn event_text_form_is_read() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    let raw_bytes = b"{\n\"type\":\"e\",\"a\":\"hi\"}";
    let env = crate::envelope::encode(
        &crate::envelope::EventRef {
            id: "x1",
            id_generated: true,
            event_type: "e",
            raw: raw_bytes,
            event_time: None,
        },
        &crate::envelope::RequestMeta::default(),
    );
    assert!(String::from_utf8_lossy(&env).contains("event_text"));
    let coords = KinesisCoords {
        shard_id: "s".into(),
        sequence_number: "1".into(),
        arrival: "a".into(),
        partition_key: "p".into(),
        sub_sequence_number: None,
    };
    let mut line = Vec::new();
    crate::raw::write_line(&mut line, &coords, &env).unwrap();
    line.pop();
    let r = row_of(&rs, &rs.apply_line(&line, &lineage()));
    assert_eq!(r["a"], "hi");
    assert_eq!(r["received_at"], Value::Null);
}

fn err(yaml: &str) -> String {
    RuleSet::from_yaml(yaml).unwrap_err().to_string()
}

fn with_table_columns(cols: &str) -> String {
    format!("version: 1\ntables:\n  t:\n    columns:\n{cols}\nevents:\n  e: {{table: t}}\n")
}

#[test]
fn bad_rules_files_fail_clearly() {
    // not YAML / unknown key
    assert!(err("version: [").starts_with("rules file:"));
    let e = err("version: 1\ntables: {}\nevents: {}\ncolour: red\n");
    assert!(e.contains("unknown field `colour`"), "{e}");
    // unknown type name
    let e = err(&with_table_columns("      - {name: a, type: STRING}"));
    assert!(
        e.contains("tables.t.columns.a") && e.contains("unknown type name"),
        "{e}"
    );
    // VARCHAR without length
    let e = err(&with_table_columns("      - {name: a, type: VARCHAR}"));
    assert!(e.contains("needs a length"), "{e}");
    // duplicate column
    let e = err(&with_table_columns(
        "      - {name: a, type: BIGINT}\n      - {name: a, type: BIGINT}",
    ));
    assert!(
        e.contains("tables.t.columns.a") && e.contains("duplicate column"),
        "{e}"
    );
    // injection attempts as column and table names
    let e = err(&with_table_columns(
        "      - {name: \"users; drop table x\", type: BIGINT}",
    ));
    assert!(
        e.contains("not a valid identifier") && e.contains("users; drop table x"),
        "{e}"
    );
    let e = err(
        "version: 1\ntables:\n  \"t; drop table x\":\n    columns: [{name: a, type: BIGINT}]\nevents:\n  e: {table: t}\n",
    );
    assert!(e.contains("not a valid identifier"), "{e}");
    // reserved lineage name
    let e = err(&with_table_columns(
        "      - {name: event_id, type: BIGINT}",
    ));
    assert!(e.contains("reserved"), "{e}");
    // bad CEL syntax, unknown variable
    let base = "version: 1\ntables:\n  t: {columns: [{name: a, type: BIGINT}]}\nevents:\n  e:\n    table: t\n";
    let e = err(&format!(
        "{base}    columns: {{a: {{expr: \"event.a +\"}}}}\n"
    ));
    assert!(
        e.contains("events.e.columns.a") && e.contains("CEL syntax error"),
        "{e}"
    );
    let e = err(&format!(
        "{base}    filters: [{{name: f, drop_if: \"request.x\"}}]\n"
    ));
    assert!(
        e.contains("events.e.filters[0]") && e.contains("unknown variable `request`"),
        "{e}"
    );
    // bad JSON Schema
    let e = err(&format!("{base}    schema: {{type: strin}}\n"));
    assert!(
        e.contains("events.e.schema") && e.contains("invalid JSON Schema"),
        "{e}"
    );
    // unknown table, unknown column, bad pointer, unknown enrichment, two sources
    let e = err(
        "version: 1\ntables:\n  t: {columns: [{name: a, type: BIGINT}]}\nevents:\n  e: {table: nope}\n",
    );
    assert!(
        e.contains("events.e.table") && e.contains("not declared"),
        "{e}"
    );
    let e = err(&format!("{base}    columns: {{b: /event/b}}\n"));
    assert!(
        e.contains("events.e.columns.b") && e.contains("no mappable column"),
        "{e}"
    );
    let e = err(&format!("{base}    columns: {{a: /payload/b}}\n"));
    assert!(e.contains("must start with /event"), "{e}");
    let e = err(&format!("{base}    columns: {{a: /envelope/nope}}\n"));
    assert!(e.contains("unknown field"), "{e}");
    let e = err(&format!(
        "{base}    columns: {{a: {{from: /event/a, then: [lowercase]}}}}\n"
    ));
    assert!(
        e.contains("events.e.columns.a.then[0]") && e.contains("unknown enrichment"),
        "{e}"
    );
    let e = err(&format!(
        "{base}    columns: {{a: {{from: /event/a, const: 1}}}}\n"
    ));
    assert!(e.contains("exactly one"), "{e}");
    // duplicate filter names, NOT NULL without mapping, wrong version, dist key not a column
    let e = err(&format!(
        "{base}    filters: [{{name: f, drop_if: \"true\"}}, {{name: f, drop_if: \"false\"}}]\n"
    ));
    assert!(e.contains("used twice"), "{e}");
    let e = err(
        "version: 1\ntables:\n  t: {columns: [{name: a, type: BIGINT, nullable: false}]}\nevents:\n  e: {table: t}\n",
    );
    assert!(e.contains("NOT NULL column `a`"), "{e}");
    let e = err("version: 2\ntables: {}\nevents: {}\n");
    assert!(e.contains("version 2"), "{e}");
    let e = err(
        "version: 1\ntables:\n  t: {dist_key: zz, columns: [{name: a, type: BIGINT}]}\nevents:\n  e: {table: t}\n",
    );
    assert!(e.contains("tables.t.dist_key"), "{e}");
    let e = err(
        "version: 1\nunknown_types: reject\ncatch_all_table: x\ntables:\n  t: {columns: [{name: a, type: BIGINT}]}\nevents:\n  e: {table: t}\n",
    );
    assert!(e.contains("catch_all_table"), "{e}");
}

#[test]
fn ddl_create_covers_tables_ledger_rejects_views() {
    let rs = bundled();
    let schema = Ident::parse("analytics").unwrap();
    let ddl = rs.ddl_create(&schema);
    assert_eq!(ddl.len(), rs.tables().len() + 2 + 4);
    let pv = ddl.iter().find(|s| s.contains("\"page_views\" (")).unwrap();
    assert!(pv.starts_with("CREATE TABLE IF NOT EXISTS \"analytics\".\"page_views\" (\n  \"event_time\" TIMESTAMPTZ NOT NULL,"), "{pv}");
    assert!(pv.contains("\"url\" VARCHAR(2048) NOT NULL"));
    assert!(pv.contains("\"event_id\" VARCHAR(128) NOT NULL"));
    assert!(
        pv.ends_with(") DISTSTYLE KEY DISTKEY (\"session_id\") SORTKEY (\"event_time\")"),
        "{pv}"
    );
    let p = ddl.iter().find(|s| s.contains("\"purchases\" (")).unwrap();
    assert!(p.contains("\"amount\" DECIMAL(12,2) NOT NULL") && p.contains("\"items\" SUPER"));
    assert!(
        ddl.iter()
            .any(|s| s.contains("\"analytics\".caudal_ledger"))
    );
    let rej = ddl.iter().find(|s| s.contains("caudal_rejects (")).unwrap();
    let pos: Vec<usize> = REJECT_COLUMNS
        .iter()
        .map(|c| rej.find(&format!("\n  {c} ")).unwrap())
        .collect();
    assert!(
        pos.windows(2).all(|w| w[0] < w[1]),
        "rejects.sql column order differs from REJECT_COLUMNS"
    );
    let recon = ddl
        .iter()
        .find(|s| s.contains("caudal_reconciliation"))
        .unwrap();
    for t in rs.tables() {
        assert!(
            recon.contains(&format!("FROM \"analytics\".{}", t.name.quoted())),
            "{recon}"
        );
    }
    assert!(
        !ddl.iter()
            .any(|s| s.contains("{schema}") || s.contains("{events_union}"))
    );
}

fn col(name: &str, dt: &str, len: Option<i64>) -> ExistingColumn {
    ExistingColumn {
        name: name.into(),
        data_type: dt.into(),
        character_maximum_length: len,
        numeric_precision: None,
        numeric_scale: None,
        nullable: true,
        has_default: false,
    }
}

fn mini_existing() -> Vec<ExistingColumn> {
    vec![
        col("a", "character varying", Some(5)),
        col("n", "bigint", None),
        col("k", "character varying", Some(10)),
        col("event_id", "character varying", Some(128)),
        col("event_type", "character varying", Some(128)),
        col("received_at", "timestamp with time zone", None),
        col("raw_key", "character varying", Some(1024)),
        col("raw_line", "bigint", None),
        col("rule_version", "character varying", Some(64)),
        col("loaded_at", "timestamp with time zone", None),
        col("principal", "character varying", Some(2048)),
    ]
}

#[test]
fn ddl_migrate_is_additive_only() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    let s = Ident::parse("public").unwrap();
    // table missing entirely -> CREATE
    let out = rs.ddl_migrate(&s, &BTreeMap::new());
    assert_eq!(out.statements.len(), 1);
    assert!(out.blocked.is_empty());
    assert!(out.statements[0].starts_with("CREATE TABLE IF NOT EXISTS \"public\".\"t\""));
    // one column missing (s SUPER) -> ADD COLUMN; jsonb counts as SUPER
    let mut existing = BTreeMap::from([("t".to_string(), mini_existing())]);
    assert_eq!(
        rs.ddl_migrate(&s, &existing).statements,
        vec!["ALTER TABLE \"public\".\"t\" ADD COLUMN \"s\" SUPER".to_string()]
    );
    existing.get_mut("t").unwrap().push(col("s", "jsonb", None));
    assert_eq!(rs.ddl_migrate(&s, &existing), MigrationPlan::default());
    // a longer VARCHAR is fine, a shorter one blocks the table with the DDL that widens it
    existing.get_mut("t").unwrap()[0] = col("a", "character varying", Some(50));
    assert_eq!(rs.ddl_migrate(&s, &existing), MigrationPlan::default());
    existing.get_mut("t").unwrap()[0] = col("a", "character varying", Some(3));
    let plan = rs.ddl_migrate(&s, &existing);
    assert!(plan.statements.is_empty());
    let e = &plan.blocked[0];
    assert!(
        matches!(e, RulesError::Migration { table, column, .. } if table == "t" && column == "a"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("ALTER TABLE \"public\".\"t\" ALTER COLUMN \"a\" TYPE VARCHAR(5)"),
        "{e}"
    );
    existing.get_mut("t").unwrap()[0] = col("a", "integer", None);
    let e = rs.ddl_migrate(&s, &existing).blocked[0].to_string();
    assert!(
        e.contains("type changed") && e.contains("RENAME COLUMN"),
        "{e}"
    );
    // a column the rules do not know: nullable (a DBA's addition) is fine ...
    existing.get_mut("t").unwrap()[0] = col("a", "character varying", Some(5));
    existing
        .get_mut("t")
        .unwrap()
        .push(col("old", "bigint", None));
    assert_eq!(rs.ddl_migrate(&s, &existing), MigrationPlan::default());
    // ... NOT NULL with a default too, NOT NULL without one blocks the table
    existing.get_mut("t").unwrap().last_mut().unwrap().nullable = false;
    existing
        .get_mut("t")
        .unwrap()
        .last_mut()
        .unwrap()
        .has_default = true;
    assert_eq!(rs.ddl_migrate(&s, &existing), MigrationPlan::default());
    existing
        .get_mut("t")
        .unwrap()
        .last_mut()
        .unwrap()
        .has_default = false;
    let e = rs.ddl_migrate(&s, &existing).blocked[0].to_string();
    assert!(
        e.contains("table t, column old")
            && e.contains("NOT NULL")
            && e.contains("DROP COLUMN \"old\""),
        "{e}"
    );
}

#[test]
fn existing_columns_read_the_catalogue_nullability() {
    let c: ExistingColumn = serde_json::from_str(
        r#"{"column_name":"x","data_type":"bigint","nullable":"NO","has_default":true}"#,
    )
    .unwrap();
    assert!(!c.nullable && c.has_default);
    let c: ExistingColumn = serde_json::from_str(r#"{"name":"x","data_type":"bigint"}"#).unwrap();
    assert!(c.nullable && !c.has_default);
}

#[test]
fn rows_encode_to_csv_that_parses_back() {
    let rs = bundled();
    let ev = json!({"type":"purchase","ts":"2026-11-25T19:00:00Z","order_id":"o,\"1\"","currency":"usd","amount":19.9,
        "items":[{"sku":"x,y","qty":1}]});
    let Outcome::Rows(rows) = rs.apply_line(&raw(&ev, UA, IP), &lineage()) else {
        panic!()
    };
    let mut out = Vec::new();
    write_csv_row(&mut out, &rows[0]).unwrap();
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&out[..]);
    let rec = rdr.records().next().unwrap().unwrap();
    let t = &rs.tables()[rows[0].table];
    assert_eq!(rec.len(), t.columns.len());
    let f = |name: &str| rec[t.column_index(name).unwrap()].to_owned();
    assert_eq!(f("order_id"), "o,\"1\"");
    assert_eq!(f("amount"), "19.90");
    assert_eq!(f("user_id"), NULL_MARKER);
    assert_eq!(f("email_hash"), NULL_MARKER);
    assert_eq!(
        serde_json::from_str::<Value>(&f("items")).unwrap(),
        json!([{"sku":"x,y","qty":1}])
    );
    assert_eq!(f("event_time"), "2026-11-25T19:00:00.000000Z");
    assert_eq!(f("is_large_order"), "false");
}

#[test]
fn reject_cells_match_the_rejects_table() {
    let rs = bundled();
    let line = b"{\"broken\": \0 line";
    let out = rs.apply_line(line, &lineage());
    let r = reject_of(out);
    let cells = rs.reject_cells(&r, line, &lineage());
    assert_eq!(cells.len(), REJECT_COLUMNS.len());
    assert_eq!(cells[4], Cell::Text("parse".into()));
    assert_eq!(cells[0], Cell::Null);
    assert_eq!(cells[11], Cell::Bool(true)); // NUL replaced
    let Cell::Text(raw_text) = &cells[10] else {
        panic!()
    };
    assert!(!raw_text.contains('\0'));
    let big = vec![b'x'; 70_000];
    let cells = rs.reject_cells(&r, &big, &lineage());
    assert!(matches!(&cells[10], Cell::Text(t) if t.len() == 65_535));
    assert_eq!(cells[11], Cell::Bool(true));
}

#[test]
fn wrap_and_detect_lines() {
    let line = wrap_client_event(
        br#"{"type":"search","ts":"2026-11-25T19:00:00Z","query":" Red Shoes "}"#,
        3,
        now(),
    )
    .unwrap();
    assert!(is_raw_line(&line));
    assert!(!is_raw_line(br#"{"type":"search"}"#));
    assert!(wrap_client_event(br#"{"no":"type"}"#, 1, now()).is_err());
    let rs = bundled();
    let r = row_of(&rs, &rs.apply_line(&line, &lineage()));
    assert_eq!(r["query"], "red shoes");
    assert_eq!(r["event_id"], "sample-00000003");
}

#[test]
fn every_id_ingest_accepts_fits_the_event_id_column() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    let at_most = "€".repeat(42) + "ab"; // 128 bytes, 44 characters
    assert!(crate::event::is_valid_id(&at_most));
    let ev = json!({"type":"e","id": at_most});
    let r = row_of(&rs, &rs.apply_line(&raw(&ev, UA, IP), &lineage()));
    assert_eq!(r["event_id"], at_most.as_str());
    // An id an older ingest let through (129 bytes, or the NULL marker) is a reject naming the
    // column, never a truncated or NULL event_id.
    for id in ["€".repeat(43), NULL_MARKER.to_owned()] {
        assert!(!crate::event::is_valid_id(&id));
        match rs.apply_line(&raw(&json!({"type":"e","id": id}), UA, IP), &lineage()) {
            Outcome::Rejected(r) => {
                assert_eq!(r.code, "mapping");
                assert_eq!(r.rule.as_deref(), Some("e.event_id"), "{}", r.message);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_principal_is_lineage_on_rows_and_rejects() {
    let rs = RuleSet::from_yaml(MINI).unwrap();
    let line = |principal: Option<&str>, ev: &Value| {
        raw_from(&serde_json::to_vec(ev).unwrap(), None, None, principal)
    };
    let ok = json!({"type":"e","a":"x"});
    let r = row_of(
        &rs,
        &rs.apply_line(&line(Some("arn:aws:iam::1:user/ann"), &ok), &lineage()),
    );
    assert_eq!(r["principal"], "arn:aws:iam::1:user/ann");
    let r = row_of(&rs, &rs.apply_line(&line(None, &ok), &lineage()));
    assert_eq!(r["principal"], Value::Null);
    // A reject carries it too (its de-duplication is per principal as well).
    let bad = json!({"type":"e","a":"too long for five"});
    let rej = reject_of(rs.apply_line(&line(Some("sub-9"), &bad), &lineage()));
    assert_eq!(rej.principal.as_deref(), Some("sub-9"));
    let cells = rs.reject_cells(&rej, b"x", &lineage());
    assert_eq!(cells.len(), REJECT_COLUMNS.len());
    assert_eq!(cells.last(), Some(&Cell::Text("sub-9".into())));
    // One ingest would have refused (too long) is a mapping reject, never a cut principal.
    let long = "u".repeat(crate::envelope::MAX_PRINCIPAL_BYTES + 1);
    let rej = reject_of(rs.apply_line(&line(Some(&long), &ok), &lineage()));
    assert_eq!(rej.rule.as_deref(), Some("e.principal"), "{}", rej.message);
}

/// Every CEL expression of the shipped rules file is within the native evaluator's subset, so
/// the loader runs none of them through the interpreter on the usual lines.
#[test]
fn the_shipped_rules_evaluate_natively() {
    let rs = RuleSet::from_yaml(BUNDLED_RULES_YAML).unwrap();
    let all = rs.expressions();
    assert!(all.len() >= 9, "{} expressions", all.len());
    for (source, native) in all {
        assert!(native, "{source}");
    }
    let yaml = BUNDLED_RULES_YAML.replace(
        "event.page.url.contains('/healthz')",
        "event.page.url.matches('/healthz')",
    );
    let rs = RuleSet::from_yaml(&yaml).unwrap();
    let interpreted: Vec<&str> = rs
        .expressions()
        .into_iter()
        .filter(|(_, native)| !native)
        .map(|(s, _)| s)
        .collect();
    assert_eq!(interpreted, ["event.page.url.matches('/healthz')"]);
}

/// A raw-archive line for a Snowplow event given by its exact text (a tp2 object or a pixel's
/// query string), as ingest envelopes it.
fn snowplow_line(text: &str, event_type: &str) -> Vec<u8> {
    let env = crate::envelope::encode(
        &crate::envelope::EventRef {
            id: "sp-1",
            id_generated: false,
            event_type,
            raw: text.as_bytes(),
            event_time: Some("2026-11-25T19:55:16.250Z"),
        },
        &crate::envelope::RequestMeta {
            request_id: "req-1".into(),
            principal: Some("snowplow".into()),
            protocol: Some(crate::snowplow::PROTOCOL),
            ..Default::default()
        },
    );
    let coords = KinesisCoords {
        shard_id: "shardId-000000000003".into(),
        sequence_number: "4959".into(),
        arrival: "2026-11-25T19:55:18.000Z".into(),
        partition_key: "pk".into(),
        sub_sequence_number: None,
    };
    let mut out = Vec::new();
    crate::raw::write_line(&mut out, &coords, &env).unwrap();
    out.pop();
    out
}

#[test]
fn bundled_snowplow_pixel_page_view_reads_the_decoded_query_string() {
    use base64::Engine as _;
    let rs = bundled();
    let cx = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        r#"{"schema":"iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1","data":[{"schema":"iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0","data":{"id":"wp-1"}}]}"#,
    );
    let q = format!(
        "e=pv&aid=shop&p=web&duid=d-1&sid=s-1&url=https%3A%2F%2Fshop.example%2F%3Fa%3D1&page=Caf%C3%A9+menu&refr=https%3A%2F%2Fsearch.example%2F&tv=js-4.1.0&cx={cx}"
    );
    let out = rs.apply_line(&snowplow_line(&q, "snowplow.page_view"), &lineage());
    assert_eq!(table_of(&rs, &out), "snowplow_page_views");
    let row = row_of(&rs, &out);
    assert_eq!(row["event_time"], "2026-11-25T19:55:16.250000Z");
    assert_eq!(row["url"], "https://shop.example/?a=1");
    assert_eq!(row["title"], "Café menu");
    assert_eq!(row["domain_userid"], "d-1");
    assert_eq!(row["platform"], "web");
    assert_eq!(row["contexts"][0]["data"]["id"], "wp-1");
    assert_eq!(row["user_id"], Value::Null);
    assert_eq!(row["principal"], "snowplow");
}

#[test]
fn bundled_snowplow_struct_and_self_describing_events_map_their_fields() {
    use base64::Engine as _;
    let rs = bundled();
    let se = r#"{"e":"se","aid":"shop","uid":"u-7","se_ca":"cart","se_ac":"add","se_la":"sku-1","se_va":"2.5"}"#;
    let out = rs.apply_line(&snowplow_line(se, "snowplow.struct"), &lineage());
    assert_eq!(table_of(&rs, &out), "snowplow_struct_events");
    let row = row_of(&rs, &out);
    assert_eq!(
        (row["category"].clone(), row["action"].clone()),
        (json!("cart"), json!("add"))
    );
    assert_eq!(row["value"], 2.5);
    assert_eq!(row["user_id"], "u-7");
    let no_action = r#"{"e":"se","se_ca":"cart"}"#;
    let r = reject_of(rs.apply_line(&snowplow_line(no_action, "snowplow.struct"), &lineage()));
    assert_eq!(r.code, "schema");
    assert!(r.message.contains("se_ac"), "{r:?}");
    let bad_value = r#"{"e":"se","se_ca":"c","se_ac":"a","se_va":"lots"}"#;
    let r = reject_of(rs.apply_line(&snowplow_line(bad_value, "snowplow.struct"), &lineage()));
    assert_eq!(r.path.as_deref(), Some("/se_va"), "{r:?}");
    let ue = base64::engine::general_purpose::URL_SAFE.encode(
        r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1","data":{"targetUrl":"https://x.example/","elementId":"buy"}}}"#,
    );
    let click = format!(r#"{{"e":"ue","duid":"d-2","ue_px":"{ue}"}}"#);
    let out = rs.apply_line(
        &snowplow_line(&click, "snowplow.unstruct.link_click"),
        &lineage(),
    );
    assert_eq!(table_of(&rs, &out), "snowplow_link_clicks");
    let row = row_of(&rs, &out);
    assert_eq!(row["target_url"], "https://x.example/");
    assert_eq!(row["element_id"], "buy");
    assert_eq!(row["domain_userid"], "d-2");
    // Another vendor's link_click has the same type; the rule's schema refuses it.
    let acme = base64::engine::general_purpose::URL_SAFE.encode(
        r#"{"schema":"iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0","data":{"schema":"iglu:com.acme/link_click/jsonschema/1-0-0","data":{"targetUrl":"https://x.example/"}}}"#,
    );
    let other = format!(r#"{{"e":"ue","ue_px":"{acme}"}}"#);
    let r = reject_of(rs.apply_line(
        &snowplow_line(&other, "snowplow.unstruct.link_click"),
        &lineage(),
    ));
    assert_eq!(r.path.as_deref(), Some("/unstruct_event/schema"), "{r:?}");
}

#[test]
fn a_snowplow_event_the_view_cannot_read_is_a_parse_reject() {
    let rs = bundled();
    let r = reject_of(rs.apply_line(
        &snowplow_line("e=pv&e=pp", "snowplow.page_view"),
        &lineage(),
    ));
    assert_eq!(r.code, "parse");
    assert!(r.message.contains("not a Snowplow event"), "{r:?}");
    assert_eq!(r.event_id.as_deref(), Some("sp-1"));
    // An unknown Snowplow type goes to the catch-all table as its view (JSON, not the query).
    let out = rs.apply_line(
        &snowplow_line("e=pp&pp_mix=0", "snowplow.page_ping"),
        &lineage(),
    );
    assert_eq!(table_of(&rs, &out), "unknown_events");
    assert_eq!(
        row_of(&rs, &out)["payload"],
        json!({"e": "pp", "pp_mix": "0"})
    );
}
