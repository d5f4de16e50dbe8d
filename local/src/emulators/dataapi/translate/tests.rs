//! The translation's unit tests: tokenizer, parameters, DDL rewriting, COPY parsing.

use super::*;

fn sql(s: &str) -> String {
    match plan(s, &[]).expect("no params").as_slice() {
        [Planned::Sql(s)] => s.clone(),
        other => panic!("expected one SQL statement, got {other:?}"),
    }
}

fn copy(s: &str) -> CopyPlan {
    match plan(s, &[]).expect("no params").as_slice() {
        [Planned::Copy(c)] => c.clone(),
        other => panic!("expected a COPY, got {other:?}"),
    }
}

fn unsupported_msg(s: &str) -> String {
    match plan(s, &[]).expect("no params").as_slice() {
        [Planned::Unsupported(m)] => m.clone(),
        other => panic!("expected unsupported, got {other:?}"),
    }
}

fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn tokenize_round_trips_and_classifies() {
    let s = "SELECT 'it''s', E'a\\'b', \"we\"\"ird\", $f$ ; :x $f$, x::int, :p -- c ;\n/* a /* b */ ; */ 1.5e3";
    let toks = tokenize(s).expect("lexes");
    assert_eq!(render(&toks), s);
    let kinds: Vec<Kind> = toks
        .iter()
        .filter(|t| !t.is_trivia())
        .map(|t| t.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            Kind::Word,
            Kind::Str,
            Kind::Comma,
            Kind::Str,
            Kind::Comma,
            Kind::QuotedIdent,
            Kind::Comma,
            Kind::Dollar,
            Kind::Comma,
            Kind::Word,
            Kind::Op,
            Kind::Word,
            Kind::Comma,
            Kind::Param,
            Kind::Number
        ]
    );
}

#[test]
fn tokenize_rejects_unterminated() {
    assert!(tokenize("select 'abc").is_err());
    assert!(tokenize("select \"abc").is_err());
    assert!(tokenize("select /* x").is_err());
    assert!(tokenize("select $a$ x").is_err());
    // A positional $1 is not a dollar quote.
    assert!(tokenize("select $1").is_ok());
}

#[test]
fn params_become_escaped_literals_only_outside_quotes() {
    let p = params(&[("id", "o'brien'); DROP TABLE t; --"), ("n", "5")]);
    let out = plan(
        "SELECT ':id', \":id\", x::text FROM t WHERE a = :id AND b = :n -- :id\n",
        &p,
    )
    .expect("params ok");
    let [Planned::Sql(s)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        s,
        "SELECT ':id', \":id\", x::text FROM t WHERE a =  'o''brien''); DROP TABLE t; --'  AND b =  '5'  -- :id\n"
    );
    // The injected text stays inside one literal: one statement, not two.
    assert_eq!(split_statements(tokenize(s).expect("lexes")).len(), 1);
}

#[test]
fn param_literal_cannot_fuse_with_neighbours() {
    let p = params(&[("x", "\\' or 1=1")]);
    let out = plan("SELECT E:x, :x'tail'", &p).expect("ok");
    let [Planned::Sql(s)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(s, "SELECT E '\\'' or 1=1' ,  '\\'' or 1=1' 'tail'");
}

#[test]
fn param_errors() {
    assert_eq!(
        plan("select :missing", &[]),
        Err(ParamError::Missing("missing".into()))
    );
    assert_eq!(
        plan("select :a", &params(&[("a", "1"), ("a", "2")])),
        Err(ParamError::Duplicate("a".into()))
    );
    assert_eq!(
        plan("select :a", &params(&[("a", "x\0y")])),
        Err(ParamError::NulInValue("a".into()))
    );
    assert_eq!(
        plan("select 1", &params(&[("a b", "1")])),
        Err(ParamError::BadName("a b".into()))
    );
}

#[test]
fn split_keeps_semicolons_in_strings_and_bodies() {
    let out = plan(
        "insert into t values ('a;b'); create function f() returns int as $$ select 1; $$ language sql; ;  -- trailing\n",
        &[],
    )
    .expect("ok");
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn ddl_loses_redshift_attributes() {
    let out = sql(
        "CREATE TABLE IF NOT EXISTS public.events (\n  id VARCHAR(64) NOT NULL ENCODE zstd,\n  user_id BIGINT DISTKEY,\n  payload SUPER,\n  note VARCHAR(MAX) ENCODE lzo,\n  ts TIMESTAMPTZ SORTKEY,\n  encode text, backup boolean\n) DISTSTYLE KEY DISTKEY(user_id) COMPOUND SORTKEY(ts, id) BACKUP NO",
    );
    let compact = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        compact,
        "CREATE TABLE IF NOT EXISTS public.events ( id VARCHAR(64) NOT NULL , user_id BIGINT , payload jsonb, note text , ts TIMESTAMPTZ , encode text, backup boolean )"
    );
    let out = sql(
        "create temp table s (like public.events) interleaved sortkey (a) diststyle even sortkey auto",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>().join(" "),
        "create temp table s (like public.events)"
    );
}

#[test]
fn key_constraints_are_informational_as_in_redshift() {
    let compact = |s: &str| sql(s).split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        compact(
            "CREATE TABLE l (raw_key VARCHAR(1024) NOT NULL, etag VARCHAR(256), PRIMARY KEY \
             (raw_key)) SORTKEY (raw_key)"
        ),
        "CREATE TABLE l (raw_key VARCHAR(1024) NOT NULL, etag VARCHAR(256))"
    );
    assert_eq!(
        compact(
            "create table t (id int primary key, u int unique, p int references o (id), \
             q int constraint fk references s.o, constraint pk primary key (id, u), \
             unique (u), foreign key (p) references o (id), v int not null)"
        ),
        "create table t (id int , u int , p int , q int , v int not null)"
    );
    assert_eq!(
        compact("create table t (primary key (a), a int, b int)"),
        "create table t ( a int, b int)"
    );
    // Only in CREATE: a column called `references` elsewhere is quoted, and DML is untouched.
    assert_eq!(
        compact("select unique_id from t where primary_key = 1"),
        "select unique_id from t where primary_key = 1"
    );
}

#[test]
fn indexes_do_not_exist_in_redshift() {
    for s in ["CREATE INDEX i ON t (a)", "create unique index i on t (a)"] {
        assert!(unsupported_msg(s).contains("no indexes"), "{s}");
    }
    assert_eq!(
        sql("create table index_log (a int)"),
        "create table index_log (a int)"
    );
}

#[test]
fn identity_becomes_generated() {
    let out = sql("create table t (id bigint identity(1, 1), v int)");
    assert_eq!(
        out,
        "create table t (id bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 1 INCREMENT BY 1), v int)"
    );
}

#[test]
fn functions_and_types_are_mapped_outside_ddl_too() {
    assert_eq!(
        sql(
            "SELECT GETDATE(), sysdate, JSON_PARSE('{\"a\":1}') -> 'a', x::super, NVL(a, 'sysdate'), 'getdate()' FROM t"
        ),
        "SELECT now(), now(), ('{\"a\":1}')::jsonb -> 'a', x::jsonb, coalesce(a, 'sysdate'), 'getdate()' FROM t"
    );
    assert_eq!(
        sql("select json_parse(json_serialize(p)) from t"),
        "select ((p)::text)::jsonb from t"
    );
    // DDL attribute words are left alone outside CREATE.
    assert_eq!(sql("select distkey from t"), "select distkey from t");
    // encode() the function is not the ENCODE attribute.
    assert_eq!(
        sql("create table t as select encode(b, 'hex') from u"),
        "create table t as select encode(b, 'hex') from u"
    );
}

#[test]
fn unload_and_external_fail_clearly() {
    assert!(
        unsupported_msg("UNLOAD ('select 1') TO 's3://b/k' IAM_ROLE 'x'")
            .contains("UNLOAD is not supported")
    );
    assert!(unsupported_msg("create external table s.t (a int)").contains("Redshift-only"));
    assert!(unsupported_msg("select 'oops").contains("unterminated quoted string"));
}

#[test]
fn copy_manifest_csv_gzip() {
    let c = copy(
        "COPY public.\"Events\" (id, \"Payload\", ts) FROM 's3://stage/manifests/m1.json' \
         IAM_ROLE 'arn:aws:iam::123:role/r' MANIFEST FORMAT AS CSV GZIP TIMEFORMAT 'auto' \
         DATEFORMAT AS 'auto' EMPTYASNULL IGNOREHEADER 1 REGION 'us-east-1' \
         ACCEPTINVCHARS COMPUPDATE OFF STATUPDATE OFF DELIMITER '\\t' NULL AS '\\\\N'",
    );
    assert_eq!(c.table, "public.\"Events\"");
    let cols = c.columns.clone().expect("columns");
    assert_eq!(
        cols.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["id", "Payload", "ts"]
    );
    assert_eq!(
        (c.bucket.as_str(), c.key.as_str()),
        ("stage", "manifests/m1.json")
    );
    assert!(c.manifest && c.empty_as_null && !c.needs_staging());
    assert_eq!(c.compression, Some(Compression::Gzip));
    assert_eq!(c.ignore_header, 1);
    assert_eq!(c.region.as_deref(), Some("us-east-1"));
    assert_eq!(
        copy("COPY t FROM 's3://b/k' IAM_ROLE 'x' CSV REGION AS 'us-west-2'")
            .region
            .as_deref(),
        Some("us-west-2")
    );
    assert_eq!(copy("COPY t FROM 's3://b/k' IAM_ROLE 'x' CSV").region, None);
    assert!(unsupported_msg("COPY t FROM 's3://b/k' IAM_ROLE 'x' CSV REGION").contains("REGION"));
    assert_eq!(c.accept_inv_chars, Some(b'?'));
    assert_eq!(c.delimiter, '\t');
    assert_eq!(c.null_as, "\\N");
    assert_eq!(
        c.pg_options(&["\"Payload\"".into()]),
        "FORMAT csv, DELIMITER '\t', QUOTE '\"', NULL '\\N', FORCE_NULL (\"Payload\")"
    );
}

#[test]
fn copy_source_from_a_parameter() {
    let out = plan(
        "COPY t FROM :src IAM_ROLE :role MANIFEST CSV",
        &params(&[("src", "s3://b/m.json"), ("role", "arn:aws:iam::1:role/r")]),
    )
    .expect("ok");
    let [Planned::Copy(c)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!((c.bucket.as_str(), c.key.as_str()), ("b", "m.json"));
    assert!(c.manifest);
}

#[test]
fn copy_prefix_defaults() {
    let c = copy(
        "copy t from 's3://b/raw/' credentials 'aws_iam_role=x' csv zstd quote as '''' truncatecolumns blanksasnull",
    );
    assert!(!c.manifest && c.needs_staging());
    assert_eq!(c.columns, None);
    assert_eq!(c.key, "raw/");
    assert_eq!(c.quote, '\'');
    assert_eq!(c.compression, Some(Compression::Zstd));
    assert_eq!(
        c.pg_options(&[]),
        "FORMAT csv, DELIMITER ',', QUOTE '''', NULL ''"
    );
    // Without EMPTYASNULL an empty character field is '' (Redshift), not NULL.
    assert_eq!(
        c.pg_options(&["c".into()]),
        "FORMAT csv, DELIMITER ',', QUOTE '''', NULL '', FORCE_NOT_NULL (c)"
    );
}

#[test]
fn copy_rejects_what_it_cannot_honour() {
    for (sql, needle) in [
        (
            "copy t from 's3://b/k' json 'auto'",
            "JSON is not supported",
        ),
        ("copy t from 's3://b/k' format as parquet", "FORMAT parquet"),
        ("copy t from 's3://b/k'", "only CSV"),
        ("copy t from 's3://b/k' csv bzip2", "BZIP2"),
        ("copy t from 's3://b/k' csv maxerror 10", "MAXERROR"),
        (
            "copy t from 's3://b/k' csv timeformat 'epochsecs'",
            "TIMEFORMAT 'epochsecs'",
        ),
        ("copy t from 's3://b/k' csv fillrecord", "FILLRECORD"),
        (
            "copy t from 'dynamodb://tbl' readratio 50",
            "not an s3:// URL",
        ),
        ("copy t to stdout", "COPY … TO"),
        ("copy t from stdin", "only FROM 's3://"),
        (
            "copy t from 's3://b/k' csv delimiter '||'",
            "single character",
        ),
    ] {
        let msg = unsupported_msg(sql);
        assert!(msg.contains(needle), "{sql}: {msg}");
    }
}

#[test]
fn transaction_control_detection() {
    let p = plan("begin; insert into t values (1); commit", &[]).expect("ok");
    assert_eq!(
        p.iter()
            .map(Planned::is_transaction_control)
            .collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[test]
fn s3_urls() {
    assert_eq!(
        parse_s3_url("s3://b/a/b c"),
        Some(("b".into(), "a/b c".into()))
    );
    assert_eq!(parse_s3_url("s3://b"), Some(("b".into(), String::new())));
    assert_eq!(parse_s3_url("s3:///k"), None);
    assert_eq!(parse_s3_url("https://b/k"), None);
}
