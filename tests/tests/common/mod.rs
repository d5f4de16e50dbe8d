//! What the end-to-end tests share: the generated event mix, request bodies, and warehouse
//! look-ups by event id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caudal_core::codec::Codec;
use caudal_local::cli::report;
use caudal_local::stack::Stack;
use serde_json::json;

/// What the pipeline must do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expect {
    /// A row in this table.
    Row(&'static str),
    /// Dropped by a filter.
    Filtered,
    /// Refused by the rules (a row in caudal_rejects).
    Rejected,
    /// Refused by the API (never reaches Kinesis).
    ApiRejected,
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its event id.
    pub id: String,
    /// The JSON line a client sends.
    pub line: String,
    /// What the pipeline must do with it.
    pub expect: Expect,
}

fn ts(i: usize) -> String {
    format!(
        "2026-11-25T{:02}:{:02}:{:02}.{:03}Z",
        10 + (i / 3600) % 10,
        (i / 60) % 60,
        i % 60,
        i % 1000
    )
}

/// The generated event `i` (deterministic).
pub fn item(run: &str, i: usize) -> Item {
    let id = format!("{run}-{i:05}");
    let t = ts(i);
    let (line, expect) = match i % 20 {
        0..=5 => (
            json!({"type": "page_view", "id": id, "ts": t, "user_id": format!("u-{}", i % 97),
                   "session_id": format!("s-{}", i % 31),
                   "page": {"url": format!("https://shop.example.com/p/{i}"), "title": " Product ",
                            "referrer": "https://www.google.com/"},
                   "device": {"mobile": i.is_multiple_of(2)}}),
            Expect::Row("page_views"),
        ),
        6..=8 => (
            json!({"type": "purchase", "id": id, "ts": t, "order_id": format!("A-{i}"), "user_id": "u-42",
                   "email": " Ann.Example@Example.COM ", "currency": "eur", "amount": 129.9,
                   "coupon": " bf24 ", "items": [{"sku": "shoe-red-42", "qty": 1, "price": 129.9}]}),
            Expect::Row("purchases"),
        ),
        9..=10 => (
            json!({"type": "signup", "id": id, "ts": t, "user_id": format!("u-{i}"),
                   "email": "bob@mail.example.org", "country": "de", "referral_code": "friend-1"}),
            Expect::Row("signups"),
        ),
        11..=12 => (
            json!({"type": "search", "id": id, "ts": t, "session_id": "s-9", "query": "  Red Running SHOES ",
                   "result_count": i % 13}),
            Expect::Row("searches"),
        ),
        13 => (
            json!({"type": "newsletter_open", "id": id, "campaign": "november", "opened_at": t}),
            Expect::Row("unknown_events"),
        ),
        14 => (
            json!({"type": "page_view", "id": id, "test": true, "ts": t, "page": {"url": "https://shop.example.com/"}}),
            Expect::Filtered,
        ),
        15 => (
            json!({"type": "page_view", "id": id, "ts": t, "page": {"url": "https://shop.example.com/healthz"}}),
            Expect::Filtered,
        ),
        16 => (
            json!({"type": "purchase", "id": id, "ts": t, "order_id": format!("A-{i}"), "currency": "EURO", "amount": -5}),
            Expect::Rejected,
        ),
        17 => (
            json!({"type": "purchase", "id": id, "ts": t, "order_id": format!("A-{i}"), "currency": "usd", "amount": 10.005}),
            Expect::Rejected,
        ),
        18 => (
            json!({"id": id, "ts": t, "no_type": true}),
            Expect::ApiRejected,
        ),
        _ => (
            json!({"type": "search", "id": id, "ts": "25/11/2026 19:56", "query": "boots"}),
            Expect::ApiRejected,
        ),
    };
    Item {
        id,
        line: line.to_string(),
        expect,
    }
}

/// One POST /v1/events request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The body (gzip-compressed when `gzip`).
    pub body: Vec<u8>,
    /// NDJSON or JSON array.
    pub content_type: &'static str,
    /// Sent with `Content-Encoding: gzip`.
    pub gzip: bool,
    /// The User-Agent header.
    pub user_agent: &'static str,
    /// Ids of the items, in order.
    pub ids: Vec<String>,
}

/// `POST {api}/v1/events` carrying `r`, headers as a client sends them.
pub fn post(client: &reqwest::Client, api: &str, r: &Request) -> reqwest::RequestBuilder {
    let req = client
        .post(format!("{api}/v1/events"))
        .header("content-type", r.content_type)
        .header("user-agent", r.user_agent)
        .body(r.body.clone());
    if r.gzip {
        req.header("content-encoding", "gzip")
    } else {
        req
    }
}

/// The request carrying `items`; `n` picks the form (NDJSON or array, plain or gzip, in turn).
pub fn request(items: &[Item], n: usize, user_agent: &'static str) -> Request {
    let ndjson = n.is_multiple_of(2);
    let text = if ndjson {
        items
            .iter()
            .map(|i| i.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.line.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let gz = (n / 2) % 2 == 1;
    Request {
        body: if gz {
            Codec::default().compress(text.as_bytes()).unwrap()
        } else {
            text.into_bytes()
        },
        content_type: if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        },
        gzip: gz,
        user_agent,
        ids: items.iter().map(|i| i.id.clone()).collect(),
    }
}

/// A connection to the stack's warehouse.
pub async fn db(stack: &Stack) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&stack.pg_connection_string(), tokio_postgres::NoTls)
            .await
            .expect("warehouse");
    tokio::spawn(conn);
    client
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `event_id -> rejects` in `caudal_rejects` (rejects without an id are left out).
pub async fn rejects_by_id(pg: &tokio_postgres::Client) -> HashMap<String, i64> {
    pg.query(
        "SELECT event_id, COUNT(*) FROM public.caudal_rejects GROUP BY event_id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .filter_map(|r| {
        r.get::<_, Option<String>>(0)
            .map(|id| (id, r.get::<_, i64>(1)))
    })
    .collect()
}

/// `SELECT event_id, '<table>' AS t FROM …` over every event table, joined by `UNION ALL`.
pub async fn event_tables_union(pg: &tokio_postgres::Client) -> String {
    report::event_tables(pg, "public")
        .await
        .unwrap()
        .iter()
        .map(|t| format!("SELECT event_id, '{t}' AS t FROM public.\"{t}\""))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// `event_id -> [(table, rows)]` over every event table.
pub async fn rows_by_id_and_table(
    pg: &tokio_postgres::Client,
) -> HashMap<String, Vec<(String, i64)>> {
    let union = event_tables_union(pg).await;
    let rows = pg
        .query(
            &format!("SELECT event_id, t, COUNT(*) FROM ({union}) u GROUP BY event_id, t"),
            &[],
        )
        .await
        .unwrap();
    let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    out
}
