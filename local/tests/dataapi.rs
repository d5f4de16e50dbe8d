//! The local Data API endpoint driven by the real `aws-sdk-redshiftdata` client, against a
//! real PostgreSQL 15 and moto's S3. Every process started here is stopped by a Drop guard.
//!
//! Needs PostgreSQL 15 server binaries and `moto_server` (env `MOTO_SERVER`, else PATH; started
//! by [`testkit::Moto`]).

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatusString};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use caudal_core::codec::Codec;
use caudal_local::emulators::dataapi::{DataApiOptions, Isolation, serve};
use caudal_local::emulators::postgres::Postgres;

// ---------- process guards ----------

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "caudal-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// PostgreSQL and moto shared by the tests running at the same time; stopped when the last
/// test holding them finishes (field order = drop order: postgres, moto, then the directory).
struct Procs {
    pg: Postgres,
    moto: testkit::Moto,
    _dir: TempDir,
}

fn procs() -> Arc<Procs> {
    static SHARED: Mutex<Weak<Procs>> = Mutex::new(Weak::new());
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = slot.upgrade() {
        return p;
    }
    let dir = TempDir::new("dataapi-pg");
    let pg = Postgres::start(&dir.0.join("data")).expect("start postgres");
    let moto =
        testkit::Moto::start(None).expect("start moto_server (set MOTO_SERVER or put it on PATH)");
    let p = Arc::new(Procs {
        pg,
        moto,
        _dir: dir,
    });
    *slot = Arc::downgrade(&p);
    p
}

// ---------- the endpoint under test ----------

struct Endpoint {
    api: aws_sdk_redshiftdata::Client,
    s3: aws_sdk_s3::Client,
    db: tokio_postgres::Client,
    port: u16,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _procs: Arc<Procs>,
}

fn unique(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

async fn endpoint() -> Endpoint {
    endpoint_with(DataApiOptions::default()).await
}

async fn endpoint_with(opts: DataApiOptions) -> Endpoint {
    let procs = tokio::task::spawn_blocking(procs).await.expect("procs");
    let creds = Credentials::new("test", "test", None, None, "test");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .endpoint_url(format!("http://127.0.0.1:{}", procs.moto.port()))
            .force_path_style(true)
            .build(),
    );
    let conn = procs.pg.connection_string();
    let (db, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pg_config = conn.parse().expect("pg config");
    tokio::spawn(serve(listener, pg_config, s3.clone(), opts, async {
        let _ = rx.await;
    }));
    let api = aws_sdk_redshiftdata::Client::from_conf(
        aws_sdk_redshiftdata::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .build(),
    );
    Endpoint {
        api,
        s3,
        db,
        port,
        _shutdown: tx,
        _procs: procs,
    }
}

impl Endpoint {
    async fn submit(&self, sql: &str) -> String {
        self.api
            .execute_statement()
            .workgroup_name("local")
            .database("dev")
            .sql(sql)
            .send()
            .await
            .expect("execute_statement")
            .id()
            .expect("id")
            .to_string()
    }

    async fn wait(&self, id: &str) -> DescribeStatementOutput {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self
                .api
                .describe_statement()
                .id(id)
                .send()
                .await
                .expect("describe_statement");
            match d.status() {
                Some(StatusString::Submitted | StatusString::Picked | StatusString::Started) => {}
                _ => return d,
            }
            assert!(Instant::now() < deadline, "statement {id} never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn submit_batch(&self, sqls: &[String]) -> String {
        self.api
            .batch_execute_statement()
            .workgroup_name("local")
            .database("dev")
            .set_sqls(Some(sqls.to_vec()))
            .send()
            .await
            .expect("batch_execute_statement")
            .id()
            .expect("id")
            .to_string()
    }

    async fn run(&self, sql: &str) -> DescribeStatementOutput {
        let id = self.submit(sql).await;
        self.wait(&id).await
    }

    async fn run_ok(&self, sql: &str) -> DescribeStatementOutput {
        let d = self.run(sql).await;
        assert_eq!(
            d.status(),
            Some(&StatusString::Finished),
            "{sql}: {:?}",
            d.error()
        );
        d
    }

    async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0)
    }

    async fn put(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put_object");
    }

    async fn bucket(&self) -> String {
        self.bucket_in(None).await
    }

    /// A new bucket in `region` (`None`: us-east-1, the warehouse's region here).
    async fn bucket_in(&self, region: Option<BucketLocationConstraint>) -> String {
        let name = unique("bkt").replace('_', "-");
        self.s3
            .create_bucket()
            .bucket(&name)
            .set_create_bucket_configuration(region.map(|r| {
                CreateBucketConfiguration::builder()
                    .location_constraint(r)
                    .build()
            }))
            .send()
            .await
            .expect("create_bucket");
        name
    }
}

fn string(f: &Field) -> &str {
    f.as_string_value().expect("stringValue")
}

// ---------- tests ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_poll_and_typed_results() {
    // A long minimum latency makes "not finished right after submission" deterministic.
    let ep = endpoint_with(DataApiOptions {
        min_latency: Duration::from_millis(600),
        ..DataApiOptions::default()
    })
    .await;
    let t = unique("typed");
    ep.run_ok(&format!(
        "CREATE TABLE {t} (i int, b bigint, d double precision, ok boolean, s varchar(20), \
         n text, ts timestamptz, p super, amount decimal(10,2))"
    ))
    .await;
    let name = unique("insert");
    let out = ep
        .api
        .execute_statement()
        .cluster_identifier("local-cluster")
        .db_user("caudal")
        .database("dev")
        .statement_name(&name)
        .sql(format!(
            "INSERT INTO {t} VALUES (:i, 9007199254740993, :d, true, :s, NULL, \
             :ts, JSON_PARSE(:p), 12.5)"
        ))
        .parameters(
            SqlParameter::builder()
                .name("i")
                .value("-7")
                .build()
                .expect("param"),
        )
        .parameters(
            SqlParameter::builder()
                .name("d")
                .value("2.25")
                .build()
                .expect("param"),
        )
        .parameters(
            SqlParameter::builder()
                .name("s")
                .value("it's; \"quoted\"")
                .build()
                .expect("param"),
        )
        .parameters(
            SqlParameter::builder()
                .name("ts")
                .value("2026-11-25T19:55:17.123Z")
                .build()
                .expect("param"),
        )
        .parameters(
            SqlParameter::builder()
                .name("p")
                .value(r#"{"a": [1, 2]}"#)
                .build()
                .expect("param"),
        )
        .send()
        .await
        .expect("execute");
    let out_id = out.id().expect("id").to_string();
    assert_eq!(out.database(), Some("dev"));
    assert!(out.created_at().is_some());
    // The statement is asynchronous: right after submission it is not finished yet.
    let first = ep
        .api
        .describe_statement()
        .id(&out_id)
        .send()
        .await
        .expect("describe");
    assert!(
        matches!(
            first.status(),
            Some(StatusString::Submitted | StatusString::Picked | StatusString::Started)
        ),
        "{:?}",
        first.status()
    );
    let done = ep.wait(&out_id).await;
    assert_eq!(
        done.status(),
        Some(&StatusString::Finished),
        "{:?}",
        done.error()
    );
    assert_eq!(done.result_rows(), 1);
    assert!(!done.has_result_set().unwrap_or(true));
    assert!(done.redshift_pid() > 0);
    assert!(done.updated_at().expect("updated") >= done.created_at().expect("created"));
    assert_eq!(done.query_parameters().len(), 5);

    let sel = ep
        .run_ok(&format!("SELECT i, b, d, ok, s, n, ts, p, amount FROM {t}"))
        .await;
    assert_eq!(sel.has_result_set(), Some(true));
    let res = ep
        .api
        .get_statement_result()
        .id(sel.id())
        .send()
        .await
        .expect("result");
    assert_eq!(res.total_num_rows(), 1);
    let row = &res.records()[0];
    assert_eq!(row[0].as_long_value().ok(), Some(&-7));
    assert_eq!(row[1].as_long_value().ok(), Some(&9_007_199_254_740_993));
    assert_eq!(row[2].as_double_value().ok(), Some(&2.25));
    assert_eq!(row[3].as_boolean_value().ok(), Some(&true));
    assert_eq!(string(&row[4]), "it's; \"quoted\"");
    assert_eq!(row[5].as_is_null().ok(), Some(&true));
    assert_eq!(string(&row[6]), "2026-11-25 19:55:17.123+00");
    assert_eq!(string(&row[7]), r#"{"a": [1, 2]}"#);
    assert_eq!(string(&row[8]), "12.50");
    let types: Vec<_> = res
        .column_metadata()
        .iter()
        .map(|c| (c.name().unwrap_or(""), c.type_name().unwrap_or("")))
        .collect();
    assert_eq!(
        types,
        [
            ("i", "int4"),
            ("b", "int8"),
            ("d", "float8"),
            ("ok", "bool"),
            ("s", "varchar"),
            ("n", "varchar"),
            ("ts", "timestamptz"),
            ("p", "super"),
            ("amount", "numeric")
        ]
    );

    let listed = ep
        .api
        .list_statements()
        .statement_name(&name)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.statements().len(), 1);
    assert_eq!(listed.statements()[0].id(), out_id);
    assert_eq!(
        listed.statements()[0].status(),
        Some(&StatusString::Finished)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_paging() {
    let ep = endpoint_with(DataApiOptions {
        result_page_rows: 4,
        ..DataApiOptions::default()
    })
    .await;
    let d = ep.run_ok("SELECT g FROM generate_series(1, 10) g").await;
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = ep
            .api
            .get_statement_result()
            .id(d.id())
            .set_next_token(token)
            .send()
            .await
            .expect("page");
        assert_eq!(page.total_num_rows(), 10);
        seen.extend(
            page.records()
                .iter()
                .map(|r| *r[0].as_long_value().expect("long")),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen, (1..=10).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_one_transaction() {
    let ep = endpoint().await;
    let t = unique("batch");
    ep.run_ok(&format!("CREATE TABLE {t} (v int)")).await;
    let failing = ep
        .api
        .batch_execute_statement()
        .workgroup_name("local")
        .database("dev")
        .sqls(format!("INSERT INTO {t} VALUES (1)"))
        .sqls(format!("INSERT INTO {t} VALUES (2)"))
        .sqls("INSERT INTO no_such_table VALUES (3)")
        .sqls(format!("INSERT INTO {t} VALUES (4)"))
        .send()
        .await
        .expect("batch");
    let failing_id = failing.id().expect("id").to_string();
    let d = ep.wait(&failing_id).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or("").contains("no_such_table"),
        "{:?}",
        d.error()
    );
    let subs: Vec<_> = d
        .sub_statements()
        .iter()
        .map(|s| (s.id().to_string(), s.status().cloned()))
        .collect();
    assert_eq!(
        subs,
        [
            (
                format!("{}:1", failing_id),
                Some(aws_sdk_redshiftdata::types::StatementStatusString::Finished)
            ),
            (
                format!("{}:2", failing_id),
                Some(aws_sdk_redshiftdata::types::StatementStatusString::Finished)
            ),
            (
                format!("{}:3", failing_id),
                Some(aws_sdk_redshiftdata::types::StatementStatusString::Failed)
            ),
            (
                format!("{}:4", failing_id),
                Some(aws_sdk_redshiftdata::types::StatementStatusString::Aborted)
            ),
        ]
    );
    assert!(
        d.sub_statements()[2]
            .error()
            .unwrap_or("")
            .contains("no_such_table")
    );
    assert_eq!(ep.count(&t).await, 0, "statements 1-2 must be rolled back");

    let ok = ep
        .api
        .batch_execute_statement()
        .workgroup_name("local")
        .database("dev")
        .sqls(format!("INSERT INTO {t} VALUES (1), (2)"))
        .sqls(format!("SELECT sum(v) AS total FROM {t}"))
        .send()
        .await
        .expect("batch");
    let ok_id = ok.id().expect("id").to_string();
    let d = ep.wait(&ok_id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    assert_eq!(d.sub_statements()[0].result_rows(), 2);
    assert_eq!(d.sub_statements()[1].has_result_set(), Some(true));
    let res = ep
        .api
        .get_statement_result()
        .id(format!("{}:2", ok_id))
        .send()
        .await
        .expect("sub result");
    assert_eq!(res.records()[0][0].as_long_value().ok(), Some(&3));
    let top = ep.api.get_statement_result().id(&ok_id).send().await;
    assert!(
        top.expect_err("batch top id")
            .into_service_error()
            .is_validation_exception()
    );
    let sub = ep
        .api
        .describe_statement()
        .id(format!("{}:1", ok_id))
        .send()
        .await
        .expect("describe sub");
    assert_eq!(sub.result_rows(), 2);
    assert_eq!(ep.count(&t).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_token_is_idempotent() {
    let ep = endpoint().await;
    let t = unique("idem");
    ep.run_ok(&format!("CREATE TABLE {t} (v int)")).await;
    let token = unique("token");
    let send = |sql: String| {
        ep.api
            .execute_statement()
            .workgroup_name("local")
            .database("dev")
            .client_token(&token)
            .sql(sql)
            .send()
    };
    let a = send(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("first");
    let b = send(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("replay");
    assert!(a.id().is_some());
    assert_eq!(a.id(), b.id());
    ep.wait(a.id().expect("id")).await;
    let c = send(format!("INSERT INTO {t} VALUES (1)"))
        .await
        .expect("replay after finish");
    assert_eq!(a.id(), c.id());
    assert_eq!(ep.count(&t).await, 1, "executed exactly once");
    let other = send(format!("INSERT INTO {t} VALUES (2)")).await;
    assert!(
        other
            .expect_err("token reuse")
            .into_service_error()
            .is_validation_exception()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_running_query() {
    let ep = endpoint().await;
    let id = ep.submit("SELECT pg_sleep(30)").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = ep
            .api
            .describe_statement()
            .id(&id)
            .send()
            .await
            .expect("describe");
        if d.status() == Some(&StatusString::Started) {
            break;
        }
        assert!(Instant::now() < deadline, "never started: {:?}", d.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let PostgreSQL actually be inside pg_sleep.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let out = ep
        .api
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect("cancel");
    assert_eq!(out.status(), Some(true));
    let d = ep.wait(&id).await;
    assert_eq!(d.status(), Some(&StatusString::Aborted), "{:?}", d.error());
    assert!(began.elapsed() < Duration::from_secs(10));
    let again = ep.api.cancel_statement().id(&id).send().await;
    assert!(
        again
            .expect_err("finished")
            .into_service_error()
            .is_validation_exception()
    );

    // Cancelled before it was picked up: never runs.
    let ep = endpoint_with(DataApiOptions {
        min_latency: Duration::from_secs(2),
        ..DataApiOptions::default()
    })
    .await;
    let t = unique("cancel");
    ep.run_ok(&format!("CREATE TABLE {t} (v int)")).await;
    let id = ep.submit(&format!("INSERT INTO {t} VALUES (1)")).await;
    ep.api
        .cancel_statement()
        .id(&id)
        .send()
        .await
        .expect("cancel");
    let d = ep.wait(&id).await;
    assert_eq!(d.status(), Some(&StatusString::Aborted));
    assert_eq!(d.sub_statements().len(), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ep.count(&t).await, 0);
}

/// id, name, note, ts as text, payload as text.
type CopiedRow = (i64, Option<String>, Option<String>, String, Option<String>);

const CSV1: &str = "id,name,note,ts,payload\n\
1,plain,\"with, comma\",2026-11-25T19:55:17.123Z,\"{\"\"a\"\": [1, 2]}\"\n\
2,\"He said \"\"hi\"\"\",\"line one\nline two\",2026-11-25 20:00:00+02,\"{}\"\n\
3,,\"\",2026-01-01T00:00:00Z,\n";
const CSV2: &str = "id,name,note,ts,payload\n4,last,no newline at end,2026-02-03T04:05:06.789+00:00,\"[true, null]\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_manifest_csv_gzip() {
    let ep = endpoint().await;
    let t = unique("copy");
    ep.run_ok(&format!(
        "CREATE TABLE {t} (id BIGINT ENCODE az64, name VARCHAR(64), note VARCHAR(MAX), \
         ts TIMESTAMPTZ, payload SUPER) DISTSTYLE KEY DISTKEY(id) SORTKEY(ts)"
    ))
    .await;
    let b = ep.bucket().await;
    ep.put(
        &b,
        "staging/a.csv.gz",
        Codec::default().compress(CSV1.as_bytes()).expect("gzip"),
    )
    .await;
    ep.put(
        &b,
        "staging/b.csv.gz",
        Codec::default().compress(CSV2.as_bytes()).expect("gzip"),
    )
    .await;
    let manifest = format!(
        r#"{{"entries":[{{"url":"s3://{b}/staging/a.csv.gz","mandatory":true}},
            {{"url":"s3://{b}/staging/b.csv.gz","mandatory":true}},
            {{"url":"s3://{b}/staging/optional-missing.csv.gz","mandatory":false}}]}}"#
    );
    ep.put(&b, "manifests/m.json", manifest.into_bytes()).await;
    let d = ep
        .run_ok(&format!(
            "COPY {t} (id, name, note, ts, payload) FROM 's3://{b}/manifests/m.json' \
             IAM_ROLE 'arn:aws:iam::000000000000:role/copy' MANIFEST FORMAT AS CSV GZIP \
             IGNOREHEADER 1 TIMEFORMAT 'auto' REGION 'us-east-1' COMPUPDATE OFF STATUPDATE OFF"
        ))
        .await;
    assert_eq!(d.result_rows(), 4);
    let rows = ep
        .db
        .query(
            &format!(
                "SELECT id, name, note, ts::text, payload::text, name IS NULL, note IS NULL, \
                 payload IS NULL FROM {t} ORDER BY id"
            ),
            &[],
        )
        .await
        .expect("select");
    let got: Vec<CopiedRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                Some("plain".into()),
                Some("with, comma".into()),
                "2026-11-25 19:55:17.123+00".into(),
                Some(r#"{"a": [1, 2]}"#.into())
            ),
            (
                2,
                Some("He said \"hi\"".into()),
                Some("line one\nline two".into()),
                "2026-11-25 18:00:00+00".into(),
                Some("{}".into())
            ),
            // As in Redshift without EMPTYASNULL: an empty VARCHAR field, quoted or not, is '';
            // an empty field of another type (SUPER here) is NULL.
            (
                3,
                Some(String::new()),
                Some(String::new()),
                "2026-01-01 00:00:00+00".into(),
                None
            ),
            (
                4,
                Some("last".into()),
                Some("no newline at end".into()),
                "2026-02-03 04:05:06.789+00".into(),
                Some("[true, null]".into())
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_with_missing_mandatory_entry_fails() {
    let ep = endpoint().await;
    let t = unique("copymiss");
    ep.run_ok(&format!("CREATE TABLE {t} (id bigint, name varchar(10))"))
        .await;
    let b = ep.bucket().await;
    ep.put(
        &b,
        "ok.csv.gz",
        Codec::default().compress(b"1,a\n").expect("gzip"),
    )
    .await;
    let manifest = format!(
        r#"{{"entries":[{{"url":"s3://{b}/ok.csv.gz","mandatory":true}},{{"url":"s3://{b}/gone.csv.gz","mandatory":true}}]}}"#
    );
    ep.put(&b, "m.json", manifest.into_bytes()).await;
    let d = ep
        .run(&format!(
            "COPY {t} FROM 's3://{b}/m.json' IAM_ROLE 'arn:x' MANIFEST CSV GZIP"
        ))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    let err = d.error().unwrap_or("");
    assert!(
        err.contains(&format!("s3://{b}/gone.csv.gz")) && err.contains("mandatory"),
        "{err}"
    );
    assert_eq!(
        ep.count(&t).await,
        0,
        "nothing from the first file may stay"
    );

    let d = ep
        .run(&format!(
            "COPY {t} FROM 's3://{b}/no-manifest.json' MANIFEST CSV"
        ))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or("").contains("does not exist"),
        "{:?}",
        d.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_prefix_zstd_with_staging_options() {
    let ep = endpoint().await;
    let t = unique("copyzstd");
    ep.run_ok(&format!(
        "CREATE TABLE {t} (id bigint IDENTITY(1,1), code varchar(3), label varchar(20), qty int)"
    ))
    .await;
    let b = ep.bucket().await;
    let z = |s: &[u8]| zstd::encode_all(s, 3).expect("zstd");
    ep.put(&b, "in/part-0.zst", z(b"abcdef,  ,1\nxy,\"\",2\n"))
        .await;
    ep.put(&b, "in/part-1.zst", z(b"q,label\xff,\n")).await;
    ep.put(&b, "other/x.zst", z(b"zzz,zzz,9\n")).await;
    let d = ep
        .run_ok(&format!(
            "COPY {t} (code, label, qty) FROM 's3://{b}/in/' CREDENTIALS 'aws_iam_role=x' CSV ZSTD \
             TRUNCATECOLUMNS BLANKSASNULL EMPTYASNULL ACCEPTINVCHARS AS '^'"
        ))
        .await;
    assert_eq!(d.result_rows(), 3);
    let rows = ep
        .db
        .query(
            &format!("SELECT code, label, qty FROM {t} ORDER BY id"),
            &[],
        )
        .await
        .expect("select");
    let got: Vec<(Option<String>, Option<String>, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("abc".into()), None, Some(1)),
            (Some("xy".into()), None, Some(2)),
            (Some("q".into()), Some("label^".into()), None),
        ]
    );
    let d = ep
        .run(&format!("COPY {t} FROM 's3://{b}/nothing-here/' CSV"))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or("").contains("prefix"),
        "{:?}",
        d.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_from_a_bucket_in_another_region_needs_its_region() {
    let ep = endpoint().await;
    let t = unique("copyregion");
    ep.run_ok(&format!("CREATE TABLE {t} (code varchar(8))"))
        .await;
    // A bucket in us-west-2 (the warehouse's S3 client is in us-east-1).
    let b = ep.bucket_in(Some(BucketLocationConstraint::UsWest2)).await;
    ep.put(&b, "in/a.csv", b"x\n".to_vec()).await;
    for sql in [
        format!("COPY {t} FROM 's3://{b}/in/' IAM_ROLE 'arn:x' CSV"),
        format!("COPY {t} FROM 's3://{b}/in/' IAM_ROLE 'arn:x' CSV REGION 'eu-west-1'"),
    ] {
        let d = ep.run(&sql).await;
        assert_eq!(d.status(), Some(&StatusString::Failed), "{sql}");
        assert!(
            d.error().unwrap_or("").contains("PermanentRedirect"),
            "{sql}: {:?}",
            d.error()
        );
    }
    assert_eq!(ep.count(&t).await, 0);
    let d = ep
        .run_ok(&format!(
            "COPY {t} FROM 's3://{b}/in/' IAM_ROLE 'arn:x' CSV REGION AS 'us-west-2'"
        ))
        .await;
    assert_eq!(d.result_rows(), 1);
    // A bucket in the warehouse's own region needs no REGION, and a wrong one fails too.
    let home = ep.bucket().await;
    ep.put(&home, "in/a.csv", b"y\n".to_vec()).await;
    ep.run_ok(&format!(
        "COPY {t} FROM 's3://{home}/in/' IAM_ROLE 'arn:x' CSV"
    ))
    .await;
    let d = ep
        .run(&format!(
            "COPY {t} FROM 's3://{home}/in/' IAM_ROLE 'arn:x' CSV REGION 'us-west-2'"
        ))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert_eq!(ep.count(&t).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redshift_ddl_runs_and_unsupported_sql_fails_clearly() {
    let ep = endpoint().await;
    let t = unique("ddl");
    ep.run_ok(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (\n  event_id VARCHAR(64) NOT NULL ENCODE zstd,\n  \
         user_id BIGINT DISTKEY,\n  payload SUPER,\n  note VARCHAR(MAX) ENCODE lzo,\n  \
         loaded_at TIMESTAMPTZ DEFAULT GETDATE() SORTKEY\n) DISTSTYLE KEY COMPOUND SORTKEY(loaded_at, event_id) BACKUP NO;"
    ))
    .await;
    ep.run_ok(&format!(
        "CREATE TEMP TABLE stage (LIKE {t}); INSERT INTO stage (event_id, user_id, payload) \
         VALUES ('e1', 1, JSON_PARSE('{{\"k\": \"v\"}}')); \
         UPDATE stage SET loaded_at = GETDATE(); INSERT INTO {t} SELECT * FROM stage"
    ))
    .await;
    let d = ep
        .run_ok(&format!(
            "SELECT (payload -> 'k')::text, loaded_at <= SYSDATE FROM {t}"
        ))
        .await;
    let res = ep
        .api
        .get_statement_result()
        .id(d.id())
        .send()
        .await
        .expect("result");
    assert_eq!(string(&res.records()[0][0]), "\"v\"");
    assert_eq!(res.records()[0][1].as_boolean_value().ok(), Some(&true));
    // The temp table lived only in that statement's session.
    let d = ep.run("SELECT * FROM stage").await;
    assert_eq!(d.status(), Some(&StatusString::Failed));

    let d = ep
        .run(&format!(
            "UNLOAD ('SELECT * FROM {t}') TO 's3://b/out/' IAM_ROLE 'arn:x'"
        ))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or("").contains("UNLOAD is not supported"),
        "{:?}",
        d.error()
    );
    let d = ep
        .run(&format!("COPY {t} FROM 's3://b/k' FORMAT AS PARQUET"))
        .await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or("").contains("PARQUET"),
        "{:?}",
        d.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_and_not_found_errors() {
    let ep = endpoint().await;
    let err = ep
        .api
        .execute_statement()
        .workgroup_name("local")
        .database("dev")
        .sql("SELECT :missing")
        .send()
        .await
        .expect_err("missing parameter");
    let err = err.into_service_error();
    assert!(err.is_validation_exception(), "{err:?}");
    assert!(format!("{err}").contains("missing"), "{err}");

    let err = ep
        .api
        .execute_statement()
        .database("dev")
        .sql("SELECT 1")
        .send()
        .await
        .expect_err("no target");
    assert!(err.into_service_error().is_validation_exception());

    let err = ep
        .api
        .execute_statement()
        .workgroup_name("local")
        .database("prod")
        .sql("SELECT 1")
        .send()
        .await
        .expect_err("unknown database");
    assert!(err.into_service_error().is_validation_exception());

    let err = ep
        .api
        .describe_statement()
        .id("6f1c2a53-3bd4-4c53-9a0a-3a0c1f9d2b11")
        .send()
        .await
        .expect_err("unknown id");
    assert!(err.into_service_error().is_resource_not_found_exception());

    let d = ep.run_ok("CREATE TEMP TABLE x (a int)").await;
    let err = ep
        .api
        .get_statement_result()
        .id(d.id())
        .send()
        .await
        .expect_err("no result set");
    assert!(err.into_service_error().is_validation_exception());

    // Raw HTTP: the target header is required; errors are AWS JSON with __type.
    let port = ep.port;
    let response = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-amz-json-1.1\r\n\
              Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("raw http");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains(r#""__type":"UnknownOperationException""#),
        "{response}"
    );
}

#[test]
fn postgres_restarts_on_an_initialised_directory_and_stops() {
    let dir = TempDir::new("pg-restart");
    let data = dir.0.join("data");
    let port = {
        let mut pg = Postgres::start(&data).expect("first start");
        assert!(pg.psql_command().contains(&format!("-p {}", pg.port())));
        let port = pg.port();
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok());
        pg.stop().expect("stop");
        assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
        port
    };
    let pg = Postgres::start(&data).expect("second start reuses the data dir");
    let second = pg.port();
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, second)).is_ok());
    drop(pg);
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, second)).is_err(),
        "Drop stops it"
    );
    let _ = port;
}

/// The shape of the rules-loader's load transaction: stage `(LIKE target)`, COPY with the
/// loader's real `COPY_FORMAT_OPTIONS` (NULL marker, ZSTD, DATEFORMAT, TIMEFORMAT), a deduping
/// `INSERT … SELECT`, and a ledger row built with JSON_PARSE — in one BatchExecuteStatement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_style_load_transaction() {
    use caudal_core::rules::{COPY_FORMAT_OPTIONS, NULL_MARKER, STAGING_CODEC};
    let ep = endpoint().await;
    let t = unique("events");
    let ledger = unique("ledger");
    ep.run_ok(&format!(
        "CREATE TABLE IF NOT EXISTS \"public\".\"{t}\" (\n  \"event_id\" VARCHAR(64) NOT NULL,\n  \
         \"raw_key\" VARCHAR(1024) NOT NULL,\n  \"raw_line\" BIGINT NOT NULL,\n  \
         \"amount\" DECIMAL(12,2),\n  \"items\" SUPER,\n  \"note\" VARCHAR(100),\n  \
         \"day\" DATE,\n  \"at\" TIMESTAMPTZ NOT NULL\n) DISTSTYLE KEY DISTKEY (\"event_id\") SORTKEY (\"at\")"
    ))
    .await;
    ep.run_ok(&format!(
        "CREATE TABLE {ledger} (raw_key VARCHAR(1024) NOT NULL, loaded SUPER, \
         loaded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (raw_key)) SORTKEY (raw_key)"
    ))
    .await;
    let m = NULL_MARKER;
    let csv = format!(
        "\"e1\",\"raw/a\",1,19.99,\"[1,2]\",\"\",2026-11-25,2026-11-25T19:55:17.123456Z\n\
         \"e1\",\"raw/a\",2,5,null,{m},{m},2026-11-25T19:55:18.000000Z\n\
         \"e2\",\"raw/a\",3,{m},\"{{\"\"k\"\":\"\"v\"\"}}\",\"x\",2026-01-02,2026-11-25T19:55:19.500000Z\n"
    );
    let b = ep.bucket().await;
    ep.put(
        &b,
        "staging/load-1/events.csv.zst",
        STAGING_CODEC.compress(csv.as_bytes()).expect("zstd"),
    )
    .await;
    ep.put(
        &b,
        "staging/load-1/events.manifest",
        format!(
            r#"{{"entries":[{{"url":"s3://{b}/staging/load-1/events.csv.zst","mandatory":true}}]}}"#
        )
        .into_bytes(),
    )
    .await;
    let cols =
        "\"event_id\", \"raw_key\", \"raw_line\", \"amount\", \"items\", \"note\", \"day\", \"at\"";
    let batch = ep
        .api
        .batch_execute_statement()
        .workgroup_name("local")
        .database("dev")
        .sqls(format!("CREATE TEMP TABLE \"caudal_stage_0\" (LIKE \"public\".\"{t}\")"))
        .sqls(format!(
            "COPY \"caudal_stage_0\" ({cols}) FROM 's3://{b}/staging/load-1/events.manifest' \
             IAM_ROLE 'arn:aws:iam::000000000000:role/copy' MANIFEST {COPY_FORMAT_OPTIONS}"
        ))
        .sqls(format!(
            "INSERT INTO \"public\".\"{t}\" ({cols}) SELECT {cols} FROM (SELECT s.*, ROW_NUMBER() \
             OVER (PARTITION BY s.\"event_id\" ORDER BY s.\"raw_key\", s.\"raw_line\") AS caudal_rn \
             FROM \"caudal_stage_0\" AS s WHERE NOT EXISTS (SELECT 1 FROM \"public\".\"{t}\" AS t \
             WHERE t.\"event_id\" = s.\"event_id\")) AS d WHERE d.caudal_rn = 1"
        ))
        .sqls(format!(
            "INSERT INTO {ledger} (raw_key, loaded, loaded_at) SELECT o.raw_key, \
             JSON_PARSE(o.loaded), CAST('2026-11-25T20:00:00.000000Z' AS TIMESTAMPTZ) FROM \
             (SELECT 'raw/a' AS raw_key, '{{\"{t}\":2}}' AS loaded) AS o WHERE NOT EXISTS \
             (SELECT 1 FROM {ledger} AS l WHERE l.raw_key = o.raw_key)"
        ))
        .send()
        .await
        .expect("batch");
    let d = ep.wait(batch.id().expect("id")).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
    let rows: Vec<i64> = d.sub_statements().iter().map(|s| s.result_rows()).collect();
    assert_eq!(rows, [0, 3, 2, 1]);
    let got = ep
        .db
        .query(
            &format!(
                "SELECT event_id, raw_line, amount::text, items::text, note, day::text, at::text \
                 FROM {t} ORDER BY event_id"
            ),
            &[],
        )
        .await
        .expect("select");
    type Row = (
        String,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    );
    let got: Vec<Row> = got
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "e1".into(),
                1,
                Some("19.99".into()),
                Some("[1, 2]".into()),
                // A quoted "" stays the empty string; the marker is NULL.
                Some(String::new()),
                Some("2026-11-25".into()),
                "2026-11-25 19:55:17.123456+00".into()
            ),
            (
                "e2".into(),
                3,
                None,
                Some(r#"{"k": "v"}"#.into()),
                Some("x".into()),
                Some("2026-01-02".into()),
                "2026-11-25 19:55:19.5+00".into()
            ),
        ]
    );
    let loaded: String = ep
        .db
        .query_one(&format!("SELECT loaded::text FROM {ledger}"), &[])
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(loaded, format!("{{\"{t}\": 2}}"));
}

/// Two loads that each check `NOT EXISTS` and then insert the same id, the second reading its
/// snapshot before the first commits: the loader's old shape. `lock` puts `LOCK t` first.
/// Returns both final descriptions (first, second) and the rows that ended up in `t`.
async fn check_then_insert(
    isolation: Isolation,
    lock: bool,
) -> (DescribeStatementOutput, DescribeStatementOutput, i64) {
    let ep = endpoint_with(DataApiOptions {
        isolation,
        min_latency: Duration::from_millis(30),
        ..DataApiOptions::default()
    })
    .await;
    let t = unique("skew");
    // Redshift keeps PRIMARY KEY informational: it must not be what stops the duplicate.
    ep.run_ok(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, who varchar(8))"
    ))
    .await;
    let batch = |who: &str, pause: f64| {
        let mut sqls = Vec::new();
        if lock {
            sqls.push(format!("LOCK {t}"));
        }
        sqls.push(format!("SELECT count(*) FROM {t}"));
        sqls.push(format!("SELECT pg_sleep({pause})"));
        sqls.push(format!(
            "INSERT INTO {t} SELECT 1, '{who}' WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE id = 1)"
        ));
        sqls
    };
    // The second sleeps longer: it reads its snapshot at once, then writes after the first
    // committed. READ COMMITTED would see that commit; a snapshot does not.
    let first = ep.submit_batch(&batch("first", 0.3)).await;
    let second = ep.submit_batch(&batch("second", 1.2)).await;
    let (a, b) = tokio::join!(ep.wait(&first), ep.wait(&second));
    let n = ep.count(&t).await;
    (a, b, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_isolation_lets_write_skew_through_as_redshift_does() {
    let (a, b, n) = check_then_insert(Isolation::Snapshot, false).await;
    assert_eq!(a.status(), Some(&StatusString::Finished), "{:?}", a.error());
    assert_eq!(b.status(), Some(&StatusString::Finished), "{:?}", b.error());
    assert_eq!(
        n, 2,
        "both committed the same id: the anomaly a loader must prevent itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_isolation_fails_the_second_with_redshift_1023() {
    let (a, b, n) = check_then_insert(Isolation::Serializable, false).await;
    assert_eq!(a.status(), Some(&StatusString::Finished), "{:?}", a.error());
    assert_eq!(b.status(), Some(&StatusString::Failed));
    let error = b.error().unwrap_or_default();
    assert!(
        error.starts_with("ERROR: 1023 DETAIL: Serializable isolation violation on table"),
        "{error}"
    );
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_first_serializes_writers_at_both_levels() {
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let (a, b, n) = check_then_insert(isolation, true).await;
        assert_eq!(
            a.status(),
            Some(&StatusString::Finished),
            "{isolation:?}: {:?}",
            a.error()
        );
        assert_eq!(
            b.status(),
            Some(&StatusString::Finished),
            "{isolation:?}: {:?}",
            b.error()
        );
        assert_eq!(
            n, 1,
            "{isolation:?}: the second saw the first's row after the lock"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_constraints_are_not_enforced_and_indexes_do_not_exist() {
    let ep = endpoint().await;
    let t = unique("keys");
    ep.run_ok(&format!(
        "CREATE TABLE {t} (id int NOT NULL, u int UNIQUE, PRIMARY KEY (id)) DISTSTYLE EVEN"
    ))
    .await;
    ep.run_ok(&format!("INSERT INTO {t} VALUES (1, 7), (1, 7)"))
        .await;
    assert_eq!(ep.count(&t).await, 2, "Redshift stores duplicate keys");
    let d = ep.run(&format!("INSERT INTO {t} VALUES (NULL, 1)")).await;
    assert_eq!(
        d.status(),
        Some(&StatusString::Failed),
        "NOT NULL is enforced"
    );
    let d = ep.run(&format!("CREATE INDEX {t}_i ON {t} (u)")).await;
    assert_eq!(d.status(), Some(&StatusString::Failed));
    assert!(
        d.error().unwrap_or_default().contains("no indexes"),
        "{:?}",
        d.error()
    );

    // Zone maps: one BRIN index over the columns, no B-tree; rebuilt with an added column.
    let indexes = || async {
        ep.db
            .query(
                "SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY indexname",
                &[&t],
            )
            .await
            .expect("pg_indexes")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let defs = indexes().await;
    assert_eq!(defs.len(), 1, "{defs:?}");
    assert!(defs[0].contains("USING brin (id, u)"), "{defs:?}");
    ep.run_ok(&format!("ALTER TABLE {t} ADD COLUMN ts TIMESTAMPTZ"))
        .await;
    let defs = indexes().await;
    assert!(
        defs.len() == 1 && defs[0].contains("USING brin (id, u, ts)"),
        "{defs:?}"
    );
    // A batch's temporary stage gets none (and must not fail).
    let id = ep
        .submit_batch(&[format!("CREATE TEMP TABLE s (LIKE {t})"), "SELECT 1".into()])
        .await;
    let d = ep.wait(&id).await;
    assert_eq!(d.status(), Some(&StatusString::Finished), "{:?}", d.error());
}

// ---------- injected faults (caudal-local up --chaos) ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_statements_fail_or_stop_and_never_commit_a_part() {
    use caudal_local::emulators::chaos::{Chaos, ChaosConfig, Fault};
    let chaos = Arc::new(Chaos::new(ChaosConfig {
        dataapi: 1.0,
        seed: 11,
        ..ChaosConfig::default()
    }));
    let ep = endpoint_with(DataApiOptions {
        min_latency: Duration::from_millis(30),
        chaos: Some(chaos.clone()),
        ..DataApiOptions::default()
    })
    .await;
    let t = unique("chaos");
    // Not armed yet: runs normally.
    ep.run_ok(&format!("CREATE TABLE {t} (b int, v int)")).await;
    chaos.arm();
    let mut statuses = std::collections::BTreeMap::new();
    for b in 0..30 {
        let sqls: Vec<String> = (0..3)
            .map(|v| format!("INSERT INTO {t} VALUES ({b}, {v})"))
            .collect();
        let id = ep.submit_batch(&sqls).await;
        let d = ep.wait(&id).await;
        let status = d.status().cloned().expect("status");
        assert!(
            matches!(status, StatusString::Failed | StatusString::Aborted),
            "{status:?}"
        );
        assert!(d.error().is_some_and(|e| !e.is_empty()));
        *statuses.entry(status.as_str().to_owned()).or_insert(0) += 1;
        // A single statement is stopped inside its own transaction too.
        let d = ep.run(&format!("INSERT INTO {t} VALUES ({b}, 9)")).await;
        assert_ne!(d.status(), Some(&StatusString::Finished));
    }
    assert_eq!(
        ep.count(&t).await,
        0,
        "a failed or stopped statement committed"
    );
    assert_eq!(statuses.len(), 2, "both FAILED and ABORTED: {statuses:?}");
    assert!(chaos.stats.get(Fault::DataApiStopped) > 0);
    assert!(chaos.stats.get(Fault::DataApiFailed) > 0);
    chaos.disarm();
    ep.run_ok(&format!("INSERT INTO {t} VALUES (0, 0)")).await;
    assert_eq!(ep.count(&t).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_delays_keep_statements_submitted_and_started_longer() {
    use caudal_local::emulators::chaos::{Chaos, ChaosConfig};
    let chaos = Arc::new(Chaos::new(ChaosConfig {
        delay: 1.0,
        delay_ms: (600, 600),
        ..ChaosConfig::default()
    }));
    chaos.arm();
    let ep = endpoint_with(DataApiOptions {
        min_latency: Duration::from_millis(30),
        chaos: Some(chaos),
        ..DataApiOptions::default()
    })
    .await;
    let started = Instant::now();
    let id = ep.submit("SELECT 1").await;
    let mut seen = std::collections::BTreeSet::new();
    let d = loop {
        let d = ep
            .api
            .describe_statement()
            .id(&id)
            .send()
            .await
            .expect("describe");
        let status = d.status().cloned().expect("status");
        seen.insert(status.as_str().to_owned());
        if status == StatusString::Finished {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert!(d.error().is_none());
    assert!(
        seen.contains("SUBMITTED") && seen.contains("STARTED"),
        "{seen:?}"
    );
}
