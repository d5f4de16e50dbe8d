//! Runs the `rules` binary as a user would, against the shipped rules file and samples.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rules(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rules"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run rules")
}

fn stdout_json(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn tmp(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rules-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn check_summarises_the_default_file() {
    let o = rules(&["check"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("ok: rules/rules.yaml"), "{s}");
    assert!(s.contains("event purchase -> purchases"), "{s}");
    assert!(
        s.contains("table unknown_events: 1 columns + 8 lineage [catch-all"),
        "{s}"
    );
    assert!(
        s.contains("filters: drop_bots, drop_internal_test, drop_health_checks"),
        "{s}"
    );
    assert!(s.contains(", 0 through the interpreter"), "{s}");
    assert!(!s.contains("interpreted:"), "{s}");
}

#[test]
fn check_fails_clearly_on_a_bad_file() {
    let bad = tmp(
        "bad.yaml",
        "version: 1\ntables:\n  t:\n    columns: [{name: \"users; drop table x\", type: BIGINT}]\nevents:\n  e: {table: t}\n",
    );
    let o = rules(&["check", "--file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("tables.t.columns[0]") && e.contains("not a valid identifier"),
        "{e}"
    );
    let o = rules(&["check", "--file", "does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
}

#[test]
fn test_runs_plain_client_events() {
    let o = rules(&["test", "rules/samples/events.ndjson"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout_json(&o);
    assert_eq!(out.len(), 11);
    let by_line = |n: u64| out.iter().find(|v| v["line"] == n).unwrap();
    assert_eq!(by_line(1)["outcome"], "row");
    assert_eq!(by_line(1)["table"], "page_views");
    assert_eq!(by_line(1)["values"]["title"], "Red shoes");
    assert_eq!(by_line(1)["values"]["ip_prefix"], "192.0.2.0");
    assert_eq!(by_line(2)["values"]["amount"], "129.90");
    assert_eq!(
        by_line(2)["values"]["event_time"],
        "2026-11-25T18:58:03.000000Z"
    );
    assert_eq!(by_line(4)["values"]["query"], "red running shoes");
    assert_eq!(by_line(5)["rule"], "drop_internal_test");
    assert_eq!(by_line(6)["rule"], "drop_health_checks");
    assert_eq!(
        (by_line(7)["code"].as_str(), by_line(7)["rule"].as_str()),
        (Some("schema"), Some("purchase"))
    );
    assert_eq!(by_line(8)["code"], "schema");
    assert_eq!(by_line(9)["path"], "/ts");
    assert_eq!(
        (by_line(10)["code"].as_str(), by_line(10)["rule"].as_str()),
        (Some("mapping"), Some("purchase.amount"))
    );
    assert_eq!(by_line(11)["table"], "unknown_events");
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(
        summary.contains("11 lines") && summary.contains("rejected 4 (mapping 1, schema 3)"),
        "{summary}"
    );
}

#[test]
fn test_runs_raw_archive_lines_and_strict_fails_on_rejects() {
    let o = rules(&["test", "rules/samples/raw.ndjson", "--strict"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = stdout_json(&o);
    assert_eq!(out.len(), 6);
    assert_eq!(out[0]["values"]["is_mobile"], true);
    assert_eq!(
        out[0]["values"]["page_path"],
        "https://shop.example.com/p/7"
    );
    assert_eq!(out[1]["values"]["is_large_order"], true);
    assert_eq!(out[1]["values"]["ip_prefix"], "2001:db8:abcd::");
    assert_eq!(out[2]["rule"], "drop_bots");
    assert_eq!(out[3]["path"], "/plan");
    assert_eq!(out[4]["table"], "unknown_events");
    assert_eq!(out[4]["values"]["payload"]["stack"], "at main.rs:1");
    assert_eq!(out[5]["code"], "parse");
    // without --strict the same file succeeds
    assert!(
        rules(&["test", "rules/samples/raw.ndjson"])
            .status
            .success()
    );
}

#[test]
fn ddl_prints_create_statements() {
    let o = rules(&["ddl", "--schema", "analytics"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("CREATE TABLE IF NOT EXISTS \"analytics\".\"purchases\" ("),
        "{s}"
    );
    assert!(
        s.contains("CREATE TABLE IF NOT EXISTS \"analytics\".caudal_ledger"),
        "{s}"
    );
    assert!(
        s.contains("CREATE OR REPLACE VIEW \"analytics\".caudal_reconciliation"),
        "{s}"
    );
    // 11 event tables (5 of caudal's own incl. the catch-all, 3 for Segment, 3 for Snowplow),
    // ledger + rejects, 4 views.
    assert_eq!(s.matches(";\n").count(), 11 + 2 + 4);
    let o = rules(&["ddl", "--schema", "x; drop table y"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a valid identifier"));
}

#[test]
fn ddl_with_existing_columns_migrates_additively() {
    let existing = tmp(
        "existing.json",
        r#"{"searches": [
            {"column_name":"event_time","data_type":"timestamp with time zone"},
            {"column_name":"user_id","data_type":"character varying","character_maximum_length":64},
            {"column_name":"session_id","data_type":"character varying","character_maximum_length":64},
            {"column_name":"query","data_type":"character varying","character_maximum_length":512},
            {"column_name":"result_count","data_type":"integer"},
            {"column_name":"event_id","data_type":"character varying","character_maximum_length":128},
            {"column_name":"event_type","data_type":"character varying","character_maximum_length":128},
            {"column_name":"received_at","data_type":"timestamp with time zone"},
            {"column_name":"raw_key","data_type":"character varying","character_maximum_length":1024},
            {"column_name":"raw_line","data_type":"bigint"},
            {"column_name":"rule_version","data_type":"character varying","character_maximum_length":64},
            {"column_name":"loaded_at","data_type":"timestamp with time zone"}]}"#,
    );
    let o = rules(&["ddl", "--existing", existing.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains("ALTER TABLE \"public\".\"searches\" ADD COLUMN \"has_results\" BOOLEAN;"),
        "{s}"
    );
    assert!(
        s.contains("ALTER TABLE \"public\".\"searches\" ADD COLUMN \"event_hour\" SMALLINT;"),
        "{s}"
    );
    assert!(
        s.contains("CREATE TABLE IF NOT EXISTS \"public\".\"page_views\""),
        "{s}"
    );
    assert!(!s.contains("\"searches\" ("), "{s}");

    let changed = tmp(
        "changed.json",
        r#"{"searches": [{"column_name":"query","data_type":"bigint"}]}"#,
    );
    let o = rules(&["ddl", "--existing", changed.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("table searches, column query") && e.contains("type changed"),
        "{e}"
    );
    // Only that table needs a person: the others' DDL is still printed.
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("CREATE TABLE IF NOT EXISTS \"public\".\"page_views\""),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn csv_of_sample_rows_round_trips() {
    // The rows `rules test` prints are the ones the loader encodes; spot-check the encoder on a
    // full sample through the library (the CLI prints JSON).
    let text = std::fs::read_to_string(root().join("rules/rules.yaml")).unwrap();
    let rs = caudal_core::rules::RuleSet::from_yaml(&text).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let samples = std::fs::read_to_string(root().join("rules/samples/events.ndjson")).unwrap();
    let mut n = 0;
    for (i, l) in samples.lines().enumerate() {
        let line = caudal_core::rules::wrap_client_event(l.as_bytes(), i as u64, now).unwrap();
        let lin = caudal_core::rules::Lineage {
            raw_key: "k",
            line: i as u64 + 1,
            loaded_at: now,
        };
        if let caudal_core::rules::Outcome::Rows(rows) = rs.apply_line(&line, &lin) {
            let mut buf = Vec::new();
            caudal_core::rules::write_csv_row(&mut buf, &rows[0]).unwrap();
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .from_reader(&buf[..]);
            let rec = rdr.records().next().unwrap().unwrap();
            assert_eq!(rec.len(), rs.tables()[rows[0].table].columns.len());
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

#[test]
fn test_writes_copy_ready_csv_per_table_and_for_rejects() {
    let dir = std::env::temp_dir().join(format!("rules-cli-csv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = rules(&[
        "test",
        "rules/samples/events.ndjson",
        "--csv-dir",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let read = |name: &str| -> Vec<csv::StringRecord> {
        let f = std::fs::File::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(f)
            .records()
            .map(Result::unwrap)
            .collect()
    };
    let rejects = read("caudal_rejects.csv");
    assert_eq!(rejects.len(), 4);
    assert!(
        rejects
            .iter()
            .all(|r| r.len() == caudal_core::rules::REJECT_COLUMNS.len())
    );
    assert_eq!(&rejects[0][4], "schema");
    let pv = read("page_views.csv");
    assert_eq!(pv.len(), 1);
    assert!(pv[0].iter().any(|f| f == caudal_core::rules::NULL_MARKER));
    for t in ["purchases", "signups", "searches", "unknown_events"] {
        assert_eq!(read(&format!("{t}.csv")).len(), 1, "{t}");
    }
}
